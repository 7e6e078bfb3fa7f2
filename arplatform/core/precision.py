"""`precision: auto` by measurement: bf16 only where it is measured faster than fp32.

A CPU flag says bf16 *instructions* exist, not that bf16 is faster: on a 2-core Xeon
with AVX512-BF16 but no AMX a 1024² matmul ran at 82 GFLOP/s in bf16 against 95 in
fp32. So on a CPU with bf16 support, `auto` times a short probe of the work at hand
(the model's own forward/backward, or a decode step) in both precisions, picks the
faster, and caches the verdict per machine, torch version, thread count and probe key.
On CUDA, bf16 where the GPU supports it, without a probe.

    choice = choose_precision("auto", device, probe=lambda p: step(p), key="gpt:4x256")
    choice.precision   # "fp32"
    choice.reason      # "bf16 0.81× fp32 on this CPU (measured)"
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
MIN_SPEEDUP = 1.05  # bf16 must beat fp32 by 5 %: less is within the noise of a short probe


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "fp32" | "bf16"
    reason: str

    def __str__(self) -> str:
        return f"{self.precision} ({self.reason})"


@lru_cache(maxsize=1)
def cpu_description() -> tuple[str, tuple[str, ...]]:
    """(CPU model name, the bf16-related flags it has), from /proc/cpuinfo where there is one."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), tuple(f for f in BF16_FLAGS if f in flags)


def cpu_has_bf16() -> bool:
    return bool(cpu_description()[1])


def autocast(precision: str, device: torch.device | str):
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def measure_speedup(probe: Callable[[str], None], rounds: int = 3) -> float:
    """fp32 time / bf16 time of `probe(precision)`, warmed up, rounds alternating (min of each)."""
    for p in ("fp32", "bf16"):
        probe(p)  # warm-up: first calls pay for allocation and kernel selection
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(rounds):
        for p in ("fp32", "bf16"):
            t0 = time.perf_counter()
            probe(p)
            best[p] = min(best[p], time.perf_counter() - t0)
    return best["fp32"] / best["bf16"]


def cache_dir() -> str:
    """This machine's cache (precision verdicts, local copies of remote files):
    $ARPLATFORM_CACHE_DIR, else $XDG_CACHE_HOME/arplatform, else ~/.cache/arplatform."""
    return os.environ.get("ARPLATFORM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "arplatform")


def _cache_file() -> str:
    return os.path.join(cache_dir(), "precision.json")


def _cache_key(key: str) -> str:
    model, flags = cpu_description()
    raw = f"{model}|{','.join(flags)}|torch {torch.__version__}|threads {torch.get_num_threads()}|{key}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _read_cache() -> dict:
    try:
        with open(_cache_file(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, speedup: float) -> None:
    from .io import save_json

    data = _read_cache()
    data[key] = {"bf16_speedup": speedup, "cpu": cpu_description()[0], "torch": torch.__version__}
    try:
        save_json(data, _cache_file())
    except OSError:  # a read-only home: measure again next time, never fail a run over a cache
        pass


def choose_precision(requested: str, device: torch.device | str, probe: Callable[[str], None] | None = None,
                     key: str = "") -> PrecisionChoice:
    """The precision to run: an explicit fp32/bf16 is always obeyed; `auto` is decided as the module says."""
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return PrecisionChoice(requested, "set explicitly")
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return PrecisionChoice("bf16" if ok else "fp32", f"CUDA {'with' if ok else 'without'} bf16 support")
    if device.type != "cpu" or not cpu_has_bf16():
        return PrecisionChoice("fp32", "no bf16 instructions on this CPU")
    if probe is None:
        return PrecisionChoice("fp32", "bf16 instructions, but nothing to measure")
    cache_key = _cache_key(key)
    cached = _read_cache().get(cache_key, {}).get("bf16_speedup")
    speedup = cached if isinstance(cached, (int, float)) else measure_speedup(probe)
    if cached is None:
        _write_cache(cache_key, speedup)
    how = "cached" if cached is not None else "measured"
    choice = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    return PrecisionChoice(choice, f"bf16 {speedup:.2f}× fp32 on this CPU ({how})")
