"""A pretrained VQ tokenizer: LlamaGen's VQ-16 (a VQGAN), loaded from its published checkpoint.

Modules and names follow LlamaGen's `vq_model.py` layer for layer, so `vq_ds16_c2i.pt` loads
as it is. Added: the VAE's interface, `latents(x)` (l2-normalised, like the codebook) and
`decode(z)`, images in [0, 1] (grey ones in with their channel repeated, out as the mean).
Saved as a checkpoint of kind "vq", which `core.vae.load_vae` reads like a VAE's."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import CheckpointError
from .io import file_sha256, load_torch

# images per encoder or decoder call: at 256² their activations are about 250 MB an image (measured
# on CPU, fp32), so a caller's batch of hundreds is taken a few at a time
BATCH = 8
ACTIVATION_BYTES = 300 << 20  # per 256² image in one call


@dataclass
class VQConfig:
    """LlamaGen's `ModelArgs` (the keys that shape the weights), the base width `channels` (its
    fixed `ch`), and what the platform's data needs: the image side and the data's channels."""

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True  # only adds the `quantize.codebook_used` buffer LlamaGen saves
    encoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    decoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    z_channels: int = 256
    channels: int = 128
    image_size: int = 256
    in_channels: int = 3  # the data's; the model always sees RGB

    def __post_init__(self):
        for name in ("codebook_size", "codebook_embed_dim", "z_channels", "channels", "image_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"VQConfig.{name} must be a positive int, got {v!r}")
        self.encoder_ch_mult, self.decoder_ch_mult = list(self.encoder_ch_mult), list(self.decoder_ch_mult)
        for name in ("encoder_ch_mult", "decoder_ch_mult"):
            mult = getattr(self, name)
            if not mult or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in mult):
                raise ValueError(f"VQConfig.{name} must be a non-empty list of positive ints, got {mult!r}")
        if len(self.encoder_ch_mult) != len(self.decoder_ch_mult):
            raise ValueError("VQConfig: encoder_ch_mult and decoder_ch_mult must have one length")
        if self.channels % 32 or self.z_channels % 32:
            raise ValueError("VQConfig: channels and z_channels must be multiples of 32 (group norm of 32 groups)")
        if self.image_size % self.downsample:
            raise ValueError(f"VQConfig.image_size must be divisible by {self.downsample}, got {self.image_size}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"VQConfig.in_channels must be 1 or 3, got {self.in_channels!r}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample

    @property
    def latent_dim(self) -> int:  # the codebook vectors' D, as a VAE's
        return self.codebook_embed_dim

    def to_dict(self) -> dict:
        return asdict(self)


def normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = normalize(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = normalize(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = normalize(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (layer(n).reshape(b, c, h * w).transpose(1, 2) for layer in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ/√c)·v, as LlamaGen's bmm
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # the asymmetric padding of the original


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def level(res: list, attn: list, resample: nn.Module | None) -> nn.Module:
    """One resolution: `res` blocks (each followed by its attention block at the lowest), then
    the resampling step (named as LlamaGen names it)."""
    block = nn.Module()
    block.res, block.attn = nn.ModuleList(res), nn.ModuleList(attn)
    if resample is not None:
        setattr(block, "downsample" if isinstance(resample, Downsample) else "upsample", resample)
    return block


def run_level(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for i, res in enumerate(block.res):
        h = res(h)
        if len(block.attn):
            h = block.attn[i](h)
    for name in ("downsample", "upsample"):
        if hasattr(block, name):
            h = getattr(block, name)(h)
    return h


def middle(c: int) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)])


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig, num_res_blocks: int = 2):
        super().__init__()
        ch, mult = cfg.channels, cfg.encoder_ch_mult
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.conv_blocks, c = nn.ModuleList(), ch
        for i, m in enumerate(mult):
            last = i == len(mult) - 1
            res = [ResnetBlock(c if j == 0 else ch * m, ch * m) for j in range(num_res_blocks)]
            c = ch * m
            self.conv_blocks.append(level(res, [AttnBlock(c) for _ in res] if last else [],
                                          None if last else Downsample(c)))
        self.mid = middle(c)
        self.norm_out, self.conv_out = normalize(c), nn.Conv2d(c, cfg.z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for block in self.conv_blocks:
            h = run_level(block, h)
        for layer in self.mid:
            h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig, num_res_blocks: int = 2):
        super().__init__()
        ch, mult = cfg.channels, cfg.decoder_ch_mult
        c = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = middle(c)
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(len(mult))):
            res = [ResnetBlock(c if j == 0 else ch * mult[i], ch * mult[i]) for j in range(num_res_blocks + 1)]
            c = ch * mult[i]
            self.conv_blocks.append(level(res, [AttnBlock(c) for _ in res] if i == len(mult) - 1 else [],
                                          Upsample(c) if i else None))
        self.norm_out, self.conv_out = normalize(c), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        for layer in self.mid:
            h = layer(h)
        for block in self.conv_blocks:
            h = run_level(block, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.l2_norm = cfg.codebook_l2_norm
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_embed_dim)
        if cfg.codebook_show_usage:
            self.register_buffer("codebook_used", torch.zeros(65536))

    def codebook(self) -> torch.Tensor:
        """(K, D): the vectors codes index, as LlamaGen's `get_codebook_entry` reads them."""
        w = self.embedding.weight
        return F.normalize(w, p=2, dim=-1) if self.l2_norm else w


