"""Reference of the VHPI hash-table ops (``csrc/vhpi``: contracts in ``vhpi_ops.cpp``, probe in ``vhpi_probe.h``;
key layout in ``cuda_ext.layout``).

Buckets hold indices into a key array (-1 = empty). Probing is linear from ``seeded_hash63(key, PROBE_SEED) %
num_buckets`` for at most ``max_probe`` buckets, an empty bucket ending the search; a bucket value outside
[-1, len(keys)) ends it as corrupt (``vhpi_lookup_runs`` raises for the first row whose probe met one).
"""
from __future__ import annotations

from typing import Tuple

import torch

from cuda_ext.layout import MAX_CHUNKS, PROBE_SEED
from cuda_ext.reference.checks import check_in_range, raise_outside
from cuda_ext.reference.hashing import seeded_hash63

INT32_MAX = 2**31 - 1
MAX_RUN_START = INT32_MAX - MAX_CHUNKS + 2  # a run of up to MAX_CHUNKS slots from here fits int32


def home_bucket(keys: torch.Tensor, num_buckets: int) -> torch.Tensor:
    return seeded_hash63(keys, PROBE_SEED) % num_buckets


def probe_with_corruption(buckets: torch.Tensor, keys_of: torch.Tensor, keys: torch.Tensor,
                          max_probe: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(index of each key in ``keys_of`` or -1, the corrupt bucket that ended its probe or -1), vectorised."""
    num_buckets, num_keys = buckets.numel(), keys_of.numel()
    keys = keys.reshape(-1)
    result = torch.full(keys.shape, -1, dtype=torch.int32)
    corrupt_at = torch.full(keys.shape, -1, dtype=torch.int64)
    pending = torch.arange(keys.numel())  # the keys still probing, and where they are
    pos = home_bucket(keys, num_buckets)
    for _ in range(max_probe):
        if not pending.numel():
            break
        slot = buckets[pos].to(torch.int64)
        empty = slot == -1
        corrupt = (slot < -1) | (slot >= num_keys)
        corrupt_at[pending[corrupt]] = pos[corrupt]
        match = ~empty & ~corrupt & (keys_of[slot.clamp(0, max(num_keys - 1, 0))] == keys[pending])
        result[pending[match]] = slot[match].to(torch.int32)
        going = ~empty & ~corrupt & ~match
        pending, pos = pending[going], pos[going] + 1
        pos = torch.where(pos == num_buckets, torch.zeros_like(pos), pos)
    return result, corrupt_at


def probe(buckets: torch.Tensor, keys_of: torch.Tensor, keys: torch.Tensor, max_probe: int) -> torch.Tensor:
    """Index of each key in ``keys_of`` (int32, -1 if absent or behind a corrupt bucket), vectorised over keys."""
    return probe_with_corruption(buckets, keys_of, keys, max_probe)[0]


def _check_table(op: str, buckets: torch.Tensor, keys_name: str, keys: torch.Tensor, max_probe: int) -> None:
    if buckets.dtype != torch.int32 or keys.dtype != torch.int64:
        raise RuntimeError(f"{op}: buckets must be Int and {keys_name} Long, got {buckets.dtype} and {keys.dtype}")
    if buckets.dim() != 1 or keys.dim() != 1 or buckets.numel() == 0:
        raise RuntimeError(f"{op}: buckets (non-empty) and {keys_name} must be 1-D")
    if max_probe < 1:
        raise RuntimeError(f"{op}: max_probe must be >= 1, got {max_probe}")


def vhpi_lookup_runs(
    buckets: torch.Tensor,
    entry_keys: torch.Tensor,
    entry_first: torch.Tensor,
    entry_chunks: torch.Tensor,
    row_keys: torch.Tensor,
    max_chunks: int,
    max_probe: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    op = "vhpi_lookup_runs"
    _check_table(op, buckets, "entry_keys", entry_keys, max_probe)
    if entry_first.dtype != torch.int32 or entry_chunks.dtype != torch.int8 or row_keys.dtype != torch.int64:
        raise RuntimeError(f"{op}: entry_first must be Int, entry_chunks Char and row_keys Long")
    if not entry_first.numel() == entry_chunks.numel() == entry_keys.numel():
        raise RuntimeError(f"{op}: entry_keys, entry_first and entry_chunks must have one value per entry, got "
                           f"{entry_keys.numel()}, {entry_first.numel()} and {entry_chunks.numel()}")
    if not 1 <= max_chunks <= MAX_CHUNKS:
        raise RuntimeError(f"{op}: max_chunks must be in [1, {MAX_CHUNKS}], got {max_chunks}")
    entries, corrupt_at = probe_with_corruption(buckets, entry_keys, row_keys, max_probe)
    found = (entries >= 0).nonzero().reshape(-1)
    e = entries[found].to(torch.int64)
    chunks, first_slot = entry_chunks[e].to(torch.int64), entry_first[e].to(torch.int64)
    bad_run = torch.zeros(row_keys.shape, dtype=torch.bool)
    bad_run[found] = (chunks < 0) | (chunks > MAX_CHUNKS) | (first_slot < 0) | (first_slot >= MAX_RUN_START)
    bad_rows = ((corrupt_at >= 0) | bad_run).nonzero()
    if bad_rows.numel():
        u = int(bad_rows[0, 0])
        num_entries = entry_keys.numel()
        if int(corrupt_at[u]) >= 0:
            raise_outside(op, "buckets", buckets, int(corrupt_at[u]), -1, num_entries,
                          f"-1 or one of the {num_entries} entries of entry_keys; probed for row_keys[{u}]")
        entry = int(entries[u])
        if not 0 <= int(entry_chunks[entry]) <= MAX_CHUNKS:
            raise_outside(op, "entry_chunks", entry_chunks, entry, 0, MAX_CHUNKS + 1,
                          f"chunks of a row, found for row_keys[{u}]")
        raise_outside(op, "entry_first", entry_first, entry, 0, MAX_RUN_START,
                      f"first slot of a run that must fit int32, found for row_keys[{u}]")
    count = torch.zeros(row_keys.numel(), dtype=torch.int64)
    first = torch.zeros(row_keys.numel(), dtype=torch.int64)
    count[found] = chunks.clamp(0, max_chunks)
    first[found] = first_slot
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
    op = "vhpi_insert_"
    _check_table(op, buckets, "slot_keys", slot_keys, max_probe)
    if slots.dtype != torch.int32:
        raise RuntimeError(f"{op}: slots must be Int, got {slots.dtype}")
    num_slots = slot_keys.numel()
    check_in_range(op, "slots", slots, 0, num_slots, f"the {num_slots} slots of slot_keys")
    keys = slot_keys[slots.reshape(-1).to(torch.int64)]
    keyless = (keys < 0).nonzero()
    if keyless.numel():
        i = int(keyless[0, 0])
        slot = int(slots.reshape(-1)[i])
        raise IndexError(f"{op}: slots[{i}] = {slot} has no key (slot_keys[{slot}] = {int(keys[i])})")
    num_buckets = buckets.numel()
    homes = home_bucket(keys, num_buckets).tolist()
    table = buckets.tolist()
    inserted = 0
    for slot, key, home in zip(slots.reshape(-1).tolist(), keys.tolist(), homes):
        if not _insert_one(table, num_buckets, max_probe, key, home, slot):
            break
        inserted += 1
    buckets.copy_(torch.tensor(table, dtype=torch.int32))
    return inserted


def vhpi_rebuild(slot_keys: torch.Tensor, num_buckets: int, max_probe: int) -> torch.Tensor:
    if slot_keys.dtype != torch.int64 or slot_keys.dim() != 1:
        raise RuntimeError(f"vhpi_rebuild: slot_keys must be 1-D Long, got {slot_keys.dtype} {tuple(slot_keys.shape)}")
    if num_buckets < 1 or max_probe < 1:
        raise RuntimeError(f"vhpi_rebuild: num_buckets and max_probe must be >= 1, got {num_buckets}, {max_probe}")
    live = (slot_keys >= 0).nonzero().reshape(-1)
    keys = slot_keys[live]
    homes = home_bucket(keys, num_buckets).tolist()
    table = [-1] * num_buckets
    for slot, key, home in zip(live.tolist(), keys.tolist(), homes):
        if not _insert_one(table, num_buckets, max_probe, key, home, slot):
            return torch.empty(0, dtype=torch.int32)
    return torch.tensor(table, dtype=torch.int32)
