"""The row-pruning baseline (TorchRec ITEP-style) in the same harness and byte accounting as FIITED.

ITEP (``torchrec/modules/itep_modules.py``) prunes whole rows by decayed access counts and remaps virtual to
physical rows. Here that is a FIITED store with one chunk per row (``chunk_size = embedding_dim``) and the
"freq" utility, so it pays the same index overhead per stored row, resizes on the same schedule and answers to
the same memory budget -- FIITED's advantage is then measured at equal bytes, with only the granularity
(chunks vs rows) and the utility rule (gradients vs counts) differing.
"""
from __future__ import annotations

from typing import Any, List, Union

from torchrec.modules.embedding_configs import EmbeddingBagConfig

from emb_opt.fiited_ebc import FiitedEmbeddingBagCollection


class RowPruningEmbeddingBagCollection(FiitedEmbeddingBagCollection):
    """Whole-row pruning by access frequency under a memory budget (all tables must share one dimension)."""

    report_kind = "rowprune"

    def __init__(self, tables: List[EmbeddingBagConfig], memory_budget: Union[int, float], **options: Any) -> None:
        """Arguments as ``FiitedEmbeddingBagCollection``'s; ``chunk_size`` is the tables' one dimension and the
        utility defaults to access counts ("freq")."""
        dims = sorted({t.embedding_dim for t in tables})
        if len(dims) != 1:
            raise ValueError(f"row pruning stores whole rows in one pool: tables must share one embedding_dim, got {dims}")
        if options.pop("chunk_size", None) not in (None, dims[0]):
            raise ValueError("row pruning uses chunk_size = embedding_dim")
        options.setdefault("utility", "freq")
        super().__init__(tables, memory_budget, chunk_size=dims[0], **options)
