"""A spatial VAE: images → an h×w×D latent grid (28→7 at 4×) → images. Stride-2 convolutions
(two for 4×, three for 8×), mirrored by the decoder; `res_blocks` per resolution for colour
photographs (as VQGAN's). `VAEObjective`: reconstruction + β·KL per image, for `loop.fit`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import load_checkpoint
from .errors import CheckpointError
from .precision import autocast
from .vq import VQ, VQConfig

RECONSTRUCTION_LOSSES = ("bce", "mse")
DOWNSAMPLES = (4, 8)


@dataclass
class VAEConfig:
    in_channels: int = 1
    image_size: int = 28
    latent_dim: int = 8
    channels: int = 64  # width of the first stage; the second has twice as many
    recon_loss: str = "bce"
    beta: float = 0.1
    res_blocks: int = 0  # residual blocks per resolution
    downsample: int = 4  # image side / grid side

    def __post_init__(self):
        for name in ("in_channels", "image_size", "latent_dim", "channels", "res_blocks"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "res_blocks" else 1):
                raise ValueError(f"VAEConfig.{name} must be a {'non-negative' if name == 'res_blocks' else 'positive'} "
                                 f"int, got {v!r}")
        if self.downsample not in DOWNSAMPLES:
            raise ValueError(f"VAEConfig.downsample must be one of {DOWNSAMPLES}, got {self.downsample!r}")
        if self.image_size % self.downsample:
            raise ValueError(f"VAEConfig.image_size must be divisible by downsample={self.downsample}, "
                             f"got {self.image_size}")
        if self.recon_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"VAEConfig.recon_loss must be one of {RECONSTRUCTION_LOSSES}, got {self.recon_loss!r}")
        if not self.beta >= 0:
            raise ValueError(f"VAEConfig.beta must be >= 0, got {self.beta!r}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample

    def to_dict(self) -> dict:
        return asdict(self)


class ResBlock(nn.Module):
    """x + conv(gelu(conv(gelu(x)))): depth without losing the signal's path."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = nn.Sequential(*encoder_layers(cfg))
        self.decoder = nn.Sequential(*decoder_layers(cfg))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [0, 1] → mean and log-variance, each (B, D, h, w)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] → the means (B, D, h, w) a codebook is fitted to."""
        return self.encode(x)[0]

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent grid (B, D, h, w) → images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decode_logits(z), mu, logvar


def _stages(cfg: VAEConfig) -> int:
    return cfg.downsample.bit_length() - 1  # stride-2 steps: 4 → 2, 8 → 3


def encoder_layers(cfg: VAEConfig) -> list[nn.Module]:
    """conv; per stride-2 step: residual blocks, the step, a widening conv (c → 2c once); a 1×1
    conv to mean and log-variance (res_blocks=0 at 4×: the original layers, so old files load)."""
    c1, c2, n = cfg.channels, 2 * cfg.channels, cfg.res_blocks
    layers, width = [nn.Conv2d(cfg.in_channels, c1, 3, padding=1), nn.GELU()], c1
    for step in range(_stages(cfg)):
        layers += [ResBlock(width) for _ in range(n)]
        layers += [nn.Conv2d(width, width, 4, stride=2, padding=1), nn.GELU()]
        if step < _stages(cfg) - 1:
            layers += [nn.Conv2d(width, c2, 3, padding=1), nn.GELU()]
            width = c2
    layers += [ResBlock(width) for _ in range(n)]
    return layers + [nn.Conv2d(width, 2 * cfg.latent_dim, 1)]


def decoder_layers(cfg: VAEConfig) -> list[nn.Module]:
    """The encoder's mirror: transposed convolutions upsample, the last one at width c."""
    c1, c2, n = cfg.channels, 2 * cfg.channels, cfg.res_blocks
    layers, width = [nn.Conv2d(cfg.latent_dim, c2, 3, padding=1), nn.GELU()], c2
    layers += [ResBlock(width) for _ in range(n)]
    for step in range(_stages(cfg)):
        out = c1 if step >= _stages(cfg) - 2 else c2
        layers += [nn.ConvTranspose2d(width, out, 4, stride=2, padding=1), nn.GELU()]
        width = out
        if step < _stages(cfg) - 1:
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.GELU()]
        layers += [ResBlock(width) for _ in range(n)]
    return layers + [nn.Conv2d(width, cfg.in_channels, 3, padding=1)]


class VAEObjective:
    """Reconstruction + β·KL per image, for `loop.fit`."""

    kind, unit = "vae", "images"

    def __init__(self, beta: float, recon_loss: str):
        self.beta, self.recon_loss = beta, recon_loss

    def loss(self, model, batch, precision, device, train: bool):
        x = batch["images"].to(device)
        with autocast(precision, device):
            logits, mu, logvar = model(x)
        logits, mu, logvar = logits.float(), mu.float(), logvar.float()
        if self.recon_loss == "bce":
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        else:
            recon = F.mse_loss(torch.sigmoid(logits), x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        return recon + self.beta * kl, torch.tensor(x.shape[0], device=device)

    def metrics(self, mean_loss: float) -> dict[str, float]:
        return {"val/loss": mean_loss}

    def synthetic_batch(self, model, batch_size: int) -> dict:
        c, size = model.config.in_channels, model.config.image_size
        return {"images": torch.rand(batch_size, c, size, size, generator=torch.Generator().manual_seed(0))}

    def checkpoint_fields(self) -> dict:
        return {}


def load_vae(path, map_location="cpu") -> VAE | VQ:
    """A tokenizer's image model from its checkpoint (weights_only): the VAE the tokenizer trained,
    or the pretrained VQ it encoded with (kind "vq"); mismatches are a CheckpointError."""
    ckpt = load_checkpoint(path, map_location=map_location, kind=("vae", "vq"))
    try:
        vae = VQ(VQConfig(**ckpt["model_config"])) if ckpt["kind"] == "vq" else VAE(VAEConfig(**ckpt["model_config"]))
        vae.load_state_dict(ckpt["model_state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: VAE config and weights do not match ({first})") from e
    return vae.to(map_location).eval()
