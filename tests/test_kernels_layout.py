"""The layout contract has one definition per language: cuda_ext/layout.py for Python and
cuda_ext/csrc/common/layout.h for C++ / CUDA (exposed as cuda_ext._C.layout). They must agree, and the references
must use the Python one."""
import pytest
import torch

import cuda_ext
from cuda_ext import layout
from cuda_ext.reference import chunk_bag, chunk_bag_checks, vhpi

NAMES = ("CHUNK_BITS", "ROW_BITS", "TABLE_BITS", "MAX_CHUNKS", "MAX_ROWS", "MAX_TABLES", "PROBE_SEED",
         "OPTIMIZER_CODES", "UTILITY_CODES", "POOLING_CODES")


@pytest.mark.skipif(not hasattr(cuda_ext._C, "layout"), reason="cuda_ext._C not built (or loaded without its module)")
def test_cpp_layout_equals_python_layout():
    cpp = cuda_ext._C.layout
    assert sorted(cpp) == sorted(NAMES)
    for name in NAMES:
        assert cpp[name] == getattr(layout, name), name


def test_layout_is_consistent():
    assert layout.CHUNK_BITS + layout.ROW_BITS + layout.TABLE_BITS == 63  # keys are non-negative int64
    assert (layout.MAX_CHUNKS, layout.MAX_ROWS, layout.MAX_TABLES) == (
        1 << layout.CHUNK_BITS, 1 << layout.ROW_BITS, 1 << layout.TABLE_BITS)
    table, row = torch.tensor([0, 3, layout.MAX_TABLES - 1]), torch.tensor([5, layout.MAX_ROWS - 1, 0])
    keys = layout.pack_row_key(table, row) | torch.tensor([0, 7, layout.MAX_CHUNKS - 1])
    assert bool((keys >= 0).all())
    assert layout.key_table(keys).tolist() == table.tolist() and layout.key_row(keys).tolist() == row.tolist()
    assert layout.key_chunk(keys).tolist() == [0, 7, layout.MAX_CHUNKS - 1]
    assert torch.equal(layout.row_of_key(keys), layout.pack_row_key(table, row))


def test_references_take_the_layout_from_cuda_ext_layout():
    assert vhpi.PROBE_SEED is layout.PROBE_SEED and chunk_bag.pack_row_key is layout.pack_row_key
    for module in (vhpi, chunk_bag, chunk_bag_checks):  # whatever they name of the layout is cuda_ext.layout's
        for name in NAMES + ("pack_row_key", "key_table", "key_row", "key_chunk", "row_of_key"):
            if hasattr(module, name):
                assert getattr(module, name) is getattr(layout, name), f"{module.__name__}.{name}"
