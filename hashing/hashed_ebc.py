"""The random-hash baseline as drop-in TorchRec modules.

* ``HashingTransform``: KJT -> KJT, replaces each listed feature's raw ids by ``random_hash(id, buckets, seed)``.
* ``HashedEmbeddingBagCollection``: the transform in front of an ordinary ``EmbeddingBagCollection`` whose
  tables have ``num_buckets`` rows (an ``emb_opt.transformed.TransformedEmbeddingBagCollection``). Same input
  (raw ids of any size >= 0) and output (``KeyedTensor``) as the full-table EBC it replaces, so it works inside
  ``torchrec.models.dlrm.DLRM``.

Each table gets its own seed (``seed + table index``) so tables do not share collision patterns. A table that
keeps all its rows is not hashed at all (its ids index it directly): hashing ``N`` ids into ``N`` buckets would
collide a third of them for nothing.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Dict, List, Optional

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from emb_opt.transformed import TransformedEmbeddingBagCollection, rewrite_feature_values
from hashing.random_hash import HASH_METHODS, check_ids, random_hash


class HashingTransform(nn.Module):
    """Hash the ids of the given features of a ``KeyedJaggedTensor`` (other features pass unchanged).

    Args:
        num_buckets: feature name -> number of buckets (rows) its ids are hashed into.
        seeds: feature name -> hash seed (default 0 for every feature).
        method: "mix" (seeded 64-bit mix) or "modulo" (``id mod buckets``).
        identity_rows: features passed through unhashed, with their row counts (ids are checked against them).
    """

    def __init__(self, num_buckets: Dict[str, int], seeds: Optional[Dict[str, int]] = None, method: str = "mix",
                 identity_rows: Optional[Dict[str, int]] = None):
        super().__init__()
        if method not in HASH_METHODS:
            raise ValueError(f"unknown hash method {method!r}; expected one of {HASH_METHODS}")
        for feature, buckets in num_buckets.items():
            if int(buckets) < 1:
                raise ValueError(f"feature {feature!r}: num_buckets must be >= 1, got {buckets}")
        self.num_buckets = dict(num_buckets)
        self.identity_rows = dict(identity_rows or {})
        self.seeds = dict(seeds or {})
        self.method = method

    def forward(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        missing = [f for f in self.num_buckets if f not in features.keys()]
        if missing:
            raise ValueError(f"HashingTransform: KJT lacks feature(s) {missing}; it has {features.keys()}")
        return rewrite_feature_values(features, self._rewrite)

    def _rewrite(self, key: str, ids: torch.Tensor) -> Optional[torch.Tensor]:
        if key in self.identity_rows:
            check_ids(ids, f"feature {key!r} ids")
            if ids.numel() and int(ids.max()) >= self.identity_rows[key]:
                raise ValueError(f"feature {key!r}: id {int(ids.max())} is out of range [0, {self.identity_rows[key]})")
        if key in self.num_buckets:
            check_ids(ids, f"feature {key!r} ids")
            return random_hash(ids, self.num_buckets[key], self.seeds.get(key, 0), self.method)
        return None


def row_cap_for_fraction(rows: List[int], fraction: float) -> int:
    """The largest per-table cap H with ``sum(min(N_t, H)) <= fraction * sum(N_t)`` (at least 1).

    Capping every table at H rows is DLRM's ``--max-ind-range``: small tables stay whole (they are cheap and
    hashing them would destroy them), large tables are hashed down -- the fair way to spend a total budget.
    """
    target = fraction * sum(rows)
    low, high = 1, max(rows)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in rows) <= target:
            low = mid
        else:
            high = mid - 1
    return low


def hashed_table_configs(
    tables: List[EmbeddingBagConfig],
    num_buckets: Optional[Dict[str, int]] = None,
    row_fraction: Optional[float] = None,
    total_row_fraction: Optional[float] = None,
) -> List[EmbeddingBagConfig]:
    """Copies of ``tables`` with ``num_embeddings`` set to each table's bucket count. Give exactly one of:

    * ``num_buckets``: table name -> rows;
    * ``row_fraction``: every table gets ``ceil(fraction x rows)`` rows (>= 1);
    * ``total_row_fraction``: tables are capped at one row count H so that all tables together keep that
      fraction of the rows (``row_cap_for_fraction``).
    """
    given = [x is not None for x in (num_buckets, row_fraction, total_row_fraction)]
    if sum(given) != 1:
        raise ValueError("give exactly one of num_buckets (per table), row_fraction or total_row_fraction")
    for name, value in (("row_fraction", row_fraction), ("total_row_fraction", total_row_fraction)):
        if value is not None and not 0 < value <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
    cap = row_cap_for_fraction([t.num_embeddings for t in tables], total_row_fraction) if total_row_fraction else None
    configs = []
    for table in tables:
        if num_buckets is not None:
            if table.name not in num_buckets:
                raise ValueError(f"num_buckets has no entry for table {table.name!r}")
            rows = int(num_buckets[table.name])
        elif cap is not None:
            rows = min(table.num_embeddings, cap)
        else:
            rows = max(1, math.ceil(row_fraction * table.num_embeddings))
        config = copy.deepcopy(table)
        config.num_embeddings = rows
        configs.append(config)
    return configs


class HashedEmbeddingBagCollection(TransformedEmbeddingBagCollection):
    """Random-hash baseline: a ``HashingTransform`` in front of a collection whose tables have fewer rows.

    A ``TransformedEmbeddingBagCollection``: ``transforms`` holds the one ``HashingTransform``, ``collection`` the
    hashed tables; ``virtual_configs`` keeps the full tables (raw id ranges), which ``emb_opt.memory_report``
    reads as the rows a full table would have.

    Args:
        tables: the full tables (``num_embeddings`` = raw id range, kept as ``virtual_configs``).
        num_buckets / row_fraction / total_row_fraction: rows per table after hashing (``hashed_table_configs``).
        seed: base seed; table ``i`` uses ``seed + i``.
        method: "mix" or "modulo".
        collection_factory: builds the collection from the hashed configs (default: a plain
            ``EmbeddingBagCollection``; e.g. a ``FusedEmbeddingBagCollection`` for a fused optimizer).

    Example::

        ebc = HashedEmbeddingBagCollection(tables, total_row_fraction=0.05)  # 5% of the rows, DLRM-style cap
        pooled = ebc(kjt_of_raw_ids)
    """

    def __init__(
        self,
        tables: List[EmbeddingBagConfig],
        num_buckets: Optional[Dict[str, int]] = None,
        row_fraction: Optional[float] = None,
        seed: int = 0,
        total_row_fraction: Optional[float] = None,
        method: str = "mix",
        is_weighted: bool = False,
        device: Optional[torch.device] = None,
        collection_factory: Optional[Callable[[List[EmbeddingBagConfig]], EmbeddingBagCollectionInterface]] = None,
    ) -> None:
        hashed = hashed_table_configs(tables, num_buckets, row_fraction, total_row_fraction)
        buckets: Dict[str, int] = {}
        seeds: Dict[str, int] = {}
        identity: Dict[str, int] = {}
        for index, (config, virtual) in enumerate(zip(hashed, tables)):
            if config.num_embeddings >= virtual.num_embeddings:  # the table keeps all its rows: no hashing
                identity.update({f: config.num_embeddings for f in config.feature_names or [config.name]})
                continue
            for feature in config.feature_names or [config.name]:
                buckets[feature] = config.num_embeddings
                seeds[feature] = seed + index
        if collection_factory is None:
            collection = EmbeddingBagCollection(tables=hashed, is_weighted=is_weighted, device=device)
        else:
            collection = collection_factory(hashed)
        super().__init__([HashingTransform(buckets, seeds, method, identity)], collection)
        self.virtual_configs = [copy.deepcopy(t) for t in tables]
