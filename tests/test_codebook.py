import numpy as np
import pytest
import torch

from arplatform.core.codebook import (
    assign,
    codebook_usage,
    fit_kmeans,
    load_codebook,
    load_codebook_file,
    save_codebook,
)
from arplatform.core.errors import DataError


def blobs(n=6000, k=24, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 4
    return centres[torch.randint(k, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)


def test_kmeans_beats_random_centres_and_assignment_is_brute_force():
    x = blobs()
    km = fit_kmeans(x, 24, seed=0, chunk=1000)  # chunks smaller than N: the bounded-memory path
    random_centres = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:24]]
    _, random_d = assign(x, random_centres)
    assert km.distortion < 0.5 * random_d.mean().item()
    codes, dists = assign(x, km.centres, chunk=777)
    brute = torch.cdist(x.double(), km.centres.double()).argmin(1)
    assert (codes == brute).float().mean() > 0.999  # ties at float precision only
    assert torch.allclose(dists, ((x - km.centres[codes]) ** 2).sum(1), atol=1e-4)


def test_empty_clusters_are_reseeded():
    x = torch.cat([torch.zeros(50, 2), torch.ones(50, 2) * 10, torch.randn(50, 2) + 5])
    km = fit_kmeans(x, 8, seed=3)
    codes, _ = assign(x, km.centres)
    assert torch.isfinite(km.centres).all() and len(torch.unique(km.centres, dim=0)) == 8
    assert codes.unique().numel() >= 3


def test_medoid_centres_are_real_latents():
    x = blobs(n=2000)
    km = fit_kmeans(x, 16, medoid=True, chunk=300)
    assert km.medoid_indices is not None
    assert torch.equal(km.centres, x[km.medoid_indices])
    for c, i in zip(km.centres, km.medoid_indices, strict=True):  # each is the real latent nearest its centre
        assert (x == c).all(1).any() and int(i) < len(x)


def test_usage_and_perplexity():
    stats = codebook_usage(np.array([0, 0, 1, 1, -1]), 4)
    assert stats["usage"] == 0.5 and abs(stats["perplexity"] - 2.0) < 1e-9


def test_existing_tools_codebook_format(tmp_path):
    """A codebook.pt from the existing tools: z_medoid, medoid_indices as a NumPy array, config."""
    z = torch.randn(16, 8)
    torch.save({"z_medoid": z, "medoid_indices": np.arange(16, dtype=np.int64) * 3,
                "config": {"k": 16, "method": "geo"}}, tmp_path / "codebook.pt")
    cb = load_codebook_file(tmp_path / "codebook.pt")
    assert torch.equal(cb["z_medoid"], z) and list(cb["medoid_indices"]) == list(range(0, 48, 3))
    torch.save(z, tmp_path / "bare.pt")
    assert torch.equal(load_codebook(tmp_path / "bare.pt"), z)
    save_codebook(tmp_path / "ours.pt", z, {"num_codes": 16}, medoid_indices=torch.arange(16))
    assert torch.equal(load_codebook(str(tmp_path / "ours.pt")), z)


def test_bad_codebooks(tmp_path):
    torch.save({"z_medoid": torch.tensor([[0.0, float("nan")]])}, tmp_path / "nan.pt")
    with pytest.raises(DataError, match="nan.pt: codebook holds NaN"):
        load_codebook(tmp_path / "nan.pt")
    torch.save({"z_medoid": torch.zeros(4)}, tmp_path / "flat.pt")
    with pytest.raises(DataError, match=r"flat.pt: codebook must be a \(K, D\)"):
        load_codebook(tmp_path / "flat.pt")
    torch.save({"codes": torch.zeros(4)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="other.pt: not a codebook"):
        load_codebook(tmp_path / "other.pt")
    with pytest.raises(DataError, match="missing.pt: codebook file not found"):
        load_codebook(tmp_path / "missing.pt")
