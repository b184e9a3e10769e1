"""Shared pieces of the kernel suite (tests/test_kernels_*.py): the devices to run on, calls that poison the CUDA
allocator first, order-free comparisons, and the random stores and batches the native ops are held to their
pure-PyTorch references on (the references always run on the CPU).

Needs no TorchRec. On a machine where ``cuda_ext._C`` is not built (the lent GPU machines), set
``EMB_OPT_BUILD_OPS=1`` and the operators are compiled and loaded by ``experiments/cuda_build.py`` on import:

    EMB_OPT_BUILD_OPS=1 python -m pytest -q tests/test_kernels_*.py tests/test_kernel_error_messages.py
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Sequence, Tuple

import pytest
import torch

import cuda_ext

if not cuda_ext.extension_loaded() and os.environ.get("EMB_OPT_BUILD_OPS") == "1":
    from experiments.cuda_build import build_native_ops

    build_native_ops()
    cuda_ext.adopt_registered_operators(with_cuda=torch.cuda.is_available())

from cuda_ext import reference  # noqa: E402
from cuda_ext.layout import key_table, pack_row_key  # noqa: E402
from cuda_ext.reference.vhpi import probe  # noqa: E402

requires_extension = pytest.mark.skipif(not cuda_ext.extension_loaded(), reason="native extension not built")
ops = torch.ops.emb_opt

# the native ops run on every device here: the CPU always, CUDA when torch sees a GPU and the build has kernels
DEVICES: List[str] = ["cpu"] + (["cuda"] if torch.cuda.is_available() and cuda_ext.extension_with_cuda() else [])
RTOL = 1e-5


def on(device: str, *tensors):
    """Fresh copies on ``device`` (in-place ops never touch the reference's inputs); non-tensors pass through."""
    out = tuple(t.to(device, copy=True) if isinstance(t, torch.Tensor) else t for t in tensors)
    return out if len(out) != 1 else out[0]


def poison(device: str) -> None:
    """Fill freed blocks of the CUDA allocator with 0x7F bytes, so an output element a kernel forgot to write reads
    as 3.4e38 / 2139062143 instead of a plausible 0 (the CPU allocator gives no such handle: a no-op there)."""
    if device != "cuda":
        return
    blocks = [torch.empty(n, dtype=torch.uint8, device=device).fill_(0x7F) for n in (4096, 65536, 1 << 19, 1 << 20)]
    blocks += [torch.empty(n << 20, dtype=torch.uint8, device=device).fill_(0x7F) for n in (2, 8, 32)]
    del blocks


def call(device: str, op, *args):
    """``op(*args)`` after poisoning the allocator, synchronised."""
    poison(device)
    out = op(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    return out


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (inf for a shape mismatch or a non-finite difference)."""
    got, want = got.detach().cpu().float(), want.detach().cpu().float()
    if got.shape != want.shape:
        return math.inf
    num = float(torch.linalg.vector_norm((got - want).reshape(-1)))
    denom = float(torch.linalg.vector_norm(want.reshape(-1)))
    return num / (denom if denom > 0 else 1.0) if math.isfinite(num) else math.inf


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str, tol: float = RTOL) -> None:
    err = rel_err(got, want)
    assert err < tol, f"{what}: relative error {err:.2e} >= {tol:.0e} (shapes {tuple(got.shape)}, {tuple(want.shape)})"


def assert_same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    got, want = got.detach().cpu(), want.detach().cpu()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    differ = got != want
    assert not bool(differ.any()), (f"{what}: {int(differ.sum())} elements differ, first at "
                                    f"{differ.nonzero()[0].tolist()}: got {got[differ][:4].tolist()} want "
                                    f"{want[differ][:4].tolist()}")


# ---- VHPI tables ----------------------------------------------------------------------------------------------
def random_store(seed: int, num_rows: int = 2000, max_chunks: int = 4, spare: int = 300):
    """(row_keys, slot_keys): rows of 3 tables with a random live prefix of chunks each, free slots (-1) mixed in."""
    gen = torch.Generator().manual_seed(seed)
    tables = torch.randint(0, 3, (num_rows,), generator=gen)
    rows = torch.unique(torch.randint(0, 10**9, (num_rows * 2,), generator=gen))[:num_rows]
    row_keys = pack_row_key(tables, rows[torch.randperm(rows.numel(), generator=gen)])
    live = torch.randint(0, max_chunks + 1, (num_rows,), generator=gen)
    keys = (row_keys.unsqueeze(1) + torch.arange(max_chunks))[torch.arange(max_chunks) < live.unsqueeze(1)]
    slot_keys = torch.cat([keys, torch.full((spare,), -1, dtype=torch.int64)])
    return row_keys, slot_keys[torch.randperm(slot_keys.numel(), generator=gen)]


def random_row_index(seed: int, num_rows: int = 300, spare: int = 40, max_chunks: int = 5):
    """A row index as the row-keyed store keeps one: (row_keys, counts, starts, entry_keys, entry_first,
    entry_chunks), entries in random order with unused ones (key -1) mixed in, runs laid end to end over the pool in
    a random order."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.unique(torch.randint(0, 10**9, (num_rows * 2,), generator=gen))[:num_rows]
    tables = torch.randint(0, 3, (num_rows,), generator=gen)
    row_keys = pack_row_key(tables, rows[torch.randperm(rows.numel(), generator=gen)])
    counts = torch.randint(1, max_chunks + 1, (num_rows,), generator=gen)
    order = torch.randperm(num_rows, generator=gen)
    starts = torch.empty(num_rows, dtype=torch.int64)
    starts[order] = torch.cumsum(counts[order], 0) - counts[order]
    entry_keys = torch.cat([row_keys, torch.full((spare,), -1, dtype=torch.int64)])
    entry_first = torch.cat([starts, torch.zeros(spare, dtype=torch.int64)]).to(torch.int32)
    entry_chunks = torch.cat([counts, torch.zeros(spare, dtype=torch.int64)]).to(torch.int8)
    perm = torch.randperm(entry_keys.numel(), generator=gen)
    return row_keys, counts, starts, entry_keys[perm], entry_first[perm], entry_chunks[perm]


def assert_table_holds(buckets: torch.Tensor, keys_of: torch.Tensor, indices: torch.Tensor, max_probe: int,
                       what: str) -> None:
    """The buckets hold each of ``indices`` once and nothing else, and the reference probe finds every one of them
    (the order-free check: CUDA places keys in thread-timing order)."""
    b = buckets.cpu()
    assert_same(torch.sort(b[b >= 0].long()).values, torch.sort(indices.long()).values, f"{what}: indices held once")
    found = probe(b, keys_of, keys_of[indices.long()], max_probe)
    assert_same(found, indices.to(torch.int32), f"{what}: every key findable within max_probe")


# ---- chunk-bag batches ---------------------------------------------------------------------------------------
# chunk sizes on the float4 path (c % 4 == 0) and the scalar path, features sharing a table, empty bags, hot rows
# (over kLongRow = 128 occurrences), rows wider than one warp pass (D = 256), more than 32 chunks per row.
CONFIGS: List[Dict] = [
    dict(name="c4", c=4, rows=(50, 7, 200), chunks=(2, 1, 3), ft=(0, 2, 1, 2), batch=16, max_len=4),
    dict(name="c3_scalar", c=3, rows=(40, 300), chunks=(3, 5), ft=(1, 0, 1), batch=24, max_len=5),
    dict(name="c16_D128_hot", c=16, rows=(5, 1000, 10**6), chunks=(4, 8, 2), ft=(0, 1, 2, 1), batch=256, max_len=8),
    dict(name="c32_D256", c=32, rows=(30, 10**5), chunks=(8, 3), ft=(0, 1, 0), batch=64, max_len=6),
    dict(name="c8_C40", c=8, rows=(100, 9), chunks=(40, 2), ft=(0, 1, 0), batch=32, max_len=3),
]
CONFIG_NAMES = [cfg["name"] for cfg in CONFIGS]


def make_case(name: str, seed: int, id_dtype: torch.dtype = torch.int64) -> Dict:
    """A batch (values, offsets, weights) over the config's tables, and a row-keyed store as emb_opt keeps one: each
    touched row holds a random live prefix of its chunks as a run of pool slots (runs in random order, free slots
    between them), found through a row index (entry_keys / entry_first / entry_chunks, unused entries mixed in)
    and its hash buckets. Zipf-ish ids, so rows repeat within the batch."""
    cfg = CONFIGS[CONFIG_NAMES.index(name)]
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
    touched = torch.unique(pack_row_key(tables, values))
    cmax = int(table_chunks.max())
    live = torch.randint(0, cmax + 1, (touched.numel(),), generator=gen)
    live = live.minimum(table_chunks.long()[key_table(touched)])
    stored, counts = touched[live > 0], live[live > 0]
    gaps = torch.randint(0, 3, (stored.numel(),), generator=gen)  # free slots before each run
    order = torch.randperm(stored.numel(), generator=gen)
    ends = torch.cumsum((counts + gaps)[order], 0)
    first = torch.empty_like(counts)
    first[order] = ends - counts[order]
    spare = 9  # unused entries
    perm = torch.randperm(stored.numel() + spare, generator=gen)
    entry_keys = torch.cat([stored, torch.full((spare,), -1, dtype=torch.int64)])[perm]
    entry_first = torch.cat([first, torch.zeros(spare, dtype=torch.int64)])[perm].to(torch.int32)
    entry_chunks = torch.cat([counts, torch.zeros(spare, dtype=torch.int64)])[perm].to(torch.int8)
    num_slots = int(ends[-1]) + 5 if stored.numel() else 5
    return dict(values=values.to(id_dtype), offsets=offsets, feature_table=feature_table, table_rows=table_rows,
                table_chunks=table_chunks, feature_cols=feature_cols, out_dim=int(dims.sum()), batch=batch, c=c,
                cmax=cmax, weights=torch.rand(nnz, generator=gen) + 0.5, entry_keys=entry_keys,
                entry_first=entry_first, entry_chunks=entry_chunks,
                buckets=reference.vhpi_rebuild(entry_keys, 2 * entry_keys.numel() + 1, 64),
                pool=torch.randn(num_slots, c, generator=gen), gen=gen)


def unique_args(case: Dict) -> Tuple:
    return case["values"], case["offsets"], case["feature_table"], case["table_rows"], case["batch"]


def lookup_args(case: Dict, row_keys: torch.Tensor) -> Tuple:
    """vhpi_lookup_runs's arguments for these rows in the case's store."""
    return (case["buckets"], case["entry_keys"], case["entry_first"], case["entry_chunks"], row_keys, case["cmax"], 64)


def canonical_unique(out: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """chunk_bag_unique's outputs with the unique rows put in sorted-key order (the order-free content), the row key
    of each occurrence, and whether inverse agrees with the CSR (unique_offsets, unique_occ)."""
    rk, inv, uo, uocc, ob, bad = [t.cpu() for t in out]
    counts = uo[1:] - uo[:-1]
    owner = torch.repeat_interleave(torch.arange(rk.numel()), counts)  # unique row of each unique_occ entry
    order = torch.argsort(rk)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    uocc_sorted = uocc[torch.argsort(rank[owner], stable=True)]
    uo_sorted = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts[order], 0)])
    consistent = bool((inv[uocc.long()].long() == owner).all())
    return rk[order], uo_sorted, uocc_sorted, rk[inv.long()], ob, bad, consistent
