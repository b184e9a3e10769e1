"""Argument checks of the chunk-bag reference ops: those of ``csrc/chunk_bag/chunk_bag_checks.h`` (on the CPU,
where every check runs), in the same order and with the same messages, so a reference raises where the native
op raises (``IndexError`` for an index outside what it indexes, ``RuntimeError`` for dtypes and shapes)."""
from __future__ import annotations

from typing import Optional

import torch

from cuda_ext.layout import (MAX_ROWS, MAX_TABLES, OPTIMIZER_CODES, POOLING_CODES, UTILITY_CODES, key_table,
                             pack_row_key)
from cuda_ext.reference.checks import check_in_range, check_offsets, position, raise_outside

UNIQUE, FORWARD, BACKWARD = "chunk_bag_unique", "chunk_bag_forward", "chunk_bag_backward_update_"
INT32_MAX = 2**31 - 1


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(message)


def _dtype(op: str, name: str, t: torch.Tensor, *dtypes: torch.dtype) -> None:
    _expect(t.dtype in dtypes, f"{op}: {name} must be {' or '.join(map(str, dtypes))}, got {t.dtype}")


def _offsets_shape(op: str, offsets: torch.Tensor, num_bags: int) -> None:
    _dtype(op, "offsets", offsets, torch.int64)
    _expect(offsets.dim() == 1 and offsets.numel() == num_bags + 1,
            f"{op}: offsets must have F*B+1 = {num_bags + 1} entries, got shape {list(offsets.shape)}")


def check_slots(op: str, slots: torch.Tensor, num_slots: int) -> None:
    """-1 or a slot of the pool, and a row's live slots a prefix."""
    missing = slots < 0
    after_missing = (missing.to(torch.int64).cumsum(1) - missing.to(torch.int64)) > 0
    out_of_range = (slots < -1) | (slots >= num_slots)
    bad = (out_of_range | (after_missing & ~missing)).reshape(-1).nonzero()
    if not bad.numel():
        return
    flat = int(bad[0, 0])
    if bool(out_of_range.reshape(-1)[flat]):
        raise_outside(op, "slots", slots, flat, -1, num_slots, f"-1 or one of the pool's {num_slots} slots")
    raise IndexError(f"{op}: slots{position(slots.shape, flat)} = {int(slots.reshape(-1)[flat])} follows a -1 in "
                     "its row: a row's live slots must be a prefix")


def check_unique_args(values, offsets, feature_table, table_rows, batch_size: int) -> int:
    """Returns nnz = offsets[-1]."""
    _dtype(UNIQUE, "values", values, torch.int32, torch.int64)
    _dtype(UNIQUE, "feature_table", feature_table, torch.int32)
    _dtype(UNIQUE, "table_rows", table_rows, torch.int64)
    _expect(batch_size >= 0, f"{UNIQUE}: batch_size must be >= 0, got {batch_size}")
    _expect(table_rows.numel() <= MAX_TABLES, f"{UNIQUE}: more than {MAX_TABLES} tables")
    _expect(values.numel() <= INT32_MAX, f"{UNIQUE}: more than 2^31 - 1 ids in one batch")
    num_bags = feature_table.numel() * batch_size
    _offsets_shape(UNIQUE, offsets, num_bags)
    check_in_range(UNIQUE, "table_rows", table_rows, 0, MAX_ROWS + 1, "rows a table key can address")
    check_offsets(UNIQUE, "offsets", offsets, values.numel(), False, "values", "bag")
    num_tables = table_rows.numel()
    check_in_range(UNIQUE, "feature_table", feature_table, 0, num_tables, f"the {num_tables} tables")
    return int(offsets[-1])


