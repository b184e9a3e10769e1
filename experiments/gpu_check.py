"""GPU check of the CUDA kernels (cuda_ext/csrc/**/*.cu) against the pure-PyTorch references, in one device call:

    python experiments/gpu_check.py [--seeds 3] [--build-dir DIR] [--verbose-build] [--device cpu]

Builds the operators on the machine (experiments/cuda_build.py), then runs every CUDA op on random inputs --
several seeds, int32 and int64 ids, sum and mean pooling, with and without per-sample weights, SGD / Adagrad /
row-wise Adagrad x the three utility rules, features sharing a table, empty bags, hot rows with more than
kLongRow (128) occurrences, chunk sizes on the float4 path and on the scalar path, rows wider than one warp
pass, more than 32 chunks, semantic-ID tokens of every code-based parameterization -- and holds each to the reference run on the CPU: floats ||out - ref|| / ||ref|| <
1e-5; integers exact, after putting both in the order the CUDA contract allows (chunk_bag_unique: sorted row
keys; vhpi buckets: checked by content and findability, not by placement). Before each op call the CUDA
allocator's free blocks are filled with 0x7F bytes, so an output element a kernel forgot to write reads as
3.4e38 / 2139062143, never as a plausible 0; pool slots a backward must not touch are compared bit for bit.
Prints PASS/FAIL per check and a summary; exits 1 on any failure (2 if there is no GPU).
``--device cpu`` runs the same checks on the compiled CPU kernels (cuda_ext._C, no build): a test of this
script's logic on a machine without a GPU (the CPU's insertion order is checked by the same order-free rules).
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
import traceback
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments.cuda_build import build_native_ops  # noqa: E402  (first: keeps cuda_ext off its own _C)

import torch  # noqa: E402

from cuda_ext import reference  # noqa: E402
from cuda_ext.reference.vhpi import pack_row_key, probe  # noqa: E402

RTOL = 1e-5
DEV = torch.device("cuda")  # --device cpu: the compiled CPU kernels
RESULTS: List[Tuple[str, bool, str]] = []


def record(name: str, ok: bool, detail: str = "") -> None:
    RESULTS.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""), flush=True)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (inf for a shape mismatch or any NaN / inf in got). The difference of two close
    float32 numbers is exact, and a float32 norm is good to ~1e-6 of itself: plenty for a 1e-5 bound."""
    got, want = got.detach().cpu().float(), want.detach().cpu().float()
    if got.shape != want.shape:
        return math.inf
    num = float(torch.linalg.vector_norm((got - want).reshape(-1)))
    denom = float(torch.linalg.vector_norm(want.reshape(-1)))
    return num / (denom if denom > 0 else 1.0) if math.isfinite(num) else math.inf


def close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = RTOL) -> bool:
    err = rel_err(got, want)
    if err >= tol:
        record(name, False, f"rel err {err:.2e} >= {tol:.0e}, shapes {tuple(got.shape)} vs {tuple(want.shape)}")
        return False
    return True


def same(name: str, got: torch.Tensor, want: torch.Tensor) -> bool:
    got, want = got.detach().cpu(), want.detach().cpu()
    if got.shape != want.shape or not torch.equal(got, want):
        bad = "shape" if got.shape != want.shape else f"{int((got != want).sum())} elements differ"
        record(name, False, f"{bad}: got {got.reshape(-1)[:8].tolist()} want {want.reshape(-1)[:8].tolist()}")
        return False
    return True


def poison() -> None:
    """Fill freed blocks of both allocator pools with 0x7F bytes (reused by the next allocations)."""
    if DEV.type != "cuda":
        return
    blocks = [torch.empty(n, dtype=torch.uint8, device=DEV).fill_(0x7F) for n in (4096, 65536, 1 << 19, 1 << 20)]
    blocks += [torch.empty(n << 20, dtype=torch.uint8, device=DEV).fill_(0x7F) for n in (2, 8, 32)]
    del blocks


def ops() -> object:
    return torch.ops.emb_opt


def run(fn: Callable, *args):
    poison()
    out = fn(*args)
    if DEV.type == "cuda":
        torch.cuda.synchronize()
    return out


