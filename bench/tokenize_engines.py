"""The tokenizer's two engines side by side: `engine=local` (one process) against `engine=ray`
(the VAE on Ray Train, encoding on Ray Data actors writing code shards), on synthetic folders
of 32×32 RGB images (one sub-folder per class), in one run.

Each run is the real command (`python -m arplatform tokenize`, its own local Ray cluster for
engine=ray) with a small VAE (1 epoch, 32 channels) and K=64 codes; it prints the encode rate
(every image through the encoder and the codebook, the engine's own progress line: actor
start included for Ray) and the whole command's wall time.

    python bench/tokenize_engines.py [--sizes 1000 10000] [--actors 2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from machine import machine_line, save
from PIL import Image


def write_folder(folder: str, n: int, classes: int = 4) -> None:
    """n textured 32×32 RGB images: stripes and blobs of a class colour, seeded."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(n):
        c = i % classes
        os.makedirs(os.path.join(folder, f"class{c}"), exist_ok=True)
        phase, freq = rng.uniform(0, 6.3), 0.2 + 0.1 * c
        stripes = 0.5 + 0.5 * np.sin(freq * (xx + yy * rng.uniform(-1, 1)) + phase)
        colour = np.array([(c * 70) % 256, 255 - c * 50, (c * 120 + 40) % 256]) / 255
        pixels = stripes[..., None] * colour + rng.normal(0, 0.05, (32, 32, 3))
        Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(
            os.path.join(folder, f"class{c}", f"{i:06d}.png"))


def one_run(folder: str, engine: str, actors: int) -> dict:
    out = tempfile.mkdtemp(prefix="tok-")
    cmd = [sys.executable, "-m", "arplatform", "tokenize", "--config-name", "tokenizer/mnist_sample", "name=bench",
           f"output_root={out}", "data.dataset=folder", f"data.data_dir={folder}", "data.channels=3",
           "vae.epochs=1", "vae.channels=32", "vae.batch_size=64", "codebook.num_codes=64", "tracking.enabled=false",
           f"engine={engine}", f"actors={actors}", "cpus_per_actor=1"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{engine}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rates = re.findall(r"encode: [\d,]+/[\d,]+ images \(100%\), ([\d,.]+) images/s", proc.stdout)
    return {"engine": engine, "seconds": round(seconds, 1), "encode_images_per_s": float(rates[-1].replace(",", ""))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--actors", type=int, default=2)
    args = p.parse_args()
    print(machine_line())
    print("| images | engine | encode images/s | command wall s | ray / local encode |\n|---|---|---|---|---|")
    rows = []
    for n in args.sizes:
        folder = tempfile.mkdtemp(prefix="imgs-")
        write_folder(folder, n)
        local, ray = one_run(folder, "local", args.actors), one_run(folder, "ray", args.actors)
        for r in (local, ray):
            ratio = r["encode_images_per_s"] / local["encode_images_per_s"]
            print(f"| {n:,} | {r['engine']} | {r['encode_images_per_s']:,.0f} | {r['seconds']} | {ratio:.2f}× |",
                  flush=True)
            rows.append({"images": n, **r})
    save("tokenize_engines", {"actors": args.actors, "rows": rows})


if __name__ == "__main__":
    main()
