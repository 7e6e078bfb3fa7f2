"""The main job, `arplatform pipeline --config-name pipeline/mnist_sample`, with two flags:

    arplatform demo [--out experiments] [--num_samples 500] [key=value … of the pipeline]
"""

from __future__ import annotations

import sys

from .pipeline import run_main

ALIASES = {"--out": "output_root", "--num_samples": "num_samples"}


def main(argv=None) -> int:
    return run_main(argv, "MNIST sample → codes → GPT (Ray Train) → digits (Ray Data) → report.", ALIASES)


if __name__ == "__main__":
    sys.exit(main())
