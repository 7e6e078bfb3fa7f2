"""A folder of generated samples: written batch by batch, resumable, then summarised.

    <out>/
        images/000123.png           one PNG per sample, named by its index (format=png), or
        images/images-<first>-<n>.tar  one tar of a batch's PNGs, WebDataset-style (format=tar), or
        images/images-<first>-<n>.npy  a batch's images as one uint8 array (format=npz)
        codes/codes-<first>-<n>.npy the codes of one written batch (int32, (n, positions)),
        codes/labels-<first>-<n>.npy   its classes (-1: unconditional)
        codes/index-<first>-<n>.npy    its indices: written last, so it marks the batch complete
        manifest.json               settings, checkpoint, codebook and VAE paths with their SHA-256,
                                    and every sample's index, class and random key
        samples.npz                 images (N, H, W[, C]) uint8, labels, codes, index: what evaluation reads;
                                    arr_0 (N, H, W, 3) uint8: what ADM's and LlamaGen's evaluators read
        grid.png                    up to 10 samples per class, a row per class

A sample is done when its index is in an index file: a rerun skips those, and a batch cut
short is drawn again (its files replaced whole). The folder is a `storage.Location`.
"""

from __future__ import annotations

import io

import numpy as np

from ..core.errors import DataError
from ..data.images import png_bytes
from . import storage

MANIFEST = "manifest.json"
PRECISION = "precision.json"  # the precision every image of the folder is drawn in (`bound_precision`)
IDENTITY = ("checkpoint_sha256", "codebook_sha256", "vae_sha256", "settings")  # what an image depends on


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load_npy(folder: storage.Location, name: str) -> np.ndarray:
    return np.load(io.BytesIO(folder.read_bytes(name)), allow_pickle=False)


def image_name(index: int) -> str:
    return f"images/{int(index):06d}.png"


def write_batch(out: storage.Location, index: np.ndarray, labels: np.ndarray, codes: np.ndarray, images: np.ndarray,
                fmt: str = "png") -> None:
    """One batch's images (images: (B, H, W, C) uint8) in `fmt`, then its codes and labels, then
    its index file (the completion mark)."""
    tag = f"{int(index[0]):07d}-{len(index)}"
    if fmt == "png":
        for i, image in zip(index, images, strict=True):
            out.write_bytes(image_name(i), png_bytes(image))
    elif fmt == "tar":
        out.write_bytes(f"images/images-{tag}.tar", tar_bytes(index, images))
    else:
        grey = images.ndim == 4 and images.shape[-1] == 1  # (B, H, W) as a grey PNG decodes
        out.write_bytes(f"images/images-{tag}.npy", npy_bytes((images[..., 0] if grey else images).astype(np.uint8)))
    out.write_bytes(f"codes/codes-{tag}.npy", npy_bytes(codes.astype(np.int32)))
    out.write_bytes(f"codes/labels-{tag}.npy", npy_bytes(labels.astype(np.int64)))
    out.write_bytes(f"codes/index-{tag}.npy", npy_bytes(index.astype(np.int64)))


def tar_bytes(index: np.ndarray, images: np.ndarray) -> bytes:
    """A WebDataset-style tar: `<index>.png` per sample, in index order."""
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i, image in zip(index, images, strict=True):
            data = png_bytes(image)
            member = tarfile.TarInfo(f"{int(i):06d}.png")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def batch_positions(out: storage.Location) -> dict[int, tuple[str, int]]:
    """Sample index → (its batch's tag, its position in the batch), from the index files."""
    where = {}
    for name in out.listdir("codes"):
        if name.startswith("index-") and name.endswith(".npy"):
            tag = name[len("index-"):-len(".npy")]
            where.update((int(i), (tag, k)) for k, i in enumerate(load_npy(out, f"codes/{name}")))
    return where


