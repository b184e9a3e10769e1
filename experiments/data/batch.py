"""Criteo's features as TorchRec sees them: the ``Batch`` every data source yields (dense [B, 13], sparse KJT,
labels [B]) and the 26 tables a model has for them.

Criteo has one id per categorical feature per sample, so the KJT has 26 keys (``cat_0`` .. ``cat_25``, TorchRec's
``DEFAULT_CAT_NAMES``) with every length 1 -- except where a source marks an empty field as an empty bag. Table
``t_<feature>`` holds feature ``<feature>``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torchrec import EmbeddingBagConfig
from torchrec.datasets.criteo import DEFAULT_CAT_NAMES
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

CAT_NAMES: List[str] = list(DEFAULT_CAT_NAMES)


def make_batch(
    dense: torch.Tensor,
    sparse: torch.Tensor,
    labels: torch.Tensor,
    present: Optional[torch.Tensor] = None,
    keys: Optional[List[str]] = None,
) -> Batch:
    """Build a ``Batch`` from dense ``[B, 13]`` floats, sparse ``[B, F]`` int64 ids and ``[B]`` labels.

    ``present`` (bool ``[B, F]``) marks which ids exist; absent ones become empty bags (length 0). Without it
    every bag has length 1. The KJT is feature-major (all of ``cat_0``'s bags, then ``cat_1``'s, ...).
    """
    keys = list(keys or CAT_NAMES[: sparse.shape[1]])
    if sparse.dim() != 2 or sparse.shape[1] != len(keys):
        raise ValueError(f"sparse must be [B, {len(keys)}], got {tuple(sparse.shape)}")
    if dense.shape[0] != sparse.shape[0] or labels.shape[0] != sparse.shape[0]:
        raise ValueError(
            f"batch sizes differ: dense {tuple(dense.shape)}, sparse {tuple(sparse.shape)}, labels {tuple(labels.shape)}"
        )
    values = sparse.t().reshape(-1)
    if present is None:
        lengths = torch.ones(values.numel(), dtype=torch.int32)
    else:
        mask = present.t().reshape(-1)
        lengths = mask.to(torch.int32)
        values = values[mask]
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=keys, values=values.to(torch.int64), lengths=lengths)
    return Batch(dense_features=dense.float(), sparse_features=kjt, labels=labels.float())


def criteo_tables(rows: Sequence[int], embedding_dim: int) -> List[EmbeddingBagConfig]:
    """One table ``t_<feature>`` of ``rows[i]`` rows per categorical feature, in feature order."""
    return [EmbeddingBagConfig(name=f"t_{name}", embedding_dim=embedding_dim, num_embeddings=n, feature_names=[name])
            for name, n in zip(CAT_NAMES, rows)]
