"""Autograd glue between a FIITED collection and the chunk-bag kernels.

Forward: ``chunk_bag_forward`` pools the live chunks of each bag into ``[B, sum D_f]``. Backward: one call
of ``chunk_bag_backward_update_`` applies the fused sparse optimizer to every live chunk the batch touched,
adds their utilities, and returns the would-be utility of each row's first missing chunk, which the
collection feeds to the store's sketch. The pool is not an autograd leaf (like FBGEMM's fused TBE, the
optimizer runs inside backward), so the function takes a zero-size ``anchor`` that requires grad to make
autograd call it; per-sample weights get a real gradient when they require one.

Eval forwards change nothing, yet per-sample weights that require grad still get their gradient (as from a
TorchRec EBC in eval mode): ``EvalChunkBagLookup`` pools with the same kernel and, in backward, computes
``d out / d w_i`` from the live chunks alone (``occurrence_weight_grad``), with no optimizer step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch

from cuda_ext import ops


@dataclass
class BatchPlan:
    """What one batch's forward computed and its backward needs (shapes in chunk_bag_ops.cpp)."""

    row_keys: torch.Tensor  # [U] int64
    inverse: torch.Tensor  # [nnz] int32
    unique_offsets: torch.Tensor  # [U+1] int64
    unique_occ: torch.Tensor  # [nnz] int32
    occ_bag: torch.Tensor  # [nnz] int32
    slots: torch.Tensor  # [U, max_chunks] int32
    offsets: torch.Tensor  # [F*B+1] int64
    weights: Optional[torch.Tensor]  # [nnz] float32 or None
    batch_size: int
    truncated: Optional[torch.Tensor] = None  # [U] bool: rows cut short by prefix dropout this step
    pending: Optional["PendingBackward"] = None  # set while its backward has not run
    entries: Optional[torch.Tensor] = None  # [U] int32 index entry of each row (-1: not stored): per-row state


class PendingBackward:
    """Marks a forward whose backward has not run yet (its slot matrix must stay valid until then)."""

    __slots__ = ("released",)

    def __init__(self) -> None:
        self.released = False


class ChunkBagLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, weights: Optional[torch.Tensor], collection: Any, plan: BatchPlan) -> torch.Tensor:
        ctx.collection = collection
        ctx.plan = plan
        ctx.need_weight_grad = weights is not None and weights.requires_grad
        return collection._pool(plan)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Tuple[None, Optional[torch.Tensor], None, None]:
        weight_grad = ctx.collection._backward_update(ctx.plan, grad_out, ctx.need_weight_grad)
        return None, weight_grad if ctx.need_weight_grad else None, None, None


def occurrence_weight_grad(pool: torch.Tensor, plan: BatchPlan, grad_out: torch.Tensor, feature_cols: torch.Tensor,
                           pooling_mode: int) -> torch.Tensor:
    """Gradient of the pooled output with respect to each occurrence's weight, float32 [nnz]: the dot product of
    the occurrence's row (its live chunks; pruned ones are zeros) with the output gradient of its bag's columns
    (divided by the bag length under mean pooling). grad_out [B, out_dim]; plan.slots [U, Cmax]."""
    device, c, max_chunks = pool.device, pool.shape[1], plan.slots.shape[1]
    lengths = plan.offsets[1:] - plan.offsets[:-1]
    bag = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)  # [nnz]
    row_slots = plan.slots[plan.inverse.to(torch.int64)].to(torch.int64)  # [nnz, Cmax]
    rows = (pool[row_slots.clamp(min=0)] * (row_slots >= 0).unsqueeze(-1)).reshape(bag.numel(), max_chunks * c)
    cols = feature_cols[bag // plan.batch_size].unsqueeze(1) + torch.arange(max_chunks * c, device=device)
    grads = grad_out.to(torch.float32)[(bag % plan.batch_size).unsqueeze(1), cols.clamp(max=grad_out.shape[1] - 1)]
    weight_grad = (grads * rows).sum(1)  # columns past a row's table read zero chunks: they add nothing
    if pooling_mode == 1:
        weight_grad = weight_grad / lengths[bag].to(torch.float32)
    return weight_grad


class EvalChunkBagLookup(torch.autograd.Function):
    """The eval-mode lookup when per-sample weights require grad: their gradient, and nothing trained."""

    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, collection: Any, plan: BatchPlan) -> torch.Tensor:
        ctx.collection = collection
        ctx.plan = plan
        return collection._pool(plan)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Tuple[Optional[torch.Tensor], None, None]:
        c = ctx.collection
        weight_grad = occurrence_weight_grad(c.store.pool_weights, ctx.plan, grad_out, c._feature_cols, c._pooling_mode)
        c._release(ctx.plan.pending)
        return weight_grad, None, None
