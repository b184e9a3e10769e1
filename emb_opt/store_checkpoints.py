"""Loading a VHPI store checkpoint: what makes one unloadable, and the older chunk-keyed layout, converted.

``checkpoint_problems`` names why a checkpoint cannot load into a store (other tables, chunk size, optimizer,
more than the budget holds); the load is then refused and the store keeps its state.

Before the row index, the store keyed every chunk: ``slot_keys [S] int64`` (the chunk key of each slot, -1 =
free), ``hash_buckets`` over slots and a ``free_stack`` of freed slots, with 8 or 10 counters. Its rows were
prefix-closed like today's, so each one becomes one run: live chunks are gathered in key order (rows together,
chunks in order) with their optimizer state and utilities, and the row entries, the hash table and the
high-water counters are built for them. Everything the training state holds survives; the arrays come out
sized to the live chunks and grow again on demand.

Before ``entry_state``, row-wise Adagrad kept its one accumulator per row in the ``pool_state [S, 1]`` float of
the slot of the row's chunk 0 (a float in every slot, used in one of them); it moves to the row's entry
(``slot_state_to_entry_state``), and ``pool_state`` becomes ``[S, 0]``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, MutableMapping

import torch

from cuda_ext import ops
from cuda_ext.reference.vhpi import MAX_CHUNKS
from emb_opt.budget import num_buckets_for
from emb_opt.chunk_store import run_positions
from emb_opt.config import FiitedConfig

if TYPE_CHECKING:  # pragma: no cover
    from emb_opt.chunk_store import VhpiChunkStore

# the buffers that make up a store's training state, loaded together; those of one length (slots, entries)
_SLOT_ARRAYS = ("pool_weights", "pool_state", "slot_utility")
_ENTRY_ARRAYS = ("entry_keys", "entry_first", "entry_chunks", "entry_state")
_STORE_STATE = _SLOT_ARRAYS + _ENTRY_ARRAYS + ("hash_buckets", "sketch", "thresholds", "counters")
# counter positions shared by both layouts; the row-keyed one appends row_high_water and relocated_rows
_HIGH_WATER, _DENIED, _DENIED_AT_LAST_RESIZE, _ROW_HIGH_WATER, _COUNTERS = 1, 3, 9, 10, 12


def is_chunk_keyed(buffers: MutableMapping[str, torch.Tensor], prefix: str = "") -> bool:
    return prefix + "slot_keys" in buffers and prefix + "entry_keys" not in buffers


def convert_chunk_keyed_checkpoint(state_dict: MutableMapping[str, torch.Tensor], prefix: str,
                                   config: FiitedConfig) -> bool:
    """Rewrite the ``prefix``-ed store entries of ``state_dict`` from the chunk-keyed layout to the row-keyed
    one, in place; returns whether there was anything to convert."""
    if not is_chunk_keyed(state_dict, prefix):
        return False
    names = ("slot_keys", "free_stack", "hash_buckets", "pool_weights", "pool_state", "slot_utility", "counters")
    old = {n: state_dict.pop(prefix + n) for n in names if prefix + n in state_dict}
    state_dict.update({prefix + n: t for n, t in row_keyed_buffers(old, config, prefix).items()})
    return True


def has_slot_rowwise_state(buffers: Mapping[str, torch.Tensor], prefix: str = "") -> bool:
    """A row-keyed checkpoint of row-wise Adagrad from before ``entry_state`` (accumulators in ``pool_state``)."""
    state = buffers.get(prefix + "pool_state")
    return (prefix + "entry_keys" in buffers and prefix + "entry_state" not in buffers and state is not None
            and state.dim() == 2 and state.shape[1] == 1)


def convert_slot_rowwise_state(state_dict: MutableMapping[str, torch.Tensor], prefix: str,
                               config: FiitedConfig) -> bool:
    """Give an older row-keyed checkpoint its ``entry_state``, in place: row-wise Adagrad's accumulators move
    from chunk-0 slots to the row entries; SGD and Adagrad get an empty ``[R, 0]`` (a store of another optimizer
    gets the checkpoint unchanged and names the mismatch). Returns whether there was anything to convert."""
    keys = state_dict.get(prefix + "entry_keys")
    if keys is None or prefix + "entry_state" in state_dict:
        return False
    if not config.optimizer.row_state_width:
        state = state_dict.get(prefix + "pool_state")
        if state is not None and state.dim() == 2 and state.shape[1] == config.optimizer.state_width(config.chunk_size):
            state_dict[prefix + "entry_state"] = state.new_zeros(keys.numel(), 0)
            return True
        return False
    if not has_slot_rowwise_state(state_dict, prefix):
        return False
    state_dict.update({prefix + n: t for n, t in slot_state_to_entry_state(
        {n: state_dict[prefix + n] for n in ("pool_state", "entry_first", "entry_chunks")}).items()})
    return True


def slot_state_to_entry_state(old: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``entry_state [R, 1]`` (each stored row's accumulator, read from the slot of its chunk 0) and the
    emptied ``pool_state [S, 0]``, from an older layout's ``pool_state [S, 1]``, ``entry_first``, ``entry_chunks``."""
    pool_state, first = old["pool_state"], old["entry_first"].to(torch.int64)
    stored = old["entry_chunks"] > 0
    entry_state = torch.zeros(first.numel(), 1, dtype=pool_state.dtype, device=pool_state.device)
    entry_state[stored] = pool_state[first[stored]]
    return {"entry_state": entry_state, "pool_state": pool_state.new_zeros(pool_state.shape[0], 0)}


