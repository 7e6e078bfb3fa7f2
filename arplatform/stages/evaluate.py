"""The evaluation stage. Today: the held-out quality of a tokenizer output folder
(`evaluate_codebook_dir`); sample quality comes with the generation stage."""

from __future__ import annotations

import os

import numpy as np

from ..config import TokenizerConfig, from_dict
from ..core.codebook import assign, codebook_vae_path, load_codebook_file
from ..core.data import load_codes
from ..core.errors import DataError
from ..core.io import read_json_object, save_json
from ..core.vae import load_vae
from ..errors import ConfigError
from ..imagedata import load_images
from .tokenize import encode_means, evaluate_tokenizer, resolve_device


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


def evaluate_codebook_dir(codebook_dir: str, vae_path: str | None = None, device: str = "auto") -> dict:
    """Re-run the held-out evaluation of a tokenizer output folder and rewrite its tokenizer_eval.json.

    The images and the held-out split come from the folder's tokenizer_config.json and
    split.json; the VAE from `vae_path` or the codebook's config.
    """
    dev = resolve_device(device)
    paths = {n: os.path.join(codebook_dir, n) for n in ("codebook.pt", "tokenizer_config.json", "split.json")}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise DataError(f"{path}: not found ({name} is written by arplatform.tokenize)")
    saved = read_json_object(paths["tokenizer_config.json"], DataError)
    saved.pop("config_name", None)
    try:
        cfg = from_dict(TokenizerConfig, saved)
    except ConfigError as e:
        raise DataError(f"{paths['tokenizer_config.json']}: {e}") from e
    val_idx = read_indices(paths["split.json"], "val_indices")
    codebook = load_codebook_file(paths["codebook.pt"])
    vae_path = vae_path or codebook_vae_path(paths["codebook.pt"], codebook)
    if not vae_path:
        raise DataError(f"{paths['codebook.pt']}: names no VAE checkpoint; pass --vae")
    vae = load_vae(vae_path, map_location=dev)
    d = cfg.data
    data = load_images(d.dataset, d.data_dir, "train", d.download, d.image_size, d.channels, d.limit, d.max_pixels)
    if val_idx.size == 0 or val_idx.max() >= len(data):
        raise DataError(f"{paths['split.json']}: held-out indices do not fit the {len(data)} images of {data.source}")
    val = data.subset(val_idx)
    latents = encode_means(vae, val.images, dev)
    dim = latents.shape[-1]
    val_codes = assign(latents.reshape(-1, dim).to(dev), codebook["z_medoid"])[0].reshape(len(val), -1).cpu()
    all_codes = [load_codes(os.path.join(codebook_dir, n))[0] for n in ("codes.npy", "val_codes.npy")
                 if os.path.exists(os.path.join(codebook_dir, n))]
    report = evaluate_tokenizer(vae, codebook["z_medoid"], val, latents, val_codes.numpy(),
                                np.concatenate(all_codes) if all_codes else val_codes.numpy(), dev)
    save_json(report, os.path.join(codebook_dir, "tokenizer_eval.json"))
    return report
