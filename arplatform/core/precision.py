"""`precision: auto` by measurement: bf16 only where it is measured faster than fp32.

A CPU flag says bf16 instructions exist, not that bf16 is faster (a Xeon without AMX: 82
GFLOP/s in bf16, 95 in fp32). So on such a CPU `auto` times a probe of the work at hand in
both precisions, interleaved in alternating rounds (a busy machine makes a probe lie), judges
by the median, probes again when rounds disagree, and caches an agreed verdict per machine,
torch, thread count and key for `CACHE_DAYS` (`python -m arplatform.core.precision clear`
forgets them; ARPLATFORM_PRECISION_REPROBE=1 probes once more). CUDA: bf16 where supported.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
MIN_SPEEDUP = 1.05  # bf16 must beat fp32 by 5 %: less is within the noise of a short probe
ROUNDS = 5  # timed rounds of a probe (and as many again when they disagree)
MAX_SPREAD = 1.5  # rounds whose fastest and slowest ratio differ more than this disagree
CACHE_DAYS = 30  # a cached verdict older than this is measured again


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


def measure_speedup(probe: Callable[[str], None], rounds: int = ROUNDS, timer: Callable[[], float] = time.perf_counter,
                    warm_up: bool = True) -> list[float]:
    """fp32 time / bf16 time of `probe(precision)`, one ratio per round; the two run back to back
    in each round, in alternating order, so a burst of other work hits both or moves between rounds."""
    if warm_up:
        for p in ("fp32", "bf16"):
            probe(p)  # first calls pay for allocation and kernel selection
    ratios = []
    for i in range(rounds):
        took = {}
        for p in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            t0 = timer()
            probe(p)
            took[p] = max(timer() - t0, 1e-12)
        ratios.append(took["fp32"] / took["bf16"])
    return ratios


def rounds_agree(ratios: list[float]) -> bool:
    """All rounds on one side of MIN_SPEEDUP, and within MAX_SPREAD of each other."""
    one_side = all(r >= MIN_SPEEDUP for r in ratios) or all(r < MIN_SPEEDUP for r in ratios)
    return one_side and max(ratios) / min(ratios) <= MAX_SPREAD


def median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def probe_speedup(probe: Callable[[str], None], timer: Callable[[], float] = time.perf_counter) -> tuple[float, bool]:
    """(bf16 speedup: the median round, whether the rounds agreed), probing again once when not."""
    ratios = measure_speedup(probe, timer=timer)
    if not rounds_agree(ratios):
        ratios += measure_speedup(probe, timer=timer, warm_up=False)
    return median(ratios), rounds_agree(ratios)


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


def clear_cache() -> None:
    """Forget every cached verdict: the next `auto` run measures again."""
    try:
        os.remove(_cache_file())
    except FileNotFoundError:
        pass


def _cached_speedup(key: str) -> float | None:
    """The cached verdict for `key`, unless it is older than CACHE_DAYS or a re-probe is asked."""
    if os.environ.get("ARPLATFORM_PRECISION_REPROBE") == "1":
        return None
    entry = _read_cache().get(key, {})
    speedup, measured_at = entry.get("bf16_speedup"), entry.get("measured_at")
    if not isinstance(speedup, (int, float)) or not isinstance(measured_at, (int, float)):
        return None  # (an entry of an older version has no date: measured again)
    return float(speedup) if time.time() - measured_at < CACHE_DAYS * 86400 else None


def _read_cache() -> dict:
    try:
        with open(_cache_file(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextmanager
def _cache_locked():
    """The cache's read-modify-write under a flock: two runs probing at once keep both verdicts."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    os.makedirs(cache_dir(), exist_ok=True)
    with open(_cache_file() + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_cache(key: str, speedup: float) -> None:
    from .io import save_json

    try:
        with _cache_locked():
            data = _read_cache()
            data[key] = {"bf16_speedup": speedup, "cpu": cpu_description()[0], "torch": torch.__version__,
                         "measured_at": time.time()}
            save_json(_cache_file(), data)
    except OSError:  # a read-only home: measure again next time, never fail a run over a cache
        pass


def choose_precision(requested: str, device: torch.device | str, probe: Callable[[str], None] | None = None,
                     key: str = "", timer: Callable[[], float] = time.perf_counter) -> PrecisionChoice:
    """The precision to run: an explicit fp32/bf16 is always obeyed; `auto` is decided as the module says
    (`timer`: the clock the probe is timed with)."""
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
    speedup = _cached_speedup(cache_key)
    how = "cached"
    if speedup is None:
        speedup, agreed = probe_speedup(probe, timer)
        how = "measured" if agreed else "measured; the rounds disagreed, so not cached"
        if agreed:
            _write_cache(cache_key, speedup)
    choice = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    return PrecisionChoice(choice, f"bf16 {speedup:.2f}× fp32 on this CPU ({how})")


if __name__ == "__main__":  # python -m arplatform.core.precision clear
    import sys

    if sys.argv[1:] != ["clear"]:
        sys.exit("usage: python -m arplatform.core.precision clear   (forget the cached precision verdicts)")
    clear_cache()
    print(f"cleared {_cache_file()}")
