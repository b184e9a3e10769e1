"""The contract between Python and the native kernels: the VHPI key layout and the integer codes the ops take.

One place on each side: this module for Python (the library, the references, the tests) and
``cuda_ext/csrc/common/layout.h`` for C++ / CUDA; ``tests/test_kernels_layout.py`` holds the two equal.

Key of virtual chunk (table t, row r, chunk k): ``((t << ROW_BITS | r) << CHUNK_BITS) | k``, a non-negative int64,
so sorting keys groups a row's chunks together in chunk order. A *row key* is the key of chunk 0.
"""
from __future__ import annotations

import torch

CHUNK_BITS = 6
ROW_BITS = 47
TABLE_BITS = 10
MAX_CHUNKS = 1 << CHUNK_BITS  # chunk positions a key can hold (the store allows at most this many per row)
MAX_ROWS = 1 << ROW_BITS
MAX_TABLES = 1 << TABLE_BITS
PROBE_SEED = 0x5EED  # seed of the hash that gives a row key its home bucket

# codes of the ops' int arguments
OPTIMIZER_CODES = {"sgd": 0, "adagrad": 1, "rowwise_adagrad": 2}
UTILITY_CODES = {"freq": 0, "grad": 1, "freq_grad": 2}
POOLING_CODES = {"sum": 0, "mean": 1}


def pack_row_key(table: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Row key (chunk 0) of (table, row); int64."""
    return ((table.to(torch.int64) << ROW_BITS) | row.to(torch.int64)) << CHUNK_BITS


def key_table(key: torch.Tensor) -> torch.Tensor:
    """Table index of each key."""
    return key >> (ROW_BITS + CHUNK_BITS)


def key_row(key: torch.Tensor) -> torch.Tensor:
    """Row (virtual id) of each key."""
    return (key >> CHUNK_BITS) & (MAX_ROWS - 1)


def key_chunk(key: torch.Tensor) -> torch.Tensor:
    """Chunk position of each key (0 for a row key)."""
    return key & (MAX_CHUNKS - 1)


def row_of_key(key: torch.Tensor) -> torch.Tensor:
    """The row key (chunk 0) of each chunk key."""
    return key & ~(MAX_CHUNKS - 1)
