"""Count-min sketch of the utility of rows that are *not* stored (FIITED's admission candidates).

A row the store does not hold (or holds only a prefix of) still earns utility when a batch touches it; that
utility is remembered here, hashed, instead of per row, so memory stays O(sketch width) however many virtual
rows there are. ``sketch`` is ``[SKETCH_DEPTH, M]`` float32 (the store's buffer, sized by ``emb_opt.budget``);
each depth hashes a row key to one cell with its own seed, and the estimate is the minimum over depths -- an
over-estimate only through collisions, never an under-estimate (until ``forget`` clamps at zero).
"""
from __future__ import annotations

from typing import List

import torch

from cuda_ext import ops

SKETCH_SEEDS = (101, 202)  # one per depth (emb_opt.budget.SKETCH_DEPTH)


def sketch_cells(sketch: torch.Tensor, row_keys: torch.Tensor) -> List[torch.Tensor]:
    """The cell of each of ``row_keys`` [n] int64 in each depth of ``sketch``: ``SKETCH_DEPTH`` int64 [n]."""
    return [ops.mix_hash(row_keys, sketch.shape[1], seed) for seed in SKETCH_SEEDS[: sketch.shape[0]]]


def sketch_estimate(sketch: torch.Tensor, row_keys: torch.Tensor) -> torch.Tensor:
    """Estimated utility [n] of ``row_keys``: the minimum of their cells over the depths."""
    cells = sketch_cells(sketch, row_keys)
    estimate = sketch[0, cells[0]]
    for depth in range(1, len(cells)):
        estimate = torch.minimum(estimate, sketch[depth, cells[depth]])
    return estimate


def sketch_add(sketch: torch.Tensor, row_keys: torch.Tensor, amounts: torch.Tensor) -> None:
    """Add ``amounts`` [n] of utility to ``row_keys`` [n] (in place; repeated keys accumulate)."""
    if row_keys.numel() == 0:
        return
    for depth, cells in enumerate(sketch_cells(sketch, row_keys)):
        sketch[depth].index_add_(0, cells, amounts.to(sketch.dtype))


def sketch_forget(sketch: torch.Tensor, row_keys: torch.Tensor, amounts: torch.Tensor) -> None:
    """Remove ``amounts`` of utility (clamped at 0): those rows' candidates were just admitted."""
    if row_keys.numel() == 0:
        return
    for depth, cells in enumerate(sketch_cells(sketch, row_keys)):
        sketch[depth].index_add_(0, cells, -amounts.to(sketch.dtype))
        sketch[depth][cells] = sketch[depth][cells].clamp(min=0)