def image_batches(out: storage.Location, index: np.ndarray, fmt: str, where: dict | None = None, size: int = 1024):
    """The images of `index`, `size` at a time, in any format: a reader holds one batch file and
    one output chunk. `where` (`batch_positions`) saves reading the index files again."""
    from PIL import Image

    def decode(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)))

    if fmt == "png":
        for start in range(0, len(index), size):
            yield np.stack([decode(out.read_bytes(image_name(i))) for i in index[start:start + size]])
        return
    where = batch_positions(out) if where is None else where
    held_tag, held = None, None

    def batch(tag: str) -> list[np.ndarray]:
        if fmt == "tar":
            import tarfile

            with tarfile.open(fileobj=io.BytesIO(out.read_bytes(f"images/images-{tag}.tar"))) as tar:
                return [decode(tar.extractfile(m).read()) for m in tar.getmembers()]  # in index order
        return list(load_npy(out, f"images/images-{tag}.npy"))

    for start in range(0, len(index), size):
        chunk = []
        for i in index[start:start + size]:
            tag, k = where[int(i)]
            if tag != held_tag:
                held_tag, held = tag, batch(tag)
            chunk.append(held[k])
        yield np.stack(chunk)


def read_images(out: storage.Location, index: np.ndarray, fmt: str, where: dict | None = None) -> np.ndarray:
    """The images of `index` in one array (a few: the grid's)."""
    return np.concatenate(list(image_batches(out, index, fmt, where)))


def written(out: storage.Location) -> dict[str, np.ndarray]:
    """Every complete batch, merged and sorted by index: {"index", "labels", "codes"}."""
    parts = []
    for name in out.listdir("codes"):
        if not (name.startswith("index-") and name.endswith(".npy")):
            continue
        tag = name[len("index-"):-len(".npy")]
        try:
            index = load_npy(out, f"codes/{name}")
            codes = load_npy(out, f"codes/codes-{tag}.npy")
            labels = load_npy(out, f"codes/labels-{tag}.npy")
        except (OSError, ValueError) as e:
            raise DataError(f"{out.file(f'codes/{name}')}: a written batch cannot be read ({e}); remove it to "
                            "draw it again") from e
        parts.append((index, labels, codes))
    if not parts:
        return {"index": np.zeros(0, np.int64), "labels": np.zeros(0, np.int64), "codes": None}
    index = np.concatenate([p[0] for p in parts])
    order = np.argsort(index, kind="stable")
    keep = order[np.r_[True, np.diff(index[order]) != 0]]  # one row per index, whatever happened before
    return {"index": index[keep], "labels": np.concatenate([p[1] for p in parts])[keep],
            "codes": np.concatenate([p[2] for p in parts])[keep]}


def check_manifest(out: storage.Location, manifest: dict) -> None:
    """A folder holds one checkpoint's samples under one setting; more samples may be added. A
    folder that holds anything else (a tokenizer's output, another tool's files) is never written."""
    if not out.exists(MANIFEST):
        foreign = [name for name in out.listdir() if name != ".lock"]  # (.lock: a run stopped before its manifest)
        if foreign:
            raise DataError(f"out: {out} holds files generate did not write ({', '.join(foreign[:3])}"
                            f"{' …' if len(foreign) > 3 else ''}; no {MANIFEST}); name a new folder, or one "
                            "generate wrote")
        return
    old = out.read_json_object(MANIFEST, DataError)
    for key in IDENTITY:
        if old.get(key) != manifest[key]:
            raise DataError(f"{out.file(MANIFEST)}: this folder holds samples of another {key.split('_')[0]} "
                            f"({old.get(key)!r}); pass another --out")
    check_precision(out, manifest["precision"])


def check_precision(out: storage.Location, requested: str) -> str | None:
    """The precision the folder is drawn in (None: no image yet); an explicit other one is refused."""
    if not out.exists(PRECISION):
        return None
    held = out.read_json_object(PRECISION, DataError).get("precision")
    if requested not in ("auto", held):
        raise DataError(f"{out.file(PRECISION)}: this folder is drawn in {held}; pass --precision {held} (or "
                        "auto), or another --out")
    return held


