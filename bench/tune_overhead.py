"""What a sweep costs per trial: a one-trial sweep (Ray Tune → one Ray Train run) against
the same training run launched directly, same config, data and cluster, in alternating rounds.

Data: 4,500 sequences of 49 codes (K=256, 10 classes, seeded random), the size of the
MNIST-sample demo; the demo's model (4 layers × 256), 2 workers × 0.5 CPU, no MLflow, no
end-of-run samples. "wall" is from the call to its return (the cluster is already up);
the sweep's includes Tune's controller, the trial process and the leaderboard.

    python bench/tune_overhead.py [--epochs 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from machine import machine_line, save
from train_throughput import write_codes

from arplatform.cli import compose
from arplatform.config import TrainJobConfig, TuneJobConfig, from_dict
from arplatform.stages.train import run_train
from arplatform.stages.tune import run_tune


def train_overrides(root: str, data: str, epochs: int) -> list[str]:
    return [f"output_root={root}", f"data.codebook_dir={data}", f"optim.epochs={epochs}", "optim.log_every=100000",
            "tracking.enabled=false", "sample.num_samples=0"]


def one_round(root: str, data: str, epochs: int) -> dict[str, float]:
    quiet = lambda *a: None  # noqa: E731
    overrides = train_overrides(os.path.join(root, f"r{time.time_ns()}"), data, epochs)
    t0 = time.perf_counter()
    run_train(from_dict(TrainJobConfig, compose("transformer/mnist_sample", overrides)), log=quiet)
    direct = time.perf_counter() - t0
    sweep = compose("tune/mnist_sample", [
        "~space", "+space={model: {embed_dim: {grid: [256]}}}", "search.num_samples=1",
        "search.max_concurrent_trials=1", "asha.enabled=false", "train_overrides=[]"])
    sweep["train"] = compose("transformer/mnist_sample", overrides)
    t0 = time.perf_counter()
    run_tune(from_dict(TuneJobConfig, sweep), log=quiet)
    return {"direct": direct, "sweep": time.perf_counter() - t0}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    from arplatform.distributed.cluster import init_ray

    rounds = []
    with tempfile.TemporaryDirectory() as root:
        data = os.path.join(root, "codes")
        os.makedirs(data)
        write_codes(data)
        ray = init_ray()
        try:
            for r in range(args.rounds):
                rounds.append(one_round(root, data, args.epochs))
                print(f"round {r + 1}: direct {rounds[-1]['direct']:.1f} s, one-trial sweep "
                      f"{rounds[-1]['sweep']:.1f} s", flush=True)
        finally:
            ray.shutdown()
    ratios = [rd["sweep"] / rd["direct"] for rd in rounds]
    figures = {"direct_s": statistics.median(rd["direct"] for rd in rounds),
               "sweep_s": statistics.median(rd["sweep"] for rd in rounds), "ratio": statistics.median(ratios),
               "ratio_range": [min(ratios), max(ratios)], "epochs": args.epochs, "rounds": args.rounds}
    print("\n" + machine_line())
    print(f"{args.epochs} epoch(s) of 4,500 × 51-token sequences, GPT 4 layers × 256, 2 workers × 0.5 CPU")
    print(f"training run, direct:   {figures['direct_s']:6.1f} s wall (median)")
    print(f"one-trial sweep:        {figures['sweep_s']:6.1f} s wall (median)")
    print(f"sweep / direct:         {figures['ratio']:6.2f}× (range {min(ratios):.2f}–{max(ratios):.2f}×); "
          f"overhead {figures['sweep_s'] - figures['direct_s']:.1f} s per trial")
    print(f"saved: {save('tune_overhead', figures)}")


if __name__ == "__main__":
    main()
