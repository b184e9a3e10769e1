"""The embedding methods the Criteo comparison trains, built at equal bytes from one list of tables.

Method names (``--methods``): ``full``, ``hash``, ``rowprune``, ``fiited``; every method but ``full`` is run at
each budget of ``--budgets`` (fractions of the full tables' bytes, optimizer state included):
* ``full``: TorchRec ``FusedEmbeddingBagCollection`` (FBGEMM TBE, fused row-wise Adagrad) -- the reference;
* ``hash@X``: random hashing, every table capped at one row count so that ``X`` of all rows remain (DLRM's
  ``--max-ind-range``; same bytes per row as full, so ``X`` of the bytes), in front of the same fused collection;
* ``rowprune@X``: whole-row pruning by access counts (ITEP-style), ``emb_opt.RowPruningEmbeddingBagCollection``;
* ``fiited@X``: ``emb_opt.FiitedEmbeddingBagCollection`` (chunks of ``chunk_size``, freq x grad utility);
* ``sid@X``: as ``hash@X``, but the item feature (the one with content embeddings) is turned into semantic-ID
  prefix-ngram tokens in the same number of rows instead of being hashed at random;
* ``fiited_sid@X``: FIITED at ``X`` of the full bytes, the item feature read through its prefix-ngram tokens
  (the token space as virtual rows; FIITED decides which tokens earn chunks).
All use the same embedding optimizer (row-wise Adagrad, same learning rate). The bytes reported are what each
collection allocates (for FIITED and row pruning: pool, optimizer state, hash index, utilities, sketch).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad

from emb_opt import FiitedEmbeddingBagCollection
from emb_opt.budget import total_full_bytes
from emb_opt.config import OptimizerType
from emb_opt.hashed_init import hashed_dense_init
from emb_opt.row_pruning import RowPruningEmbeddingBagCollection
from hashing import HashedEmbeddingBagCollection
from hashing.hashed_ebc import HashingTransform, hashed_table_configs
from semantic_id import SemanticIdTransform
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

METHOD_KINDS = ("full", "hash", "rowprune", "fiited", "sid", "fiited_sid")
SID_KINDS = ("sid", "fiited_sid")


@dataclass
class SemanticIds:
    """Codes of the item feature's ids (``[num_items, L]`` in ``[0, K)``) and which table they belong to."""

    table: str
    codes: torch.Tensor
    codebook_size: int


class TransformedCollection(EmbeddingBagCollectionInterface):
    """KJT -> KJT transforms (hashing, semantic IDs) in front of an embedding collection."""

    def __init__(self, transforms: Sequence[nn.Module], collection: nn.Module) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(list(transforms))
        self.collection = collection

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        for transform in self.transforms:
            features = transform(features)
        return self.collection(features)

    def embedding_bag_configs(self) -> List[EmbeddingBagConfig]:
        return self.collection.embedding_bag_configs()

    def is_weighted(self) -> bool:
        return self.collection.is_weighted()


@dataclass
class MethodSpec:
    kind: str
    budget: Optional[float] = None  # fraction of the full bytes; None for "full"

    @property
    def name(self) -> str:
        return self.kind if self.budget is None else f"{self.kind}@{self.budget:g}"


def parse_methods(methods: str, budgets: str) -> List[MethodSpec]:
    kinds = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [k for k in kinds if k not in METHOD_KINDS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {METHOD_KINDS}")
    fractions = [float(b) for b in budgets.split(",") if b.strip()]
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"budgets are fractions in (0, 1], got {f}")
    specs: List[MethodSpec] = []
    for kind in kinds:
        specs.extend([MethodSpec(kind)] if kind == "full" else [MethodSpec(kind, f) for f in fractions])
    return specs


def full_bytes(tables: List[EmbeddingBagConfig]) -> int:
    return total_full_bytes([t.num_embeddings for t in tables], [t.embedding_dim for t in tables], OptimizerType.ROWWISE_ADAGRAD)


def collection_bytes(collection: nn.Module) -> int:
    """Bytes the collection allocates for its tables (and, for FIITED, its index and utilities)."""
    if isinstance(collection, TransformedCollection):
        return collection_bytes(collection.collection)
    if isinstance(collection, FiitedEmbeddingBagCollection):
        return collection.memory_bytes()
    inner = collection.ebc if isinstance(collection, HashedEmbeddingBagCollection) else collection
    return full_bytes(inner.embedding_bag_configs())


def sharded_collection_bytes(collection: nn.Module) -> int:
    """This rank's share of a DMP-sharded collection's bytes (sum over ranks = the collection's bytes)."""
    from emb_opt.sharding import ShardedFiitedEmbeddingBagCollection

    for module in collection.modules():
        if isinstance(module, ShardedFiitedEmbeddingBagCollection):
            return module.local.memory_bytes() if module._has_local else 0
    return 0


