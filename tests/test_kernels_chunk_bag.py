"""Chunk-bag kernels (csrc/chunk_bag) on every device (tests/kernel_cases.py: the CPU always, CUDA when present)
held to the pure-PyTorch reference run on the CPU: unique (int32 / int64 ids; order-free, and the CPU's
first-occurrence order exactly), pooled forward (sum / mean, with and without weights, on the reference's slots and
end to end from the device's own unique + lookup, on an unaligned pool), and the backward fused with SGD / Adagrad /
row-wise Adagrad x the three utility rules (pool, optimizer state, utilities, candidate scores, per-sample-weight
gradients; untouched entries bit for bit; deterministic). Configurations cover the float4 and scalar chunk paths,
hot rows (> 128 occurrences), rows wider than one warp pass and rows of more than 32 chunks.

The whole kernel suite runs without TorchRec. With the extension built by ``pip install -e .``:

    python -m pytest -q tests/test_kernels_*.py tests/test_kernel_error_messages.py

On a machine without a build (a lent GPU machine: bare checkout, no TorchRec), the operators are compiled and
loaded by experiments/cuda_build.py first (a few minutes; CUDA kernels when torch sees a GPU):

    EMB_OPT_BUILD_OPS=1 python -m pytest -q tests/test_kernels_*.py tests/test_kernel_error_messages.py
"""
import itertools

import pytest
import torch

from kernel_cases import (CONFIG_NAMES, DEVICES, assert_close, assert_same, call, canonical_unique, lookup_args,
                          make_case, on, ops, requires_extension, unique_args)

from cuda_ext import reference
from cuda_ext.layout import OPTIMIZER_CODES, pack_row_key

