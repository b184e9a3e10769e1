"""Random-hash baselines: map raw ids to ``num_buckets`` rows.

* ``method="mix"`` (default): a seeded 64-bit mix (splitmix64 finalizer) then ``mod num_buckets``; ids that are
  close or share low bits spread uniformly, and each seed gives an independent hash.
* ``method="modulo"``: the standard ``id mod num_buckets`` (what Criteo DLRM preprocessing does); no seed.

Both accept int32/int64 tensors of any shape with ids >= 0, return int64 of the same shape, and raise a
``ValueError``/``TypeError`` that names the bad id and its position otherwise. The mix hash runs in the native
kernel (``torch.ops.emb_opt.mix_hash``, CPU or CUDA) when built, else the bit-identical PyTorch reference.
"""
from __future__ import annotations

import numbers

import torch

from cuda_ext import ops

HASH_METHODS = ("mix", "modulo")


def check_ids(ids: torch.Tensor, what: str = "ids") -> None:
    """Raise a clear error unless ``ids`` is an int32/int64 tensor of non-negative values."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of int32/int64 ids, got {type(ids).__name__}")
    if ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{what} must be int32 or int64, got {ids.dtype}")
    if ids.numel() and int(ids.min()) < 0:
        flat = ids.reshape(-1)
        position = int((flat < 0).nonzero()[0, 0])
        raise ValueError(f"{what} must be >= 0: got id {int(flat[position])} at position {position}")


def random_hash(ids: torch.Tensor, num_buckets: int, seed: int = 0, method: str = "mix") -> torch.Tensor:
    """Hash ``ids`` (int32/int64, >= 0, any shape) into ``[0, num_buckets)``; returns int64, same shape."""
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, numbers.Integral) or not 1 <= num_buckets < 2**63:
        raise ValueError(f"num_buckets must be an int in [1, 2^63), got {num_buckets!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed must be an int that fits in int64, got {seed!r}")
    check_ids(ids)
    if method == "mix":
        return ops.mix_hash(ids, int(num_buckets), int(seed))
    if method == "modulo":
        return ids.to(torch.int64) % int(num_buckets)
    raise ValueError(f"unknown hash method {method!r}; expected one of {HASH_METHODS}")
