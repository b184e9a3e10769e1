"""GPU check of FIITED's whole training loop on CUDA -- admission, fused update, utility sketch, resize (threshold
choice, pruning, decay, compaction, hash rebuilds) -- against the same loop on the CPU, in one device call:

    python experiments/gpu_store_check.py [--steps 60] [--batch 1024] [--budget-mib 3] [--device cpu]

The GPU machines have no TorchRec, so this runs the training step ``FiitedEmbeddingBagCollection`` runs --
``emb_opt.store_step`` (plan -> admit -> pooled forward -> fused backward update -> sketch), after a resize
when one is due -- on raw ids and offsets; a CPU test (``tests/test_gpu_scripts.py``) holds ``train_step`` to
the real module.
Four features on three tables (64 / 128 / 32 dims, 10^3 / 2*10^5 / 10^7 virtual rows, one table shared by two
features), skewed ids, a budget small enough that admission is denied and every resize prunes. After every
resize and at the end the two stores must hold the same live chunks (same keys) with the same weights,
optimizer state and utilities (||cuda - cpu|| / ||cpu|| < 1e-5), the same thresholds and the same counters.
Also prints the time of a training step and of a resize on each device. Exits 1 on a mismatch (2: no GPU).
``--device cpu`` runs the CPU loop twice (a smoke test of this script on a machine without a GPU).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

NAMES = ["t_small", "t_mid", "t_huge"]
ROWS = [1000, 200_000, 10**7]
DIMS = [64, 128, 32]
FEATURE_TABLE = [0, 1, 1, 2]  # features f0..f3 -> tables (t_mid read by two features)
CHUNK = 16
MAX_LEN = 6


def make_config(steps: int):
    from emb_opt.config import FiitedConfig

    return FiitedConfig(chunk_size=CHUNK, warmup_steps=max(2, steps // 6), resize_interval=max(2, steps // 6),
                        learning_rate=0.05, initial_capacity=4096)


def make_store(config, budget_bytes: int, device: torch.device):
    """The store a FiitedEmbeddingBagCollection of these tables builds (same plan, init scales, layout)."""
    from emb_opt.budget import chunk_counts, plan_store, total_full_bytes
    from emb_opt.chunk_store import VhpiChunkStore

    chunks = chunk_counts(DIMS, CHUNK, NAMES)
    full = total_full_bytes(ROWS, DIMS, config.optimizer)
    layout_bytes = len(FEATURE_TABLE) * (4 + 8)  # the collection's feature -> table and first-column buffers
    plan = plan_store(budget_bytes, full, len(NAMES), max(chunks), config, layout_bytes)
    scales = [(1.0 / r) ** 0.5 for r in ROWS]
    return VhpiChunkStore(NAMES, ROWS, chunks, scales, plan, config, device)


def feature_layout(device: torch.device):
    """The ``FeatureLayout`` of the four features (sum pooling)."""
    from emb_opt.store_step import FeatureLayout

    dims = [DIMS[t] for t in FEATURE_TABLE]
    cols = [0]
    for d in dims[:-1]:
        cols.append(cols[-1] + d)
    return FeatureLayout(torch.tensor(FEATURE_TABLE, dtype=torch.int32, device=device),
                         torch.tensor(cols, dtype=torch.int64, device=device), sum(dims), 0,
                         [f"f{i}" for i in range(len(FEATURE_TABLE))])


def make_batches(steps: int, batch: int, seed: int = 0) -> List[Dict[str, torch.Tensor]]:
    """CPU batches: per feature, lengths 0..MAX_LEN and skewed ids (rand^3 * rows), plus an output gradient."""
    gen = torch.Generator().manual_seed(seed)
    out_dim = sum(DIMS[t] for t in FEATURE_TABLE)
    batches = []
    for _ in range(steps):
        lengths = torch.randint(0, MAX_LEN + 1, (len(FEATURE_TABLE), batch), generator=gen)
        values = []
        for f, t in enumerate(FEATURE_TABLE):
            n = int(lengths[f].sum())
            values.append((torch.rand(n, generator=gen) ** 3 * ROWS[t]).long().clamp(max=ROWS[t] - 1))
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths.reshape(-1), 0)])
        batches.append(dict(values=torch.cat(values), lengths=lengths, offsets=offsets,
                            grad=torch.randn(batch, out_dim, generator=gen) * 0.1))
    return batches


def train_step(store, batch: Dict[str, torch.Tensor], layout, batch_size: int) -> Optional[Dict]:
    """One training step of FiitedEmbeddingBagCollection (sum pooling, unweighted), on the store's device.
    Returns the resize's telemetry record when one ran at the start of the step."""
    from emb_opt import store_step
    from emb_opt.resize import resize_due, resize_store

    dev = store.pool_weights.device
    record = resize_store(store) if store.pending_backward == 0 and resize_due(store) else None
    plan = store_step.plan_batch(store, layout, batch["values"].to(dev), batch["offsets"].to(dev), None, batch_size)
    anchor = torch.zeros(0, requires_grad=True, device=dev)
    store_step.forward(store, layout, plan, True, anchor).backward(batch["grad"].to(dev))
    return record


