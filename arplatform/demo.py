"""The main job: MNIST sample → tokenizer → GPT on Ray Train → samples → images.

    python -m arplatform.demo [--out experiments] [key=value … for the training job]

1. tokenize (configs/tokenizer/mnist_sample.yaml): VAE, K=256 codebook, codes.npy
2. train (configs/transformer/mnist_sample.yaml): a class-conditional GPT on the
   codes with Ray Train, 2 CPU workers, tracked in MLflow
3. sample codes from best.pt with the KV cache and decode them through the
   codebook and the VAE into a PNG grid (one row per digit)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .cli import compose, exit_code
from .config import TokenizerConfig, TrainJobConfig, from_dict


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="MNIST sample → codes → GPT (Ray Train) → generated digits.")
    p.add_argument("--out", default="experiments", help="output root")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the training job")
    args = p.parse_args(argv)
    from .stages.tokenize import run_tokenize
    from .stages.train import run_train

    def demo():
        # both configs are built before any work starts, so a bad override costs nothing
        tok_cfg = from_dict(TokenizerConfig, compose("tokenizer/mnist_sample", [f"output_root={args.out}"]))
        codebook_dir = os.path.join(args.out, "codebook", tok_cfg.name)
        job = from_dict(TrainJobConfig, compose("transformer/mnist_sample", [
            f"output_root={args.out}", f"data.codebook_dir={codebook_dir}", *args.overrides]))
        times, t0 = {}, time.perf_counter()
        run_tokenize(tok_cfg, config_name="tokenizer/mnist_sample")
        times["tokenize"] = time.perf_counter() - t0
        summary = run_train(job, config_name="transformer/mnist_sample")
        times["train (Ray Train + sampling)"] = time.perf_counter() - t0 - times["tokenize"]
        print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
              + f"; total {time.perf_counter() - t0:.0f} s")
        print(f"image grid: {summary['run_dir']}/samples_grid.png (one row per digit)")

    return exit_code(demo)


if __name__ == "__main__":
    sys.exit(main())
