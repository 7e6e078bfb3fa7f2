"""Training throughput: the Ray Train job with 1 and with 2 workers against the
single-process core loop, same model, data and epochs, in alternating rounds.

Data: 4,500 sequences of 49 codes (K=256, 10 classes, seeded random), the
size of the MNIST-sample demo. Model: 4 layers × width 256, 51-token inputs,
batch 64 per process, validation and checkpoints every epoch. Tokens/s counts
input tokens of completed optimizer steps; "fit" is measured inside the process
that trains (for Ray: the worker, around `core.loop.fit`), "wall" adds everything
from the job's start (dataset materialisation, worker group; the cluster is
already up).

Each round runs, in this order: the core loop alone on the machine; the same
loop beside an idle local Ray cluster (started, nothing scheduled: what Ray's
own processes cost a loop that is not even in Ray); Ray Train with 1 worker;
Ray Train with 2 workers; then the cluster is shut down. Ratios are taken
within a round and the median over rounds is printed, because these machines
drift by ±10 % between minutes.

`--threads` sets the torch threads of the core loop and of the 1-worker job
(default: all cores). With fewer threads than cores, Ray's processes have a
core of their own, as on any machine larger than this 2-core one.

    python bench/train_throughput.py [--epochs 1] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from machine import machine_line

from arplatform.cli import compose
from arplatform.config import TrainJobConfig, from_dict
from arplatform.core import GPT, CodeSequenceDataset, TokenLayout
from arplatform.core.codebook import save_codebook
from arplatform.core.loop import GPTObjective, IndexBatches, fit
from arplatform.stages.train import run_train


def write_codes(folder: str, n: int = 4500, k: int = 256, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for prefix, rows in (("", n), ("val_", n // 9)):
        np.save(os.path.join(folder, f"{prefix}codes.npy"), rng.integers(0, k, (rows, 49)).astype(np.int32))
        np.save(os.path.join(folder, f"{prefix}labels.npy"), rng.integers(0, classes, rows))
    save_codebook(os.path.join(folder, "codebook.pt"), torch.randn(k, 8), {"num_classes": classes, "grid": [7, 7]})


def job_config(root: str, data: str, epochs: int, workers: int, threads: int = 0) -> TrainJobConfig:
    return from_dict(TrainJobConfig, compose("transformer/mnist_sample", [
        f"output_root={root}", f"data.codebook_dir={data}", f"optim.epochs={epochs}", "optim.log_every=100000",
        f"trainer.num_workers={workers}", f"trainer.cpus_per_worker={1.0 if workers == 1 else 0.5}",
        f"trainer.threads_per_worker={threads}", "tracking.enabled=false", "sample.num_samples=1"]))


def core_loop(root: str, data: str, epochs: int) -> tuple[float, float]:
    """(tokens/s, seconds) of `fit` in this process, with the torch threads set by the caller."""
    job = job_config(root, data, epochs, 1)
    layout = TokenLayout(256, 10)
    train = CodeSequenceDataset(os.path.join(data, "codes.npy"), os.path.join(data, "labels.npy"), layout)
    val = CodeSequenceDataset(os.path.join(data, "val_codes.npy"), os.path.join(data, "val_labels.npy"), layout)
    cfg = job.optim
    torch.manual_seed(0)
    model = GPT(job.model.gpt_config(layout.vocab_size, layout.sequence_length(49) - 1))
    batches = IndexBatches(train.tensors, cfg.batch_size, seed=0)
    val_batches = IndexBatches(val.tensors, 256, shuffle=False, drop_last=False)
    t0 = time.perf_counter()
    final = fit(model, GPTObjective(layout, cfg.class_dropout), batches, len(batches), val_batches, cfg,
                checkpoint_dir=os.path.join(root, "core", "checkpoints"), grid_shape=(7, 7))
    seconds = time.perf_counter() - t0
    return final["step"] * cfg.batch_size * model.config.seq_len / seconds, seconds


def one_round(root: str, data: str, epochs: int, threads: int) -> dict[str, tuple[float, float, float]]:
    """{row: (tokens/s, fit seconds, wall seconds)} for the four set-ups, in order."""
    from arplatform.distributed.cluster import init_ray

    rows = {}
    t0 = time.perf_counter()
    tps, seconds = core_loop(root, data, epochs)
    rows["core loop"] = (tps, seconds, time.perf_counter() - t0)
    ray = init_ray()
    try:
        time.sleep(5)  # let the cluster's start-up settle: measure its steady background
        t0 = time.perf_counter()
        tps, seconds = core_loop(root, data, epochs)
        rows["core loop, idle Ray beside"] = (tps, seconds, time.perf_counter() - t0)
        for workers, worker_threads in ((1, threads), (2, 0)):
            t0 = time.perf_counter()
            job = job_config(os.path.join(root, f"ray{workers}-{time.time_ns()}"), data, epochs, workers,
                             worker_threads)
            s = run_train(job, log=lambda *a: None)
            rows[f"Ray Train, {workers} worker{'s' * (workers > 1)}"] = (
                s["tokens_per_s"], s["fit_seconds"], time.perf_counter() - t0)
    finally:
        ray.shutdown()
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the core loop and of the 1-worker job")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rounds = []
    with tempfile.TemporaryDirectory() as root:
        data = os.path.join(root, "codes")
        os.makedirs(data)
        write_codes(data)
        for r in range(args.rounds):
            rounds.append(one_round(root, data, args.epochs, args.threads))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[0]:,.0f}" for k, v in rounds[-1].items()), flush=True)
    print("\n" + machine_line())
    print(f"{args.epochs} epoch(s) of 4,500 × 51-token sequences per round, GPT 4 layers × 256, batch 64 per "
          f"process, {os.cpu_count()} cores; core loop and 1 worker: {args.threads} torch thread(s); "
          f"2 workers: {max(1, (os.cpu_count() or 1) // 2)} each")
    print(f"{'':28} {'tokens/s (fit)':>15} {'× core loop':>12} {'range':>12} {'fit s':>7} {'wall s':>7}")
    for name in rounds[0]:
        ratios = [rd[name][0] / rd["core loop"][0] for rd in rounds]
        tps, fit_s, wall = (statistics.median(rd[name][i] for rd in rounds) for i in range(3))
        print(f"{name:28} {tps:15,.0f} {statistics.median(ratios):11.2f}× "
              f"{min(ratios):5.2f}–{max(ratios):4.2f}× {fit_s:7.1f} {wall:7.1f}")


if __name__ == "__main__":
    main()
