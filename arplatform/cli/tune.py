"""python -m arplatform tune --config-name tune/mnist_sample [key=value …] [train.<key>=value …]

Overrides that start with `train.` go to the training job every trial runs (after the
tune config's own `train_overrides`); the others to the sweep (space, search, asha …).
"""

from __future__ import annotations

import dataclasses
import sys

from ..config import TrainJobConfig, TuneJobConfig, from_dict
from ..core.errors import ConfigError
from . import compose, run_stage


def build_config(config_name: str, overrides: list[str], config_dir: str) -> TuneJobConfig:
    train_overrides = [o[len("train."):] for o in overrides if o.startswith("train.")]
    sweep_overrides = [o for o in overrides if not o.startswith("train.")]
    job_keys = {f.name for f in dataclasses.fields(TrainJobConfig)}
    job_keys -= {f.name for f in dataclasses.fields(TuneJobConfig)}  # (name, resume: the sweep's own)
    for o in sweep_overrides:  # a training key without its train. prefix
        if o.lstrip("+~").split(".", 1)[0].split("=", 1)[0] in job_keys:
            raise ConfigError(f"{o.split('=', 1)[0]}: a key of the training job every trial runs; pass "
                              f"train.{o.lstrip('+~')}")
    sweep = compose(config_name, sweep_overrides, config_dir)
    if sweep.get("train") is not None:
        raise ConfigError(f"{config_name}: name the training job with train_config and train_overrides, "
                          "not a train section")
    base = from_dict(TuneJobConfig, sweep)  # checks train_config / train_overrides before composing them
    train = compose(base.train_config, [*base.train_overrides, *train_overrides])
    return from_dict(TuneJobConfig, {**sweep, "train": train})


def main(argv=None) -> int:
    from ..stages.tune import run_tune

    return run_stage(TuneJobConfig, run_tune, "Sweep a training job's hyperparameters with Ray Tune",
                     "tune/mnist_sample", argv, build=build_config)


if __name__ == "__main__":
    sys.exit(main())
