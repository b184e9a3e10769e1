"""``emb_opt.convert``: replace every TorchRec ``EmbeddingBagCollection`` of a model by a FIITED one.

    model = emb_opt.convert(model, memory_budget=0.05)   # 5% of the full tables' bytes, per collection

* ``memory_budget`` as a fraction applies to each collection; as bytes it is split between collections in
  proportion to their full-table bytes.
* ``copy_weights=True`` imports the existing weights (by chunk magnitude relative to each table's mean when the
  budget cannot hold them all; see ``emb_opt.dense_import``); the dense tables are then dropped, so the model's
  memory really shrinks. That is for trained weights: a freshly initialised model is better converted with
  ``copy_weights=False`` (its random rows would fill the store until the first resize prunes them).
* The tables' optimizer: ``optimizer`` / ``learning_rate`` / ``eps`` arguments, else what the collection's
  parameters declare (TorchRec's ``apply_optimizer_in_backward``), else FIITED's defaults, with a warning that
  names the learning rate (``emb_opt.declared_optimizer``).
* Build the dense optimizer after converting: the collections' parameters are gone (FIITED's optimizer is
  fused into its backward).
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any, Dict, List, Tuple, Union

import torch
from torch import nn
from torchrec import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from emb_opt.budget import total_full_bytes
from emb_opt.config import FiitedConfig, parse_optimizer
from emb_opt.declared_optimizer import optimizer_on_parameters
from emb_opt.fiited_ebc import FiitedEmbeddingBagCollection


def _collections(model: nn.Module) -> List[Tuple[nn.Module, str, EmbeddingBagCollection]]:
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is EmbeddingBagCollection:
                found.append((parent, name, child))
    return found


def _warn_if_untrained(tables: List[EmbeddingBagConfig], weights: Dict[str, torch.Tensor], imported: int,
                       fiited: FiitedEmbeddingBagCollection) -> None:
    """Warn when a budget-limited import copies weights that look freshly initialised (every value within the
    table's init range): they would fill the store until the first resize, denying chunks to the rows training
    touches, while ``copy_weights=False`` lets rows get chunks as training first touches them."""
    total = sum(t.num_embeddings * (t.embedding_dim // fiited.config.chunk_size) for t in tables)
    if imported >= total:
        return
    untrained = [t.name for t in tables
                 if float(weights[t.name].detach().abs().max()) <= t.get_weight_init_max() * (1 + 1e-6)]
    if untrained:
        warnings.warn(
            f"convert(): the weights of table(s) {untrained} all lie within their init range +-sqrt(1/rows), so they "
            f"look untrained; {imported} of {total} chunks were imported and fill the store until the first resize "
            f"(step {first_resize_step(fiited.config)}), so rows that training touches meanwhile read as zeros. For a "
            "model that has not been trained, pass copy_weights=False.",
            RuntimeWarning, stacklevel=3)


def first_resize_step(config) -> int:
    """When the first resize comes for a store that is full from the start (denials from the first step on)."""
    if config.pressure_resize_steps > 0:
        return min(config.warmup_steps, config.pressure_resize_steps)
    return config.warmup_steps


def convert(model: nn.Module, memory_budget: Union[int, float], copy_weights: bool = True, **options: Any) -> nn.Module:
    """Swap each ``EmbeddingBagCollection`` in ``model`` (in place) for a ``FiitedEmbeddingBagCollection``."""
    if type(model) is EmbeddingBagCollection:
        raise TypeError("convert() replaces collections inside a model; for a bare collection build "
                        "FiitedEmbeddingBagCollection(collection.embedding_bag_configs(), ...) directly")
    found = _collections(model)
    if not found:
        raise ValueError("convert(): the model contains no torchrec EmbeddingBagCollection")
    # the optimizer each collection's tables were declared with (apply_optimizer_in_backward); arguments win
    declared = [optimizer_on_parameters(ebc.parameters(), f"convert(): {name!r}") for _, name, ebc in found]
    fulls = [
        total_full_bytes([t.num_embeddings for t in ebc.embedding_bag_configs()],
                         [t.embedding_dim for t in ebc.embedding_bag_configs()],
                         parse_optimizer(options.get("optimizer") or mine.get("optimizer") or FiitedConfig.optimizer))
        for (_, _, ebc), mine in zip(found, declared)
    ]
    for (parent, name, ebc), full, mine in zip(found, fulls, declared):
        budget: Union[int, float] = memory_budget
        if isinstance(memory_budget, numbers.Integral) and not isinstance(memory_budget, bool):
            budget = max(1, int(memory_budget * full / sum(fulls)))
        fiited = FiitedEmbeddingBagCollection(
            ebc.embedding_bag_configs(), budget, device=ebc.device, is_weighted=ebc.is_weighted(), fused_params=mine,
            **options,
        )
        if copy_weights:
            weights = {t.name: ebc.embedding_bags[t.name].weight for t in ebc.embedding_bag_configs()}
            imported = fiited.import_dense_weights(weights)
            _warn_if_untrained(ebc.embedding_bag_configs(), weights, imported, fiited)
        fiited.train(ebc.training)
        setattr(parent, name, fiited)
    return model
