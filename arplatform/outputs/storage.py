"""Where outputs live: a local folder, or a URI that every node of a cluster reaches.

`output_root`, `--out`, `--transformer_ckpt` and the other paths may be local paths or
URIs of any filesystem pyarrow supports: `s3://bucket/prefix` (credentials and endpoint
from the usual AWS_* variables: AWS_ENDPOINT_URL names an S3-compatible server),
`gs://bucket/prefix`, `hdfs://…`. Local paths behave exactly as they always did.

Two ways a stage uses it:

  * one file at a time, from any process on any node (a Ray Data actor writing its batch,
    an actor loading a checkpoint): `fetch` (a local copy to read), `write_bytes`,
    `read_bytes`, `exists`, `listdir`;
  * a driver that builds a folder tree (tokenizer versions, run folders, reports) builds
    it in `Root(root).local` and `push`es the subtree when it is complete; `pull` brings
    a subtree down first. For a local root the mirror is the root itself and both do nothing.

Files are written whole: a local file by a rename, an object store object by one PUT, so
a reader never sees half a file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
import shutil
import time
import uuid
from contextlib import contextmanager
from functools import lru_cache

from ..core.errors import USER_ERRORS, StorageError
from ..core.io import atomic_write, file_sha256
from ..core.precision import cache_dir


def is_uri(path) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def _local(path) -> str:
    path = os.fspath(path)
    return path[len("file://"):] if path.startswith("file://") else path


def real_path(path: str) -> str:
    """The name a record keeps of a file: a local path with its links resolved, a URI as it is."""
    return path if is_uri(path) else os.path.realpath(path)


def normpath(path: str) -> str:
    """`a/b/../c` → `a/c` for a local path; a URI as it is."""
    return path if is_uri(path) else os.path.normpath(path)


def local_only(value: str, key: str, why: str) -> None:
    """Refuse a URI where the platform needs a local path, in one line naming the key."""
    if is_uri(value):
        from ..core.errors import ConfigError

        raise ConfigError(f"{key}: {value} is a URI; {why}")


def remote_errors(fn):
    """For a URI first argument: pyarrow's errors (a network failure, a missing bucket, an unknown
    scheme) become one StorageError line naming the URI. Local paths keep their own errors."""

    @functools.wraps(fn)
    def wrapper(path, *args, **kwargs):
        if not is_uri(path):
            return fn(path, *args, **kwargs)
        try:
            return fn(path, *args, **kwargs)
        except StorageError:
            raise
        except (OSError, ValueError) as e:
            raise StorageError(f"{path}: {' '.join(str(e).split())}") from None

    return wrapper


def split_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' → ('s3://', 'bucket/a/b')."""
    scheme, rest = uri.split("://", 1)
    return scheme + "://", rest


def join(base, *parts: str) -> str:
    """os.path.join for local paths; for a URI a normalised '/'-join ('..' resolved)."""
    if not is_uri(base):
        return os.path.join(_local(base), *parts)
    scheme, rest = split_uri(base)
    return scheme + posixpath.normpath(posixpath.join(rest, *parts))


def dirname(path: str) -> str:
    if not is_uri(path):
        return os.path.dirname(_local(path))
    scheme, rest = split_uri(path)
    return scheme + posixpath.dirname(rest.rstrip("/"))


def absolute(path) -> str:
    return path if is_uri(path) else os.path.abspath(_local(path))


