"""One decode step's attention: the kernels `core.model.attend` chooses between, side by side.

A decode step asks for one new token's attention over the keys written so far
(batch × heads × 1 query against `keys` keys). This times, in alternating
rounds of one run:

- `attend`: `core.model.attend` itself, the function the model calls;
- `written`: the formula written out (softmax(q·kᵀ/√d)·v), what `attend` uses on CPU;
- `sdpa`: PyTorch's scaled_dot_product_attention, default kernel choice;
- `sdpa_mask`: the same under a (1, keys) boolean mask, as a masked cache read would;
- `sdpa_math`: SDPA's math kernel, forced;

and then a whole decode step of the model (`sampling.decode_one_token`, eager, the cache
filled to `keys`) in ms, so the kernel's share of a step is visible.

    python bench/attention.py [--batch 32] [--heads 8] [--head-dim 32] [--keys 67 259] [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from machine import machine_line, save
from torch.nn.attention import SDPBackend, sdpa_kernel

from arplatform import GPT, GPTConfig
from arplatform.core.model import attend
from arplatform.core.sampling import decode_one_token


def written(q, k, v, mask):
    return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1) @ v


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v)


def sdpa_mask(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sdpa_math(q, k, v, mask):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v)


KERNELS = {"attend": lambda q, k, v, mask: attend(q, k, v, None, False), "written": written, "sdpa": sdpa,
           "sdpa_mask": sdpa_mask, "sdpa_math": sdpa_math}


def microseconds(fn, *args, calls: int = 20) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - t0) / calls * 1e6


def kernel_times(batch, heads, head_dim, keys, repeats) -> dict:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, n, head_dim, generator=g) for n in (1, keys, keys))
    mask = torch.ones(1, keys, dtype=torch.bool)
    reference = written(q, k, v, mask)
    for fn in KERNELS.values():  # the same numbers from every kernel, or the race is void
        torch.testing.assert_close(fn(q, k, v, mask), reference, atol=1e-4, rtol=1e-4)
        microseconds(fn, q, k, v, mask)  # warm-up
    times = {name: [] for name in KERNELS}
    names = list(KERNELS)
    for r in range(repeats):  # rounds alternate, each starting at the next kernel: drift and order hit all alike
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(microseconds(KERNELS[name], q, k, v, mask))
    return {name: statistics.median(t) for name, t in times.items()}


@torch.no_grad()
def step_ms(batch, heads, head_dim, keys, repeats) -> float:
    """One eager decode step of a 4-layer GPT (width heads × head_dim) at position `keys - 1`."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=270, seq_len=keys, embed_dim=heads * head_dim, num_layers=4,
                          num_heads=heads)).eval()
    model.setup_cache(batch, torch.float32)
    token = torch.zeros(batch, 1, dtype=torch.long)
    position = torch.tensor([keys - 1])
    for _ in range(3):
        decode_one_token(model, token, position, keys)
    times = []
    for _ in range(max(5, repeats // 20)):
        t0 = time.perf_counter()
        decode_one_token(model, token, position, keys)
        times.append((time.perf_counter() - t0) * 1e3)
    model.clear_cache()
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--keys", type=int, nargs="+", default=[67, 259])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    print(f"one query against the cache: batch {args.batch}, {args.heads} heads × {args.head_dim}, fp32, "
          f"{args.threads} threads; median µs of {args.repeats} alternating rounds (× attend's time)")
    chosen = "attend"  # what the model runs: core.model.attend for one query without a mask
    print(f"{'keys':>5} " + " ".join(f"{name:>17}" for name in KERNELS) + f" {'decode step ms':>15}")
    rows = []
    for keys in args.keys:
        us = kernel_times(args.batch, args.heads, args.head_dim, keys, args.repeats)
        ms = step_ms(args.batch, args.heads, args.head_dim, keys, args.repeats)
        print(f"{keys:>5} " + " ".join(f"{us[n]:>9.0f} ({us[n] / us[chosen]:>4.2f}×)" for n in KERNELS)
              + f" {ms:>15.2f}")
        rows.append({"keys": keys, "microseconds": us, "decode_step_ms": ms})
    figures = {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "rows": rows}
    print(f"saved {save('attention', figures)}")


if __name__ == "__main__":
    main()
