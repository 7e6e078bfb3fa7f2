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
import sys

from .cli import compose, exit_code
from .config import TokenizerConfig, TrainJobConfig, from_dict


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="MNIST sample → codes → GPT (Ray Train) → generated digits.")
    p.add_argument("--out", default="experiments", help="output root")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the training job")
    args = p.parse_args(argv)
    from .distributed.train_job import run_training
    from .tokenizer import run_tokenizer

    def demo():
        tok_cfg = from_dict(TokenizerConfig, compose("tokenizer/mnist_sample", [f"output_root={args.out}"]))
        tok = run_tokenizer(tok_cfg, config_name="tokenizer/mnist_sample")
        job = from_dict(TrainJobConfig, compose("transformer/mnist_sample", [
            f"output_root={args.out}", f"data.codebook_dir={tok['codebook_dir']}", *args.overrides]))
        summary = run_training(job, config_name="transformer/mnist_sample")
        print(f"\nimage grid: {summary['output_dir']}/samples_grid.png (one row per digit)")

    return exit_code(demo)


if __name__ == "__main__":
    sys.exit(main())
