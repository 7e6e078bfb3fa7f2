"""Tokenizer outputs that become visible together or not at all.

One tokenizer run writes its VAE and its codebook folder (codebook.pt, codes,
labels, split, evaluation) into a staging folder, then publishes them as one
immutable version behind a single symbolic link:

    <root>/tokenizers/<name>/<version>/vae/checkpoints/{best,last}.pt
    <root>/tokenizers/<name>/<version>/codebook/codebook.pt, codes.npy, …
    <root>/tokenizers/<name>/current -> <version>          the one pointer, replaced by a rename
    <root>/vae_<name>      -> tokenizers/<name>/current/vae        fixed links: the seed's paths
    <root>/codebook/<name> -> ../tokenizers/<name>/current/codebook

Publishing is one rename of `current`: a reader sees the old VAE with the old codebook or the
new with the new. What dead processes left is removed by the next run; who is alive is told by
a lock each publish holds (`.publish-locks/<token>.lock`), which the kernel drops at its death.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from ..core.codebook import load_codebook_file
from ..core.errors import StorageError
from ..core.io import save_json
from . import storage

STAGING_PREFIX = ".staging-tokenize-"
VERSION_FILE = "version.json"  # in a bucket's published codebook folder: the version it is a copy of
PINS = "pins"  # inside a version: one file per training run that trained on it (`pin_version`)


_HELD: dict[str, object] = {}  # token → the FileLock this process holds while it stages and publishes


def _lock_path(root: str, token: str) -> str:
    return os.path.join(root, ".publish-locks", f"{token}.lock")


def _claim(root: str) -> str:
    """A new token, its lock held by this process until `release`."""
    from filelock import FileLock

    token = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.makedirs(os.path.dirname(_lock_path(root, token)), exist_ok=True)
    lock = FileLock(_lock_path(root, token))
    lock.acquire()
    _HELD[token] = lock
    return token


def release(root: str, token: str) -> None:
    lock = _HELD.pop(token, None)
    if lock is not None:
        lock.release()
        _remove(_lock_path(root, token))
        try:
            os.rmdir(os.path.dirname(_lock_path(root, token)))  # the last one out: no empty folder left
        except OSError:
            pass


def _alive(root: str, token: str) -> bool:
    """Whether the publisher of `token` still works: its lock is held (by this process or another)."""
    from filelock import FileLock, Timeout

    if token in _HELD:
        return True
    path = _lock_path(root, token)
    if not os.path.exists(path):
        return False  # never locked (an older layout), or released: its owner is done
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    _remove(path)
    return False


def _owner_token(name: str) -> str | None:
    """The token in a version name (`<date>-<time>-<token>`), a staging suffix (`<token>`) or a
    link being replaced (`<name>.link-<token>`)."""
    match = re.fullmatch(r"(?:\d{8}-\d{6}-|.*\.link-)?(\d+-\w+)", name)
    return match.group(1) if match else None


def _remove(path: str) -> None:
    """A folder, a file or a symbolic link (rmtree refuses links)."""
    if os.path.islink(path) or os.path.isfile(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    else:
        shutil.rmtree(path, ignore_errors=True)


def _remove_dead_link_temps(root: str, folder: str, prefix: str) -> None:
    """`<prefix>.link-<pid>-<random>`: a link a killed publisher made but never renamed into place."""
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        token = _owner_token(entry) if entry.startswith(f"{prefix}.link-") else None
        if token is not None and not _alive(root, token):
            _remove(os.path.join(folder, entry))


def versions_dir(root: str, name: str) -> str:
    return os.path.join(root, "tokenizers", name)


def staging_dir(out: storage.Root, name: str) -> str:
    """A new staging folder in the root's local folder, its token's lock held until `publish` or
    `discard`."""
    root = out.local
    os.makedirs(root, exist_ok=True)
    clean_stale(root, name)
    folder = os.path.join(root, f"{STAGING_PREFIX}{name}-{_claim(root)}")
    os.makedirs(folder)
    return folder


def _token_of_staging(staging: str) -> str:
    return "-".join(os.path.basename(staging).rsplit("-", 2)[-2:])  # `<prefix><name>-<pid>-<random>`


def discard(out: storage.Root, staging: str) -> None:
    """A staging folder that will not be published (a failed run): removed, its lock released."""
    shutil.rmtree(staging, ignore_errors=True)
    release(out.local, _token_of_staging(staging))


def clean_stale(root: str, name: str) -> None:
    """Remove staging folders, unpublished versions and half-made links of `name` whose process is gone."""
    if not os.path.isdir(root):
        return
    prefix = f"{STAGING_PREFIX}{name}-"
    for entry in os.listdir(root):
        token = _owner_token(entry[len(prefix):]) if entry.startswith(prefix) else None
        if token is not None and not _alive(root, token):
            _remove(os.path.join(root, entry))
    _remove_dead_link_temps(root, root, f"vae_{name}")
    _remove_dead_link_temps(root, os.path.join(root, "codebook"), name)
    prune_versions(root, name)


def current_version(root: str, name: str) -> str | None:
    link = os.path.join(versions_dir(root, name), "current")
    return os.readlink(link) if os.path.islink(link) else None


def prune_versions(root: str, name: str, keep_previous: str | None = None, log=print) -> None:
    """Remove the versions of `name` nobody needs: not current or the previous one, not one a
    live process publishes, not one whose codebook a run or trial trained on (`pin_version`)."""
    base = versions_dir(root, name)
    if not os.path.isdir(base):
        return
    keep = {current_version(root, name), keep_previous, "current"}
    named = versions_named_by_runs(root, base)
    for entry in os.listdir(base):
        token = _owner_token(entry)
        if entry in keep or (token is not None and _alive(root, token)):
            continue
        claim = named.get(entry) or claimed_by(os.path.join(base, entry))
        if claim:
            log(f"kept tokenizer version {os.path.join(base, entry)}: run {claim} trained on it")
            continue
        _remove(os.path.join(base, entry))


def pin_version(codebook_pt: str | None, run_state: str, log=print) -> None:
    """A training run's claim on its codebook's version, `<version>/pins/<run>.json` naming the
    run's run.json: `prune_versions` keeps it while the run exists, whatever root it writes to."""
    if not codebook_pt or storage.Location(codebook_pt).remote:
        return
    version = os.path.dirname(os.path.dirname(os.path.realpath(codebook_pt)))
    if os.path.basename(os.path.dirname(os.path.dirname(version))) != "tokenizers":
        return  # explicit codebook files, not a tokenizer version: nothing prunes them
    pin = os.path.join(version, PINS, hashlib.sha256(os.path.abspath(run_state).encode()).hexdigest()[:16] + ".json")
    try:
        save_json(pin, {"run_state": os.path.abspath(run_state)})
    except OSError as e:  # a read-only tokenizer root: the run goes on, and says what is not protected
        log(f"warning: could not pin tokenizer version {version} ({e.strerror or e}); a later tokenize of its "
            "root may prune it")


