"""Codes back to images: codes → codebook vectors → latent grid → the VAE's (or VQ's) decoder."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from .codebook import load_codebook
from .errors import DataError
from .vae import VAE, load_vae
from .vq import VQ


@torch.inference_mode()
def decode_codes_to_images(codes, codebook, vae, batch_size: int = 256) -> torch.Tensor:
    """Images (B, C, H, W) in [0, 1] from codes (B, H·W) or (B, H, W); `codebook`: a codebook.pt
    path, a dict with `z_medoid` or (K, D); `vae`: a VAE or its checkpoint. Codes ∉ 0…K-1 refused."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(codes, torch.Tensor):
        array = np.asarray(codes)
        if array.dtype.kind not in "iu":  # bool, float, complex, str, object …
            raise DataError(f"codes must be integers, got dtype {array.dtype}")
        codes = torch.from_numpy(array.astype(np.int64, copy=False))
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise DataError(f"codes must be integers, got {codes.dtype}")
    z_table = load_codebook(codebook)
    if isinstance(vae, (str, os.PathLike)):
        vae = load_vae(vae)
    if not isinstance(vae, (VAE, VQ)):
        raise TypeError(f"vae must be a VAE, a VQ or a checkpoint path, got {type(vae).__name__}")
    if codes.ndim not in (2, 3) or codes.numel() == 0:
        raise DataError(f"codes must be shaped (B, H*W) or (B, H, W), got {tuple(codes.shape)}")
    cfg = vae.config
    k, d = z_table.shape
    if d != cfg.latent_dim:
        raise DataError(f"codebook vectors have D={d} but the VAE's latent_dim is {cfg.latent_dim}")
    grid = cfg.grid_size
    positions = codes.shape[1] * (codes.shape[2] if codes.ndim == 3 else 1)
    if positions != grid * grid:
        side = math.isqrt(positions)
        raise DataError(
            f"codes hold {positions} positions per image ({side}×{side}?) but the VAE decodes a {grid}×{grid} grid"
        )
    bad = (codes < 0) | (codes >= k)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise DataError(f"codes: {int(bad.sum())} invalid codes (outside 0..{k - 1}), first at {first}")
    codes = codes.reshape(codes.shape[0], grid, grid).long()
    device = next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    z_table = z_table.to(device)
    out = []
    for s in range(0, codes.shape[0], batch_size):
        z = z_table[codes[s : s + batch_size].to(device)].permute(0, 3, 1, 2)  # (B, D, h, w)
        out.append(vae.decode(z).float().cpu())
    vae.train(was_training)
    return torch.cat(out)