class VQ(nn.Module):
    """LlamaGen's `VQModel`, for inference: images ↔ an h×w grid of codebook vectors."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.config = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, 1)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] → (B, D, h, w), l2-normalised where the codebook is: the
        nearest codebook vector of each is LlamaGen's code. `BATCH` images at a time."""
        parts = []
        for part in x.split(BATCH):
            if part.shape[1] == 1:
                part = part.expand(-1, 3, -1, -1)
            z = self.quant_conv(self.encoder(part * 2 - 1))
            parts.append(F.normalize(z, p=2, dim=1) if self.config.codebook_l2_norm else z)
        return torch.cat(parts)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codebook vectors (B, D, h, w) → images (B, C, H, W) in [0, 1], `BATCH` at a time."""
        parts = []
        for part in z.split(BATCH):
            rgb = (self.decoder(self.post_quant_conv(part)).clamp(-1, 1) + 1) / 2
            parts.append(rgb.mean(dim=1, keepdim=True) if self.config.in_channels == 1 else rgb)
        return torch.cat(parts)


def check_vq_file(path, sha256: str | None = None) -> str:
    """The file is there (and, with `sha256`, has those bytes): a CheckpointError otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: VQ checkpoint not found (vq.checkpoint)")
    if sha256 and (actual := file_sha256(path)) != sha256.lower():
        raise CheckpointError(f"{path}: SHA-256 {actual} is not the {sha256.lower()} vq.sha256 names")
    return path


def read_llamagen_weights(path, sha256: str | None = None) -> dict:
    """A LlamaGen tokenizer checkpoint's state dict, weights_only=True with one type allowed (its
    `args`, an argparse.Namespace); with `sha256`, the bytes must have it."""
    path = check_vq_file(path, sha256)
    ckpt = load_torch(path, CheckpointError, allowed=(argparse.Namespace,))  # LlamaGen's saved `args`
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a LlamaGen tokenizer checkpoint (no 'model' state dict of tensors)")
    return state


def load_llamagen_vq(path, cfg: VQConfig, sha256: str | None = None) -> VQ:
    """A `VQ` of `cfg` with the weights of a LlamaGen checkpoint; mismatches are a CheckpointError."""
    vq = VQ(cfg)
    state = read_llamagen_weights(path, sha256)
    if cfg.codebook_show_usage and "quantize.codebook_used" not in state:  # a buffer, not a weight
        state["quantize.codebook_used"] = vq.quantize.codebook_used
    try:
        vq.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: the weights are not a VQ of this config ({first}; "
                              "check vq.encoder_ch_mult, z_channels, codebook_size)") from e
    return vq.eval()
