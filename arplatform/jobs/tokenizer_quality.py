"""The tokenizer's quality report: latents of images (`encode_means`) and the held-out
reconstruction quality of VAE + codebook (`evaluate_tokenizer`); the tokenize stage writes it
after training and `evaluate tokenizer` again for any tokenizer output."""

from __future__ import annotations

import numpy as np
import torch

from ..core.decode import decode_codes_to_images
from ..core.metrics import psnr, ssim
from ..core.progress import Progress
from ..core.vae import VAE
from ..data.datasets import ImageSet
from ..data.images import make_grid

PICTURE = "heldout_reconstructions.png"  # written beside tokenizer_eval.json by every tokenizer run


@torch.inference_mode()
def encode_means(vae: VAE, images: np.ndarray, device, batch_size: int = 512, log=print) -> torch.Tensor:
    """The latents codes are assigned from (a VAE's encoder means, a VQ's vectors) of all images
    → (N, h, w, D) on CPU."""
    vae.eval()
    out = []
    with Progress("encode", len(images), "images", log) as progress:
        for s in range(0, len(images), batch_size):
            mu = vae.latents(torch.from_numpy(images[s : s + batch_size]).to(device))
            out.append(mu.permute(0, 2, 3, 1).float().cpu())
            progress.update(len(mu))
    return torch.cat(out)


def evaluate_tokenizer(vae: VAE, centres: torch.Tensor, val: ImageSet, val_latents: torch.Tensor,
                       val_codes: np.ndarray, usage: dict, device) -> tuple[dict, np.ndarray]:
    """Held-out PSNR/SSIM (real vs VAE, real vs quantised, VAE vs quantised), codebook usage, and a
    picture: the first 16 held-out images above their reconstructions through codes."""
    with torch.inference_mode():
        real = torch.from_numpy(val.images)
        cont = torch.cat([vae.decode(z.permute(0, 3, 1, 2).to(device)).float().cpu()
                          for z in val_latents.split(512)])
    quant = decode_codes_to_images(val_codes, centres, vae)
    shown = min(16, len(val))
    picture = make_grid(np.concatenate([val.images[:shown], quant[:shown].numpy()]), columns=shown)
    return {
        "psnr_real_vs_vae": psnr(real, cont), "ssim_real_vs_vae": ssim(real, cont),
        "psnr_real_vs_quantised": psnr(real, quant), "ssim_real_vs_quantised": ssim(real, quant),
        "psnr_vae_vs_quantised": psnr(cont, quant), "ssim_vae_vs_quantised": ssim(cont, quant),
        "codebook_usage": usage["usage"], "codebook_perplexity": usage["perplexity"],
        "num_val_images": len(val),
    }, picture

