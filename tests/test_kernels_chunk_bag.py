"""Chunk-bag kernels (csrc/chunk_bag) held to the pure-PyTorch reference on random batches and stores:
unique/linearize, pooled forward (sum/mean, weights), and the fused backward (gradients, SGD / Adagrad /
row-wise Adagrad state, utilities, candidate scores, per-sample-weight gradients)."""
import itertools

import pytest
import torch

import cuda_ext
from cuda_ext import reference
from cuda_ext.reference.vhpi import pack_row_key

pytestmark = pytest.mark.skipif(not cuda_ext.extension_loaded(), reason="native extension not built")
ops = torch.ops.emb_opt

C = 4  # chunk size


def random_case(seed: int, id_dtype=torch.int64, batch_size: int = 16):
    gen = torch.Generator().manual_seed(seed)
    table_rows = torch.tensor([50, 7, 200], dtype=torch.int64)
    table_chunks = torch.tensor([2, 1, 3], dtype=torch.int32)
    feature_table = torch.tensor([0, 2, 1, 2], dtype=torch.int32)  # table 2 is shared by two features
    dims = (table_chunks[feature_table.long()] * C).long()
    feature_cols = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(dims, 0)[:-1]])
    out_dim = int(dims.sum())
    lengths = torch.randint(0, 4, (feature_table.numel() * batch_size,), generator=gen)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    nnz = int(offsets[-1])
    tables = feature_table.long()[torch.repeat_interleave(torch.arange(lengths.numel()), lengths) // batch_size]
    # Zipf-ish ids so rows repeat inside the batch
    values = (torch.rand(nnz, generator=gen) ** 3 * table_rows[tables].float()).long().to(id_dtype)
    weights = torch.rand(nnz, generator=gen) + 0.5
    # a store where each touched row has a random live prefix
    row_keys = torch.unique(pack_row_key(tables, values.long()))
    live = torch.randint(0, 4, (row_keys.numel(),), generator=gen).clamp(max=table_chunks.long()[row_keys >> 53])
    keys = torch.cat([row_keys[i] + torch.arange(int(live[i])) for i in range(row_keys.numel())] + [torch.full((5,), -1)])
    slot_keys = keys[torch.randperm(keys.numel(), generator=gen)]
    buckets = ops.vhpi_rebuild(slot_keys, 2 * slot_keys.numel() + 1, 64)
    pool = torch.randn(slot_keys.numel(), C, generator=gen)
    return dict(values=values, offsets=offsets, feature_table=feature_table, table_rows=table_rows,
                table_chunks=table_chunks, feature_cols=feature_cols, out_dim=out_dim, batch_size=batch_size,
                weights=weights, slot_keys=slot_keys, buckets=buckets, pool=pool)


def unique_both(case):
    args = (case["values"], case["offsets"], case["feature_table"], case["table_rows"], case["batch_size"])
    return ops.chunk_bag_unique(*args), reference.chunk_bag_unique(*args)


@pytest.mark.parametrize("seed,dtype", itertools.product(range(4), [torch.int32, torch.int64]))
def test_unique_matches_reference(seed, dtype):
    got, want = unique_both(random_case(seed, dtype))
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert int(got[5][0]) == -1


def test_unique_reports_first_bad_id():
    case = random_case(0)
    case["values"][3] = 10**6
    case["values"][7] = -1
    got, want = unique_both(case)
    assert got[5].tolist() == want[5].tolist()
    assert got[5][0] == 3 and got[5][1] == 10**6


def slots_for(case, row_keys):
    chunks = case["table_chunks"][(row_keys >> 53).long()]
    return ops.vhpi_lookup(case["buckets"], case["slot_keys"], row_keys, chunks, 3, 64)


@pytest.mark.parametrize("seed,mode,weighted", itertools.product(range(3), [0, 1], [False, True]))
def test_forward_matches_reference(seed, mode, weighted):
    case = random_case(seed)
    (row_keys, inverse, *_), _ = unique_both(case)
    slots = slots_for(case, row_keys)
    w = case["weights"] if weighted else None
    args = (case["pool"], slots, inverse, case["offsets"], w, case["feature_table"], case["table_chunks"],
            case["feature_cols"], case["batch_size"], case["out_dim"], mode)
    got = ops.chunk_bag_forward(*args)
    want = reference.chunk_bag_forward(*args)
    assert got.shape == (case["batch_size"], case["out_dim"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_forward_equals_dense_embedding_bag_when_all_chunks_live():
    # with every chunk of every row live, the chunk pool is just a permuted dense table
    gen = torch.Generator().manual_seed(3)
    rows, chunks, b = 30, 3, 8
    dense = torch.randn(rows, chunks * C, generator=gen)
    keys = (pack_row_key(torch.zeros(rows, dtype=torch.int64), torch.arange(rows)).unsqueeze(1) + torch.arange(chunks)).reshape(-1)
    perm = torch.randperm(keys.numel(), generator=gen)
    slot_keys = keys[perm]
    pool = dense.reshape(-1, C)[perm]
    buckets = ops.vhpi_rebuild(slot_keys, 200, 64)
    lengths = torch.randint(0, 5, (b,), generator=gen)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    values = torch.randint(0, rows, (int(offsets[-1]),), generator=gen)
    row_keys, inverse, *_ = ops.chunk_bag_unique(values, offsets, torch.zeros(1, dtype=torch.int32), torch.tensor([rows]), b)
    slots = ops.vhpi_lookup(buckets, slot_keys, row_keys, torch.full((row_keys.numel(),), chunks, dtype=torch.int32), chunks, 64)
    for mode, name in ((0, "sum"), (1, "mean")):
        got = ops.chunk_bag_forward(pool, slots, inverse, offsets, None, torch.zeros(1, dtype=torch.int32),
                                    torch.tensor([chunks], dtype=torch.int32), torch.zeros(1, dtype=torch.int64), b, chunks * C, mode)
        want = torch.nn.functional.embedding_bag(values, dense, offsets[:-1], mode=name)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "seed,mode,weighted,optimizer,rule",
    [(s, m, w, o, r) for s in range(2) for m in (0, 1) for w in (False, True) for o in (0, 1, 2) for r in (0, 1, 2)
     if (s + m + w + o + r) % 2 == 0 or (o == 2 and r == 2)],
)
def test_backward_update_matches_reference(seed, mode, weighted, optimizer, rule):
    case = random_case(seed)
    (row_keys, inverse, unique_offsets, unique_occ, occ_bag, _), _ = unique_both(case)
    slots = slots_for(case, row_keys)
    gen = torch.Generator().manual_seed(seed + 7)
    grad_out = torch.randn(case["batch_size"], case["out_dim"], generator=gen)
    # Adagrad: state per pool float; row-wise Adagrad: one accumulator per row entry, the rows' entries scattered
    num_entries = row_keys.numel() + 7
    shape = {0: (case["pool"].shape[0], 0), 1: (case["pool"].shape[0], C), 2: (num_entries, 1)}[optimizer]
    state0 = torch.rand(*shape, generator=gen)
    entries = torch.randperm(num_entries, generator=gen)[: row_keys.numel()].to(torch.int32)
    util0 = torch.rand(case["pool"].shape[0], generator=gen)
    w = case["weights"] if weighted else None
    results = []
    for impl in (ops.chunk_bag_backward_update_, reference.chunk_bag_backward_update_):
        pool, state, util = case["pool"].clone(), state0.clone(), util0.clone()
        cand, wgrad = impl(pool, state, util, grad_out, slots, row_keys, unique_offsets, unique_occ, occ_bag,
                           case["offsets"], w, case["table_chunks"], case["feature_cols"], case["batch_size"], mode,
                           optimizer, 0.05, 1e-8, rule, weighted, entries if optimizer == 2 else None)
        results.append((pool, state, util, cand, wgrad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if optimizer == 2:  # exactly the accumulators of rows holding chunks moved
        moved = torch.zeros(num_entries, dtype=torch.bool)
        moved[entries[slots[:, 0] >= 0].long()] = True
        assert not torch.equal(results[0][1][moved], state0[moved])
        assert torch.equal(results[0][1][~moved], state0[~moved])
    pool, _, util, cand, _ = results[0]
    touched = slots[slots >= 0].long()
    assert not torch.equal(pool[touched], case["pool"][touched])  # live chunks moved
    untouched = torch.ones(pool.shape[0], dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(pool[untouched], case["pool"][untouched])  # nothing else did


def test_rowwise_backward_names_missing_or_out_of_range_row_entries():
    case = random_case(4)
    (row_keys, inverse, unique_offsets, unique_occ, occ_bag, _), _ = unique_both(case)
    slots = slots_for(case, row_keys)
    grad_out = torch.randn(case["batch_size"], case["out_dim"])
    state = torch.zeros(row_keys.numel(), 1)

    def call(entries, state=state):
        return ops.chunk_bag_backward_update_(case["pool"].clone(), state, torch.zeros(case["pool"].shape[0]), grad_out,
                                              slots, row_keys, unique_offsets, unique_occ, occ_bag, case["offsets"],
                                              None, case["table_chunks"], case["feature_cols"], case["batch_size"], 0,
                                              2, 0.1, 1e-8, 0, False, entries)

    with pytest.raises(RuntimeError, match="row-wise Adagrad needs row_entries"):
        call(None)
    entries = torch.arange(row_keys.numel(), dtype=torch.int32)
    stored = int((slots[:, 0] >= 0).nonzero()[0, 0])
    entries[stored] = row_keys.numel()
    with pytest.raises(RuntimeError, match=rf"row_entries\[{stored}\] = {row_keys.numel()} is outside the {row_keys.numel()} accumulators"):
        call(entries)
    with pytest.raises(RuntimeError, match=r"optim_state must be \[R, 1\]"):
        call(torch.arange(row_keys.numel(), dtype=torch.int32), torch.zeros(row_keys.numel(), 2))


def test_backward_gradient_matches_autograd_for_sgd():
    # SGD with lr=1: the pool moves by exactly -grad, and grad must equal autograd's of the reference forward
    case = random_case(11)
    (row_keys, inverse, unique_offsets, unique_occ, occ_bag, _), _ = unique_both(case)
    slots = slots_for(case, row_keys)
    pool = case["pool"].clone().requires_grad_(True)
    out = reference.chunk_bag_forward(pool, slots, inverse, case["offsets"], case["weights"], case["feature_table"],
                                      case["table_chunks"], case["feature_cols"], case["batch_size"], case["out_dim"], 1)
    grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    updated = case["pool"].clone()
    ops.chunk_bag_backward_update_(updated, torch.empty(0, 0), torch.zeros(updated.shape[0]), grad_out, slots, row_keys,
                                   unique_offsets, unique_occ, occ_bag, case["offsets"], case["weights"],
                                   case["table_chunks"], case["feature_cols"], case["batch_size"], 1, 0, 1.0, 0.0, 0, False)
    torch.testing.assert_close(case["pool"] - updated, pool.grad, rtol=1e-5, atol=1e-6)
