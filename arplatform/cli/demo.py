"""The main job: `python -m arplatform pipeline --config-name pipeline/mnist_sample`.

    python -m arplatform demo [--out experiments] [--num_samples 500] [key=value … of the pipeline]

On the offline MNIST sample: tokenize (VAE, K=256 codebook, codes) → train a
class-conditional GPT with Ray Train (2 CPU workers, MLflow) → generate 500 digits
on Ray Data → evaluate them against the real digits → report.md / report.html.
Overrides go to the pipeline: `train.optim.epochs=5`, `tokenizer.vae.epochs=3`, `force=[train]`.
"""

from __future__ import annotations

import sys

from . import ArgumentParser


def main(argv=None) -> int:
    p = ArgumentParser(description="MNIST sample → codes → GPT (Ray Train) → digits (Ray Data) → report.")
    p.add_argument("--out", default="experiments", help="output root")
    p.add_argument("--num_samples", type=int, default=None, help="samples to generate and evaluate (default 500)")
    p.add_argument("overrides", nargs="*", help="pipeline overrides: train.<key>=…, tokenizer.<key>=…, force=[…]")
    args = p.parse_args(argv)
    from .pipeline import main as pipeline_main

    extra = [] if args.num_samples is None else [f"num_samples={args.num_samples}"]
    return pipeline_main(["--config-name", "pipeline/mnist_sample", f"output_root={args.out}", *extra,
                          *args.overrides])


if __name__ == "__main__":
    sys.exit(main())
