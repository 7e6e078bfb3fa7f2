"""Atomic file writes: a temp file in the target's folder, then a rename. Every writer takes
`(path, what)`, as `storage.Location.write_json` does."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a local file's bytes, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.cache
def current_umask() -> int:
    """The process's umask. Reading it means setting it, so it is read once (and set back at
    once), not beside other threads writing files on every call."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Call write(tmp_path), fsync, then rename onto `path`: readers see all or nothing."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600: follow the umask, as open() would
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


# -- scratch folders a killed process leaves are removed by the next one ------------------------

_SCRATCH: dict[str, object] = {}  # this process's scratch folders → the open lock file that says it is alive


def scratch_parent() -> str:
    return os.path.join(tempfile.gettempdir(), f"arplatform-scratch-{os.getuid()}")


@contextmanager
def scratch_dir(prefix: str):
    """A private scratch folder, removed when the block ends. One a killed process left (SIGKILL
    runs no `finally`) is removed by the next: its owner holds a flock on `<folder>.lock`, which
    the kernel drops when the process dies."""
    import fcntl
    import shutil
    import uuid

    parent = scratch_parent()
    os.makedirs(parent, mode=0o700, exist_ok=True)
    for name in os.listdir(parent):
        lock_path = os.path.join(parent, name)
        if not name.endswith(".lock") or lock_path[:-5] in _SCRATCH:
            continue
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its process is alive
            shutil.rmtree(lock_path[:-5], ignore_errors=True)
            os.remove(lock_path)
    while True:  # locked before the folder exists, so nobody takes it for a dead process's
        folder = os.path.join(parent, f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        lock = open(folder + ".lock", "a")
        fcntl.flock(lock, fcntl.LOCK_EX)  # (a cleaner that saw the new file first unlinks it: try again)
        if os.path.exists(lock.name) and os.stat(lock.name).st_ino == os.fstat(lock.fileno()).st_ino:
            break
        lock.close()
    _SCRATCH[folder] = lock
    try:
        os.mkdir(folder, 0o700)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.remove(lock.name)
        _SCRATCH.pop(folder).close()


def save_torch(path, obj) -> str:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


# what torch.load raises on damaged bytes: its zip reader, and the weights-only unpickler walking
# a corrupt pickle (a memo index or opcode argument out of range)
UNREADABLE = (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError, TypeError,
              AttributeError, struct.error)
# PyTorch's paragraphs around a refusal; one of them advises loading the file unsafely
TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def load_torch(path, error: type[Exception], what: str = "checkpoint", allowed: tuple = (), map_location="cpu"):
    """torch.load with weights_only=True: tensors, plain data and the `allowed` types. Anything
    else raises `error` in one line that names the file and the reason (never the advice to
    load it unsafely)."""
    try:
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            # a foreign pickle's protocol warning would be a second line before the refusal
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        kept = [line.strip() for line in str(e).splitlines() if line.strip() and not line.startswith(TORCH_ADVICE)]
        reason = " ".join(kept).replace("WeightsUnpickler error: ", "") or type(e).__name__
        raise error(f"{path}: refused to load: it holds objects other than tensors and plain data, or is not "
                    f"a file torch.save wrote ({reason})") from None
    except UNREADABLE as e:
        reason = str(e).strip().split(". ")[0].splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"{path}: unreadable or truncated {what} ({reason})") from None


def save_npy(path, array: np.ndarray) -> str:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return atomic_write(path, write)


def save_text(path, text: str) -> str:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def save_json(path, obj) -> str:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, write)


def read_json_object(path, error: type[Exception] = ValueError) -> dict:
    """A JSON file holding an object; anything else raises `error` with one line naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise error(f"{path}: not a readable JSON file ({' '.join(str(e).split())})") from e
    if not isinstance(obj, dict):
        raise error(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj
