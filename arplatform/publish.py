"""Tokenizer outputs that become visible together or not at all.

One tokenizer run writes its VAE and its codebook folder (codebook.pt, codes,
labels, split, evaluation) into a staging folder, then publishes them as one
immutable version behind a single symbolic link:

    <root>/tokenizers/<name>/<version>/vae/checkpoints/{best,last}.pt
    <root>/tokenizers/<name>/<version>/codebook/codebook.pt, codes.npy, …
    <root>/tokenizers/<name>/current -> <version>          the one pointer, replaced by a rename
    <root>/vae_<name>      -> tokenizers/<name>/current/vae        fixed links: the seed's paths
    <root>/codebook/<name> -> ../tokenizers/<name>/current/codebook

Publishing is one `rename` of `current`, so a reader of the seed's paths sees the
old VAE with the old codebook or the new with the new, whenever the publisher is
killed. Staging folders and versions left by dead processes are removed by the
next run; the previous version is kept for readers that opened it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid

from . import storage
from .core.codebook import load_codebook_file

STAGING_PREFIX = ".staging-tokenize-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _owner_pid(name: str) -> int | None:
    """The pid in a version name (`<date>-<time>-<pid>-<random>`), a staging suffix (`<pid>-<random>`)
    or a link being replaced (`<name>.link-<pid>-<random>`)."""
    match = re.fullmatch(r"(?:\d{8}-\d{6}-|.*\.link-)?(\d+)-\w+", name)
    return int(match.group(1)) if match else None


def _remove(path: str) -> None:
    """A folder, a file or a symbolic link (rmtree refuses links)."""
    if os.path.islink(path) or os.path.isfile(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    else:
        shutil.rmtree(path, ignore_errors=True)


def _remove_dead_link_temps(folder: str, prefix: str) -> None:
    """`<prefix>.link-<pid>-<random>`: a link a killed publisher made but never renamed into place."""
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        pid = _owner_pid(entry) if entry.startswith(f"{prefix}.link-") else None
        if pid is not None and not _pid_alive(pid):
            _remove(os.path.join(folder, entry))


def versions_dir(root: str, name: str) -> str:
    return os.path.join(root, "tokenizers", name)


def staging_dir(root: str, name: str) -> str:
    os.makedirs(root, exist_ok=True)
    clean_stale(root, name)
    return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-{os.getpid()}-", dir=root)


def clean_stale(root: str, name: str) -> None:
    """Remove staging folders, unpublished versions and half-made links of `name` whose process is gone."""
    if not os.path.isdir(root):
        return
    prefix = f"{STAGING_PREFIX}{name}-"
    for entry in os.listdir(root):
        pid = _owner_pid(entry[len(prefix):]) if entry.startswith(prefix) else None
        if pid is not None and not _pid_alive(pid):
            _remove(os.path.join(root, entry))
    _remove_dead_link_temps(root, f"vae_{name}")
    _remove_dead_link_temps(os.path.join(root, "codebook"), name)
    prune_versions(root, name)


def current_version(root: str, name: str) -> str | None:
    link = os.path.join(versions_dir(root, name), "current")
    return os.readlink(link) if os.path.islink(link) else None


def prune_versions(root: str, name: str, keep_previous: str | None = None, log=print) -> None:
    """Remove the versions of `name` nobody needs: not current, not the previous one (a reader
    may have opened it), not one a live process is publishing, and not one whose codebook a
    training run or sweep trial under `root` trained on (its checkpoints decode through it)."""
    base = versions_dir(root, name)
    if not os.path.isdir(base):
        return
    keep = {current_version(root, name), keep_previous, "current"}
    named = versions_named_by_runs(root, base)
    for entry in os.listdir(base):
        pid = _owner_pid(entry)
        if entry in keep or (pid is not None and _pid_alive(pid)):
            continue
        if entry in named:
            log(f"kept tokenizer version {os.path.join(base, entry)}: run {named[entry]} trained on it")
            continue
        _remove(os.path.join(base, entry))


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


def _replace_with_link(path: str, target: str) -> None:
    """Make `path` a symbolic link to `target`, atomically when `path` is already a link or absent."""
    if os.path.islink(path) and os.readlink(path) == target:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.isdir(path) and not os.path.islink(path):  # outputs of an earlier layout: moved aside
        shutil.rmtree(path)
    tmp = f"{path}.link-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.symlink(target, tmp)
    os.replace(tmp, path)


def publish(root: str, name: str, staging: str) -> str:
    """Move `staging` (holding `vae/` and `codebook/`) to a new version and make it current.
    Returns the version folder."""
    base = versions_dir(root, name)
    os.makedirs(base, exist_ok=True)
    version = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.rename(staging, os.path.join(base, version))
    _replace_with_link(os.path.join(root, f"vae_{name}"), os.path.join("tokenizers", name, "current", "vae"))
    _replace_with_link(os.path.join(root, "codebook", name),
                       os.path.join("..", "tokenizers", name, "current", "codebook"))
    previous = current_version(root, name)
    _replace_with_link(os.path.join(base, "current"), version)  # the publish: one rename
    prune_versions(root, name, keep_previous=previous)
    return os.path.join(base, version)


def codebook_vae_path(codebook_path, codebook: dict | None = None) -> str | None:
    """The VAE checkpoint a codebook names. The tokenizer stores it relative to the codebook's
    own folder, so it resolves from any working directory; absolute paths are kept. Where that
    file is missing (a copy of the published folders, as in a bucket, has no version folders),
    the published layout's `<root>/vae_<name>/checkpoints/best.pt` beside `<root>/codebook/<name>`."""
    codebook = codebook if codebook is not None else load_codebook_file(storage.fetch(codebook_path))
    config = codebook.get("config", {})
    path = config.get("vae_checkpoint")
    if not isinstance(path, str) or not path:
        return None
    if os.path.isabs(path) or storage.is_uri(path):
        return path
    codebook_path = os.fspath(codebook_path)
    # realpath first: the codebook folder may be a link into a versioned tokenizer output
    folder = storage.dirname(codebook_path if storage.is_uri(codebook_path) else os.path.realpath(codebook_path))
    candidate = storage.join(folder, path)
    candidate = candidate if storage.is_uri(candidate) else os.path.normpath(candidate)
    published = storage.join(storage.dirname(codebook_path), "..", "..", f"vae_{config.get('name')}", "checkpoints",
                             "best.pt")
    if not storage.exists(candidate) and config.get("name") and storage.exists(published):
        return published
    return candidate

