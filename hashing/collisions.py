"""Collision statistics of a hash: expected vs measured, and the bucket-load histogram.

For ``n`` distinct ids thrown uniformly into ``m`` buckets, the expected number of occupied buckets is
``m (1 - (1 - 1/m)^n)``; the *collision rate* we report is the fraction of distinct ids that share their
bucket with at least one other id: expected ``1 - (1 - 1/m)^(n-1)``. With id frequencies (e.g. the Zipf-like
traffic of Criteo) the traffic-weighted rate says how often a *lookup* lands on a shared row.
The bulk counting loop over (possibly hundreds of millions of) ids runs in numba.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import Dict, Optional

import numba
import numpy as np
import torch

from hashing.random_hash import random_hash


@numba.njit(cache=True)
def _bucket_loads(buckets: np.ndarray, num_buckets: int) -> np.ndarray:
    loads = np.zeros(num_buckets, dtype=np.int64)
    for b in buckets:
        loads[b] += 1
    return loads


@numba.njit(cache=True)
def _weighted_shared(buckets: np.ndarray, loads: np.ndarray, weights: np.ndarray) -> float:
    shared = 0.0
    for i in range(buckets.shape[0]):
        if loads[buckets[i]] > 1:
            shared += weights[i]
    return shared


def expected_collision_rate(num_ids: int, num_buckets: int) -> float:
    """Expected fraction of ``num_ids`` distinct ids sharing a bucket with another id (uniform hash)."""
    if num_ids <= 1:
        return 0.0
    return float(1.0 - (1.0 - 1.0 / num_buckets) ** (num_ids - 1))


@dataclass
class CollisionStats:
    num_ids: int
    num_buckets: int
    occupied_buckets: int
    expected_occupied_buckets: float
    collision_rate: float
    expected_collision_rate: float
    traffic_collision_rate: Optional[float]
    max_bucket_load: int
    load_histogram: Dict[int, int]  # bucket load -> number of buckets with that load

    def as_dict(self) -> dict:
        return asdict(self)


def collision_stats(
    ids: torch.Tensor,
    num_buckets: int,
    seed: int = 0,
    method: str = "mix",
    frequencies: Optional[torch.Tensor] = None,
) -> CollisionStats:
    """Measure how ``random_hash(ids, num_buckets, seed, method)`` collides on the distinct ``ids``.

    ``frequencies`` (same length as ``ids``) weights each id by its traffic for ``traffic_collision_rate``.
    Duplicate ids are removed first (their frequencies summed).
    """
    ids = ids.reshape(-1)
    if frequencies is not None and frequencies.numel() != ids.numel():
        raise ValueError(f"frequencies has {frequencies.numel()} entries, ids has {ids.numel()}")
    unique, inverse = torch.unique(ids, return_inverse=True)
    buckets = random_hash(unique, num_buckets, seed, method).numpy()
    loads = _bucket_loads(buckets, int(num_buckets))
    n = int(unique.numel())
    shared = _weighted_shared(buckets, loads, np.ones(n, dtype=np.float64))
    traffic_rate = None
    if frequencies is not None:
        weights = torch.zeros(n, dtype=torch.float64).index_add_(0, inverse, frequencies.double()).numpy()
        total = float(weights.sum())
        traffic_rate = _weighted_shared(buckets, loads, weights) / total if total > 0 else 0.0
    values, counts = np.unique(loads, return_counts=True)
    return CollisionStats(
        num_ids=n,
        num_buckets=int(num_buckets),
        occupied_buckets=int((loads > 0).sum()),
        expected_occupied_buckets=float(num_buckets * (1 - (1 - 1 / num_buckets) ** n)),
        collision_rate=shared / n if n else 0.0,
        expected_collision_rate=expected_collision_rate(n, int(num_buckets)),
        traffic_collision_rate=traffic_rate,
        max_bucket_load=int(loads.max()) if n else 0,
        load_histogram={int(v): int(c) for v, c in zip(values, counts)},
    )
