"""Training tokens per second: the platform's GPT + core loop (default precision)
against a plain fp32 `nn.TransformerEncoder` GPT of the same size, side by side.

Both: 4 layers, width 256, 8 heads, 51-token inputs (a 7×7 grid with
[class][BOS]…[EOS]), batch 32, AdamW, gradient clipping. Rounds alternate
between the two so machine noise hits both alike; the median round counts.

    python bench/train_step.py [--steps 30] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from machine import machine_line, save

from arplatform import GPT, GPTConfig, OptimConfig, TokenLayout
from arplatform.core.loop import GPTObjective, fit, probe_key, training_probe
from arplatform.core.precision import choose_precision

WIDTH, LAYERS, HEADS, TOKENS, BATCH = 256, 4, 8, 51, 32


class ReferenceGPT(nn.Module):
    """The straightforward baseline: learned positions + nn.TransformerEncoder, fp32."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, WIDTH)
        self.pos = nn.Parameter(torch.zeros(TOKENS, WIDTH))
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, vocab_size, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(TOKENS))

    def forward(self, idx):
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        return self.head(self.norm(self.encoder(x, mask=self.mask, is_causal=True)))


def reference_seconds(model, batches, steps) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for i in range(steps):
        batch = batches[i % len(batches)]
        logits = model(batch["input_ids"])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def core_seconds(model, layout, batches, steps, precision="auto") -> float:
    cfg = OptimConfig(batch_size=BATCH, epochs=1, warmup_steps=5, log_every=10_000, precision=precision)
    t0 = time.perf_counter()
    fit(model, GPTObjective(layout, cfg.class_dropout), lambda epoch, skip: iter(batches[skip:]), steps, None, cfg)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    layout = TokenLayout(num_codes=256, num_classes=10)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        x = torch.randint(0, 256, (BATCH, TOKENS + 1), generator=g)
        batches.append({"input_ids": x[:, :-1], "labels": x[:, 1:]})
    cfg = GPTConfig(vocab_size=layout.vocab_size, seq_len=TOKENS, embed_dim=WIDTH, num_layers=LAYERS, num_heads=HEADS)
    core = GPT(cfg)
    ref = ReferenceGPT(layout.vocab_size)
    objective = GPTObjective(layout)
    choice = choose_precision("auto", "cpu", training_probe(core, objective, "cpu"), probe_key(objective, core))
    print(machine_line())
    print(f"precision auto → {choice}")
    contenders = {"auto": lambda: core_seconds(core, layout, batches, args.steps),
                  "fp32": lambda: core_seconds(core, layout, batches, args.steps, "fp32"),
                  "reference": lambda: reference_seconds(ref, batches, args.steps)}
    core_seconds(core, layout, batches[:3], 3)  # warm-up
    reference_seconds(ref, batches[:3], 3)
    times = {k: [] for k in contenders}
    for _ in range(args.rounds):  # alternating, so drift hits every contender alike
        for k, run in contenders.items():
            times[k].append(run())
    tokens = args.steps * BATCH * TOKENS
    tps = {k: tokens / statistics.median(v) for k, v in times.items()}
    print(f"{LAYERS} layers × width {WIDTH}, {TOKENS} tokens, batch {BATCH}, {args.steps} steps × "
          f"{args.rounds} rounds, {args.threads} threads (median)")
    print(f"core GPT + loop, precision auto ({choice.precision}): {tps['auto']:10.0f} tokens/s")
    print(f"core GPT + loop, fp32 forced:          {tps['fp32']:10.0f} tokens/s")
    print(f"nn.TransformerEncoder GPT (fp32):      {tps['reference']:10.0f} tokens/s")
    print(f"ratio auto / reference: {tps['auto'] / tps['reference']:.2f}×, fp32 core / reference: "
          f"{tps['fp32'] / tps['reference']:.2f}×, auto / fp32 core: {tps['auto'] / tps['fp32']:.2f}×")
    print(f"saved {save('train_step', {'tokens_per_s': tps, 'precision_auto': str(choice)})}")


if __name__ == "__main__":
    main()
