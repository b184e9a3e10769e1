"""Shared builders for the FIITED tests: small tables and random KJT batches."""
from typing import List, Optional

import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor


def small_tables(dim: int = 8, rows=(40, 25)) -> List[EmbeddingBagConfig]:
    # table t0 is read by two features (shared table), t1 by one
    return [
        EmbeddingBagConfig(name="t0", embedding_dim=dim, num_embeddings=rows[0], feature_names=["f0", "f2"]),
        EmbeddingBagConfig(name="t1", embedding_dim=dim, num_embeddings=rows[1], feature_names=["f1"]),
    ]


def random_kjt(seed: int, batch_size: int = 6, rows=(40, 25), weighted: bool = False, max_len: int = 3) -> KeyedJaggedTensor:
    gen = torch.Generator().manual_seed(seed)
    keys = ["f0", "f2", "f1"]
    limits = [rows[0], rows[0], rows[1]]
    lengths = torch.randint(0, max_len + 1, (len(keys) * batch_size,), generator=gen)
    values = []
    for f, limit in enumerate(limits):
        n = int(lengths[f * batch_size : (f + 1) * batch_size].sum())
        values.append((torch.rand(n, generator=gen) ** 2 * limit).long())
    weights: Optional[torch.Tensor] = torch.rand(int(lengths.sum()), generator=gen) + 0.5 if weighted else None
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=lengths, weights=weights)
