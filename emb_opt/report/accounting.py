"""Byte accounting of one collection: the report rows of a FIITED store from its buffers, and of a dense or
hashed collection from its weights (see ``emb_opt.report`` for what each row and column means)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from cuda_ext.layout import key_table
from emb_opt.budget import full_table_bytes
from emb_opt.config import OptimizerType, parse_optimizer
from emb_opt.report.rows import SHARED, TOTAL, format_histogram, make_row, nbytes, sum_rows

# VhpiChunkStore buffers by ``allocated_bytes`` category; any other buffer of the store counts as metadata
_CATEGORY = {"pool_weights": "weights", "pool_scale": "weights", "pool_state": "optimizer",
             "entry_state": "optimizer", "entry_keys": "index", "entry_first": "index",
             "entry_chunks": "index", "hash_buckets": "index", "slot_utility": "utility", "sketch": "utility"}  # fmt: skip

def fiited_rows(module: str, buffers: Mapping[str, torch.Tensor], tables: Sequence[Dict[str, Any]],
                chunk_size: int, optimizer: OptimizerType, kind: str = "fiited",
                layout_bytes: int = 0, optimizer_label: Optional[str] = None) -> List[Dict[str, Any]]:
    """Rows of one FIITED store from its buffers (``store.named_buffers()`` or a state_dict's ``store.*``).

    ``tables``: dicts with ``name``, ``num_embeddings``, ``embedding_dim`` in the store's table order;
    ``kind``: "fiited", "rowprune" for the row-pruning baseline (the same store with one chunk per row), or
    "fiited_inference" for an exported store (``emb_opt.inference_store``: no optimizer state or utilities --
    buffers a store does not have count 0 bytes);
    ``layout_bytes``: the collection's own buffers (its feature layout), shared metadata;
    ``optimizer_label``: the optimizer column, when not ``optimizer``'s name (an export: "none").
    """
    entry_keys, entry_chunks = buffers["entry_keys"].detach().cpu(), buffers["entry_chunks"].detach().cpu()
    stored = entry_chunks > 0
    row_keys, row_chunks = entry_keys[stored], entry_chunks[stored].to(torch.int64)
    table_of = key_table(row_keys)
    capacity = max(1, buffers["pool_weights"].shape[0])
    row_capacity = max(1, entry_keys.numel())
    cat_total: Counter = Counter()
    for name, tensor in buffers.items():
        cat_total[_CATEGORY.get(name, "metadata")] += nbytes(tensor)
    cat_total["metadata"] += layout_bytes

    def size(name: str) -> int:  # a buffer the store does not have (an export's optimizer state) counts 0
        return nbytes(buffers[name]) if name in buffers else 0

    per_slot = {
        "weights": (size("pool_weights") + size("pool_scale")) // capacity,
        "optimizer": size("pool_state") // capacity,
        "utility": size("slot_utility") // capacity,
    }
    per_row = sum(size(n) for n in ("entry_keys", "entry_first", "entry_chunks")) // row_capacity
    state_per_row = size("entry_state") // row_capacity
    bucket_bytes = size("hash_buckets")
    rows: List[Dict[str, Any]] = []
    opt = optimizer_label or optimizer.value
    for t, spec in enumerate(tables):
        per_row_chunks = row_chunks[table_of == t]
        live, stored_rows = int(per_row_chunks.sum()), int(per_row_chunks.numel())
        hist = Counter({int(k) * chunk_size: int(n) for k, n in zip(*torch.unique(per_row_chunks, return_counts=True))})
        virtual, dim = int(spec["num_embeddings"]), int(spec["embedding_dim"])
        hist[0] = virtual - stored_rows
        rows.append(make_row(
            module, str(spec["name"]), kind, opt,
            virtual_rows=virtual, physical_rows=stored_rows, embedding_dim=dim, chunk_size=chunk_size,
            live_rows=stored_rows, live_chunks=live, mean_dim=live * chunk_size / stored_rows if stored_rows else 0.0,
            weights_bytes=live * per_slot["weights"],
            optimizer_bytes=live * per_slot["optimizer"] + stored_rows * state_per_row,
            index_bytes=stored_rows * per_row + stored_rows * bucket_bytes // row_capacity,
            utility_bytes=live * per_slot["utility"], metadata_bytes=0,
            full_bytes=full_table_bytes(virtual, dim, optimizer), dims_histogram=format_histogram(hist),
        ))  # fmt: skip
    used = {c: sum(r[f"{c}_bytes"] for r in rows) for c in ("weights", "optimizer", "index", "utility", "metadata")}
    rows.append(make_row(module, SHARED, kind, opt, live_chunks=0,
                     **{f"{c}_bytes": cat_total[c] - used[c] for c in used}))
    rows.append(sum_rows(module, TOTAL, kind, opt, rows))
    return rows


def dense_rows(module: str, kind: str, weights: Mapping[str, Any], optimizer: OptimizerType,
               state_bytes: Optional[Mapping[str, int]] = None, optimizer_name: Optional[str] = None,
               virtual_rows: Optional[Mapping[str, int]] = None, index_bytes: Optional[Mapping[str, int]] = None,
               shared_index_bytes: int = 0) -> List[Dict[str, Any]]:
    """Rows of a dense (or hashed, or frequency-vocabulary) collection: ``weights`` = table -> its ``[rows, dim]``
    weight tensor.

    ``state_bytes``: the real optimizer state bytes per table (fused collections), else from ``optimizer``.
    ``virtual_rows``: hashed / vocabulary tables' raw id range (the rows a full table would have).
    ``index_bytes``: per table, the bytes of the id -> row map in front of it (a frequency vocabulary's id array);
    ``shared_index_bytes``: the map's bytes that belong to no one table (the ``(shared)`` row).
    """
    rows: List[Dict[str, Any]] = []
    label = optimizer_name or optimizer.value
    for table, w in weights.items():
        physical, dim = int(w.shape[0]), int(w.shape[1])
        element = nbytes(w) // max(1, int(w.numel()))
        state = (state_bytes or {}).get(table)
        state = physical * optimizer.dense_state_bytes_per_row(dim) if state is None else int(state)
        virtual = int((virtual_rows or {}).get(table, physical))
        state_per_row = state / physical if physical else optimizer.dense_state_bytes_per_row(dim)
        rows.append(make_row(
            module, table, kind, label, virtual_rows=virtual, physical_rows=physical, embedding_dim=dim,
            chunk_size=dim, live_rows=virtual, live_chunks=physical, mean_dim=float(dim),
            weights_bytes=nbytes(w), optimizer_bytes=state, index_bytes=int((index_bytes or {}).get(table, 0)),
            full_bytes=int(virtual * (element * dim + state_per_row)),
            dims_histogram=format_histogram({dim: virtual}),
        ))  # fmt: skip
    rows.append(make_row(module, SHARED, kind, label, live_chunks=0, index_bytes=shared_index_bytes))
    rows.append(sum_rows(module, TOTAL, kind, label, rows))
    return rows


def fused_optimizer_state(module: nn.Module, fallback: OptimizerType) -> Tuple[OptimizerType, str, Dict[str, int]]:
    """A fused collection's optimizer (type, label) and its real state bytes per table."""
    kind = getattr(module, "_optimizer_type", None)
    label = getattr(kind, "__name__", None) or fallback.value
    try:
        optimizer = parse_optimizer(kind)
    except ValueError:
        optimizer = fallback
    state: Counter = Counter()
    try:
        for values in module.fused_optimizer().state.values():
            for key, tensor in values.items():
                if isinstance(tensor, torch.Tensor):
                    state[str(key).split(".")[0]] += nbytes(tensor)
    except (AttributeError, RuntimeError):
        return optimizer, label, {}
    if not state and optimizer is not OptimizerType.SGD:
        return optimizer, label, {}
    return optimizer, label, {t.name: state.get(t.name, 0) for t in module.embedding_bag_configs()}