def check_pool(op: str, pool: torch.Tensor, pool_scale) -> None:
    """A chunk pool is float32, bfloat16 or int8 (the last two on the CPU only, as the kernels); an int8 pool comes
    with ``pool_scale`` float32 [S, 1], contiguous, the others without one."""
    _dtype(op, "pool", pool, torch.float32, torch.bfloat16, torch.int8)
    _expect(pool.dtype == torch.float32 or not pool.is_cuda,
            f"{op}: pool is {pool.dtype} on {pool.device}: bfloat16 and int8 chunk pools (FiitedConfig.weight_dtype) "
            "train on the CPU only so far; use float32 on CUDA")
    if pool.dtype != torch.int8:
        _expect(pool_scale is None or pool_scale.numel() == 0, f"{op}: pool_scale is for int8 pools; this pool is "
                f"{pool.dtype}")
        return
    _expect(pool_scale is not None, f"{op}: an int8 pool needs pool_scale (float32 [S, 1], one scale per slot)")
    _dtype(op, "pool_scale", pool_scale, torch.float32)
    _expect(pool_scale.dim() == 2 and tuple(pool_scale.shape) == (pool.shape[0], 1) and pool_scale.is_contiguous(),
            f"{op}: pool_scale must be contiguous [S, 1] = [{pool.shape[0]}, 1], got {list(pool_scale.shape)}")


def check_forward_args(pool, slots, inverse, offsets, weights, feature_table, table_chunks, feature_cols,
                       batch_size: int, out_dim: int, pooling_mode: int, pool_scale=None) -> None:
    check_pool(FORWARD, pool, pool_scale)
    _dtype(FORWARD, "slots", slots, torch.int32)
    _dtype(FORWARD, "inverse", inverse, torch.int32)
    _dtype(FORWARD, "feature_table", feature_table, torch.int32)
    _dtype(FORWARD, "feature_cols", feature_cols, torch.int64)
    _expect(pool.dim() == 2 and slots.dim() == 2, f"{FORWARD}: pool and slots must be 2-D")
    _expect(pooling_mode in POOLING_CODES.values(), f"{FORWARD}: pooling_mode must be 0 (sum) or 1 (mean), got "
            f"{pooling_mode}")
    _expect(batch_size >= 0 and out_dim >= 0, f"{FORWARD}: batch_size and out_dim must be >= 0")
    num_features = feature_table.numel()
    _expect(feature_cols.numel() == num_features, f"{FORWARD}: feature_cols must have one entry per feature")
    if weights is not None:
        _dtype(FORWARD, "weights", weights, torch.float32)
        _expect(weights.numel() == inverse.numel(), f"{FORWARD}: weights must have one value per id "
                f"({inverse.numel()}), got {weights.numel()}")
    _offsets_shape(FORWARD, offsets, num_features * batch_size)
    _dtype(FORWARD, "table_chunks", table_chunks, torch.int32)
    _expect(table_chunks.numel() <= MAX_TABLES, f"{FORWARD}: more than {MAX_TABLES} tables")
    check_offsets(FORWARD, "offsets", offsets, inverse.numel(), False, "values", "bag")
    check_in_range(FORWARD, "inverse", inverse, 0, slots.shape[0], f"the {slots.shape[0]} unique rows of slots")
    check_slots(FORWARD, slots, pool.shape[0])
    num_tables = table_chunks.numel()
    check_in_range(FORWARD, "feature_table", feature_table, 0, num_tables, f"the {num_tables} tables")
    check_in_range(FORWARD, "table_chunks", table_chunks, 0, slots.shape[1] + 1,
                   f"chunks per row, at most the {slots.shape[1]} columns of slots")
    check_in_range(FORWARD, "feature_cols", feature_cols, 0, out_dim + 1, "first output column of each feature")
    ends = feature_cols + table_chunks.to(torch.int64)[feature_table.to(torch.int64)] * pool.shape[1]
    bad = (ends > out_dim).nonzero()
    if bad.numel():
        f = int(bad[0, 0])
        raise IndexError(f"{FORWARD}: feature {f}'s columns [{int(feature_cols[f])}, {int(ends[f])}) pass out_dim = "
                         f"{out_dim}")