def cuda(x):
    """x on the checked device (a fresh copy, so that in-place ops never touch the reference inputs)."""
    return x.to(DEV, copy=True) if isinstance(x, torch.Tensor) else x


# ---- hashing / vhpi ------------------------------------------------------------------------------------
def check_mix_hash(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for dtype in (torch.int32, torch.int64):
        ids = torch.randint(0, 2**31 - 1, (5000,), generator=gen).to(dtype)
        ok = same(f"mix_hash seed={seed} {dtype}", run(ops().mix_hash, cuda(ids), 1000003, seed), reference.mix_hash(ids, 1000003, seed))
        if ok:
            record(f"mix_hash seed={seed} {dtype}", True)


def random_store(seed: int, num_rows: int = 2000, max_chunks: int = 4, spare: int = 300):
    gen = torch.Generator().manual_seed(seed)
    tables = torch.randint(0, 3, (num_rows,), generator=gen)
    rows = torch.unique(torch.randint(0, 10**9, (num_rows * 2,), generator=gen))[:num_rows]
    row_keys = pack_row_key(tables, rows[torch.randperm(rows.numel(), generator=gen)])
    live = torch.randint(0, max_chunks + 1, (num_rows,), generator=gen)
    keys = (row_keys.unsqueeze(1) + torch.arange(max_chunks))[torch.arange(max_chunks) < live.unsqueeze(1)]
    slot_keys = torch.cat([keys, torch.full((spare,), -1, dtype=torch.int64)])
    return row_keys, slot_keys[torch.randperm(slot_keys.numel(), generator=gen)]


def table_holds_exactly(name: str, buckets: torch.Tensor, slot_keys: torch.Tensor, slots: torch.Tensor, max_probe: int) -> bool:
    """Buckets hold each of `slots` once, nothing else, and the reference probe finds every one of them."""
    b = buckets.cpu()
    held = torch.sort(b[b >= 0].long()).values
    if not same(f"{name}: slots held once each", held, torch.sort(slots.long()).values):
        return False
    found = probe(b, slot_keys, slot_keys[slots.long()], max_probe)
    return same(f"{name}: every key findable within max_probe", found, slots.to(torch.int32))


def check_vhpi(seed: int) -> None:
    row_keys, slot_keys = random_store(seed)
    live = (slot_keys >= 0).nonzero().reshape(-1)
    gen = torch.Generator().manual_seed(seed + 100)
    unknown = pack_row_key(torch.zeros(200, dtype=torch.int64), torch.randint(10**9, 2 * 10**9, (200,), generator=gen))
    query = torch.cat([row_keys, unknown])
    for load, max_probe in ((0.3, 64), (0.7, 256), (0.9, 1024)):  # bounds no insertion order hits here
        name = f"vhpi_rebuild+lookup seed={seed} load={load}"
        nb = int(live.numel() / load) + 1
        got = run(ops().vhpi_rebuild, cuda(slot_keys), nb, max_probe)
        want_buckets = reference.vhpi_rebuild(slot_keys, nb, max_probe)
        if got.numel() != nb or want_buckets.numel() != nb:
            record(name, False, f"a rebuild hit the probe bound: {got.numel()} / {want_buckets.numel()} buckets")
            continue
        ok = table_holds_exactly(name, got, slot_keys, live, max_probe)
        for cmax in (4, 3):
            nc = torch.randint(0, cmax + 1, (query.numel(),), generator=gen, dtype=torch.int32)
            want = reference.vhpi_lookup(want_buckets, slot_keys, query, nc, cmax, max_probe)
            args = (cuda(slot_keys), cuda(query), cuda(nc), cmax, max_probe)
            ok &= same(f"{name} Cmax={cmax} (on CUDA-built table)", run(ops().vhpi_lookup, got, *args), want)
            ok &= same(f"{name} Cmax={cmax} (on reference table)", run(ops().vhpi_lookup, cuda(want_buckets), *args), want)
        if ok:
            record(name, True, f"{live.numel()} keys, {nb} buckets")
    # wide rows: 40 chunks per row (two lookup passes of 32 lanes)
    wide_keys = (pack_row_key(torch.zeros(50, dtype=torch.int64), torch.arange(50)).unsqueeze(1) + torch.arange(40))
    live_k = torch.randint(0, 41, (50,), generator=gen)
    wk = wide_keys[torch.arange(40) < live_k.unsqueeze(1)]
    nb = 4 * wk.numel() + 1
    wb = reference.vhpi_rebuild(wk, nb, 64)
    nc = torch.randint(0, 41, (50,), generator=gen, dtype=torch.int32)
    want = reference.vhpi_lookup(wb, wk, wide_keys[:, 0].contiguous(), nc, 40, 64)
    if same(f"vhpi_lookup 40 chunks seed={seed}", run(ops().vhpi_lookup, cuda(wb), cuda(wk), cuda(wide_keys[:, 0].contiguous()), cuda(nc), 40, 64), want):
        record(f"vhpi_lookup 40 chunks seed={seed}", True)
    # the row index: one probe per row and its run expanded (entries in random order, unused ones mixed in)
    entry_keys = torch.cat([row_keys, torch.full((100,), -1, dtype=torch.int64)])[torch.randperm(row_keys.numel() + 100, generator=gen)]
    entry_first = torch.randint(0, 10**6, (entry_keys.numel(),), generator=gen, dtype=torch.int32)
    entry_chunks = torch.randint(0, 6, (entry_keys.numel(),), generator=gen).to(torch.int8)
    ib = run(ops().vhpi_rebuild, cuda(entry_keys), 2 * entry_keys.numel(), 64)
    ok = table_holds_exactly(f"vhpi_lookup_runs seed={seed}: index", ib, entry_keys, (entry_keys >= 0).nonzero().reshape(-1), 64)
    for cmax in (4, 40):
        want = reference.vhpi_lookup_runs(ib.cpu(), entry_keys, entry_first, entry_chunks, query, cmax, 64)
        got = run(ops().vhpi_lookup_runs, ib, *(cuda(a) for a in (entry_keys, entry_first, entry_chunks, query)), cmax, 64)
        ok &= all(same(f"vhpi_lookup_runs seed={seed} Cmax={cmax}: {what}", g, w) for g, w, what in zip(got, want, ("entries", "slots")))
    if ok:
        record(f"vhpi_lookup_runs seed={seed}", True, f"{query.numel()} rows, {row_keys.numel()} stored")
    # insert: half rebuilt, the rest inserted -> all there; a tiny table reports how many went in
    name = f"vhpi_insert_ seed={seed}"
    half = live.numel() // 2
    first = torch.where(torch.isin(torch.arange(slot_keys.numel()), live[:half]), slot_keys, -1)
    buckets = run(ops().vhpi_rebuild, cuda(first), 2 * live.numel(), 32)
    n = run(ops().vhpi_insert_, buckets, cuda(slot_keys), cuda(live[half:].to(torch.int32)), 32)
    ok = n == live.numel() - half and table_holds_exactly(name, buckets, slot_keys, live, 32)
    tiny = torch.full((8,), -1, dtype=torch.int32, device=DEV)
    n_tiny = run(ops().vhpi_insert_, tiny, cuda(slot_keys), cuda(live[:20].to(torch.int32)), 4)
    held = tiny.cpu()[tiny.cpu() >= 0]
    ok &= 1 <= n_tiny <= 8 and n_tiny == held.numel() and table_holds_exactly(f"{name} tiny", tiny, slot_keys, held, 4)
    ok &= run(ops().vhpi_rebuild, cuda(slot_keys), 8, 4).numel() == 0
    before = buckets.clone()
    try:
        ops().vhpi_insert_(buckets, cuda(slot_keys), torch.tensor([int(live[0]), slot_keys.numel() + 5], dtype=torch.int32, device=DEV), 32)
        ok = False
        record(f"{name}: bad slot raises", False, "no error")
    except RuntimeError as error:  # CUDA validates before inserting; the CPU inserts the slots before the bad one
        ok &= "out of range" in str(error) and (DEV.type != "cuda" or torch.equal(buckets, before))
    if ok:
        record(name, True, f"tiny table took {n_tiny} of 20")
    elif not any(r[0].startswith(name) and not r[1] for r in RESULTS):
        record(name, False, f"inserted {n} of {live.numel() - half}; tiny {n_tiny}")


# ---- semantic-ID tokens ----------------------------------------------------------------------------------
def check_semantic_id(seed: int) -> None:
    from semantic_id.parameterizations import CODE_PARAMETERIZATIONS, token_plan

    gen = torch.Generator().manual_seed(seed + 500)
    for levels, K, H, feature_offset in ((3, 64, None, 0), (4, 256, 5000, 17), (6, 2048, 10**9 + 7, 3)):
        codes = torch.randint(0, K, (4000, levels), generator=gen)
        codes[torch.randperm(4000, generator=gen)[:300], 0] = -1  # ids without a code
        for name in CODE_PARAMETERIZATIONS:
            if name in ("trigram", "fourgram") and levels < (3 if name == "trigram" else 4):
                continue
            plan = token_plan(name, levels, K)
            h = plan.space if H is None else H
            args = (list(plan.starts), list(plan.lengths), [(o + feature_offset) % h for o in plan.offsets], plan.add, K, h)
            for dtype in (torch.int32, torch.int64):
                ids = torch.randint(-5, 4400, (20000,), generator=gen).to(dtype)
                tag = f"semantic_id_tokens seed={seed} L={levels} K={K} {name} {str(dtype)[6:]}"
                want = reference.semantic_id_tokens(ids, codes, *args)
                got = run(ops().semantic_id_tokens, cuda(ids), cuda(codes), *args)
                if same(f"{tag}: tokens", got[0], want[0]) and same(f"{tag}: first unknown", got[1], want[1]):
                    record(tag, True, f"{int((want[0][:, 0] < 0).sum())} unknown of {ids.numel()}")


# ---- chunk bag -----------------------------------------------------------------------------------------
CONFIGS: List[Dict] = [
    dict(name="c4", c=4, rows=(50, 7, 200), chunks=(2, 1, 3), ft=(0, 2, 1, 2), batch=16, max_len=4),
    dict(name="c3_scalar", c=3, rows=(40, 300), chunks=(3, 5), ft=(1, 0, 1), batch=24, max_len=5),
    dict(name="c16_D128_hot", c=16, rows=(5, 1000, 10**6), chunks=(4, 8, 2), ft=(0, 1, 2, 1), batch=256, max_len=8),
    dict(name="c32_D256", c=32, rows=(30, 10**5), chunks=(8, 3), ft=(0, 1, 0), batch=64, max_len=6),
    dict(name="c8_C40", c=8, rows=(100, 9), chunks=(40, 2), ft=(0, 1, 0), batch=32, max_len=3),
]


def make_case(cfg: Dict, seed: int, id_dtype: torch.dtype) -> Dict:
    gen = torch.Generator().manual_seed(seed)
    c, batch = cfg["c"], cfg["batch"]
    table_rows = torch.tensor(cfg["rows"], dtype=torch.int64)
    table_chunks = torch.tensor(cfg["chunks"], dtype=torch.int32)
    feature_table = torch.tensor(cfg["ft"], dtype=torch.int32)
    dims = (table_chunks[feature_table.long()] * c).long()
    feature_cols = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(dims, 0)[:-1]])
    lengths = torch.randint(0, cfg["max_len"] + 1, (feature_table.numel() * batch,), generator=gen)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    nnz = int(offsets[-1])
    tables = feature_table.long()[torch.repeat_interleave(torch.arange(lengths.numel()), lengths) // batch]
    values = (torch.rand(nnz, generator=gen) ** 3 * table_rows[tables].float()).long().clamp(max=table_rows[tables] - 1)
    row_keys = torch.unique(pack_row_key(tables, values))
    cmax = int(table_chunks.max())
    live = torch.randint(0, cmax + 1, (row_keys.numel(),), generator=gen).minimum(table_chunks.long()[row_keys >> 53])
    keys = (row_keys.unsqueeze(1) + torch.arange(cmax))[torch.arange(cmax) < live.unsqueeze(1)]
    keys = torch.cat([keys, torch.full((7,), -1, dtype=torch.int64)])
    slot_keys = keys[torch.randperm(keys.numel(), generator=gen)]
    return dict(values=values.to(id_dtype), offsets=offsets, feature_table=feature_table, table_rows=table_rows,
                table_chunks=table_chunks, feature_cols=feature_cols, out_dim=int(dims.sum()), batch=batch, c=c,
                cmax=cmax, weights=torch.rand(nnz, generator=gen) + 0.5, slot_keys=slot_keys,
                buckets=reference.vhpi_rebuild(slot_keys, 2 * slot_keys.numel() + 1, 64),
                pool=torch.randn(slot_keys.numel(), c, generator=gen), gen=gen)


def unique_args(case: Dict, device: bool):
    args = (case["values"], case["offsets"], case["feature_table"], case["table_rows"], case["batch"])
    return tuple(cuda(a) for a in args) if device else args


def lookup(case: Dict, row_keys: torch.Tensor, device: bool) -> torch.Tensor:
    chunks = case["table_chunks"][(row_keys.cpu() >> 53).long()]
    if device:
        return run(ops().vhpi_lookup, cuda(case["buckets"]), cuda(case["slot_keys"]), row_keys, cuda(chunks), case["cmax"], 64)
    return reference.vhpi_lookup(case["buckets"], case["slot_keys"], row_keys, chunks, case["cmax"], 64)


def canonical_unique(out: Tuple) -> Tuple[torch.Tensor, ...]:
    """Outputs of chunk_bag_unique with unique rows put in sorted-key order (the order-free content)."""
    rk, inv, uo, uocc, ob, bad = [t.cpu() for t in out]
    counts = uo[1:] - uo[:-1]
    owner = torch.repeat_interleave(torch.arange(rk.numel()), counts)  # unique row of each unique_occ entry
    order = torch.argsort(rk)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    uocc_sorted = uocc[torch.argsort(rank[owner], stable=True)]
    uo_sorted = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts[order], 0)])
    consistent = inv[uocc.long()].long() == owner  # inverse and the CSR agree
    return rk[order], uo_sorted, uocc_sorted, rk[inv.long()], ob, bad, consistent


