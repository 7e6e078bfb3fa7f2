"""Images per second of `generate_autoregressive`: KV cache vs re-running the window every step.

The no-cache path is the seed's sampler: each step runs the model over the
whole context again. Same model, same batch, measured side by side.

    python bench/sampling.py [--batch 32] [--repeats 3] [--threads 2] [--bf16]
    python bench/sampling.py --compile            # also the compiled static-shape decode step
    python bench/sampling.py --device cuda --batch 256 --compile --bf16   # on a GPU (bench/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import machine_line, save

from arplatform import GPT, GPTConfig, TokenLayout, generate_autoregressive
from arplatform.core.sampling import Decoder

# contender → (KV cache, precision, compiled decode step)
CONTENDERS = {"cached": (True, "fp32", False), "plain": (False, "fp32", False), "bf16": (True, "bf16", False),
              "compiled": (True, "fp32", True), "compiled_bf16": (True, "bf16", True)}


DECODERS = {}  # one Decoder per (model, contender), kept across rounds as an ImageSampler keeps its own


def seconds(model, layout, positions, batch, contender, seed=0) -> float:
    use_cache, precision, compiled = CONTENDERS[contender]
    decoder = DECODERS.setdefault((id(model), contender), Decoder(model, "compiled" if compiled else "eager"))
    device = model.tok_emb.weight.device
    g = torch.Generator(device).manual_seed(seed)
    labels = torch.arange(batch, device=device) % layout.num_classes
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    generate_autoregressive(model, layout, positions, class_labels=labels, generator=g, use_cache=use_cache,
                            precision=precision, decoder=decoder if use_cache else None, top_k=None,
                            cfg_scale=1.0)  # plain sampling: the figures stay comparable
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--positions", type=int, nargs="+", default=[49, 64, 256])
    p.add_argument("--bf16", action="store_true", help="also time the KV-cache sampler under bf16 autocast")
    p.add_argument("--compile", action="store_true", help="also time the compiled static-shape decode step")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    layout = TokenLayout(num_codes=256, num_classes=10)
    kinds = ["cached", "plain"] + (["bf16"] if args.bf16 else []) + (["compiled"] if args.compile else []) \
        + (["compiled_bf16"] if args.compile and args.bf16 else [])
    print(f"GPT 4 layers × width 256, batch {args.batch}, device {args.device}, {args.threads} threads, "
          f"median of {args.repeats} alternating rounds; images/s, and × the no-cache (plain) sampler")
    print(f"{'codes':>6} {'tokens':>6} " + " ".join(f"{k:>14}" for k in kinds))
    figures = []
    for positions in args.positions:
        torch.manual_seed(0)
        cfg = GPTConfig(vocab_size=layout.vocab_size, seq_len=layout.sequence_length(positions),
                        embed_dim=256, num_layers=4, num_heads=8)
        model = GPT(cfg).to(args.device).eval()
        for k in kinds:  # warm-up (and the compile, at the full length: one graph per shape)
            seconds(model, layout, positions if k.startswith("compiled") else min(positions, 8), args.batch, k)
        times = {k: [] for k in kinds}
        for r in range(args.repeats):  # rounds alternate, so drift hits every contender alike
            for k in kinds:
                times[k].append(seconds(model, layout, positions, args.batch, k, seed=r))
        ips = {k: args.batch / statistics.median(v) for k, v in times.items()}
        tokens = layout.sequence_length(positions)
        print(f"{positions:>6} {tokens:>6} " + " ".join(f"{ips[k]:>7.1f} ({ips[k] / ips['plain']:>4.1f}×)"
                                                          for k in kinds))
        figures.append({"codes": positions, "images_per_s": ips, "ratio": ips["cached"] / ips["plain"],
                        "ratios": {k: ips[k] / ips["plain"] for k in kinds}})
    name = "sampling" if args.device == "cpu" else "sampling_" + args.device.split(":")[0]
    print(f"saved {save(name, {'batch': args.batch, 'device': args.device, 'rows': figures})}")


if __name__ == "__main__":
    main()
