"""Ray Train's own floor: a bare `TorchTrainer` with 2 workers whose train function reports
once, on a local cluster this process starts, as a user's smallest Ray Train script would
(`--workers 0`: Ray Train's local mode, the function in this process, no actors).
Prints a JSON line: seconds from this process's start (imports included) to `ray.init`
returning, to the workers entering their function, and to rank 0's first report.

    ../.venv/bin/python bare_trainer.py [--workers 2]

`scale.py` runs it beside the platform's training command, in the same way (a fresh
process, its own local cluster), so the difference is what the platform adds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from arplatform.core.startup import process_start_time  # noqa: E402 (the platform's clock, the same zero)


def train_fn(config: dict) -> dict:
    import ray.train

    entered = time.time()
    ray.train.report({"step": 0})
    return {"entered": entered, "reported": time.time()}  # rank 0's, as `result.return_value`


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="0: Ray Train's local mode (no actors, no cluster)")
    args = p.parse_args()
    started = process_start_time()
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if args.workers:  # local mode (0 workers) runs the function in this process, with no cluster
        ray.init()  # as a user's script starts it: a local cluster with its defaults
    ray_ready = time.time()
    per_worker = {"resources_per_worker": {"CPU": 0.5}} if args.workers else {}
    scaling = ScalingConfig(num_workers=args.workers, **per_worker)
    with tempfile.TemporaryDirectory() as storage:
        trainer = TorchTrainer(train_fn, scaling_config=scaling,
                               run_config=RunConfig(name="bare", storage_path=storage))
        result = trainer.fit()
    if ray.is_initialized():
        ray.shutdown()
    times = result.return_value
    print(json.dumps({"ray_init_s": round(ray_ready - started, 2),
                      "workers_entered_s": round(times["entered"] - started, 2),
                      "first_report_s": round(times["reported"] - started, 2)}))


if __name__ == "__main__":
    main()
