"""The static frequency vocabulary baseline as drop-in TorchRec modules.

The usual offline preprocessing of a recommender's categorical features: count every id in the training data;
ids counted often enough get their own embedding row, all others share one out-of-vocabulary (OOV) row. The
count threshold is chosen so that the tables, their optimizer state and the vocabulary itself (the id -> row map)
fit a byte budget.

* ``feature_id_counts``: per-feature id counts of a stream of ``KeyedJaggedTensor``s (``torch.bincount``).
* ``fit_frequency_vocabularies``: which ids get rows under a byte budget -- one global count threshold over all
  tables (``VocabularyPlan``).
* ``FrequencyVocabularyTransform``: KJT -> KJT, each listed feature's raw id -> its row (OOV: row 0).
* ``FrequencyVocabularyEmbeddingBagCollection``: the transform in front of an ordinary collection whose tables
  have ``kept ids + 1`` rows (an ``emb_opt.transformed.TransformedEmbeddingBagCollection``).

The threshold rule. All (table, id) pairs seen in training are ranked by count, most frequent first, and the
longest prefix whose bytes fit is kept: every id counted more than the threshold ``c`` has a row, ids counted
exactly ``c`` are kept as far as the budget allows (ties are ranked by a seeded hash of the id, so neither the
id order nor the table order decides), and ids counted less than ``c`` -- and ids never seen -- read the OOV row.
This is the practitioner's single global count threshold (NVTabular's ``freq_threshold``, a vocabulary file's
``min_count``) made to fill the budget exactly, rather than a per-table quota: a row costs the same everywhere
at equal width, so it goes where ids are most frequent. Bytes per kept id of table ``t``: its row
(``4 x dim_t``), its optimizer state (row-wise Adagrad: 4) and its entry in the sorted id array (8); per table
the OOV row. A table keeps at least its OOV row.

The vocabulary's rows are the kept ids in ascending id order (row ``1 + position``), so the map is only the
sorted id array (searched with ``torch.searchsorted``) -- no row array, no Python dict in ``forward``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from emb_opt.budget import FLOAT_BYTES, KEY_BYTES, resolve_budget, total_full_bytes
from emb_opt.config import OptimizerType, parse_optimizer
from emb_opt.transformed import TransformedEmbeddingBagCollection, rewrite_feature_values
from hashing.random_hash import check_ids, random_hash

OOV_ROW = 0
IdCounts = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]  # dense counts by id, or (ids, counts)
_TIE_SEED = 0x5EED  # ranks ids of equal count (table index added)


def feature_id_counts(batches: Iterable[KeyedJaggedTensor],
                      features: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
    """How often each id occurs per feature in ``batches``: feature -> int64 counts indexed by raw id (length
    ``max id + 1``), by ``torch.bincount``. ``features``: the features to count (default: every key seen)."""
    wanted = None if features is None else set(features)
    counts: Dict[str, torch.Tensor] = {}
    for kjt in batches:
        values, start = kjt.values(), 0
        for key, length in zip(kjt.keys(), kjt.length_per_key()):
            ids, start = values[start : start + length], start + length
            if wanted is not None and key not in wanted:
                continue
            check_ids(ids, f"feature {key!r} ids")
            new = torch.bincount(ids.reshape(-1).to(torch.int64).cpu())
            old = counts.get(key)
            if old is None:
                counts[key] = new
                continue
            if new.numel() > old.numel():
                old, new = new, old
            old[: new.numel()] += new
            counts[key] = old
    if wanted is not None:
        for key in wanted - set(counts):
            counts[key] = torch.zeros(0, dtype=torch.int64)
    return counts


def _sparse_counts(feature: str, counts: IdCounts) -> Tuple[torch.Tensor, torch.Tensor]:
    """(ids, counts) of the ids counted > 0, from dense counts by id or an (ids, counts) pair."""
    if isinstance(counts, tuple):
        if len(counts) != 2:
            raise ValueError(f"id_counts[{feature!r}]: expected (ids, counts), got a tuple of {len(counts)}")
        ids, values = (torch.as_tensor(x).reshape(-1) for x in counts)
        if ids.numel() != values.numel():
            raise ValueError(f"id_counts[{feature!r}]: {ids.numel()} ids but {values.numel()} counts")
        check_ids(ids, f"id_counts[{feature!r}] ids")
        ids = ids.to(torch.int64)
    elif isinstance(counts, torch.Tensor):
        if counts.dim() != 1:
            raise ValueError(f"id_counts[{feature!r}]: expected 1-D counts indexed by id, got shape "
                             f"{tuple(counts.shape)}")
        values = counts
        ids = torch.arange(counts.numel(), dtype=torch.int64)
    else:
        raise TypeError(f"id_counts[{feature!r}]: expected a tensor of counts by id or an (ids, counts) pair, got "
                        f"{type(counts).__name__}")
    values = values.detach().cpu()
    if values.is_floating_point() or values.is_complex():
        raise TypeError(f"id_counts[{feature!r}]: counts must be integers, got {values.dtype}")
    values = values.to(torch.int64)
    if values.numel() and int(values.min()) < 0:
        raise ValueError(f"id_counts[{feature!r}]: counts must be >= 0, got {int(values.min())}")
    seen = values > 0
    return ids.cpu()[seen], values[seen]


@dataclass
class VocabularyPlan:
    """What a budget buys: ``ids`` per table (sorted kept raw ids), and how the rule chose them.

    ``threshold``: the count of the least frequent kept id (None when no id is kept); every id counted more has
    a row. ``threshold_kept`` / ``threshold_ids``: how many of the ids counted exactly ``threshold`` are kept, of
    how many. ``bytes``: what the tables, their optimizer state and the id arrays take (``<= budget_bytes``).
    ``seen_ids``: per table, how many distinct ids the counts hold (the most a vocabulary can keep).
    """

    ids: Dict[str, torch.Tensor]
    budget_bytes: int
    bytes: int
    threshold: Optional[int]
    threshold_kept: int = 0
    threshold_ids: int = 0
    seen_ids: Dict[str, int] = field(default_factory=dict)

    @property
    def num_embeddings(self) -> Dict[str, int]:
        """Rows per table: its kept ids and the OOV row."""
        return {name: int(ids.numel()) + 1 for name, ids in self.ids.items()}


def fit_frequency_vocabularies(tables: List[EmbeddingBagConfig], id_counts: Mapping[str, IdCounts],
                               budget_bytes: int, optimizer: OptimizerType = OptimizerType.ROWWISE_ADAGRAD,
                               ) -> VocabularyPlan:
    """The vocabularies of ``tables`` under ``budget_bytes`` by one global count threshold (module docstring).

    Args:
        tables: the full tables; a table's ids are those of all its features (counts summed).
        id_counts: feature -> counts indexed by raw id (``feature_id_counts``), or an ``(ids, counts)`` pair;
            every feature of every table needs an entry.
        budget_bytes: bytes for all tables' rows, their optimizer state and the vocabularies' id arrays.
        optimizer: the tables' optimizer (its state per row counts against the budget).
    """
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise ValueError(f"table names must be unique, got {names}")
    row_bytes = {t.name: FLOAT_BYTES * t.embedding_dim + optimizer.dense_state_bytes_per_row(t.embedding_dim)
                 for t in tables}
    fixed = sum(row_bytes.values())  # every table's OOV row
    if budget_bytes < fixed:
        raise ValueError(f"budget of {budget_bytes} bytes is below the {fixed} bytes of one out-of-vocabulary row "
                         f"per table ({len(tables)} tables); a frequency vocabulary needs at least that")
    all_ids, all_counts, all_costs, all_ties, all_tables = [], [], [], [], []
    seen: Dict[str, int] = {}
    for index, table in enumerate(tables):
        ids_parts, count_parts = [], []
        for feature in table.feature_names or [table.name]:
            if feature not in id_counts:
                raise ValueError(f"id_counts has no entry for feature {feature!r} (table {table.name!r}); give the "
                                 f"training counts of every feature (feature_id_counts)")
            ids, counts = _sparse_counts(feature, id_counts[feature])
            ids_parts.append(ids)
            count_parts.append(counts)
        ids, inverse = torch.unique(torch.cat(ids_parts), return_inverse=True)
        counts = torch.zeros(ids.numel(), dtype=torch.int64).index_add_(0, inverse, torch.cat(count_parts))
        seen[table.name] = int(ids.numel())
        all_ids.append(ids)
        all_counts.append(counts)
        all_costs.append(torch.full_like(ids, row_bytes[table.name] + KEY_BYTES))
        all_ties.append(random_hash(ids, 2**62, _TIE_SEED + index) if ids.numel() else ids)
        all_tables.append(torch.full_like(ids, index))
    ids, counts, costs = torch.cat(all_ids), torch.cat(all_counts), torch.cat(all_costs)
    ties, table_of = torch.cat(all_ties), torch.cat(all_tables)
    order = torch.argsort(ties, stable=True)  # ties ranked by hash, then most frequent first
    order = order[torch.argsort(counts[order], descending=True, stable=True)]
    spent = torch.cumsum(costs[order], 0)
    kept = int((spent <= budget_bytes - fixed).sum())  # the cumulative cost rises: the longest prefix that fits
    chosen = order[:kept]
    threshold = int(counts[chosen[-1]]) if kept else None
    at_threshold = int((counts == threshold).sum()) if kept else 0
    kept_at_threshold = int((counts[chosen] == threshold).sum()) if kept else 0
    plan_ids = {}
    for index, table in enumerate(tables):
        plan_ids[table.name] = torch.sort(ids[chosen[table_of[chosen] == index]]).values
    total = fixed + (int(spent[kept - 1]) if kept else 0)
    return VocabularyPlan(plan_ids, int(budget_bytes), total, threshold, kept_at_threshold, at_threshold, seen)


class FrequencyVocabularyTransform(nn.Module):
    """Map the raw ids of the given features of a ``KeyedJaggedTensor`` to vocabulary rows (others pass unchanged).

    A feature's id in its vocabulary reads row ``1 + its position`` among the vocabulary's sorted ids; every
    other id reads row 0, the out-of-vocabulary row. Each vocabulary's sorted ids are a buffer
    (``vocabulary_<i>``, in ``state_dict``); lookup is ``torch.searchsorted``.

    Args:
        vocabularies: vocabulary name (e.g. table name) -> its ids (any order, unique, >= 0).
        features: feature name -> the vocabulary it reads (default: each vocabulary is the feature of its name).
        device: where the id arrays live.

    Example::

        vocab = FrequencyVocabularyTransform({"t_user": torch.tensor([7, 42, 3])}, {"user": "t_user"})
        rows = vocab(kjt)  # "user" ids 3, 7, 42 -> rows 1, 2, 3; any other id -> 0
    """

    def __init__(self, vocabularies: Mapping[str, torch.Tensor], features: Optional[Mapping[str, str]] = None,
                 device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.vocabulary_names: List[str] = list(vocabularies)
        features = dict(features) if features is not None else {name: name for name in self.vocabulary_names}
        unknown = {f: v for f, v in features.items() if v not in vocabularies}
        if unknown:
            raise ValueError(f"features {unknown} read vocabularies that are not given; vocabularies: "
                             f"{self.vocabulary_names}")
        self.feature_vocabulary: Dict[str, int] = {f: self.vocabulary_names.index(v) for f, v in features.items()}
        for index, (name, ids) in enumerate(vocabularies.items()):
            ids = torch.as_tensor(ids).reshape(-1)
            check_ids(ids, f"vocabulary {name!r} ids")
            ids = torch.sort(ids.to(torch.int64)).values
            if ids.numel() > 1 and bool((ids[1:] == ids[:-1]).any()):
                duplicate = int(ids[1:][ids[1:] == ids[:-1]][0])
                raise ValueError(f"vocabulary {name!r}: id {duplicate} is listed more than once")
            self.register_buffer(f"vocabulary_{index}", ids.to(device))

    def vocabulary(self, name: str) -> torch.Tensor:
        """The sorted ids of vocabulary ``name`` (row ``1 + i`` is id ``vocabulary(name)[i]``)."""
        if name not in self.vocabulary_names:
            raise KeyError(f"no vocabulary {name!r}; vocabularies: {self.vocabulary_names}")
        return getattr(self, f"vocabulary_{self.vocabulary_names.index(name)}")

    @property
    def num_embeddings(self) -> Dict[str, int]:
        """Rows each vocabulary's table needs: its ids and the OOV row."""
        return {name: int(self.vocabulary(name).numel()) + 1 for name in self.vocabulary_names}

    def vocabulary_bytes(self) -> Dict[str, int]:
        """Bytes of each vocabulary's id array."""
        return {name: self.vocabulary(name).numel() * self.vocabulary(name).element_size()
                for name in self.vocabulary_names}

    def memory_bytes(self) -> int:
        """Every buffer of the transform: the id -> row map."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def rows(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        """The rows ``feature``'s raw ``ids`` read (int64, same shape; out-of-vocabulary ids: row 0)."""
        if feature not in self.feature_vocabulary:
            raise KeyError(f"feature {feature!r} has no vocabulary; features: {list(self.feature_vocabulary)}")
        check_ids(ids, f"feature {feature!r} ids")
        vocabulary = getattr(self, f"vocabulary_{self.feature_vocabulary[feature]}")
        ids = ids.to(torch.int64)
        if vocabulary.numel() == 0:
            return torch.full_like(ids, OOV_ROW)
        position = torch.searchsorted(vocabulary, ids).clamp_(max=vocabulary.numel() - 1)
        return torch.where(vocabulary[position] == ids, position + 1, torch.full_like(position, OOV_ROW))

    def forward(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        missing = [f for f in self.feature_vocabulary if f not in features.keys()]
        if missing:
            raise ValueError(f"FrequencyVocabularyTransform: KJT lacks feature(s) {missing}; it has {features.keys()}")
        return rewrite_feature_values(
            features, lambda key, ids: self.rows(key, ids) if key in self.feature_vocabulary else None)


class FrequencyVocabularyEmbeddingBagCollection(TransformedEmbeddingBagCollection):
    """Static frequency vocabulary baseline: a ``FrequencyVocabularyTransform`` in front of a collection whose
    tables hold one row per kept id and one out-of-vocabulary row, the ids chosen from training counts so that
    everything fits ``memory_budget`` (``fit_frequency_vocabularies``: one global count threshold).

    A ``TransformedEmbeddingBagCollection``: ``transforms`` holds the one ``FrequencyVocabularyTransform``,
    ``collection`` the smaller tables; ``virtual_configs`` keeps the full tables (raw id ranges) and ``plan`` the
    ``VocabularyPlan`` (threshold, kept ids). Same input (raw ids of any size >= 0) and output (``KeyedTensor``)
    as the full-table EBC it replaces, so it works inside ``torchrec.models.dlrm.DLRM``;
    ``emb_opt.memory_report`` counts the tables, their optimizer state and the vocabularies' id arrays.

    Args:
        tables: the full tables (``num_embeddings`` = raw id range, kept as ``virtual_configs``).
        id_counts: feature -> training counts indexed by raw id (``feature_id_counts``), or ``(ids, counts)``.
        memory_budget: bytes (int) or a fraction (float in (0, 1]) of the full tables' bytes with ``optimizer``'s
            state -- the same budget FIITED and row pruning take.
        optimizer: the tables' optimizer, whose state per row the budget pays for (default row-wise Adagrad).
        collection_factory: builds the collection from the smaller configs (default: a plain
            ``EmbeddingBagCollection``; e.g. a ``FusedEmbeddingBagCollection`` for a fused optimizer).

    Example::

        counts = feature_id_counts(kjt for kjt in training_kjts)
        ebc = FrequencyVocabularyEmbeddingBagCollection(tables, counts, memory_budget=0.05)
        pooled = ebc(kjt_of_raw_ids)  # rare and unseen ids pool the trained OOV row
    """

    def __init__(
        self,
        tables: List[EmbeddingBagConfig],
        id_counts: Mapping[str, IdCounts],
        memory_budget: Union[int, float],
        optimizer: object = OptimizerType.ROWWISE_ADAGRAD,
        is_weighted: bool = False,
        device: Optional[torch.device] = None,
        collection_factory: Optional[Callable[[List[EmbeddingBagConfig]], EmbeddingBagCollectionInterface]] = None,
    ) -> None:
        optimizer_type = parse_optimizer(optimizer)
        full = total_full_bytes([t.num_embeddings for t in tables], [t.embedding_dim for t in tables], optimizer_type)
        plan = fit_frequency_vocabularies(tables, id_counts, resolve_budget(memory_budget, full), optimizer_type)
        configs = []
        for table in tables:
            config = copy.deepcopy(table)
            config.num_embeddings = plan.num_embeddings[table.name]
            configs.append(config)
        transform = FrequencyVocabularyTransform(
            plan.ids, {f: t.name for t in tables for f in t.feature_names or [t.name]}, device)
        if collection_factory is None:
            collection = EmbeddingBagCollection(tables=configs, is_weighted=is_weighted, device=device)
        else:
            collection = collection_factory(configs)
        super().__init__([transform], collection)
        self.virtual_configs = [copy.deepcopy(t) for t in tables]
        self.plan = plan
        self.full_bytes = full
        self.budget_bytes = plan.budget_bytes

    @property
    def vocabulary(self) -> FrequencyVocabularyTransform:
        """The id -> row map in front of the collection."""
        return self.transforms[0]
