"""A folder of generated samples: written batch by batch, resumable, then summarised.

    <out>/
        images/000123.png           one PNG per sample, named by its index
        codes/codes-<first>-<n>.npy the codes of one written batch (int32, (n, positions)),
        codes/labels-<first>-<n>.npy   its classes (-1: unconditional)
        codes/index-<first>-<n>.npy    its indices: written last, so it marks the batch complete
        manifest.json               settings, checkpoint, codebook and VAE paths with their SHA-256,
                                    and every sample's index, class and random key
        samples.npz                 images (N, H, W[, C]) uint8, labels, codes, index: what evaluation reads
        grid.png                    up to 10 samples per class, a row per class

A sample is done when its index is in an index file. Rerunning the same command
skips those; a batch cut short leaves no index file and is drawn again (its PNGs
are replaced atomically), so nothing is redone twice and nothing is duplicated.

`out` may be a local folder or a URI (`storage.py`): every file is written whole,
from whichever node's actor drew the batch.
"""

from __future__ import annotations

import io
import os

import numpy as np

from . import storage
from .core.errors import DataError
from .images import png_bytes

MANIFEST = "manifest.json"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load_npy(path: str) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)


def image_path(out: str, index: int) -> str:
    return storage.join(out, "images", f"{int(index):06d}.png")


def write_batch(out: str, index: np.ndarray, labels: np.ndarray, codes: np.ndarray, images: np.ndarray) -> None:
    """One batch's PNGs (images: (B, H, W, C) uint8), then its codes and labels, then its
    index file (the completion mark)."""
    for i, image in zip(index, images, strict=True):
        storage.write_bytes(image_path(out, i), png_bytes(image))
    tag = f"{int(index[0]):07d}-{len(index)}"
    storage.write_bytes(storage.join(out, "codes", f"codes-{tag}.npy"), npy_bytes(codes.astype(np.int32)))
    storage.write_bytes(storage.join(out, "codes", f"labels-{tag}.npy"), npy_bytes(labels.astype(np.int64)))
    storage.write_bytes(storage.join(out, "codes", f"index-{tag}.npy"), npy_bytes(index.astype(np.int64)))


def written(out: str) -> dict[str, np.ndarray]:
    """Every complete batch, merged and sorted by index: {"index", "labels", "codes"}."""
    parts = []
    folder = storage.join(out, "codes")
    for name in storage.listdir(folder):
        if not (name.startswith("index-") and name.endswith(".npy")):
            continue
        tag, index_file = name[len("index-"):-len(".npy")], storage.join(folder, name)
        try:
            index = load_npy(index_file)
            codes = load_npy(storage.join(folder, f"codes-{tag}.npy"))
            labels = load_npy(storage.join(folder, f"labels-{tag}.npy"))
        except (OSError, ValueError) as e:
            raise DataError(f"{index_file}: a written batch cannot be read ({e}); remove it to draw it again") from e
        parts.append((index, labels, codes))
    if not parts:
        return {"index": np.zeros(0, np.int64), "labels": np.zeros(0, np.int64), "codes": None}
    index = np.concatenate([p[0] for p in parts])
    order = np.argsort(index, kind="stable")
    keep = order[np.r_[True, np.diff(index[order]) != 0]]  # one row per index, whatever happened before
    return {"index": index[keep], "labels": np.concatenate([p[1] for p in parts])[keep],
            "codes": np.concatenate([p[2] for p in parts])[keep]}


def check_manifest(out: str, manifest: dict) -> None:
    """A folder holds one checkpoint's samples under one setting; more samples may be added."""
    path = storage.join(out, MANIFEST)
    if not storage.exists(path):
        return
    old = storage.read_json_object(path, DataError)
    for key in ("checkpoint_sha256", "settings"):
        if old.get(key) != manifest[key]:
            raise DataError(f"{path}: this folder holds samples of another {key.split('_')[0]} "
                            f"({old.get(key)!r}); pass another --out")


def remove_dead_temps(out: str) -> None:
    """The `.<name>.<random>.tmp` files a writer killed mid-write left (`core.io.atomic_write`):
    called under the folder's writer lock, so no live writer owns one. (A bucket has none: each
    object is written whole.)"""
    if storage.is_uri(out):
        return
    for sub in ("", "images", "codes"):
        folder = os.path.join(out, sub)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if name.startswith(".") and name.endswith(".tmp"):
                os.remove(os.path.join(folder, name))


def bind(out: str, manifest: dict, num_samples: int) -> None:
    """Check the folder again under its writer lock, refuse a smaller --num_samples than it
    already holds (its samples.npz would hold more than asked), and write the manifest's
    identity part (checkpoint, its SHA-256, settings) before any batch is drawn."""
    check_manifest(out, manifest)
    remove_dead_temps(out)
    held = written(out)["index"]
    if len(held) and int(held.max()) >= num_samples:
        raise DataError(f"{out}: this folder already holds samples up to index {int(held.max())}; pass "
                        f"--num_samples {int(held.max()) + 1} or more, or another --out")
    path = storage.join(out, MANIFEST)
    if not storage.exists(path):
        storage.write_json(path, dict(manifest, num_written=0, samples=[]))


def finish(out: str, manifest: dict, samples: list[dict], columns: int = 10) -> dict:
    """samples.npz, grid.png and manifest.json from every written batch."""
    from PIL import Image

    from .images import make_grid

    done = written(out)
    images = np.stack([np.asarray(Image.open(io.BytesIO(storage.read_bytes(image_path(out, i)))))
                       for i in done["index"]])
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=done["labels"], codes=done["codes"], index=done["index"])
    storage.write_bytes(storage.join(out, "samples.npz"), buffer.getvalue())
    grid_images, per_class = grid_selection(images, done["labels"], columns)
    chw = grid_images[:, None] if grid_images.ndim == 3 else grid_images.transpose(0, 3, 1, 2)
    storage.write_bytes(storage.join(out, "grid.png"),
                        png_bytes(make_grid(chw.astype(np.float32) / 255.0, columns=per_class)))
    manifest = dict(manifest, num_written=int(len(done["index"])), samples=samples)
    storage.write_json(storage.join(out, MANIFEST), manifest)
    return done


def grid_selection(images: np.ndarray, labels: np.ndarray, columns: int) -> tuple[np.ndarray, int]:
    """Up to `columns` images of each class, a row per class (unconditional: up to
    `columns` rows); and the row length."""
    if (labels < 0).all():
        return images[: columns * columns], columns
    per_class = min(columns, min(int((labels == c).sum()) for c in np.unique(labels)))
    picks = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return images[np.concatenate(picks)], per_class