def bound_precision(out: storage.Location, requested: str, decide) -> str:
    """The folder's precision once a sampler chose it (bf16 and fp32 images never mix); else
    `requested` (`auto`: `decide()`), written down for the others."""
    held = check_precision(out, requested)
    if held:
        return held
    chosen = decide() if requested == "auto" else requested
    out.write_json(PRECISION, {"precision": chosen})
    return chosen


def bind(out: storage.Location, manifest: dict, num_samples: int) -> None:
    """Under the writer lock: check the folder again, refuse fewer samples than it holds, and
    write the manifest's identity (checkpoint, SHA-256, settings) before any batch."""
    check_manifest(out, manifest)
    for sub in ("", "images", "codes"):  # what a writer killed mid-write left
        out.remove_temps(sub)
    held = written(out)["index"]
    if len(held) and int(held.max()) >= num_samples:
        raise DataError(f"{out}: this folder already holds samples up to index {int(held.max())}; pass "
                        f"--num_samples {int(held.max()) + 1} or more, or another --out")
    if not out.exists(MANIFEST):
        out.write_json(MANIFEST, dict(manifest, num_written=0, samples=[]))


def finish(out: storage.Location, manifest: dict, samples: list[dict], columns: int = 10, fmt: str = "png") -> dict:
    """samples.npz, grid.png and manifest.json from every written batch."""
    from ..data.images import make_grid

    done = written(out)
    manifest = dict(manifest, precision=check_precision(out, "auto") or manifest.get("precision"))  # as drawn
    where = batch_positions(out) if fmt != "png" else None  # read once for every pass below
    out.write_stream("samples.npz", lambda f: write_samples_npz(f, out, done, fmt, where))
    picks, per_class = grid_selection(done["labels"], columns)
    grid_images = read_images(out, done["index"][picks], fmt, where)
    chw = grid_images[:, None] if grid_images.ndim == 3 else grid_images.transpose(0, 3, 1, 2)
    out.write_bytes("grid.png", png_bytes(make_grid(chw.astype(np.float32) / 255.0, columns=per_class)))
    manifest = dict(manifest, num_written=int(len(done["index"])), samples=samples)
    out.write_json(MANIFEST, manifest)
    return done


def write_samples_npz(f, out: storage.Location, done: dict, fmt: str, where: dict | None = None) -> None:
    """samples.npz into `f`, the images (and `arr_0`) streamed a chunk at a time, never whole."""
    import zipfile

    first = next(image_batches(out, done["index"][:1], fmt, where))
    shape = (len(done["index"]), *first.shape[1:])
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, convert, member_shape in (("arr_0", adm_images, (*shape[:3], 3)), ("images", None, shape)):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(np.dtype(
                    np.uint8)), "fortran_order": False, "shape": member_shape})
                for chunk in image_batches(out, done["index"], fmt, where):
                    member.write(np.ascontiguousarray((convert(chunk) if convert else chunk).astype(np.uint8)).data)
        for name in ("labels", "codes", "index"):  # small: (N,) and (N, positions)
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(done[name]), allow_pickle=False)


def adm_images(images: np.ndarray) -> np.ndarray:
    """`arr_0` as ADM's, LlamaGen's and VAR's evaluators read it: uint8 (N, H, W, 3)."""
    if images.ndim == 3:
        images = images[..., None]
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def grid_selection(labels: np.ndarray, columns: int) -> tuple[np.ndarray, int]:
    """Positions of up to `columns` samples of each class, a row per class (unconditional: up
    to `columns` rows); and the row length."""
    if (labels < 0).all():
        return np.arange(min(len(labels), columns * columns)), columns
    per_class = min(columns, min(int((labels == c).sum()) for c in np.unique(labels)))
    picks = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.concatenate(picks), per_class
