"""Train-step time of FIITED vs TorchRec's embedding collections, side by side in one run (CPU).

    python -m experiments.bench_fiited [--batch-size 4096] [--dim 64] [--chunk-size 16] [--steps 30]

Same tables (the synthetic Criteo cardinalities), same batches, embedding work only (forward + backward with
the optimizer step, loss = sum of squares of the pooled output):
* ``ebc_dense_adagrad``: ``torchrec.EmbeddingBagCollection`` + ``torch.optim.Adagrad`` (the unsharded module);
* ``fused_tbe_rowwise``: ``FusedEmbeddingBagCollection`` = FBGEMM's CPU TBE with fused row-wise Adagrad
  (what ``DistributedModelParallel`` runs on CPU);
* ``fiited@X``: ``FiitedEmbeddingBagCollection`` with row-wise Adagrad at budget X of the full bytes (after a
  warm-up that fills the store and one resize, so the timed steps see a steady state).
Prints milliseconds per step (median of the timed steps) and the ratio to each TorchRec baseline, and
appends the rows to a CSV.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from typing import Callable, Dict, List

import pandas as pd
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad

import emb_opt
from experiments.data.batch import CAT_NAMES
from experiments.data.synthetic_criteo import SyntheticCriteo, SyntheticCriteoConfig


def time_steps(step: Callable[[int], None], warmup: int, steps: int) -> float:
    for i in range(warmup):
        step(i)
    times = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _budgets(text: str) -> List[float]:
    """``"1.0,0.1"`` -> [1.0, 0.1], all checked before anything is timed."""
    try:
        budgets = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"budgets must be comma-separated numbers, got {text!r}") from None
    bad = [b for b in budgets if not 0 < b <= 1]
    if not budgets or bad:
        raise argparse.ArgumentTypeError(f"budgets must be fractions in (0, 1], got {text!r}")
    return budgets


def main(argv: List[str] = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=_positive_int, default=4096, help="samples per step (default 4096)")
    parser.add_argument("--dim", type=_positive_int, default=64, help="embedding dimension of every table (default 64)")
    parser.add_argument("--chunk-size", type=_positive_int, default=16, help="FIITED chunk size (default 16)")
    parser.add_argument("--cardinality-scale", type=float, default=0.01,
                        help="table sizes = Criteo Kaggle's x this (default 0.01)")
    parser.add_argument("--steps", type=_positive_int, default=30, help="timed steps per method (default 30)")
    parser.add_argument("--budgets", type=_budgets, default="1.0,0.1,0.01",
                        help="FIITED budgets, fractions of the full bytes in (0, 1] (default 1.0,0.1,0.01)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    parser.add_argument("--out", default="results/bench_fiited.csv", help="CSV file the rows are appended to")
    args = parser.parse_args(argv)
    if args.dim % args.chunk_size:
        parser.error(f"--dim {args.dim} is not divisible by --chunk-size {args.chunk_size}")
    if os.path.isdir(args.out):
        parser.error(f"--out {args.out!r} is a folder; give the CSV file to append to")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = SyntheticCriteo(SyntheticCriteoConfig(cardinality_scale=args.cardinality_scale))
    tables = [EmbeddingBagConfig(name=f"t_{n}", embedding_dim=args.dim, num_embeddings=c, feature_names=[n])
              for n, c in zip(CAT_NAMES, data.cardinalities)]
    warm = 8
    batches = [data.batch(args.batch_size, i).sparse_features for i in range(warm + args.steps)]
    results: Dict[str, float] = {}

    ebc = EmbeddingBagCollection(tables)
    adagrad = torch.optim.Adagrad(ebc.parameters(), lr=0.05)

    def ebc_step(i: int) -> None:
        ebc(batches[i]).values().pow(2).sum().backward()
        adagrad.step()
        adagrad.zero_grad()

    results["ebc_dense_adagrad"] = time_steps(ebc_step, 2, args.steps)
    del ebc, adagrad
    fused = FusedEmbeddingBagCollection(tables, optimizer_type=RowWiseAdagrad, optimizer_kwargs={"lr": 0.05})
    results["fused_tbe_rowwise"] = time_steps(lambda i: fused(batches[i]).values().pow(2).sum().backward(), 2, args.steps)
    del fused
    for budget in args.budgets:
        fiited = emb_opt.FiitedEmbeddingBagCollection(tables, budget, chunk_size=args.chunk_size, learning_rate=0.05,
                                                      warmup_steps=warm - 2, resize_interval=10**6,
                                                      pressure_resize_steps=0)  # one resize in the warm-up, none timed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            results[f"fiited@{budget:g}"] = time_steps(lambda i: fiited(batches[i]).values().pow(2).sum().backward(), warm, args.steps)
        del fiited
    rows = []
    for name, ms in results.items():
        rows.append({"method": name, "ms_per_step": round(ms, 2),
                     "vs_ebc_dense": round(ms / results["ebc_dense_adagrad"], 3),
                     "vs_fused_tbe": round(ms / results["fused_tbe_rowwise"], 3),
                     "batch_size": args.batch_size, "dim": args.dim, "chunk_size": args.chunk_size,
                     "threads": torch.get_num_threads()})
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    df.to_csv(args.out, mode="a", header=not os.path.exists(args.out), index=False)
    return df


if __name__ == "__main__":
    main()
