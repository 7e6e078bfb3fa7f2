"""python -m arplatform.pipeline --config-name pipeline/mnist_sample [key=value …] [tokenizer.<k>=v …] [train.<k>=v …]

The whole chain: tokenize → train (Ray Train) → generate (Ray Data) → evaluate → report.
Stages already done with the same config are reused; `force=[generate]` redoes one.
Overrides starting with `tokenizer.` or `train.` go to that stage's config.
"""

from __future__ import annotations

import sys

from .cli import compose, run_stage
from .config import PipelineConfig, from_dict


def build_config(config_name: str, overrides: list[str], config_dir: str) -> PipelineConfig:
    routed = {"tokenizer.": [], "train.": []}
    rest = []
    for o in overrides:
        prefix = next((p for p in routed if o.startswith(p)), None)
        if prefix:
            routed[prefix].append(o[len(prefix):])
        else:
            rest.append(o)
    cfg = compose(config_name, rest, config_dir)
    cfg["tokenizer_overrides"] = [*cfg.get("tokenizer_overrides", []), *routed["tokenizer."]]
    cfg["train_overrides"] = [*cfg.get("train_overrides", []), *routed["train."]]
    return from_dict(PipelineConfig, cfg)


def main(argv=None) -> int:
    from .stages.pipeline import run_pipeline

    return run_stage(PipelineConfig, run_pipeline, "The whole chain: tokenize, train, generate, evaluate, report",
                     "pipeline/mnist_sample", argv, build=build_config)


if __name__ == "__main__":
    sys.exit(main())
