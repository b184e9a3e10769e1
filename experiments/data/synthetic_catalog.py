"""A synthetic item catalog for semantic-ID experiments: hierarchical content, cluster-driven clicks, Zipf traffic,
new items that appear late.

* Hierarchy: ``branching = (b1, b2, b3)`` gives ``b1`` top clusters, each with ``b2`` children, each with ``b3`` leaves.
  Content embedding of an item = top centre + child offset + leaf offset + item noise (``[num_items, emb_dim]``,
  scales ``content_scales``), so a residual quantizer can recover the tree from content alone.
* Clicks: ``logit = base + user_bias[u] + a1[top] + a2[mid] + a3[leaf] + eps_item + pref[group(u), top]``:
  click probability depends on the item's clusters (the part semantic IDs can share between items) plus an
  item-level term ``eps_item`` (what only a per-item row can memorise), and a user-group x top-cluster preference.
* Traffic: each item has a Zipf weight ``rank^-zipf_alpha`` (ranks shuffled, so popularity is independent of the
  cluster); an event at time ``t`` picks among items alive at ``t`` in proportion to that weight; users are
  picked with a milder Zipf.
* New items: a ``new_item_fraction`` of items is born uniformly in ``[new_item_start, 1)``; older items exist
  from ``t = 0``. Events carry times in ``[0, 1)``, sorted.

``make_synthetic_catalog(config) -> SyntheticCatalog`` with ``content [n_items, emb_dim]`` float32, the tree
(``clusters [n_items, 3]``), ``birth [n_items]``, the event log (``users, items, labels, times, probs`` all
``[n_events]``), and the true click probability of each event (``probs``) for an oracle NE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

import numpy as np
import torch


@dataclass
class SyntheticCatalogConfig:
    num_items: int = 20000
    num_users: int = 2000
    num_events: int = 300000
    emb_dim: int = 32
    branching: Tuple[int, int, int] = (16, 8, 8)
    content_scales: Tuple[float, float, float, float] = (1.0, 0.5, 0.25, 0.1)  # top, mid, leaf, item noise
    cluster_effects: Tuple[float, float, float] = (0.7, 0.6, 0.5)                # std of a1, a2, a3 (logit)
    item_effect: float = 0.3                                                    # std of eps_item (logit)
    num_user_groups: int = 8
    preference: float = 0.6                                                     # std of pref[group, top]
    user_bias: float = 0.3
    base_logit: float = -1.2
    zipf_alpha: float = 1.05
    user_zipf_alpha: float = 0.5
    new_item_fraction: float = 0.15
    new_item_start: float = 0.6
    time_slices: int = 64
    seed: int = 0


@dataclass
class SyntheticCatalog:
    config: SyntheticCatalogConfig
    content: torch.Tensor      # [n_items, emb_dim] float32
    clusters: torch.Tensor     # [n_items, 3] int64: top, mid (global id), leaf (global id)
    birth: torch.Tensor        # [n_items] float32 in [0, 1): first time the item can be shown
    is_new: torch.Tensor       # [n_items] bool: born at/after new_item_start
    popularity: torch.Tensor   # [n_items] float64 Zipf weight
    users: torch.Tensor        # [n_events] int64
    items: torch.Tensor        # [n_events] int64
    labels: torch.Tensor       # [n_events] float32 in {0, 1}
    times: torch.Tensor        # [n_events] float32, sorted
    probs: torch.Tensor        # [n_events] float32 true click probability
    item_logit: torch.Tensor = field(repr=False, default=None)  # [n_items] float32 item part of the logit

    @property
    def num_items(self) -> int:
        return int(self.content.shape[0])

    @property
    def num_users(self) -> int:
        return int(self.config.num_users)


def _zipf_weights(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** (-alpha)
    return weights[rng.permutation(n)]


def make_synthetic_catalog(config: SyntheticCatalogConfig = SyntheticCatalogConfig()) -> SyntheticCatalog:
    """Generate the catalog and its event log (deterministic in ``config.seed``)."""
    c = config
    if c.num_items < 2 or c.num_users < 1 or c.num_events < 1:
        raise ValueError("num_items >= 2, num_users >= 1 and num_events >= 1 are required")
    if not 0.0 <= c.new_item_fraction < 1.0 or not 0.0 <= c.new_item_start < 1.0:
        raise ValueError("new_item_fraction and new_item_start must be in [0, 1)")
    rng = np.random.default_rng(c.seed)
    b1, b2, b3 = c.branching
    s_top, s_mid, s_leaf, s_item = c.content_scales
    n_mid, n_leaf = b1 * b2, b1 * b2 * b3
    top_centre = rng.normal(0, s_top, (b1, c.emb_dim))
    mid_centre = np.repeat(top_centre, b2, 0) + rng.normal(0, s_mid, (n_mid, c.emb_dim))
    leaf_centre = np.repeat(mid_centre, b3, 0) + rng.normal(0, s_leaf, (n_leaf, c.emb_dim))
    leaf = rng.integers(0, n_leaf, c.num_items)
    mid = leaf // b3
    top = mid // b2
    content = leaf_centre[leaf] + rng.normal(0, s_item, (c.num_items, c.emb_dim))

    e1, e2, e3 = c.cluster_effects
    item_logit = (rng.normal(0, e1, b1)[top] + rng.normal(0, e2, n_mid)[mid] + rng.normal(0, e3, n_leaf)[leaf]
                  + rng.normal(0, c.item_effect, c.num_items))
    pref = rng.normal(0, c.preference, (c.num_user_groups, b1))
    user_group = rng.integers(0, c.num_user_groups, c.num_users)
    user_bias = rng.normal(0, c.user_bias, c.num_users)

    is_new = rng.random(c.num_items) < c.new_item_fraction
    birth = np.where(is_new, rng.uniform(c.new_item_start, 1.0, c.num_items), 0.0)
    popularity = _zipf_weights(c.num_items, c.zipf_alpha, rng)
    user_weights = _zipf_weights(c.num_users, c.user_zipf_alpha, rng)
    user_weights /= user_weights.sum()

    times = np.sort(rng.random(c.num_events))
    items = np.empty(c.num_events, dtype=np.int64)
    edges = np.searchsorted(times, np.linspace(0.0, 1.0, c.time_slices + 1))
    for s in range(c.time_slices):  # items alive at the slice start (a loop over slices, not events)
        lo, hi = edges[s], edges[s + 1]
        if hi <= lo:
            continue
        alive = birth <= times[lo]
        weights = np.where(alive, popularity, 0.0)
        items[lo:hi] = rng.choice(c.num_items, size=hi - lo, p=weights / weights.sum())
    users = rng.choice(c.num_users, size=c.num_events, p=user_weights)
    logit = c.base_logit + user_bias[users] + item_logit[items] + pref[user_group[users], top[items]]
    probs = 1.0 / (1.0 + np.exp(-logit))
    labels = (rng.random(c.num_events) < probs).astype(np.float32)

    return SyntheticCatalog(
        config=c,
        content=torch.from_numpy(content.astype(np.float32)),
        clusters=torch.from_numpy(np.stack([top, mid, leaf], 1).astype(np.int64)),
        birth=torch.from_numpy(birth.astype(np.float32)),
        is_new=torch.from_numpy(is_new),
        popularity=torch.from_numpy(popularity),
        users=torch.from_numpy(users.astype(np.int64)),
        items=torch.from_numpy(items),
        labels=torch.from_numpy(labels),
        times=torch.from_numpy(times.astype(np.float32)),
        probs=torch.from_numpy(probs.astype(np.float32)),
        item_logit=torch.from_numpy(item_logit.astype(np.float32)),
    )
