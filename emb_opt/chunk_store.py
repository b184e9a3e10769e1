"""The VHPI (virtually-hashed, physically-indexed) chunk store behind a FIITED embedding collection.

One store holds every table of a collection. A virtual chunk (table t, row r, chunk k) is an int64 key
(layout in ``cuda_ext/csrc/common/vhpi_key.h``); a hash table (``hash_buckets``, int32 slot ids, linear
probing, bounded probe) maps it to a slot of a dense physical pool:

    pool_weights [S, c] float32   the chunks            slot_keys    [S] int64   key of each slot (-1 = free)
    pool_state   [S, w] float32   optimizer state       slot_utility [S] float32 decayed utility
    free_stack   [F]    int32     LIFO of freed slots   hash_buckets [H] int32   H = S / max_load_factor
    sketch       [2, M] float32   count-min sketch of utilities of chunks that are *not* stored
    thresholds   [Cmax] float32   admission threshold per chunk position (set by each resize)

Slots are handed out from the free stack (last freed, first reused) and then from the never-used region above
``counters['high_water']``; a resize that frees more than the reserve defragments (moves live chunks to the
front), so the free stack never holds more than the reserve and costs 4 bytes x reserve, not 4 per slot.
A row's live chunks are always a prefix 0..k_r-1; the missing tail reads as zeros. Nothing is O(#virtual
rows): k_r is found by probing (``lookup``), so a 10^8-row table costs only its live chunks. The allocated
capacity S never exceeds the budget's ``max_slots`` (grown x2 on demand, compacted when mostly empty), so
allocated bytes -- not just live bytes -- stay within the memory budget at all times.

Admission (``admit``, training forwards): a touched row whose next chunk position k has sketch estimate
>= thresholds[k] gets chunks while free slots last -- before the first resize thresholds are 0, so rows get
all their chunks on first touch while the budget allows. When free slots run short, the rows with the highest candidate
utility are served first (ties in a pseudo-random order, so no table or feature is favoured); the others get
no (more) chunks and read as zeros (counted in ``denied_admissions``, warned once) until a resize frees room.
New chunks get a deterministic pseudo-random init (``emb_opt.hashed_init``: a hash of table name, row and column,
uniform in +-init_scale of the table, TorchRec's default sqrt(1/rows); a re-admitted chunk starts again from
the same values), zero optimizer state, and the row's candidate utility.
Resizing (threshold choice, pruning, decay, compaction) lives in ``emb_opt.resize``.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import torch
from torch import nn

from cuda_ext import ops
from cuda_ext.reference.vhpi import MAX_CHUNKS, key_row, key_table
from emb_opt.budget import SKETCH_DEPTH, StorePlan, num_buckets_for
from emb_opt.config import FiitedConfig
from emb_opt.hashed_init import hashed_values, name_salt

# counters[...] indices (an int64 buffer so that checkpoints carry them)
STEP, HIGH_WATER, RESIZES, DENIED, ADMITTED, PRUNED, HASH_REBUILDS, COMPACTIONS, LAST_RESIZE_STEP, DENIED_AT_LAST_RESIZE = range(10)
COUNTER_NAMES = ["step", "high_water", "resizes", "denied_admissions", "admitted_chunks", "pruned_chunks",
                 "hash_rebuilds", "compactions", "last_resize_step", "denied_at_last_resize"]  # fmt: skip
_SKETCH_SEEDS = (101, 202)


class VhpiChunkStore(nn.Module):
    """Chunk pool + hash table + free list + utility sketch for the tables of one collection."""

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
        self._warned_full = False
        self._refuse_next_load = False  # set by the owning collection when it refuses a checkpoint
        c = config.chunk_size
        width = config.optimizer.state_width(c)
        capacity = min(plan.max_slots, config.initial_capacity)
        kw = dict(device=device)
        self.register_buffer("table_rows", torch.tensor(table_rows, dtype=torch.int64, **kw))
        self.register_buffer("table_chunks", torch.tensor(table_chunks, dtype=torch.int32, **kw))
        self.register_buffer("init_scale", torch.tensor(init_scales, dtype=torch.float32, **kw))
        self.register_buffer("table_salt", torch.tensor([name_salt(n) for n in table_names], dtype=torch.int64, **kw))
        self.register_buffer("pool_weights", torch.zeros(capacity, c, **kw))
        self.register_buffer("pool_state", torch.zeros(capacity, width, **kw))
        self.register_buffer("slot_keys", torch.full((capacity,), -1, dtype=torch.int64, **kw))
        self.register_buffer("slot_utility", torch.zeros(capacity, **kw))
        self.register_buffer("free_stack", torch.zeros(0, dtype=torch.int32, **kw))
        self.register_buffer("hash_buckets", torch.full((num_buckets_for(capacity, config),), -1, dtype=torch.int32, **kw))
        self.register_buffer("sketch", torch.zeros(SKETCH_DEPTH, plan.sketch_width, **kw))
        self.register_buffer("thresholds", torch.zeros(self.max_chunks, **kw))
        self.register_buffer("counters", torch.zeros(len(COUNTER_NAMES), dtype=torch.int64, **kw))

    def _apply(self, fn, recurse=True):
        """Device moves apply; dtype casts (``.half()``, ``.double()``, ``.to(torch.bfloat16)``) do not: the pool,
        optimizer state and utilities stay float32 (the kernels' type and the budget's accounting), so casting a
        model neither rounds trained chunks nor changes its memory. The collection casts its output instead."""
        probe = fn(torch.zeros(0, device=self.pool_weights.device))
        if probe.dtype == torch.float32:
            return super()._apply(fn, recurse)
        return super()._apply(lambda t: t.to(device=probe.device), recurse)

    # ---- sizes ------------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.slot_keys.numel()

    @property
    def num_free(self) -> int:
        return self.free_stack.numel() + self.capacity - int(self.counters[HIGH_WATER])

    @property
    def num_live(self) -> int:
        return self.capacity - self.num_free

    @property
    def step(self) -> int:
        return int(self.counters[STEP])

    def counter_dict(self) -> Dict[str, int]:
        return dict(zip(COUNTER_NAMES, self.counters.tolist()))

    def allocated_bytes(self) -> Dict[str, int]:
        """Bytes allocated now, by category (what the memory budget bounds)."""
        def nbytes(*tensors: torch.Tensor) -> int:
            return sum(t.numel() * t.element_size() for t in tensors)

        return {
            "weights": nbytes(self.pool_weights),
            "optimizer": nbytes(self.pool_state),
            "index": nbytes(self.slot_keys, self.hash_buckets, self.free_stack),
            "utility": nbytes(self.slot_utility, self.sketch),
            "metadata": nbytes(self.table_rows, self.table_chunks, self.init_scale, self.table_salt, self.thresholds,
                               self.counters),
        }

    def total_bytes(self) -> int:
        return sum(self.allocated_bytes().values())

    # ---- lookup -----------------------------------------------------------------------------------
    def chunks_of(self, row_keys: torch.Tensor) -> torch.Tensor:
        """Chunks per row (C_t of each row's table), int32 [U]."""
        return self.table_chunks[key_table(row_keys)]

    def lookup(self, row_keys: torch.Tensor) -> torch.Tensor:
        """Live chunk slots of each row: int32 [U, max_chunks], -1 past the live prefix."""
        return ops.vhpi_lookup(self.hash_buckets, self.slot_keys, row_keys, self.chunks_of(row_keys),
                               self.max_chunks, self.config.max_probe)

    def live_keys(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(slots, keys) of every live chunk, sorted by key (rows together, chunks in order)."""
        slots = (self.slot_keys >= 0).nonzero().reshape(-1)
        keys = self.slot_keys[slots]
        order = torch.argsort(keys)
        return slots[order], keys[order]

    def active_chunks(self, table: int, rows: torch.Tensor) -> torch.Tensor:
        """Live chunk count k_r of the given rows of ``table`` (derived by probing; nothing per row is stored)."""
        from cuda_ext.reference.vhpi import pack_row_key

        keys = pack_row_key(torch.full_like(rows, table, dtype=torch.int64), rows.to(torch.int64))
        return (self.lookup(keys) >= 0).sum(1)

    # ---- the utility sketch ---------------------------------------------------------------------------
    def _sketch_cells(self, row_keys: torch.Tensor) -> List[torch.Tensor]:
        width = self.sketch.shape[1]
        return [ops.mix_hash(row_keys, width, seed) for seed in _SKETCH_SEEDS]

    def sketch_estimate(self, row_keys: torch.Tensor) -> torch.Tensor:
        cells = self._sketch_cells(row_keys)
        return torch.minimum(self.sketch[0, cells[0]], self.sketch[1, cells[1]])

    def sketch_add(self, row_keys: torch.Tensor, amounts: torch.Tensor) -> None:
        if row_keys.numel() == 0:
            return
        for depth, cells in enumerate(self._sketch_cells(row_keys)):
            self.sketch[depth].index_add_(0, cells, amounts.to(self.sketch.dtype))

    def sketch_forget(self, row_keys: torch.Tensor, amounts: torch.Tensor) -> None:
        """Remove ``amounts`` of utility (clamped at 0): those rows' candidates were just admitted."""
        if row_keys.numel() == 0:
            return
        for depth, cells in enumerate(self._sketch_cells(row_keys)):
            self.sketch[depth].index_add_(0, cells, -amounts.to(self.sketch.dtype))
            self.sketch[depth][cells] = self.sketch[depth][cells].clamp(min=0)

    # ---- slots -------------------------------------------------------------------------------------
    def _pop(self, n: int) -> torch.Tensor:
        """``n`` free slots: the most recently freed first, then never-used ones (caller checked ``num_free``)."""
        reused = min(n, self.free_stack.numel())
        taken = self.free_stack[self.free_stack.numel() - reused :].flip(0)
        self.free_stack = self.free_stack[: self.free_stack.numel() - reused].clone()
        high = int(self.counters[HIGH_WATER])
        fresh = torch.arange(high, high + n - reused, dtype=torch.int32, device=self.free_stack.device)
        self.counters[HIGH_WATER] = high + n - reused
        return torch.cat([taken, fresh])

    def release(self, slots: torch.Tensor) -> None:
        """Free ``slots`` (push on the LIFO free list, clear key/state/utility). The caller rebuilds the hash."""
        if slots.numel() == 0:
            return
        self.free_stack = torch.cat([self.free_stack, slots.to(torch.int32)])
        self.slot_keys[slots] = -1
        self.slot_utility[slots] = 0
        self.pool_state[slots] = 0
        self.pool_weights[slots] = 0

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        extra = capacity - old
        c = self.config.chunk_size
        dev = self.pool_weights.device
        self.pool_weights = torch.cat([self.pool_weights, torch.zeros(extra, c, device=dev)])
        self.pool_state = torch.cat([self.pool_state, torch.zeros(extra, self.pool_state.shape[1], device=dev)])
        self.slot_keys = torch.cat([self.slot_keys, torch.full((extra,), -1, dtype=torch.int64, device=dev)])
        self.slot_utility = torch.cat([self.slot_utility, torch.zeros(extra, device=dev)])
        self.rebuild_hash()

    def ensure_free(self, n: int) -> int:
        """Grow (x2, up to the budget's max_slots) until ``n`` slots are free if possible; returns #free."""
        if self.num_free >= n or self.capacity >= self.plan.max_slots:
            return self.num_free
        need = self.num_live + n
        capacity = self.capacity
        while capacity < need:
            capacity *= 2
        self._grow(min(capacity, self.plan.max_slots))
        return self.num_free

    def rebuild_hash(self, num_buckets: int = 0) -> None:
        """Re-insert every live key into a fresh bucket array sized for the capacity (drops deleted keys)."""
        num_buckets = num_buckets or num_buckets_for(self.capacity, self.config)
        buckets = ops.vhpi_rebuild(self.slot_keys, num_buckets, self.config.max_probe)
        if buckets.numel() == 0:
            raise RuntimeError(
                f"VHPI hash table: a key found no free bucket within max_probe={self.config.max_probe} at load "
                f"{self.num_live / num_buckets:.2f}; raise FiitedConfig.max_probe or lower max_load_factor"
            )
        self.hash_buckets = buckets
        self.counters[HASH_REBUILDS] += 1

    def _insert(self, slots: torch.Tensor) -> None:
        inserted = ops.vhpi_insert_(self.hash_buckets, self.slot_keys, slots, self.config.max_probe)
        if inserted < slots.numel():  # a long probe run: rebuilding in slot order places keys afresh
            self.rebuild_hash()

    def _init_chunks(self, keys: torch.Tensor) -> torch.Tensor:
        """Init values ``[n, c]`` of the chunks with these keys: ``emb_opt.hashed_init`` of (table name, row,
        column, ``init_seed``) -- the same whichever chunk size, step, collection or shard."""
        c = self.config.chunk_size
        tables = key_table(keys)
        columns = (keys & (MAX_CHUNKS - 1)).unsqueeze(1) * c + torch.arange(c, device=keys.device)
        return hashed_values(self.table_salt[tables], key_row(keys), columns, self.init_scale[tables],
                             self.config.init_seed)

    def write_chunks(self, slots: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor, utility: torch.Tensor) -> None:
        self.slot_keys[slots] = keys
        self.pool_weights[slots] = weights
        self.pool_state[slots] = 0
        self.slot_utility[slots] = utility
        self._insert(slots.to(torch.int32))

    # ---- admission ---------------------------------------------------------------------------------
    def admit(self, row_keys: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Give touched rows the chunks their candidate utility earns (see the module docstring).

        row_keys [U] int64, slots [U, max_chunks] int32 from ``lookup``; returns slots with the new chunks.
        """
        chunks = self.chunks_of(row_keys).to(torch.int64)
        live = (slots >= 0).sum(1)
        wanting = (live < chunks).nonzero().reshape(-1)
        if wanting.numel() == 0:
            return slots
        estimate = self.sketch_estimate(row_keys[wanting])
        theta = torch.cummax(self.thresholds, 0).values
        earned = (theta.unsqueeze(0) <= estimate.unsqueeze(1)).sum(1)
        wanted = (torch.minimum(earned, chunks[wanting]) - live[wanting]).clamp(min=0)
        keep = wanted > 0
        rows, wanted, estimate = wanting[keep], wanted[keep], estimate[keep]
        total = int(wanted.sum())
        if total == 0:
            return slots
        free = self.ensure_free(total)
        granted = wanted
        if free < total:  # not enough room: highest candidate utility first, ties in a pseudo-random order
            order = torch.argsort(ops.mix_hash(row_keys[rows], 1 << 62, self.step))  # the tie order
            order = order[torch.argsort(estimate[order], descending=True, stable=True)]
            rows, wanted, estimate = rows[order], wanted[order], estimate[order]
            before = torch.cumsum(wanted, 0) - wanted
            granted = (free - before).clamp(min=0).minimum(wanted)
            self.counters[DENIED] += total - free
            if not self._warned_full:
                self._warned_full = True
                warnings.warn(
                    f"FIITED store full ({self.capacity} chunk slots = the memory budget): {total - free} chunk(s) "
                    "of rows in this batch got no slot and read as zeros until a resize frees room. "
                    "(Warned once; see counters['denied_admissions'].)",
                    RuntimeWarning,
                    stacklevel=3,
                )
        count = int(granted.sum())
        if count == 0:
            return slots
        owner = torch.repeat_interleave(rows, granted)
        first = torch.cumsum(granted, 0) - granted
        within = torch.arange(count, device=slots.device) - torch.repeat_interleave(first, granted)
        position = live[owner] + within
        new_slots = self._pop(count)
        keys = row_keys[owner] + position
        self.write_chunks(new_slots.to(torch.int64), keys, self._init_chunks(keys), torch.repeat_interleave(estimate, granted))
        slots[owner, position] = new_slots
        got = granted > 0
        self.sketch_forget(row_keys[rows[got]], estimate[got])
        self.counters[ADMITTED] += count
        return slots

    # ---- checkpoints ---------------------------------------------------------------------------------
    def checkpoint_problems(self, state_dict: Dict[str, torch.Tensor], prefix: str) -> List[str]:
        """Why the store entries of ``state_dict`` (under ``prefix``) cannot be loaded into this store, if they
        cannot: other tables, chunk size or optimizer, or more slots / another sketch than this budget has."""
        def entry(name: str):
            return state_dict.get(prefix + name)

        for name in ("table_rows", "table_chunks"):
            value = entry(name)
            if value is not None and not torch.equal(value.to(getattr(self, name).device), getattr(self, name)):
                return [f"{prefix}{name}: checkpoint tables {value.tolist()} differ from this module's "
                        f"{getattr(self, name).tolist()} (tables {self.table_names})"]
        problems = []
        c, width = self.config.chunk_size, self.config.optimizer.state_width(self.config.chunk_size)
        weights, state, keys, sketch = entry("pool_weights"), entry("pool_state"), entry("slot_keys"), entry("sketch")
        if weights is not None and (weights.dim() != 2 or weights.shape[1] != c):
            problems.append(f"{prefix}pool_weights: checkpoint chunks of shape {tuple(weights.shape)[1:]} do not match "
                            f"this module's chunk_size {c}")
        if state is not None and (state.dim() != 2 or state.shape[1] != width):
            problems.append(f"{prefix}pool_state: checkpoint optimizer state has {tuple(state.shape)[1:]} floats per chunk; "
                            f"this module's optimizer {self.config.optimizer.value!r} keeps {width} -- build it with "
                            "the checkpoint's optimizer")
        if keys is not None and keys.numel() > self.plan.max_slots:
            problems.append(f"{prefix}slot_keys: the checkpoint holds {keys.numel()} chunk slots, more than this "
                            f"module's memory budget ({self.plan.budget_bytes} bytes) allows ({self.plan.max_slots}) -- "
                            "build it with the checkpoint's memory_budget")
        if sketch is not None and tuple(sketch.shape) != tuple(self.sketch.shape):
            problems.append(f"{prefix}sketch: the checkpoint's utility sketch is {tuple(sketch.shape)}, this module's "
                            f"{tuple(self.sketch.shape)}: it was saved under another memory_budget (this one: "
                            f"{self.plan.budget_bytes} bytes) or sketch_fraction")
        return problems

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # nothing is changed unless the whole checkpoint fits (a refused load leaves the training state intact)
        problems = self.checkpoint_problems(state_dict, prefix)
        refused, self._refuse_next_load = self._refuse_next_load, False
        if problems or refused:
            error_msgs.extend(problems)
            return
        # the pool's size changes during training: adopt the checkpoint's sizes before the copy
        for name, buffer in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buffer is not None and state_dict[key].shape != buffer.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if self.counters.numel() < len(COUNTER_NAMES):  # a checkpoint from before the pressure-resize counters
            old = self.counters.numel()
            self.counters = torch.cat([self.counters, self.counters.new_zeros(len(COUNTER_NAMES) - old)])
            self.counters[DENIED_AT_LAST_RESIZE] = self.counters[DENIED]  # denials before the load are not pressure
