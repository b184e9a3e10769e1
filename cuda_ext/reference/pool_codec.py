"""Reference of ``csrc/chunk_bag/pool_codec.h``: how a chunk pool stores its weights -- float32 as is, bfloat16
rounded stochastically per weight, int8 with a float32 scale per chunk (``pool_scale`` [S, 1]; weight = q x scale)
set to max |w| / 127 by each update and each weight quantized stochastically, ``q = floor(w / scale + u)`` with u
uniform in [0, 1) from the same random bits. Bit-identical to the kernels for the same float32 values."""
from __future__ import annotations

from typing import Optional

import torch

from cuda_ext.reference.hashing import _srl
from cuda_ext.reference.stochastic_round import rounding_random, to_bfloat16_stochastic

INT8_LEVELS = 127.0


def load(pool: torch.Tensor, pool_scale: Optional[torch.Tensor], slots: torch.Tensor) -> torch.Tensor:
    """float32 ``[n, c]`` weights of the chunks at ``slots`` [n] (int64, valid slots)."""
    weights = pool[slots].float()
    return weights * pool_scale[slots] if pool.dtype == torch.int8 else weights


def store(pool: torch.Tensor, pool_scale: Optional[torch.Tensor], slots: torch.Tensor, values: torch.Tensor,
          seed: int) -> None:
    """Write float32 ``values`` [n, c] as the chunks at ``slots`` [n] (distinct), rounding as the pool's dtype does."""
    c = pool.shape[1]
    if pool.dtype == torch.float32:
        pool[slots] = values
        return
    random = rounding_random(seed, slots, c)
    if pool.dtype == torch.bfloat16:
        pool[slots] = to_bfloat16_stochastic(values, random)
        return
    scale = values.abs().amax(1, keepdim=True) / INT8_LEVELS
    unit = _srl(random, 40).to(torch.float32) * 2.0 ** -24
    q = torch.floor(values / scale + unit).clamp(-INT8_LEVELS, INT8_LEVELS)  # a zero scale: all-zero chunk, q = 0
    pool[slots] = torch.where(scale > 0, q, torch.zeros_like(q)).to(torch.int8)
    pool_scale[slots] = scale
