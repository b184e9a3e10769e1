"""Where the embedding memory went: a per-table byte report of FIITED, dense and hashed collections.

``memory_report(obj)`` takes a ``FiitedEmbeddingBagCollection``, a TorchRec ``EmbeddingBagCollection`` /
``FusedEmbeddingBagCollection``, a ``hashing.HashedEmbeddingBagCollection``, any module containing them (a
DLRM: one block of rows per collection, ``module`` = its qualified name), or a state_dict of any of these
(``model.state_dict()``, or ``torch.load`` of a checkpoint). It returns one row per table, plus per collection
a ``(shared)`` row and a ``TOTAL`` row (and an overall ``TOTAL`` with module ``(all)`` when there are several
collections). Why this shape: the product promise is "X bytes instead of Y"; a user must be able to see
which table pays for what, and the numbers must add up to what the store really allocated.

FIITED accounting. A table pays, per live chunk, for its slot: the chunk (``pool_weights``), its optimizer
state (``pool_state``, Adagrad) and its utility (``slot_utility``); and per stored row for its index entry
(``entry_keys``, ``entry_first``, ``entry_chunks``), its optimizer state (``entry_state``, row-wise Adagrad) and its
share of the hash buckets (``floor(rows_t x bucket bytes / entries)``).
Everything else -- free slots and entries, holes left by rows that grew, the buckets' remainder, the count-min
sketch, per-table metadata, counters -- is the ``(shared)`` row, so the
rows of a collection add up exactly to ``store.total_bytes()`` (every buffer of the store), category by
category to ``store.allocated_bytes()``. ``full_bytes`` is the dense fp32 table plus the dense optimizer
state of the collection's optimizer (FIITED: its own; dense / hashed: the ``optimizer`` argument, or the
fused optimizer's real state for a ``FusedEmbeddingBagCollection``); ``compression_ratio = full / total``.

``dims_histogram`` counts *virtual* rows by the dimension they read: ``"0:9520 16:300 32:120"`` (dim 0 = rows
without any chunk). A hashed table's virtual rows all read a full (shared) vector; ``physical_rows`` says how
many vectors are stored. From a bare state_dict a hashed collection is indistinguishable from a dense EBC
(its transform has no state): it is reported as the dense ``<prefix>.ebc``.

CLI: ``python -m emb_opt.report CHECKPOINT [--out DIR] [--optimizer NAME]`` (see ``--help``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from cuda_ext.layout import key_table
from emb_opt.budget import full_table_bytes
from emb_opt.config import OptimizerType, parse_optimizer
from emb_opt.store_checkpoint import LAYOUT_VERSION

if TYPE_CHECKING:  # pandas is imported when a report is built, not with emb_opt
    import pandas

COLUMNS = [
    "module", "table", "kind", "optimizer", "virtual_rows", "physical_rows", "embedding_dim", "chunk_size",
    "live_rows", "live_chunks", "mean_dim", "weights_bytes", "optimizer_bytes", "index_bytes", "utility_bytes",
    "metadata_bytes", "total_bytes", "full_bytes", "compression_ratio", "dims_histogram",
]  # fmt: skip
BYTE_COLUMNS = ["weights_bytes", "optimizer_bytes", "index_bytes", "utility_bytes", "metadata_bytes"]
INT_COLUMNS = ["virtual_rows", "physical_rows", "embedding_dim", "chunk_size", "live_rows", "live_chunks",
               *BYTE_COLUMNS, "total_bytes", "full_bytes"]  # fmt: skip
MAIN_COLUMNS = ["module", "table", "kind", "virtual_rows", "live_rows", "mean_dim", "weights_bytes",
                "optimizer_bytes", "index_bytes", "utility_bytes", "metadata_bytes", "total_bytes", "full_bytes",
                "compression_ratio"]  # fmt: skip
SHARED, TOTAL, ALL = "(shared)", "TOTAL", "(all)"
CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict")
# VhpiChunkStore buffers by ``allocated_bytes`` category; any other buffer of the store counts as metadata
_CATEGORY = {"pool_weights": "weights", "pool_state": "optimizer", "entry_state": "optimizer",
             "entry_keys": "index", "entry_first": "index",
             "entry_chunks": "index", "hash_buckets": "index", "slot_utility": "utility", "sketch": "utility"}  # fmt: skip
_DENSE_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)embedding_bags\.(?P<table>[^.]+)\.weight$")
_STORE_KEY = "store.entry_keys"


@dataclass
class CollectionReport:
    """The rows (dicts keyed by ``COLUMNS``) of one collection, and its FIITED telemetry if any."""

    module: str
    kind: str
    rows: List[Dict[str, Any]]
    telemetry: List[Dict[str, Any]] = field(default_factory=list)


def _nbytes(t: Any) -> int:
    return int(t.numel()) * torch.empty((), dtype=t.dtype).element_size()


def _row(module: str, table: str, kind: str, optimizer: str, **values: Any) -> Dict[str, Any]:
    row: Dict[str, Any] = {c: None for c in COLUMNS}
    row.update(module=module, table=table, kind=kind, optimizer=optimizer, dims_histogram="")
    for c in BYTE_COLUMNS:
        row[c] = 0
    row.update(values)
    row["total_bytes"] = sum(int(row[c]) for c in BYTE_COLUMNS)
    full, total = row.get("full_bytes"), row["total_bytes"]
    if full is not None:
        row["compression_ratio"] = full / total if total else math.inf
    return row


def format_histogram(counts: Mapping[int, int]) -> str:
    """``{0: 9520, 16: 300}`` -> ``"0:9520 16:300"`` (dims ascending, empty bins left out)."""
    return " ".join(f"{d}:{n}" for d, n in sorted(counts.items()) if n)


def parse_histogram(text: Any) -> Dict[int, int]:
    """Inverse of ``format_histogram`` (NaN / empty -> {})."""
    if not isinstance(text, str) or not text.strip():
        return {}
    return {int(d): int(n) for d, n in (item.split(":") for item in text.split())}


def sum_rows(module: str, table: str, kind: str, optimizer: str, parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """A row adding up ``parts`` (a collection's tables and shared row, or several collections' totals)."""
    def total(column: str) -> int:
        return sum(int(r[column] or 0) for r in parts)

    hist: Counter = Counter()
    for r in parts:
        hist.update(parse_histogram(r["dims_histogram"]))
    live_rows = total("live_rows")
    sizes = {r["chunk_size"] for r in parts if r["chunk_size"] is not None}
    return _row(
        module, table, kind, optimizer,
        virtual_rows=total("virtual_rows"), physical_rows=total("physical_rows"),
        chunk_size=sizes.pop() if len(sizes) == 1 else None, live_rows=live_rows, live_chunks=total("live_chunks"),
        mean_dim=sum(float(r["mean_dim"] or 0) * int(r["live_rows"] or 0) for r in parts) / max(1, live_rows),
        full_bytes=total("full_bytes"), dims_histogram=format_histogram(hist),
        **{c: total(c) for c in BYTE_COLUMNS},
    )  # fmt: skip


# ---- FIITED ---------------------------------------------------------------------------------------------
def fiited_rows(module: str, buffers: Mapping[str, torch.Tensor], tables: Sequence[Dict[str, Any]],
                chunk_size: int, optimizer: OptimizerType, kind: str = "fiited",
                layout_bytes: int = 0) -> List[Dict[str, Any]]:
    """Rows of one FIITED store from its buffers (``store.named_buffers()`` or a state_dict's ``store.*``).

    ``tables``: dicts with ``name``, ``num_embeddings``, ``embedding_dim`` in the store's table order;
    ``kind``: "fiited", or "rowprune" for the row-pruning baseline (the same store with one chunk per row);
    ``layout_bytes``: the collection's own buffers (its feature layout), shared metadata.
    """
    entry_keys, entry_chunks = buffers["entry_keys"].detach().cpu(), buffers["entry_chunks"].detach().cpu()
    stored = entry_chunks > 0
    row_keys, row_chunks = entry_keys[stored], entry_chunks[stored].to(torch.int64)
    table_of = key_table(row_keys)
    capacity = max(1, buffers["pool_weights"].shape[0])
    row_capacity = max(1, entry_keys.numel())
    cat_total: Counter = Counter()
    for name, tensor in buffers.items():
        cat_total[_CATEGORY.get(name, "metadata")] += _nbytes(tensor)
    cat_total["metadata"] += layout_bytes
    per_slot = {
        "weights": _nbytes(buffers["pool_weights"]) // capacity,
        "optimizer": _nbytes(buffers["pool_state"]) // capacity,
        "utility": _nbytes(buffers["slot_utility"]) // capacity,
    }
    per_row = sum(_nbytes(buffers[n]) for n in ("entry_keys", "entry_first", "entry_chunks")) // row_capacity
    state_per_row = _nbytes(buffers["entry_state"]) // row_capacity
    bucket_bytes = _nbytes(buffers["hash_buckets"])
    rows: List[Dict[str, Any]] = []
    opt = optimizer.value
    for t, spec in enumerate(tables):
        per_row_chunks = row_chunks[table_of == t]
        live, stored_rows = int(per_row_chunks.sum()), int(per_row_chunks.numel())
        hist = Counter({int(k) * chunk_size: int(n) for k, n in zip(*torch.unique(per_row_chunks, return_counts=True))})
        virtual, dim = int(spec["num_embeddings"]), int(spec["embedding_dim"])
        hist[0] = virtual - stored_rows
        rows.append(_row(
            module, str(spec["name"]), kind, opt,
            virtual_rows=virtual, physical_rows=stored_rows, embedding_dim=dim, chunk_size=chunk_size,
            live_rows=stored_rows, live_chunks=live, mean_dim=live * chunk_size / stored_rows if stored_rows else 0.0,
            weights_bytes=live * per_slot["weights"],
            optimizer_bytes=live * per_slot["optimizer"] + stored_rows * state_per_row,
            index_bytes=stored_rows * per_row + stored_rows * bucket_bytes // row_capacity,
            utility_bytes=live * per_slot["utility"], metadata_bytes=0,
            full_bytes=full_table_bytes(virtual, dim, optimizer), dims_histogram=format_histogram(hist),
        ))  # fmt: skip
    used = {c: sum(r[f"{c}_bytes"] for r in rows) for c in ("weights", "optimizer", "index", "utility", "metadata")}
    rows.append(_row(module, SHARED, kind, opt, live_chunks=0,
                     **{f"{c}_bytes": cat_total[c] - used[c] for c in used}))
    rows.append(sum_rows(module, TOTAL, kind, opt, rows))
    return rows


def _fiited_from_module(name: str, module: nn.Module) -> CollectionReport:
    tables = [{"name": t.name, "num_embeddings": t.num_embeddings, "embedding_dim": t.embedding_dim}
              for t in module.embedding_bag_configs()]
    config = module.config
    kind = module.report_kind
    rows = fiited_rows(name, dict(module.store.named_buffers()), tables, config.chunk_size, config.optimizer, kind,
                       module.memory_bytes() - module.store.total_bytes())
    return CollectionReport(name, kind, rows, list(module.telemetry))


def _fiited_from_state_dict(prefix: str, sd: Mapping[str, Any]) -> CollectionReport:
    store_prefix = prefix + "store."
    buffers = {k[len(store_prefix):]: v for k, v in sd.items()
               if k.startswith(store_prefix) and "." not in k[len(store_prefix):] and isinstance(v, torch.Tensor)}
    store = sd.get(store_prefix + "_extra_state")
    if not isinstance(store, Mapping) or store.get("layout_version") != LAYOUT_VERSION:
        found = store.get("layout_version") if isinstance(store, Mapping) else None
        raise ValueError(f"{store_prefix}_extra_state: the checkpoint's store layout_version is {found!r}; this "
                         f"version reads layout_version {LAYOUT_VERSION} only")
    extra = sd.get(prefix + "_extra_state")
    extra = extra if isinstance(extra, Mapping) else {}
    chunk_size = int(store["chunk_size"])
    optimizer = parse_optimizer(store["optimizer"])
    tables = extra.get("tables")
    if not tables:
        rows_, chunks = buffers["table_rows"].tolist(), buffers["table_chunks"].tolist()
        tables = [{"name": f"table{i}", "num_embeddings": r, "embedding_dim": k * chunk_size}
                  for i, (r, k) in enumerate(zip(rows_, chunks))]
    name = prefix[:-1] if prefix.endswith(".") else prefix
    kind = str(extra.get("kind") or "fiited")
    rows = fiited_rows(name, buffers, tables, chunk_size, optimizer, kind, int(extra.get("layout_bytes") or 0))
    return CollectionReport(name, kind, rows, list(extra.get("telemetry") or []))


# ---- dense and hashed -------------------------------------------------------------------------------------
def dense_rows(module: str, kind: str, weights: Mapping[str, Any], optimizer: OptimizerType,
               state_bytes: Optional[Mapping[str, int]] = None, optimizer_name: Optional[str] = None,
               virtual_rows: Optional[Mapping[str, int]] = None) -> List[Dict[str, Any]]:
    """Rows of a dense (or hashed) collection: ``weights`` = table -> its ``[rows, dim]`` weight tensor.

    ``state_bytes``: the real optimizer state bytes per table (fused collections), else from ``optimizer``.
    ``virtual_rows``: hashed tables' raw id range (the rows a full table would have).
    """
    rows: List[Dict[str, Any]] = []
    label = optimizer_name or optimizer.value
    for table, w in weights.items():
        physical, dim = int(w.shape[0]), int(w.shape[1])
        element = _nbytes(w) // max(1, int(w.numel()))
        state = (state_bytes or {}).get(table)
        state = physical * optimizer.dense_state_bytes_per_row(dim) if state is None else int(state)
        virtual = int((virtual_rows or {}).get(table, physical))
        state_per_row = state / physical if physical else optimizer.dense_state_bytes_per_row(dim)
        rows.append(_row(
            module, table, kind, label, virtual_rows=virtual, physical_rows=physical, embedding_dim=dim,
            chunk_size=dim, live_rows=virtual, live_chunks=physical, mean_dim=float(dim),
            weights_bytes=_nbytes(w), optimizer_bytes=state,
            full_bytes=int(virtual * (element * dim + state_per_row)),
            dims_histogram=format_histogram({dim: virtual}),
        ))  # fmt: skip
    rows.append(_row(module, SHARED, kind, label, live_chunks=0))
    rows.append(sum_rows(module, TOTAL, kind, label, rows))
    return rows


def _fused_optimizer(module: nn.Module, fallback: OptimizerType) -> Tuple[OptimizerType, str, Dict[str, int]]:
    """A fused collection's optimizer (type, label) and its real state bytes per table."""
    kind = getattr(module, "_optimizer_type", None)
    label = getattr(kind, "__name__", None) or fallback.value
    try:
        optimizer = parse_optimizer(kind)
    except ValueError:
        optimizer = fallback
    state: Counter = Counter()
    try:
        for values in module.fused_optimizer().state.values():
            for key, tensor in values.items():
                if isinstance(tensor, torch.Tensor):
                    state[str(key).split(".")[0]] += _nbytes(tensor)
    except (AttributeError, RuntimeError):
        return optimizer, label, {}
    if not state and optimizer is not OptimizerType.SGD:
        return optimizer, label, {}
    return optimizer, label, {t.name: state.get(t.name, 0) for t in module.embedding_bag_configs()}


def _collection_kind(module: nn.Module) -> Optional[str]:
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection

    from emb_opt.fiited_ebc import FiitedEmbeddingBagCollection

    if isinstance(module, FiitedEmbeddingBagCollection):
        return "fiited"
    try:
        from hashing.hashed_ebc import HashedEmbeddingBagCollection
    except ImportError:  # the hashing package is optional for the report
        HashedEmbeddingBagCollection = ()  # type: ignore[assignment,misc]
    if isinstance(module, HashedEmbeddingBagCollection):
        return "hashed"
    if isinstance(module, FusedEmbeddingBagCollection):
        return "fused"
    if isinstance(module, EmbeddingBagCollection):
        return "dense"
    return None


def _from_module(root: nn.Module, optimizer: OptimizerType) -> List[CollectionReport]:
    found: List[CollectionReport] = []
    inside: List[str] = []
    for name, module in root.named_modules():
        if any(p == "" or name.startswith(p + ".") for p in inside):
            continue  # do not descend into a found collection (a hashed one holds an EBC)
        kind = _collection_kind(module)
        ebc = module.ebc if kind == "hashed" else module
        inner = _collection_kind(ebc) if kind == "hashed" else kind
        if kind is None or inner not in ("fiited", "dense", "fused") or (kind == "hashed" and inner == "fiited"):
            continue  # not a collection, or hashing in front of a FIITED one: that one is found on its own
        inside.append(name)
        if kind == "fiited":
            found.append(_fiited_from_module(name, module))
            continue
        weights = _dense_weights(ebc.state_dict()).get("", {})
        virtual = {t.name: t.num_embeddings for t in module.virtual_configs} if kind == "hashed" else None
        opt, label, state = (_fused_optimizer(ebc, optimizer) if inner == "fused" else (optimizer, None, None))
        row_kind = "hashed" if kind == "hashed" else "dense"
        found.append(CollectionReport(name, row_kind, dense_rows(name, row_kind, weights, opt, state, label, virtual)))
    return found


def _dense_weights(sd: Mapping[str, Any], exclude: Sequence[str] = ()) -> Dict[str, Dict[str, Any]]:
    """prefix -> {table: weight} of every ``<prefix>embedding_bags.<table>.weight`` in a state_dict."""
    out: Dict[str, Dict[str, Any]] = {}
    for key, value in sd.items():
        match = _DENSE_KEY.match(key) if isinstance(key, str) else None
        if match and hasattr(value, "shape") and len(value.shape) == 2 and match["prefix"] not in exclude:
            out.setdefault(match["prefix"], {})[match["table"]] = value
    return out


def _from_state_dict(sd: Mapping[str, Any], optimizer: OptimizerType) -> List[CollectionReport]:
    fiited = [k[: -len(_STORE_KEY)] for k in sd if isinstance(k, str) and k.endswith(_STORE_KEY)]
    found = [_fiited_from_state_dict(p, sd) for p in fiited]
    for prefix, weights in _dense_weights(sd, fiited).items():
        name = prefix[:-1] if prefix.endswith(".") else prefix
        found.append(CollectionReport(name, "dense", dense_rows(name, "dense", weights, optimizer)))
    return found


def unwrap_checkpoint(obj: Any) -> Any:
    """A module, or a state_dict; dicts with a ``model`` / ``state_dict`` / ``model_state_dict`` entry unwrap."""
    while isinstance(obj, Mapping) and not isinstance(obj, nn.Module):
        if any(isinstance(k, str) and (k.endswith(_STORE_KEY) or _DENSE_KEY.match(k)) for k in obj):
            return obj
        inner = next((obj[k] for k in CHECKPOINT_KEYS if k in obj), None)
        if inner is None:
            return obj
        obj = inner
    return obj


def collect(obj: Any, optimizer: Any = "rowwise_adagrad") -> List[CollectionReport]:
    """Every embedding collection of ``obj`` (module, state_dict or checkpoint dict) with its rows."""
    opt = parse_optimizer(optimizer)
    obj = unwrap_checkpoint(obj)
    if isinstance(obj, nn.Module):
        found = _from_module(obj, opt)
    elif isinstance(obj, Mapping):
        found = _from_state_dict(obj, opt)
    else:
        raise TypeError(f"memory_report takes a module or a state_dict, got {type(obj).__name__}")
    if not found:
        raise ValueError(
            f"no embedding collections found in this {type(obj).__name__}: expected a FiitedEmbeddingBagCollection, "
            "a TorchRec (Fused)EmbeddingBagCollection, a HashedEmbeddingBagCollection, a module containing one, or "
            "a state_dict with '<prefix>.store.entry_keys' or '<prefix>.embedding_bags.<table>.weight' keys"
        )
    return found


def memory_report(obj: Any, optimizer: Any = "rowwise_adagrad") -> "pandas.DataFrame":
    """Per-table memory of every embedding collection in ``obj`` (see the module docstring).

    ``optimizer`` ("rowwise_adagrad", "adagrad", "sgd") sets the optimizer state of dense and hashed tables
    whose optimizer the report cannot read (FIITED collections and fused EBCs report their own).
    """
    return report_frame(collect(obj, optimizer))


def report_frame(collections: Sequence[CollectionReport]) -> "pandas.DataFrame":
    import pandas as pd

    rows = [r for c in collections for r in c.rows]
    if len(collections) > 1:
        kinds = {c.kind for c in collections}
        rows.append(sum_rows(ALL, TOTAL, kinds.pop() if len(kinds) == 1 else "mixed", "",
                             [r for r in rows if r["table"] == TOTAL]))
    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in INT_COLUMNS:
        df[c] = df[c].astype("Int64")
    df["mean_dim"] = df["mean_dim"].astype(float)
    df["compression_ratio"] = df["compression_ratio"].astype(float)
    return df


# ---- CLI ------------------------------------------------------------------------------------------------
_HELP = """\
Report where the embedding memory of a checkpoint went: per table weights, optimizer state, index overhead
and utility bytes, bytes before (full dense tables) and after, compression ratio, and the histogram of
per-row dimensions. Writes memory_report.csv, memory_report.json and memory_report.png, and, when a FIITED
collection carries telemetry, telemetry.png (telemetry_<module>.png for several), telemetry.json, telemetry.csv.

CHECKPOINT may be a torch.save'd model or module, a state_dict (model.state_dict()), or a dict holding one
under a 'model', 'state_dict' or 'model_state_dict' key. It is loaded with torch.load(weights_only=False),
which UNPICKLES the file and can run arbitrary code: only open checkpoints you trust. A whole pickled module
needs its classes importable (run from the project root)."""


def _optimizer_argument(text: str) -> str:
    try:
        return parse_optimizer(text).value
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emb_opt.report", description=_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="file written by torch.save (see above)")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--optimizer", default="rowwise_adagrad", type=_optimizer_argument,
                   help="optimizer state assumed for dense/hashed tables: rowwise_adagrad (default), adagrad, sgd")
    return p