def hashed_init_dense_tables_(collection: nn.Module, seed: int) -> int:
    """Give every dense table in ``collection`` (TorchRec ``EmbeddingBagCollection`` / ``FusedEmbeddingBagCollection``)
    the init a FIITED store gives the same table (``emb_opt.hashed_init``), each with its own configured range.

    Common random numbers: row r of table t starts from the same values in every method (a hashed table's row b
    from those of row b), so paired AUC differences between methods are not differences of init luck.
    Returns the number of tables initialised.
    """
    done = 0
    for module in collection.modules():
        if not isinstance(module, (EmbeddingBagCollection, FusedEmbeddingBagCollection)):
            continue
        params = dict(module.named_parameters())
        for config in module.embedding_bag_configs():
            low, high = config.get_weight_init_min(), config.get_weight_init_max()
            if abs(low + high) > 1e-12:
                continue  # an asymmetric range: keep TorchRec's own init
            weight = params[f"embedding_bags.{config.name}.weight"]
            with torch.no_grad():
                weight.copy_(hashed_dense_init(config.name, config.num_embeddings, config.embedding_dim, high, seed))
            done += 1
    return done


def build_collection(spec: MethodSpec, tables: List[EmbeddingBagConfig], learning_rate: float,
                     chunk_size: int, fiited_options: Dict[str, Any], sid: Optional[SemanticIds] = None,
                     for_sharding: bool = False, init_seed: Optional[int] = None) -> nn.Module:
    """The collection of ``spec``. ``for_sharding``: dense tables as plain ``EmbeddingBagCollection``s, which
    DistributedModelParallel turns into fused TBEs (row-wise Adagrad through the sharder's fused params).
    ``init_seed``: every method's tables start from ``emb_opt.hashed_init`` with this seed (FIITED's chunks,
    row pruning's rows and the dense tables alike); None keeps each method's own init."""
    if init_seed is not None:
        fiited_options = {"init_seed": init_seed, **fiited_options}

    def fused(configs: List[EmbeddingBagConfig]) -> nn.Module:
        if for_sharding:
            collection = EmbeddingBagCollection(configs)
        else:
            collection = FusedEmbeddingBagCollection(configs, optimizer_type=RowWiseAdagrad,
                                                     optimizer_kwargs={"lr": learning_rate, "eps": 1e-8})
        if init_seed is not None:
            hashed_init_dense_tables_(collection, init_seed)
        return collection

    if spec.kind in SID_KINDS and sid is None:
        raise ValueError(f"method {spec.name} needs item content embeddings (semantic IDs), which this data lacks")
    if spec.kind == "full":
        return fused(tables)
    if spec.kind == "hash":
        return HashedEmbeddingBagCollection(tables, total_row_fraction=spec.budget, collection_factory=fused)
    if spec.kind == "rowprune":
        return RowPruningEmbeddingBagCollection(tables, spec.budget, learning_rate=learning_rate, **fiited_options)
    if spec.kind == "fiited":
        return FiitedEmbeddingBagCollection(tables, spec.budget, chunk_size=chunk_size, learning_rate=learning_rate,
                                            **fiited_options)
    item = next(t for t in tables if t.name == sid.table)
    (feature,) = item.feature_names
    if spec.kind == "sid":  # capped hashing for the other tables, prefix-ngram tokens in the item table's rows
        configs = hashed_table_configs(tables, total_row_fraction=spec.budget)
        rows = next(c.num_embeddings for c in configs if c.name == sid.table)
        hashing = HashingTransform({f: c.num_embeddings for c, t in zip(configs, tables)
                                    if c.name != sid.table and c.num_embeddings < t.num_embeddings
                                    for f in c.feature_names},
                                   {f: i for i, c in enumerate(configs) for f in c.feature_names},
                                   identity_rows={f: c.num_embeddings for c, t in zip(configs, tables)
                                                  if c.name != sid.table and c.num_embeddings >= t.num_embeddings
                                                  for f in c.feature_names})
        tokens = SemanticIdTransform(sid.codes, feature, "prefix_ngram", num_buckets=rows, codebook_size=sid.codebook_size)
        return TransformedCollection([hashing, tokens], fused(configs))
    # fiited_sid: the token space is the item table's virtual rows; the budget is X of the original full bytes
    tokens = SemanticIdTransform(sid.codes, feature, "prefix_ngram", codebook_size=sid.codebook_size)
    configs = [copy.deepcopy(t) for t in tables]
    for config in configs:
        if config.name == sid.table:
            config.num_embeddings = tokens.num_embeddings
    budget = int(spec.budget * full_bytes(tables))
    return TransformedCollection([tokens], FiitedEmbeddingBagCollection(
        configs, budget, chunk_size=chunk_size, learning_rate=learning_rate, **fiited_options))