def check_unique(case: Dict, tag: str) -> Tuple:
    want = reference.chunk_bag_unique(*unique_args(case, False))
    got = run(ops().chunk_bag_unique, *unique_args(case, True))
    g, w = canonical_unique(got), canonical_unique(want)
    ok = True
    for what, a, b in zip(("row_keys", "unique_offsets", "unique_occ", "key of each occurrence", "occ_bag", "bad"), g, w):
        ok = ok and same(f"unique {tag}: {what}", a, b)
    ok = ok and same(f"unique {tag}: inverse agrees with unique_occ", g[6], torch.ones_like(g[6]))
    if DEV.type == "cuda":  # the documented CUDA order: ascending row keys
        ok = ok and same(f"unique {tag}: rows in sorted-key order", got[0].cpu(), g[0])
    if ok:
        record(f"chunk_bag_unique {tag}", True, f"nnz={got[1].numel()} U={got[0].numel()}")
    return want


def expect_error(pattern: str, fn: Callable, *args) -> bool:
    try:
        fn(*args)
    except RuntimeError as error:
        return re.search(pattern, str(error)) is not None
    return False


def check_unique_errors(case: Dict, tag: str) -> None:
    ok = True
    n = case["values"].numel()
    for first, second in ((3, 7), (n // 2, n - 1)):
        bad_case = dict(case, values=case["values"].clone())
        bad_case["values"][second] = -1
        bad_case["values"][first] = 10**6 + 7
        want = reference.chunk_bag_unique(*unique_args(bad_case, False))[5]
        ok &= same(f"unique {tag}: first bad id", run(ops().chunk_bag_unique, *unique_args(bad_case, True))[5], want)
    values, ft, rows = cuda(case["values"]), cuda(case["feature_table"]), cuda(case["table_rows"])
    shifted = cuda(case["offsets"]) + 1
    ok &= expect_error(r"offsets\[0\] must be 0, got 1", ops().chunk_bag_unique, values, shifted, ft, rows, case["batch"])
    decreasing = cuda(case["offsets"])
    decreasing[2] = -1
    ok &= expect_error("offsets decrease at bag", ops().chunk_bag_unique, values, decreasing, ft, rows, case["batch"])
    bad_ft = cuda(case["feature_table"])
    bad_ft[-1] = 99
    ok &= expect_error("maps to table 99", ops().chunk_bag_unique, values, cuda(case["offsets"]), bad_ft, rows, case["batch"])
    no_offsets = torch.zeros(case["feature_table"].numel() * 2 + 1, dtype=torch.int64, device=DEV)
    empty = run(ops().chunk_bag_unique, values[:0], no_offsets, ft, rows, 2)
    ok &= empty[0].numel() == 0 and empty[2].tolist() == [0] and empty[5].tolist() == [-1, -1, -1]
    record(f"chunk_bag_unique {tag}: bad ids, bad offsets, bad table, empty batch", ok)


def forward_args(case: Dict, slots, inverse, weights, mode: int, pool=None):
    return (case["pool"] if pool is None else pool, slots, inverse, case["offsets"], weights, case["feature_table"],
            case["table_chunks"], case["feature_cols"], case["batch"], case["out_dim"], mode)


def check_forward(case: Dict, tag: str, want_unique: Tuple) -> None:
    ref_slots = lookup(case, want_unique[0], False)
    got_unique = run(ops().chunk_bag_unique, *unique_args(case, True))
    got_slots = lookup(case, got_unique[0], True)
    ok = same(f"lookup {tag}: device unique order", got_slots.cpu(), lookup(case, got_unique[0].cpu(), False))
    # a pool whose base is 4 bytes off 16-byte alignment: the scalar path for any chunk size
    storage = torch.randn(case["pool"].numel() + 1, device=DEV)
    storage[1:] = cuda(case["pool"].reshape(-1))
    for mode in (0, 1):
        for weighted in (False, True):
            w = case["weights"] if weighted else None
            want = reference.chunk_bag_forward(*forward_args(case, ref_slots, want_unique[1], w, mode))
            same_inputs = [cuda(a) for a in forward_args(case, ref_slots, want_unique[1], w, mode)]
            ok &= close(f"forward {tag} mode={mode} w={weighted}", run(ops().chunk_bag_forward, *same_inputs), want)
            end_to_end = [cuda(a) for a in forward_args(case, got_slots, got_unique[1], w, mode)]
            ok &= close(f"forward {tag} mode={mode} w={weighted} (device unique+lookup)", run(ops().chunk_bag_forward, *end_to_end), want)
            end_to_end[0] = storage[1:].view(-1, case["c"])
            ok &= close(f"forward {tag} mode={mode} w={weighted} (unaligned pool)", run(ops().chunk_bag_forward, *end_to_end), want)
    if ok:
        record(f"chunk_bag_forward {tag}", True, f"sum/mean x weights, {case['out_dim']} columns")


def backward_combos(seed: int) -> List[Tuple[int, bool, int, int]]:
    combos = [(m, w, o, r) for m in (0, 1) for w in (False, True) for o in (0, 1, 2) for r in (0, 1, 2)]
    return [x for x in combos if (sum(map(int, x)) + seed) % 2 == 0 or x[2] == 2]


def check_backward(case: Dict, tag: str, seed: int, want_unique: Tuple) -> None:
    gen, c, S = case["gen"], case["c"], case["pool"].shape[0]
    rk, inv, uo, uocc, ob, _ = want_unique
    ref_slots = lookup(case, rk, False)
    got_unique = run(ops().chunk_bag_unique, *unique_args(case, True))
    got_slots = lookup(case, got_unique[0], True)
    grad_out = torch.randn(case["batch"], case["out_dim"], generator=gen)
    ok, combos = True, backward_combos(seed)
    # row-wise Adagrad's accumulators: one per row entry, R of them, each unique row's entry scattered over them
    sorted_rk, perm = torch.sort(rk)  # the device's unique rows -> the reference's
    num_entries = rk.numel() + 5
    entry_of_rank = torch.randperm(num_entries, generator=gen)[: rk.numel()].to(torch.int32)

    def entries_for(keys: torch.Tensor) -> torch.Tensor:
        return entry_of_rank[torch.searchsorted(sorted_rk, keys.cpu())]

    row_touched = torch.zeros(num_entries, dtype=torch.bool)
    row_touched[entries_for(rk)[ref_slots[:, 0] >= 0].long()] = True
    for mode, weighted, optimizer, rule in combos:
        name = f"backward {tag} mode={mode} w={weighted} opt={optimizer} rule={rule}"
        state0 = torch.rand(*{0: (S, 0), 1: (S, c), 2: (num_entries, 1)}[optimizer], generator=gen)
        util0 = torch.rand(S, generator=gen)
        w = case["weights"] if weighted else None
        tail = (case["offsets"], w, case["table_chunks"], case["feature_cols"], case["batch"], mode, optimizer, 0.05, 1e-8, rule, weighted)
        want_t = [case["pool"].clone(), state0.clone(), util0.clone()]
        cand_w, wg_w = reference.chunk_bag_backward_update_(*want_t, grad_out, ref_slots, rk, uo, uocc, ob, *tail,
                                                            entries_for(rk))
        runs = []
        for slots, uniq in ((ref_slots, want_unique), (got_slots, got_unique)):
            t = [cuda(case["pool"]), cuda(state0), cuda(util0)]
            args = [cuda(a) for a in (grad_out, slots, uniq[0], uniq[2], uniq[3], uniq[4], *tail, entries_for(uniq[0]))]
            cand, wg = run(ops().chunk_bag_backward_update_, *t, *args)
            runs.append((t, cand.cpu(), wg.cpu()))
        cand_dev_order = cand_w[perm[torch.searchsorted(sorted_rk, got_unique[0].cpu())]]
        for (t, cand, wg), label, cand_want in ((runs[0], "", cand_w), (runs[1], " (device unique+lookup)", cand_dev_order)):
            for got_x, want_x, x0, what in zip(t, want_t, (case["pool"], state0, util0), ("pool", "state", "utility")):
                ok &= close(f"{name}{label}: {what}", got_x, want_x)
                if x0.numel() and rel_err(want_x, x0) > 0:  # the update itself, not only the sum with the old values
                    ok &= close(f"{name}{label}: {what} delta", got_x.cpu() - x0, want_x - x0, 1e-4)
            ok &= close(f"{name}{label}: candidate", cand, cand_want) and (not weighted or close(f"{name}{label}: weight_grad", wg, wg_w))
        touched = torch.zeros(S, dtype=torch.bool)
        touched[ref_slots[ref_slots >= 0].long()] = True
        for got_x, x0, what in zip(runs[0][0], (case["pool"], state0, util0), ("pool", "state", "utility")):
            moved = row_touched if what == "state" and optimizer == 2 else touched
            if x0.numel():
                ok &= same(f"{name}: untouched {what} entries bit-identical", got_x.cpu()[~moved], x0[~moved])
    # determinism: the same call twice gives the same bits
    t1 = [cuda(case["pool"]), cuda(torch.zeros(num_entries, 1)), cuda(torch.zeros(S))]
    args = [cuda(a) for a in (grad_out, got_slots, got_unique[0], got_unique[2], got_unique[3], got_unique[4], case["offsets"],
                              case["weights"], case["table_chunks"], case["feature_cols"], case["batch"], 1, 2, 0.05, 1e-8, 2, True,
                              entries_for(got_unique[0]))]
    t2 = [x.clone() for x in t1]
    r1, r2 = run(ops().chunk_bag_backward_update_, *t1, *args), run(ops().chunk_bag_backward_update_, *t2, *args)
    ok &= all(same(f"backward {tag}: deterministic", a, b) for a, b in zip(t1 + list(r1), t2 + list(r2)))
    hot = int((uo[1:] - uo[:-1]).max()) if rk.numel() else 0
    if ok:
        record(f"chunk_bag_backward_update_ {tag}", True, f"{len(combos)} combos, hottest row {hot} occurrences")


# check-name prefixes of each op, for the per-op summary ("chunk_bag <cfg>" / "vhpi <seed>": a crashed check)
OPS: Dict[str, Tuple[str, ...]] = {
    "mix_hash": ("mix_hash",),
    "vhpi_rebuild": ("vhpi_rebuild", "vhpi "),
    "vhpi_lookup": ("vhpi_rebuild+lookup", "vhpi_lookup ", "lookup ", "vhpi "),
    "vhpi_lookup_runs": ("vhpi_lookup_runs", "vhpi "),
    "vhpi_insert_": ("vhpi_insert_", "vhpi "),
    "chunk_bag_unique": ("chunk_bag_unique", "unique ", "chunk_bag "),
    "chunk_bag_forward": ("chunk_bag_forward", "forward ", "chunk_bag "),
    "chunk_bag_backward_update_": ("chunk_bag_backward_update_", "backward ", "chunk_bag "),
    "semantic_id_tokens": ("semantic_id_tokens", "semantic_id "),
}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--build-dir", default="")
    parser.add_argument("--verbose-build", action="store_true")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args(argv)
    global DEV
    DEV = torch.device(args.device)
    if DEV.type == "cpu":
        importlib.import_module("cuda_ext._C")  # the CPU build here registers torch.ops.emb_opt
        print(f"gpu_check: CPU kernels of cuda_ext._C, torch {torch.__version__}", flush=True)
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch", flush=True)
        return 2
    else:
        print(f"gpu_check: {torch.cuda.get_device_name()} torch {torch.__version__}; building the operators ...", flush=True)
        print(f"gpu_check: built and loaded in {build_native_ops(args.build_dir, args.verbose_build):.0f} s", flush=True)
    checks: List[Tuple[str, Callable[[], None]]] = []
    for seed in range(args.seeds):
        checks += [(f"mix_hash {seed}", lambda s=seed: check_mix_hash(s)), (f"vhpi {seed}", lambda s=seed: check_vhpi(s)),
                   (f"semantic_id {seed}", lambda s=seed: check_semantic_id(s))]
        for cfg in CONFIGS:
            for dtype in (torch.int64, torch.int32) if seed < 2 else (torch.int64,):
                def one(cfg=cfg, seed=seed, dtype=dtype) -> None:
                    case = make_case(cfg, seed, dtype)
                    tag = f"{cfg['name']} seed={seed} {str(dtype)[6:]}"
                    want_unique = check_unique(case, tag)
                    if seed == 0:
                        check_unique_errors(case, tag)
                    check_forward(case, tag, want_unique)
                    if dtype == torch.int64:
                        check_backward(case, tag, seed, want_unique)
                checks.append((f"chunk_bag {cfg['name']} {seed} {dtype}", one))
    for name, fn in checks:
        try:
            fn()
        except Exception:  # noqa: BLE001 -- a crash is a FAIL of that check; a sticky CUDA error ends the run
            record(name, False, traceback.format_exc().strip().splitlines()[-1])
            try:
                if DEV.type == "cuda":
                    torch.cuda.synchronize()
            except Exception:  # noqa: BLE001
                print(traceback.format_exc(), flush=True)
                break
    failed = [r for r in RESULTS if not r[1]]
    print("\nper op:")
    for op, prefixes in OPS.items():
        mine = [r for r in RESULTS if r[0].startswith(prefixes)]
        bad = sum(1 for r in mine if not r[1])
        print(f"{'PASS' if mine and not bad else 'FAIL'}  {op:28s} {len(mine) - bad} of {len(mine)} checks passed")
    print(f"gpu_check: {len(RESULTS) - len(failed)} passed, {len(failed)} failed", flush=True)
    for name, _, detail in failed[:30]:
        print(f"  FAIL {name}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
