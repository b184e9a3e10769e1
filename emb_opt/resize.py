"""The resize step of FIITED: per-chunk-position thresholds under one memory budget, pruning, decay.

Run every ``resize_interval`` training steps after ``warmup_steps``, and earlier under pressure: when admissions
were denied (the store is full) and ``pressure_resize_steps`` steps have passed since the last resize
(``resize_due``; ``FiitedEmbeddingBagCollection`` checks it at the start of every training forward). With live
chunks sorted by key (rows together, chunk positions ascending):

1. Effective utility ``e(r, k) = min_{j <= k} u(r, j) / s_j`` -- a chunk is only worth keeping if every
   chunk before it is (a row's vector is a prefix). The position scale ``s_k = (k + 1) ** position_exponent``
   (times the mean utility of position k in "per_position" mode) makes later chunks earn more: gradients say
   how much a dimension is used, not how much a row still gains from one more chunk once it holds a few, so
   the exponent is the diminishing-returns prior (``0``: one threshold for all positions; MDE-style mixed
   dimensions ``d ~ popularity ** alpha`` correspond to an exponent ``1 / alpha``).
2. Keep the chunks of highest ``e`` (ties: lower position first, so the kept set stays prefix-closed) while
   their bytes fit ``(1 - reserve_fraction)`` of the budget: a chunk costs its slot, and a row's first chunk
   also its index entry (``emb_opt.budget``), so a new row must earn its entry. Threshold ``theta`` = the
   smallest kept ``e``; position k's threshold is ``theta * s_k``. If everything fits, thresholds are 0
   (free room goes to whoever comes). Chunks with utility exactly 0 -- never used since they were stored,
   e.g. imported by ``convert`` and never looked up -- are pruned in any case.
This module decides; the store carries the decision out (``VhpiChunkStore.apply_resize``):

3. The utility of each row's first pruned chunk goes into the sketch, so the row is re-admitted only when its
   utility rises above the threshold again.
4. All utilities (slots and sketch) are multiplied by ``utility_decay`` -- the EMA over intervals.
5. Compaction: kept rows move to the front of the pool in key order, runs closed up (holes left by rows that
   grew since the last resize are reclaimed), pool and index re-sized to the kept rows plus the reserve, the
   hash table rebuilt.
Returns a telemetry record (live chunks, bytes, thresholds, per-table histogram of per-row chunk counts).
"""
from __future__ import annotations

import math
from typing import Any, Dict

import torch

from cuda_ext.layout import key_chunk, key_table, row_of_key
from emb_opt.chunk_store import VhpiChunkStore
from emb_opt.store_counters import StoreCounter


def resize_due(store: VhpiChunkStore) -> bool:
    """Whether a resize runs before the current training step (``store.step`` forwards done so far): on the
    schedule (``warmup_steps``, then every ``resize_interval``), or under pressure -- admissions were denied
    since the last resize and ``pressure_resize_steps`` steps have passed since it (or since the start)."""
    config, step = store.config, store.step
    if step >= config.warmup_steps and (step - config.warmup_steps) % config.resize_interval == 0:
        return True
    if config.pressure_resize_steps <= 0:
        return False
    counters = store.counters.tolist()
    return (counters[StoreCounter.DENIED_ADMISSIONS] > counters[StoreCounter.DENIED_AT_LAST_RESIZE]
            and step - counters[StoreCounter.LAST_RESIZE_STEP] >= config.pressure_resize_steps)


def keep_limit(store: VhpiChunkStore) -> float:
    """Bytes of chunks and row entries a resize keeps: the budget less the reserve -- but never less than one
    row of one chunk, so a budget that holds one row is not emptied by its reserve."""
    plan = store.plan
    return max((1.0 - store.config.reserve_fraction) * plan.available_bytes, float(plan.variable_bytes(1, 1)))


def position_scale(max_chunks: int, exponent: float, device: torch.device) -> torch.Tensor:
    """``(k + 1) ** exponent`` for chunk positions k: how much more utility position k must earn."""
    return torch.arange(1, max_chunks + 1, dtype=torch.float32, device=device) ** exponent