def claimed_by(version: str) -> str | None:
    """A run folder whose pin in `version` still names an existing run.json (a removed run's pin
    claims nothing)."""
    import glob
    import json

    for pin in sorted(glob.glob(os.path.join(version, PINS, "*.json"))):
        try:
            with open(pin, encoding="utf-8") as f:
                state = json.load(f).get("run_state")
        except (OSError, ValueError, AttributeError):
            return pin  # being written, or unreadable: kept, to be safe
        if isinstance(state, str) and os.path.exists(state):
            return os.path.dirname(state)
    return None


def versions_named_by_runs(root: str, base: str) -> dict[str, str]:
    """{version: a run folder that names it}: the `codebook_pt` every training run and sweep
    trial records in its run.json, resolved (it may name the version through a link)."""
    import glob
    import json

    named = {}
    base = os.path.realpath(base)
    for state in glob.glob(os.path.join(root, "transformer", "*", "runs", "*", "run.json")) + \
            glob.glob(os.path.join(root, "tune", "*", "trials", "*", "run.json")):
        try:
            with open(state, encoding="utf-8") as f:
                codebook = json.load(f).get("codebook_pt")
        except (OSError, ValueError, AttributeError):
            continue  # a run.json being written, or not a run's: it names nothing
        if isinstance(codebook, str) and not codebook.startswith(("s3://", "gs://")):
            rel = os.path.relpath(os.path.realpath(codebook), base)
            if not rel.startswith(".."):
                named.setdefault(rel.split(os.sep)[0], os.path.dirname(state))
    return named


def _replace_with_link(path: str, target: str, token: str) -> None:
    """Make `path` a symbolic link to `target`, atomically when `path` is already a link or absent."""
    if os.path.islink(path) and os.readlink(path) == target:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.isdir(path) and not os.path.islink(path):  # outputs of an earlier layout: moved aside
        shutil.rmtree(path)
    tmp = f"{path}.link-{token}"
    os.symlink(target, tmp)
    os.replace(tmp, path)


