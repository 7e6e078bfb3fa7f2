"""python -m arplatform train --config-name transformer/mnist_small [key=value …]"""

from __future__ import annotations

import sys

from ..config import TrainJobConfig
from . import run_stage


def main(argv=None) -> int:
    from ..stages.train import run_train

    return run_stage(TrainJobConfig, run_train, "Train a GPT on code sequences with Ray Train",
                     "transformer/mnist_sample", argv)


if __name__ == "__main__":
    sys.exit(main())
