"""emb_opt: smaller, better embedding tables for TorchRec recommendation models.

* ``FiitedEmbeddingBagCollection`` -- per-row, per-chunk embedding dimensions decided during training
  (FIITED) on a virtually-hashed, physically-indexed chunk store, within a memory budget;
* ``convert(model, memory_budget=...)`` -- swap every ``EmbeddingBagCollection`` of a model for one;
* ``memory_report(module)`` / ``plot_memory_report(df, path)`` -- where the embedding memory goes.
"""
from emb_opt.config import FiitedConfig, OptimizerType, UtilityRule
from emb_opt.fiited_ebc import FiitedEmbeddingBagCollection

__all__ = [
    "FiitedConfig",
    "OptimizerType",
    "UtilityRule",
    "FiitedEmbeddingBagCollection",
]
