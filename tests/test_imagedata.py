import gzip
import struct

import numpy as np
import pytest

from arplatform.core.errors import DataError
from arplatform.imagedata import load_images, read_idx, split_indices


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
    data = load_images(name, str(tmp_path))
    assert data.images.shape == (12, 1, 28, 28) and data.images.dtype == np.float32
    assert np.allclose(data.images[:, 0] * 255, images) and (data.labels == labels).all()
    image, label = data[3]
    assert image.shape == (1, 28, 28) and label == labels[3]
    assert len(load_images(name, str(tmp_path), split="test")) == 5


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
    data = load_images("cifar10", str(tmp_path))
    assert data.images.shape == (15, 3, 32, 32)
    labels, pixels = expected[2]
    assert (data.labels[6:9] == labels).all()
    assert np.allclose(data.images[6] * 255, pixels[0].reshape(3, 32, 32))  # R, G, B planes


def test_folder_and_npz(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / "f" / cls / f"{i}.png")
    data = load_images("folder", str(tmp_path / "f"))
    assert data.images.shape == (6, 1, 8, 8) and list(data.labels) == [0, 0, 0, 1, 1, 1] and data.num_classes == 2
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8, 3), dtype=np.uint8), labels=np.array([0, 1, 2, 1]))
    data = load_images("npz", str(tmp_path / "d.npz"))
    assert data.images.shape == (4, 3, 8, 8) and data.num_classes == 3


def test_split_is_deterministic_and_disjoint():
    a_train, a_val = split_indices(100, 0.2, seed=5)
    b_train, b_val = split_indices(100, 0.2, seed=5)
    assert (a_val == b_val).all() and len(a_val) == 20
    assert set(a_train).isdisjoint(a_val) and len(a_train) + len(a_val) == 100


def test_bad_image_inputs(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        load_images("imagenet", str(tmp_path))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: mnist train file not found"):
        load_images("mnist", str(tmp_path))
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
        load_images("cifar10", str(tmp_path))


def test_download_keeps_only_a_file_with_the_published_checksum(tmp_path):
    """The download path, offline: a file:// URL stands in for the dataset mirror."""
    import hashlib

    from arplatform.imagedata import download

    src = tmp_path / "src.gz"
    src.write_bytes(gzip.compress(b"idx bytes"))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    got = download(src.as_uri(), str(tmp_path / "data" / "train.gz"), md5)
    assert open(got, "rb").read() == src.read_bytes()
    with pytest.raises(DataError, match="checksum mismatch"):
        download(src.as_uri(), str(tmp_path / "data" / "bad.gz"), "0" * 32)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["train.gz"]  # nothing partial kept
