"""The real images behind a tokenizer output folder, what the evaluation stage and the sampler
sweep both score samples against: the dataset as its tokenizer config and held-out split name it,
and the tokenizer's reconstructions of some of its training images."""

from __future__ import annotations

import os

import numpy as np

from ..config import TokenizerConfig, from_dict
from ..core.data import load_codes
from ..core.errors import DataError
from ..core.io import read_json_object
from ..data.datasets import load_images
from ..outputs import storage
from ..outputs.publish import codebook_vae_path


def read_indices(path: str, key: str) -> np.ndarray:
    """A non-empty list of distinct non-negative ints under `key` of a JSON file."""
    values = read_json_object(path, DataError).get(key)
    if not isinstance(values, list) or not values or not all(isinstance(v, int) and not isinstance(v, bool)
                                                             for v in values):
        raise DataError(f"{path}: {key} must be a non-empty list of integers")
    idx = np.asarray(values, dtype=np.int64)
    if idx.min() < 0 or len(np.unique(idx)) != len(idx):
        raise DataError(f"{path}: {key} must be distinct indices >= 0 (found {int(idx.min())} or duplicates)")
    return idx


def real_data(codebook_pt: str, recon_count: int, log=print):
    """The real images behind a tokenizer output folder (its config and held-out split), and the
    tokenizer's reconstructions of `recon_count` training images (their codes, decoded)."""
    from ..core.decode import decode_codes_to_images
    from ..jobs.sample_quality import RealData

    public = codebook_pt
    folder = storage.Location(codebook_pt).parent.fetch_folder()  # a local copy when it is in a bucket
    codebook_pt = os.path.join(folder, "codebook.pt")
    paths = {n: os.path.join(folder, n) for n in ("tokenizer_config.json", "split.json", "codes.npy")}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise DataError(f"{path}: not found; the codebook's folder must be a tokenizer output "
                            f"({name} is written by arplatform tokenize)")
    saved = read_json_object(paths["tokenizer_config.json"], DataError)
    saved.pop("config_name", None)
    cfg = from_dict(TokenizerConfig, saved)
    data = load_images(cfg.data)
    val_idx = read_indices(paths["split.json"], "val_indices")
    if val_idx.max() >= len(data):
        raise DataError(f"{paths['split.json']}: held-out indices do not fit the {len(data)} images of {data.source}")
    train_idx = np.setdiff1d(np.arange(len(data)), val_idx)
    codes = load_codes(paths["codes.npy"])[0]
    pick = np.random.default_rng(0).choice(len(codes), min(recon_count, len(codes)), replace=False)
    codes = codes[np.sort(pick)]  # at random: image files are often sorted by class
    recon = decode_codes_to_images(codes, codebook_pt, storage.Location(codebook_vae_path(public)).fetch()).numpy()
    log(f"real data: {data.source}, {len(train_idx)} train / {len(val_idx)} held-out images; "
        f"{len(recon)} tokenizer reconstructions")
    real = RealData(data.images[train_idx], data.labels[train_idx], data.images[val_idx], data.labels[val_idx],
                    data.num_classes, recon, np.sort(pick))  # codes.npy row j is training image j
    return real, cfg, folder
