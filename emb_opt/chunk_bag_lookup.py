"""Autograd glue between a FIITED collection and the chunk-bag kernels.

Forward: ``chunk_bag_forward`` pools the live chunks of each bag into ``[B, sum D_f]``. Backward: one call
of ``chunk_bag_backward_update_`` applies the fused sparse optimizer to every live chunk the batch touched,
adds their utilities, and returns the would-be utility of each row's first missing chunk, which the
collection feeds to the store's sketch. The pool is not an autograd leaf (like FBGEMM's fused TBE, the
optimizer runs inside backward), so the function takes a zero-size ``anchor`` that requires grad to make
autograd call it; per-sample weights get a real gradient when they require one.
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
