"""Byte accounting of the VHPI chunk store, and the budget -> capacity calculation.

The store keeps a row's live chunks as one contiguous run of pool slots and indexes *rows*, not chunks:

* per chunk slot: the chunk (4c bytes; 2c with ``weight_dtype="bfloat16"``, c + a 4-byte scale with "int8"), its
  optimizer state (Adagrad: 4c bytes) and its utility (4);
* per stored row: its key (8), the first slot of its run (4), its live chunk count (1), row-wise Adagrad's
  accumulator (4) and its hash buckets (4 bytes each, 1/max_load_factor per row).

So a whole row of D = 64 floats in chunks of 16 with row-wise Adagrad costs 4 x 68 + 25 = 297 bytes, and the
same row stored whole (row pruning: one chunk of 64) 285. The fixed part is the count-min sketch
(``sketch_fraction`` of the budget), small per-table metadata, the counters and the collection's per-feature
layout. Nothing scales with the number of virtual rows: a 10^8-row table costs only what its live rows cost.

A full (dense) table costs ``rows x (4D + dense optimizer state per row)`` -- the baseline a budget fraction
refers to, so "5%" means 5% of what TorchRec's fused table with the same optimizer would hold.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

import torch

from emb_opt.chunk_precision import SCALE_WIDTH
from emb_opt.config import FiitedConfig, OptimizerType
from emb_opt.hashed_init import MAX_COLUMNS
from emb_opt.store_counters import NUM_COUNTERS

FLOAT_BYTES = 4
KEY_BYTES = 8
SLOT_ID_BYTES = 4
COUNT_BYTES = 1
BUCKET_BYTES = 4
UTILITY_BYTES = 4
MIN_BUCKETS = 16
ENTRY_BYTES = KEY_BYTES + SLOT_ID_BYTES + COUNT_BYTES  # one row entry, without its buckets
SKETCH_DEPTH = 2
METADATA_BYTES_PER_TABLE = 8 + 4 + 4 + 8  # rows (int64), chunks (int32), init scale (float32), init salt (int64)
COUNTER_BYTES = 8 * NUM_COUNTERS


def full_table_bytes(rows: int, dim: int, optimizer: OptimizerType) -> int:
    """Bytes of a dense ``rows x dim`` fp32 table plus its optimizer state."""
    return rows * (FLOAT_BYTES * dim + optimizer.dense_state_bytes_per_row(dim))


def slot_bytes(config: FiitedConfig) -> int:
    """Bytes one chunk slot costs: the chunk (in ``weight_dtype``), its optimizer state, its utility."""
    c = config.chunk_size
    dtype = config.weight_torch_dtype
    weight_bytes = dtype.itemsize * c + FLOAT_BYTES * SCALE_WIDTH[dtype]
    return weight_bytes + FLOAT_BYTES * config.optimizer.state_width(c) + UTILITY_BYTES


def entry_bytes(config: FiitedConfig) -> int:
    """Bytes of one row's index entry: key, run start, chunk count and its per-row optimizer state."""
    return ENTRY_BYTES + FLOAT_BYTES * config.optimizer.row_state_width


def row_bytes(config: FiitedConfig) -> float:
    """Bytes one stored row costs on top of its chunks: its index entry and buckets (at the maximal load)."""
    return entry_bytes(config) + BUCKET_BYTES / config.max_load_factor


def num_buckets_for(rows: int, config: FiitedConfig) -> int:
    return max(MIN_BUCKETS, math.ceil(rows / config.max_load_factor))


@dataclass
class StorePlan:
    """What a budget buys. ``variable_bytes(slots, rows)`` is what a pool of ``slots`` chunk slots and an index
    of ``rows`` row entries allocate (buckets included); allocations always keep it within ``available_bytes``.
    ``max_slots``: most chunk slots the pool can ever be allocated (with the smallest index); ``max_rows``: most
    rows, reached when every row holds one chunk."""

    budget_bytes: int
    full_bytes: int
    max_slots: int
    sketch_width: int
    fixed_bytes: int
    bytes_per_slot: float
    bytes_per_row: float = 0.0
    max_rows: int = 0
    available_bytes: int = 0
    max_load_factor: float = 0.5
    bytes_per_entry: int = ENTRY_BYTES  # a row's index entry without its buckets (``entry_bytes``)

    def variable_bytes(self, slots: int, rows: int) -> int:
        buckets = max(MIN_BUCKETS, math.ceil(rows / self.max_load_factor))
        return int(slots * self.bytes_per_slot + rows * self.bytes_per_entry + buckets * BUCKET_BYTES)

    def fits(self, slots: int, rows: int) -> bool:
        return self.variable_bytes(slots, rows) <= self.available_bytes

    def fits_many(self, slots: "torch.Tensor", rows: "torch.Tensor", limit: float) -> "torch.Tensor":
        """``variable_bytes(slots[i], rows[i]) <= limit`` for tensors of counts (bool tensor)."""
        rows = rows.to(torch.float64)
        buckets = torch.ceil(rows / self.max_load_factor).clamp(min=MIN_BUCKETS)
        return slots.to(torch.float64) * self.bytes_per_slot + rows * self.bytes_per_entry + buckets * BUCKET_BYTES <= limit

    def affordable(self, starts_row: "torch.Tensor", limit: float) -> int:
        """How many of a ranked list of chunks fit in ``limit`` bytes, taken in order: each costs a slot, and an
        index entry when ``starts_row`` (it is its row's first chunk). A prefix: the bytes only grow."""
        count = torch.arange(1, starts_row.numel() + 1, device=starts_row.device)
        return int(self.fits_many(count, torch.cumsum(starts_row.to(torch.int64), 0), limit).sum())

    def fit(self, low: Tuple[int, int], high: Tuple[int, int]) -> Tuple[int, int]:
        """The largest (slots, rows) on the segment from ``low`` towards ``high`` that fits the budget (``low``
        itself if nothing more does; the caller makes sure ``low`` fits)."""
        if self.fits(*high):
            return high
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if self.fits(*_between(low, high, mid)):
                lo = mid
            else:
                hi = mid
        return _between(low, high, lo)


