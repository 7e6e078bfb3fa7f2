"""python -m arplatform tune-sampler --config-name sampler_tune/mnist_sample [transformer_ckpt=…] [key=value …]

Ray Tune over a checkpoint's sampling settings (temperature, top_k, top_p, cfg_scale, cfg_schedule):
each trial generates samples and is scored by the sample-quality evaluation; the best
settings are written to sampler.json beside the checkpoint, where `generate` and the
training job's end-of-run sampling find them.
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
