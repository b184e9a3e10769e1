"""Checkpoints of a VHPI store: what they carry besides the buffers, and the validation a load runs first.

A store's ``_extra_state`` is ``store_description``: the layout version of its buffers and the settings that
shape them (chunk size, optimizer, budget). ``checkpoint_problems`` is the whole validation a load runs before
it touches the store; a checkpoint with any problem is refused with errors naming the buffer and the first bad
position, and the store keeps its state. It checks, vectorised, O(slots + entries):

* the layout version (any other is refused), the settings (weight dtype included) and the tables;
* that the store comes whole (a ``strict=False`` load of part of one would leave arrays of two stores side by
  side), every buffer's dtype and shape, and that the sizes fit the budget;
* the contents: counters in range and consistent; each stored row's key (its table exists, its row is inside
  the table, no chunk bits), its chunk count (1..C_t), its run of slots inside the high-water mark and owned by
  no other row, no key stored twice, empty entries empty; every hash bucket pointing at a stored entry, each
  entry in exactly one bucket and found by a probe; finite weights, non-negative finite optimizer state,
  utilities and sketch, non-negative thresholds.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch

from cuda_ext import ops
from cuda_ext.layout import key_chunk, key_row, key_table
from emb_opt.budget import num_buckets_for
from emb_opt.store_counters import NUM_COUNTERS, StoreCounter

# ``store`` below is the ``emb_opt.chunk_store.VhpiChunkStore`` being saved or loaded into (typed Any: the store
# module imports this one)

LAYOUT_VERSION = 1
SLOT_ARRAYS = ("pool_weights", "pool_scale", "pool_state", "slot_utility")
ENTRY_ARRAYS = ("entry_keys", "entry_first", "entry_chunks", "entry_state")
STORE_STATE = SLOT_ARRAYS + ENTRY_ARRAYS + ("hash_buckets", "sketch", "thresholds", "counters")
# every buffer's dtype but the pool's, which is the store's weight_dtype
_DTYPES = {"pool_scale": torch.float32, "pool_state": torch.float32, "slot_utility": torch.float32,
           "entry_keys": torch.int64, "entry_first": torch.int32, "entry_chunks": torch.int8,
           "entry_state": torch.float32, "hash_buckets": torch.int32, "sketch": torch.float32,
           "thresholds": torch.float32, "counters": torch.int64}  # fmt: skip
_SETTINGS = ("optimizer", "chunk_size", "weight_dtype", "budget_bytes")


def store_description(store: Any) -> Dict[str, Any]:
    """The store's ``_extra_state``: ``layout_version`` and the settings a checkpoint must match."""
    return {"layout_version": LAYOUT_VERSION, "optimizer": store.config.optimizer.value,
            "chunk_size": store.config.chunk_size, "weight_dtype": store.config.weight_dtype,
            "budget_bytes": store.plan.budget_bytes}