def _check_updated_tensors(pool, optim_state, slot_utility, optimizer: int, row_entries, num_unique: int) -> None:
    for name, t in (("optim_state", optim_state), ("slot_utility", slot_utility)):
        _dtype(BACKWARD, name, t, torch.float32)
    _expect(pool.is_contiguous() and optim_state.is_contiguous() and slot_utility.is_contiguous(),
            f"{BACKWARD}: pool, optim_state and slot_utility must be contiguous (updated in place)")
    _expect(pool.dim() == 2, f"{BACKWARD}: pool must be 2-D")
    _expect(slot_utility.numel() == pool.shape[0], f"{BACKWARD}: slot_utility must have one entry per pool slot "
            f"({pool.shape[0]}), got {slot_utility.numel()}")
    _expect(optimizer in OPTIMIZER_CODES.values(), f"{BACKWARD}: unknown optimizer code {optimizer}")
    if optimizer == OPTIMIZER_CODES["adagrad"]:
        _expect(tuple(optim_state.shape) == tuple(pool.shape), f"{BACKWARD}: Adagrad's optim_state must be [S, c]")
    if optimizer != OPTIMIZER_CODES["rowwise_adagrad"]:
        return
    _expect(optim_state.dim() == 2 and optim_state.shape[1] == 1, f"{BACKWARD}: row-wise Adagrad's optim_state must "
            "be [R, 1] (one accumulator per row entry)")
    _expect(row_entries is not None, f"{BACKWARD}: row-wise Adagrad needs row_entries (the index entry of each "
            "unique row)")
    _dtype(BACKWARD, "row_entries", row_entries, torch.int32)
    _expect(row_entries.numel() == num_unique, f"{BACKWARD}: row_entries must have one entry per unique row")


def _check_backward_rows(grad_out, slots, row_keys, unique_offsets, unique_occ, occ_bag, table_chunks, feature_cols,
                         chunk_size: int, batch_size: int, row_entries: Optional[torch.Tensor],
                         num_entries: int) -> None:
    """The first unique row whose occurrences read grad_out past its width, or which holds chunks but has no
    accumulator in [0, R)."""
    num_unique = row_keys.numel()
    chunks = table_chunks.to(torch.int64)[key_table(row_keys)]
    counts = unique_offsets[1:] - unique_offsets[:-1]
    owner = torch.repeat_interleave(torch.arange(num_unique), counts)  # unique row of each unique_occ position
    features = occ_bag.to(torch.int64)[unique_occ.to(torch.int64)] // max(batch_size, 1)
    ends = feature_cols[features] + chunks[owner] * chunk_size
    bad_columns = torch.zeros(num_unique, dtype=torch.bool)
    bad_columns[owner[ends > grad_out.shape[1]]] = True
    bad_entry = torch.zeros(num_unique, dtype=torch.bool)
    if row_entries is not None:
        holds = (chunks > 0) & (slots[:, 0] >= 0) if slots.shape[1] else torch.zeros_like(bad_entry)
        bad_entry = holds & ((row_entries < 0) | (row_entries >= num_entries))
    bad = (bad_columns | bad_entry).nonzero()
    if not bad.numel():
        return
    u = int(bad[0, 0])
    if bool(bad_columns[u]):
        q = int(((owner == u) & (ends > grad_out.shape[1])).nonzero()[0, 0])
        i = int(unique_occ[q])
        f = int(features[q])
        first = int(feature_cols[f])
        raise IndexError(f"{BACKWARD}: occurrence {i} (unique row {u}, feature {f}) reads grad_out columns [{first}, "
                         f"{first + int(chunks[u]) * chunk_size}), past its out_dim = {grad_out.shape[1]}")
    raise_outside(BACKWARD, "row_entries", row_entries, u, 0, num_entries,
                  f"the {num_entries} accumulators of optim_state; row {u} holds chunks")


