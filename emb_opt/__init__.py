"""emb_opt: smaller, better embedding tables for TorchRec recommendation models.

* ``FiitedEmbeddingBagCollection`` -- per-row, per-chunk embedding dimensions decided during training
  (FIITED) on a virtually-hashed, physically-indexed chunk store, within a memory budget;
* ``convert(model, memory_budget=...)`` -- swap every ``EmbeddingBagCollection`` of a model for one;
* ``export_inference(model)`` -- a read-only copy for serving: live chunks and row index only, traceable;
* ``memory_report(module)`` / ``plot_memory_report(df, path)`` -- where the embedding memory goes;
* ``lookup_coverage(collection, kjts)`` -- per feature, how many lookups of some data read stored chunks;
* ``save_checkpoint(obj, path)`` / ``load_checkpoint(path)`` -- atomic writes, reads that run no code.
"""
from emb_opt.checkpoint_files import load_checkpoint, save_checkpoint
from emb_opt.config import FiitedConfig, OptimizerType, UtilityRule

try:  # the TorchRec modules; without TorchRec (the GPU machines) the store, resize and kernels still import
    from emb_opt.fiited_ebc import FiitedEmbeddingBagCollection
    from emb_opt.row_pruning import RowPruningEmbeddingBagCollection
    from emb_opt.convert import convert  # after the submodule import, so `emb_opt.convert` is the function
    from emb_opt.inference import FiitedInferenceCollection, export_inference
    _TORCHREC_MISSING = None
except ImportError as _error:
    if not (getattr(_error, "name", None) or "").startswith(("torchrec", "fbgemm")):
        raise
    _TORCHREC_MISSING = _error

__all__ = [
    "FiitedConfig",
    "OptimizerType",
    "UtilityRule",
    "FiitedEmbeddingBagCollection",
    "RowPruningEmbeddingBagCollection",
    "convert",
    "export_inference",
    "FiitedInferenceCollection",
    "memory_report",
    "lookup_coverage",
    "plot_memory_report",
    "plot_telemetry",
    "save_checkpoint",
    "load_checkpoint",
]

# Imported when first asked for: the report (pandas, matplotlib).
_LAZY_EXPORTS = {
    "memory_report": "emb_opt.report",
    "lookup_coverage": "emb_opt.report",
    "plot_memory_report": "emb_opt.report.plots",
    "plot_telemetry": "emb_opt.report.plots",
}


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in ("FiitedEmbeddingBagCollection", "RowPruningEmbeddingBagCollection", "convert", "export_inference",
                "FiitedInferenceCollection") and _TORCHREC_MISSING:
        raise ImportError(f"emb_opt.{name} needs TorchRec, which does not import here: {_TORCHREC_MISSING}")
    raise AttributeError(f"module 'emb_opt' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY_EXPORTS))
