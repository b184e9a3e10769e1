"""emb_opt: smaller, better embedding tables for TorchRec recommendation models.

* ``FiitedEmbeddingBagCollection`` -- per-row, per-chunk embedding dimensions decided during training
  (FIITED) on a virtually-hashed, physically-indexed chunk store, within a memory budget;
* ``convert(model, memory_budget=...)`` -- swap every ``EmbeddingBagCollection`` of a model for one;
* ``memory_report(module)`` / ``plot_memory_report(df, path)`` -- where the embedding memory goes.
"""
from emb_opt.config import FiitedConfig, OptimizerType, UtilityRule
from emb_opt.fiited_ebc import FiitedEmbeddingBagCollection
from emb_opt.row_pruning import RowPruningEmbeddingBagCollection
from emb_opt.convert import convert

__all__ = [
    "FiitedConfig",
    "OptimizerType",
    "UtilityRule",
    "FiitedEmbeddingBagCollection",
    "RowPruningEmbeddingBagCollection",
    "convert",
    "memory_report",
    "plot_memory_report",
    "plot_telemetry",
]

_REPORT_EXPORTS = {"memory_report": "emb_opt.report", "plot_memory_report": "emb_opt.report_plots",
                   "plot_telemetry": "emb_opt.report_plots"}


def __getattr__(name: str):  # the report (pandas, matplotlib) is imported when first asked for
    if name in _REPORT_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_REPORT_EXPORTS[name]), name)
    raise AttributeError(f"module 'emb_opt' has no attribute {name!r}")
