"""KJT -> KJT transforms in front of an embedding collection, as one drop-in TorchRec collection.

Hashing raw ids into fewer rows (``hashing.HashedEmbeddingBagCollection``) and turning item ids into semantic-ID
tokens (``semantic_id.SemanticIdEmbeddingBagCollection``) both rewrite the ``KeyedJaggedTensor`` and leave the
pooling to an ordinary collection (``EmbeddingBagCollection``, ``FusedEmbeddingBagCollection`` or FIITED). This
is that one shape: ``transforms`` then ``collection``, with the collection's configs, weighting and device, so it
fits wherever the collection did (``torchrec.models.dlrm.DLRM``) and ``emb_opt.memory_report`` finds the
collection inside it.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor


def rewrite_feature_values(features: KeyedJaggedTensor,
                           rewrite: Callable[[str, torch.Tensor], Optional[torch.Tensor]]) -> KeyedJaggedTensor:
    """The KJT with each feature's ids replaced by ``rewrite(feature, ids)`` (same length, cast to the KJT's id
    dtype; ``None`` keeps them); lengths, offsets and weights are unchanged. What the id-rewriting transforms
    (hashing, frequency vocabularies) share."""
    values = features.values()
    pieces: List[torch.Tensor] = []
    start = 0
    for key, length in zip(features.keys(), features.length_per_key()):
        ids = values[start : start + length]
        start += length
        rewritten = rewrite(key, ids)
        pieces.append(ids if rewritten is None else rewritten.to(values.dtype))
    return KeyedJaggedTensor(
        keys=features.keys(),
        values=torch.cat(pieces) if pieces else values,
        weights=features.weights_or_none(),
        lengths=features.lengths(),
        offsets=features.offsets(),
        stride=features.stride(),
        length_per_key=features.length_per_key(),
        offset_per_key=features.offset_per_key(),
    )


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

