"""Image quality: PSNR and SSIM for images in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of 10·log10(1 / MSE), data range 1."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return (10 * torch.log10(1.0 / mse)).mean().item()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2).float() ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian 11×11, σ=1.5, K1=0.01, K2=0.03, range 1),
    per channel, over valid windows only. Images smaller than the window (8×8 digits) take the
    largest odd window that fits, as scikit-image asks its callers to."""
    a, b = a.float(), b.float()
    c = a.shape[1]
    fits = min(a.shape[-2:])
    window = min(window, fits if fits % 2 else fits - 1)
    w = _gaussian_window(window, sigma).to(a.device).expand(c, 1, window, window)
    conv = lambda x: F.conv2d(x, w, groups=c)  # noqa: E731
    mu_a, mu_b = conv(a), conv(b)
    var_a = conv(a * a) - mu_a**2
    var_b = conv(b * b) - mu_b**2
    cov = conv(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean().item()
