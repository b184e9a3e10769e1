"""VHPI hash-table kernels (csrc/vhpi) held to the pure-PyTorch reference on random stores."""
import pytest
import torch

import cuda_ext
from cuda_ext import reference
from cuda_ext.reference.vhpi import pack_row_key

pytestmark = pytest.mark.skipif(not cuda_ext.extension_loaded(), reason="native extension not built")
ops = torch.ops.emb_opt


def random_store(seed: int, num_rows: int = 300, num_tables: int = 3, max_chunks: int = 4, spare: int = 50):
    """slot_keys of a store holding a random prefix of chunks for random rows, with free slots mixed in."""
    gen = torch.Generator().manual_seed(seed)
    tables = torch.randint(0, num_tables, (num_rows,), generator=gen)
    rows = torch.unique(torch.randint(0, 10**9, (num_rows * 2,), generator=gen))[:num_rows]
    rows = rows[torch.randperm(rows.numel(), generator=gen)]
    row_keys = pack_row_key(tables, rows)
    live = torch.randint(0, max_chunks + 1, (num_rows,), generator=gen)
    keys = torch.cat([row_keys[i] + torch.arange(int(live[i])) for i in range(num_rows)])
    slot_keys = torch.cat([keys, torch.full((spare,), -1, dtype=torch.int64)])
    slot_keys = slot_keys[torch.randperm(slot_keys.numel(), generator=gen)]
    return row_keys, live, slot_keys


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("load", [0.3, 0.7])
def test_rebuild_and_lookup_match_reference(seed, load):
    row_keys, live, slot_keys = random_store(seed)
    num_buckets = int((slot_keys >= 0).sum() / load) + 1
    got = ops.vhpi_rebuild(slot_keys, num_buckets, 64)
    want = reference.vhpi_rebuild(slot_keys, num_buckets, 64)
    assert torch.equal(got, want)
    # lookup a mix of stored rows and unknown rows, asking for up to 4 chunks
    gen = torch.Generator().manual_seed(seed + 100)
    unknown = pack_row_key(torch.zeros(50, dtype=torch.int64), torch.randint(10**9, 2 * 10**9, (50,), generator=gen))
    query = torch.cat([row_keys, unknown])
    num_chunks = torch.randint(1, 5, (query.numel(),), generator=gen, dtype=torch.int32)
    slots = ops.vhpi_lookup(got, slot_keys, query, num_chunks, 4, 64)
    assert torch.equal(slots, reference.vhpi_lookup(want, slot_keys, query, num_chunks, 4, 64))
    # and the answer is right: each found slot holds its key, the live prefix is complete
    for u in range(row_keys.numel()):
        expect = min(int(live[u]), int(num_chunks[u]))
        found = slots[u]
        assert int((found >= 0).sum()) == expect
        for k in range(expect):
            assert int(slot_keys[found[k]]) == int(row_keys[u]) + k
    assert bool((slots[row_keys.numel():] < 0).all())


def test_insert_matches_reference_and_reports_full_table():
    row_keys, _, slot_keys = random_store(5)
    live_slots = (slot_keys >= 0).nonzero().reshape(-1).to(torch.int32)
    half = live_slots.numel() // 2
    num_buckets = live_slots.numel() * 2
    a = ops.vhpi_rebuild(torch.where(torch.isin(torch.arange(slot_keys.numel()), live_slots[:half].long()), slot_keys, -1), num_buckets, 32)
    b = a.clone()
    assert ops.vhpi_insert_(a, slot_keys, live_slots[half:], 32) == live_slots.numel() - half
    assert reference.vhpi_insert_(b, slot_keys, live_slots[half:], 32) == live_slots.numel() - half
    assert torch.equal(a, b)
    # every live key is now findable
    found = ops.vhpi_lookup(a, slot_keys, slot_keys[live_slots.long()] & ~63, (slot_keys[live_slots.long()] & 63).to(torch.int32) + 1, 64, 32)
    assert torch.equal(found[torch.arange(live_slots.numel()), (slot_keys[live_slots.long()] & 63)], live_slots)
    # a table with fewer buckets than keys must report how many went in
    tiny = torch.full((8,), -1, dtype=torch.int32)
    assert ops.vhpi_insert_(tiny, slot_keys, live_slots[:20], 4) == 8
    assert ops.vhpi_rebuild(slot_keys, 8, 4).numel() == 0


