"""The main job: MNIST sample → tokenizer → GPT on its codes → samples → images.

    python -m arplatform.demo [--out experiments] [--epochs 10] [--samples 40]

1. tokenize (configs/tokenizer/mnist_sample.yaml): VAE, K=256 codebook, codes.npy
2. train a GPT on the codes with the core loop (best.pt by held-out loss)
3. sample class-conditional codes with the KV cache and decode them through
   the codebook and the VAE decoder into a PNG grid (one row per digit).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from .cli import compose
from .config import TokenizerConfig, from_dict
from .core import GPT, CodeSequenceDataset, GPTConfig, TokenLayout, TrainConfig, fit, load_model
from .core.codebook import load_codebook_file
from .core.decode import decode_codes_to_images
from .core.io import save_json, save_npy
from .core.loop import GPTObjective, IndexBatches
from .core.sampling import codes_from_sequences, generate_autoregressive
from .images import make_grid, save_png
from .tokenizer import run_tokenizer


def main(argv=None):
    p = argparse.ArgumentParser(description="MNIST sample → codes → GPT → generated digits.")
    p.add_argument("--out", default="experiments", help="output root")
    p.add_argument("--epochs", type=int, default=10, help="GPT epochs")
    p.add_argument("--samples", type=int, default=40)
    args = p.parse_args(argv)

    tok_cfg = from_dict(TokenizerConfig, compose("tokenizer/mnist_sample", [f"output_root={args.out}"]))
    tok = run_tokenizer(tok_cfg, config_name="tokenizer/mnist_sample")
    cb_dir = tok["codebook_dir"]
    codebook = load_codebook_file(os.path.join(cb_dir, "codebook.pt"))
    layout = TokenLayout(codebook["z_medoid"].shape[0], int(codebook["config"]["num_classes"]))
    grid = tuple(codebook["config"]["grid"])
    train_ds = CodeSequenceDataset(os.path.join(cb_dir, "codes.npy"), os.path.join(cb_dir, "labels.npy"), layout)
    val_ds = CodeSequenceDataset(os.path.join(cb_dir, "val_codes.npy"), os.path.join(cb_dir, "val_labels.npy"),
                                 layout)

    torch.manual_seed(0)
    seq_len = layout.sequence_length(grid[0] * grid[1]) - 1
    model = GPT(GPTConfig(vocab_size=layout.vocab_size, seq_len=seq_len, embed_dim=256, num_layers=4,
                          num_heads=8, dropout=0.1))
    cfg = TrainConfig(batch_size=64, lr=1e-3, epochs=args.epochs, warmup_steps=50, log_every=50)
    batches = IndexBatches(train_ds.tensors, cfg.batch_size, seed=cfg.seed)
    val_batches = IndexBatches(val_ds.tensors, 250, shuffle=False, drop_last=False)

    def report(metrics, step):
        if "val/loss" in metrics:
            print(f"gpt epoch {metrics['epoch']:.0f} step {step}: val loss {metrics['val/loss']:.4f} "
                  f"({metrics['val/bits_per_token']:.3f} bits/token)", flush=True)

    out = os.path.join(args.out, "transformer", "demo")
    ckpt_dir = os.path.join(out, "checkpoints")
    t0 = time.perf_counter()
    final = fit(model, GPTObjective(layout, cfg.class_dropout), batches, len(batches), lambda: val_batches(),
                cfg, checkpoint_dir=ckpt_dir, grid_shape=grid, callback=report)
    print(f"gpt trained in {time.perf_counter() - t0:.0f} s; best val {final['best_val_loss'] / np.log(2):.3f} "
          "bits/token")

    best, _, _ = load_model(os.path.join(ckpt_dir, "best.pt"))
    labels = torch.arange(args.samples) % layout.num_classes
    seqs = generate_autoregressive(best, layout, grid[0] * grid[1], class_labels=labels, temperature=1.0,
                                   top_k=64, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    codes = codes_from_sequences(seqs, layout)
    images = decode_codes_to_images(codes, codebook, tok["vae_checkpoint"])
    order = torch.argsort(labels, stable=True)  # one row per class
    save_npy(codes.numpy().astype(np.int32), os.path.join(out, "samples_codes.npy"))
    save_png(make_grid(images[order].numpy(), columns=args.samples // layout.num_classes),
             os.path.join(out, "samples_grid.png"))
    save_json(final, os.path.join(out, "metrics.json"))
    print(f"\ncheckpoint:    {ckpt_dir}/best.pt\ncodebook:      {cb_dir}/codebook.pt\n"
          f"sampled codes: {out}/samples_codes.npy\nimage grid:    {out}/samples_grid.png")


if __name__ == "__main__":
    main()
