"""The training harness shared by the Criteo scripts: build a DLRM around any embedding collection, train it
with a progress bar, evaluate AUC / log loss / NE.

Embedding collections with a fused optimizer (TorchRec's ``FusedEmbeddingBagCollection``, FIITED, and hashed
or semantic-ID wrappers around them) update their tables inside backward; the dense optimizer here only sees
the remaining parameters, found by excluding every module that implements TorchRec's ``FusedOptimizerModule``
or has no ``nn.Parameter`` tables at all.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional

import torch
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.optim.fused import FusedOptimizerModule
from tqdm import tqdm

from experiments.metrics import ctr_metrics


def build_dlrm(
    embedding_collection: EmbeddingBagCollectionInterface,
    embedding_dim: int,
    dense_in_features: int = 13,
    dense_arch: Optional[List[int]] = None,
    over_arch: Optional[List[int]] = None,
) -> DLRM:
    """``torchrec.models.dlrm.DLRM`` with the given collection (all tables of dimension ``embedding_dim``)."""
    dense_arch = list(dense_arch or [128]) + [embedding_dim]
    over_arch = list(over_arch or [256, 128]) + [1]
    return DLRM(
        embedding_bag_collection=embedding_collection,
        dense_in_features=dense_in_features,
        dense_arch_layer_sizes=dense_arch,
        over_arch_layer_sizes=over_arch,
    )


def build_seeded_dlrm(embedding_collection: EmbeddingBagCollectionInterface, embedding_dim: int, seed: int) -> DLRM:
    """``build_dlrm`` with the dense layers drawn from ``torch.manual_seed(seed)`` right before they are built.

    Methods draw different amounts of randomness for their tables (TorchRec's dense tables draw from the global
    generator, FIITED's chunks are hashed), so without the reseed each method got different dense layers -- a
    noise of ~0.0007 AUC between methods on the synthetic data that a paired comparison should not carry.
    """
    torch.manual_seed(seed)
    return build_dlrm(embedding_collection, embedding_dim)


def dense_parameters(model: nn.Module) -> List[nn.Parameter]:
    """Parameters the dense optimizer should update: all but those updated in backward -- parameters of
    fused-optimizer modules and, under DistributedModelParallel, those carrying ``_in_backward_optimizers``."""
    fused = set()
    for module in model.modules():
        if isinstance(module, FusedOptimizerModule):
            fused.update(id(p) for p in module.parameters())
    return [p for p in model.parameters()
            if id(p) not in fused and p.requires_grad and not hasattr(p, "_in_backward_optimizers")]


@dataclass
class TrainResult:
    steps: int
    samples: int
    seconds: float
    losses: List[float] = field(default_factory=list)  # mean train loss per logging window


def train(
    model: nn.Module,
    batches: Iterable[Batch],
    steps: int,
    dense_lr: float = 1e-3,
    desc: str = "train",
    log_every: int = 50,
    on_step: Optional[Callable[[int], None]] = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` (a DLRM: ``model(dense, sparse) -> logits [B, 1]``) for ``steps`` batches with BCE."""
    model.train()
    params = dense_parameters(model)
    optimizer = torch.optim.Adam(params, lr=dense_lr) if params else None
    loss_fn = nn.BCEWithLogitsLoss()
    result = TrainResult(0, 0, 0.0)
    window: List[float] = []
    start = time.perf_counter()
    iterator: Iterator[Batch] = iter(batches)
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False, mininterval=1.0)
    for step in range(steps):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        logits = model(batch.dense_features, batch.sparse_features).squeeze(1)
        loss = loss_fn(logits, batch.labels)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        window.append(loss.item())
        result.steps += 1
        result.samples += int(batch.labels.numel())
        if on_step is not None:
            on_step(step)
        if len(window) == log_every:
            result.losses.append(sum(window) / len(window))
            bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
            window = []
        bar.update(1)
    bar.close()
    if window:
        result.losses.append(sum(window) / len(window))
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch]) -> Dict[str, float]:
    """AUC, log loss and NE of ``model`` over ``batches`` (eval mode; nothing is updated)."""
    model.eval()
    logits, labels = [], []
    for batch in batches:
        logits.append(model(batch.dense_features, batch.sparse_features).squeeze(1))
        labels.append(batch.labels)
    model.train()
    return ctr_metrics(torch.cat(logits), torch.cat(labels))