def _between(low: Tuple[int, int], high: Tuple[int, int], f: float) -> Tuple[int, int]:
    return (low[0] + int(math.floor((high[0] - low[0]) * f)), low[1] + int(math.floor((high[1] - low[1]) * f)))


def resolve_budget(memory_budget: Union[int, float], full_bytes: int) -> int:
    """A budget in bytes (int >= 1) or as a fraction of the full tables' bytes (float in (0, 1])."""
    if isinstance(memory_budget, bool):
        raise TypeError("memory_budget must be a byte count (int) or a fraction of the full tables (float)")
    if isinstance(memory_budget, numbers.Integral):  # int, numpy integers
        memory_budget = int(memory_budget)
    elif isinstance(memory_budget, numbers.Real):  # float, numpy floats
        memory_budget = float(memory_budget)
    if isinstance(memory_budget, float):
        if not 0 < memory_budget <= 1:
            raise ValueError(f"memory_budget as a fraction must be in (0, 1], got {memory_budget}")
        return int(memory_budget * full_bytes)
    if isinstance(memory_budget, int):
        if memory_budget < 1:
            raise ValueError(f"memory_budget must be >= 1 byte, got {memory_budget}")
        return memory_budget
    raise TypeError(f"memory_budget must be int (bytes) or float (fraction), got {type(memory_budget).__name__}")


def plan_store(budget_bytes: int, full_bytes: int, num_tables: int, max_chunks: int, config: FiitedConfig,
               layout_bytes: int = 0) -> StorePlan:
    """How many chunk slots and rows fit in ``budget_bytes``; raises if not even one row of one chunk does.
    ``layout_bytes``: what the collection's own buffers (its feature layout) take from the budget."""
    sketch_width = max(1, int(config.sketch_fraction * budget_bytes) // (SKETCH_DEPTH * FLOAT_BYTES))
    fixed = (
        SKETCH_DEPTH * sketch_width * FLOAT_BYTES
        + METADATA_BYTES_PER_TABLE * num_tables
        + layout_bytes
        + FLOAT_BYTES * max_chunks  # thresholds
        + COUNTER_BYTES
    )
    plan = StorePlan(budget_bytes, full_bytes, 0, sketch_width, fixed, slot_bytes(config), row_bytes(config), 0,
                     max(0, budget_bytes - fixed), config.max_load_factor, entry_bytes(config))
    smallest = plan.variable_bytes(1, 1)
    if not plan.fits(1, 1):
        raise ValueError(
            f"memory_budget of {budget_bytes} bytes is too small: the store needs {fixed} bytes of fixed overhead "
            f"plus {smallest} bytes for one row of one chunk (its {plan.bytes_per_slot:.0f}-byte slot, its index "
            f"entry and the smallest hash table), so at least {fixed + smallest} bytes"
        )
    plan.max_rows = _largest(lambda n: plan.fits(n, n))
    plan.max_slots = _largest(lambda n: plan.fits(n, 1))
    return plan


def _largest(fits) -> int:
    """The largest n >= 1 with fits(n) (fits is monotone and fits(1))."""
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def total_full_bytes(rows: Sequence[int], dims: Sequence[int], optimizer: OptimizerType) -> int:
    return sum(full_table_bytes(r, d, optimizer) for r, d in zip(rows, dims))


def chunk_counts(dims: List[int], chunk_size: int, names: List[str]) -> List[int]:
    """Chunks per row of each table; D % c must be 0 (clear error naming the table otherwise)."""
    out = []
    for name, d in zip(names, dims):
        if d < 1:
            raise ValueError(f"table {name!r}: embedding_dim must be >= 1, got {d}")
        if d % chunk_size != 0:
            raise ValueError(f"table {name!r}: embedding_dim {d} is not divisible by chunk_size {chunk_size}")
        if d >= MAX_COLUMNS:
            raise ValueError(f"table {name!r}: embedding_dim {d} is too large; at most {MAX_COLUMNS - 1} is supported")
        if d // chunk_size > 64:
            raise ValueError(f"table {name!r}: {d // chunk_size} chunks per row exceed the maximum of 64; raise chunk_size")
        out.append(d // chunk_size)
    return out
