"""``memory_report``: find the embedding collections of a module, a state_dict or a checkpoint dict, and report
each (``emb_opt.report.accounting``)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from emb_opt.config import OptimizerType, parse_optimizer
from emb_opt.inference_store import INFERENCE_KIND, INFERENCE_LAYOUT_VERSION, INFERENCE_STATE, TABLE_STATE
from emb_opt.report.accounting import dense_rows, fiited_rows, fused_optimizer_state
from emb_opt.report.rows import CollectionReport, nbytes, report_frame
from emb_opt.store_checkpoint import LAYOUT_VERSION, STORE_STATE

if TYPE_CHECKING:  # pandas is imported when a report is built, not with emb_opt
    import pandas

CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict")
_DENSE_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)embedding_bags\.(?P<table>[^.]+)\.weight$")
_STORE_KEY = "store.entry_keys"
_TRANSFORMED = ("hashed", "freqvocab")  # a KJT transform in front of a dense or fused collection



def _fiited_from_module(name: str, module: nn.Module) -> CollectionReport:
    tables = [{"name": t.name, "num_embeddings": t.num_embeddings, "embedding_dim": t.embedding_dim}
              for t in module.embedding_bag_configs()]
    config = module.config
    kind = module.report_kind
    rows = fiited_rows(name, dict(module.store.named_buffers()), tables, config.chunk_size, config.optimizer, kind,
                       module.memory_bytes() - module.store.total_bytes())
    return CollectionReport(name, kind, rows, list(module.telemetry))


def _inference_rows(name: str, buffers: Mapping[str, Any], tables: Any, chunk_size: int,
                    layout_bytes: int) -> CollectionReport:
    """An exported FIITED collection (``emb_opt.inference``): weights, index and metadata; its full bytes are
    the dense fp32 tables (no optimizer state: nothing trains them)."""
    rows = fiited_rows(name, buffers, tables, chunk_size, OptimizerType.SGD, INFERENCE_KIND, layout_bytes,
                       optimizer_label="none")
    return CollectionReport(name, INFERENCE_KIND, rows)


def _inference_from_module(name: str, module: nn.Module) -> CollectionReport:
    tables = [{"name": t.name, "num_embeddings": t.num_embeddings, "embedding_dim": t.embedding_dim}
              for t in module.embedding_bag_configs()]
    return _inference_rows(name, dict(module.store.named_buffers()), tables, module.store.chunk_size,
                           module.memory_bytes() - module.store.total_bytes())


def _fiited_from_state_dict(prefix: str, sd: Mapping[str, Any]) -> CollectionReport:
    store_prefix = prefix + "store."
    buffers = {k[len(store_prefix):]: v for k, v in sd.items()
               if k.startswith(store_prefix) and "." not in k[len(store_prefix):] and isinstance(v, torch.Tensor)}
    store = sd.get(store_prefix + "_extra_state")
    if isinstance(store, Mapping) and store.get("kind") == INFERENCE_KIND:
        return _inference_from_state_dict(prefix, sd, buffers, store)
    if not isinstance(store, Mapping) or store.get("layout_version") != LAYOUT_VERSION:
        found = store.get("layout_version") if isinstance(store, Mapping) else None
        raise ValueError(f"{store_prefix}_extra_state: the checkpoint's store layout_version is {found!r}; this "
                         f"version reads layout_version {LAYOUT_VERSION} only")
    needed = STORE_STATE + ("table_rows", "table_chunks")
    missing = [store_prefix + n for n in needed if n not in buffers]
    if missing:
        raise ValueError(f"{', '.join(missing)}: not in the checkpoint, which holds the rest of a FIITED store; "
                         "a store is reported whole or not at all")
    flat = [store_prefix + n for n in ("entry_keys", "entry_chunks", "hash_buckets", "table_rows", "table_chunks")
            if buffers[n].dim() != 1]
    if flat or buffers["pool_weights"].dim() != 2:
        raise ValueError(f"{', '.join(flat) or store_prefix + 'pool_weights'}: not shaped as a FIITED store's buffer")
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


def _inference_from_state_dict(prefix: str, sd: Mapping[str, Any], buffers: Mapping[str, Any],
                               store: Mapping[str, Any]) -> CollectionReport:
    store_prefix = prefix + "store."
    if store.get("layout_version") != INFERENCE_LAYOUT_VERSION:
        raise ValueError(f"{store_prefix}_extra_state: the checkpoint's inference layout_version is "
                         f"{store.get('layout_version')!r}; this version reads layout_version {INFERENCE_LAYOUT_VERSION} only")
    missing = [store_prefix + n for n in INFERENCE_STATE + TABLE_STATE if n not in buffers]
    if missing:
        raise ValueError(f"{', '.join(missing)}: not in the checkpoint, which holds the rest of a FIITED inference "
                         "store; a store is reported whole or not at all")
    extra = sd.get(prefix + "_extra_state")
    extra = extra if isinstance(extra, Mapping) else {}
    chunk_size = int(store["chunk_size"])
    tables = extra.get("tables") or [
        {"name": f"table{i}", "num_embeddings": r, "embedding_dim": k * chunk_size}
        for i, (r, k) in enumerate(zip(buffers["table_rows"].tolist(), buffers["table_chunks"].tolist()))]
    name = prefix[:-1] if prefix.endswith(".") else prefix
    return _inference_rows(name, buffers, tables, chunk_size, int(extra.get("layout_bytes") or 0))


def _collection_kind(module: nn.Module) -> Optional[str]:
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection

    from emb_opt.fiited_ebc import FiitedEmbeddingBagCollection
    from emb_opt.inference import FiitedInferenceCollection
    from emb_opt.sharding import ShardedFiitedEmbeddingBagCollection

    if isinstance(module, (FiitedEmbeddingBagCollection, ShardedFiitedEmbeddingBagCollection)):
        return "fiited"
    if isinstance(module, FiitedInferenceCollection):
        return INFERENCE_KIND
    try:
        from hashing.hashed_ebc import HashedEmbeddingBagCollection
    except ImportError:  # the hashing package is optional for the report
        HashedEmbeddingBagCollection = ()  # type: ignore[assignment,misc]
    if isinstance(module, HashedEmbeddingBagCollection):
        return "hashed"
    try:
        from hashing.frequency_vocabulary import FrequencyVocabularyEmbeddingBagCollection
    except ImportError:
        FrequencyVocabularyEmbeddingBagCollection = ()  # type: ignore[assignment,misc]
    if isinstance(module, FrequencyVocabularyEmbeddingBagCollection):
        return "freqvocab"
    if isinstance(module, FusedEmbeddingBagCollection):
        return "fused"
    if isinstance(module, EmbeddingBagCollection):
        return "dense"
    return None


def _local_fiited(module: nn.Module) -> Optional[nn.Module]:
    """The FIITED collection of ``module``: itself, or a sharded one's collection of this rank's tables."""
    from emb_opt.sharding import ShardedFiitedEmbeddingBagCollection

    if isinstance(module, ShardedFiitedEmbeddingBagCollection):
        return module.local if module._has_local else None
    return module


def _from_module(root: nn.Module, optimizer: OptimizerType) -> List[CollectionReport]:
    found: List[CollectionReport] = []
    inside: List[str] = []
    for name, module in root.named_modules():
        if any(p == "" or name.startswith(p + ".") for p in inside):
            continue  # do not descend into a found collection (a hashed one holds an EBC)
        kind = _collection_kind(module)
        transformed = kind in _TRANSFORMED
        ebc = module.collection if transformed else module
        inner = _collection_kind(ebc) if transformed else kind
        fiited_inner = inner in ("fiited", INFERENCE_KIND)
        if kind is None or not (fiited_inner or inner in ("dense", "fused")) or (transformed and fiited_inner):
            continue  # not a collection, or hashing in front of a FIITED one: that one is found on its own
        inside.append(name)
        if kind == INFERENCE_KIND:
            found.append(_inference_from_module(name, module))
            continue
        if kind == "fiited":
            local = _local_fiited(module)
            if local is not None:  # a sharded collection reports this rank's tables (none: nothing here)
                found.append(_fiited_from_module(name, local))
            continue
        weights = _dense_weights(ebc.state_dict()).get("", {})
        virtual = {t.name: t.num_embeddings for t in module.virtual_configs} if transformed else None
        opt, label, state = (fused_optimizer_state(ebc, optimizer) if inner == "fused" else (optimizer, None, None))
        row_kind = kind if transformed else "dense"
        index, shared = _map_bytes(module) if kind == "freqvocab" else ({}, 0)
        found.append(CollectionReport(name, row_kind, dense_rows(name, row_kind, weights, opt, state, label, virtual,
                                                                 index, shared)))
    return found


def _map_bytes(module: nn.Module) -> Tuple[Dict[str, int], int]:
    """A frequency-vocabulary collection's id -> row map: bytes per table, and those of no one table."""
    vocabulary = module.vocabulary
    per_table = vocabulary.vocabulary_bytes()
    return per_table, vocabulary.memory_bytes() - sum(per_table.values())


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
        vocabularies = _vocabulary_buffers(sd, prefix)
        if not vocabularies:
            found.append(CollectionReport(name, "dense", dense_rows(name, "dense", weights, optimizer)))
            continue
        index: Dict[str, int] = {}  # vocabulary i is the i-th table's when its rows are its ids + the OOV row
        for (table, w), ids in zip(weights.items(), vocabularies):
            if int(w.shape[0]) == int(ids.numel()) + 1:
                index[table] = nbytes(ids)
        shared = sum(nbytes(v) for v in vocabularies) - sum(index.values())
        found.append(CollectionReport(name, "freqvocab", dense_rows(name, "freqvocab", weights, optimizer,
                                                                    index_bytes=index, shared_index_bytes=shared)))
    return found


