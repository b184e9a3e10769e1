"""Deterministic embedding init: every element is a hash of (table name, row, column, seed).

FIITED creates a row's chunks when the row is first touched (or re-admitted), in whatever shard holds the table,
so it cannot draw them from a random generator in creation order; each element is instead a pure function of
where it sits:

    value(table, row, col) = (2 u - 1) * scale,   u = hash(table name, row, col, seed) / 2^24 in [0, 1)

uniform in ``[-scale, scale)`` like TorchRec's default init (``scale = sqrt(1 / num_embeddings)``). The value
does not depend on the chunk size, on the step at which the row was admitted, or on which collection or shard
holds the table, so a re-admitted chunk starts again from its original values, and a dense table initialised
with ``hashed_dense_init`` starts exactly where a FIITED store of the same table starts. The experiments use
that to give every method the same initial embeddings (common random numbers), so that paired comparisons of
methods measure the methods and not the luck of their inits.
"""
from __future__ import annotations

import hashlib
from typing import Union

import torch

from cuda_ext import ops

MAX_COLUMNS = 1 << 20  # columns per row the element key can hold (embedding_dim < 2^20)
_ROW_BITS_OUT = 40
_INIT_SALT = 303


def name_salt(name: str) -> int:
    """A stable 62-bit number from a table name (the same in every process and shard)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 2


def hashed_uniform(salt: Union[int, torch.Tensor], rows: torch.Tensor, columns: torch.Tensor,
                   scale: Union[float, torch.Tensor], seed: int = 0) -> torch.Tensor:
    """Init values ``[n, m]`` of ``rows`` ``[n]`` (int64) at ``columns``: ``[m]`` for every row, or ``[n, m]``
    per row (int64, < 2^20).

    ``salt``: ``name_salt`` of each row's table (an int or ``[n]`` int64); ``scale``: float or ``[n]``.
    """
    if columns.numel() and int(columns.max()) >= MAX_COLUMNS:
        raise ValueError(f"hashed init supports embedding dims below {MAX_COLUMNS}, got column {int(columns.max())}")
    return hashed_values(salt, rows, columns, scale, seed)


def hashed_values(salt: Union[int, torch.Tensor], rows: torch.Tensor, columns: torch.Tensor,
                  scale: Union[float, torch.Tensor], seed: int = 0) -> torch.Tensor:
    """``hashed_uniform`` without the column-range check, for callers that validated their dims once (the
    chunk store, whose tables were checked at construction): no device sync on the admission path."""
    rows = rows.to(torch.int64)
    mixed_seed = _INIT_SALT + 1_000_003 * int(seed)
    salt = torch.as_tensor(salt, dtype=torch.int64, device=rows.device)
    row_part = ops.mix_hash(ops.mix_hash(rows, 1 << 62, mixed_seed) ^ salt, 1 << _ROW_BITS_OUT, mixed_seed)
    columns = columns.to(device=rows.device, dtype=torch.int64)
    elements = row_part.unsqueeze(1) * MAX_COLUMNS + (columns if columns.dim() == 2 else columns.unsqueeze(0))
    bits = ops.mix_hash(elements.reshape(-1), 1 << 24, _INIT_SALT).reshape(elements.shape)
    unit = bits.to(torch.float32) / float(1 << 24)
    scale = torch.as_tensor(scale, dtype=torch.float32, device=rows.device)
    if scale.dim() == 1:
        scale = scale.unsqueeze(1)
    return (2.0 * unit - 1.0) * scale


def hashed_dense_init(name: str, num_rows: int, dim: int, scale: float, seed: int = 0,
                      block_rows: int = 1 << 16) -> torch.Tensor:
    """A dense ``[num_rows, dim]`` table with the values a FIITED store of table ``name`` gives its chunks."""
    out = torch.empty(num_rows, dim)
    columns = torch.arange(dim)
    salt = name_salt(name)
    for start in range(0, num_rows, block_rows):
        rows = torch.arange(start, min(num_rows, start + block_rows))
        out[start : start + rows.numel()] = hashed_uniform(salt, rows, columns, scale, seed)
    return out