def _fail(message: str) -> int:
    print(f"python -m emb_opt.report: error: {message}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        return _fail(f"checkpoint not found: {args.checkpoint}")
    try:
        parse_optimizer(args.optimizer)
        obj = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 -- any load failure is the user's file, reported plainly
        return _fail(f"cannot load {args.checkpoint}: {type(error).__name__}: {error}")
    try:
        collections = collect(obj, args.optimizer)
    except (TypeError, ValueError) as error:
        return _fail(f"{args.checkpoint}: {error}")
    from emb_opt.report_plots import plot_memory_report, plot_telemetry, telemetry_frame

    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out, exist_ok=True)
    df = report_frame(collections)
    written = [os.path.join(out, f"memory_report.{ext}") for ext in ("csv", "json", "png")]
    df.to_csv(written[0], index=False)
    df.to_json(written[1], orient="records", indent=2)
    plot_memory_report(df, written[2])
    with_telemetry = [c for c in collections if c.telemetry]
    telemetry = {c.module: c.telemetry for c in with_telemetry}
    for c in with_telemetry:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", c.module) or "root"
        name = "telemetry.png" if len(with_telemetry) == 1 else f"telemetry_{safe}.png"
        written.append(plot_telemetry(c.telemetry, os.path.join(out, name), chunk_size=c.rows[0]["chunk_size"]))
    if telemetry:
        with open(os.path.join(out, "telemetry.json"), "w") as f:
            json.dump(telemetry, f, indent=1, default=float)
        telemetry_frame(telemetry).to_csv(os.path.join(out, "telemetry.csv"), index=False)
        written += [os.path.join(out, "telemetry.json"), os.path.join(out, "telemetry.csv")]
    import pandas as pd

    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_rows", 500):
        print(df[MAIN_COLUMNS].to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print("\nwrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
