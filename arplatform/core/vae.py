"""A spatial VAE: images → an h×w×D latent grid (28→7, 32→8) → images.

Two stride-2 convolutions downsample by 4; the decoder mirrors them with
transposed convolutions. `VAEObjective` is the loss for the shared training
loop (`loop.fit`): reconstruction (BCE or MSE, summed over pixels) + β·KL,
averaged per image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import load_checkpoint
from .errors import CheckpointError
from .precision import autocast

RECONSTRUCTION_LOSSES = ("bce", "mse")
DOWNSAMPLE = 4


@dataclass
class VAEConfig:
    in_channels: int = 1
    image_size: int = 28
    latent_dim: int = 8
    channels: int = 64  # width of the first stage; the second has twice as many
    recon_loss: str = "bce"
    beta: float = 1.0

    def __post_init__(self):
        for name in ("in_channels", "image_size", "latent_dim", "channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"VAEConfig.{name} must be a positive int, got {v!r}")
        if self.image_size % DOWNSAMPLE:
            raise ValueError(f"VAEConfig.image_size must be divisible by {DOWNSAMPLE}, got {self.image_size}")
        if self.recon_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"VAEConfig.recon_loss must be one of {RECONSTRUCTION_LOSSES}, got {self.recon_loss!r}")
        if not self.beta >= 0:
            raise ValueError(f"VAEConfig.beta must be >= 0, got {self.beta!r}")

    @property
    def grid_size(self) -> int:
        return self.image_size // DOWNSAMPLE

    def to_dict(self) -> dict:
        return asdict(self)


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        c1, c2, d = cfg.channels, 2 * cfg.channels, cfg.latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(cfg.in_channels, c1, 3, padding=1), nn.GELU(),
            nn.Conv2d(c1, c1, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.GELU(),
            nn.Conv2d(c2, c2, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c2, 2 * d, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(d, c2, 3, padding=1), nn.GELU(),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c1, c1, 3, padding=1), nn.GELU(),
            nn.ConvTranspose2d(c1, c1, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c1, cfg.in_channels, 3, padding=1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [0, 1] → mean and log-variance, each (B, D, h, w)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent grid (B, D, h, w) → images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decode_logits(z), mu, logvar


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


def load_vae(path, map_location="cpu") -> VAE:
    """A VAE from its checkpoint (weights_only); mismatches are a CheckpointError."""
    ckpt = load_checkpoint(path, map_location=map_location, kind="vae")
    try:
        vae = VAE(VAEConfig(**ckpt["model_config"]))
        vae.load_state_dict(ckpt["model_state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: VAE config and weights do not match ({first})") from e
    return vae.to(map_location).eval()