def publish(out: storage.Root, name: str, staging: str) -> str:
    """Move `staging` (holding `vae/` and `codebook/`) to a new version in the root's local folder
    and make it current. Returns the version folder."""
    root = out.local
    base = versions_dir(root, name)
    os.makedirs(base, exist_ok=True)
    token = _token_of_staging(staging)
    version = f"{time.strftime('%Y%m%d-%H%M%S')}-{token}"
    os.rename(staging, os.path.join(base, version))
    _replace_with_link(os.path.join(root, f"vae_{name}"), os.path.join("tokenizers", name, "current", "vae"), token)
    _replace_with_link(os.path.join(root, "codebook", name),
                       os.path.join("..", "tokenizers", name, "current", "codebook"), token)
    previous = current_version(root, name)
    _replace_with_link(os.path.join(base, "current"), version, token)  # the publish: one rename
    release(root, token)
    prune_versions(root, name, keep_previous=previous)
    return os.path.join(base, version)


def codebook_vae_path(codebook_path, codebook: dict | None = None) -> str | None:
    """The VAE checkpoint a codebook names (relative to the codebook's folder); where that is
    missing (a bucket has no version folders), `<root>/vae_<name>/checkpoints/best.pt`."""
    codebook_file = storage.Location(codebook_path)
    codebook = codebook if codebook is not None else load_codebook_file(codebook_file.fetch())
    config = codebook.get("config", {})
    path = config.get("vae_checkpoint")
    if not isinstance(path, str) or not path:
        return None
    if os.path.isabs(path) or storage.is_uri(path):
        return path
    # realpath first: the codebook folder may be a link into a versioned tokenizer output
    candidate = storage.Location(codebook_file.real()).parent.file(path.replace(os.sep, "/"))
    published = codebook_file.parent.file(f"../../vae_{config.get('name')}/checkpoints/best.pt")
    if config.get("name") and not storage.Location(candidate).exists() and storage.Location(published).exists():
        return published
    return candidate



# -- engine=ray on a bucket root: a staging folder every node reaches -------------------------

LEASE_RENEW_S = 60.0  # how often a live run rewrites its staging folder's lease
LEASE_EXPIRES_S = 15 * 60.0  # a staging folder nothing was written to for this long is a dead run's


@contextmanager
def shared_staging(root: storage.Root, staging: str, log=print):
    """Where engine=ray's workers on every node read and write: `staging` for a local root; for a
    bucket `<root>/.staging/<name>`, deleted when the block ends. A bucket has no locks: a thread
    renews `lease.json` every LEASE_RENEW_S, and the next run deletes folders idle for
    LEASE_EXPIRES_S (by the store's clock)."""
    if not root.remote:
        yield storage.Location(staging)
        return
    remove_expired_staging(root, log)
    shared = root / f".staging/{os.path.basename(staging)}"
    stop = threading.Event()

    def renew():
        while not stop.wait(LEASE_RENEW_S):
            try:
                write_lease(shared)
            except StorageError as e:  # a blip: the next renewal tries again, long before expiry
                log(f"warning: the lease of {shared} was not renewed ({e})")

    write_lease(shared)
    renewer = threading.Thread(target=renew, name="staging-lease", daemon=True)
    renewer.start()
    try:
        yield shared
    finally:
        stop.set()
        renewer.join()
        try:  # a failure to delete it never hides the job's own error
            if shared.exists():
                shared.remove_tree()
        except StorageError as e:
            log(f"warning: {shared} was not deleted ({e}); nothing reads it, and a later run removes it")


def write_lease(shared: storage.Location) -> None:
    shared.write_json("lease.json", {"host": socket.gethostname(), "pid": os.getpid(), "renewed": time.time()})


def remove_expired_staging(root: storage.Root, log=print, expires_s: float = LEASE_EXPIRES_S,
                           now: float | None = None) -> list[str]:
    """Delete the bucket staging folders nothing was written to for `expires_s`; returns them.
    "Now" is the store's clock, never this host's (a fast clock must not expire a live lease)."""
    now = root.store_time() if now is None else now
    removed = []
    for name in root.listdir(".staging"):
        folder = root / f".staging/{name}"
        newest = folder.newest_mtime()
        if newest is None or newest < now - expires_s:
            folder.remove_tree()
            removed.append(folder.path)
            log(f"removed {folder}: a staging folder no run has written to for {expires_s / 60:.0f} min "
                "(its driver was stopped mid-run)")
    return removed
