"""Byte accounting of the VHPI chunk store, and the budget -> slot-capacity calculation.

Per chunk slot the store pays: the chunk (4c bytes), its optimizer state (0 / 4c / 4 bytes), its key (8),
its utility (4), hash buckets (4 bytes each, 1/max_load_factor per slot), and a free-stack entry (4 bytes) for
the reserve share of slots (resizes defragment when more is freed, so the stack never outgrows the reserve). The
fixed part is the count-min sketch (``sketch_fraction`` of the budget) and small per-table metadata. Nothing
scales with the number of virtual rows: a 10^8-row table costs only what its live chunks cost.

A full (dense) table costs ``rows x (4D + dense optimizer state per row)`` -- the baseline a budget fraction
refers to, so "5%" means 5% of what TorchRec's fused table with the same optimizer would hold.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import List, Sequence, Union

from emb_opt.config import FiitedConfig, OptimizerType
from emb_opt.hashed_init import MAX_COLUMNS

FLOAT_BYTES = 4
KEY_BYTES = 8
BUCKET_BYTES = 4
FREE_LIST_BYTES = 4
UTILITY_BYTES = 4
SKETCH_DEPTH = 2
METADATA_BYTES_PER_TABLE = 8 + 4 + 4 + 8  # rows (int64), chunks (int32), init scale (float32), init salt (int64)
METADATA_BYTES_PER_FEATURE = 4 + 8  # feature -> table (int32), first output column (int64)
COUNTER_BYTES = 8 * 8


def full_table_bytes(rows: int, dim: int, optimizer: OptimizerType) -> int:
    """Bytes of a dense ``rows x dim`` fp32 table plus its optimizer state."""
    return rows * (FLOAT_BYTES * dim + optimizer.dense_state_bytes_per_row(dim))


def slot_bytes(config: FiitedConfig) -> float:
    """Bytes one chunk slot costs, hash buckets included (at the maximal load factor)."""
    c = config.chunk_size
    return (
        FLOAT_BYTES * c
        + FLOAT_BYTES * config.optimizer.state_width(c)
        + KEY_BYTES
        + UTILITY_BYTES
        + FREE_LIST_BYTES * config.reserve_fraction
        + BUCKET_BYTES / config.max_load_factor
    )


def num_buckets_for(slots: int, config: FiitedConfig) -> int:
    return max(16, math.ceil(slots / config.max_load_factor))


@dataclass
class StorePlan:
    budget_bytes: int
    full_bytes: int
    max_slots: int
    sketch_width: int
    fixed_bytes: int
    bytes_per_slot: float


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
               num_features: int = 0) -> StorePlan:
    """How many chunk slots (and sketch cells) fit in ``budget_bytes``; raises if not even one slot does."""
    sketch_width = max(1, int(config.sketch_fraction * budget_bytes) // (SKETCH_DEPTH * FLOAT_BYTES))
    fixed = (
        SKETCH_DEPTH * sketch_width * FLOAT_BYTES
        + METADATA_BYTES_PER_TABLE * num_tables
        + METADATA_BYTES_PER_FEATURE * num_features
        + FLOAT_BYTES * max_chunks  # thresholds
        + COUNTER_BYTES
        + 16 * BUCKET_BYTES  # the hash table's minimum size
        + FREE_LIST_BYTES  # the reserve rounded up to a whole slot
    )
    per_slot = slot_bytes(config)
    max_slots = int((budget_bytes - fixed) // per_slot) if budget_bytes > fixed else 0
    if max_slots < 1:
        raise ValueError(
            f"memory_budget of {budget_bytes} bytes is too small: the store needs {fixed} bytes of fixed overhead "
            f"plus {per_slot:.0f} bytes per chunk slot, so at least {int(fixed + per_slot) + 1} bytes"
        )
    return StorePlan(budget_bytes, full_bytes, max_slots, sketch_width, fixed, per_slot)


def total_full_bytes(rows: Sequence[int], dims: Sequence[int], optimizer: OptimizerType) -> int:
    return sum(full_table_bytes(r, d, optimizer) for r, d in zip(rows, dims))


def chunk_counts(dims: List[int], chunk_size: int, names: List[str]) -> List[int]:
    """Chunks per row of each table; D % c must be 0 (clear error naming the table otherwise)."""
    out = []
    for name, d in zip(names, dims):
        if d % chunk_size != 0:
            raise ValueError(f"table {name!r}: embedding_dim {d} is not divisible by chunk_size {chunk_size}")
        if d >= MAX_COLUMNS:
            raise ValueError(f"table {name!r}: embedding_dim {d} is too large; at most {MAX_COLUMNS - 1} is supported")
        if d // chunk_size > 64:
            raise ValueError(f"table {name!r}: {d // chunk_size} chunks per row exceed the maximum of 64; raise chunk_size")
        out.append(d // chunk_size)
    return out