def checkpoint_problems(store: Any, state_dict: Mapping[str, Any], prefix: str) -> List[str]:
    """Why the store entries of ``state_dict`` (under ``prefix``) cannot be loaded into ``store``; empty when
    they can (see the module docstring)."""
    where = prefix or "store."
    if store.pending_backward:
        return [f"{where}: {store.pending_backward} forward(s) still wait for their backward, which would write into "
                "the loaded store; load before the forward or after the backward"]
    present = [n for n in STORE_STATE if prefix + n in state_dict]
    if not present:
        return []  # nothing of this store in the checkpoint (strict loads name the missing keys)
    description = state_dict.get(prefix + "_extra_state")
    if isinstance(description, Mapping) and description.get("kind") == "fiited_inference":
        return [f"{where}_extra_state: the checkpoint is an inference export (emb_opt.export_inference: live chunks, "
                "no training state); it loads into an export of the model, not into a training collection"]
    if not isinstance(description, Mapping) or "layout_version" not in description:
        return [f"{where}_extra_state: the checkpoint does not say its store layout version; only layout_version "
                f"{LAYOUT_VERSION} loads (a checkpoint of an unreleased layout, or not of a FIITED store)"]
    if description["layout_version"] != LAYOUT_VERSION:
        return [f"{where}_extra_state: the checkpoint's store layout_version {description['layout_version']!r} is not "
                f"this version's {LAYOUT_VERSION}; it cannot be loaded"]
    problems = []
    mine = store_description(store)
    differ = [f"{k} {description[k]!r} (this module: {mine[k]!r})" for k in _SETTINGS
              if k in description and description[k] != mine[k]]
    if differ:
        problems.append(f"{where}: checkpoint was saved with {', '.join(differ)}; build the module with the "
                        "checkpoint's settings to load it")
    for name in ("table_rows", "table_chunks", "init_scale", "table_salt"):
        value = state_dict.get(prefix + name)
        mine_value = getattr(store, name)
        if value is not None and not (isinstance(value, torch.Tensor) and value.shape == mine_value.shape
                                      and torch.equal(value.to(mine_value.device, mine_value.dtype), mine_value)):
            found = value.tolist() if isinstance(value, torch.Tensor) else type(value).__name__
            return problems + [f"{prefix}{name}: checkpoint tables {found} differ from this module's "
                               f"{mine_value.tolist()} (tables {store.table_names})"]
    if len(present) < len(STORE_STATE):
        missing = [prefix + n for n in STORE_STATE if n not in present]
        return problems + [f"{', '.join(missing)}: not in the checkpoint, which holds the rest of this store's state; "
                           "a store loads whole or not at all"]
    buffers = {n: state_dict[prefix + n] for n in STORE_STATE}
    problems += _shape_problems(store, buffers, prefix)
    if problems:
        return problems
    return _content_problems(store, {n: t.detach().to(store.pool_weights.device) for n, t in buffers.items()}, prefix)


def _shape_problems(store: Any, b: Dict[str, Any], prefix: str) -> List[str]:
    dtypes = dict(_DTYPES, pool_weights=store.pool_weights.dtype)
    problems = [f"{prefix}{n}: expected a {dtypes[n]} tensor, got "
                f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}"
                for n, t in b.items() if not isinstance(t, torch.Tensor) or t.dtype != dtypes[n]]
    if problems:
        return problems
    expected_dims = {"pool_weights": 2, "pool_scale": 2, "pool_state": 2, "entry_state": 2, "sketch": 2}
    problems = [f"{prefix}{n}: expected {expected_dims.get(n, 1)} dimensions, got shape {tuple(t.shape)}"
                for n, t in b.items() if t.dim() != expected_dims.get(n, 1)]
    if problems:
        return problems
    for group in (SLOT_ARRAYS, ENTRY_ARRAYS):
        sizes = {n: int(b[n].shape[0]) for n in group}
        if len(set(sizes.values())) > 1:
            problems.append(f"{prefix}{group[0]}: the checkpoint's {', '.join(f'{n} ({k})' for n, k in sizes.items())} "
                            "differ in length; it is damaged")
    optimizer, c = store.config.optimizer, store.config.chunk_size
    if b["pool_weights"].shape[1] != c:
        problems.append(f"{prefix}pool_weights: checkpoint chunks of shape {tuple(b['pool_weights'].shape)[1:]} do not "
                        f"match this module's chunk_size {c}")
    if b["pool_scale"].shape[1] != store.pool_scale.shape[1]:
        problems.append(f"{prefix}pool_scale: the checkpoint keeps {int(b['pool_scale'].shape[1])} scale(s) per chunk, "
                        f"this module's {store.config.weight_dtype} pool {store.pool_scale.shape[1]}; it is damaged")
    found = (int(b["pool_state"].shape[1]), int(b["entry_state"].shape[1]))
    if found != (optimizer.state_width(c), optimizer.row_state_width):
        problems.append(f"{prefix}pool_state: the checkpoint's optimizer state ({_state_layout(*found)}) does not "
                        f"match: this module's optimizer {optimizer.value!r} keeps "
                        f"{_state_layout(optimizer.state_width(c), optimizer.row_state_width)} -- build it with the "
                        "checkpoint's optimizer")
    slots, rows = int(b["pool_weights"].shape[0]), int(b["entry_keys"].shape[0])
    if slots < 1 or rows < 1:
        problems.append(f"{prefix}pool_weights: a store holds at least one slot and one entry, the checkpoint "
                        f"{slots} and {rows}; it is damaged")
    elif not store.plan.fits(slots, rows):
        problems.append(f"{prefix}pool_weights: the checkpoint holds {slots} chunk slots and {rows} rows, more than "
                        f"this module's memory budget ({store.plan.budget_bytes} bytes) allows -- build it with the "
                        "checkpoint's memory_budget")
    if tuple(b["sketch"].shape) != tuple(store.sketch.shape):
        problems.append(f"{prefix}sketch: the checkpoint's utility sketch is {tuple(b['sketch'].shape)}, this module's "
                        f"{tuple(store.sketch.shape)}: it was saved under another memory_budget (this one: "
                        f"{store.plan.budget_bytes} bytes) or sketch_fraction")
    expected = {"hash_buckets": num_buckets_for(rows, store.config), "thresholds": store.max_chunks,
                "counters": NUM_COUNTERS}
    problems += [f"{prefix}{n}: expected {k} entries for this store, got {b[n].numel()}"
                 for n, k in expected.items() if b[n].numel() != k]
    return problems


