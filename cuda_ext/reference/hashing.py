"""Reference of the 64-bit mixer in ``csrc/common/mix64.h``, written with int64 tensor arithmetic.

torch int64 multiplication wraps modulo 2**64 like uint64, so only right shifts need care: torch shifts are
arithmetic, and the C++ ones logical, hence the masks.
"""
from __future__ import annotations

import torch

from cuda_ext.reference.checks import position

_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)


def _srl(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Logical right shift of int64 values (as uint64)."""
    return (x >> shift) & ((1 << (64 - shift)) - 1)


def _wrap64(value: int) -> int:
    """Python int -> the int64 with the same low 64 bits."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= (1 << 63) else value


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64 finalizer on int64 tensors (bits as uint64)."""
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def seeded_hash63(ids: torch.Tensor, seed: int) -> torch.Tensor:
    """Non-negative 63-bit hash of int64 ids: ``mix64(id + (seed + 1) * golden) >> 1``."""
    return _srl(mix64(ids.to(torch.int64) + _wrap64((seed + 1) * _GOLDEN)), 1)


def mix_hash(ids: torch.Tensor, num_buckets: int, seed: int) -> torch.Tensor:
    """Reference of ``torch.ops.emb_opt.mix_hash``: ``seeded_hash63(ids, seed) % num_buckets`` (int64)."""
    if ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"mix_hash: ids must be int32 or int64, got {ids.dtype}")
    if num_buckets < 1:
        raise ValueError(f"mix_hash: num_buckets must be >= 1, got {num_buckets}")
    if ids.numel() and int(ids.min()) < 0:
        flat = ids.reshape(-1)
        first = int((flat < 0).nonzero()[0, 0])
        raise ValueError(f"mix_hash: ids must be >= 0, got ids{position(ids.shape, first)} = {int(flat[first])}")
    return seeded_hash63(ids, seed) % num_buckets
