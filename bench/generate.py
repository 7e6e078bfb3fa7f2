"""Generation throughput on a trained checkpoint (run `python3 tasks.py demo` first):

1. the `generate` command's engines, side by side on the same checkpoint, settings and
   number of images: the local engine (this process, all cores) against Ray Data with 1
   actor (all cores) and with 2 actors (half each); images/s from the call to its return
   (model loading, sampling, VAE decoding, PNGs, samples.npz), the Ray cluster already up;
2. the sampler alone (codes, no decoding) at batch 64: KV cache in fp32 and in bf16
   against re-running the whole window every step (fp32).

    python bench/generate.py [--checkpoint experiments/transformer/mnist_sample/checkpoints/best.pt]
                             [--num_samples 2048] [--batch_size 64]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch
from machine import machine_line, save

from arplatform.config import GenerateConfig, SampleConfig, from_dict
from arplatform.core.checkpoint import load_model
from arplatform.core.sampling import generate_autoregressive, sample_keys
from arplatform.stages.generate import run_generate


def engine_rate(checkpoint: str, out: str, n: int, batch: int, **engine) -> float:
    cfg = from_dict(GenerateConfig, {"transformer_ckpt": checkpoint, "num_samples": n, "batch_size": batch,
                                     "out": out, "sample": {"precision": "fp32"}, **engine})
    t0 = time.perf_counter()
    run_generate(cfg, log=lambda *a: None)
    return n / (time.perf_counter() - t0)


def sampler_rate(checkpoint: str, batch: int, precision: str, use_cache: bool) -> float:
    model, layout, ckpt = load_model(checkpoint)
    s = SampleConfig()
    labels = torch.arange(batch) % layout.num_classes
    kwargs = dict(class_labels=labels, temperature=s.temperature, top_k=s.top_k, cfg_scale=s.cfg_scale,
                  precision=precision, use_cache=use_cache, sample_keys=sample_keys(0, range(batch)))
    positions = math.prod(ckpt["grid_shape"])
    generate_autoregressive(model, layout, 4, **kwargs)  # warm-up
    t0 = time.perf_counter()
    generate_autoregressive(model, layout, positions, **kwargs)
    return batch / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="experiments/transformer/mnist_sample/checkpoints/best.pt")
    p.add_argument("--num_samples", type=int, default=2048)
    p.add_argument("--batch_size", type=int, default=64)
    args = p.parse_args()
    from arplatform.distributed.cluster import init_ray

    cores = os.cpu_count() or 1
    figures = {}
    with tempfile.TemporaryDirectory() as root:
        ray = init_ray()
        try:
            n, b = args.num_samples, args.batch_size
            figures["local"] = engine_rate(args.checkpoint, f"{root}/local", n, b, engine="local")
            figures["ray_1_actor"] = engine_rate(args.checkpoint, f"{root}/ray1", n, b, engine="ray", actors=1,
                                                 cpus_per_actor=float(cores))
            figures["ray_2_actors"] = engine_rate(args.checkpoint, f"{root}/ray2", n, b, engine="ray", actors=2,
                                                  cpus_per_actor=cores / 2)
        finally:
            ray.shutdown()
    figures["sampler_fp32"] = sampler_rate(args.checkpoint, 64, "fp32", True)
    figures["sampler_bf16"] = sampler_rate(args.checkpoint, 64, "bf16", True)
    figures["sampler_recompute_fp32"] = sampler_rate(args.checkpoint, 64, "fp32", False)
    print(machine_line())
    print(f"checkpoint {args.checkpoint}; {args.num_samples} images, batch {args.batch_size}, fp32, {cores} cores")
    print(f"{'':34} {'images/s':>9} {'× local':>8}")
    for name in ("local", "ray_1_actor", "ray_2_actors"):
        label = "generate, " + name.replace("_", " ")
        print(f"{label:34} {figures[name]:9.1f} {figures[name] / figures['local']:7.2f}×")
    print(f"\nsampler alone, batch 64 (codes only){'':3} {'images/s':>9} {'× recompute':>12}")
    for name in ("sampler_fp32", "sampler_bf16", "sampler_recompute_fp32"):
        ratio = figures[name] / figures["sampler_recompute_fp32"]
        print(f"{name.replace('_', ' '):38} {figures[name]:9.1f} {ratio:11.1f}×")
    print(f"saved: {save('generate', figures)}")


if __name__ == "__main__":
    main()
