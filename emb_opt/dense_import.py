"""Seed a FIITED store from dense tables (what ``emb_opt.convert`` does with a trained model's weights).

Without utilities measured yet, chunk magnitude is the prior: every chunk of every row is scored by its L2
norm relative to the mean chunk norm of its table (tables are initialised at different scales -- TorchRec's
default is ``sqrt(1/rows)`` -- so raw norms would hand the whole budget to the smallest tables), made
prefix-monotone along the row (``min`` over chunks 0..k), and the top chunks are imported while their
bytes (slots, and an index entry per row) fit ``(1 - reserve_fraction)`` of the budget, with zero optimizer state and zero utility -- so chunks that training
then never touches are the first a resize prunes. With a budget that holds everything, the import is exact.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch

from cuda_ext.layout import key_chunk, pack_row_key, row_of_key
from emb_opt.chunk_store import VhpiChunkStore
from emb_opt.resize import effective_utility, keep_limit


@torch.no_grad()
def import_dense_weights(store: VhpiChunkStore, tables: Sequence[Any], weights: Dict[str, torch.Tensor]) -> int:
    """Import ``weights`` (table name -> [num_embeddings, embedding_dim]) of ``tables`` (the store's
    ``EmbeddingBagConfig``s, in its table order) into the empty ``store``; returns the number of chunks imported."""
    if store.num_live:
        raise RuntimeError("import_dense_weights needs an empty store (import before training)")
    c = store.config.chunk_size
    all_keys, all_chunks, all_scores = [], [], []
    for t, table in enumerate(tables):
        if table.name not in weights:
            raise ValueError(f"no weights given for table {table.name!r}")
        w = weights[table.name].detach().to(torch.float32).cpu()
        if tuple(w.shape) != (table.num_embeddings, table.embedding_dim):
            raise ValueError(f"table {table.name!r}: weights have shape {tuple(w.shape)}, expected "
                             f"({table.num_embeddings}, {table.embedding_dim})")
        chunks = w.reshape(table.num_embeddings, -1, c)  # [N, C, c]
        rows = torch.arange(table.num_embeddings)
        keys = (pack_row_key(torch.full_like(rows, t), rows).unsqueeze(1) + torch.arange(chunks.shape[1])).reshape(-1)
        all_keys.append(keys)
        all_chunks.append(chunks.reshape(-1, c))
        norms = chunks.norm(dim=2).reshape(-1)
        all_scores.append(norms / norms.mean().clamp(min=torch.finfo(torch.float32).tiny))
    keys = torch.cat(all_keys)
    chunks = torch.cat(all_chunks)
    score = effective_utility(keys, torch.cat(all_scores), store.max_chunks)  # keys are sorted already
    order = torch.argsort(score, descending=True, stable=True)
    order = order[: store.plan.affordable(key_chunk(keys[order]) == 0, keep_limit(store))]
    order = order.sort().values  # back to key order: rows together, chunks in order (prefix-closed by the min)
    row_keys, counts = torch.unique_consecutive(row_of_key(keys[order]), return_counts=True)
    free_slots, free_rows = store.ensure_free(order.numel(), row_keys.numel())
    if free_slots < order.numel() or free_rows < row_keys.numel():  # pragma: no cover - the target fits
        raise RuntimeError("import_dense_weights: the store could not allocate the imported rows")
    device = store.pool_weights.device
    store.append_rows(row_keys.to(device), counts.to(device), chunks[order].to(device), torch.zeros(order.numel(), device=device))
    return int(order.numel())
