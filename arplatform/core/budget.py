"""What this machine and cluster hold, checked once before work starts.

`check_fits` is the one resource-budget check: work that can never be scheduled, or would
not fit in memory, is refused in one line that names the key, what it asks for and what
there is (training workers, sweep trials, generation actors, a local generation batch).
`resolve_device` is the one device resolver (tokenize, evaluate, every image sampler)."""

from __future__ import annotations

from .errors import ConfigError


def show(amount: float, resource: str) -> str:
    """4 CPUs, 1 GPUs, 3.2 GiB of memory."""
    if resource == "memory":
        size = f"{amount / 2**30:.1f} GiB" if amount >= 2**30 else f"{amount / 2**20:.0f} MiB"
        return f"{size} of memory"
    return f"{amount:g} {resource}s"


def check_fits(key: str, asked: str, need: float, have: float, resource: str, hint: str,
               where: str = "the cluster") -> None:
    """Refuse `need` of `resource` (CPU, GPU, memory bytes) over `have`:
    "<key>: <asked> = <need> but <where> has <have>; <hint>"."""
    if need > have + 1e-9:
        raise ConfigError(f"{key}: {asked} = {show(need, resource)} but {where} has {show(have, resource)}; {hint}")


def gets_gpus(use_gpu: str, cluster: dict) -> bool:
    """use_gpu=true, or auto on a cluster that has GPUs: one per worker or actor."""
    return use_gpu == "true" or (use_gpu == "auto" and cluster.get("GPU", 0) >= 1)


def available_memory_bytes() -> int | None:
    """MemAvailable of this machine, from /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resolve_device(device: str):
    """auto → CUDA when there is one, else CPU; an explicit device must exist here (a torch.device)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"device: {device!r} is not a torch device ({e})") from e
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device: {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                          "use device=auto or cpu")
    return dev
