"""Training throughput and MFU of a named model size: tokens/s of the core loop's training step
with the GPU defaults (bf16 autocast, torch.compile of the forward, fused AdamW) and
MFU = training FLOPs per token × tokens/s ÷ the GPU's bf16 dense peak (`PEAK_BF16_TFLOPS`,
by the name CUDA reports; another GPU prints its name and MFU n/a).

Synthetic sequences of `--codes` codes over a K=16,384 codebook with 1,000 classes (a
LlamaGen-like 16×16 grid by default), random tokens: the step's cost does not depend on them.

    python bench/mfu.py --model B [--batch 32] [--codes 256] [--steps 20] [--no-compile]
    python bench/mfu.py --model tiny --device cpu --batch 4 --codes 16   # the code path on a CPU
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import machine_line, save

from arplatform import TokenLayout
from arplatform.config import ModelConfig
from arplatform.core.loop import GPTObjective, OptimConfig, checkpoint_activations, make_optimizer
from arplatform.core.model import GPT, parameter_count, training_flops_per_token

# dense bf16 peaks (no sparsity), TFLOP/s, from the vendors' data sheets (SXM parts)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="B", help="a preset: tiny | small | B | L | XL")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--codes", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block's activations in the backward (model.activation_checkpointing)")
    args = p.parse_args()
    device = torch.device(args.device)
    print(machine_line())
    layout = TokenLayout(16384, 1000)
    context = layout.sequence_length(args.codes) - 1
    cfg = ModelConfig(preset=args.model, dropout=0.0).gpt_config(layout.vocab_size, context)
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    if args.activation_checkpointing:
        checkpoint_activations(model)
    step_model = model if args.no_compile else torch.compile(model)
    optimizer = make_optimizer(model, OptimConfig(lr=1e-4))
    objective = GPTObjective(layout, 0.1)
    precision = "bf16" if device.type == "cuda" else "fp32"
    tokens = torch.randint(0, 16384, (args.batch, cfg.seq_len + 1), device=device)
    batch = {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:]}

    def step():
        loss, count = objective.loss(step_model, batch, precision, device, train=True)
        (loss / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(3):  # compile and warm up
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens_per_s = args.batch * cfg.seq_len * args.steps / seconds
    flops = training_flops_per_token(cfg)
    name, peak = peak_tflops(device)
    mfu = flops * tokens_per_s / (peak * 1e12) if peak else None
    print(f"model {args.model}: {parameter_count(cfg) / 1e6:.1f} M parameters, {flops / 1e9:.2f} GFLOPs per "
          f"training token, context {cfg.seq_len}, batch {args.batch}, {'eager' if args.no_compile else 'compiled'}, "
          f"{precision}{', activation checkpointing' if args.activation_checkpointing else ''}")
    print(f"{name}: {tokens_per_s:,.0f} tokens/s, MFU {f'{mfu:.1%}' if mfu is not None else 'n/a (peak unknown)'} "
          f"(warm-up and compile {warmup:.1f} s)")
    save(f"mfu_{args.model}{'_ac' if args.activation_checkpointing else ''}",
         {"device": name, "peak_bf16_tflops": peak, "tokens_per_s": tokens_per_s, "mfu": mfu, "batch": args.batch,
          "codes": args.codes, "compiled": not args.no_compile,
          "activation_checkpointing": args.activation_checkpointing})


if __name__ == "__main__":
    main()
