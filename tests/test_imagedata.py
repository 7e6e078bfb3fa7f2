import gzip
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import bad_folder, scene

from arplatform.config import ImageDataConfig
from arplatform.core.errors import DataError
from arplatform.data.datasets import load_images, read_idx, split_indices


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["mnist", "fashion"])
def test_idx_datasets(tmp_path, name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 12, dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:5])  # uncompressed copies work too
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:5])
    data = load_images(ImageDataConfig(dataset=name, data_dir=str(tmp_path)))
    assert data.images.shape == (12, 1, 28, 28) and data.images.dtype == np.float32
    assert np.allclose(data.images[:, 0] * 255, images) and (data.labels == labels).all()
    image, label = data[3]
    assert image.shape == (1, 28, 28) and label == labels[3]
    assert len(load_images(ImageDataConfig(dataset=name, data_dir=str(tmp_path)), split="test")) == 5
    # the folder torchvision downloads into (`<root>/MNIST/raw/`, `<root>/FashionMNIST/raw/`) is found from its root
    raw = tmp_path / "tv" / {"mnist": "MNIST", "fashion": "FashionMNIST"}[name] / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", images[:7])
    write_idx(raw / "train-labels-idx1-ubyte", labels[:7])
    assert len(load_images(ImageDataConfig(dataset=name, data_dir=str(tmp_path / "tv")))) == 7


def test_cifar10_binary(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = []
    for i in range(1, 6):
        labels = rng.integers(0, 10, 3, dtype=np.uint8)
        pixels = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        np.concatenate([labels[:, None], pixels], 1).tofile(folder / f"data_batch_{i}.bin")
        expected.append((labels, pixels))
    data = load_images(ImageDataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert data.images.shape == (15, 3, 32, 32)
    labels, pixels = expected[2]
    assert (data.labels[6:9] == labels).all()
    assert np.allclose(data.images[6] * 255, pixels[0].reshape(3, 32, 32))  # R, G, B planes
    (tmp_path / "py" / "cifar-10-batches-py").mkdir(parents=True)  # the pickled version: named, never loaded
    with pytest.raises(DataError, match=r"cifar-10-batches-py: CIFAR-10's Python version .* binary version"):
        load_images(ImageDataConfig(dataset="cifar10", data_dir=str(tmp_path / "py")))


def test_folder_and_npz(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / "f" / cls / f"{i}.png")
    data = load_images(ImageDataConfig(dataset="folder", data_dir=str(tmp_path / "f")))
    assert data.images.shape == (6, 1, 8, 8) and list(data.labels) == [0, 0, 0, 1, 1, 1] and data.num_classes == 2
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8, 3), dtype=np.uint8), labels=np.array([0, 1, 2, 1]))
    data = load_images(ImageDataConfig(dataset="npz", data_dir=str(tmp_path / "d.npz")))
    assert data.images.shape == (4, 3, 8, 8) and data.num_classes == 3
    # Keras's layout (its mnist.npz): x_train / y_train, and x_test / y_test for the test split
    np.savez(tmp_path / "k.npz", x_train=np.zeros((5, 8, 8), np.uint8), y_train=np.arange(5),
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.arange(2))
    keras = ImageDataConfig(dataset="npz", data_dir=str(tmp_path / "k.npz"))
    assert len(load_images(keras)) == 5 and len(load_images(keras, split="test")) == 2
    np.savez(tmp_path / "u16.npz", images=np.full((2, 8, 8), 4000, np.uint16))
    with pytest.raises(DataError, match=r"u16.npz: integer images must hold 0–255 \(8-bit\), got uint16"):
        load_images(ImageDataConfig(dataset="npz", data_dir=str(tmp_path / "u16.npz")))


def test_photos_load_upright_and_tiff_is_an_image(tmp_path):
    """A camera's JPEG stored sideways with an EXIF orientation loads as a viewer shows it, and a
    TIFF (16-bit here) counts as an image, scaled to 8 bits."""
    from PIL import Image

    (tmp_path / "f" / "a").mkdir(parents=True)
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :20] = 255  # left half white: upright (rotated 90° clockwise), the top half is
    photo = Image.fromarray(wide)
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    photo.save(tmp_path / "f" / "a" / "photo.jpg", exif=exif, quality=95)
    Image.fromarray(np.full((40, 20), 65535, dtype=np.uint16)).save(tmp_path / "f" / "a" / "scan.tif")
    data = load_images(ImageDataConfig(dataset="folder", data_dir=str(tmp_path / "f")))
    assert data.images.shape == (2, 1, 40, 20)  # both 40 high, 20 wide
    upright = data.images[0, 0]
    assert upright[:20].mean() > 0.9 and upright[20:].mean() < 0.1
    assert data.images[1].min() == 1.0  # 65535 of 65535: white, not clipped garbage


def test_split_is_deterministic_and_disjoint():
    a_train, a_val = split_indices(100, 0.2, seed=5)
    b_train, b_val = split_indices(100, 0.2, seed=5)
    assert (a_val == b_val).all() and len(a_val) == 20
    assert set(a_train).isdisjoint(a_val) and len(a_train) + len(a_val) == 100


