"""VHPI hash-table kernels (csrc/vhpi) on every device (tests/kernel_cases.py) held to the pure-PyTorch reference:
rebuild and insert by content and findability (CUDA places keys in thread-timing order; the CPU exactly as the
reference), the row-index lookup (vhpi_lookup_runs) exactly, tiny tables that overflow, and bad slots."""
import pytest
import torch

from kernel_cases import (DEVICES, assert_same, assert_table_holds, call, on, ops, random_row_index, random_store,
                          requires_extension)

from cuda_ext import reference
from cuda_ext.layout import pack_row_key

pytestmark = requires_extension


def unknown_rows(seed: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 100)
    return pack_row_key(torch.zeros(n, dtype=torch.int64), torch.randint(10**9, 2 * 10**9, (n,), generator=gen))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("load,max_probe", [(0.3, 64), (0.7, 256), (0.9, 1024)])  # bounds no insertion order hits
def test_rebuild_holds_every_live_slot_findably(device, load, max_probe):
    _, slot_keys = random_store(0)
    live = (slot_keys >= 0).nonzero().reshape(-1)
    num_buckets = int(live.numel() / load) + 1
    got = call(device, ops.vhpi_rebuild, on(device, slot_keys), num_buckets, max_probe)
    want = reference.vhpi_rebuild(slot_keys, num_buckets, max_probe)
    assert got.numel() == want.numel() == num_buckets
    assert_table_holds(got, slot_keys, live, max_probe, "rebuild")
    if device == "cpu":  # inserted in slot order, as the reference
        assert_same(got, want, "buckets")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_chunks", [1, 3, 5, 40])
def test_lookup_runs_matches_reference_and_expands_each_rows_run(device, seed, max_chunks):
    row_keys, counts, starts, entry_keys, entry_first, entry_chunks = random_row_index(seed)
    gen = torch.Generator().manual_seed(seed + 7)
    query = torch.cat([row_keys, unknown_rows(seed, 60)])[torch.randperm(row_keys.numel() + 60, generator=gen)]
    built = call(device, ops.vhpi_rebuild, on(device, entry_keys), 2 * entry_keys.numel(), 64)
    assert_table_holds(built, entry_keys, (entry_keys >= 0).nonzero().reshape(-1), 64, "row index")
    want_buckets = reference.vhpi_rebuild(entry_keys, 2 * entry_keys.numel(), 64)
    want = reference.vhpi_lookup_runs(want_buckets, entry_keys, entry_first, entry_chunks, query, max_chunks, 64)
    for buckets, label in ((built, "device-built"), (on(device, want_buckets), "reference-built")):
        got = call(device, ops.vhpi_lookup_runs, buckets, *on(device, entry_keys, entry_first, entry_chunks, query),
                   max_chunks, 64)
        assert got[0].dtype == got[1].dtype == torch.int32 and got[1].shape == (query.numel(), max_chunks)
        assert_same(got[0], want[0], f"entries ({label} table)")
        assert_same(got[1], want[1], f"slots ({label} table)")
    entries, slots = want  # and the reference is right: an entry holds its key, its run starts where it was laid
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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 5])
def test_insert_completes_a_table_and_reports_how_many_went_in(device, seed):
    _, slot_keys = random_store(seed)
    live = (slot_keys >= 0).nonzero().reshape(-1)
    half = live.numel() // 2
    first = torch.where(torch.isin(torch.arange(slot_keys.numel()), live[:half]), slot_keys, -1)
    buckets = call(device, ops.vhpi_rebuild, on(device, first), 2 * live.numel(), 32)
    before = buckets.clone()
    rest = live[half:].to(torch.int32)
    inserted = call(device, ops.vhpi_insert_, buckets, on(device, slot_keys), on(device, rest), 32)
    assert inserted == live.numel() - half
    assert_table_holds(buckets, slot_keys, live, 32, "insert")
    if device == "cpu":
        want = before.clone()
        assert reference.vhpi_insert_(want, slot_keys, live[half:].to(torch.int32), 32) == inserted
        assert_same(buckets, want, "buckets")
    # a table of 8 buckets takes at most 8 of 20 slots and says how many; exactly those are findable
    tiny = torch.full((8,), -1, dtype=torch.int32, device=device)
    taken = call(device, ops.vhpi_insert_, tiny, on(device, slot_keys), on(device, live[:20].to(torch.int32)), 4)
    held = tiny.cpu()[tiny.cpu() >= 0]
    assert 1 <= taken <= 8 and taken == held.numel()
    assert_table_holds(tiny, slot_keys, held, 4, "tiny table")
    if device == "cpu":  # the CPU inserts in order: the first `taken` slots
        assert_same(torch.sort(held).values, torch.sort(live[:taken].to(torch.int32)).values, "tiny table's slots")
    assert call(device, ops.vhpi_rebuild, on(device, slot_keys), 8, 4).numel() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_insert_of_a_bad_slot_raises_before_inserting_anything(device):
    _, slot_keys = random_store(2)
    live = (slot_keys >= 0).nonzero().reshape(-1)
    buckets = torch.full((2 * live.numel(),), -1, dtype=torch.int32, device=device)
    keyless = int((slot_keys < 0).nonzero()[0, 0])
    for bad, match in ((slot_keys.numel() + 5, r"slots\[1\] = \d+ is outside \[0, \d+\)"),
                       (keyless, rf"slots\[1\] = {keyless} has no key")):
        slots = torch.tensor([int(live[0]), bad], dtype=torch.int32, device=device)
        with pytest.raises(IndexError, match=match):
            ops.vhpi_insert_(buckets, on(device, slot_keys), slots, 32)
        with pytest.raises(IndexError, match=match):
            reference.vhpi_insert_(buckets.cpu(), slot_keys, slots.cpu(), 32)
        assert bool((buckets == -1).all()), "a bad slot must leave the table untouched"


def test_lookup_runs_names_mismatched_index_arrays():
    row_keys, _, _, entry_keys, entry_first, entry_chunks = random_row_index(3)
    buckets = ops.vhpi_rebuild(entry_keys, 2 * entry_keys.numel(), 64)
    with pytest.raises(RuntimeError, match="one value per entry, got 340, 339 and 340"):
        ops.vhpi_lookup_runs(buckets, entry_keys, entry_first[1:].contiguous(), entry_chunks, row_keys, 4, 64)
    with pytest.raises(RuntimeError, match="entry_chunks must be Char"):
        ops.vhpi_lookup_runs(buckets, entry_keys, entry_first, entry_chunks.to(torch.int32), row_keys, 4, 64)
