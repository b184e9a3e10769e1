"""Issue-6 bench: the FIITED chunk-bag path on one GPU against nn.EmbeddingBag and FBGEMM TBE, in one device call.

    python experiments/bench_gpu.py [--batch 65536] [--rows 10000000] [--dim 128] [--poolings 1,20]
                                    [--chunk-sizes 16,32] [--budgets 1.0,0.1,0.01] [--iters 20] [--cpu-smoke]

One table of --rows virtual rows, one feature, batch --batch, fixed pooling L, fp32, sum pooling, uniform ids:
* ``copy``: a 1 GiB device-to-device copy (bytes read + written): the bandwidth ceiling;
* ``embedding_bag``: torch.nn.EmbeddingBag(sum, sparse=True), forward and forward + backward + sparse Adagrad step;
* ``tbe``: FBGEMM SplitTableBatchedEmbeddingBagsCodegen (EXACT_ROWWISE_ADAGRAD, fused backward) when
  ``import fbgemm_gpu`` works (experiments' GPU machine: carry the wheel, see shared/tools/fbgemm-on-gpu.md);
* ``semantic_id``: the fused semantic-ID token kernel vs the same tokens from torch ops (``--semantic-id-only``);
* ``fiited``: the ops of a FIITED collection on a VHPI store whose rows keep a random prefix of their chunks
  (k_r ~ Binomial(D/c, budget), so live chunks / all chunks ~ budget), slots shuffled over the pool, hash table
  at load 0.5: ``fwd`` = chunk_bag_unique -> vhpi_lookup_runs -> chunk_bag_forward, ``fwd_bwd`` = fwd +
  chunk_bag_backward_update_ (row-wise Adagrad, freq_grad utility), and each kernel alone (``unique``,
  ``lookup``, ``fwd_kernel``, ``bwd_kernel``).
Each time is the median over --iters timed runs (CUDA events, after --warmup runs), rotating over 4 batches so
that repeated runs do not measure the L2. Bytes are what the stage must move: embedding bytes read (live chunks
only, per occurrence) + output written (+ for backward: gradient rows read, live slots and their optimizer
state read and written); probe bytes (row keys, buckets, row entries, slots written) are stated separately and not
counted in GB/s. Prints ms, GB/s, GB/s as a fraction of the copy, FIITED / TBE and FIITED / EmbeddingBag time
ratios; writes all rows to $OUT/bench_gpu.csv if $OUT is set, else results/bench_gpu.csv.
``--cpu-smoke`` runs the same code on CPU tensors with the compiled CPU kernels (cuda_ext._C) at tiny sizes,
to test this script without a GPU.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import math
import os
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments.cuda_build import build_native_ops  # noqa: E402  (first: keeps cuda_ext off its own _C)

import torch  # noqa: E402

from cuda_ext.layout import pack_row_key  # noqa: E402

ROWWISE_ADAGRAD, UTILITY_FREQ_GRAD, LR, EPS, MAX_PROBE, LOAD = 2, 2, 0.01, 1e-8, 128, 0.5
ROTATE = 4  # distinct batches cycled through by the timed runs


class Timer:
    def __init__(self, device: torch.device, warmup: int, iters: int) -> None:
        self.device, self.warmup, self.iters = device, warmup, iters

    def __call__(self, fn: Callable[[int], None]) -> float:
        """Median milliseconds of fn(i) (i = run index, for rotating inputs)."""
        for i in range(self.warmup):
            fn(i)
        times = []
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            for i in range(self.iters):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(i)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        else:
            for i in range(self.iters):
                t0 = time.perf_counter()
                fn(i)
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


class Report:
    def __init__(self) -> None:
        self.rows: List[Dict[str, object]] = []
        self.copy_gbps = float("nan")

    def add(self, method: str, stage: str, pooling: int, ms: float, bytes_moved: float, **extra: object) -> Dict[str, object]:
        gbps = bytes_moved / (ms * 1e6) if ms > 0 else float("nan")
        row = dict(method=method, stage=stage, pooling=pooling, ms=round(ms, 4), bytes=int(bytes_moved),
                   gbps=round(gbps, 1), frac_of_copy=round(gbps / self.copy_gbps, 3), **extra)
        self.rows.append(row)
        extras = " ".join(f"{k}={v}" for k, v in extra.items())
        print(f"{method:14s} {stage:10s} L={pooling:<3d} {ms:9.3f} ms {gbps:8.1f} GB/s ({row['frac_of_copy']:.2f} of copy) {extras}", flush=True)
        return row


def make_batches(rows: int, batch: int, pooling: int, device: torch.device, seed: int) -> List[Dict[str, torch.Tensor]]:
    gen = torch.Generator(device=device).manual_seed(seed)
    offsets = torch.arange(0, batch * pooling + 1, pooling, dtype=torch.int64, device=device)
    return [dict(values=torch.randint(0, rows, (batch * pooling,), generator=gen, device=device), offsets=offsets)
            for _ in range(ROTATE)]


def bench_copy(report: Report, device: torch.device, timer: Timer, smoke: bool) -> None:
    n = (1 << 20) if smoke else (1 << 28)  # floats: 4 MiB / 1 GiB
    x, y = torch.randn(n, device=device), torch.empty(n, device=device)
    ms = timer(lambda i: y.copy_(x))
    report.copy_gbps = 2 * 4 * n / (ms * 1e6)
    report.add("copy", "d2d", 0, ms, 2 * 4 * n)


def bench_embedding_bag(report: Report, args: argparse.Namespace, device: torch.device, timer: Timer,
                        batches: Dict[int, List[Dict[str, torch.Tensor]]]) -> Dict[tuple, float]:
    times = {}
    emb = torch.nn.EmbeddingBag(args.rows, args.dim, mode="sum", sparse=True, device=device)
    opt = torch.optim.Adagrad(emb.parameters(), lr=LR, eps=EPS)
    grad = torch.randn(args.batch, args.dim, device=device)
    for pooling, bs in batches.items():
        nnz = args.batch * pooling
        fwd_bytes = 4 * args.dim * (nnz + args.batch)

        def fwd(i: int) -> torch.Tensor:
            b = bs[i % ROTATE]
            return emb(b["values"], b["offsets"][:-1])

        def fwd_bwd(i: int) -> None:
            opt.zero_grad(set_to_none=True)
            fwd(i).backward(grad)
            opt.step()

        with torch.no_grad():
            times[("fwd", pooling)] = timer(fwd)
        report.add("embedding_bag", "fwd", pooling, times[("fwd", pooling)], fwd_bytes)
        times[("fwd_bwd", pooling)] = timer(fwd_bwd)
        report.add("embedding_bag", "fwd_bwd", pooling, times[("fwd_bwd", pooling)], fwd_bytes * 2, note="Adagrad(sparse)")
    del emb, opt
    return times


def bench_tbe(report: Report, args: argparse.Namespace, device: torch.device, timer: Timer,
              batches: Dict[int, List[Dict[str, torch.Tensor]]]) -> Dict[tuple, float]:
    try:
        import fbgemm_gpu  # noqa: F401
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen)
    except Exception as error:  # noqa: BLE001 -- any import failure means "no TBE here"
        print(f"tbe: fbgemm_gpu is absent or does not load ({type(error).__name__}: {error}); skipping TBE", flush=True)
        return {}
    on_gpu = device.type == "cuda"
    spec = (args.rows, args.dim, EmbeddingLocation.DEVICE if on_gpu else EmbeddingLocation.HOST,
            ComputeDevice.CUDA if on_gpu else ComputeDevice.CPU)
    tbe = SplitTableBatchedEmbeddingBagsCodegen([spec], optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
                                                learning_rate=LR, eps=EPS, pooling_mode=PoolingMode.SUM)
    grad = torch.randn(args.batch, args.dim, device=device)
    times = {}
    for pooling, bs in batches.items():
        nnz = args.batch * pooling
        fwd_bytes = 4 * args.dim * (nnz + args.batch)
        unique = float(torch.unique(bs[0]["values"]).numel())
        bwd_bytes = 4 * args.dim * (args.batch + 2 * unique) + 8 * unique  # grad, rows r+w, row state r+w

        def fwd(i: int) -> torch.Tensor:
            b = bs[i % ROTATE]
            return tbe(b["values"], b["offsets"])

        with torch.no_grad():
            times[("fwd", pooling)] = timer(fwd)
        report.add("tbe", "fwd", pooling, times[("fwd", pooling)], fwd_bytes)
        times[("fwd_bwd", pooling)] = timer(lambda i: fwd(i).backward(grad))
        report.add("tbe", "fwd_bwd", pooling, times[("fwd_bwd", pooling)], fwd_bytes + bwd_bytes, note="rowwise Adagrad")
    del tbe
    return times


def build_store(rows: int, dim: int, c: int, budget: float, device: torch.device, seed: int) -> Dict[str, torch.Tensor]:
    """A row-keyed VHPI store (``emb_opt.chunk_store``) where every row keeps a random prefix of its D/c chunks,
    k_r ~ Binomial(D/c, budget), as one run of slots; the runs lie in random row order over the pool."""
    ops = torch.ops.emb_opt
    chunks = dim // c
    gen = torch.Generator(device=device).manual_seed(seed)
    keep = torch.zeros(rows, dtype=torch.int64, device=device)
    for _ in range(chunks):
        keep += (torch.rand(rows, generator=gen, device=device) < budget).to(torch.int64)
    stored = keep.nonzero().reshape(-1)
    stored = stored[torch.randperm(stored.numel(), generator=gen, device=device)]  # rows scattered over the pool
    counts = keep[stored]
    del keep
    entry_keys = pack_row_key(torch.zeros(1, dtype=torch.int64, device=device), stored)
    entry_first = (torch.cumsum(counts, 0) - counts).to(torch.int32)
    num_slots = int(counts.sum())
    buckets = ops.vhpi_rebuild(entry_keys, max(16, math.ceil(entry_keys.numel() / LOAD)), MAX_PROBE)
    if buckets.numel() == 0:
        raise RuntimeError("bench store: the hash table hit max_probe")
    return dict(entry_keys=entry_keys, entry_first=entry_first, entry_chunks=counts.to(torch.int8), buckets=buckets,
                pool=torch.randn(num_slots, c, generator=gen, device=device) * 0.01,
                state=torch.zeros(entry_keys.numel(), 1, device=device),  # row-wise Adagrad: one per row entry
                utility=torch.zeros(num_slots, device=device),
                live_share=torch.tensor(num_slots / (rows * chunks)), chunks=torch.tensor(chunks))


def bench_fiited(report: Report, args: argparse.Namespace, device: torch.device, timer: Timer,
                 batches: Dict[int, List[Dict[str, torch.Tensor]]], c: int, budget: float,
                 baselines: Dict[str, Dict[tuple, float]]) -> None:
    ops = torch.ops.emb_opt
    store = build_store(args.rows, args.dim, c, budget, device, seed=int(budget * 1000) + c)
    chunks = int(store["chunks"])
    meta = dict(feature_table=torch.zeros(1, dtype=torch.int32, device=device),
                table_rows=torch.tensor([args.rows], dtype=torch.int64, device=device),
                table_chunks=torch.tensor([chunks], dtype=torch.int32, device=device),
                feature_cols=torch.zeros(1, dtype=torch.int64, device=device))
    grad = torch.randn(args.batch, args.dim, device=device)
    tag = dict(chunk_size=c, budget=budget, live_share=round(float(store["live_share"]), 4))

    def unique(b: Dict[str, torch.Tensor]):
        return ops.chunk_bag_unique(b["values"], b["offsets"], meta["feature_table"], meta["table_rows"], args.batch)

    def lookup(row_keys: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(entries, slots) as VhpiChunkStore.lookup_rows: one probe per row and its run, one kernel."""
        return ops.vhpi_lookup_runs(store["buckets"], store["entry_keys"], store["entry_first"], store["entry_chunks"],
                                    row_keys, chunks, MAX_PROBE)

    def forward(b: Dict[str, torch.Tensor], slots: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        return ops.chunk_bag_forward(store["pool"], slots, inverse, b["offsets"], None, meta["feature_table"],
                                     meta["table_chunks"], meta["feature_cols"], args.batch, args.dim, 0)

    def backward(b: Dict[str, torch.Tensor], plan: tuple, found: Tuple[torch.Tensor, torch.Tensor]) -> None:
        row_keys, _, unique_offsets, unique_occ, occ_bag, _ = plan
        entries, slots = found
        ops.chunk_bag_backward_update_(store["pool"], store["state"], store["utility"], grad, slots, row_keys,
                                       unique_offsets, unique_occ, occ_bag, b["offsets"], None, meta["table_chunks"],
                                       meta["feature_cols"], args.batch, 0, ROWWISE_ADAGRAD, LR, EPS,
                                       UTILITY_FREQ_GRAD, False, entries)

    for pooling, bs in batches.items():
        plans = [unique(b) for b in bs]
        found = [lookup(p[0]) for p in plans]
        slots = [f[1] for f in found]
        # bytes, from the first batch: live chunks read per occurrence, rows/state touched once per unique row
        live = (slots[0] >= 0).sum(1)
        inverse = plans[0][1].long()
        live_occ = float(live[inverse].sum())
        grad_chunks = float(torch.clamp(live + 1, max=chunks)[inverse].sum())
        live_unique = float(live.sum())
        U = plans[0][0].numel()
        fwd_bytes = 4 * c * live_occ + 4 * args.batch * args.dim
        stored_unique = float((live > 0).sum())
        # grad read, live chunks r+w, their utilities r+w, each stored row's accumulator r+w
        bwd_bytes = 4 * c * grad_chunks + 2 * 4 * c * live_unique + 2 * 4 * live_unique + 2 * 4 * stored_unique
        probe_bytes = U * (8 + 4 + 8 + 4 + 1) + U * chunks * 4  # key, bucket, entry (key, first, count), slots
        ids_bytes = args.batch * pooling * 8
        t = {}
        t["unique"] = timer(lambda i: unique(bs[i % ROTATE]))
        t["lookup"] = timer(lambda i: lookup(plans[i % ROTATE][0]))
        t["fwd_kernel"] = timer(lambda i: forward(bs[i % ROTATE], slots[i % ROTATE], plans[i % ROTATE][1]))
        t["bwd_kernel"] = timer(lambda i: backward(bs[i % ROTATE], plans[i % ROTATE], found[i % ROTATE]))

        def path(i: int, with_backward: bool) -> None:
            b = bs[i % ROTATE]
            plan = unique(b)
            f = lookup(plan[0])
            forward(b, f[1], plan[1])
            if with_backward:
                backward(b, plan, f)

        t["fwd"] = timer(lambda i: path(i, False))
        t["fwd_bwd"] = timer(lambda i: path(i, True))
        nbytes = dict(unique=ids_bytes, lookup=0, fwd_kernel=fwd_bytes, bwd_kernel=bwd_bytes, fwd=fwd_bytes,
                      fwd_bwd=fwd_bytes + bwd_bytes)
        for stage, ms in t.items():
            extra = dict(tag, unique_rows=U, probe_MB=round(probe_bytes / 1e6, 1) if stage in ("lookup", "fwd", "fwd_bwd") else "")
            for name, base in baselines.items():
                key = ("fwd" if stage in ("fwd", "fwd_kernel") else "fwd_bwd", pooling)
                if stage in ("fwd", "fwd_bwd") and key in base:
                    extra[f"x_{name}"] = float(f"{ms / base[key]:.3g}")
            report.add("fiited", stage, pooling, ms, nbytes[stage], **extra)
    del store


def bench_semantic_id(report: Report, device: torch.device, timer: Timer, smoke: bool) -> None:
    """semantic_id_tokens (one fused kernel) vs the same tokens from torch ops (the reference, which is what
    SemanticIdTransform ran before the kernel): 2^20 ids (2^12 with --cpu-smoke) into a 10^6-item code table,
    prefix-ngram, L = 3, K = 256, H = 5 * 10^6, 5% unknown ids."""
    from cuda_ext import reference
    from semantic_id.parameterizations import token_plan

    n, items, L, K, H = (1 << 12 if smoke else 1 << 20), (10**4 if smoke else 10**6), 3, 256, 5 * 10**6
    gen = torch.Generator(device=device).manual_seed(7)
    codes = torch.randint(0, K, (items, L), generator=gen, device=device)
    ids = torch.randint(0, int(items * 1.05), (n,), generator=gen, device=device)
    plan = token_plan("prefix_ngram", L, K)
    args = (list(plan.starts), list(plan.lengths), [o % H for o in plan.offsets], plan.add, K, H)
    nbytes = n * 8 + n * L * 8 + n * L * 8  # ids read, code rows gathered, tokens written
    kernel = timer(lambda i: torch.ops.emb_opt.semantic_id_tokens(ids, codes, *args))
    report.add("semantic_id", "kernel", L, kernel, nbytes, ids=n)
    torch_ops = timer(lambda i: reference.semantic_id_tokens(ids, codes, *args))
    report.add("semantic_id", "torch_ops", L, torch_ops, nbytes, ids=n, x_kernel=round(torch_ops / kernel, 2))


def write_csv(rows: List[Dict[str, object]]) -> str:
    out_dir = os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_gpu.csv")
    fields: List[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def summary(rows: List[Dict[str, object]]) -> None:
    print("\nsummary: FIITED path time / baseline time (fwd = unique+lookup+forward; fwd_bwd adds the fused update)")
    print(f"{'L':>3} {'c':>3} {'budget':>7} {'live':>6} {'fwd ms':>8} {'x tbe':>6} {'x eb':>6} {'fwd_bwd ms':>10} {'x tbe':>6} {'x eb':>6} {'fwd kern GB/s':>13}")
    by = {(r["pooling"], r.get("chunk_size"), r.get("budget"), r["stage"]): r for r in rows if r["method"] == "fiited"}
    for (pooling, c, budget, stage), r in by.items():
        if stage != "fwd":
            continue
        fb, fk = by[(pooling, c, budget, "fwd_bwd")], by[(pooling, c, budget, "fwd_kernel")]
        print(f"{pooling:>3} {c:>3} {budget:>7} {r['live_share']:>6} {r['ms']:>8} {r.get('x_tbe', '-'):>6} "
              f"{r.get('x_embedding_bag', '-'):>6} {fb['ms']:>10} {fb.get('x_tbe', '-'):>6} "
              f"{fb.get('x_embedding_bag', '-'):>6} {fk['gbps']:>13}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=65536)
    parser.add_argument("--rows", type=int, default=10**7)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--poolings", default="1,20")
    parser.add_argument("--chunk-sizes", default="16,32")
    parser.add_argument("--budgets", default="1.0,0.1,0.01")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-baselines", action="store_true", help="FIITED only")
    parser.add_argument("--semantic-id-only", action="store_true", help="only the semantic-ID token kernel")
    parser.add_argument("--build-dir", default="")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes, CPU tensors, compiled CPU kernels")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")  # nn.EmbeddingBag's sparse Adagrad
    if args.cpu_smoke:
        args.batch, args.rows, args.dim, args.iters, args.warmup = 64, 5000, 32, 3, 1
        args.poolings, args.chunk_sizes = "1,4", "8,16"
        device = torch.device("cpu")
        importlib.import_module("cuda_ext._C")  # registers the CPU kernels in torch.ops.emb_opt
    else:
        if not torch.cuda.is_available():
            print("bench_gpu: no CUDA device (use --cpu-smoke to test the script on CPU)")
            return 2
        device = torch.device("cuda")
        print(f"bench_gpu: {torch.cuda.get_device_name()} torch {torch.__version__}; building the operators ...", flush=True)
        print(f"bench_gpu: built and loaded in {build_native_ops(args.build_dir):.0f} s", flush=True)
    start = time.perf_counter()
    timer = Timer(device, args.warmup, args.iters)
    report = Report()
    poolings = [int(x) for x in args.poolings.split(",")]
    batches = {p: make_batches(args.rows, args.batch, p, device, seed=p) for p in poolings}
    bench_copy(report, device, timer, args.cpu_smoke)
    bench_semantic_id(report, device, timer, args.cpu_smoke)
    if args.semantic_id_only:
        print(f"bench_gpu: wrote {write_csv(report.rows)}")
        return 0
    baselines: Dict[str, Dict[tuple, float]] = {}
    if not args.no_baselines:
        baselines["embedding_bag"] = bench_embedding_bag(report, args, device, timer, batches)
        tbe = bench_tbe(report, args, device, timer, batches)
        if tbe:
            baselines["tbe"] = tbe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for c in (int(x) for x in args.chunk_sizes.split(",")):
        for budget in (float(x) for x in args.budgets.split(",")):
            bench_fiited(report, args, device, timer, batches, c, budget, baselines)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"bench_gpu: wrote {write_csv(report.rows)} ({time.perf_counter() - start:.0f} s of benchmarks)")
    summary(report.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
