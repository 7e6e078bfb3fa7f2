"""python -m arplatform.train --config-name transformer/mnist_small [key=value …]"""

from __future__ import annotations

import sys

from .cli import run_stage
from .config import TrainJobConfig


def main(argv=None) -> int:
    from .distributed.train_job import run_training

    return run_stage(TrainJobConfig, run_training, "Train a GPT on code sequences with Ray Train",
                     "transformer/mnist_sample", argv)


if __name__ == "__main__":
    sys.exit(main())
