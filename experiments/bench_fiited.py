"""Train-step time of FIITED vs TorchRec's embedding collections, side by side in one run (CPU).

    python -m experiments.bench_fiited [--batch-size 4096] [--embedding-dim 64] [--chunk-size 16] [--steps 30]
    python -m experiments.bench_fiited --weight-dtypes float32,bfloat16,int8   # the chunk pool's precisions too

Same tables (the synthetic Criteo cardinalities), same batches, embedding work only (forward + backward with
the optimizer step, loss = sum of squares of the pooled output):
* ``ebc_dense_adagrad``: ``torchrec.EmbeddingBagCollection`` + ``torch.optim.Adagrad`` (the unsharded module);
* ``fused_tbe_rowwise``: ``FusedEmbeddingBagCollection`` = FBGEMM's CPU TBE with fused row-wise Adagrad
  (what ``DistributedModelParallel`` runs on CPU);
* ``fiited@X``: ``FiitedEmbeddingBagCollection`` with row-wise Adagrad at budget X of the full bytes (after a
  warm-up that fills the store and one resize, so the timed steps see a steady state); ``fiited_<dtype>@X`` the
  same with its chunk pool in that ``weight_dtype`` (``--weight-dtypes``; at equal bytes it holds more rows).
Prints milliseconds per step (median of the timed steps) and the ratio to each TorchRec baseline, and appends
the rows to a CSV. Torch's thread count is what the process starts with (``OMP_NUM_THREADS``).
"""
from __future__ import annotations

import itertools
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import pandas as pd
import torch
from torchrec import EmbeddingBagCollection
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad
from tqdm import tqdm

import emb_opt
from emb_opt.config import WEIGHT_DTYPES
from experiments.config import parse_config
from experiments.data.batch import criteo_tables
from experiments.data.synthetic_criteo import SyntheticCriteo, SyntheticCriteoConfig


@dataclass
class Config:
    batch_size: int = 4096
    embedding_dim: int = 64
    chunk_size: int = 16
    cardinality_scale: float = 0.01  # table sizes = Criteo Kaggle's x this
    steps: int = 30  # timed steps per method
    budgets: str = "1.0,0.1,0.01"  # FIITED budgets, fractions of the full bytes
    weight_dtypes: str = "float32"  # FIITED chunk pools to time: float32, bfloat16, int8 (comma-separated)
    out: str = "results/bench_fiited.csv"  # the CSV the rows are appended to


def budget_list(config: Config) -> List[float]:
    try:
        budgets = [float(b) for b in config.budgets.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"budgets must be comma-separated numbers, got {config.budgets!r}") from None
    if not budgets or any(not 0 < b <= 1 for b in budgets):
        raise ValueError(f"budgets must be fractions in (0, 1], got {config.budgets!r}")
    return budgets


def dtype_list(config: Config) -> List[str]:
    dtypes = [d.strip() for d in config.weight_dtypes.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in WEIGHT_DTYPES]
    if not dtypes or unknown:
        raise ValueError(f"--weight-dtypes must name some of {sorted(WEIGHT_DTYPES)}, got {config.weight_dtypes!r}")
    return dtypes


def check_config(config: Config) -> None:
    """Everything that would stop the run, before anything is timed."""
    for name in ("batch_size", "embedding_dim", "chunk_size", "steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    budget_list(config)
    dtype_list(config)
    if config.embedding_dim % config.chunk_size:
        raise ValueError(f"--embedding-dim {config.embedding_dim} is not divisible by --chunk-size {config.chunk_size}")
    if os.path.isdir(config.out):
        raise ValueError(f"--out {config.out!r} is a folder; give the CSV file to append to")


def time_steps(step: Callable[[int], None], warmup: int, steps: int, desc: str) -> float:
    """Median milliseconds of ``steps`` calls ``step(i)`` after ``warmup`` untimed ones."""
    times = []
    for i in tqdm(range(warmup + steps), desc=desc, leave=False):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:]) * 1000


def main(argv: Optional[Sequence[str]] = None) -> pd.DataFrame:
    config = parse_config(Config, argv, __doc__, check=check_config)
    data = SyntheticCriteo(SyntheticCriteoConfig(cardinality_scale=config.cardinality_scale))
    tables = criteo_tables(data.cardinalities, config.embedding_dim)
    warm = 8
    batches = [data.batch(config.batch_size, i).sparse_features for i in range(warm + config.steps)]
    results: Dict[str, float] = {}

    ebc = EmbeddingBagCollection(tables)
    adagrad = torch.optim.Adagrad(ebc.parameters(), lr=0.05)

    def ebc_step(i: int) -> None:
        ebc(batches[i]).values().pow(2).sum().backward()
        adagrad.step()
        adagrad.zero_grad()

    results["ebc_dense_adagrad"] = time_steps(ebc_step, 2, config.steps, "ebc_dense_adagrad")
    del ebc, adagrad
    fused = FusedEmbeddingBagCollection(tables, optimizer_type=RowWiseAdagrad, optimizer_kwargs={"lr": 0.05})
    results["fused_tbe_rowwise"] = time_steps(lambda i: fused(batches[i]).values().pow(2).sum().backward(), 2,
                                              config.steps, "fused_tbe_rowwise")
    del fused
    for dtype, budget in itertools.product(dtype_list(config), budget_list(config)):
        name = f"fiited@{budget:g}" if dtype == "float32" else f"fiited_{dtype}@{budget:g}"
        fiited = emb_opt.FiitedEmbeddingBagCollection(tables, budget, chunk_size=config.chunk_size, learning_rate=0.05,
                                                      warmup_steps=warm - 2, resize_interval=10**6,
                                                      pressure_resize_steps=0,  # one resize in the warm-up, none timed
                                                      weight_dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            results[name] = time_steps(lambda i: fiited(batches[i]).values().pow(2).sum().backward(), warm,
                                       config.steps, name)
        del fiited
    df = pd.DataFrame([{"method": name, "ms_per_step": round(ms, 2),
                        "vs_ebc_dense": round(ms / results["ebc_dense_adagrad"], 3),
                        "vs_fused_tbe": round(ms / results["fused_tbe_rowwise"], 3),
                        "batch_size": config.batch_size, "dim": config.embedding_dim, "chunk_size": config.chunk_size,
                        "threads": torch.get_num_threads()} for name, ms in results.items()])
    print(df.to_string(index=False))
    os.makedirs(os.path.dirname(config.out) or ".", exist_ok=True)
    df.to_csv(config.out, mode="a", header=not os.path.exists(config.out), index=False)
    return df


if __name__ == "__main__":
    main()