def _content_problems(store: Any, b: Dict[str, torch.Tensor], prefix: str) -> List[str]:
    """Contents, in an order where each check may rely on the ones before it; the first failing check wins."""
    counters = b["counters"]
    slots, rows = b["pool_weights"].shape[0], b["entry_keys"].numel()
    check = Checker(prefix)
    check.first_bad("counters", counters < 0, counters, "a counter must be >= 0")
    high_water, row_high_water = int(counters[StoreCounter.HIGH_WATER]), int(counters[StoreCounter.ROW_HIGH_WATER])
    check.that("counters", high_water <= slots,
               f"high_water {high_water} is past the pool's {slots} slots")
    check.that("counters", row_high_water <= rows,
               f"row_high_water {row_high_water} is past the index's {rows} entries")
    check.that("counters", int(counters[StoreCounter.LAST_RESIZE_STEP]) <= int(counters[StoreCounter.STEP]),
               "last_resize_step is after the current step")
    check.that("counters", int(counters[StoreCounter.DENIED_AT_LAST_RESIZE])
               <= int(counters[StoreCounter.DENIED_ADMISSIONS]), "denied_at_last_resize exceeds denied_admissions")
    if check.problems:
        return check.problems
    index_problems(check, b, store.table_rows, store.table_chunks, high_water, row_high_water, store.max_chunks,
                   store.config.max_probe)
    if check.problems:
        return check.problems
    for name in ("pool_weights", "pool_scale", "pool_state", "slot_utility", "entry_state", "sketch"):
        t = b[name].reshape(-1)
        if t.is_floating_point():  # an int8 pool's weights are integers
            check.first_bad(name, ~torch.isfinite(t), t, "must be finite")
    for name in ("pool_scale", "pool_state", "slot_utility", "entry_state", "sketch", "thresholds"):
        t = b[name].reshape(-1)
        check.first_bad(name, torch.isnan(t) | (t < 0), t, "must be >= 0")
    return check.problems


