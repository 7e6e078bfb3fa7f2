"""The main job: `arplatform pipeline --config-name pipeline/mnist_sample`, with two flags.

    arplatform demo [--out experiments] [--num_samples 500] [key=value … of the pipeline]

On the offline MNIST sample: tokenize (VAE, K=256 codebook, codes) → train a
class-conditional GPT with Ray Train (2 CPU workers, MLflow) → generate 500 digits
on Ray Data → evaluate them against the real digits → report.md / report.html.
`--out` is `output_root`, `--num_samples` is `num_samples`; the rest are the pipeline's
keys: `train.optim.epochs=5`, `tokenizer.vae.epochs=3`, `force=[train]`.
"""

from __future__ import annotations

import sys

from .pipeline import run_main

ALIASES = {"--out": "output_root", "--num_samples": "num_samples"}


def main(argv=None) -> int:
    return run_main(argv, "MNIST sample → codes → GPT (Ray Train) → digits (Ray Data) → report.", ALIASES)


if __name__ == "__main__":
    sys.exit(main())