@lru_cache(maxsize=16)
def _filesystem(scheme_and_bucket: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(scheme_and_bucket)[0]


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) of a URI; the filesystem is made once per bucket."""
    scheme, rest = split_uri(uri)
    return _filesystem(scheme + rest.split("/", 1)[0]), rest.rstrip("/")


def _info(uri: str):
    fs, path = filesystem(uri)
    return fs.get_file_info(path)


@remote_errors
def exists(path) -> bool:
    if not is_uri(path):
        return os.path.exists(_local(path))
    import pyarrow.fs

    return _info(path).type != pyarrow.fs.FileType.NotFound


@remote_errors
def isfile(path) -> bool:
    if not is_uri(path):
        return os.path.isfile(_local(path))
    import pyarrow.fs

    return _info(path).type == pyarrow.fs.FileType.File


@remote_errors
def listdir(path) -> list[str]:
    """Names in a folder, sorted; [] when there is no such folder."""
    if not is_uri(path):
        path = _local(path)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    import pyarrow.fs

    fs, p = filesystem(path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(p, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos)


@remote_errors
def read_bytes(path) -> bytes:
    if not is_uri(path):
        with open(_local(path), "rb") as f:
            return f.read()
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read()


@remote_errors
def write_bytes(path, data: bytes) -> str:
    """The whole file at once: a rename locally, one PUT on an object store."""
    if not is_uri(path):
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(data)

        return atomic_write(_local(path), write)
    fs, p = filesystem(path)
    with fs.open_output_stream(p) as f:
        f.write(data)
    return path


@remote_errors
def write_stream(path, write) -> str:
    """A file written piece by piece by `write(f)` (f: a binary file object), seen whole or not at
    all: a rename locally, one streamed upload on an object store."""
    if not is_uri(path):
        def to_file(tmp):
            with open(tmp, "wb") as f:
                write(f)

        return atomic_write(_local(path), to_file)
    fs, p = filesystem(path)
    with fs.open_output_stream(p) as f:
        write(f)
    return path


@remote_errors
def newest_mtime(path) -> float | None:
    """The newest modification time (seconds since the epoch, the store's clock for a bucket)
    of any file under the folder `path`; None when it holds none."""
    if not is_uri(path):
        times = [os.path.getmtime(os.path.join(d, f)) for d, _, files in os.walk(_local(path)) for f in files]
        return max(times, default=None)
    import pyarrow.fs

    fs, p = filesystem(path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(p, recursive=True, allow_not_found=True))
    return max((i.mtime_ns / 1e9 for i in infos if i.type == pyarrow.fs.FileType.File and i.mtime_ns), default=None)


def store_time(root) -> float:
    """The store's clock now (seconds since the epoch): a probe object written under `root` and
    its modification time read back, then removed; a local root's is this host's clock."""
    if not is_uri(root):
        return time.time()
    probe = join(root, f".arplatform-clock-{uuid.uuid4().hex}")
    write_bytes(probe, b"")
    try:
        return newest_file_time(probe)
    finally:
        fs, p = filesystem(probe)
        fs.delete_file(p)


@remote_errors
def newest_file_time(path) -> float:
    import pyarrow.fs

    fs, p = filesystem(path)
    info = fs.get_file_info(p)
    if info.type != pyarrow.fs.FileType.File or not info.mtime_ns:
        raise StorageError(f"{path}: the store gave no modification time")
    return info.mtime_ns / 1e9


@remote_errors
def remove_tree(path) -> None:
    if not is_uri(path):
        shutil.rmtree(_local(path), ignore_errors=True)
        return
    fs, p = filesystem(path)
    fs.delete_dir(p)


def read_json_object(path, error: type[Exception] = ValueError) -> dict:
    """`core.io.read_json_object` for a local path or a URI: one line naming the file."""
    from ..core.io import read_json_object as read_local

    if not is_uri(path):
        return read_local(_local(path), error)
    try:
        obj = json.loads(read_bytes(path))
    except (OSError, ValueError) as e:
        raise error(f"{path}: not a readable JSON file ({' '.join(str(e).split())})") from e
    if not isinstance(obj, dict):
        raise error(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def write_text(path, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> str:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@remote_errors
def fetch(path) -> str:
    """A local path to read `path` from: itself when local, else a copy in the cache,
    downloaded again when the remote file's size or modification time changed."""
    if not is_uri(path):
        return os.path.abspath(_local(path))
    info = _info(path)
    import pyarrow.fs

    if info.type != pyarrow.fs.FileType.File:
        raise FileNotFoundError(f"{path}: no such file")
    stamp = {"size": info.size, "mtime_ns": info.mtime_ns}
    folder = os.path.join(cache_dir(), "fetched", hashlib.sha256(path.encode()).hexdigest()[:24])
    local, stamp_file = os.path.join(folder, posixpath.basename(path)), os.path.join(folder, "stamp.json")
    try:
        with open(stamp_file) as f:
            if json.load(f) == stamp and os.path.exists(local):
                return local
    except (OSError, ValueError):
        pass
    os.makedirs(folder, exist_ok=True)
    fs, p = filesystem(path)

    def download(tmp):
        with fs.open_input_stream(p) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)

    atomic_write(local, download)  # several actors on one node may fetch at once: each renames a whole file
    atomic_write(stamp_file, lambda tmp: open(tmp, "w").write(json.dumps(stamp)))
    return local


def sha256(path) -> str:
    """The SHA-256 of a file's bytes (a local copy's, for a URI)."""
    return file_sha256(fetch(path))