def test_bad_image_inputs(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        load_images(SimpleNamespace(dataset="imagenet", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: mnist train file not found"):
        load_images(ImageDataConfig(dataset="mnist", data_dir=str(tmp_path)))
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5))
    with pytest.raises(DataError, match="bad.gz: truncated IDX header"):
        read_idx(str(tmp_path / "bad.gz"))
    write_idx(tmp_path / "short.idx", np.zeros((2, 3), dtype=np.uint8))
    raw = (tmp_path / "short.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-2])
    with pytest.raises(DataError, match="short.idx: IDX header says"):
        read_idx(str(tmp_path / "short.idx"))
    (tmp_path / "cifar-10-batches-bin").mkdir()
    (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="data_batch_1.bin: 100 bytes"):
        load_images(ImageDataConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_download_keeps_only_a_file_with_the_published_checksum(tmp_path):
    """The download path, offline: a file:// URL stands in for the dataset mirror."""
    import hashlib

    from arplatform.data.datasets import download

    src = tmp_path / "src.gz"
    src.write_bytes(gzip.compress(b"idx bytes"))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    got = download(src.as_uri(), str(tmp_path / "data" / "train.gz"), md5)
    assert open(got, "rb").read() == src.read_bytes()
    with pytest.raises(DataError, match="checksum mismatch"):
        download(src.as_uri(), str(tmp_path / "data" / "bad.gz"), "0" * 32)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["train.gz"]  # nothing partial kept


def test_bad_images_are_skipped_and_counted_or_refused(tmp_path):
    folder = bad_folder(tmp_path / "imgs")
    with pytest.warns(UserWarning, match="link.png: skipped"):
        data = load_images(ImageDataConfig(dataset="folder", data_dir=str(folder), image_size=16, channels=3,
                                           max_pixels=5000, bad_images="skip", crop="center"))
    assert data.images.shape == (24, 3, 16, 16) and len(data.skipped) == 3
    assert sorted(p.rsplit("/", 1)[1] for p, _ in data.skipped) == ["corrupt.png", "huge.png", "truncated.png"]
    with pytest.raises(DataError, match=r"corrupt.png: not a readable image .*bad_images=skip"):
        load_images(ImageDataConfig(dataset="folder", data_dir=str(folder), image_size=16, channels=3,
                                    max_pixels=5000))


def test_tokenize_on_a_folder_with_bad_images_counts_them_and_loses_nothing(tmp_path):
    """The whole command on real files no one cleaned: skipped and counted in tokenizer_eval.json;
    refused in one line with bad_images=error (the entry point, in this process), and then nothing
    is published."""
    import json
    import subprocess
    import sys

    from helpers import run_main

    from arplatform.cli import tokenize

    folder = bad_folder(tmp_path / "imgs", good=40)
    common = ["--config-name", "tokenizer/mnist_sample",
              "data.dataset=folder", f"data.data_dir={folder}", "data.channels=3", "data.image_size=16",
              "data.max_pixels=5000", "data.crop=center", "vae.epochs=1", "vae.batch_size=8", "vae.channels=8",
              "codebook.num_codes=8", "tracking.enabled=false"]
    code, err = run_main(tokenize.main, [*common, f"output_root={tmp_path / 'refused'}"])
    assert code == 2 and err.startswith("error: ") and "bad_images=skip" in err
    assert err.strip().count("\n") == 0 and not (tmp_path / "refused" / "codebook").exists()
    done = subprocess.run([sys.executable, "-m", "arplatform", "tokenize", *common, f"output_root={tmp_path / 'out'}",
                           "data.bad_images=skip"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 unreadable image(s) skipped" in done.stdout
    report = json.loads((tmp_path / "out" / "codebook" / "mnist_sample" / "tokenizer_eval.json").read_text())
    assert report["images"] == 40 and report["images_skipped"] == 3


def test_a_flat_folder_with_a_labels_file(tmp_path):
    """`labels.csv` (file,label; a header allowed) labels a flat folder; a bad row, a listed file
    that leaves the folder, and a listed file that is missing are one clear error each."""
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(scene(rng)).save(folder / f"img{i}.png")
    (folder / "labels.csv").write_text("file,label\nimg2.png,1\nimg0.png,0\nimg3.png,4\n")
    data = load_images(ImageDataConfig(dataset="folder", data_dir=str(folder), image_size=16, channels=3))
    assert list(data.labels) == [1, 0, 4] and data.num_classes == 5 and data.images.shape == (3, 3, 16, 16)
    for rows, message in (("file,label\nimg0.png,cat\n", r"labels.csv:2: expected `file,label`"),
                          ("../outside.png,1\n", "leads outside"),
                          ("img9.png,1\n", r"img9.png: not a readable image")):
        (folder / "labels.csv").write_text(rows)
        with pytest.raises(DataError, match=message):
            load_images(ImageDataConfig(dataset="folder", data_dir=str(folder), image_size=16, channels=3))
