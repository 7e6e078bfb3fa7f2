"""Codebook fitting: arplatform's torch k-means (k-means++ + Lloyd, chunked) against
scikit-learn's MiniBatchKMeans on the same data, in the same run.

Data: 1,000,000 × 16 latents drawn from a mixture of 2,048 Gaussians of
varying spread (seeded). Both fit K=512 and then assign every latent; the
distortion is the mean squared distance of a latent to its assigned centre.

    python bench/codebook.py [--n 1000000] [--k 512] [--dim 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import machine_line, save

from arplatform.core.codebook import assign, fit_kmeans


def mixture(n: int, dim: int, components: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(components, dim, generator=g) * 3
    spread = 0.2 + torch.rand(components, 1, generator=g)
    which = torch.randint(components, (n,), generator=g)
    return centres[which] + spread[which] * torch.randn(n, dim, generator=g)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    x = mixture(args.n, args.dim, 2048)
    x_np = x.numpy()

    t0 = time.perf_counter()
    km = fit_kmeans(x, args.k, seed=0)
    t_fit = time.perf_counter() - t0
    codes, dists = assign(x, km.centres)
    t_ours = time.perf_counter() - t0
    ours = dists.mean().item()

    with threadpool_limits(args.threads):
        t0 = time.perf_counter()
        mbk = MiniBatchKMeans(n_clusters=args.k, random_state=0).fit(x_np)
        t_sk_fit = time.perf_counter() - t0
        labels = mbk.predict(x_np)
        t_sk = time.perf_counter() - t0
    sk = float(((x_np - mbk.cluster_centers_[labels]) ** 2).sum(1).mean())

    print(machine_line())
    print(f"K={args.k} on {args.n:,} × {args.dim} latents, {args.threads} threads")
    print(f"{'':28} {'fit s':>7} {'fit+assign s':>13} {'distortion':>11}")
    print(f"{'arplatform fit_kmeans':28} {t_fit:7.1f} {t_ours:13.1f} {ours:11.4f}   ({km.iterations} Lloyd iterations)")
    print(f"{'sklearn MiniBatchKMeans':28} {t_sk_fit:7.1f} {t_sk:13.1f} {sk:11.4f}")
    print(f"time ratio (sklearn / arplatform): {t_sk / t_ours:.2f}×; distortion ratio (ours / sklearn): "
          f"{ours / sk:.3f}")
    np.testing.assert_equal(codes.shape[0], args.n)
    figures = {"fit_assign_s": t_ours, "sklearn_s": t_sk, "distortion": ours, "sklearn_distortion": sk}
    print(f"saved {save('codebook', figures)}")


if __name__ == "__main__":
    main()
