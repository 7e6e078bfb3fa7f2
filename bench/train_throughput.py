"""Training throughput: the Ray Train job with 1 and with 2 workers against the
single-process core loop, same model, data and epochs, in one run.

Data: 4,500 sequences of 49 codes (K=256, 10 classes, seeded random), the
size of the MNIST-sample demo. Model: 4 layers × width 256, 51-token inputs,
batch 64 per process, 3 epochs with validation and checkpoints each epoch.
Tokens/s counts input tokens of completed optimizer steps; "fit" is measured
inside the process that trains (for Ray: the worker, around `core.loop.fit`),
"wall" adds everything from the command's start (Ray start-up, dataset
materialisation, worker group set-up).

    python bench/train_throughput.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from arplatform.cli import compose
from arplatform.config import TrainJobConfig, from_dict
from arplatform.core import GPT, CodeSequenceDataset, TokenLayout
from arplatform.core.codebook import save_codebook
from arplatform.core.loop import GPTObjective, IndexBatches, fit
from arplatform.distributed.train_job import model_config, run_training


def write_codes(folder: str, n: int = 4500, k: int = 256, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for prefix, rows in (("", n), ("val_", n // 9)):
        np.save(os.path.join(folder, f"{prefix}codes.npy"), rng.integers(0, k, (rows, 49)).astype(np.int32))
        np.save(os.path.join(folder, f"{prefix}labels.npy"), rng.integers(0, classes, rows))
    save_codebook(os.path.join(folder, "codebook.pt"), torch.randn(k, 8), {"num_classes": classes, "grid": [7, 7]})


def job_config(root: str, data: str, epochs: int, workers: int) -> TrainJobConfig:
    return from_dict(TrainJobConfig, compose("transformer/mnist_sample", [
        f"output_root={root}", f"data.codebook_dir={data}", f"optim.epochs={epochs}", "optim.log_every=100000",
        f"trainer.num_workers={workers}", f"trainer.cpus_per_worker={1.0 if workers == 1 else 0.5}",
        "tracking.enabled=false", "sample.num_samples=1"]))


def core_loop(root: str, data: str, epochs: int) -> tuple[float, float]:
    job = job_config(root, data, epochs, 1)
    layout = TokenLayout(256, 10)
    train = CodeSequenceDataset(os.path.join(data, "codes.npy"), os.path.join(data, "labels.npy"), layout)
    val = CodeSequenceDataset(os.path.join(data, "val_codes.npy"), os.path.join(data, "val_labels.npy"), layout)
    cfg = job.optim
    torch.manual_seed(0)
    model = GPT(model_config(job, layout, 49))
    batches = IndexBatches(train.tensors, cfg.batch_size, seed=0)
    val_batches = IndexBatches(val.tensors, 256, shuffle=False, drop_last=False)
    t0 = time.perf_counter()
    final = fit(model, GPTObjective(layout, cfg.class_dropout), batches, len(batches), lambda: val_batches(), cfg,
                checkpoint_dir=os.path.join(root, "core", "checkpoints"), grid_shape=(7, 7))
    seconds = time.perf_counter() - t0
    return final["step"] * cfg.batch_size * model.config.seq_len / seconds, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as root:
        data = os.path.join(root, "codes")
        os.makedirs(data)
        write_codes(data)
        rows = []
        t0 = time.perf_counter()
        tps, seconds = core_loop(root, data, args.epochs)
        rows.append(("single-process core loop", tps, seconds, time.perf_counter() - t0))
        for workers in (1, 2):
            t0 = time.perf_counter()
            s = run_training(job_config(os.path.join(root, f"ray{workers}"), data, args.epochs, workers),
                             log=lambda *a: None)
            rows.append((f"Ray Train, {workers} worker{'s' * (workers > 1)}", s["tokens_per_s"], s["fit_seconds"],
                         time.perf_counter() - t0))
    base = rows[0][1]
    print(f"{args.epochs} epochs of 4,500 × 51-token sequences, GPT 4 layers × 256, batch 64 per process, "
          f"{os.cpu_count()} cores")
    print(f"{'':28} {'tokens/s (fit)':>15} {'× core loop':>12} {'fit s':>7} {'wall s':>7}")
    for name, tps, fit_s, wall in rows:
        print(f"{name:28} {tps:15.0f} {tps / base:11.2f}× {fit_s:7.1f} {wall:7.1f}")


if __name__ == "__main__":
    main()
