"""Reference of the VHPI hash-table ops (``csrc/vhpi``; layout and probe rule in ``csrc/common/vhpi_key.h``).

Key of virtual chunk (table t, row r, chunk k): ``((t << 47 | r) << 6) | k``. Buckets hold slot ids (-1 =
empty); a slot's key is ``slot_keys[slot]``. Probing is linear from ``seeded_hash63(key, PROBE_SEED) %
num_buckets`` for at most ``max_probe`` buckets, an empty bucket ending the search.
"""
from __future__ import annotations

from typing import Tuple

import torch

from cuda_ext.reference.hashing import seeded_hash63

CHUNK_BITS = 6
ROW_BITS = 47
MAX_ROWS = 1 << ROW_BITS
MAX_TABLES = 1 << 10
MAX_CHUNKS = 1 << CHUNK_BITS
PROBE_SEED = 0x5EED


def pack_row_key(table: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Row key (chunk 0) of (table, row); int64."""
    return ((table.to(torch.int64) << ROW_BITS) | row.to(torch.int64)) << CHUNK_BITS


def key_table(key: torch.Tensor) -> torch.Tensor:
    return key >> (ROW_BITS + CHUNK_BITS)


def key_row(key: torch.Tensor) -> torch.Tensor:
    return (key >> CHUNK_BITS) & (MAX_ROWS - 1)


def key_chunk(key: torch.Tensor) -> torch.Tensor:
    return key & (MAX_CHUNKS - 1)


def home_bucket(keys: torch.Tensor, num_buckets: int) -> torch.Tensor:
    return seeded_hash63(keys, PROBE_SEED) % num_buckets


def probe(buckets: torch.Tensor, slot_keys: torch.Tensor, keys: torch.Tensor, max_probe: int) -> torch.Tensor:
    """Slot of each key (int32, -1 if absent), vectorised over keys."""
    num_buckets = buckets.numel()
    result = torch.full(keys.shape, -1, dtype=torch.int32)
    pos = home_bucket(keys, num_buckets)
    pending = torch.ones(keys.shape, dtype=torch.bool)
    for _ in range(max_probe):
        if not bool(pending.any()):
            break
        slot = buckets[pos].to(torch.int64)
        empty = slot < 0
        match = ~empty & (slot_keys[slot.clamp(min=0)] == keys)
        result = torch.where(pending & match, slot.to(torch.int32), result)
        pending = pending & ~empty & ~match
        pos = torch.where(pos + 1 == num_buckets, torch.zeros_like(pos), pos + 1)
    return result


def vhpi_lookup(
    buckets: torch.Tensor,
    slot_keys: torch.Tensor,
    row_keys: torch.Tensor,
    num_chunks: torch.Tensor,
    max_chunks: int,
    max_probe: int,
) -> torch.Tensor:
    out = torch.full((row_keys.numel(), max_chunks), -1, dtype=torch.int32)
    alive = torch.ones(row_keys.numel(), dtype=torch.bool)
    for k in range(max_chunks):
        alive = alive & (num_chunks.to(torch.int64) > k)
        if not bool(alive.any()):
            break
        found = probe(buckets, slot_keys, row_keys[alive] | k, max_probe)
        column = torch.full((row_keys.numel(),), -1, dtype=torch.int32)
        column[alive] = found
        alive = alive & (column >= 0)
        out[:, k] = torch.where(alive, column, out[:, k])
    return out


def vhpi_lookup_runs(
    buckets: torch.Tensor,
    entry_keys: torch.Tensor,
    entry_first: torch.Tensor,
    entry_chunks: torch.Tensor,
    row_keys: torch.Tensor,
    max_chunks: int,
    max_probe: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    entries = probe(buckets, entry_keys, row_keys, max_probe)
    count = torch.zeros(row_keys.numel(), dtype=torch.int64)
    first = torch.zeros(row_keys.numel(), dtype=torch.int64)
    found = (entries >= 0).nonzero().reshape(-1)
    e = entries[found].to(torch.int64)
    count[found] = entry_chunks[e].to(torch.int64).clamp(0, max_chunks)
    first[found] = entry_first[e].to(torch.int64)
    position = torch.arange(max_chunks)
    slots = torch.where(position < count.unsqueeze(1), first.unsqueeze(1) + position, -1)
    return entries, slots.to(torch.int32)


def _insert_one(buckets: list, num_buckets: int, max_probe: int, key: int, home: int, slot: int) -> bool:
    pos = home
    for _ in range(max_probe):
        if buckets[pos] < 0:
            buckets[pos] = slot
            return True
        pos = 0 if pos + 1 == num_buckets else pos + 1
    return False


def vhpi_insert_(buckets: torch.Tensor, slot_keys: torch.Tensor, slots: torch.Tensor, max_probe: int) -> int:
    if slots.numel() and (int(slots.min()) < 0 or int(slots.max()) >= slot_keys.numel()):
        raise RuntimeError("vhpi_insert_: slot out of range")
    num_buckets = buckets.numel()
    keys = slot_keys[slots.to(torch.int64)]
    if keys.numel() and int(keys.min()) < 0:
        raise RuntimeError("vhpi_insert_: a slot has no key")
    homes = home_bucket(keys, num_buckets).tolist()
    table = buckets.tolist()
    inserted = 0
    for slot, key, home in zip(slots.tolist(), keys.tolist(), homes):
        if not _insert_one(table, num_buckets, max_probe, key, home, slot):
            break
        inserted += 1
    buckets.copy_(torch.tensor(table, dtype=torch.int32))
    return inserted


def vhpi_rebuild(slot_keys: torch.Tensor, num_buckets: int, max_probe: int) -> torch.Tensor:
    live = (slot_keys >= 0).nonzero().reshape(-1)
    keys = slot_keys[live]
    homes = home_bucket(keys, num_buckets).tolist()
    table = [-1] * num_buckets
    for slot, key, home in zip(live.tolist(), keys.tolist(), homes):
        if not _insert_one(table, num_buckets, max_probe, key, home, slot):
            return torch.empty(0, dtype=torch.int32)
    return torch.tensor(table, dtype=torch.int32)
