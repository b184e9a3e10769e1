"""Deterministic Lloyd k-means in torch, and nearest-centroid assignment, for the residual quantizers.

``kmeans(x [n, d], k) -> centroids [k, d]``: k-means++ seeding on a sample (at most ``init_sample`` points, so
seeding stays cheap for large n), then Lloyd iterations over all points. Empty clusters are re-seeded with the
points farthest from their centroid, so every centroid ends up used whenever ``n >= k`` distinct points exist.
The same seed gives the same centroids. ``nearest(x, centroids) -> (index [n], squared distance [n])`` works in
chunks so distance matrices stay small (``chunk x k`` floats).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> Tuple[torch.Tensor, torch.Tensor]:
    """Index ``[n]`` (int64) of each row's nearest centroid and the squared distance ``[n]`` to it."""
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=x.device), torch.empty(0, dtype=x.dtype, device=x.device)
    c_sq = (centroids * centroids).sum(1)
    indices, dists = [], []
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2 ; argmin does not need ||x||^2.
        scores = c_sq.unsqueeze(0) - 2.0 * part @ centroids.t()
        best, index = scores.min(1)
        indices.append(index)
        dists.append((best + (part * part).sum(1)).clamp_min(0.0))
    return torch.cat(indices), torch.cat(dists)


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    dist = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(dist.sum())
        if total <= 0.0:  # fewer distinct points than k: pick uniformly
            index = int(torch.randint(n, (1,), generator=generator))
        else:
            index = int(torch.multinomial(dist / total, 1, generator=generator))
        centroids.append(x[index])
        dist = torch.minimum(dist, ((x - x[index]) ** 2).sum(1))
    return torch.stack(centroids)


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0, init_sample: int = 20000,
           tol: float = 1e-6) -> torch.Tensor:
    """Centroids ``[k, d]`` (float32) of ``x [n, d]`` by k-means++ seeding and Lloyd iterations."""
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [n, d] tensor, got shape {tuple(x.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = x.detach().float()
    n = x.shape[0]
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    sample = x if n <= init_sample else x[torch.randperm(n, generator=generator)[:init_sample].to(x.device)]
    if sample.shape[0] >= k:
        centroids = _kmeans_pp(sample, k, generator)
    else:  # fewer points than codes: repeat points (duplicates get re-seeded or stay dead)
        centroids = sample[torch.randint(sample.shape[0], (k,), generator=generator).to(x.device)]
    previous = float("inf")
    for _ in range(max(1, iters)):
        assign, dist = nearest(x, centroids)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        alive = counts > 0
        centroids = torch.where(alive.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1), centroids)
        dead = (~alive).nonzero().flatten()
        if dead.numel():  # re-seed empty clusters at the worst-served points
            far = torch.argsort(dist, descending=True)[: dead.numel()]
            centroids[dead[: far.numel()]] = x[far]
        inertia = float(dist.mean())  # of the assignment to the centroids before this update
        if dead.numel() == 0 and math.isfinite(previous) and previous - inertia <= tol * max(previous, 1e-12):
            break  # converged: the last update lowered the objective by less than tol (relative)
        previous = inertia
    return centroids
