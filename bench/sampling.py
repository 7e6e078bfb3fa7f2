"""Images per second of `generate_autoregressive`: KV cache vs re-running the window every step.

The no-cache path is the seed's sampler: each step runs the model over the
whole context again. Same model, same batch, measured side by side.

    python bench/sampling.py [--batch 32] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from arplatform import GPT, GPTConfig, TokenLayout, generate_autoregressive


def images_per_second(model, layout, positions, batch, use_cache, repeats) -> float:
    times = []
    for r in range(repeats):
        g = torch.Generator().manual_seed(r)
        labels = torch.arange(batch) % layout.num_classes
        t0 = time.perf_counter()
        generate_autoregressive(model, layout, positions, class_labels=labels, generator=g, use_cache=use_cache)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--positions", type=int, nargs="+", default=[49, 64, 256])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    layout = TokenLayout(num_codes=256, num_classes=10)
    print(f"GPT 4 layers × width 256, batch {args.batch}, fp32, {args.threads} threads, median of {args.repeats}")
    print(f"{'codes':>6} {'tokens':>6} {'cached img/s':>13} {'no-cache img/s':>15} {'ratio':>7}")
    for positions in args.positions:
        torch.manual_seed(0)
        cfg = GPTConfig(vocab_size=layout.vocab_size, seq_len=layout.sequence_length(positions),
                        embed_dim=256, num_layers=4, num_heads=8)
        model = GPT(cfg).eval()
        images_per_second(model, layout, positions, args.batch, True, 1)  # warm-up
        cached = images_per_second(model, layout, positions, args.batch, True, args.repeats)
        plain = images_per_second(model, layout, positions, args.batch, False, args.repeats)
        tokens = layout.sequence_length(positions)
        print(f"{positions:>6} {tokens:>6} {cached:>13.1f} {plain:>15.1f} {cached / plain:>6.1f}×")


if __name__ == "__main__":
    main()
