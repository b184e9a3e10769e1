"""KJT -> KJT transforms in front of an embedding collection, as one drop-in TorchRec collection.

Hashing raw ids into fewer rows (``hashing.HashedEmbeddingBagCollection``) and turning item ids into semantic-ID
tokens (``semantic_id.SemanticIdEmbeddingBagCollection``) both rewrite the ``KeyedJaggedTensor`` and leave the
pooling to an ordinary collection (``EmbeddingBagCollection``, ``FusedEmbeddingBagCollection`` or FIITED). This
is that one shape: ``transforms`` then ``collection``, with the collection's configs, weighting and device, so it
fits wherever the collection did (``torchrec.models.dlrm.DLRM``) and ``emb_opt.memory_report`` finds the
collection inside it.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor


class TransformedEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """Apply ``transforms`` (each ``KeyedJaggedTensor -> KeyedJaggedTensor``, in order), then ``collection``.

    Args:
        transforms (Sequence[nn.Module]): the KJT rewrites, e.g. ``hashing.HashingTransform``,
            ``semantic_id.SemanticIdTransform``; kept as ``self.transforms`` (an ``nn.ModuleList``).
        collection (nn.Module): the embedding collection that pools the rewritten ids (an
            ``EmbeddingBagCollectionInterface``); kept as ``self.collection``.

    Example::

        tokens = SemanticIdTransform(codes, "item", "prefix_ngram", num_buckets=5000)
        table = EmbeddingBagConfig(name="t_item", embedding_dim=64, num_embeddings=tokens.num_embeddings,
                                   feature_names=["item"])
        ebc = TransformedEmbeddingBagCollection([tokens], EmbeddingBagCollection([table]))
        pooled = ebc(kjt)  # KeyedTensor, as from the collection on the transformed ids
    """

    def __init__(self, transforms: Sequence[nn.Module], collection: nn.Module) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(list(transforms))
        self.collection = collection

    def transform(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """The KJT the collection sees: ``features`` through every transform."""
        for transform in self.transforms:
            features = transform(features)
        return features

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        return self.collection(self.transform(features))

    def embedding_bag_configs(self) -> List[EmbeddingBagConfig]:
        return self.collection.embedding_bag_configs()

    def is_weighted(self) -> bool:
        return bool(self.collection.is_weighted())

    @property
    def device(self) -> torch.device:
        return self.collection.device

