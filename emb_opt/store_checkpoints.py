"""Loading a VHPI store checkpoint: what makes one unloadable, and the older chunk-keyed layout, converted.

``checkpoint_problems`` names why a checkpoint cannot load into a store (other tables, chunk size, optimizer,
more than the budget holds); the load is then refused and the store keeps its state.

Before the row index, the store keyed every chunk: ``slot_keys [S] int64`` (the chunk key of each slot, -1 =
free), ``hash_buckets`` over slots and a ``free_stack`` of freed slots, with 8 or 10 counters. Its rows were
prefix-closed like today's, so each one becomes one run: live chunks are gathered in key order (rows together,
chunks in order) with their optimizer state and utilities, and the row entries, the hash table and the
high-water counters are built for them. Everything the training state holds survives; the arrays come out
sized to the live chunks and grow again on demand.
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
    problems = []
    c, width = store.config.chunk_size, store.config.optimizer.state_width(store.config.chunk_size)
    weights, state, keys, sketch = entry("pool_weights"), entry("pool_state"), entry("entry_keys"), entry("sketch")
    if weights is not None and (weights.dim() != 2 or weights.shape[1] != c):
        problems.append(f"{prefix}pool_weights: checkpoint chunks of shape {tuple(weights.shape)[1:]} do not match "
                        f"this module's chunk_size {c}")
    if state is not None and (state.dim() != 2 or state.shape[1] != width):
        problems.append(f"{prefix}pool_state: checkpoint optimizer state has {tuple(state.shape)[1:]} floats per chunk; "
                        f"this module's optimizer {store.config.optimizer.value!r} keeps {width} -- build it with "
                        "the checkpoint's optimizer")
    if weights is not None and keys is not None and not store.plan.fits(weights.shape[0], keys.numel()):
        problems.append(f"{prefix}pool_weights: the checkpoint holds {weights.shape[0]} chunk slots and "
                        f"{keys.numel()} rows, more than this module's memory budget ({store.plan.budget_bytes} "
                        "bytes) allows -- build it with the checkpoint's memory_budget")
    if sketch is not None and tuple(sketch.shape) != tuple(store.sketch.shape):
        problems.append(f"{prefix}sketch: the checkpoint's utility sketch is {tuple(sketch.shape)}, this module's "
                        f"{tuple(store.sketch.shape)}: it was saved under another memory_budget (this one: "
                        f"{store.plan.budget_bytes} bytes) or sketch_fraction")
    return problems
