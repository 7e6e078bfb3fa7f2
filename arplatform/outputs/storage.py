"""Where outputs live: a local folder, or a URI of any filesystem pyarrow supports (s3://…,
with the usual AWS_* variables; gs://, hdfs://) that every node reaches.

A path is named once, where a command starts, as a `Location`; code further in names files
by relative names below it. Only this module knows whether it is a bucket. Single files go
from any process (`fetch`, `write_bytes`, …); a driver builds a folder tree in
`Root(root).local` and `push`es it when complete. Files are written whole (a rename, one PUT).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import time
import uuid
from contextlib import contextmanager
from functools import lru_cache

from ..core.errors import USER_ERRORS, CheckpointError, ConfigError, StorageError
from ..core.io import atomic_write, file_sha256, scratch_dir
from ..core.io import read_json_object as read_local_json
from ..core.precision import cache_dir


def is_uri(path) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


@lru_cache(maxsize=16)
def _filesystem(scheme_and_bucket: str):
    import pyarrow.fs

    if not scheme_and_bucket:
        return pyarrow.fs.LocalFileSystem()
    return pyarrow.fs.FileSystem.from_uri(scheme_and_bucket)[0]


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


class Location:
    """A file or folder named once (an absolute path, or a URI); methods take a relative name
    ('codes/x.npy'). A bucket's errors become one StorageError line naming the URI."""

    def __init__(self, path):
        path = os.fspath(path.path if isinstance(path, Location) else path)
        path = path[len("file://"):] if path.startswith("file://") else path
        self.remote = is_uri(path)
        if self.remote:
            scheme, rest = path.split("://", 1)
            self.scheme, self.path = scheme + "://", scheme + "://" + posixpath.normpath(rest).lstrip("/")
        else:
            self.scheme, self.path = "", os.path.abspath(path)

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"Location({self.path!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def file(self, name: str = "") -> str:
        """The public name (a path or a URI) of `name` below the location ('..' resolved)."""
        if not name:
            return self.path
        if not self.remote:
            return os.path.normpath(os.path.join(self.path, *name.split("/")))
        return self.scheme + posixpath.normpath(posixpath.join(self.path[len(self.scheme):], name))

    def __truediv__(self, name: str) -> Location:
        return Location(self.file(name))

    @property
    def parent(self) -> Location:
        if not self.remote:
            return Location(os.path.dirname(self.path))
        return Location(self.scheme + posixpath.dirname(self.path[len(self.scheme):].rstrip("/")))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path) if self.remote else os.path.basename(self.path)

    def real(self) -> str:
        """The name a record keeps of a file: a local path with its links resolved, a URI as it is."""
        return self.path if self.remote else os.path.realpath(self.path)

    @contextmanager
    def _errors(self):
        try:
            yield
        except StorageError:
            raise
        except (OSError, ValueError) as e:
            if not self.remote:
                raise
            raise StorageError(f"{self.path}: {_one_line(e)}") from None

    def _fs(self, name: str = ""):
        """(pyarrow filesystem, its path of `name`); a bucket's filesystem is made once."""
        full = self.file(name)
        if not self.remote:
            return _filesystem(""), full
        rest = full[len(self.scheme):]
        return _filesystem(self.scheme + rest.split("/", 1)[0]), rest.rstrip("/")

    def _info(self, name: str = ""):
        with self._errors():
            fs, path = self._fs(name)
            return fs.get_file_info(path)

    def _files(self, name: str = "") -> list:
        """pyarrow's FileInfo of every file below `name` (recursive; [] when there is no folder)."""
        import pyarrow.fs

        with self._errors():
            fs, path = self._fs(name)
            if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
                return []
            infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True))
            return [i for i in infos if i.type == pyarrow.fs.FileType.File]

    def exists(self, name: str = "") -> bool:
        import pyarrow.fs

        return self._info(name).type != pyarrow.fs.FileType.NotFound

    def isfile(self, name: str = "") -> bool:
        import pyarrow.fs

        return self._info(name).type == pyarrow.fs.FileType.File

    def listdir(self, name: str = "") -> list[str]:
        """Names in a folder, sorted; [] when there is no such folder."""
        if not self.remote:
            path = self.file(name)
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        import pyarrow.fs

        with self._errors():
            fs, path = self._fs(name)
            infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in infos)

    def read_bytes(self, name: str = "") -> bytes:
        if not self.remote:
            with open(self.file(name), "rb") as f:
                return f.read()
        with self._errors():
            fs, path = self._fs(name)
            with fs.open_input_stream(path) as f:
                return f.read()

    def write_stream(self, name: str, write) -> str:
        """A file written piece by piece by `write(f)` (f: a binary file object), seen whole or not
        at all: a rename locally, one streamed upload on an object store. Returns its name."""
        if not self.remote:
            def to_file(tmp):
                with open(tmp, "wb") as f:
                    write(f)

            return atomic_write(self.file(name), to_file)
        with self._errors():
            fs, path = self._fs(name)
            with fs.open_output_stream(path) as f:
                write(f)
        return self.file(name)

    def write_bytes(self, name: str, data: bytes) -> str:
        return self.write_stream(name, lambda f: f.write(data))

    def write_text(self, name: str, text: str) -> str:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, obj) -> str:
        return self.write_text(name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def read_json_object(self, name: str = "", error: type[Exception] = ValueError) -> dict:
        """A JSON object, or one `error` line naming the file."""
        if not self.remote:
            return read_local_json(self.file(name), error)
        try:
            obj = json.loads(self.read_bytes(name))
        except (OSError, ValueError) as e:
            raise error(f"{self.file(name)}: not a readable JSON file ({_one_line(e)})") from e
        if not isinstance(obj, dict):
            raise error(f"{self.file(name)}: expected a JSON object, got {type(obj).__name__}")
        return obj

    def remove_tree(self, name: str = "") -> None:
        """The folder and all below it; nothing when it is not there."""
        if not self.remote:
            shutil.rmtree(self.file(name), ignore_errors=True)
            return
        with self._errors():
            fs, path = self._fs(name)
            fs.delete_dir(path)

    def newest_mtime(self, name: str = "") -> float | None:
        """The newest modification time (seconds since the epoch, the store's clock for a bucket)
        of any file below the folder `name`; None when it holds none."""
        return max((i.mtime_ns / 1e9 for i in self._files(name) if i.mtime_ns), default=None)

    def store_time(self) -> float:
        """The store's clock now: a probe object written below the location and its modification
        time read back, then removed; a local location's is this host's clock."""
        if not self.remote:
            return time.time()
        probe = f".arplatform-clock-{uuid.uuid4().hex}"
        self.write_bytes(probe, b"")
        try:
            info = self._info(probe)
            if not info.mtime_ns:
                raise StorageError(f"{self.file(probe)}: the store gave no modification time")
            return info.mtime_ns / 1e9
        finally:
            fs, path = self._fs(probe)
            fs.delete_file(path)

    def fetch(self, name: str = "") -> str:
        """A local path to read `name` from: itself when local, else a copy in the cache,
        downloaded again when the remote file's size or modification time changed."""
        if not self.remote:
            return self.file(name)
        import pyarrow.fs

        info, uri = self._info(name), self.file(name)
        if info.type != pyarrow.fs.FileType.File:
            raise StorageError(f"{uri}: no such file")
        stamp = {"size": info.size, "mtime_ns": info.mtime_ns}
        folder = os.path.join(cache_dir(), "fetched", hashlib.sha256(uri.encode()).hexdigest()[:24])
        local, stamp_file = os.path.join(folder, posixpath.basename(uri)), os.path.join(folder, "stamp.json")
        try:
            with open(stamp_file) as f:
                if json.load(f) == stamp and os.path.exists(local):
                    return local
        except (OSError, ValueError):
            pass
        os.makedirs(folder, exist_ok=True)

        def download(tmp):
            with self._errors():
                fs, path = self._fs(name)
                with fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)

        atomic_write(local, download)  # several actors on one node may fetch at once: each renames a whole file
        atomic_write(stamp_file, lambda tmp: open(tmp, "w").write(json.dumps(stamp)))
        return local

    def fetch_folder(self, name: str = "") -> str:
        """A local copy of a whole folder as it is now (changed files fetched again, removed ones
        removed); the folder itself when local."""
        if not self.remote:
            return self.file(name)
        source = self / name if name else self
        files = source._files()
        if not files:
            raise StorageError(f"{source}: no such folder")
        folder = os.path.join(cache_dir(), "folders", hashlib.sha256(source.path.encode()).hexdigest()[:24])
        _, base = source._fs()
        wanted = set()
        for info in files:
            rel = info.path[len(base):].lstrip("/")  # (not relpath: it would consult the cwd)
            wanted.add(rel)
            fetched, target = source.fetch(rel), os.path.join(folder, *rel.split("/"))
            if not os.path.exists(target) or os.stat(target).st_mtime_ns != os.stat(fetched).st_mtime_ns:
                atomic_write(target, lambda tmp, src=fetched: shutil.copy2(src, tmp))  # copy2: the mtime compared
        for root, _, names in os.walk(folder):
            for n in names:
                if os.path.relpath(os.path.join(root, n), folder).replace(os.sep, "/") not in wanted:
                    os.remove(os.path.join(root, n))
        return folder

    def sha256(self, name: str = "") -> str:
        """The SHA-256 of a file's bytes (a local copy's, for a URI)."""
        return file_sha256(self.fetch(name))

    @contextmanager
    def pinned(self, name: str = "", expected_sha256: str | None = None):
        """(a private copy of the file, its SHA-256), made in one read that hashes it: the reader
        loads exactly the bytes it hashed, whatever replaces the file meanwhile. Other bytes than
        `expected_sha256` are refused in one line."""
        public = self.file(name)
        with scratch_dir("pinned") as folder:  # (one a killed reader left is removed by the next)
            copy, h = os.path.join(folder, posixpath.basename(public) or "file"), hashlib.sha256()
            with open(self.fetch(name), "rb") as src, open(copy, "wb") as dst:
                for block in iter(lambda: src.read(1 << 22), b""):
                    h.update(block)
                    dst.write(block)
            digest = h.hexdigest()
            if expected_sha256 and digest != expected_sha256:
                raise CheckpointError(f"{public}: changed since this run checked it (SHA-256 {digest[:12]}…, "
                                      f"expected {expected_sha256[:12]}…); rerun to use the new file")
            try:
                yield copy, digest
            except USER_ERRORS as e:  # the reader names the copy, which is gone by the time anyone reads the line
                if copy not in str(e):
                    raise
                raise type(e)(str(e).replace(copy, public)) from None

    def check_writable(self, key: str) -> None:
        """Refuse, before any work and naming `key`, a location this process cannot write."""
        if self.remote:
            probe = f".arplatform-write-check-{uuid.uuid4().hex}"
            try:
                self.write_bytes(probe, b"")
                fs, path = self._fs(probe)
                fs.delete_file(path)
            except (OSError, ValueError) as e:  # StorageError is an OSError
                raise ConfigError(f"{key}: cannot write to {self.path} ({_one_line(e)})") from None
            return
        missing, made, folder = [], [], self.path
        while not os.path.exists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        try:  # made and removed again: a refused run leaves no folder behind
            for folder in reversed(missing):
                try:
                    os.mkdir(folder)
                    made.append(folder)
                except FileExistsError:  # another process made it meanwhile: theirs, not ours to remove
                    pass
        except OSError as e:
            raise ConfigError(f"{key}: cannot make the folder {self.path} ({e.strerror or e})") from None
        finally:
            for folder in reversed(made):
                try:
                    os.rmdir(folder)
                except OSError:  # another process has put something in it: it is theirs now
                    break
        if not missing and not os.path.isdir(self.path):
            raise ConfigError(f"{key}: {self.path} is a file; name a folder")

    def local_only(self, key: str, why: str) -> None:
        """Refuse a bucket where the platform needs a local path, in one line naming the key."""
        if self.remote:
            raise ConfigError(f"{key}: {self.path} is a URI; {why}")

    def remove_temps(self, name: str = "") -> None:
        """The `.tmp` files a writer killed mid-write left in `name` (call it under the folder's
        writer lock). A bucket has none: each object is written whole."""
        if self.remote:
            return
        for entry in self.listdir(name):
            if entry.startswith(".") and entry.endswith(".tmp"):
                os.remove(os.path.join(self.file(name), entry))

    def upload_folder(self, local: str, last: tuple[str, ...] = ()) -> None:
        """Every file under the local folder `local` to the same name below this location, those
        in `last` after all others (a reader waiting for them never finds half a folder)."""
        rels = [os.path.relpath(os.path.join(root, name), local)
                for root, _, files in os.walk(local, followlinks=True) for name in files
                if not (name.startswith(".tmp") or name.endswith(".lock"))]
        try:
            for rel in sorted(rels, key=lambda r: (os.path.basename(r) in last, r)):
                with open(os.path.join(local, rel), "rb") as src:
                    self.write_stream(rel.replace(os.sep, "/"), lambda dst, s=src: shutil.copyfileobj(s, dst, 1 << 22))
        except (OSError, ValueError) as e:
            raise StorageError(f"{self.path}: upload of {local} failed ({_one_line(e)})") from None