def _vocabulary_buffers(sd: Mapping[str, Any], prefix: str) -> List[Any]:
    """The id arrays (``<outer>.transforms.<n>.vocabulary_<i>``, in ``i`` order) of the frequency vocabulary in
    front of the dense collection at ``prefix`` (``<outer>.collection.``); [] when there is none."""
    if not prefix.endswith("collection."):
        return []
    outer = prefix[: -len("collection.")]
    pattern = re.compile(re.escape(outer) + r"transforms\.\d+\.vocabulary_(?P<index>\d+)$")
    found = {int(m["index"]): v for k, v in sd.items()
             if isinstance(k, str) and (m := pattern.match(k)) and hasattr(v, "shape")}
    return [found[i] for i in sorted(found)]


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


def collect(obj: Any, optimizer: Any = "rowwise_adagrad", allow_empty: bool = False) -> List[CollectionReport]:
    """Every embedding collection of ``obj`` (module, state_dict or checkpoint dict) with its rows."""
    opt = parse_optimizer(optimizer)
    obj = unwrap_checkpoint(obj)
    if isinstance(obj, nn.Module):
        found = _from_module(obj, opt)
    elif isinstance(obj, Mapping):
        found = _from_state_dict(obj, opt)
    else:
        raise TypeError(f"memory_report takes a module or a state_dict, got {type(obj).__name__}")
    if not found and not allow_empty:
        raise ValueError(
            f"no embedding collections found in this {type(obj).__name__}: expected a FiitedEmbeddingBagCollection, "
            "a TorchRec (Fused)EmbeddingBagCollection, a Hashed- or FrequencyVocabularyEmbeddingBagCollection, "
            "a module containing one, or "
            "a state_dict with '<prefix>.store.entry_keys' or '<prefix>.embedding_bags.<table>.weight' keys"
        )
    return found