@contextmanager
def pinned(path, expected_sha256: str | None = None):
    """(a private local copy of `path`, its SHA-256): the copy is made in one read that also
    hashes it, so a reader that loads the copy loads exactly the bytes it hashed, whatever
    replaces `path` meanwhile (a finishing run renames a new best.pt over the old). With
    `expected_sha256`, bytes other than those are refused in one line. The copy is removed
    when the block ends."""
    import tempfile

    from ..core.errors import CheckpointError

    folder = tempfile.mkdtemp(prefix="arplatform-pinned-")
    try:
        copy, h = os.path.join(folder, posixpath.basename(str(path)) or "file"), hashlib.sha256()
        with open(fetch(path), "rb") as src, open(copy, "wb") as dst:
            for block in iter(lambda: src.read(1 << 22), b""):
                h.update(block)
                dst.write(block)
        digest = h.hexdigest()
        if expected_sha256 and digest != expected_sha256:
            raise CheckpointError(f"{path}: changed since this run checked it (SHA-256 {digest[:12]}…, expected "
                                  f"{expected_sha256[:12]}…); rerun to use the new file")
        try:
            yield copy, digest
        except USER_ERRORS as e:  # the reader names the copy, which is gone by the time anyone reads the line
            if copy not in str(e):
                raise
            raise type(e)(str(e).replace(copy, str(path))) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@remote_errors
def fetch_folder(path) -> str:
    """A local copy of a whole folder, the same as the remote one now: changed files fetched
    again (`fetch` compares size and modification time), files gone remotely removed here.
    The folder itself when local."""
    if not is_uri(path):
        return os.path.abspath(_local(path))
    import pyarrow.fs

    fs, p = filesystem(path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(p, recursive=True, allow_not_found=True))
    folder = os.path.join(cache_dir(), "folders", hashlib.sha256(path.encode()).hexdigest()[:24])
    if not infos:
        raise FileNotFoundError(f"{path}: no such folder")
    wanted = set()
    for info in infos:
        if info.type != pyarrow.fs.FileType.File:
            continue
        rel = info.path[len(p):].lstrip("/")  # (not relpath: it would consult the cwd)
        wanted.add(rel)
        source, target = fetch(split_uri(path)[0] + info.path), os.path.join(folder, *rel.split("/"))
        if not os.path.exists(target) or os.stat(target).st_mtime_ns != os.stat(source).st_mtime_ns:
            atomic_write(target, lambda tmp, src=source: shutil.copy2(src, tmp))  # copy2: the mtime compared above
    for root, _, files in os.walk(folder):
        for name in files:
            if os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/") not in wanted:
                os.remove(os.path.join(root, name))
    return folder


