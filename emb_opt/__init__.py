"""emb_opt: smaller, better embedding tables for TorchRec recommendation models.

* ``FiitedEmbeddingBagCollection`` -- per-row, per-chunk embedding dimensions decided during training
  (FIITED) on a virtually-hashed, physically-indexed chunk store, within a memory budget;
* ``convert(model, memory_budget=...)`` -- swap every ``EmbeddingBagCollection`` of a model for one;
* ``memory_report(module)`` / ``plot_memory_report(df, path)`` -- where the embedding memory goes.
"""
from emb_opt.config import FiitedConfig, OptimizerType, UtilityRule

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

# Imported when first asked for: the modules (TorchRec) and the report (pandas, matplotlib). So the store,
# the resize step and the kernels (emb_opt.chunk_store, emb_opt.resize) import on a machine without TorchRec,
# such as the GPU machines that run experiments/gpu_store_check.py.
_LAZY_EXPORTS = {
    "FiitedEmbeddingBagCollection": "emb_opt.fiited_ebc",
    "RowPruningEmbeddingBagCollection": "emb_opt.row_pruning",
    "convert": "emb_opt.convert",
    "memory_report": "emb_opt.report",
    "plot_memory_report": "emb_opt.report_plots",
    "plot_telemetry": "emb_opt.report_plots",
}


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emb_opt' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY_EXPORTS))