def row_keyed_buffers(old: Dict[str, torch.Tensor], config: FiitedConfig, where: str = "") -> Dict[str, torch.Tensor]:
    """The row-keyed store buffers holding what the chunk-keyed buffers ``old`` hold."""
    slot_keys = old["slot_keys"]
    live = (slot_keys >= 0).nonzero().reshape(-1)
    keys, order = torch.sort(slot_keys[live])
    live = live[order]
    row_keys, counts = torch.unique_consecutive(keys & ~(MAX_CHUNKS - 1), return_counts=True)
    _, within = run_positions(counts)
    if not torch.equal(keys & (MAX_CHUNKS - 1), within):
        raise ValueError(f"{where}slot_keys: the checkpoint's rows are not chunk prefixes 0..k-1; it is damaged")
    n, r = keys.numel(), row_keys.numel()
    out: Dict[str, torch.Tensor] = {}
    for name in ("pool_weights", "pool_state", "slot_utility"):
        if name in old:
            tensor = old[name][live]
            if n == 0:  # keep one (empty) slot, as a fresh store does
                tensor = torch.zeros((1,) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
            out[name] = tensor
    rows = max(r, 1)
    entry_keys = torch.full((rows,), -1, dtype=torch.int64, device=keys.device)
    entry_keys[:r] = row_keys
    entry_first = torch.zeros(rows, dtype=torch.int32, device=keys.device)
    entry_first[:r] = (torch.cumsum(counts, 0) - counts).to(torch.int32)
    entry_chunks = torch.zeros(rows, dtype=torch.int8, device=keys.device)
    entry_chunks[:r] = counts.to(torch.int8)
    out.update(entry_keys=entry_keys, entry_first=entry_first, entry_chunks=entry_chunks)
    out["hash_buckets"] = ops.vhpi_rebuild(entry_keys, num_buckets_for(rows, config), config.max_probe)
    if "counters" in old:
        counters = torch.zeros(_COUNTERS, dtype=torch.int64, device=old["counters"].device)
        k = min(old["counters"].numel(), _COUNTERS)
        counters[:k] = old["counters"][:k]
        if old["counters"].numel() <= _DENIED_AT_LAST_RESIZE:  # before the pressure-resize counters
            counters[_DENIED_AT_LAST_RESIZE] = counters[_DENIED]  # denials before the load are not pressure
        counters[_HIGH_WATER], counters[_ROW_HIGH_WATER] = n, r
        out["counters"] = counters
    return out


def checkpoint_problems(store: "VhpiChunkStore", state_dict: Mapping[str, torch.Tensor], prefix: str) -> List[str]:
    """Why the store entries of ``state_dict`` (under ``prefix``) cannot be loaded into ``store``, if they
    cannot: other tables, chunk size or optimizer, or more than its budget holds / another sketch."""
    def entry(name: str):
        return state_dict.get(prefix + name)

    for name in ("table_rows", "table_chunks"):
        value = entry(name)
        if value is not None and not torch.equal(value.to(getattr(store, name).device), getattr(store, name)):
            return [f"{prefix}{name}: checkpoint tables {value.tolist()} differ from this module's "
                    f"{getattr(store, name).tolist()} (tables {store.table_names})"]
    # the pool and the row index are one state: a partial one (a strict=False load of a trimmed checkpoint)
    # would leave arrays of different stores side by side
    present = [n for n in _STORE_STATE if prefix + n in state_dict]
    if present and len(present) < len(_STORE_STATE):
        missing = [prefix + n for n in _STORE_STATE if n not in present]
        return [f"{', '.join(missing)}: not in the checkpoint, which holds the rest of this store's state; a store "
                "loads whole or not at all"]
    for group in (_SLOT_ARRAYS, _ENTRY_ARRAYS):
        sizes = {n: int(state_dict[prefix + n].shape[0]) for n in group if prefix + n in state_dict}
        if len(set(sizes.values())) > 1:
            return [f"{prefix}{group[0]}: the checkpoint's {', '.join(f'{n} ({k})' for n, k in sizes.items())} "
                    "differ in length; it is damaged"]
    problems = []
    optimizer, c = store.config.optimizer, store.config.chunk_size
    width, row_width = optimizer.state_width(c), optimizer.row_state_width
    weights, state, keys, sketch = entry("pool_weights"), entry("pool_state"), entry("entry_keys"), entry("sketch")
    row_state = entry("entry_state")
    if weights is not None and (weights.dim() != 2 or weights.shape[1] != c):
        problems.append(f"{prefix}pool_weights: checkpoint chunks of shape {tuple(weights.shape)[1:]} do not match "
                        f"this module's chunk_size {c}")
    found = (_width(state), _width(row_state) if row_state is not None else (0 if keys is not None else row_width))
    if (state is not None or row_state is not None) and found != (width, row_width):
        problems.append(f"{prefix}pool_state: the checkpoint's optimizer state ({_state_layout(*found)}) does not "
                        f"match: this module's optimizer {optimizer.value!r} keeps {_state_layout(width, row_width)} "
                        "-- build it with the checkpoint's optimizer")
    elif row_state is not None and keys is not None and row_state.shape[0] != keys.numel():
        problems.append(f"{prefix}entry_state: {row_state.shape[0]} rows of optimizer state for {keys.numel()} "
                        "index entries; the checkpoint is damaged")
    if weights is not None and keys is not None and not store.plan.fits(weights.shape[0], keys.numel()):
        problems.append(f"{prefix}pool_weights: the checkpoint holds {weights.shape[0]} chunk slots and "
                        f"{keys.numel()} rows, more than this module's memory budget ({store.plan.budget_bytes} "
                        "bytes) allows -- build it with the checkpoint's memory_budget")
    if sketch is not None and tuple(sketch.shape) != tuple(store.sketch.shape):
        problems.append(f"{prefix}sketch: the checkpoint's utility sketch is {tuple(sketch.shape)}, this module's "
                        f"{tuple(store.sketch.shape)}: it was saved under another memory_budget (this one: "
                        f"{store.plan.budget_bytes} bytes) or sketch_fraction")
    return problems


def _width(state) -> int:
    return -1 if state is None or state.dim() != 2 else int(state.shape[1])


def _state_layout(per_chunk: int, per_row: int) -> str:
    """``1 per row``, ``16 per chunk``, ``none``: an optimizer's state floats, for messages."""
    if per_chunk < 0 or per_row < 0:
        return "of an unknown shape"
    parts = ([f"{per_row} per row"] if per_row else []) + ([f"{per_chunk} per chunk"] if per_chunk else [])
    return " and ".join(parts) or "none"