def index_problems(check: "Checker", b: Mapping[str, torch.Tensor], table_rows: torch.Tensor,
                   table_chunks: torch.Tensor, high_water: int, row_high_water: int, max_chunks: int,
                   max_probe: int) -> None:
    """The row index of a store (training or inference) against its pool, into ``check``: each stored row's key
    (its table exists, its row is inside the table, no chunk bits), chunk count (1..C_t), run of slots inside
    ``[0, high_water)`` and owned by no other row, no key stored twice, empty entries (and every entry at or past
    ``row_high_water``) empty; every hash bucket pointing at a stored entry, each entry in exactly one bucket and
    found by a probe of at most ``max_probe`` buckets. Stops at the first group of checks that fails."""
    keys, first, chunks = b["entry_keys"], b["entry_first"].to(torch.int64), b["entry_chunks"].to(torch.int64)
    rows = keys.numel()
    stored = chunks > 0
    index = torch.arange(rows, device=keys.device)
    check.first_bad("entry_chunks", chunks < 0, chunks, "a chunk count must be >= 0")
    check.first_bad("entry_keys", ~stored & (keys != -1), keys, "an entry without chunks must have key -1")
    check.first_bad("entry_chunks", stored & (index >= row_high_water), chunks,
                    f"an entry at or past row_high_water {row_high_water} must be empty")
    num_tables = table_rows.numel()
    table = key_table(keys).clamp(0, num_tables - 1)
    check.first_bad("entry_keys", stored & ((keys < 0) | (key_table(keys) >= num_tables)), keys,
                    f"the key's table is not one of this store's {num_tables} tables")
    if check.problems:
        return
    check.first_bad("entry_keys", stored & (key_chunk(keys) != 0), keys, "a row key's chunk bits must be 0")
    check.first_bad("entry_keys", stored & (key_row(keys) >= table_rows[table]), keys,
                    "the key's row is outside its table")
    check.first_bad("entry_chunks", stored & (chunks > table_chunks[table].to(torch.int64)), chunks,
                    "more chunks than the key's table has per row")
    check.first_bad("entry_first", stored & ((first < 0) | (first + chunks > high_water)), first,
                    f"the row's run of slots must lie inside [0, high_water = {high_water})")
    if check.problems:
        return
    live = stored.nonzero().reshape(-1)
    order = torch.argsort(first[live])
    runs, ends = first[live][order], (first + chunks)[live][order]
    overlap = (runs[1:] < ends[:-1]).nonzero().reshape(-1)
    if overlap.numel():
        e = int(live[order][int(overlap[0]) + 1])
        check.problems.append(f"{check.prefix}entry_first[{e}] = {int(first[e])}: the row's slots overlap another "
                              "row's run; no slot may belong to two rows")
    sorted_keys = torch.sort(keys[live]).values
    repeated = (sorted_keys[1:] == sorted_keys[:-1]).nonzero().reshape(-1)
    if repeated.numel():
        check.problems.append(f"{check.prefix}entry_keys: row key {int(sorted_keys[int(repeated[0])])} is stored twice")
    if check.problems:
        return
    buckets = b["hash_buckets"].to(torch.int64)
    check.first_bad("hash_buckets", (buckets < -1) | (buckets >= rows), buckets, f"must be -1 or an entry in [0, {rows})")
    if not check.problems:
        check.first_bad("hash_buckets", (buckets >= 0) & ~stored[buckets.clamp(min=0)], buckets,
                        "points at an entry that holds no row")
    if not check.problems:
        used = buckets[buckets >= 0]
        if used.numel() != live.numel() or torch.unique(used).numel() != used.numel():
            check.problems.append(f"{check.prefix}hash_buckets: {used.numel()} buckets point at entries, but "
                                  f"{live.numel()} rows are stored; each stored row must be in exactly one bucket")
    if not check.problems and live.numel():
        found, _ = ops.vhpi_lookup_runs(b["hash_buckets"], keys, b["entry_first"], b["entry_chunks"], keys[live],
                                        max_chunks, max_probe)
        lost = (found.to(torch.int64) != live).nonzero().reshape(-1)
        if lost.numel():
            e = int(live[int(lost[0])])
            check.problems.append(f"{check.prefix}hash_buckets: the row key {int(keys[e])} of entry {e} is not found "
                                  f"by a probe of at most {max_probe} buckets; the hash table is damaged")


class Checker:
    """Collects problems as '<prefix><buffer>[<first bad position>] = <value>: <why>'."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.problems: List[str] = []

    def that(self, name: str, ok: bool, why: str) -> None:
        if not ok:
            self.problems.append(f"{self.prefix}{name}: {why}; the checkpoint is damaged")

    def first_bad(self, name: str, bad: torch.Tensor, values: torch.Tensor, why: str) -> Optional[int]:
        positions = bad.nonzero().reshape(-1)
        if not positions.numel():
            return None
        p = int(positions[0])
        self.problems.append(f"{self.prefix}{name}[{p}] = {values[p].item()}: {why} ({positions.numel()} such "
                             "position(s)); the checkpoint is damaged")
        return p


def _state_layout(per_chunk: int, per_row: int) -> str:
    """``1 per row``, ``16 per chunk``, ``none``: an optimizer's state floats, for messages."""
    parts = ([f"{per_row} per row"] if per_row else []) + ([f"{per_chunk} per chunk"] if per_chunk else [])
    return " and ".join(parts) or "none"

