"""The VHPI (virtually-hashed, physically-indexed) chunk store behind a FIITED embedding collection: storage.

One store holds every table of a collection. A row (table t, row r) is an int64 row key, and its chunk k the
chunk key ``row key | k`` (layout in ``cuda_ext.layout``). A row's live chunks are a prefix 0..k_r-1 (the
missing tail reads as zeros), stored as one contiguous run of slots of a dense physical pool; a hash table
(``hash_buckets``, int32 entry ids, linear probing, bounded probe) maps the row key to the row's index entry,
which says where the run starts and how long it is:

    pool_weights [S, c] float32 / bfloat16 / int8   the chunks (``weight_dtype``)
    pool_scale   [S, q] float32   int8 pools: each chunk's scale (q = 1; else q = 0; emb_opt.chunk_precision)
    pool_state   [S, w] float32   per-chunk optimizer state
    slot_utility [S]    float32   decayed utility
    entry_keys   [R]    int64     row key of each entry (-1 = none)
    entry_first  [R]    int32     first slot of the row's run
    entry_chunks [R]    int8      live chunks k_r (0 = none)
    entry_state  [R, v] float32   per-row optimizer state
    hash_buckets [H]    int32     H = R / max_load_factor
    sketch       [2, M] float32   count-min sketch of utilities of rows that are *not* stored (emb_opt.utility_sketch)
    thresholds   [Cmax] float32   admission threshold per chunk position (set by each resize)
    counters     [N]    int64     emb_opt.store_counters

(w = c for Adagrad, else 0; v = 1 for row-wise Adagrad -- its one accumulator per row -- else 0.)

A row pays its index (key, run, buckets) once, and a lookup probes once per row and expands its run to the
``[U, Cmax]`` slot matrix the chunk-bag kernels take, in one kernel (``lookup_rows``). Nothing is
O(#virtual rows): a 10^8-row table costs only its live rows.

Allocation is a bump allocator in both arrays (``HIGH_WATER`` slots, ``ROW_HIGH_WATER`` entries used). A row
that earns more chunks moves to a new run of the longer length at the high-water mark (its chunks, their
optimizer state and utilities go with it; its entry stays); the old run stays a hole until the next resize,
which always compacts (``apply_resize``): kept rows move to the front in key order and the arrays are re-sized
to them plus the reserve. Pool and index grow on demand (x1.5), always within the budget: allocated bytes --
not just live bytes -- stay within the memory budget at all times (``StorePlan.fits``).

This class owns every write to its buffers; the policies that decide what to write live beside it:
``emb_opt.admission`` (which touched rows get chunks), ``emb_opt.resize`` (what a resize keeps) and
``emb_opt.store_step`` (the training step that runs the kernels on the pool).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from cuda_ext import ops
from cuda_ext.layout import key_chunk, key_row, key_table, pack_row_key, row_of_key
from emb_opt import utility_sketch
from emb_opt.budget import SKETCH_DEPTH, StorePlan, num_buckets_for
from emb_opt.chunk_precision import SCALE_WIDTH, encode
from emb_opt.config import FiitedConfig
from emb_opt.hashed_init import hashed_values, name_salt
from emb_opt.store_base import ChunkStoreBase
from emb_opt.store_checkpoint import checkpoint_problems, store_description
from emb_opt.store_counters import COUNTER_NAMES, NUM_COUNTERS, StoreCounter

_GROWTH = 1.5
ChunkValues = Callable[[torch.Tensor], torch.Tensor]  # chunk keys [n] -> their values [n, c]


class VhpiChunkStore(ChunkStoreBase):
    """Chunk pool + row index + utility sketch for the tables of one collection.

    Args:
        table_names, table_rows, table_chunks, init_scales: per table: its name (seeds its init), virtual rows,
            chunks per row (``embedding_dim / chunk_size``) and init range (uniform in +-scale).
        plan: what the memory budget buys (``emb_opt.budget.plan_store``).
        config: the FIITED options.
        device: where the buffers live.
    """

    def __init__(
        self,
        table_names: List[str],
        table_rows: List[int],
        table_chunks: List[int],
        init_scales: List[float],
        plan: StorePlan,
        config: FiitedConfig,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.config = config
        self.plan = plan
        self.table_names = list(table_names)
        self.max_chunks = max(table_chunks)
        self.max_probe = config.max_probe
        self.pending_backward = 0  # forwards whose backward will still write through their slot matrix
        self.warned_full = False  # admission warns once per store when the budget denies chunks
        self.warned_nonfinite = False  # a skipped non-finite step is warned about once per store
        c = config.chunk_size
        slots, rows = self.initial_capacities()
        kw: Dict[str, Any] = dict(device=device)
        self.register_buffer("table_rows", torch.tensor(table_rows, dtype=torch.int64, **kw))
        self.register_buffer("table_chunks", torch.tensor(table_chunks, dtype=torch.int32, **kw))
        self.register_buffer("init_scale", torch.tensor(init_scales, dtype=torch.float32, **kw))
        self.register_buffer("table_salt", torch.tensor([name_salt(n) for n in table_names], dtype=torch.int64, **kw))
        self.register_buffer("pool_weights", torch.zeros(slots, c, dtype=config.weight_torch_dtype, **kw))
        self.register_buffer("pool_scale", torch.zeros(slots, SCALE_WIDTH[config.weight_torch_dtype], **kw))
        self.register_buffer("pool_state", torch.zeros(slots, config.optimizer.state_width(c), **kw))
        self.register_buffer("slot_utility", torch.zeros(slots, **kw))
        self.register_buffer("entry_keys", torch.full((rows,), -1, dtype=torch.int64, **kw))
        self.register_buffer("entry_first", torch.zeros(rows, dtype=torch.int32, **kw))
        self.register_buffer("entry_chunks", torch.zeros(rows, dtype=torch.int8, **kw))
        self.register_buffer("entry_state", torch.zeros(rows, config.optimizer.row_state_width, **kw))
        self.register_buffer("hash_buckets", torch.full((num_buckets_for(rows, config),), -1, dtype=torch.int32, **kw))
        self.register_buffer("sketch", torch.zeros(SKETCH_DEPTH, plan.sketch_width, **kw))
        self.register_buffer("thresholds", torch.zeros(self.max_chunks, **kw))
        self.register_buffer("counters", torch.zeros(NUM_COUNTERS, dtype=torch.int64, **kw))

    def initial_capacities(self) -> Tuple[int, int]:
        """(slots, rows) allocated at start: ``initial_capacity`` slots and rows for them whole, within budget."""
        slots = max(1, min(self.config.initial_capacity, self.plan.max_slots))
        return self.plan.fit((1, 1), (slots, max(1, math.ceil(slots / self.max_chunks))))

    # ---- sizes and counters -----------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Allocated chunk slots."""
        return self.pool_weights.shape[0]

    @property
    def row_capacity(self) -> int:
        """Allocated row entries."""
        return self.entry_keys.numel()

    @property
    def num_free(self) -> int:
        """Slots above the high-water mark (holes left by moved rows are reclaimed by the next resize)."""
        return self.capacity - self.counter(StoreCounter.HIGH_WATER)

    @property
    def step(self) -> int:
        """Training steps (forwards) so far."""
        return self.counter(StoreCounter.STEP)

    @property
    def optimizer_state(self) -> torch.Tensor:
        """The state the fused optimizer updates: ``entry_state`` (per row) for row-wise Adagrad, else
        ``pool_state`` (per slot)."""
        return self.entry_state if self.config.optimizer.row_state_width else self.pool_state

    def counter(self, which: StoreCounter) -> int:
        return int(self.counters[which])

    def count(self, which: StoreCounter, amount: int = 1) -> None:
        """Add ``amount`` to a counter."""
        self.counters[which] += amount

    def counter_dict(self) -> Dict[str, int]:
        return dict(zip(COUNTER_NAMES, self.counters.tolist()))

    def allocated_bytes(self) -> Dict[str, int]:
        """Bytes allocated now, by category (what the memory budget bounds)."""
        def nbytes(*tensors: torch.Tensor) -> int:
            return sum(t.numel() * t.element_size() for t in tensors)

        return {
            "weights": nbytes(self.pool_weights, self.pool_scale),
            "optimizer": nbytes(self.pool_state, self.entry_state),
            "index": nbytes(self.entry_keys, self.entry_first, self.entry_chunks, self.hash_buckets),
            "utility": nbytes(self.slot_utility, self.sketch),
            "metadata": nbytes(self.table_rows, self.table_chunks, self.init_scale, self.table_salt, self.thresholds,
                               self.counters),
        }

    def total_bytes(self) -> int:
        return sum(self.allocated_bytes().values())

    # ---- lookup -----------------------------------------------------------------------------------------
    def chunks_of(self, row_keys: torch.Tensor) -> torch.Tensor:
        """Chunks per row (C_t of each row's table), int32 [U]."""
        return self.table_chunks[key_table(row_keys)]

    def find_entries(self, row_keys: torch.Tensor) -> torch.Tensor:
        """Index entry of each row, int64 [U] (-1 for rows without chunks): one probe per row."""
        return self.lookup_rows(row_keys)[0].to(torch.int64)

    def lookup(self, row_keys: torch.Tensor) -> torch.Tensor:
        """Live chunk slots of each row: int32 [U, max_chunks], -1 past the live prefix."""
        return self.lookup_rows(row_keys)[1]

    def live_rows(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(entries, row keys, chunk counts) of every stored row, sorted by row key."""
        entries = (self.entry_chunks > 0).nonzero().reshape(-1)
        keys = self.entry_keys[entries]
        order = torch.argsort(keys)
        entries = entries[order]
        return entries, keys[order], self.entry_chunks[entries].to(torch.int64)

    def live_keys(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(slots, chunk keys) of every live chunk, sorted by key (rows together, chunks in order)."""
        entries, keys, counts = self.live_rows()
        owner, within = run_positions(counts)
        return self.entry_first[entries].to(torch.int64)[owner] + within, keys[owner] + within

    def active_chunks(self, table: int, rows: torch.Tensor) -> torch.Tensor:
        """Live chunk count k_r of the given rows of ``table``."""
        keys = pack_row_key(torch.full_like(rows, table, dtype=torch.int64), rows.to(torch.int64))
        return (self.lookup(keys) >= 0).sum(1)

    # ---- the utility sketch of rows not stored ------------------------------------------------------------
    def sketch_estimate(self, row_keys: torch.Tensor) -> torch.Tensor:
        return utility_sketch.sketch_estimate(self.sketch, row_keys)

    def sketch_add(self, row_keys: torch.Tensor, amounts: torch.Tensor) -> None:
        utility_sketch.sketch_add(self.sketch, row_keys, amounts)

    def sketch_forget(self, row_keys: torch.Tensor, amounts: torch.Tensor) -> None:
        utility_sketch.sketch_forget(self.sketch, row_keys, amounts)

    # ---- allocation -----------------------------------------------------------------------------------------
    def used(self) -> Tuple[int, int]:
        """(slots, entries) below the high-water marks."""
        return self.counter(StoreCounter.HIGH_WATER), self.counter(StoreCounter.ROW_HIGH_WATER)

    def ensure_free(self, slots: int, rows: int = 0) -> Tuple[int, int]:
        """Re-size pool and index so that ``slots`` slots and ``rows`` entries are free above the high-water
        marks, if the budget holds that much (an array that needs more grows x1.5 where there is room; the
        other may give back room it does not use); returns (free slots, free entries)."""
        used = self.used()
        have = (self.capacity, self.row_capacity)
        need = (used[0] + slots, used[1] + rows)
        if (need[0] > have[0] or need[1] > have[1]) and self.plan.fits(*need):
            keep = (max(have[0], need[0]), max(have[1], need[1]))
            roomy = tuple(max(n, math.ceil(h * _GROWTH)) if n > h else h for n, h in zip(need, have))
            self.reallocate(*(self.plan.fit(keep, roomy) if self.plan.fits(*keep) else self.plan.fit(need, keep)))
        return self.capacity - used[0], self.row_capacity - used[1]

    def reallocate(self, slots: int, rows: int) -> None:
        """Re-size the pool to ``slots`` slots and the index to ``rows`` entries, keeping their contents (never
        below the high-water marks)."""
        def resized(t: torch.Tensor, n: int, fill: int) -> torch.Tensor:
            if t.shape[0] == n:
                return t
            if t.shape[0] > n:
                return t[:n].clone()
            return torch.cat([t, t.new_full((n - t.shape[0],) + tuple(t.shape[1:]), fill)])

        used_slots, used_rows = self.used()
        slots, rows = max(slots, used_slots), max(rows, used_rows)
        self.pool_weights = resized(self.pool_weights, slots, 0)
        self.pool_scale = resized(self.pool_scale, slots, 0)
        self.pool_state = resized(self.pool_state, slots, 0)
        self.slot_utility = resized(self.slot_utility, slots, 0)
        if rows != self.row_capacity:
            self.entry_keys = resized(self.entry_keys, rows, -1)
            self.entry_first = resized(self.entry_first, rows, 0)
            self.entry_chunks = resized(self.entry_chunks, rows, 0)
            self.entry_state = resized(self.entry_state, rows, 0)
            self.rebuild_hash()

    def rebuild_hash(self) -> None:
        """Re-insert every stored row into a fresh bucket array sized for the index's capacity."""
        num_buckets = num_buckets_for(self.row_capacity, self.config)
        buckets = ops.vhpi_rebuild(self.entry_keys, num_buckets, self.config.max_probe)
        if buckets.numel() == 0:
            raise RuntimeError(
                f"VHPI hash table: a row key found no free bucket within max_probe={self.config.max_probe} at load "
                f"{self.num_rows / num_buckets:.2f}; raise FiitedConfig.max_probe or lower max_load_factor"
            )
        self.hash_buckets = buckets
        self.count(StoreCounter.HASH_REBUILDS)

    def _insert(self, entries: torch.Tensor) -> None:
        inserted = ops.vhpi_insert_(self.hash_buckets, self.entry_keys, entries.to(torch.int32), self.config.max_probe)
        if inserted < entries.numel():  # a long probe run: rebuilding places keys afresh
            self.rebuild_hash()

    def write_chunks(self, slots: torch.Tensor, values: torch.Tensor) -> None:
        """Store float ``values`` [n, c] as the chunks at ``slots`` [n] (encoded, round to nearest)."""
        weights, scales = encode(values, self.pool_weights.dtype)
        self.pool_weights[slots] = weights
        self.pool_scale[slots] = scales

    def init_chunks(self, keys: torch.Tensor) -> torch.Tensor:
        """Init values ``[n, c]`` of the chunks with these keys: ``emb_opt.hashed_init`` of (table name, row,
        column, ``init_seed``) -- the same whichever chunk size, step, collection or shard."""
        c = self.config.chunk_size
        tables = key_table(keys)
        columns = key_chunk(keys).unsqueeze(1) * c + torch.arange(c, device=keys.device)
        return hashed_values(self.table_salt[tables], key_row(keys), columns, self.init_scale[tables],
                             self.config.init_seed)

    def append_rows(self, row_keys: torch.Tensor, counts: torch.Tensor, weights: torch.Tensor,
                    utility: torch.Tensor) -> None:
        """Store new rows (not stored yet) with ``counts`` [n] chunks each, whose chunks ``weights``
        [sum counts, c] and ``utility`` [sum counts] come row by row; the caller made room (``ensure_free``)."""
        n, total = row_keys.numel(), int(counts.sum())
        if n == 0:
            return
        first_slot = self.counter(StoreCounter.HIGH_WATER)
        self._add_entries(row_keys, first_slot + torch.cumsum(counts, 0) - counts, counts)
        run = slice(first_slot, first_slot + total)
        self.write_chunks(torch.arange(first_slot, first_slot + total, device=weights.device), weights)
        self.pool_state[run] = 0
        self.slot_utility[run] = utility
        self.counters[StoreCounter.HIGH_WATER] = first_slot + total

    def _add_entries(self, row_keys: torch.Tensor, first: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Index entries for new rows (runs at ``first``, ``counts`` chunks, zero optimizer state) at the entry
        high-water mark; returns them (int64 [n])."""
        start = self.counter(StoreCounter.ROW_HIGH_WATER)
        entries = torch.arange(start, start + row_keys.numel(), device=row_keys.device)
        self.entry_keys[entries] = row_keys
        self.entry_first[entries] = first.to(torch.int32)
        self.entry_chunks[entries] = counts.to(torch.int8)
        self.entry_state[entries] = 0
        self.counters[StoreCounter.ROW_HIGH_WATER] = start + entries.numel()
        self._insert(entries)
        return entries

    def place_rows(self, row_keys: torch.Tensor, old_slots: torch.Tensor, have: torch.Tensor, granted: torch.Tensor,
                   utility: torch.Tensor, start: Optional[ChunkValues] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Give rows ``row_keys`` [n] (holding ``have`` [n] chunks at ``old_slots`` [n, Cmax]) ``granted`` [n] more
        chunks each: every row gets a new run of ``have + granted`` slots at the high-water mark; rows that had
        chunks move there (chunks, state and utilities; the entry stays), new rows get an index entry. New
        chunks get their init values, zero optimizer state and utility ``utility`` [n] of their row; the caller
        made room. ``start``, if given, gives the chunks of new rows (``have == 0``) their values instead, from
        their chunk keys (``FiitedConfig.fallback_init``). Returns (the new runs' slots, int32 [n, Cmax] with -1
        past each run; the new rows' entries, int64 [number of rows with have == 0], in their order)."""
        length = have + granted
        first = self.counter(StoreCounter.HIGH_WATER) + torch.cumsum(length, 0) - length
        position = torch.arange(self.max_chunks, device=old_slots.device)
        moving = have > 0
        if bool(moving.any()):
            within = position < have[moving].unsqueeze(1)
            source = old_slots[moving][within].to(torch.int64)
            target = (first[moving].unsqueeze(1) + position)[within]
            for pool in (self.pool_weights, self.pool_scale, self.pool_state, self.slot_utility):
                pool[target] = pool[source]
                pool[source] = 0
            moved = self.find_entries(row_keys[moving])
            self.entry_first[moved] = first[moving].to(torch.int32)
            self.entry_chunks[moved] = length[moving].to(torch.int8)
            self.count(StoreCounter.RELOCATED_ROWS, int(moving.sum()))
        new = ~moving
        added = torch.zeros(0, dtype=torch.int64, device=row_keys.device)
        if bool(new.any()):
            added = self._add_entries(row_keys[new], first[new], length[new])
        owner, within = run_positions(granted)
        chunk = have[owner] + within
        new_slots = first[owner] + chunk
        values = self.init_chunks(row_keys[owner] + chunk)
        if start is not None:
            fresh = (have[owner] == 0).nonzero().reshape(-1)
            values[fresh] = start(row_keys[owner[fresh]] + chunk[fresh]).to(values.dtype)
        self.write_chunks(new_slots, values)
        self.pool_state[new_slots] = 0
        self.slot_utility[new_slots] = utility[owner]
        self.count(StoreCounter.HIGH_WATER, int(length.sum()))
        self.count(StoreCounter.ADMITTED_CHUNKS, int(granted.sum()))
        run = first.unsqueeze(1) + position
        return torch.where(position < length.unsqueeze(1), run, torch.full_like(run, -1)).to(torch.int32), added

    # ---- resize ---------------------------------------------------------------------------------------------
    def apply_resize(self, slots: torch.Tensor, keys: torch.Tensor, thresholds: torch.Tensor,
                     pruned_rows: torch.Tensor, pruned_utility: torch.Tensor, num_pruned: int) -> None:
        """Carry out a resize decided by ``emb_opt.resize``: remember the utility ``pruned_utility`` of the rows
        ``pruned_rows`` that lose chunks in the sketch, set the admission ``thresholds``, decay every utility by
        ``utility_decay``, and keep only the chunks ``slots`` (keys ``keys``, sorted, prefix-closed rows),
        compacted: moved to the front in key order, pool and index re-sized to them plus the reserve."""
        if num_pruned:
            self.sketch_add(pruned_rows, pruned_utility)
        self.thresholds.copy_(thresholds)
        self.slot_utility.mul_(self.config.utility_decay)
        self.sketch.mul_(self.config.utility_decay)
        self.count(StoreCounter.RESIZES)
        self.count(StoreCounter.PRUNED_CHUNKS, num_pruned)
        self.counters[StoreCounter.LAST_RESIZE_STEP] = self.counters[StoreCounter.STEP]
        self.counters[StoreCounter.DENIED_AT_LAST_RESIZE] = self.counters[StoreCounter.DENIED_ADMISSIONS]
        self._compact(slots, keys)

    def _compact(self, slots: torch.Tensor, keys: torch.Tensor) -> None:
        """Every resize compacts (``resizes`` counts both)."""
        n = keys.numel()
        row_keys, counts = torch.unique_consecutive(row_of_key(keys), return_counts=True)
        r = row_keys.numel()
        row_state = self.entry_state[self.find_entries(row_keys)]  # kept rows are stored: their entries exist
        reserve = self.config.reserve_fraction / (1.0 - self.config.reserve_fraction)
        start = self.initial_capacities()
        roomy = (max(start[0], n + math.ceil(n * reserve)), max(start[1], r + math.ceil(r * reserve)))
        capacity, row_capacity = self.plan.fit((max(n, 1), max(r, 1)), roomy)
        dev = self.pool_weights.device

        def compacted(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros((capacity,) + tuple(t.shape[1:]))
            out[:n] = t[slots]
            return out

        self.pool_weights, self.pool_scale = compacted(self.pool_weights), compacted(self.pool_scale)
        self.pool_state, self.slot_utility = compacted(self.pool_state), compacted(self.slot_utility)
        self.entry_keys = torch.full((row_capacity,), -1, dtype=torch.int64, device=dev)
        self.entry_first = torch.zeros(row_capacity, dtype=torch.int32, device=dev)
        self.entry_chunks = torch.zeros(row_capacity, dtype=torch.int8, device=dev)
        self.entry_keys[:r] = row_keys
        self.entry_first[:r] = (torch.cumsum(counts, 0) - counts).to(torch.int32)
        self.entry_chunks[:r] = counts.to(torch.int8)
        self.entry_state = torch.zeros(row_capacity, self.entry_state.shape[1], device=dev)
        self.entry_state[:r] = row_state
        self.counters[StoreCounter.HIGH_WATER] = n
        self.counters[StoreCounter.ROW_HIGH_WATER] = r
        self.rebuild_hash()

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        """What a checkpoint of this store must match to load: its layout version and the settings that shape
        its buffers."""
        return store_description(self)

    def checkpoint_problems(self, state_dict: Dict[str, Any], prefix: str) -> List[str]:
        """Why the store entries of ``state_dict`` (under ``prefix``) cannot be loaded into this store, if they
        cannot (``emb_opt.store_checkpoint``); empty when they can."""
        return checkpoint_problems(self, state_dict, prefix)


def run_positions(counts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For runs of ``counts`` [n] items laid end to end: the run of each item and its position in the run,
    int64 [sum counts] each (counts 2, 1, 3 -> runs 0 0 1 2 2 2, positions 0 1 0 0 1 2)."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return owner, torch.arange(owner.numel(), device=counts.device) - start
