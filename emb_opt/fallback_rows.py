"""Shared fallback rows: what an id without chunks reads instead of zeros.

A FIITED store gives chunks only to the rows its budget holds; every other id of a batch (never admitted, pruned,
or denied while the store is full) reads zeros. A static frequency vocabulary gives such ids a trained
out-of-vocabulary row instead, and CAFE gives them shared hashed rows. ``FallbackRows`` does the same for a chunk
store: each table t has F shared rows, and an id of table t that holds no chunk in this step reads row
``mix_hash(row key) mod F`` of them (F = 1: one out-of-vocabulary row per table). The rows are trained in the
backward of the step that read them, with the collection's fused optimizer and learning rate, so they learn what
the unstored ids of their table have in common. An id that holds at least one chunk reads only its chunks.

Layout: ``weights [T * F, Dmax]`` float32 (table t's rows at ``t * F ...``; columns past a table's dimension stay
zero) and the optimizer state (row-wise Adagrad: ``[T * F, 1]``; Adagrad: ``[T * F, Dmax]``; SGD: none). They are
buffers of the collection, so its budget, ``memory_bytes()`` and ``memory_report`` count them, and they are saved
and loaded with its ``state_dict``.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import nn

from cuda_ext import ops
from cuda_ext.layout import key_chunk, key_table, row_of_key
from emb_opt.config import FiitedConfig, OptimizerType

_HASH_SEED = 0x5F0B  # which fallback row a key reads: independent of the store's other hashes


class FallbackRows(nn.Module):
    """F shared rows per table for ids that hold no chunk (see the module docstring).

    Args:
        table_dims: embedding dimension of each table, in the store's table order.
        rows_per_table: F >= 1.
        config: the collection's FIITED options (optimizer, learning rate, eps, nonfinite policy).
        device: where the buffers live.
    """

    def __init__(self, table_dims: List[int], rows_per_table: int, config: FiitedConfig,
                 device: Optional[torch.device] = None) -> None:
        super().__init__()
        if rows_per_table < 1:
            raise ValueError(f"FallbackRows: rows_per_table must be >= 1, got {rows_per_table}")
        self.config = config
        self.rows_per_table = int(rows_per_table)
        rows, width = len(table_dims) * self.rows_per_table, max(table_dims)
        state_width = {OptimizerType.SGD: 0, OptimizerType.ADAGRAD: width,
                       OptimizerType.ROWWISE_ADAGRAD: 1}[config.optimizer]
        self.register_buffer("weights", torch.zeros(rows, width, device=device))
        self.register_buffer("state", torch.zeros(rows, state_width, device=device))
        self.register_buffer("table_dims", torch.tensor(table_dims, dtype=torch.int64, device=device),
                             persistent=False)

    def read_only(self) -> "FallbackRows":
        """A copy for inference: the same rows, no optimizer state (``update`` is never called on it)."""
        copy_ = FallbackRows(self.table_dims.tolist(), self.rows_per_table, self.config, self.weights.device)
        copy_.weights.copy_(self.weights)
        copy_.state = self.state.new_zeros(self.state.shape[0], 0)
        return copy_

    def rows_of(self, row_keys: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """Fallback row [n] int64 of each row key [n] (of table ``tables`` [n])."""
        return tables.to(torch.int64) * self.rows_per_table + ops.mix_hash(row_keys, self.rows_per_table, _HASH_SEED)

    def chunk_values(self, keys: torch.Tensor) -> torch.Tensor:
        """The fallback values ``[n, c]`` of chunk keys [n]: chunk k of a row is columns ``k*c .. k*c+c`` of the
        fallback row that row reads (what ``FiitedConfig.fallback_init`` starts a newly admitted row from)."""
        c = self.config.chunk_size
        rows = self.rows_of(row_of_key(keys), key_table(keys))
        columns = key_chunk(keys).unsqueeze(1) * c + torch.arange(c, device=keys.device)
        return self.weights[rows.unsqueeze(1), columns]

    def gather(self, plan: Any, feature_table: torch.Tensor, feature_cols: torch.Tensor, out_dim: int,
               mean_pooling: bool) -> "FallbackBatch":
        """Which occurrences of a planned batch read a fallback row, and where their values go in the output.

        ``plan``: the ``store_step.BatchPlan`` after admission (its ``slots`` say which rows hold no chunk);
        ``mean_pooling``: the kernels pool by mean (each occurrence counts 1 / its bag's length)."""
        device = self.weights.device
        lengths = plan.offsets[1:] - plan.offsets[:-1]
        bag = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)  # [nnz]
        inverse = plan.inverse.to(torch.int64)
        unstored = (plan.slots[:, 0] < 0)[inverse]
        occurrences = unstored.nonzero().reshape(-1)
        bag = bag[occurrences]
        feature = bag // plan.batch_size
        table = feature_table.to(torch.int64)[feature]
        rows = self.rows_of(plan.row_keys[inverse[occurrences]], table)
        scale = torch.ones(occurrences.numel(), device=device)
        if mean_pooling:
            scale = scale / lengths[bag].to(torch.float32)
        width = self.weights.shape[1]
        column = torch.arange(width, device=device)
        valid = column.unsqueeze(0) < self.table_dims[table].unsqueeze(1)  # [m, Dmax]
        flat = (bag % plan.batch_size).unsqueeze(1) * out_dim + feature_cols[feature].unsqueeze(1) + column
        return FallbackBatch(occurrences, rows, scale, valid, flat.masked_fill(~valid, 0), out_dim, plan.batch_size)

    def pooled(self, batch: "FallbackBatch", weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, out_dim]``: the batch's fallback rows pooled into their bags' columns (zeros elsewhere), each
        times its per-sample weight (``weights`` [nnz], if given; differentiable in them)."""
        scale = batch.scale if weights is None else batch.scale * weights[batch.occurrences]
        values = self.weights[batch.rows] * scale.unsqueeze(1) * batch.valid
        out = torch.zeros(batch.batch_size * batch.out_dim, device=self.weights.device)
        out.index_add_(0, batch.flat.reshape(-1), values.reshape(-1))
        return out.reshape(batch.batch_size, batch.out_dim)

    @torch.no_grad()
    def update(self, batch: "FallbackBatch", grad_out: torch.Tensor) -> None:
        """The fused optimizer step on the fallback rows the batch read (``grad_out`` [B, out_dim]). A row whose
        gradient is not finite is left alone (``nonfinite="raise"`` was checked before, with the store's step)."""
        scale = batch.scale if batch.weights is None else batch.scale * batch.weights
        grads = grad_out.to(torch.float32).reshape(-1)[batch.flat] * batch.valid * scale.unsqueeze(1)
        rows, inverse = torch.unique(batch.rows, return_inverse=True)
        summed = torch.zeros(rows.numel(), self.weights.shape[1], device=grads.device).index_add_(0, inverse, grads)
        finite = torch.isfinite(summed).all(1)
        rows, summed = rows[finite], summed[finite]
        config = self.config
        if config.optimizer == OptimizerType.SGD:
            step = summed
        elif config.optimizer == OptimizerType.ADAGRAD:
            self.state[rows] += summed * summed
            step = summed / (self.state[rows].sqrt() + config.eps)
        else:  # row-wise Adagrad: the mean square over the table's dimension, one accumulator per row
            dims = self.table_dims[rows // self.rows_per_table].to(torch.float32)
            self.state[rows, 0] += (summed * summed).sum(1) / dims
            step = summed / (self.state[rows].sqrt() + config.eps)
        self.weights[rows] -= config.learning_rate * step

    def weight_grad(self, batch: "FallbackBatch", grad_out: torch.Tensor, num_values: int) -> torch.Tensor:
        """Gradient of the output with respect to the per-sample weights [nnz] through the fallback rows (zero
        for occurrences that read their chunks)."""
        grads = grad_out.to(torch.float32).reshape(-1)[batch.flat] * batch.valid
        dots = (grads * self.weights[batch.rows]).sum(1) * batch.scale
        return torch.zeros(num_values, device=grads.device).index_add_(0, batch.occurrences, dots)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in ("weights", "state"):
            value = state_dict.get(prefix + name)
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                error_msgs.append(f"fallback rows: {prefix + name} holds NaN or inf")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class FallbackBatch:
    """The occurrences of one batch that read fallback rows: occurrence index [m], fallback row [m], pooling
    scale [m] (1 / bag length under mean pooling, else 1), valid columns [m, Dmax], their flat output positions
    [m, Dmax], and the occurrences' per-sample weights [m] (weighted collections, set by ``FallbackLookup``)."""

    __slots__ = ("occurrences", "rows", "scale", "valid", "flat", "out_dim", "batch_size", "weights")

    def __init__(self, occurrences: torch.Tensor, rows: torch.Tensor, scale: torch.Tensor, valid: torch.Tensor,
                 flat: torch.Tensor, out_dim: int, batch_size: int) -> None:
        self.occurrences, self.rows, self.scale, self.valid, self.flat = occurrences, rows, scale, valid, flat
        self.out_dim, self.batch_size = out_dim, batch_size
        self.weights: Optional[torch.Tensor] = None


class FallbackLookup(torch.autograd.Function):
    """A training step's fallback values; its backward is the fallback rows' fused update."""

    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, weights: Optional[torch.Tensor], fallback: FallbackRows,
                batch: FallbackBatch) -> torch.Tensor:
        ctx.fallback, ctx.batch = fallback, batch
        ctx.need_weight_grad = weights is not None and weights.requires_grad
        if weights is not None:
            batch.weights = weights.detach()[batch.occurrences]
        ctx.num_values = 0 if weights is None else weights.numel()
        return fallback.pooled(batch, weights)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Tuple[None, Optional[torch.Tensor], None, None]:
        weight_grad = (ctx.fallback.weight_grad(ctx.batch, grad_out, ctx.num_values)
                       if ctx.need_weight_grad else None)
        ctx.fallback.update(ctx.batch, grad_out)
        return None, weight_grad, None, None
