"""Where a benchmark ran: printed at the top of its output and saved beside its figures.

    from machine import report
    out = report("train_step", figures)   # prints nothing; writes bench/results/train_step.json
"""

from __future__ import annotations

import json
import os
import platform
import time

import torch

from arplatform.core.precision import cpu_description

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> dict:
    model, bf16_flags = cpu_description()
    flags = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        pass
    return {
        "cpu": model, "cores": os.cpu_count(), "machine": platform.machine(),
        "flags": sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_ne_convert")
                        if f in flags) or sorted(bf16_flags),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_line() -> str:
    m = machine()
    gpu = f", GPU {m['cuda']}" if m["cuda"] else ""
    return (f"machine: {m['cpu']} ({m['cores']} cores, {' '.join(m['flags']) or 'no AVX2+'}), "
            f"torch {m['torch']}, {m['torch_threads']} threads{gpu}")


def save(name: str, figures: dict) -> str:
    """Write {machine, figures, command time} to bench/results/<name>.json; returns the path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"machine": machine(), "figures": figures, "time": time.strftime("%Y-%m-%d %H:%M:%S")}, f,
                  indent=2)
        f.write("\n")
    return path


if __name__ == "__main__":
    print(machine_line())
