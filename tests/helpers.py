"""Shared by the Ray tests: a small learnable code set and a way to run the training job."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import torch

from arplatform.core.codebook import save_codebook

TINY = ["model.embed_dim=32", "model.num_layers=1", "model.num_heads=2", "model.dropout=0.0",
        "optim.batch_size=16", "optim.lr=0.01", "optim.warmup_steps=2", "optim.log_every=10",
        "sample.num_samples=8", "trainer.num_workers=2"]


def learnable_codes(folder, n=320, k=16, classes=4, seed=0):
    """4×4 grids whose codes follow the class and position, with 10 % noise: a GPT can learn them."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for prefix, rows in (("", n), ("val_", n // 4)):
        labels = rng.integers(0, classes, rows)
        codes = (labels[:, None] * 3 + np.arange(16)[None, :]) % k
        noise = rng.random(codes.shape) < 0.1
        codes[noise] = rng.integers(0, k, noise.sum())
        np.save(os.path.join(folder, f"{prefix}codes.npy"), codes.astype(np.int32))
        np.save(os.path.join(folder, f"{prefix}labels.npy"), labels.astype(np.int64))
    save_codebook(os.path.join(folder, "codebook.pt"), torch.randn(k, 4),
                  {"num_codes": k, "num_classes": classes, "grid": [4, 4]})
    return str(folder)


def run_train(root, data, *overrides, timeout=300, popen=None):
    """Run the job to completion (CompletedProcess), or start it (Popen) when popen is a dict of Popen options."""
    cmd = [sys.executable, "-m", "arplatform.train", "--config-name", "transformer/mnist_sample",
           f"output_root={root}", f"data.codebook_dir={data}", *TINY, *overrides]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if popen is not None:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(pgid: int, grace: float = 3.0) -> None:
    """Stop every process of the group `pgid` (this test's own cluster), never Ray's stop command,
    which walks the whole machine and kills anyone's Ray."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + grace
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
