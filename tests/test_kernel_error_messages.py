"""Error messages of the compiled ops, word for word: they are built by EMB_OPT_CHECK (common/check_message.h)
without iostreams, so the numbers, dtype names, devices and shapes in them must still come out right."""
import pytest
import torch

import cuda_ext

pytestmark = pytest.mark.skipif(not cuda_ext.extension_loaded(), reason="native extension not built")
ops = torch.ops.emb_opt


def test_integers_in_messages():
    buckets = torch.full((16,), -1, dtype=torch.int32)
    slot_keys = torch.tensor([5, 6, 7, -1], dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r"vhpi_insert_: slot 9 out of range \[0, 4\)"):
        ops.vhpi_insert_(buckets, slot_keys, torch.tensor([0, 9], dtype=torch.int32), 8)
    with pytest.raises(RuntimeError, match=r"vhpi_insert_: slot 3 has no key"):
        ops.vhpi_insert_(buckets, slot_keys, torch.tensor([3], dtype=torch.int32), 8)
    with pytest.raises(RuntimeError, match=r"vhpi: max_probe must be >= 1, got -2"):
        ops.vhpi_lookup(buckets, slot_keys, slot_keys[:1], torch.ones(1, dtype=torch.int32), 1, -2)
    with pytest.raises(RuntimeError, match=r"mix_hash: num_buckets must be >= 1, got 0"):
        ops.mix_hash(torch.arange(3), 0, 0)


def test_offsets_messages():
    values = torch.tensor([1, 2, 3], dtype=torch.int64)
    feature_table = torch.zeros(1, dtype=torch.int32)
    table_rows = torch.tensor([10], dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r"offsets\[0\] must be 0, got 1"):
        ops.chunk_bag_unique(values, torch.tensor([1, 2, 3], dtype=torch.int64), feature_table, table_rows, 2)
    with pytest.raises(RuntimeError, match=r"offsets\[-1\] = 7 exceeds the 3 values"):
        ops.chunk_bag_unique(values, torch.tensor([0, 2, 7], dtype=torch.int64), feature_table, table_rows, 2)
    with pytest.raises(RuntimeError, match=r"feature 0 maps to table 4 of 1"):
        ops.chunk_bag_unique(values, torch.tensor([0, 2, 3], dtype=torch.int64), torch.tensor([4], dtype=torch.int32), table_rows, 2)


def test_dtype_names_in_messages():
    buckets = torch.full((16,), -1, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"row_keys must be Long, got Float"):
        ops.vhpi_lookup(buckets, torch.zeros(2, dtype=torch.int64), torch.zeros(1), torch.ones(1, dtype=torch.int32), 1, 4)
    with pytest.raises(RuntimeError, match=r"must be int32 or int64, got Double"):
        ops.mix_hash(torch.zeros(3, dtype=torch.float64), 7, 0)
