"""Model checkpoints (`best.pt`, `last.pt`): save atomically, load with weights_only=True.

Format (a dict, version FORMAT_VERSION):
    format_version, kind ("gpt" | "vae" | "vq"), model_config, grid_shape, train_config,
    step, epoch, metrics, model_state_dict; a GPT's adds its token layout
    last.pt adds: optimizer_state_dict, rng_state (torch CPU, and CUDA when used), and in a run
    of several processes rank_rng_states (each rank's)
The learning-rate schedule is a pure function of `step`, so it needs no state.
"""

from __future__ import annotations

import os

import torch

from .errors import CheckpointError
from .io import load_torch, save_torch
from .model import GPT, GPTConfig
from .tokens import TokenLayout

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "kind", "model_config", "model_state_dict")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (`.module`) or torch.compile (`._orig_mod`)."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore `rng_state()`; the states must be CPU byte tensors whatever map_location loaded them to."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(
    path,
    model: torch.nn.Module,
    layout: TokenLayout | None = None,
    *,
    kind: str = "gpt",
    grid_shape=None,
    train_config: dict | None = None,
    step: int = 0,
    epoch: int = 0,
    metrics: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    with_rng: bool = False,
    model_state: dict | None = None,
    optimizer_state: dict | None = None,
    rank_rng_states: list | None = None,
    average_state: dict | None = None,
) -> str:
    """`model_state`/`optimizer_state`: the states to save (a sharded model's, `loop.full_state`),
    else the model's own. `rank_rng_states`: every rank's RNG, so each resumes its own dropout
    stream. `average_state`: the weight average, kept in a last.pt to resume it."""
    model = unwrap_model(model)
    if kind == "gpt" and layout is None:
        raise ValueError("a GPT checkpoint needs its TokenLayout")
    ckpt = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model_config": model.config.to_dict(),
        "grid_shape": list(grid_shape) if grid_shape is not None else None,
        "train_config": dict(train_config or {}),
        "step": int(step),
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "model_state_dict": model_state if model_state is not None else model.state_dict(),
    }
    if layout is not None:
        ckpt["layout"] = layout.to_dict()
    if optimizer_state is not None or optimizer is not None:
        ckpt["optimizer_state_dict"] = optimizer_state if optimizer_state is not None else optimizer.state_dict()
    if with_rng:
        ckpt["rng_state"] = rng_state()
    if rank_rng_states is not None:
        ckpt["rank_rng_states"] = rank_rng_states
    if average_state is not None:
        ckpt["ema_state_dict"] = average_state
    return save_torch(path, ckpt)


def load_checkpoint(
    path, map_location="cpu", expected_layout: TokenLayout | None = None, kind: str | tuple = "gpt"
) -> dict:
    """Read and check a checkpoint of `kind` (or of one of several kinds); never unpickles anything
    but tensors and plain data."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    ckpt = load_torch(path, CheckpointError, map_location=map_location)
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    required = REQUIRED_KEYS + (("layout",) if kinds == ("gpt",) else ())
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in required):
        raise CheckpointError(f"{path}: not a {' or '.join(kinds)} checkpoint (it lacks one of {required})")
    if ckpt["kind"] not in kinds:
        raise CheckpointError(f"{path}: a {ckpt['kind']!r} checkpoint, expected a {' or '.join(map(repr, kinds))} "
                              "checkpoint")
    check_fields(ckpt, path, ckpt["kind"])
    if ckpt["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {ckpt['format_version']} is newer than this code's {FORMAT_VERSION}"
        )
    if expected_layout is None:
        return ckpt
    layout = TokenLayout.from_dict(ckpt["layout"])
    if layout != expected_layout:
        raise CheckpointError(
            f"{path}: token layout {layout} does not match the data's {expected_layout} "
            "(another codebook size or class count)"
        )
    return ckpt


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_fields(ckpt: dict, path: str, kind: str) -> None:
    """The plain-data fields have the types the loaders rely on; anything else is a CheckpointError."""
    problems = []
    if not _is_int(ckpt["format_version"]) or ckpt["format_version"] < 1:
        problems.append("format_version is not a positive int")
    if not isinstance(ckpt["model_config"], dict) or not isinstance(ckpt["model_state_dict"], dict):
        problems.append("model_config / model_state_dict are not dicts")
    for key in ("step", "epoch"):
        if key in ckpt and (not _is_int(ckpt[key]) or ckpt[key] < 0):
            problems.append(f"{key} is not a non-negative int")
    if not isinstance(ckpt.get("metrics", {}), dict):
        problems.append("metrics is not a dict")
    grid = ckpt.get("grid_shape")
    if grid is not None and (not isinstance(grid, (list, tuple)) or len(grid) != 2
                             or not all(_is_int(g) and g > 0 for g in grid)):
        problems.append("grid_shape is not two positive ints")
    if kind == "gpt":
        layout = ckpt["layout"]
        try:
            if not isinstance(layout, dict) or not all(_is_int(layout.get(k)) for k in ("num_codes", "num_classes")):
                raise ValueError("num_codes and num_classes must be ints")
            TokenLayout.from_dict(layout)
        except (ValueError, TypeError) as e:
            problems.append(f"layout is invalid ({e})")
    if problems:
        raise CheckpointError(f"{path}: malformed {kind} checkpoint: {'; '.join(problems)}")


def model_from_checkpoint(ckpt: dict, path: str = "<checkpoint>") -> tuple[GPT, TokenLayout]:
    """Rebuild the GPT and its layout; a config/weights mismatch is a CheckpointError."""
    try:
        cfg = GPTConfig(**ckpt["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config ({e})") from e
    layout = TokenLayout.from_dict(ckpt["layout"])
    if cfg.vocab_size != layout.vocab_size:
        raise CheckpointError(
            f"{path}: model vocab_size {cfg.vocab_size} != layout vocab_size {layout.vocab_size}"
        )
    model = GPT(cfg)
    try:
        model.load_state_dict(ckpt["model_state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match the model config ({first})") from e
    return model, layout


def load_model(path, map_location="cpu", expected_layout: TokenLayout | None = None):
    """Convenience: `load_checkpoint` + `model_from_checkpoint` → (model, layout, ckpt)."""
    ckpt = load_checkpoint(path, map_location, expected_layout)
    model, layout = model_from_checkpoint(ckpt, os.fspath(path))
    return model.to(map_location), layout, ckpt
