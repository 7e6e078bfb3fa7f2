"""How the platform grows with the data, in one run: a training job's time to the first step,
the driver's peak memory and training tokens/s, for synthetic code shards of 10^4 to 10^6
rows (10^7 with --sizes), on every data path side by side: validation files or the default
(none: `data.val_fraction` holds rows out), rows held in the object store or streamed by Ray
Data (`data.materialize=true|false|auto`), `invalid_codes=drop`, and a tokenizer output
folder (`data.codebook_dir`) instead of shards. Beside them, Ray Train's own floor: a bare
`TorchTrainer` (2 workers, a function that reports once, `bare_trainer.py`), so the table says
what the platform adds. Then the tokenizer's encode rate on synthetic folders of 10^3 and
10^4 RGB images (10^5 with --images), both engines side by side (`tokenize_engines.py`). The
figures go to bench/results/scale.json, and a picture of them to bench/results/scale.png.

Each job is the real command (`python -m arplatform train`, its own local Ray cluster, as
a user starts it): a tiny model (1 layer × 32), 20 steps of 64 rows per worker, 2 workers,
no MLflow, no samples. Rows: 64 codes over K=256, 10 classes, seeded random, in shards of
at most 10^6 rows (`codes-XXXXX.npy`, `labels-XXXXX.npy`), 1 % more as validation files.
"time to first step" counts from the command's process start (its imports included) to
rank 0's first batch (`summary.json`'s `startup`); "driver peak RSS" is the command
process's own VmHWM, read from /proc while it runs.

    cd bench && ../.venv/bin/python scale.py [--sizes 10000 100000 1000000 10000000] [--rounds 1]
                                             [--paths default held streamed …] [--images 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from machine import RESULTS, machine_line, save
from tokenize_engines import one_run as tokenize_run
from tokenize_engines import write_folder

SHARD_ROWS = 1_000_000


def write_shards(folder: str, rows: int, positions: int = 64, k: int = 256, classes: int = 10) -> None:
    """train/ and val/ shards, and a tokenizer-like output folder (`codebook/`: one codes.npy,
    labels.npy and a codebook.pt) of the same rows."""
    import torch

    from arplatform.core.codebook import save_codebook

    rng = np.random.default_rng(0)
    for sub, n in (("train", rows), ("val", max(100, rows // 100))):
        os.makedirs(os.path.join(folder, sub))
        for i, start in enumerate(range(0, n, SHARD_ROWS)):
            m = min(SHARD_ROWS, n - start)
            np.save(os.path.join(folder, sub, f"codes-{i:05d}.npy"), rng.integers(0, k, (m, positions), np.int32))
            np.save(os.path.join(folder, sub, f"labels-{i:05d}.npy"), rng.integers(0, classes, m, np.int64))
    book = os.path.join(folder, "codebook")
    os.makedirs(book)
    codes = np.lib.format.open_memmap(os.path.join(book, "codes.npy"), "w+", np.int32, (rows, positions))
    labels = np.lib.format.open_memmap(os.path.join(book, "labels.npy"), "w+", np.int64, (rows,))
    for start in range(0, rows, SHARD_ROWS):  # (written in pieces: this process stays small too)
        m = min(SHARD_ROWS, rows - start)
        codes[start:start + m] = rng.integers(0, k, (m, positions), np.int32)
        labels[start:start + m] = rng.integers(0, classes, m, np.int64)
    codes.flush(), labels.flush()
    del codes, labels
    side = int(positions ** 0.5)
    save_codebook(os.path.join(book, "codebook.pt"), torch.randn(k, 4),
                  {"num_codes": k, "num_classes": classes, "grid": [side, side]})


# name: (the data keys, what the row is); "default" is what a user who gives only code shards gets
PATHS = {
    "default": ({"materialize": "auto"}, "code shards, no validation files (val_fraction), materialize=auto"),
    "held": ({"materialize": "true"}, "code shards, no validation files, materialize=true"),
    "streamed": ({"materialize": "false"}, "code shards, no validation files, materialize=false"),
    "drop": ({"materialize": "auto", "invalid_codes": "drop"}, "the default, invalid_codes=drop"),
    "val-held": ({"materialize": "true", "val": True}, "code shards with validation files, materialize=true"),
    "val-streamed": ({"materialize": "false", "val": True}, "code shards with validation files, materialize=false"),
    "codebook": ({"materialize": "auto", "codebook": True}, "a tokenizer output folder (codebook_dir), auto"),
}


def data_overrides(data: str, path: dict) -> list[str]:
    if path.get("codebook"):
        return [f"data.codebook_dir={data}/codebook"]
    keys = ["data.codebook_dir=null", f"data.codes={data}/train", f"data.labels={data}/train", "data.num_codes=256",
            "data.num_classes=10"]
    if path.get("val"):
        keys += [f"data.val_codes={data}/val", f"data.val_labels={data}/val"]
    return keys + [f"data.invalid_codes={path.get('invalid_codes', 'error')}"]


def peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return None


def one_job(root: str, data: str, path: dict) -> dict:
    out = os.path.join(root, f"out-{time.time_ns()}")
    cmd = [sys.executable, "-m", "arplatform", "train", "--config-name", "transformer/mnist_sample",
           f"output_root={out}", *data_overrides(data, path),
           f"data.materialize={path['materialize']}", "model.embed_dim=32", "model.num_layers=1",
           "model.num_heads=2", "optim.batch_size=64", "optim.max_steps=20", "optim.epochs=1", "optim.log_every=10",
           "optim.warmup_steps=2", "trainer.num_workers=2", "tracking.enabled=false", "sample.num_samples=0"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mib(proc.pid) or 0.0)
        time.sleep(0.1)
    text = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"the job failed ({proc.returncode}):\n{text[-3000:]}")
    (summary_path,) = [os.path.join(d, "summary.json") for d, _, files in os.walk(out) if "summary.json" in files]
    with open(summary_path) as f:
        s = json.load(f)
    return {"first_step_s": s["startup"]["first_step_s"], "phases_s": s["startup"]["phases_s"],
            "driver_peak_rss_mib": round(peak, 1), "tokens_per_s": round(s["tokens_per_s"]), "wall_s": s["seconds"]}


def bare_job(workers: int = 2) -> dict:
    """Ray Train's floor (`bare_trainer.py`): a fresh process, its own local cluster, 2 workers
    (0: Ray Train's local mode, no actors)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, os.path.join(here, "bare_trainer.py"), "--workers", str(workers)], env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"the bare TorchTrainer failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tokenizer_rows(sizes: list[int], actors: int) -> list[dict]:
    """The encode rate of both tokenizer engines on a synthetic folder of each size."""
    rows = []
    for n in sizes:
        folder = tempfile.mkdtemp(prefix="scale-images-")
        try:
            write_folder(folder, n)
            local = tokenize_run(folder, "local", actors)
            ray = tokenize_run(folder, "ray", actors)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        for r in (local, ray):
            rows.append({"images": n, **r})
            print(f"{n:>10,} images  engine={r['engine']:5s}  encode {r['encode_images_per_s']:>8,.0f} images/s "
                  f"({r['encode_images_per_s'] / local['encode_images_per_s']:.2f}× local)  "
                  f"command {r['seconds']:.0f} s", flush=True)
    return rows


def plot(training: list[dict], tokenizer: list[dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (start, rss, encode) = plt.subplots(1, 3, figsize=(14, 3.8))
    for name in PATHS:
        rows = [r for r in training if r["path"] == name]
        if rows:
            start.plot([r["rows"] for r in rows], [r["first_step_s"] for r in rows], "o-", label=name)
            rss.plot([r["rows"] for r in rows], [r["driver_peak_rss_mib"] for r in rows], "o-", label=name)
    bare = [r for r in training if r["path"] == "bare"]
    if bare:
        start.axhline(sum(r["first_report_s"] for r in bare) / len(bare), color="k", ls="--",
                      label="bare TorchTrainer")
    for engine in ("local", "ray"):
        rows = [r for r in tokenizer if r["engine"] == engine]
        encode.plot([r["images"] for r in rows], [r["encode_images_per_s"] for r in rows], "o-", label=engine)
    for ax, title, unit in ((start, "training: time to first step", "s"),
                            (rss, "training: driver peak RSS", "MiB"),
                            (encode, "tokenizer: encode rate", "images/s")):
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    start.set_xlabel("rows")
    rss.set_xlabel("rows")
    encode.set_xlabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def growth(figures: list[dict]) -> list[str]:
    """Each path's peak RSS and first step at its largest size over its smallest."""
    lines = []
    for name in PATHS:
        rows = sorted((r for r in figures if r["path"] == name), key=lambda r: r["rows"])
        if len(rows) > 1:
            lo, hi = rows[0], rows[-1]
            lines.append(f"{name:13s} {lo['rows']:,} → {hi['rows']:,} rows: driver peak RSS "
                         f"{hi['driver_peak_rss_mib'] / lo['driver_peak_rss_mib']:.2f}×, first step "
                         f"{lo['first_step_s']:.1f} → {hi['first_step_s']:.1f} s")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS), help="the data paths to run")
    p.add_argument("--images", type=int, nargs="*", default=[1_000, 10_000],
                   help="folder sizes for the tokenizer's engines (none: skip them)")
    p.add_argument("--actors", type=int, default=2, help="encoding actors of engine=ray")
    args = p.parse_args()
    print(machine_line(), flush=True)
    for name in args.paths:
        print(f"  {name:13s} {PATHS[name][1]}")
    figures = []
    with tempfile.TemporaryDirectory() as root:
        for rows in args.sizes:
            data = os.path.join(root, f"rows-{rows}")
            write_shards(data, rows)
            for _ in range(args.rounds):
                bare = {"rows": rows, "path": "bare", **bare_job()}  # Ray Train's floor, in the same round
                local = {"rows": rows, "path": "bare-local-mode", **bare_job(0)}  # its local mode: no actors
                figures += [bare, local]
                for r in (bare, local):
                    print(f"{rows:>10,} rows  {r['path']:13s} first report {r['first_report_s']:5.1f} s  (ray.init "
                          f"{r['ray_init_s']:.1f} s, function entered {r['workers_entered_s']:.1f} s)", flush=True)
                for name in args.paths:  # side by side
                    r = {"rows": rows, "path": name, **one_job(root, data, PATHS[name][0])}
                    figures.append(r)
                    phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases_s"])
                    print(f"{rows:>10,} rows  {name:13s} first step {r['first_step_s']:5.1f} s "
                          f"(+{r['first_step_s'] - bare['first_report_s']:.1f} s over bare)  driver peak RSS "
                          f"{r['driver_peak_rss_mib']:7.1f} MiB  {r['tokens_per_s']:>8,} tokens/s  ({phases})",
                          flush=True)
            shutil.rmtree(data, ignore_errors=True)
    for line in growth(figures):
        print(line)
    tokenizer = tokenizer_rows(args.images, args.actors)
    print(f"saved {save('scale', {'training': figures, 'tokenizer': tokenizer})}")
    print(f"saved {plot(figures, tokenizer, os.path.join(RESULTS, 'scale.png'))}")


if __name__ == "__main__":
    main()
