"""Guidance schedules on trained checkpoints, over sample seeds: class accuracy and Fréchet ratio.

Each draw is what `arplatform generate` draws (500 balanced samples, sample i from its own stream
(seed, i), fp32, every other key the checkpoint's own: `jobs.sampling.checkpoint_sampling`), scored
by the platform's own evaluation; guidance per code comes from the schedule named, by replacing
`core.sampling.guidance_at` for the draw. The tables in docs/generate.md ("a guidance schedule",
"top-k and temperature together") come from here, on the checkpoints of a `quality.py` run:

    cd bench && ../.venv/bin/python guidance.py <quality.py's --out folder> [--seeds 0 1 2]

  constant:s         s at every code (the platform's cfg_schedule=constant)
  linear:a:b         a at the first code to b at the last (cfg_schedule=linear is 1:cfg_scale)
  interval:s:k       s on the first k codes, then none
each optionally @t (temperature; default the checkpoint's own), and /k<n> (top-k; k0 = off) and
/p<x> (top-p) after it, e.g. linear:1:2.6@0.85 constant:1.8@0.9 linear:1:2.6@0.95/k128 linear:1:2.6/k0/p0.95
"""

from __future__ import annotations

import argparse
import glob
import statistics

import numpy as np
import torch
from machine import machine_line

import arplatform.core.sampling as sampling
from arplatform.config import check_sampling
from arplatform.core.checkpoint import load_model
from arplatform.core.codebook import load_codebook_file
from arplatform.core.decode import decode_codes_to_images
from arplatform.core.vae import load_vae
from arplatform.data.images import to_uint8
from arplatform.jobs.real_images import real_data
from arplatform.jobs.sample_quality import classifier_dir, evaluate_images, load_or_train_classifier
from arplatform.jobs.sampling import checkpoint_sampling
from arplatform.outputs.publish import codebook_vae_path

N = 500


def parse(spec: str):
    """'linear:1:2.6@0.85/k128' → (guidance of (step, positions), the sampling keys it sets)."""
    shape, *truncation = spec.split("/")
    shape, _, temperature = shape.partition("@")
    kind, *p = shape.split(":")
    p = [float(x) for x in p]
    by_kind = {"constant": lambda t, n: p[0],
               "linear": lambda t, n: p[0] + (p[1] - p[0]) * t / max(1, n - 1),
               "interval": lambda t, n: p[0] if t < p[1] else 1.0}
    keys = {"temperature": float(temperature)} if temperature else {}
    for part in truncation:
        if part[:1] == "k":
            keys["top_k"] = int(part[1:]) or None
        elif part[:1] == "p":
            keys["top_p"] = float(part[1:])
        else:
            raise SystemExit(f"{spec}: /{part} is not /k<top-k> or /p<top-p>")
    return by_kind[kind], check_sampling(keys, spec)  # the ranges a `sample:` section allows


def draw(model, layout, codebook, vae, positions: int, guidance, settings: dict, seed: int) -> np.ndarray:
    """500 samples with `settings` (top-k, top-p, temperature), guidance per code from `guidance`."""
    sampling.guidance_at = lambda step, n, scale, schedule: guidance(step, n)
    idx = np.arange(N)
    seqs = sampling.generate_autoregressive(
        model, layout, positions, num_samples=N, class_labels=torch.from_numpy(idx % layout.num_classes),
        temperature=settings["temperature"], top_k=settings["top_k"], top_p=settings["top_p"],
        cfg_scale=2.0, precision="fp32", sample_keys=sampling.sample_keys(seed, idx))
    codes = sampling.codes_from_sequences(seqs, layout).numpy()
    images = to_uint8(decode_codes_to_images(codes, codebook, vae).numpy())
    return (images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", help="a quality.py output folder (its checkpoints are drawn)")
    ap.add_argument("schedules", nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sample seeds")
    args = ap.parse_args()
    print(machine_line())
    results = {s: [] for s in args.schedules}
    judges = {}  # codebook.pt → (codebook, VAE, real data, classifier): the runs of one quality.py share one
    for ckpt in sorted(glob.glob(f"{args.root}/transformer/*/runs/*/checkpoints/best.pt")):
        model, layout, saved = load_model(ckpt)
        codebook_pt = saved["train_config"]["codebook_pt"]
        if codebook_pt not in judges:
            codebook = load_codebook_file(codebook_pt)
            real, tok_cfg, _ = real_data(codebook_pt, N, log=lambda *a: None)
            classifier, _ = load_or_train_classifier(classifier_dir(args.root, tok_cfg.data), real,
                                                     log=lambda *a: None)
            judges[codebook_pt] = codebook, load_vae(codebook_vae_path(codebook_pt, codebook)), real, classifier
        codebook, vae, real, classifier = judges[codebook_pt]
        own = checkpoint_sampling(ckpt)  # what generate would draw this checkpoint with
        positions = int(np.prod(saved["grid_shape"]))
        labels = np.arange(N) % layout.num_classes
        for spec in args.schedules:
            guidance, keys = parse(spec)
            settings = own | keys
            for seed in args.seeds:
                r = evaluate_images(draw(model, layout, codebook, vae, positions, guidance, settings, seed),
                                    labels, real, classifier)
                results[spec].append((r["accuracy"], r["frechet"]["samples_over_reconstructions"]))
                print(f"{ckpt.split('/')[-3]} {spec} seed {seed}: accuracy {r['accuracy']:.3f}, "
                      f"ratio {results[spec][-1][1]:.3f}", flush=True)
    print("| guidance (temperature) | draws | class accuracy | Fréchet / reconstructions' (range) |")
    print("|---|---:|---:|---:|")
    for spec, rows in results.items():
        acc, ratio = [a for a, _ in rows], [f for _, f in rows]
        print(f"| {spec} | {len(rows)} | {statistics.mean(acc):.3f} | {statistics.mean(ratio):.2f}× "
              f"({min(ratio):.2f}–{max(ratio):.2f}) |")


if __name__ == "__main__":
    main()