def check_backward_args(pool, optim_state, slot_utility, grad_out, slots, row_keys, unique_offsets, unique_occ,
                        occ_bag, offsets, weights, table_chunks, feature_cols, batch_size: int, pooling_mode: int,
                        optimizer: int, utility_rule: int, row_entries, pool_scale=None) -> None:
    num_unique, nnz, num_features = row_keys.numel(), unique_occ.numel(), feature_cols.numel()
    check_pool(BACKWARD, pool, pool_scale)
    _check_updated_tensors(pool, optim_state, slot_utility, optimizer, row_entries, num_unique)
    _expect(utility_rule in UTILITY_CODES.values(), f"{BACKWARD}: unknown utility rule {utility_rule}")
    _expect(pooling_mode in POOLING_CODES.values(), f"{BACKWARD}: pooling_mode must be 0 (sum) or 1 (mean), got "
            f"{pooling_mode}")
    _expect(batch_size >= 0, f"{BACKWARD}: batch_size must be >= 0, got {batch_size}")
    for name, t, dtype in (("slots", slots, torch.int32), ("row_keys", row_keys, torch.int64),
                           ("unique_offsets", unique_offsets, torch.int64), ("unique_occ", unique_occ, torch.int32),
                           ("occ_bag", occ_bag, torch.int32), ("table_chunks", table_chunks, torch.int32),
                           ("feature_cols", feature_cols, torch.int64)):
        _dtype(BACKWARD, name, t, dtype)
    _expect(table_chunks.numel() <= MAX_TABLES, f"{BACKWARD}: more than {MAX_TABLES} tables")
    _expect(slots.dim() == 2 and slots.shape[0] == num_unique, f"{BACKWARD}: slots must be [U, Cmax] with U = "
            f"{num_unique} unique rows, got shape {list(slots.shape)}")
    _expect(unique_offsets.numel() == num_unique + 1, f"{BACKWARD}: unique_offsets must have U+1 = {num_unique + 1} "
            f"entries, got {unique_offsets.numel()}")
    _expect(occ_bag.numel() == nnz, f"{BACKWARD}: occ_bag must have one entry per occurrence ({nnz}), got "
            f"{occ_bag.numel()}")
    _offsets_shape(BACKWARD, offsets, num_features * batch_size)
    _expect(grad_out.dim() == 2 and grad_out.shape[0] == batch_size and grad_out.is_floating_point(),
            f"{BACKWARD}: grad_out must be floating [B, out_dim] with B = {batch_size}, got {grad_out.dtype} "
            f"{list(grad_out.shape)}")
    if weights is not None:
        _dtype(BACKWARD, "weights", weights, torch.float32)
        _expect(weights.numel() == nnz, f"{BACKWARD}: weights must have one value per occurrence ({nnz}), got "
                f"{weights.numel()}")
    num_tables = table_chunks.numel()
    num_entries = optim_state.shape[0] if optim_state.dim() == 2 else 0
    check_in_range(BACKWARD, "table_chunks", table_chunks, 0, slots.shape[1] + 1,
                   f"chunks per row, at most the {slots.shape[1]} columns of slots")
    check_in_range(BACKWARD, "row_keys", row_keys, 0, int(pack_row_key(torch.tensor(num_tables), torch.tensor(0))),
                   f"row keys of the {num_tables} tables")
    check_slots(BACKWARD, slots, pool.shape[0])
    check_offsets(BACKWARD, "unique_offsets", unique_offsets, nnz, True, "occurrences", "unique row")
    check_in_range(BACKWARD, "unique_occ", unique_occ, 0, nnz, f"the {nnz} occurrences")
    check_in_range(BACKWARD, "occ_bag", occ_bag, 0, num_features * batch_size,
                   f"the F*B = {num_features * batch_size} bags")
    check_offsets(BACKWARD, "offsets", offsets, nnz, False, "occurrences", "bag")
    check_in_range(BACKWARD, "feature_cols", feature_cols, 0, grad_out.shape[1] + 1,
                   "first column of each feature in grad_out")
    _check_backward_rows(grad_out, slots, row_keys, unique_offsets, unique_occ, occ_bag, table_chunks, feature_cols,
                         pool.shape[1], batch_size, row_entries, num_entries)