class Root(Location):
    """An output root and `local`, the folder here that stands for it: the root itself, or for
    a URI a mirror in this machine's cache that a driver builds trees in, then pushes."""

    def __init__(self, root):
        super().__init__(root)
        if self.remote:
            scheme, rest = self.path.split("://", 1)
            self.local = os.path.join(cache_dir(), "mirror", scheme, *rest.strip("/").split("/"))
        else:
            self.local = self.path

    def local_path(self, *parts: str) -> str:
        """`parts` under the local folder that stands for the root."""
        return os.path.join(self.local, *parts)

    def public(self, local_path: str) -> str:
        """The root's name for a path inside `local` (the path itself for a local root)."""
        if not self.remote:
            return local_path
        rel = os.path.relpath(os.path.abspath(local_path), self.local)
        if rel.startswith(".."):
            return local_path
        return self.file(rel.replace(os.sep, "/")) if rel != "." else self.path

    def shared_name(self, path: str) -> str:
        """What a record others read names `path` by: relative to the root (a bucket's URI in
        front), else a URI (`file://…`): an absolute local path means nothing elsewhere."""
        if is_uri(path):
            return path
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(self.local))
        if rel.startswith(".."):
            return "file://" + os.path.abspath(path)
        rel = "/".join(rel.split(os.sep))
        return self.file(rel) if self.remote else rel

    def push(self, local_path: str, last: tuple[str, ...] = ()) -> None:
        """Upload a folder (or file) inside `local` to the same place under the root, the files
        named in `last` last; nothing for a local root."""
        if not self.remote:
            return
        target = Location(self.public(local_path))
        if os.path.isdir(local_path):
            target.upload_folder(local_path, last)
        elif os.path.exists(local_path):
            target.parent.write_bytes(target.name, Location(local_path).read_bytes())

    def pull(self, *parts: str) -> None:
        """Download the root's `parts` folder into `local` (nothing when it is not there)."""
        name = "/".join(parts)
        if not self.remote or not self.exists(name):
            return
        shutil.copytree(self.fetch_folder(name), self.local_path(*parts), dirs_exist_ok=True)
