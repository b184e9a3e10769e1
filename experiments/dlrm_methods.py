"""The embedding collections the Criteo comparison trains, built at equal bytes from common random numbers.

Methods, each but ``full`` at a budget X (a fraction of the full tables' bytes, optimizer state included):
* ``full``: TorchRec ``FusedEmbeddingBagCollection`` (FBGEMM TBE, fused row-wise Adagrad), the reference;
* ``hash``: capped hashing -- every table capped at one row count so that X of all rows remain (DLRM's
  ``--max-ind-range``): tables under the cap are kept whole, only the big ones are randomly hashed, in front of
  the same fused collection (``hashing.HashedEmbeddingBagCollection``);
* ``freqvocab``: the static frequency vocabulary -- ids counted in the training stream more often than one global
  threshold get a row, all others share a trained out-of-vocabulary row; the threshold fills X with the tables,
  their optimizer state and the id -> row map (``hashing.FrequencyVocabularyEmbeddingBagCollection``), in front
  of the same fused collection;
* ``rowprune``: whole-row pruning by access counts (ITEP-style), ``emb_opt.RowPruningEmbeddingBagCollection``;
* ``fiited``: ``emb_opt.FiitedEmbeddingBagCollection``;
* ``sid``: as ``hash``, but the item feature becomes semantic-ID prefix-ngram tokens in the same rows instead of
  being hashed at random;
* ``fiited_sid``: FIITED, the item feature read through its prefix-ngram tokens (the token space as the table's
  virtual rows; FIITED decides which tokens earn chunks).
Common random numbers: every method's tables start from ``emb_opt.hashed_init`` (FIITED's chunks, row pruning's
rows and the dense tables alike) and ``build_dlrm`` draws the dense layers from one seed, so paired differences
between methods are not differences of init luck.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.models.dlrm import DLRM
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad

from emb_opt import FiitedEmbeddingBagCollection, RowPruningEmbeddingBagCollection, memory_report
from emb_opt.budget import total_full_bytes
from emb_opt.config import OptimizerType
from emb_opt.hashed_init import hashed_dense_init
from emb_opt.transformed import TransformedEmbeddingBagCollection
from hashing.frequency_vocabulary import FrequencyVocabularyEmbeddingBagCollection
from hashing.hashed_ebc import HashedEmbeddingBagCollection, HashingTransform, hashed_table_configs

METHODS = ("full", "hash", "freqvocab", "rowprune", "fiited", "sid", "fiited_sid")
SID_METHODS = ("sid", "fiited_sid")
FIITED_METHODS = ("rowprune", "fiited", "fiited_sid")  # a chunk store, whose bytes change in training


def full_bytes(tables: Sequence[EmbeddingBagConfig]) -> int:
    """Bytes of dense fp32 tables with row-wise Adagrad state: what the budgets are fractions of."""
    return total_full_bytes([t.num_embeddings for t in tables], [t.embedding_dim for t in tables],
                            OptimizerType.ROWWISE_ADAGRAD)


def embedding_bytes(collection: nn.Module, gather: bool = False) -> int:
    """``emb_opt.memory_report``'s total of the collection(s) in ``collection``; ``gather``: of every rank's shards
    of a DistributedModelParallel model (a collective; the total on rank 0, 0 on the others)."""
    report = memory_report(collection, gather=gather)
    return 0 if report is None else int(report.loc[report["table"] == "TOTAL", "total_bytes"].iloc[-1])


def hashed_init_dense_tables_(collection: nn.Module, seed: int) -> int:
    """Give every dense table in ``collection`` the init a FIITED store gives that table (``emb_opt.hashed_init``,
    with its configured symmetric range): row r of table t starts from the same values in every method (a hashed
    table's row b from those of row b). Returns the number of tables initialised."""
    done = 0
    for module in collection.modules():
        if not isinstance(module, (EmbeddingBagCollection, FusedEmbeddingBagCollection)):
            continue
        params = dict(module.named_parameters())
        for config in module.embedding_bag_configs():
            low, high = config.get_weight_init_min(), config.get_weight_init_max()
            if abs(low + high) > 1e-12:
                continue  # an asymmetric range: keep TorchRec's own init
            with torch.no_grad():
                params[f"embedding_bags.{config.name}.weight"].copy_(
                    hashed_dense_init(config.name, config.num_embeddings, config.embedding_dim, high, seed))
            done += 1
    return done


def build_collection(method: str, budget: Optional[float], tables: List[EmbeddingBagConfig], *, seed: int,
                     learning_rate: float, chunk_size: int, fiited_options: Dict[str, Any],
                     codes: Optional[torch.Tensor] = None, item_table: str = "", codebook_size: int = 0,
                     for_sharding: bool = False, id_counts: Optional[Mapping[str, torch.Tensor]] = None) -> nn.Module:
    """The collection of ``method`` at ``budget`` (None for ``full``), every table starting from
    ``emb_opt.hashed_init`` with ``seed``, every optimizer row-wise Adagrad at ``learning_rate``.

    ``fiited_options``: ``FiitedConfig`` fields for the FIITED and row-pruning collections; ``codes`` (``[rows,
    L]`` in ``[0, codebook_size)``): semantic IDs of ``item_table``'s ids, for ``sid`` and ``fiited_sid``;
    ``for_sharding``: dense tables as plain ``EmbeddingBagCollection``s, which DistributedModelParallel turns into
    fused TBEs (row-wise Adagrad through the sharder's fused params); ``id_counts``: feature -> id counts of the
    training stream (``hashing.feature_id_counts``), for ``freqvocab``.
    """
    options = {"init_seed": seed, **fiited_options}

    def dense(configs: List[EmbeddingBagConfig]) -> nn.Module:
        collection = EmbeddingBagCollection(configs) if for_sharding else FusedEmbeddingBagCollection(
            configs, optimizer_type=RowWiseAdagrad, optimizer_kwargs={"lr": learning_rate, "eps": 1e-8})
        hashed_init_dense_tables_(collection, seed)
        return collection

    if method == "full":
        return dense(tables)
    if method == "hash":
        return HashedEmbeddingBagCollection(tables, total_row_fraction=budget, collection_factory=dense)
    if method == "freqvocab":
        if id_counts is None:
            raise ValueError("method freqvocab needs the id counts of the training stream (hashing.feature_id_counts)")
        return FrequencyVocabularyEmbeddingBagCollection(tables, id_counts, budget, collection_factory=dense)
    if method == "rowprune":
        return RowPruningEmbeddingBagCollection(tables, budget, learning_rate=learning_rate, **options)
    if method == "fiited":
        return FiitedEmbeddingBagCollection(tables, budget, chunk_size=chunk_size, learning_rate=learning_rate,
                                            **options)
    if method not in SID_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if codes is None:
        raise ValueError(f"method {method} needs item content embeddings (semantic IDs), which this data lacks")
    from semantic_id import SemanticIdTransform

    (feature,) = next(t for t in tables if t.name == item_table).feature_names
    if method == "sid":  # capped hashing for the other tables, prefix-ngram tokens in the item table's rows
        configs = hashed_table_configs(tables, total_row_fraction=budget)
        others = [(c, t) for c, t in zip(configs, tables) if c.name != item_table]
        hashing = HashingTransform(
            {f: c.num_embeddings for c, t in others if c.num_embeddings < t.num_embeddings for f in c.feature_names},
            {f: i for i, c in enumerate(configs) for f in c.feature_names},
            identity_rows={f: c.num_embeddings for c, t in others if c.num_embeddings >= t.num_embeddings
                           for f in c.feature_names})
        rows = next(c.num_embeddings for c in configs if c.name == item_table)
        tokens = SemanticIdTransform(codes, feature, "prefix_ngram", num_buckets=rows, codebook_size=codebook_size)
        return TransformedEmbeddingBagCollection([hashing, tokens], dense(configs))
    # fiited_sid: the token space is the item table's virtual rows; the budget is X of the original full bytes
    tokens = SemanticIdTransform(codes, feature, "prefix_ngram", codebook_size=codebook_size)
    configs = [copy.deepcopy(t) for t in tables]
    next(c for c in configs if c.name == item_table).num_embeddings = tokens.num_embeddings
    return TransformedEmbeddingBagCollection([tokens], FiitedEmbeddingBagCollection(
        configs, int(budget * full_bytes(tables)), chunk_size=chunk_size, learning_rate=learning_rate, **options))


def build_dlrm(collection: nn.Module, embedding_dim: int, seed: int, dense_in_features: int = 13) -> DLRM:
    """DLRM around ``collection`` (``dense_in_features`` dense features: Criteo's 13 by default), its dense layers
    drawn right after ``torch.manual_seed(seed)``: methods draw different amounts of randomness for their tables,
    and the dense layers must not differ between them."""
    torch.manual_seed(seed)
    return DLRM(embedding_bag_collection=collection, dense_in_features=dense_in_features,
                dense_arch_layer_sizes=[128, embedding_dim], over_arch_layer_sizes=[256, 128, 1])
