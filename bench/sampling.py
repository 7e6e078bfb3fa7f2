"""Images per second of `generate_autoregressive`: KV cache vs re-running the window every step.

The no-cache path is the seed's sampler: each step runs the model over the
whole context again. Same model, same batch, measured side by side.

    python bench/sampling.py [--batch 32] [--repeats 3] [--threads 2] [--bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import machine_line, save

from arplatform import GPT, GPTConfig, TokenLayout, generate_autoregressive


def seconds(model, layout, positions, batch, use_cache, precision="fp32", seed=0) -> float:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(batch) % layout.num_classes
    t0 = time.perf_counter()
    generate_autoregressive(model, layout, positions, class_labels=labels, generator=g, use_cache=use_cache,
                            precision=precision)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--positions", type=int, nargs="+", default=[49, 64, 256])
    p.add_argument("--bf16", action="store_true", help="also time the KV-cache sampler under bf16 autocast")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    layout = TokenLayout(num_codes=256, num_classes=10)
    print(f"GPT 4 layers × width 256, batch {args.batch}, {args.threads} threads, median of {args.repeats} "
          "alternating rounds")
    print(f"{'codes':>6} {'tokens':>6} {'cached img/s':>13} {'no-cache img/s':>15} {'ratio':>7}"
          + (f" {'bf16 cached img/s':>18}" if args.bf16 else ""))
    figures = []
    for positions in args.positions:
        torch.manual_seed(0)
        cfg = GPTConfig(vocab_size=layout.vocab_size, seq_len=layout.sequence_length(positions),
                        embed_dim=256, num_layers=4, num_heads=8)
        model = GPT(cfg).eval()
        kinds = [("cached", True, "fp32"), ("plain", False, "fp32")] + ([("bf16", True, "bf16")] if args.bf16 else [])
        for _, cache, prec in kinds:  # warm-up
            seconds(model, layout, min(positions, 8), args.batch, cache, prec)
        times = {k: [] for k, _, _ in kinds}
        for r in range(args.repeats):  # rounds alternate, so drift hits every contender alike
            for k, cache, prec in kinds:
                times[k].append(seconds(model, layout, positions, args.batch, cache, prec, seed=r))
        ips = {k: args.batch / statistics.median(v) for k, v in times.items()}
        tokens = layout.sequence_length(positions)
        print(f"{positions:>6} {tokens:>6} {ips['cached']:>13.1f} {ips['plain']:>15.1f} "
              f"{ips['cached'] / ips['plain']:>6.1f}×" + (f" {ips['bf16']:>18.1f}" if args.bf16 else ""))
        figures.append({"codes": positions, "images_per_s": ips, "ratio": ips["cached"] / ips["plain"]})
    print(f"saved {save('sampling', {'batch': args.batch, 'rows': figures})}")


if __name__ == "__main__":
    main()
