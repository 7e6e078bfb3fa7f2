"""python -m arplatform tune-sampler --config-name sampler_tune/mnist_sample [transformer_ckpt=…] [key=value …]

Ray Tune over a checkpoint's sampling settings, each trial scored by the sample-quality
evaluation; the best go to sampler.json beside the checkpoint, where every sampler finds them.
"""

from __future__ import annotations

import sys

from ..config import SamplerSweepConfig
from . import run_stage


def main(argv=None) -> int:
    from ..stages.sampler_tune import run_sampler_tune

    return run_stage(SamplerSweepConfig, run_sampler_tune, "Tune a checkpoint's sampling settings with Ray Tune",
                     "sampler_tune/mnist_sample", argv)


if __name__ == "__main__":
    sys.exit(main())