def dense_view(store) -> Dict[str, torch.Tensor]:
    """Everything a store's behaviour depends on, independent of slot placement and hash layout."""
    from emb_opt.store_counters import COUNTER_NAMES

    slots, keys = store.live_keys()
    counters = dict(zip(COUNTER_NAMES, store.counters.cpu().tolist()))
    counters.pop("hash_rebuilds")  # CUDA inserts place keys by thread timing: rebuild counts may differ
    entries = store.live_rows()[0]  # key order, as the chunks
    return dict(keys=keys.cpu(), weights=store.pool_weights[slots].cpu(), state=store.pool_state[slots].cpu(),
                row_state=store.entry_state[entries].cpu(), utility=store.slot_utility[slots].cpu(),
                thresholds=store.thresholds.cpu(),
                sketch=store.sketch.cpu(), counters=torch.tensor(list(counters.values())))


def compare(tag: str, got: Dict[str, torch.Tensor], want: Dict[str, torch.Tensor], tol: float = 1e-5) -> List[str]:
    problems = []
    for name in ("keys", "counters"):
        if got[name].shape != want[name].shape or not torch.equal(got[name], want[name]):
            problems.append(f"{tag}: {name} differ ({got[name].numel()} vs {want[name].numel()} entries)")
    if problems:
        return problems
    for name in ("weights", "state", "row_state", "utility", "thresholds", "sketch"):
        a, b = got[name].double(), want[name].double()
        finite = torch.isfinite(b)
        if not torch.equal(torch.isfinite(a), finite):
            problems.append(f"{tag}: {name} finite pattern differs")
            continue
        denom = float(b[finite].norm()) or 1.0
        err = float((a[finite] - b[finite]).norm()) / denom
        if not err < tol:
            problems.append(f"{tag}: {name} rel err {err:.2e} >= {tol:.0e}")
    return problems


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(args: argparse.Namespace, device: torch.device) -> int:
    config = make_config(args.steps)
    budget = int(args.budget_mib * 2**20)
    cpu = torch.device("cpu")
    stores = {"ref": make_store(config, budget, cpu), "dev": make_store(make_config(args.steps), budget, device)}
    layouts = {"ref": feature_layout(cpu), "dev": feature_layout(device)}
    batches = make_batches(args.steps, args.batch)
    problems: List[str] = []
    times: Dict[str, List[float]] = {"ref step": [], "dev step": [], "ref resize": [], "dev resize": []}
    resizes = 0
    for i, batch in enumerate(batches):
        records = {}
        for name, store in stores.items():
            synchronize(device)
            start = time.perf_counter()
            records[name] = train_step(store, batch, layouts[name], args.batch)
            synchronize(device)
            times[f"{name} step"].append(time.perf_counter() - start)
        if records["ref"] is not None:
            resizes += 1
            found = compare(f"after resize {resizes} (step {i})", dense_view(stores["dev"]), dense_view(stores["ref"]))
            problems += found
            rec = records["ref"]
            print(f"step {i:3d}: resize {resizes}: live chunks {rec['live_chunks']}, pruned {rec['pruned']}, "
                  f"capacity {rec['capacity']}, allocated {rec['allocated_bytes'] / 2**20:.2f} MiB of "
                  f"{budget / 2**20:.2f} -- {'MATCH' if not found else 'MISMATCH'}", flush=True)
    problems += compare("end", dense_view(stores["dev"]), dense_view(stores["ref"]))
    counters = stores["dev"].counter_dict()
    print(f"counters ({device.type}): {counters}")
    if counters["pruned_chunks"] == 0 or counters["denied_admissions"] == 0:
        problems.append(f"the check did not exercise pruning and denied admissions: {counters}")
    from emb_opt.resize import resize_store

    for name, store in stores.items():  # one more resize of each (equal) store, timed alone
        synchronize(device)
        start = time.perf_counter()
        resize_store(store)
        synchronize(device)
        times[f"{name} resize"] = [time.perf_counter() - start]
    for key, values in times.items():
        print(f"time {key:10s} ({'cpu' if key.startswith('ref') else device.type}): median "
              f"{1e3 * sorted(values)[len(values) // 2]:8.2f} ms over {len(values)}")
    for p in problems:
        print("MISMATCH", p)
    print(f"gpu_store_check: {resizes} resizes over {args.steps} steps, {len(problems)} mismatches -> "
          f"{'PASS' if not problems else 'FAIL'}", flush=True)
    return 1 if problems else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--budget-mib", type=float, default=3.0)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--build-dir", default="")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        import cuda_ext

        if not cuda_ext.extension_loaded():
            print("gpu_store_check: the compiled extension is not built (cuda_ext._C)")
            return 2
        return run(args, torch.device("cpu"))
    from experiments.cuda_build import build_native_ops  # sets EMB_OPT_DISABLE_EXTENSION before cuda_ext loads

    if not torch.cuda.is_available():
        print("gpu_store_check: no CUDA device visible to torch")
        return 2
    print(f"gpu_store_check: {torch.cuda.get_device_name()} torch {torch.__version__}; building the operators ...", flush=True)
    print(f"gpu_store_check: built and loaded in {build_native_ops(args.build_dir):.0f} s", flush=True)
    import cuda_ext

    cuda_ext.adopt_registered_operators(with_cuda=True)
    return run(args, torch.device("cuda"))


if __name__ == "__main__":
    sys.exit(main())
