"""The embedding methods the Criteo comparison trains, built at equal bytes from one list of tables.

Method names (``--methods``): ``full``, ``hash``, ``rowprune``, ``fiited``; every method but ``full`` is run at
each budget of ``--budgets`` (fractions of the full tables' bytes, optimizer state included):
* ``full``: TorchRec ``FusedEmbeddingBagCollection`` (FBGEMM TBE, fused row-wise Adagrad) -- the reference;
* ``hash@X``: random hashing, every table capped at one row count so that ``X`` of all rows remain (DLRM's
  ``--max-ind-range``; same bytes per row as full, so ``X`` of the bytes), in front of the same fused collection;
* ``rowprune@X``: whole-row pruning by access counts (ITEP-style), ``emb_opt.RowPruningEmbeddingBagCollection``;
* ``fiited@X``: ``emb_opt.FiitedEmbeddingBagCollection`` (chunks of ``chunk_size``, freq x grad utility).
All use the same embedding optimizer (row-wise Adagrad, same learning rate). The bytes reported are what each
collection allocates (for FIITED and row pruning: pool, optimizer state, hash index, utilities, sketch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad

from emb_opt import FiitedEmbeddingBagCollection
from emb_opt.budget import total_full_bytes
from emb_opt.config import OptimizerType
from emb_opt.row_pruning import RowPruningEmbeddingBagCollection
from hashing import HashedEmbeddingBagCollection

METHOD_KINDS = ("full", "hash", "rowprune", "fiited")


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
    if isinstance(collection, FiitedEmbeddingBagCollection):
        return collection.memory_bytes()
    inner = collection.ebc if isinstance(collection, HashedEmbeddingBagCollection) else collection
    return full_bytes(inner.embedding_bag_configs())


def build_collection(spec: MethodSpec, tables: List[EmbeddingBagConfig], learning_rate: float,
                     chunk_size: int, fiited_options: Dict[str, Any]) -> nn.Module:
    def fused(configs: List[EmbeddingBagConfig]) -> FusedEmbeddingBagCollection:
        return FusedEmbeddingBagCollection(configs, optimizer_type=RowWiseAdagrad,
                                           optimizer_kwargs={"lr": learning_rate, "eps": 1e-8})

    if spec.kind == "full":
        return fused(tables)
    if spec.kind == "hash":
        return HashedEmbeddingBagCollection(tables, total_row_fraction=spec.budget, collection_factory=fused)
    if spec.kind == "rowprune":
        return RowPruningEmbeddingBagCollection(tables, spec.budget, learning_rate=learning_rate, **fiited_options)
    if spec.kind == "fiited":
        return FiitedEmbeddingBagCollection(tables, spec.budget, chunk_size=chunk_size, learning_rate=learning_rate,
                                            **fiited_options)
    raise ValueError(f"unknown method kind {spec.kind!r}")
