"""Reference of the chunk-bag ops (``csrc/chunk_bag``): contracts and shapes in ``chunk_bag_ops.cpp``, argument
checks (the C++ ones, same messages) in ``cuda_ext.reference.chunk_bag_checks``.

Written with vectorised torch ops; per-slot results may differ from the C++ kernels by float rounding only
(sums run in the same occurrence order, norms may be reduced in another order).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from cuda_ext.layout import OPTIMIZER_CODES, POOLING_CODES, UTILITY_CODES, key_table, pack_row_key
from cuda_ext.reference.chunk_bag_checks import check_backward_args, check_forward_args, check_unique_args
from cuda_ext.reference import pool_codec

SGD, ADAGRAD = OPTIMIZER_CODES["sgd"], OPTIMIZER_CODES["adagrad"]
UTILITY_FREQ, UTILITY_GRAD = UTILITY_CODES["freq"], UTILITY_CODES["grad"]
MEAN = POOLING_CODES["mean"]


def _bag_of_occurrence(offsets: torch.Tensor) -> torch.Tensor:
    lengths = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(lengths.numel()), lengths)


def chunk_bag_unique(
    values: torch.Tensor,
    offsets: torch.Tensor,
    feature_table: torch.Tensor,
    table_rows: torch.Tensor,
    batch_size: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    nnz = check_unique_args(values, offsets, feature_table, table_rows, batch_size)
    occ_bag = _bag_of_occurrence(offsets.to(torch.int64))
    ids = values[:nnz].to(torch.int64)
    tables = feature_table.to(torch.int64)[occ_bag // max(batch_size, 1)] if nnz else occ_bag
    limits = table_rows[tables]
    bad_mask = (ids < 0) | (ids >= limits)
    bad = torch.full((3,), -1, dtype=torch.int64)
    if bool(bad_mask.any()):
        i = int(bad_mask.nonzero()[0, 0])
        bad = torch.tensor([i, int(ids[i]), int(occ_bag[i]) // batch_size])
        return torch.empty(0, dtype=torch.int64), torch.empty(nnz, dtype=torch.int32), torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int32), occ_bag.to(torch.int32), bad
    keys = pack_row_key(tables, ids)
    sorted_unique, sorted_inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((sorted_unique.numel(),), nnz, dtype=torch.int64)
    first = first.scatter_reduce(0, sorted_inverse, torch.arange(nnz), reduce="amin")
    order = torch.argsort(first)  # unique rows in first-occurrence order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    inverse = rank[sorted_inverse]
    row_keys = sorted_unique[order]
    counts = torch.bincount(inverse, minlength=row_keys.numel())
    unique_offsets = torch.zeros(row_keys.numel() + 1, dtype=torch.int64)
    unique_offsets[1:] = torch.cumsum(counts, 0)
    unique_occ = torch.argsort(inverse, stable=True)
    return row_keys, inverse.to(torch.int32), unique_offsets, unique_occ.to(torch.int32), occ_bag.to(torch.int32), bad


def _occurrence_scale(offsets: torch.Tensor, occ_bag: torch.Tensor, weights: Optional[torch.Tensor], pooling_mode: int, nnz: int) -> torch.Tensor:
    scale = weights[:nnz].float().clone() if weights is not None else torch.ones(nnz)
    if pooling_mode == MEAN:
        lengths = (offsets[1:] - offsets[:-1]).float()
        scale = scale / lengths[occ_bag.to(torch.int64)]
    return scale


def _feature_columns(occ_bag, batch_size, feature_cols, c, max_chunks):
    features = occ_bag.to(torch.int64) // batch_size
    samples = occ_bag.to(torch.int64) % batch_size
    cols = feature_cols[features].unsqueeze(1) + torch.arange(max_chunks * c).unsqueeze(0)  # [nnz, Cmax*c]
    return features, samples, cols


def chunk_bag_forward(
    pool: torch.Tensor,
    slots: torch.Tensor,
    inverse: torch.Tensor,
    offsets: torch.Tensor,
    weights: Optional[torch.Tensor],
    feature_table: torch.Tensor,
    table_chunks: torch.Tensor,
    feature_cols: torch.Tensor,
    batch_size: int,
    out_dim: int,
    pooling_mode: int,
    pool_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    check_forward_args(pool, slots, inverse, offsets, weights, feature_table, table_chunks, feature_cols, batch_size,
                       out_dim, pooling_mode, pool_scale)
    c = pool.shape[1]
    max_chunks = slots.shape[1]
    nnz = int(offsets[-1])
    occ_bag = _bag_of_occurrence(offsets.to(torch.int64))
    row_slots = slots[inverse[:nnz].to(torch.int64)].to(torch.int64)  # [nnz, Cmax]
    flat = row_slots.clamp(min=0).reshape(-1)
    emb = pool_codec.load(pool, pool_scale, flat).reshape(nnz, max_chunks, c) * (row_slots >= 0).unsqueeze(-1)
    scale = _occurrence_scale(offsets.to(torch.int64), occ_bag, weights, pooling_mode, nnz)
    contrib = (emb * scale.view(-1, 1, 1)).reshape(nnz, max_chunks * c)
    features, samples, cols = _feature_columns(occ_bag, batch_size, feature_cols, c, max_chunks)
    chunks = table_chunks.to(torch.int64)[feature_table.to(torch.int64)[features]]
    in_table = torch.arange(max_chunks * c).unsqueeze(0) < (chunks * c).unsqueeze(1)
    out = torch.zeros(batch_size * out_dim, dtype=torch.float32)
    flat = (samples.unsqueeze(1) * out_dim + cols)[in_table]
    out.index_add_(0, flat, contrib[in_table])
    return out.reshape(batch_size, out_dim)


def chunk_bag_backward_update_(
    pool: torch.Tensor,
    optim_state: torch.Tensor,
    slot_utility: torch.Tensor,
    grad_out: torch.Tensor,
    slots: torch.Tensor,
    row_keys: torch.Tensor,
    unique_offsets: torch.Tensor,
    unique_occ: torch.Tensor,
    occ_bag: torch.Tensor,
    offsets: torch.Tensor,
    weights: Optional[torch.Tensor],
    table_chunks: torch.Tensor,
    feature_cols: torch.Tensor,
    batch_size: int,
    pooling_mode: int,
    optimizer: int,
    lr: float,
    eps: float,
    utility_rule: int,
    need_weight_grad: bool,
    row_entries: Optional[torch.Tensor] = None,
    rounding_seed: int = 0,
    pool_scale: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    check_backward_args(pool, optim_state, slot_utility, grad_out, slots, row_keys, unique_offsets, unique_occ, occ_bag,
                        offsets, weights, table_chunks, feature_cols, batch_size, pooling_mode, optimizer, utility_rule,
                        row_entries, pool_scale)
    c = pool.shape[1]
    num_unique, max_chunks = slots.shape
    nnz = unique_occ.numel()
    offsets = offsets.to(torch.int64)
    occ_bag64 = occ_bag.to(torch.int64)
    # unique row of each occurrence, from the CSR
    counts = unique_offsets[1:] - unique_offsets[:-1]
    owner = torch.empty(nnz, dtype=torch.int64)
    owner[unique_occ.to(torch.int64)] = torch.repeat_interleave(torch.arange(num_unique), counts)
    chunks = table_chunks.to(torch.int64)[key_table(row_keys)]  # [U]
    live = (slots >= 0).to(torch.int64).cumprod(1).sum(1).clamp(max=chunks)  # [U]
    _, samples, cols = _feature_columns(occ_bag64, batch_size, feature_cols, c, max_chunks)
    cols = cols.clamp(max=grad_out.shape[1] - 1)  # columns past a row's chunks are read, then masked out
    g_rows = grad_out.float()[samples.unsqueeze(1), cols].reshape(nnz, max_chunks, c)  # unscaled slices
    weight_grad = torch.empty(0)
    if need_weight_grad:
        row_slots = slots[owner].to(torch.int64)
        mask = torch.arange(max_chunks).unsqueeze(0) < live[owner].unsqueeze(1)
        emb = pool_codec.load(pool, pool_scale, row_slots.clamp(min=0).reshape(-1)).reshape(nnz, max_chunks, c)
        emb = emb * mask.unsqueeze(-1)
        weight_grad = (g_rows * emb).sum((1, 2))
        if pooling_mode == MEAN:
            weight_grad = weight_grad / (offsets[1:] - offsets[:-1]).float()[occ_bag64]
    scale = _occurrence_scale(offsets, occ_bag, weights, pooling_mode, nnz)
    g_occ = g_rows * scale.view(-1, 1, 1)
    grad = torch.zeros(num_unique, max_chunks, c).index_add_(0, owner, g_occ)
    norm_sum = torch.zeros(num_unique, max_chunks).index_add_(0, owner, g_occ.norm(dim=2))
    count = counts.float().unsqueeze(1).expand(-1, max_chunks)
    if utility_rule == UTILITY_FREQ:
        score = count.clone()
    elif utility_rule == UTILITY_GRAD:
        score = norm_sum / count
    else:
        score = norm_sum
    k = torch.arange(max_chunks).unsqueeze(0)
    # a row whose gradient (live chunks and the next one) is not finite is skipped: no update, candidate NaN
    finite = (torch.isfinite(norm_sum) | (k >= torch.minimum(live + 1, chunks).unsqueeze(1))).all(1)
    live = torch.where(finite, live, torch.zeros_like(live))
    is_live = k < live.unsqueeze(1)
    u_idx, k_idx = is_live.nonzero(as_tuple=True)
    s = slots[u_idx, k_idx].to(torch.int64)
    g = grad[u_idx, k_idx]
    slot_utility.index_add_(0, s, score[u_idx, k_idx])
    if optimizer == SGD:
        step = lr * g
    elif optimizer == ADAGRAD:
        optim_state[s] += g * g
        step = lr * g / (optim_state[s].sqrt() + eps)
    else:  # one accumulator per row, optim_state[row_entries[u]]: += mean squared gradient over the live dims
        rows = (live > 0).nonzero().reshape(-1)
        row_sq = ((grad * grad).sum(2) * is_live).sum(1)[rows]
        entry = row_entries[rows].to(torch.int64)
        optim_state[entry, 0] += row_sq / (live[rows] * c).float()
        mult = torch.zeros(num_unique)
        mult[rows] = lr / (optim_state[entry, 0].sqrt() + eps)
        step = mult[u_idx].unsqueeze(1) * g
    pool_codec.store(pool, pool_scale, s, pool_codec.load(pool, pool_scale, s) - step, rounding_seed)
    has_next = (live < chunks) & finite
    candidate = torch.zeros(num_unique)
    rows = has_next.nonzero().reshape(-1)
    candidate[rows] = score[rows, live[rows]]
    candidate[~finite] = float("nan")
    return candidate, weight_grad
