"""A main job's sample quality over training seeds: each seed's figures, then mean and range.

Each seed is the real command, `python -m arplatform pipeline --config-name <config>
train.optim.seed=<s>` (what `python3 tasks.py demo` runs, with the training seed set), in one
output root: the tokenizer is made once and reused, and every seed trains, generates and
evaluates anew. The figures are the pipeline's own `quality.json`: the platform classifier's
class accuracy, the Fréchet distance of the samples over the tokenizer reconstructions', and the
held-out bits per code. The README's quality tables and tests/quality_floors.yaml come from here.

    cd bench && ../.venv/bin/python quality.py [--config pipeline/mnist_sample] [--out DIR]
        [pipeline overrides, e.g. train.optim.ema_decay=0.99 …] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from machine import machine_line, save

FIGURES = (("accuracy", "class accuracy"), ("frechet_ratio", "Fréchet / reconstructions'"),
           ("bits_per_code", "held-out bits per code"), ("frechet", "Fréchet distance"))


def commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def one_seed(config: str, out: str, seed: int, overrides: list[str]) -> dict:
    """One pipeline run; its figures from the newest samples folder's quality.json."""
    cmd = [sys.executable, "-m", "arplatform", "pipeline", "--config-name", config, f"output_root={out}",
           f"train.optim.seed={seed}", *overrides]
    log = os.path.join(out, f"seed{seed}.log")
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    if rc:
        sys.exit(f"seed {seed}: the pipeline exited {rc}; see {log}")
    folders = [os.path.join(root, "quality.json") for root, _, files in os.walk(os.path.join(out, "samples"))
               if "quality.json" in files]
    q = json.load(open(max(folders, key=os.path.getmtime), encoding="utf-8"))
    return {"seed": seed, "seconds": round(seconds, 1), "accuracy": q["accuracy"],
            "frechet": q["frechet"]["samples"], "frechet_ratio": q["frechet"]["samples_over_reconstructions"],
            "bits_per_code": q["heldout_bits_per_code"]}


def summary(rows: list[dict]) -> dict:
    return {key: {"mean": sum(r[key] for r in rows) / len(rows), "min": min(r[key] for r in rows),
                  "max": max(r[key] for r in rows)} for key, _ in FIGURES}


def floors(stats: dict) -> dict:
    """The guard's floors (tests/quality_floors.yaml) by one rule: the worst seed, widened by the
    seeds' range or a minimum margin, whichever is larger (another x86 CPU follows another
    trajectory, as another seed does; a real regression moves a figure by more)."""
    def margin(key: str, least: float) -> float:
        return max(stats[key]["max"] - stats[key]["min"], least)

    return {"accuracy_min": math.floor((stats["accuracy"]["min"] - margin("accuracy", 0.02)) * 100) / 100,
            "frechet_ratio_max": math.ceil((stats["frechet_ratio"]["max"] + margin("frechet_ratio", 0.15)) * 10) / 10,
            "bits_per_code_max": math.ceil((stats["bits_per_code"]["max"] + margin("bits_per_code", 0.08)) * 100) / 100}


def table(rows: list[dict], stats: dict) -> str:
    lines = ["| seed | " + " | ".join(name for _, name in FIGURES) + " | seconds |",
             "|---" * (len(FIGURES) + 2) + "|"]
    for r in rows:
        lines.append(f"| {r['seed']} | " + " | ".join(f"{r[k]:.3f}" for k, _ in FIGURES) + f" | {r['seconds']:.0f} |")
    lines.append("| **mean (range)** | " + " | ".join(
        f"**{stats[k]['mean']:.3f}** ({stats[k]['min']:.3f}–{stats[k]['max']:.3f})" for k, _ in FIGURES) + " | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="pipeline/mnist_sample")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None, help="output root (default: a new temp folder)")
    p.add_argument("overrides", nargs="*", help="pipeline overrides, the same for every seed")
    args = p.parse_args()
    out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="quality-"))
    os.makedirs(out, exist_ok=True)
    print(machine_line())
    print(f"commit {commit()}, {args.config} {' '.join(args.overrides)}, seeds {args.seeds}, in {out}", flush=True)
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(args.config, out, seed, args.overrides))
        print(json.dumps(rows[-1]), flush=True)
    stats = summary(rows)
    print(table(rows, stats))
    print("floors (tests/quality_floors.yaml):", json.dumps(floors(stats)))
    name = "quality-" + args.config.replace("/", "-")
    print("saved", save(name, {"commit": commit(), "config": args.config, "overrides": args.overrides,
                               "seeds": rows, "summary": stats, "floors": floors(stats)}))


if __name__ == "__main__":
    main()