pytestmark = requires_extension
ROWWISE = OPTIMIZER_CODES["rowwise_adagrad"]
UNIQUE_OUTPUTS = ("row_keys", "unique_offsets", "unique_occ", "key of each occurrence", "occ_bag", "bad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("seed,id_dtype", [(0, torch.int64), (1, torch.int32)])
def test_unique_matches_reference(device, name, seed, id_dtype):
    case = make_case(name, seed, id_dtype)
    want = reference.chunk_bag_unique(*unique_args(case))
    got = call(device, ops.chunk_bag_unique, *on(device, *unique_args(case)))
    g, w = canonical_unique(got), canonical_unique(want)
    for what, a, b in zip(UNIQUE_OUTPUTS, g, w):
        assert_same(a, b, f"unique {what}")
    assert g[6], "inverse disagrees with unique_offsets / unique_occ"
    assert int(got[5][0]) == -1
    if device == "cpu":  # the CPU's contract: first-occurrence order, exactly the reference's
        for what, a, b in zip(("row_keys", "inverse", "unique_offsets", "unique_occ", "occ_bag", "bad"), got, want):
            assert_same(a, b, f"unique {what}")
    else:  # the CUDA contract: rows in ascending row-key order
        assert_same(got[0], g[0], "unique rows in sorted-key order")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
def test_unique_reports_first_bad_id(device, id_dtype):
    case = make_case("c4", 0, id_dtype)
    n = case["values"].numel()
    for first, second in ((3, 7), (n // 2, n - 1)):
        values = case["values"].clone()
        values[second] = -1
        values[first] = 10**6 + 7
        args = (values,) + unique_args(case)[1:]
        want = reference.chunk_bag_unique(*args)[5]
        assert_same(call(device, ops.chunk_bag_unique, *on(device, *args))[5], want, "first bad id")
        assert want.tolist()[:2] == [first, 10**6 + 7]


@pytest.mark.parametrize("device", DEVICES)
def test_unique_bad_offsets_and_tables_raise_and_an_empty_batch_is_empty(device):
    case = make_case("c4", 0)
    values, offsets, ft, rows, batch = on(device, *unique_args(case))
    with pytest.raises(IndexError, match=r"offsets\[0\] must be 0, got 1"):
        ops.chunk_bag_unique(values, offsets + 1, ft, rows, batch)
    decreasing = offsets.clone()
    decreasing[2] = -1
    with pytest.raises(IndexError, match="offsets decrease at bag 1"):
        ops.chunk_bag_unique(values, decreasing, ft, rows, batch)
    bad_ft = ft.clone()
    bad_ft[-1] = 99
    with pytest.raises(IndexError, match=r"feature_table\[3\] = 99 is outside \[0, 3\)"):
        ops.chunk_bag_unique(values, offsets, bad_ft, rows, batch)
    empty = call(device, ops.chunk_bag_unique, values[:0], torch.zeros(ft.numel() * 2 + 1, dtype=torch.int64,
                                                                       device=device), ft, rows, 2)
    assert empty[0].numel() == 0 and empty[2].tolist() == [0] and empty[5].tolist() == [-1, -1, -1]


def forward_args(case, pool, slots, inverse, weights, mode):
    return (pool, slots, inverse, case["offsets"], weights, case["feature_table"], case["table_chunks"],
            case["feature_cols"], case["batch"], case["out_dim"], mode)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_forward_matches_reference(device, name):
    case = make_case(name, 0)
    want_unique = reference.chunk_bag_unique(*unique_args(case))
    _, ref_slots = reference.vhpi_lookup_runs(*lookup_args(case, want_unique[0]))
    got_unique = call(device, ops.chunk_bag_unique, *on(device, *unique_args(case)))
    _, got_slots = call(device, ops.vhpi_lookup_runs, *on(device, *lookup_args(case, got_unique[0])))
    assert_same(got_slots, reference.vhpi_lookup_runs(*lookup_args(case, got_unique[0].cpu()))[1],
                "lookup of the device's unique rows")
    storage = torch.randn(case["pool"].numel() + 1, device=device)  # a pool 4 bytes off 16-byte alignment
    storage[1:] = case["pool"].reshape(-1).to(device)
    unaligned = storage[1:].view(-1, case["c"])
    for mode, weighted in itertools.product((0, 1), (False, True)):
        w = case["weights"] if weighted else None
        what = f"forward mode={mode} weighted={weighted}"
        want = reference.chunk_bag_forward(*forward_args(case, case["pool"], ref_slots, want_unique[1], w, mode))
        assert want.abs().sum() > 0
        same_inputs = on(device, *forward_args(case, case["pool"], ref_slots, want_unique[1], w, mode))
        assert_close(call(device, ops.chunk_bag_forward, *same_inputs), want, what)
        end_to_end = on(device, *forward_args(case, case["pool"], got_slots, got_unique[1], w, mode))
        assert_close(call(device, ops.chunk_bag_forward, *end_to_end), want, f"{what} (device unique + lookup)")
        end_to_end = (unaligned,) + end_to_end[1:]
        assert_close(call(device, ops.chunk_bag_forward, *end_to_end), want, f"{what} (unaligned pool)")


@pytest.mark.parametrize("device", DEVICES)
def test_forward_equals_dense_embedding_bag_when_all_chunks_live(device):
    # every chunk of every row live: the chunk pool is a permuted dense table, each row one run
    gen = torch.Generator().manual_seed(3)
    rows, chunks, b, c = 30, 3, 8, 4
    dense = torch.randn(rows, chunks * c, generator=gen)
    order = torch.randperm(rows, generator=gen)
    pool = torch.empty(rows * chunks, c)
    pool.view(rows, chunks, c)[order] = dense.view(rows, chunks, c)
    first = (order * chunks).to(torch.int32)  # row r's run starts where its chunks were put
    entry_keys = pack_row_key(torch.zeros(rows, dtype=torch.int64), torch.arange(rows))
    buckets = reference.vhpi_rebuild(entry_keys, 64, 64)
    lengths = torch.randint(0, 5, (b,), generator=gen)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    values = torch.randint(0, rows, (int(offsets[-1]),), generator=gen)
    ft, tc, fc = torch.zeros(1, dtype=torch.int32), torch.tensor([chunks], dtype=torch.int32), torch.zeros(1).long()
    row_keys, inverse, *_ = call(device, ops.chunk_bag_unique, *on(device, values, offsets, ft, torch.tensor([rows]),
                                                                   b))
    entry_chunks = torch.full((rows,), chunks, dtype=torch.int8)
    _, slots = call(device, ops.vhpi_lookup_runs, *on(device, buckets, entry_keys, first, entry_chunks, row_keys,
                                                      chunks, 64))
    for mode, name in ((0, "sum"), (1, "mean")):
        got = call(device, ops.chunk_bag_forward, *on(device, pool, slots, inverse, offsets, None, ft, tc, fc, b,
                                                      chunks * c, mode))
        want = torch.nn.functional.embedding_bag(values, dense, offsets[:-1], mode=name)
        assert_close(got, want, f"{name} pooling")


def backward_combos(optimizer: int):
    """(pooling mode, weighted, utility rule): half of the 12 per optimizer, each rule with both pooling modes and
    with and without weights, and every combination over the three optimizers together."""
    return [(m, w, r) for m in (0, 1) for w in (False, True) for r in (0, 1, 2) if (m + w + r + optimizer) % 2 == 0]


def run_backward(device, impl, case, state, util, grad_out, slots, uniq, entries, mode, w, optimizer, rule):
    pool, state, util = on(device, case["pool"], state, util)
    args = on(device, grad_out, slots, uniq[0], uniq[2], uniq[3], uniq[4], case["offsets"], w, case["table_chunks"],
              case["feature_cols"], case["batch"], mode, optimizer, 0.05, 1e-8, rule, w is not None, entries)
    candidate, weight_grad = call(device, impl, pool, state, util, *args)
    return pool, state, util, candidate, weight_grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_CODES.values()))
def test_backward_update_matches_reference(device, name, optimizer):
    case = make_case(name, CONFIG_NAMES.index(name))
    gen, c, num_slots = case["gen"], case["c"], case["pool"].shape[0]
    want_unique = reference.chunk_bag_unique(*unique_args(case))
    ref_entries, ref_slots = reference.vhpi_lookup_runs(*lookup_args(case, want_unique[0]))
    got_unique = call(device, ops.chunk_bag_unique, *on(device, *unique_args(case)))
    got_entries, got_slots = call(device, ops.vhpi_lookup_runs, *on(device, *lookup_args(case, got_unique[0])))
    # the device's unique rows -> the reference's (on CUDA they come in sorted-key order)
    sorted_keys, perm = torch.sort(want_unique[0])
    to_reference = perm[torch.searchsorted(sorted_keys, got_unique[0].cpu())]
    if name == "c16_D128_hot":  # this configuration exists for its hot rows: they must be there
        assert int((want_unique[2][1:] - want_unique[2][:-1]).max()) > 128
    grad_out = torch.randn(case["batch"], case["out_dim"], generator=gen)
    num_entries = case["entry_keys"].numel()
    state_shape = {0: (num_slots, 0), 1: (num_slots, c), 2: (num_entries, 1)}[optimizer]
    touched = torch.zeros(num_slots, dtype=torch.bool)
    touched[ref_slots[ref_slots >= 0].long()] = True
    moved_state = touched
    if optimizer == ROWWISE:  # one accumulator per stored row that holds chunks
        moved_state = torch.zeros(num_entries, dtype=torch.bool)
        moved_state[ref_entries[ref_slots[:, 0] >= 0].long()] = True
    for mode, weighted, rule in backward_combos(optimizer):
        what = f"backward mode={mode} weighted={weighted} optimizer={optimizer} rule={rule}"
        state0, util0 = torch.rand(*state_shape, generator=gen), torch.rand(num_slots, generator=gen)
        w = case["weights"] if weighted else None
        want = run_backward("cpu", reference.chunk_bag_backward_update_, case, state0, util0, grad_out, ref_slots,
                            want_unique, ref_entries, mode, w, optimizer, rule)
        same_inputs = run_backward(device, ops.chunk_bag_backward_update_, case, state0, util0, grad_out, ref_slots,
                                   want_unique, ref_entries, mode, w, optimizer, rule)
        end_to_end = run_backward(device, ops.chunk_bag_backward_update_, case, state0, util0, grad_out, got_slots,
                                  got_unique, got_entries, mode, w, optimizer, rule)
        for got, label, candidate_order in ((same_inputs, "", slice(None)), (end_to_end, " (device unique + lookup)",
                                                                               to_reference)):
            for x, want_x, x0, part in zip(got, want, (case["pool"], state0, util0), ("pool", "state", "utility")):
                assert_close(x, want_x, f"{what}{label}: {part}")
                if x0.numel():  # the update itself, not only its sum with the old values
                    assert_close(x.cpu() - x0, want_x - x0, f"{what}{label}: {part} delta", 1e-4)
            assert_close(got[3], want[3][candidate_order], f"{what}{label}: candidate")
            if weighted:
                assert_close(got[4], want[4], f"{what}{label}: weight_grad")
        for x, x0, part, moved in zip(same_inputs[:3], (case["pool"], state0, util0), ("pool", "state", "utility"),
                                      (touched, moved_state, touched)):
            if x0.numel():
                assert_same(x.cpu()[~moved], x0[~moved], f"{what}: untouched {part} entries")
                assert not torch.equal(x.cpu()[moved], x0[moved]), f"{what}: {part} did not move"
    state0, util0 = torch.rand(*state_shape, generator=gen), torch.rand(num_slots, generator=gen)
    first, second = (run_backward(device, ops.chunk_bag_backward_update_, case, state0, util0, grad_out, got_slots,
                                  got_unique, got_entries, 1, case["weights"], optimizer, 2) for _ in range(2))
    for a, b, part in zip(first, second, ("pool", "state", "utility", "candidate", "weight_grad")):
        assert_same(a, b, f"{part} of the same call twice")


def test_backward_gradient_matches_autograd_for_sgd():
    # SGD with lr = 1: the pool moves by exactly -grad, the autograd gradient of the reference forward
    case = make_case("c4", 11)
    rk, inverse, uo, uocc, ob, _ = reference.chunk_bag_unique(*unique_args(case))
    _, slots = reference.vhpi_lookup_runs(*lookup_args(case, rk))
    pool = case["pool"].clone().requires_grad_(True)
    out = reference.chunk_bag_forward(*forward_args(case, pool, slots, inverse, case["weights"], 1))
    grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    updated = case["pool"].clone()
    ops.chunk_bag_backward_update_(updated, torch.empty(0, 0), torch.zeros(updated.shape[0]), grad_out, slots, rk, uo,
                                   uocc, ob, case["offsets"], case["weights"], case["table_chunks"],
                                   case["feature_cols"], case["batch"], 1, 0, 1.0, 0.0, 0, False)
    assert bool(pool.grad.abs().sum() > 0)
    assert_close(case["pool"] - updated, pool.grad, "pool step")


@pytest.mark.parametrize("impl", ["cpu", "reference"])
def test_backward_skips_rows_whose_gradient_is_not_finite(impl):
    # one bag's gradient is NaN: every row it reaches keeps its chunks, state and utilities bit for bit and gets
    # a NaN candidate; the other rows update as without it. (On CUDA the caller checks the whole step first.)
    op = reference.chunk_bag_backward_update_ if impl == "reference" else ops.chunk_bag_backward_update_
    case = make_case("c4", 3)
    rk, _, uo, uocc, ob, _ = reference.chunk_bag_unique(*unique_args(case))
    entries, slots = reference.vhpi_lookup_runs(*lookup_args(case, rk))
    grad_out = torch.randn(case["batch"], case["out_dim"], generator=case["gen"])
    bad = grad_out.clone()
    bad[1, case["feature_cols"][0]] = float("nan")  # sample 1 of feature 0: reaches the rows of that bag
    reached = torch.zeros(rk.numel(), dtype=torch.bool)
    occurrences = torch.arange(int(case["offsets"][1]), int(case["offsets"][2]))  # bag (feature 0, sample 1)
    owner = torch.repeat_interleave(torch.arange(rk.numel()), uo[1:] - uo[:-1])
    by_occurrence = torch.empty_like(owner)
    by_occurrence[uocc.long()] = owner
    reached[by_occurrence[occurrences]] = True
    assert 0 < int(reached.sum()) < rk.numel()
    state0 = torch.rand(case["entry_keys"].numel(), 1, generator=case["gen"])
    util0 = torch.rand(case["pool"].shape[0], generator=case["gen"])
    results = {}
    for name, g in (("clean", grad_out), ("nan", bad)):
        pool, state, util = case["pool"].clone(), state0.clone(), util0.clone()
        candidate, _ = op(pool, state, util, g, slots, rk, uo, uocc, ob, case["offsets"], None, case["table_chunks"],
                          case["feature_cols"], case["batch"], 0, ROWWISE, 0.05, 1e-8, 2, False, entries)
        results[name] = (pool, state, util, candidate)
    pool, state, util, candidate = results["nan"]
    assert torch.isnan(candidate[reached]).all() and not torch.isnan(candidate[~reached]).any()
    reached_slots = slots[reached][slots[reached] >= 0].long()
    other_slots = slots[~reached][slots[~reached] >= 0].long()
    assert_same(pool[reached_slots], case["pool"][reached_slots], "pool of the skipped rows")
    assert_same(util[reached_slots], util0[reached_slots], "utility of the skipped rows")
    reached_entries = entries[reached & (slots[:, 0] >= 0)].long()
    assert_same(state[reached_entries], state0[reached_entries], "row-wise state of the skipped rows")
    assert torch.isfinite(pool).all() and torch.isfinite(state).all() and torch.isfinite(util).all()
    clean_pool, _, clean_util, clean_candidate = results["clean"]
    assert_same(pool[other_slots], clean_pool[other_slots], "pool of the other rows")
    assert_same(util[other_slots], clean_util[other_slots], "utility of the other rows")
    assert_same(candidate[~reached], clean_candidate[~reached], "candidates of the other rows")
