"""Reference of ``csrc/common/stochastic_round.h``: float32 -> bfloat16 with stochastic rounding, bit-identical to
the kernels (integer arithmetic on the float's bits).

A weight is rounded up or down to a neighbouring bfloat16 at random, so that its expected stored value is the
float32 one: the low 16 bits of ``mix64(slot * c + column + seed * golden)`` are added below the bfloat16
mantissa, and the sum truncated.
"""
from __future__ import annotations

import torch

from cuda_ext.reference.hashing import _GOLDEN, _wrap64, mix64

_EXPONENT = 0x7F800000
_LOW16 = 0xFFFF


def rounding_random(seed: int, slots: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """The random bits of every float of the given pool slots [n] in an update seeded ``seed``: int64 [n, c]."""
    flat = slots.to(torch.int64).unsqueeze(1) * chunk_size + torch.arange(chunk_size, device=slots.device)
    return mix64(flat + _wrap64(seed * _GOLDEN))


def to_bfloat16_stochastic(values: torch.Tensor, random: torch.Tensor) -> torch.Tensor:
    """``values`` (float32) rounded to bfloat16 with the low 16 bits of ``random`` (int64, same shape); NaN and inf
    round to nearest."""
    bits = values.to(torch.float32).contiguous().view(torch.int32)
    finite = (bits & _EXPONENT) != _EXPONENT
    noisy = (bits + (random & _LOW16).to(torch.int32)) & ~_LOW16  # int32 wraps like the kernels' uint32
    rounded = noisy.view(torch.float32).to(torch.bfloat16)  # exact: the low 16 bits are zero
    return torch.where(finite, rounded, values.to(torch.bfloat16))
