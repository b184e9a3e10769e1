"""Checkpoints of the older store layouts -- chunk-keyed (``slot_keys``, chunk-keyed buckets, a free stack), and
row-keyed with row-wise Adagrad's accumulators in chunk-0 slots (no ``entry_state``) -- load into today's store
and train on exactly as the module that saved them, and report the same."""
import copy
import warnings

import pytest
import torch

import emb_opt
from tests.fiited_helpers import random_kjt, small_tables
from tests.legacy_layout import to_chunk_keyed, to_slot_rowwise_state

OPTIONS = dict(memory_budget=10**5, chunk_size=4, warmup_steps=3, resize_interval=2, initial_capacity=16, learning_rate=0.1)


def step(m: emb_opt.FiitedEmbeddingBagCollection, i: int) -> torch.Tensor:
    out = m(random_kjt(i, max_len=4))
    out.values().pow(2).sum().backward()
    return out.values().detach()


LAYOUTS = {
    "chunk_keyed_8_counters": lambda sd: to_chunk_keyed(sd, counters=8),
    "chunk_keyed_10_counters": lambda sd: to_chunk_keyed(sd, counters=10),
    "rowwise_state_in_slots": to_slot_rowwise_state,
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_an_old_layout_checkpoint_loads_and_trains_on_identically(layout):
    tables = small_tables(dim=8, rows=(40, 25))
    a = emb_opt.FiitedEmbeddingBagCollection(tables, **OPTIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in range(6):
            step(a, i)
        old = LAYOUTS[layout](copy.deepcopy(a.state_dict()))
        assert "store.entry_state" not in old and old["store.pool_state"].shape[1] == 1
        assert ("store.slot_keys" in old) == layout.startswith("chunk_keyed")
        b = emb_opt.FiitedEmbeddingBagCollection(tables, **OPTIONS)
        b.load_state_dict(old)  # strict: the old entries are consumed, none is unexpected
        assert b.store.num_live == a.store.num_live and b.store.num_rows == a.store.num_rows
        for t in ("t0", "t1"):
            assert torch.equal(b.to_dense_weights(t), a.to_dense_weights(t))
        for i in range(6, 14):  # resizes at steps 7, 9, 11, 13 on both
            assert torch.equal(step(b, i), step(a, i)), f"step {i} differs after loading the old layout"
    assert torch.equal(a.store.sketch, b.store.sketch)
    assert a.store.counter_dict()["admitted_chunks"] == b.store.counter_dict()["admitted_chunks"]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_report_reads_an_old_layout_checkpoint(layout):
    tables = small_tables(dim=8, rows=(40, 25))
    m = emb_opt.FiitedEmbeddingBagCollection(tables, **OPTIONS)
    for i in range(4):
        step(m, i)
    now = emb_opt.memory_report(m).set_index("table")
    old = emb_opt.memory_report(LAYOUTS[layout](m.state_dict())).set_index("table")
    columns = ["live_rows", "live_chunks", "dims_histogram", "weights_bytes", "optimizer_bytes", "utility_bytes", "index_bytes"]
    assert old.loc[["t0", "t1"], columns].equals(now.loc[["t0", "t1"], columns])


def test_a_damaged_old_checkpoint_is_refused_with_the_reason():
    tables = small_tables(dim=8, rows=(40, 25))
    m = emb_opt.FiitedEmbeddingBagCollection(tables, **OPTIONS)
    step(m, 0)
    old = to_chunk_keyed(m.state_dict())
    live = (old["store.slot_keys"] >= 0).nonzero().reshape(-1)
    chunk0 = live[(old["store.slot_keys"][live] & 63) == 0][0]
    old["store.slot_keys"][chunk0] = -1  # a row that lost its first chunk but kept its second
    fresh = emb_opt.FiitedEmbeddingBagCollection(tables, **OPTIONS)
    with pytest.raises(ValueError, match="not chunk prefixes"):
        fresh.load_state_dict(old)
