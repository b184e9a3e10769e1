"""Error messages of the compiled ops, word for word: they are built by EMB_OPT_CHECK (common/check_message.h)
without iostreams, so the numbers, dtype names, positions and shapes in them must still come out right, and an
index outside what it indexes raises IndexError (EMB_OPT_CHECK_INDEX)."""
import pytest
import torch

from kernel_cases import requires_extension

import cuda_ext

pytestmark = requires_extension
ops = torch.ops.emb_opt


def test_integers_in_messages():
    buckets = torch.full((16,), -1, dtype=torch.int32)
    slot_keys = torch.tensor([5, 6, 7, -1], dtype=torch.int64)
    with pytest.raises(IndexError, match=r"vhpi_insert_: slots\[1\] = 9 is outside \[0, 4\) \(the 4 slots of "
                                         r"slot_keys\)"):
        ops.vhpi_insert_(buckets, slot_keys, torch.tensor([0, 9], dtype=torch.int32), 8)
    with pytest.raises(IndexError, match=r"vhpi_insert_: slots\[0\] = 3 has no key \(slot_keys\[3\] = -1\)"):
        ops.vhpi_insert_(buckets, slot_keys, torch.tensor([3], dtype=torch.int32), 8)
    with pytest.raises(RuntimeError, match=r"vhpi_lookup_runs: max_probe must be >= 1, got -2"):
        ops.vhpi_lookup_runs(buckets, slot_keys, torch.zeros(4, dtype=torch.int32), torch.zeros(4, dtype=torch.int8),
                             slot_keys[:1], 1, -2)
    with pytest.raises(RuntimeError, match=r"mix_hash: num_buckets must be >= 1, got 0"):
        ops.mix_hash(torch.arange(3), 0, 0)
    with pytest.raises(ValueError, match=r"mix_hash: ids must be >= 0, got ids\[1, 0\] = -3"):
        ops.mix_hash(torch.tensor([[1, 2], [-3, 4]]), 5, 0)


def test_offsets_messages():
    values = torch.tensor([1, 2, 3], dtype=torch.int64)
    feature_table = torch.zeros(1, dtype=torch.int32)
    table_rows = torch.tensor([10], dtype=torch.int64)
    with pytest.raises(IndexError, match=r"chunk_bag_unique: offsets\[0\] must be 0, got 1"):
        ops.chunk_bag_unique(values, torch.tensor([1, 2, 3], dtype=torch.int64), feature_table, table_rows, 2)
    with pytest.raises(IndexError, match=r"chunk_bag_unique: offsets\[-1\] = 7 exceeds the 3 values"):
        ops.chunk_bag_unique(values, torch.tensor([0, 2, 7], dtype=torch.int64), feature_table, table_rows, 2)
    with pytest.raises(IndexError, match=r"chunk_bag_unique: feature_table\[0\] = 4 is outside \[0, 1\) \(the 1 "
                                         r"tables\)"):
        ops.chunk_bag_unique(values, torch.tensor([0, 2, 3], dtype=torch.int64), torch.tensor([4], dtype=torch.int32),
                             table_rows, 2)


def test_positions_in_two_dimensions():
    pool, slots = torch.zeros(4, 2), torch.tensor([[0, 1], [2, -1], [3, 9]], dtype=torch.int32)
    one = torch.ones(1, dtype=torch.int64)
    with pytest.raises(IndexError, match=r"chunk_bag_forward: slots\[2, 1\] = 9 is outside \[-1, 4\) \(-1 or one of "
                                         r"the pool's 4 slots\)"):
        ops.chunk_bag_forward(pool, slots, torch.zeros(1, dtype=torch.int32), torch.tensor([0, 1]), None,
                              torch.zeros(1, dtype=torch.int32), torch.tensor([2], dtype=torch.int32), 0 * one, 1, 4, 0)


def test_dtype_names_in_messages():
    buckets = torch.full((16,), -1, dtype=torch.int32)
    keys = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r"row_keys must be Long, got Float"):
        ops.vhpi_lookup_runs(buckets, keys, torch.zeros(2, dtype=torch.int32), torch.zeros(2, dtype=torch.int8),
                             torch.zeros(1), 1, 4)
    with pytest.raises(RuntimeError, match=r"must be int32 or int64, got Double"):
        ops.mix_hash(torch.zeros(3, dtype=torch.float64), 7, 0)


def test_index_check_mode_is_a_process_setting_the_cpu_ignores():
    if not hasattr(cuda_ext._C, "set_index_check_mode"):
        pytest.skip("operators loaded without cuda_ext._C's module (set EMB_OPT_INDEX_CHECKS instead)")
    assert cuda_ext.index_check_mode() == "all"
    with pytest.raises(RuntimeError, match=r'index check mode must be "all" or "ids", got "none"'):
        cuda_ext.set_index_check_mode("none")
    cuda_ext.set_index_check_mode("ids")
    try:
        assert cuda_ext.index_check_mode() == "ids"
        with pytest.raises(IndexError, match=r"slots\[1\] = 9 is outside"):  # the CPU checks in every mode
            ops.vhpi_insert_(torch.full((16,), -1, dtype=torch.int32), torch.arange(4) * 64,
                             torch.tensor([0, 9], dtype=torch.int32), 8)
    finally:
        cuda_ext.set_index_check_mode("all")
