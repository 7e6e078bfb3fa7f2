"""The colour tokenizer against the plain VAE it replaced, on crops of real photographs, in one run.

Each run is the real command (`python -m arplatform tokenize --config-name tokenizer/cifar10`,
`data.dataset=folder`) on 32×32 crops cut from the two photographs scikit-learn ships (the
tests' `photo_crops`: random squares of 32-96 px, four classes). "colour" is the config's
defaults (residual blocks, a 4-dim latent, β=0.001, batch 32); "plain" is the recipe the config
had before (no residual blocks, a 16-dim latent, β=0.1, 96 channels, batch 128), same epochs.
Held-out PSNR/SSIM are the command's own `tokenizer_eval.json` (real vs reconstructed through
the codes, as the GPT's samples are decoded).

    python bench/tokenizer_quality.py [--sizes 1200 3000] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from machine import machine_line, save

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from helpers import photo_crops  # noqa: E402 (the tests' generator of photograph crops)

RECIPES = {
    "colour": [],
    "plain": ["vae.res_blocks=0", "vae.latent_dim=16", "vae.beta=0.1", "vae.channels=96", "vae.batch_size=128"],
}


def one_run(folder: str, recipe: str, epochs: int) -> dict:
    out = tempfile.mkdtemp(prefix="tokq-")
    cmd = [sys.executable, "-m", "arplatform", "tokenize", "--config-name", "tokenizer/cifar10", f"output_root={out}",
           "data.dataset=folder", f"data.data_dir={folder}", f"vae.epochs={epochs}", "tracking.enabled=false",
           *RECIPES[recipe]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{recipe}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    with open(os.path.join(out, "codebook", "cifar10", "tokenizer_eval.json"), encoding="utf-8") as f:
        report = json.load(f)
    return {"recipe": recipe, "seconds": round(seconds, 1), "psnr_vae": round(report["psnr_real_vs_vae"], 2),
            "psnr_quantised": round(report["psnr_real_vs_quantised"], 2),
            "ssim_quantised": round(report["ssim_real_vs_quantised"], 3), "picture": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1200, 3000])
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    print(machine_line())
    print("| images | recipe | PSNR real/VAE | PSNR real/quantised | SSIM real/quantised | command wall s |\n"
          "|---|---|---|---|---|---|")
    rows = []
    for n in args.sizes:
        folder = photo_crops(tempfile.mkdtemp(prefix="photos-"), n)
        for recipe in RECIPES:
            r = one_run(folder, recipe, args.epochs)
            print(f"| {n:,} | {recipe} | {r['psnr_vae']} dB | **{r['psnr_quantised']} dB** | {r['ssim_quantised']} "
                  f"| {r['seconds']} |", flush=True)
            rows.append({"images": n, **r})
    save("tokenizer_quality", {"epochs": args.epochs, "rows": rows})


if __name__ == "__main__":
    main()
