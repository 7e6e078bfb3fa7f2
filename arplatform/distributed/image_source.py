"""Images for the tokenizer's Ray workers and actors, from one of two places:

- an array in Ray's object store, for datasets decoded on the driver (MNIST, CIFAR-10, npz):
  one copy per node, whatever the number of workers;
- a folder's files (`imagedata.ImageFiles`), for folder datasets of any size: the driver holds
  only their paths and labels, and each worker or actor decodes the images it uses.

`scan_files` decodes every file once in Ray Data tasks, in parallel, before anything trains,
so an unreadable image is refused (or skipped and counted) up front, as in one process.
"""

from __future__ import annotations

import os

import numpy as np

from ..core.errors import DataError
from ..data.datasets import ImageFiles, ImageSet, read_image

SCAN_BATCH = 256  # files per scanning task call


def image_source(ray, data: ImageSet | ImageFiles) -> dict:
    """What a worker needs to read `data`: plain values and object refs."""
    if isinstance(data, ImageFiles):  # (paths and labels: once in the object store, not in every config)
        return {"files": ray.put(data.to_dict())}
    return {"array": ray.put(data.images)}


HELD_BYTES_MAX = 1 << 30  # a worker's share of decoded images up to this is held; beyond, decoded on use


class ImageReader:
    """Inside a worker or actor: `read(index)` → float32 (n, C, H, W), decoded there from files."""

    def __init__(self, source: dict):
        def value(v):  # an object ref from `image_source`, or the plain value itself
            import ray

            return ray.get(v) if isinstance(v, ray.ObjectRef) else v

        self.files = ImageFiles.from_dict(value(source["files"])) if "files" in source else None
        self.array = None if self.files else value(source["array"])

    def __len__(self) -> int:
        return len(self.files) if self.files else len(self.array)

    def read(self, index=None) -> np.ndarray:
        if self.files:
            return self.files.read(index)
        return self.array if index is None else self.array[index]

    def rows(self, index: np.ndarray, held_bytes_max: int = HELD_BYTES_MAX):
        """The images at `index` for `core.loop.IndexBatches`: a tensor, or, for files whose decoded
        pixels would pass `held_bytes_max`, a `DecodedOnUse` that decodes each batch when it is drawn."""
        import torch

        if self.files and len(index) * 4 * int(np.prod(self.files.shape)) > held_bytes_max:
            return DecodedOnUse(self, index)
        return torch.from_numpy(self.read(index))


class DecodedOnUse:
    """Rows of an `ImageReader`'s files that `IndexBatches` indexes like a tensor: `rows[idx]`
    decodes just those images, so a worker never holds its whole share."""

    def __init__(self, reader: ImageReader, index: np.ndarray):
        self.reader, self.index = reader, np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx):
        import torch

        return torch.from_numpy(self.reader.read(self.index[np.asarray(idx)]))


def _unreadable(batch: dict, mode: str, image_size, max_pixels: int, crop: str, shape: tuple) -> dict:
    """Ray Data task: the rows of `batch` whose file does not decode, or decodes to another shape
    than the first image's, with why."""
    found = []  # (index, why, kind)
    for i, path, on_driver in zip(batch["index"].tolist(), batch["path"].tolist(), batch["on_driver"].tolist(),
                                  strict=True):
        if not os.path.exists(path) and not on_driver:  # missing everywhere (a labels.csv row): unreadable
            found.append((i, f"{path}: not a readable image (no such file)", "unreadable"))
            continue
        if not os.path.exists(path):  # on the driver, not here: not an unreadable image
            import ray

            found.append((i, f"{path}: listed on the driver but not on node {ray.util.get_node_ip_address()}; "
                             "engine=ray reads a folder where each task runs: it must be at the same path on "
                             "every node (a shared filesystem)", "missing"))
            continue
        try:
            got = read_image(path, mode, image_size, max_pixels, crop).shape
        except DataError as e:
            found.append((i, str(e), "unreadable"))
            continue
        if got != tuple(shape):
            found.append((i, f"{path}: {got[2]}×{got[1]} pixels, the first image {shape[2]}×{shape[1]}; images "
                             "differ in size: set data.image_size to resize them", "size"))
    index, why, kind = zip(*found, strict=True) if found else ((), (), ())
    return {"index": np.asarray(index, np.int64), "why": np.asarray(why, dtype=object),
            "kind": np.asarray(kind, dtype=object)}


def scan_files(ray, files: ImageFiles, log) -> list[tuple[int, str]]:
    """(index, why) of every file of `files` that does not decode, found by Ray Data tasks. A file
    that decodes to another size than the first readable one is refused (as in one process)."""
    import ray.data

    shape = first_shape(files)
    rows = ray.data.from_items([{"index": i, "path": p, "on_driver": os.path.exists(p)}
                                for i, p in enumerate(files.paths)])
    bad = rows.map_batches(_unreadable, batch_size=SCAN_BATCH, batch_format="numpy", num_cpus=1,
                           fn_kwargs={"mode": files.mode, "image_size": files.image_size,
                                      "max_pixels": files.max_pixels, "crop": files.crop, "shape": shape}).take_all()
    log(f"  scan: {len(files)} image files decoded on Ray Data tasks, "
        f"{sum(r['kind'] == 'unreadable' for r in bad)} unreadable")
    refused = sorted((int(r["index"]), str(r["why"])) for r in bad if r["kind"] in ("size", "missing"))
    if refused:
        raise DataError(refused[0][1])
    return sorted((int(r["index"]), str(r["why"])) for r in bad if r["kind"] == "unreadable")


def first_shape(files: ImageFiles) -> tuple[int, int, int]:
    """The shape of the first file that decodes (the one every other must have)."""
    for path in files.paths:
        try:
            return read_image(path, files.mode, files.image_size, files.max_pixels, files.crop).shape
        except DataError:
            continue
    raise DataError(f"{files.source}: no readable images found")
