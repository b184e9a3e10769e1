"""Semantic-ID transforms in front of an embedding-bag collection, as one drop-in TorchRec module.

* ``semantic_id_pair(config, codes, parameterization, num_buckets, ...) -> (transform, ebc)``: for one
  ``EmbeddingBagConfig`` (raw-id features, ``num_embeddings`` = raw id range), the transform(s) for its features
  and an EBC whose table has the rows the tokens need (``H``, plus reserved fallback rows).
* ``SemanticIdEmbeddingBagCollection(transforms, ebc)``: KJT of raw ids -> ``KeyedTensor``, the transforms then
  the collection (an ``emb_opt.transformed.TransformedEmbeddingBagCollection``: ``.transforms``,
  ``.collection``); ``from_tables(tables, codes={feature: codes}, ...)`` builds it for a whole model (tables
  without codes pass through with their raw ids). Same input / output as the EBC it replaces, so it fits
  ``torchrec.models.dlrm.DLRM(embedding_bag_collection=...)``.

The collection is built as ``ebc_cls(tables=configs, **ebc_kwargs)``: ``EmbeddingBagCollection`` by default, or
any class with that constructor shape -- e.g. ``emb_opt.FiitedEmbeddingBagCollection`` with
``ebc_kwargs={"memory_budget": ...}`` -- since the transform only rewrites the KJT.
Features that share one table get a per-feature shift (``feature_offset``): disjoint ranges when their id spaces
fit together in the table, else evenly spread starts.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from emb_opt.transformed import TransformedEmbeddingBagCollection
from semantic_id.transform import SemanticIdTransform


def _feature_transforms(config: EmbeddingBagConfig, codes: torch.Tensor, parameterization: str,
                        num_buckets: Optional[int], **transform_kwargs: Any) -> List[SemanticIdTransform]:
    features = list(config.feature_names or [config.name])
    if "feature_offset" in transform_kwargs:
        raise ValueError("feature_offset is chosen per feature by the helper; do not pass it")
    first = SemanticIdTransform(codes, features[0], parameterization, num_buckets, **transform_kwargs)
    transforms = [first]
    if len(features) > 1:
        H = first.num_buckets
        # the natural space of one feature's tokens; for random hashing the whole table
        space = H if parameterization == "random" else min(H, _natural_space(first))
        step = space if space * len(features) <= H else H // len(features)
        for j, feature in enumerate(features[1:], start=1):
            transforms.append(SemanticIdTransform(codes, feature, parameterization, num_buckets,
                                                  feature_offset=j * step, **transform_kwargs))
    return transforms


def _natural_space(transform: SemanticIdTransform) -> int:
    if transform.plan is not None:
        return int(transform.plan.space)
    return transform.num_items


def semantic_id_pair(
    config: EmbeddingBagConfig,
    codes: torch.Tensor,
    parameterization: str = "prefix_ngram",
    num_buckets: Optional[int] = None,
    ebc_cls: Callable[..., nn.Module] = EmbeddingBagCollection,
    ebc_kwargs: Optional[Dict[str, Any]] = None,
    **transform_kwargs: Any,
) -> Tuple[nn.Module, nn.Module]:
    """``(transform, ebc)`` for one table: transform is a ``SemanticIdTransform`` (an ``nn.Sequential`` of them if
    the table has several features); ebc has the table with ``transform.num_embeddings`` rows."""
    transforms = _feature_transforms(config, codes, parameterization, num_buckets, **transform_kwargs)
    table = copy.deepcopy(config)
    table.num_embeddings = transforms[0].num_embeddings
    ebc = ebc_cls(tables=[table], **(ebc_kwargs or {}))
    transform: nn.Module = transforms[0] if len(transforms) == 1 else nn.Sequential(*transforms)
    return transform, ebc


class SemanticIdEmbeddingBagCollection(TransformedEmbeddingBagCollection):
    """``transforms`` (raw ids -> tokens, KJT -> KJT) followed by ``ebc`` (tokens -> pooled ``KeyedTensor``).

    A ``TransformedEmbeddingBagCollection`` (``.transforms``, ``.collection``) that checks that every
    transformed feature is in the collection and its table has the rows the tokens need.

    Args:
        transforms: one ``SemanticIdTransform`` or several (features of one or more tables).
        ebc: the collection of the token tables (and of any features that keep raw ids).

    Example::

        ebc = SemanticIdEmbeddingBagCollection.from_tables(tables, {"item": codes}, num_buckets=5000)
        pooled = ebc(kjt_of_raw_ids)
    """

    def __init__(self, transforms: Union[SemanticIdTransform, Sequence[SemanticIdTransform]], ebc: nn.Module) -> None:
        if isinstance(transforms, SemanticIdTransform):
            transforms = [transforms]
        super().__init__(transforms, ebc)
        rows_of: Dict[str, int] = {}
        for table in ebc.embedding_bag_configs():
            for feature in table.feature_names or [table.name]:
                rows_of[feature] = table.num_embeddings
        for transform in self.transforms:
            if transform.feature not in rows_of:
                raise ValueError(f"feature {transform.feature!r} has no table in the collection ({sorted(rows_of)})")
            if rows_of[transform.feature] < transform.num_embeddings:
                raise ValueError(f"feature {transform.feature!r}: table has {rows_of[transform.feature]} rows, its "
                                 f"tokens need {transform.num_embeddings}")

    @classmethod
    def from_tables(
        cls,
        tables: List[EmbeddingBagConfig],
        codes: Dict[str, torch.Tensor],
        parameterization: str = "prefix_ngram",
        num_buckets: Optional[Union[int, Dict[str, int]]] = None,
        ebc_cls: Callable[..., nn.Module] = EmbeddingBagCollection,
        ebc_kwargs: Optional[Dict[str, Any]] = None,
        **transform_kwargs: Any,
    ) -> "SemanticIdEmbeddingBagCollection":
        """Build for a model: ``codes`` maps table name (all its features) or feature name -> codes table.

        ``num_buckets``: one H for all transformed tables, or table name -> H. Other tables keep raw ids.
        """
        configs: List[EmbeddingBagConfig] = []
        transforms: List[SemanticIdTransform] = []
        used = set()
        for config in tables:
            features = list(config.feature_names or [config.name])
            key = config.name if config.name in codes else next((f for f in features if f in codes), None)
            table = copy.deepcopy(config)
            if key is not None:
                used.add(key)
                H = num_buckets.get(config.name) if isinstance(num_buckets, dict) else num_buckets
                made = _feature_transforms(config, codes[key], parameterization, H, **transform_kwargs)
                transforms.extend(made)
                table.num_embeddings = made[0].num_embeddings
            configs.append(table)
        unused = set(codes) - used
        if unused:
            raise ValueError(f"codes given for {sorted(unused)}, which is no table or feature of the tables")
        return cls(transforms, ebc_cls(tables=configs, **(ebc_kwargs or {})))