def check_writable(root, key: str) -> None:
    """Refuse, before any work, a root this process cannot write, naming the config key: a URI
    by one object written and removed; a local folder by making it (under a file, or where it
    cannot be made, the error is one line here rather than a traceback later)."""
    from ..core.errors import ConfigError

    if not is_uri(root):
        missing, made, folder = [], [], os.path.abspath(root)
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
            raise ConfigError(f"{key}: cannot make the folder {root} ({e.strerror or e})") from None
        finally:
            for folder in reversed(made):
                try:
                    os.rmdir(folder)
                except OSError:  # another process has put something in it: it is theirs now
                    break
        if not missing and not os.path.isdir(root):
            raise ConfigError(f"{key}: {root} is a file; name a folder")
        return

    probe = join(root, f".arplatform-write-check-{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"")
        fs, p = filesystem(probe)
        fs.delete_file(p)
    except (OSError, ValueError) as e:  # StorageError is an OSError
        raise ConfigError(f"{key}: cannot write to {root} ({' '.join(str(e).split())})") from None


def upload_folder(local: str, uri: str, last: tuple[str, ...] = ()) -> None:
    """Every file under `local` (links followed) to the same relative path under `uri`; the
    files named in `last` go after all others, so a reader that waits for them (a codebook.pt)
    never finds the folder half uploaded."""
    try:
        fs, base = filesystem(uri)
        rels = [os.path.relpath(os.path.join(root, name), local)
                for root, _, files in os.walk(local, followlinks=True) for name in files
                if not (name.startswith(".tmp") or name.endswith(".lock"))]
        for rel in sorted(rels, key=lambda r: (os.path.basename(r) in last, r)):
            key = f"{base}/{rel.replace(os.sep, '/')}"
            with open(os.path.join(local, rel), "rb") as src, fs.open_output_stream(key) as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    except (OSError, ValueError) as e:
        raise StorageError(f"{uri}: upload of {local} failed ({' '.join(str(e).split())})") from None


class Root:
    """An output root, resolved once where a stage starts: `root` (an absolute local path, or a
    URI) and `local`, the folder on this machine that stands for it: the root itself when
    local; for a URI, a folder in this machine's cache (`<cache>/mirror/<scheme>/<bucket>/<prefix>`)
    that a driver builds trees in, then pushes. Code further in takes this object, or plain
    local paths under `local`: only its methods need to know whether the root is a URI."""

    def __init__(self, root):
        self.root = absolute(root)
        self.remote = is_uri(self.root)
        if self.remote:
            scheme, rest = split_uri(self.root)
            self.local = os.path.join(cache_dir(), "mirror", scheme[:-3], *rest.strip("/").split("/"))
        else:
            self.local = self.root

    def path(self, *parts: str) -> str:
        """The root's own name for `parts` under it: a URI for a bucket, a local path else."""
        return join(self.root, *parts) if parts else self.root

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
        return join(self.root, *rel.split(os.sep)) if rel != "." else self.root

    def shared_name(self, path: str) -> str:
        """What a record others read (MLflow) names `path` by: relative to the root when inside
        it (the root's own URI in front for a bucket), else a URI (`file://` for a local path).
        An absolute local path means nothing to a colleague on another machine."""
        if is_uri(path):
            return path
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(self.local))
        if rel.startswith(".."):
            return "file://" + os.path.abspath(path)
        rel = "/".join(rel.split(os.sep))
        return join(self.root, rel) if self.remote else rel

    def check_writable(self, key: str) -> None:
        check_writable(self.root, key)

    def push(self, local_path: str, last: tuple[str, ...] = ()) -> None:
        """Upload a folder (or file) inside `local` to the same place under the root, the files
        named in `last` last; nothing for a local root."""
        if not self.remote:
            return
        target = self.public(local_path)
        if os.path.isdir(local_path):
            upload_folder(local_path, target, last)
        elif os.path.exists(local_path):
            write_bytes(target, read_bytes(local_path))

    def pull(self, *parts: str) -> None:
        """Download the root's `parts` folder into `local` (nothing when it is not there)."""
        if not self.remote or not exists(self.path(*parts)):
            return
        src = fetch_folder(self.path(*parts))
        shutil.copytree(src, self.local_path(*parts), dirs_exist_ok=True)


class Folder:
    """A folder many processes fill file by file, on any node (a samples folder): named once,
    a local path or a URI, its files read and written by their names inside it ('codes/x.npy').
    Every process makes its own from the folder's name; code further in takes this object and
    never asks whether the folder is in a bucket: only its methods know."""

    def __init__(self, path):
        self.path = absolute(path)
        self.remote = is_uri(self.path)

    def __str__(self) -> str:
        return self.path

    def file(self, name: str = "") -> str:
        """The public name (a path or a URI) of `name` inside the folder."""
        return join(self.path, *name.split("/")) if name else self.path

    def exists(self, name: str = "") -> bool:
        return exists(self.file(name))

    def isfile(self, name: str = "") -> bool:
        return isfile(self.file(name))

    def listdir(self, name: str = "") -> list[str]:
        return listdir(self.file(name))

    def read_bytes(self, name: str) -> bytes:
        return read_bytes(self.file(name))

    def write_bytes(self, name: str, data: bytes) -> str:
        return write_bytes(self.file(name), data)

    def write_stream(self, name: str, write) -> str:
        return write_stream(self.file(name), write)

    def read_json_object(self, name: str, error: type[Exception] = ValueError) -> dict:
        return read_json_object(self.file(name), error)

    def write_json(self, name: str, obj) -> str:
        return write_json(self.file(name), obj)

    def write_text(self, name: str, text: str) -> str:
        return write_text(self.file(name), text)

    def fetch(self, name: str) -> str:
        """A local path to read `name` from (`fetch`)."""
        return fetch(self.file(name))

    def remove_temps(self, name: str = "") -> None:
        """The `.<name>.<random>.tmp` files a writer killed mid-write left in `name`
        (`write_bytes` writes local files through `core.io.atomic_write`). Call it where no live
        writer can own one (under the folder's writer lock). A bucket has none: each object
        is written whole."""
        if self.remote:
            return
        folder = self.file(name)
        for entry in listdir(folder):
            if entry.startswith(".") and entry.endswith(".tmp"):
                os.remove(os.path.join(folder, entry))
