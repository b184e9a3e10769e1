"""Data sources for the Criteo experiments; each yields ``torchrec.datasets.utils.Batch``."""
from experiments.data.batch import CAT_NAMES, INT_NAMES, make_batch

__all__ = ["CAT_NAMES", "INT_NAMES", "make_batch"]