def effective_utility(keys: torch.Tensor, utility: torch.Tensor, max_chunks: int) -> torch.Tensor:
    """Prefix minimum of utility along each row's chunks; ``keys`` sorted ascending (prefix-closed rows)."""
    chunk = key_chunk(keys)
    e = utility.clone()
    for k in range(1, max_chunks):
        idx = (chunk == k).nonzero().reshape(-1)
        if idx.numel():
            e[idx] = torch.minimum(e[idx], e[idx - 1])
    return e


def row_dimension_histogram(store: VhpiChunkStore, keys: torch.Tensor) -> Dict[str, list]:
    """Per table: number of rows holding exactly k chunks, k = 1..C_t (keys sorted)."""
    unique_rows, counts = torch.unique_consecutive(row_of_key(keys), return_counts=True)
    tables = key_table(unique_rows)
    out = {}
    for t, name in enumerate(store.table_names):
        chunks = int(store.table_chunks[t])
        mine = counts[tables == t]
        out[name] = torch.bincount(mine, minlength=chunks + 1)[1 : chunks + 1].tolist()
    return out


def telemetry_record(store: VhpiChunkStore, pruned: int = 0) -> Dict[str, Any]:
    _, keys = store.live_keys()
    tables = key_table(keys)
    live_per_table = torch.bincount(tables, minlength=len(store.table_names)).tolist()
    return {
        "step": store.step,
        "live_chunks": int(keys.numel()),
        "capacity": store.capacity,
        "live_rows": store.num_rows,
        "row_capacity": store.row_capacity,
        "allocated_bytes": store.total_bytes(),
        "pruned": pruned,
        "thresholds": store.thresholds.tolist(),
        "live_chunks_per_table": dict(zip(store.table_names, live_per_table)),
        "rows_by_chunks": row_dimension_histogram(store, keys),
    }


def resize_store(store: VhpiChunkStore) -> Dict[str, Any]:
    """One resize step (see the module docstring): decides what to keep, has the store carry it out, and returns
    its telemetry record."""
    config = store.config
    slots, keys = store.live_keys()
    utility = store.slot_utility[slots]
    chunk = key_chunk(keys)
    scale = position_scale(store.max_chunks, config.position_exponent, utility.device)
    if config.threshold_mode == "per_position" and keys.numel():
        sums = torch.zeros(store.max_chunks, device=utility.device).index_add_(0, chunk, utility)
        counts = torch.bincount(chunk, minlength=store.max_chunks).clamp(min=1)
        scale = scale * (sums / counts).clamp(min=1e-30)
    e = effective_utility(keys, utility / scale[chunk], store.max_chunks)
    keep = torch.ones(keys.numel(), dtype=torch.bool, device=keys.device)
    theta = 0.0
    rank = torch.argsort(e, descending=True, stable=True)
    kept = store.plan.affordable(chunk[rank] == 0, keep_limit(store))
    if kept < keys.numel():
        keep[:] = False
        keep[rank[:kept]] = True
        theta = float(e[rank[kept - 1]]) if kept > 0 else math.inf
        for k in range(1, store.max_chunks):  # prefix closure, also under exact ties
            idx = (chunk == k).nonzero().reshape(-1)
            if idx.numel():
                keep[idx] &= keep[idx - 1]
    keep &= e > 0  # chunks never used since they were stored (utility exactly 0, e.g. imported ones)
    pruned = ~keep
    previous_kept = torch.zeros_like(keep)
    previous_kept[1:] = keep[:-1]
    first_pruned = pruned & ((chunk == 0) | previous_kept)  # each row's first pruned chunk
    thresholds = theta * scale if math.isfinite(theta) else torch.full_like(scale, math.inf)
    num_pruned = int(pruned.sum())
    store.apply_resize(slots[keep], keys[keep], thresholds, row_of_key(keys[first_pruned]), utility[first_pruned],
                       num_pruned)
    return telemetry_record(store, num_pruned)