def test_bad_arguments_raise():
    with pytest.raises(RuntimeError, match="buckets must be"):
        ops.vhpi_lookup(torch.zeros(4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), torch.ones(1, dtype=torch.int32), 1, 4)
    with pytest.raises(RuntimeError, match="out of range"):
        ops.vhpi_insert_(torch.full((4,), -1, dtype=torch.int32), torch.zeros(2, dtype=torch.int64), torch.tensor([5], dtype=torch.int32), 4)


def random_row_index(seed: int, num_rows: int = 300, spare: int = 40, max_chunks: int = 5):
    """A row index as the row-keyed store keeps one: entries (key, first slot, chunk count) in random order,
    unused entries (key -1) mixed in, runs laid end to end in a random order over the pool."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.unique(torch.randint(0, 10**9, (num_rows * 2,), generator=gen))[:num_rows]
    row_keys = pack_row_key(torch.randint(0, 3, (num_rows,), generator=gen), rows[torch.randperm(rows.numel(), generator=gen)])
    counts = torch.randint(1, max_chunks + 1, (num_rows,), generator=gen)
    order = torch.randperm(num_rows, generator=gen)  # where each run lies in the pool
    starts = torch.empty(num_rows, dtype=torch.int64)
    starts[order] = torch.cumsum(counts[order], 0) - counts[order]
    entry_keys = torch.cat([row_keys, torch.full((spare,), -1, dtype=torch.int64)])
    entry_first = torch.cat([starts, torch.zeros(spare, dtype=torch.int64)]).to(torch.int32)
    entry_chunks = torch.cat([counts, torch.zeros(spare, dtype=torch.int64)]).to(torch.int8)
    perm = torch.randperm(entry_keys.numel(), generator=gen)
    return row_keys, counts, starts, entry_keys[perm], entry_first[perm], entry_chunks[perm]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_chunks", [1, 3, 5, 40])
def test_lookup_runs_matches_reference_and_expands_each_rows_run(seed, max_chunks):
    row_keys, counts, starts, entry_keys, entry_first, entry_chunks = random_row_index(seed)
    buckets = ops.vhpi_rebuild(entry_keys, 2 * entry_keys.numel(), 64)
    gen = torch.Generator().manual_seed(seed + 7)
    unknown = pack_row_key(torch.zeros(60, dtype=torch.int64), torch.randint(10**9, 2 * 10**9, (60,), generator=gen))
    query = torch.cat([row_keys, unknown])[torch.randperm(row_keys.numel() + 60, generator=gen)]
    args = (buckets, entry_keys, entry_first, entry_chunks, query, max_chunks, 64)
    entries, slots = ops.vhpi_lookup_runs(*args)
    want_entries, want_slots = reference.vhpi_lookup_runs(*args)
    assert entries.dtype == slots.dtype == torch.int32 and slots.shape == (query.numel(), max_chunks)
    assert torch.equal(entries, want_entries) and torch.equal(slots, want_slots)
    # and the answer is right: a stored row's entry holds its key, its run starts where it was laid out
    for u, key in enumerate(query.tolist()):
        where = (row_keys == key).nonzero().reshape(-1)
        if where.numel() == 0:
            assert int(entries[u]) == -1 and bool((slots[u] == -1).all())
            continue
        i = int(where[0])
        n = min(int(counts[i]), max_chunks)
        assert int(entry_keys[entries[u]]) == key
        assert slots[u, :n].tolist() == list(range(int(starts[i]), int(starts[i]) + n))
        assert bool((slots[u, n:] == -1).all())


def test_lookup_runs_names_mismatched_index_arrays():
    row_keys, _, _, entry_keys, entry_first, entry_chunks = random_row_index(3)
    buckets = ops.vhpi_rebuild(entry_keys, 2 * entry_keys.numel(), 64)
    with pytest.raises(RuntimeError, match="one value per entry, got 340, 339 and 340"):
        ops.vhpi_lookup_runs(buckets, entry_keys, entry_first[1:].contiguous(), entry_chunks, row_keys, 4, 64)
    with pytest.raises(RuntimeError, match="entry_chunks must be Char"):
        ops.vhpi_lookup_runs(buckets, entry_keys, entry_first, entry_chunks.to(torch.int32), row_keys, 4, 64)
