"""Codebook fitting (k-means++, then Lloyd in torch over chunks: N×K distances never held at
once; empty clusters re-seeded far away; `medoid` snaps centres to real latents) and
`codebook.pt`: {z_medoid (K, D), config[, medoid_indices, stats]}, or a bare (K, D) tensor."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError
from .io import load_torch, save_torch

DEFAULT_CHUNK = 8192  # rows per distance block: 8192 × K floats stay cache-friendly (4× faster than 65536)


@dataclass
class KMeansResult:
    centres: torch.Tensor  # (K, D)
    distortion: float  # mean squared distance of a point to its centre
    iterations: int
    medoid_indices: torch.Tensor | None = None  # (K,) rows of the data, in medoid mode


def _nearest(x: torch.Tensor, centres: torch.Tensor, c_sq: torch.Tensor):
    """Per row, min and argmin of ‖c‖² − 2x·c: the squared distance less ‖x‖², which is
    constant along the row, so the argmin is the same and a (chunk, K) add is saved."""
    return torch.addmm(c_sq, x, centres.T, alpha=-2).min(dim=1)


def assign(x: torch.Tensor, centres: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of every row of x → (codes (N,), squared distances (N,))."""
    centres = centres.to(x.device, torch.float32)
    c_sq = centres.pow(2).sum(1)
    codes = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for s in range(0, x.shape[0], chunk):
        block = x[s : s + chunk].float()
        d, i = _nearest(block, centres, c_sq)
        codes[s : s + chunk], dists[s : s + chunk] = i, (d + block.pow(2).sum(1)).clamp_(min=0)
    return codes, dists


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ (D² sampling) on the rows of x → (k, D) centres."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator, device="cpu").item()
    centres = [x[first]]
    closest = (x - x[first]).pow(2).sum(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: pick uniformly
            idx = torch.randint(n, (1,), generator=generator, device="cpu").item()
        else:
            idx = torch.multinomial((closest / total).cpu(), 1, generator=generator).item()
        centres.append(x[idx])
        closest = torch.minimum(closest, (x - x[idx]).pow(2).sum(1))
    return torch.stack(centres)


def fit_kmeans(
    x: torch.Tensor,
    k: int,
    iters: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
    init_sample: int = 100_000,
    chunk: int = DEFAULT_CHUNK,
    medoid: bool = False,
) -> KMeansResult:
    """k-means on the rows of x (N, D): k-means++ on a sample of `init_sample` rows, then
    Lloyd until the distortion improves by less than `tol` (relative) or `iters` is reached."""
    if x.ndim != 2 or x.shape[0] < k:
        raise ValueError(f"k-means needs at least k={k} rows of shape (N, D), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("k-means input holds NaN or infinite values")
    x = x.float()
    g = torch.Generator().manual_seed(seed)
    sample = x[torch.randperm(x.shape[0], generator=g)[:init_sample].to(x.device)]
    centres = kmeans_plus_plus(sample, k, g)
    previous, iterations = math.inf, 0
    while iterations < iters:
        iterations += 1
        codes, dists = assign(x, centres, chunk)
        distortion = dists.mean().item()
        sums = torch.zeros_like(centres).index_add_(0, codes, x)
        counts = torch.bincount(codes, minlength=k)
        empty = counts == 0
        centres = sums / counts.clamp(min=1).unsqueeze(1).float()
        if empty.any():  # re-seed with the points worst served by their centres
            far = torch.topk(dists, int(empty.sum())).indices
            centres[empty] = x[far]
        if previous - distortion <= tol * distortion and not empty.any():
            break
        previous = distortion
    medoid_indices = None
    if medoid:
        centres, medoid_indices = snap_to_medoids(x, centres, chunk)
    _, dists = assign(x, centres, chunk)
    return KMeansResult(centres, dists.mean().item(), iterations, medoid_indices)


def snap_to_medoids(x: torch.Tensor, centres: torch.Tensor, chunk: int = DEFAULT_CHUNK):
    """Replace every centre with its nearest row of x → (medoids (K, D), row indices (K,))."""
    x_sq = x.pow(2).sum(1, keepdim=True)
    best = torch.full((centres.shape[0],), math.inf, device=x.device)
    index = torch.zeros(centres.shape[0], dtype=torch.long, device=x.device)
    for s in range(0, x.shape[0], chunk):
        # per centre, the nearest row: ‖x‖² − 2x·c varies with the row, so ‖x‖² stays in
        d, i = torch.addmm(x_sq[s : s + chunk], x[s : s + chunk].float(), centres.T, alpha=-2).min(dim=0)
        better = d < best
        best[better], index[better] = d[better], i[better] + s
    return x[index].clone(), index


def codebook_usage(codes, num_codes: int) -> dict[str, float]:
    """Share of the K codes used, and the perplexity exp(entropy) of their frequencies."""
    return usage_of_counts(code_counts(codes, num_codes))


def code_counts(codes, num_codes: int) -> np.ndarray:
    """How often each code 0 … num_codes-1 occurs in `codes` (values outside that range ignored)."""
    codes = np.asarray(codes).reshape(-1)
    return np.bincount(codes[(codes >= 0) & (codes < num_codes)], minlength=num_codes).astype(np.int64)


def usage_of_counts(counts) -> dict[str, float]:
    """`codebook_usage` from how often each code occurs (counted a part at a time elsewhere)."""
    counts = torch.as_tensor(np.asarray(counts)).double()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"usage": (counts > 0).double().mean().item(), "perplexity": math.exp(entropy)}


# ---------------------------------------------------------------------------
# codebook.pt


def save_codebook(path, centres: torch.Tensor, config: dict, medoid_indices=None, stats: dict | None = None) -> str:
    obj = {"z_medoid": centres.detach().float().cpu().contiguous(), "config": dict(config)}
    if medoid_indices is not None:
        obj["medoid_indices"] = torch.as_tensor(medoid_indices).cpu()
    if stats:
        obj["stats"] = {k: float(v) for k, v in stats.items()}
    return save_torch(path, obj)


def _numpy_safe_globals() -> list:
    """What a pickled NumPy array needs, and nothing more: the existing tools store
    `medoid_indices` as one."""
    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    allowed += [type(np.dtype(t)) for t in ("int64", "int32", "float32", "float64", "uint8", "bool")]
    return allowed


def load_codebook_file(path) -> dict:
    """Read a `codebook.pt` (dict or bare tensor) with weights_only=True → dict with `z_medoid`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: codebook file not found")
    obj = load_torch(path, DataError, "codebook", allowed=_numpy_safe_globals())
    if isinstance(obj, torch.Tensor):
        obj = {"z_medoid": obj, "config": {}}
    if not isinstance(obj, dict) or "z_medoid" not in obj:
        raise DataError(f"{path}: not a codebook (expected a dict with 'z_medoid' or a (K, D) tensor)")
    obj["z_medoid"] = check_codebook(obj["z_medoid"], path)
    return obj


def check_codebook(z, name="<codebook>") -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        array = np.asarray(z) if isinstance(z, (np.ndarray, list, tuple)) else None
        if array is None or array.dtype.kind not in "fiu":
            raise DataError(f"{name}: codebook vectors must be a (K, D) float tensor, got {type(z).__name__}")
        z = torch.from_numpy(array)
    if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 1:
        raise DataError(f"{name}: codebook must be a (K, D) array, got shape {tuple(z.shape)}")
    if not torch.is_floating_point(z):
        raise DataError(f"{name}: codebook must hold floats, got {z.dtype}")
    if not torch.isfinite(z).all():
        raise DataError(f"{name}: codebook holds NaN or infinite values")
    return z.float()


def load_codebook(source) -> torch.Tensor:
    """The (K, D) codebook from a path, a dict with `z_medoid`, or a tensor."""
    if isinstance(source, (str, os.PathLike)):
        return load_codebook_file(source)["z_medoid"]
    if isinstance(source, dict):
        if "z_medoid" not in source:
            raise DataError("codebook dict has no 'z_medoid' vectors")
        return check_codebook(source["z_medoid"])
    return check_codebook(source)
