"""How a chunk store keeps its weights (``FiitedConfig.weight_dtype``), for the writes and reads the store makes
itself (init values, imports, exports, inspection); the kernels' side -- reading chunks and writing updated ones
with stochastic rounding -- is ``cuda_ext/csrc/chunk_bag/pool_codec.h``.

* "float32": ``pool_weights`` [S, c] float32; ``pool_scale`` [S, 0].
* "bfloat16": ``pool_weights`` [S, c] bfloat16; ``pool_scale`` [S, 0].
* "int8": ``pool_weights`` [S, c] int8 in -127..127 and ``pool_scale`` [S, 1] float32, a chunk's weights being
  ``q x scale`` with ``scale = max |w| / 127`` of the chunk (a chunk of zeros: scale 0).

The store encodes values it writes with round-to-nearest (they are not updates: nothing accumulates there); the
kernels round updates stochastically.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

INT8_LEVELS = 127
SCALE_WIDTH = {torch.float32: 0, torch.bfloat16: 0, torch.int8: 1}  # pool_scale columns per slot, by pool dtype


def encode(values: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """float ``values`` [n, c] -> (weights [n, c] of ``dtype``, scales [n, SCALE_WIDTH[dtype]] float32)."""
    values = values.to(torch.float32)
    if dtype != torch.int8:
        return values.to(dtype), values.new_zeros(values.shape[0], 0)
    scale = values.abs().amax(1, keepdim=True) / INT8_LEVELS
    q = torch.where(scale > 0, torch.round(values / scale), torch.zeros_like(values))
    return q.clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8), scale


def decode(weights: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(weights [n, c], scales [n, 0 or 1]) -> float32 values [n, c]."""
    values = weights.to(torch.float32)
    return values * scales if weights.dtype == torch.int8 else values


def scale_argument(pool_scale: torch.Tensor) -> Optional[torch.Tensor]:
    """What the chunk-bag ops take as ``pool_scale``: the scales of an int8 pool, else None."""
    return pool_scale if pool_scale.shape[1] else None