def memory_report(obj: Any, optimizer: Any = "rowwise_adagrad", gather: bool = False) -> Optional["pandas.DataFrame"]:
    """Per-table memory of every embedding collection in ``obj`` (see the package docstring).

    ``optimizer`` ("rowwise_adagrad", "adagrad", "sgd") sets the optimizer state of dense and hashed tables
    whose optimizer the report cannot read (FIITED collections and fused EBCs report their own). Under
    ``DistributedModelParallel`` each rank reports its own FIITED tables (its shard's store, or its rank-local
    checkpoint); ``gather=True`` collects every rank's rows on rank 0 (modules named ``<module>[rank r]``, one
    overall TOTAL) and returns None on the other ranks -- a collective: every rank must call it.
    """
    if not gather:
        return report_frame(collect(obj, optimizer))
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("memory_report(gather=True) gathers over torch.distributed ranks; the process group is not "
                         "initialised (call it on every rank of a DistributedModelParallel run)")
    mine = [(c.module, c.kind, c.rows, c.telemetry) for c in collect(obj, optimizer, allow_empty=True)]
    rank = dist.get_rank()
    gathered: Optional[List[Any]] = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if gathered is None:
        return None
    merged = [CollectionReport(f"{module}[rank {r}]", kind, [dict(row, module=f"{module}[rank {r}]") for row in rows],
                               telemetry)
              for r, part in enumerate(gathered) for module, kind, rows, telemetry in part]
    if not merged:
        raise ValueError("no embedding collections found on any rank")
    return report_frame(merged)
