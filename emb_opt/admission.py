"""Admission: which rows a training batch touches get (more) chunks, within the memory budget.

A touched row whose next chunk position k has sketch estimate >= ``thresholds[k]`` (the cumulative maximum over
positions, so a row's chunks stay a prefix) earns chunks up to its table's C_t -- before the first resize the
thresholds are 0, so rows get all their chunks on first touch while the budget allows. When room runs short,
the rows with the highest candidate utility are served first (ties in a pseudo-random order, so no table or
feature is favoured): whole requests while pool and index fit the budget, then what is left to the first row
that does not fit whole. The others get no (more) chunks and read as zeros (counted in
``denied_admissions``, warned once per store) until a resize frees room. An admitted row's candidate utility
leaves the sketch and becomes the utility of its new chunks (``VhpiChunkStore.place_rows`` writes them).
With ``config.doorkeeper``, a row without chunks whose sketch estimate is 0 (no earlier access on record) gets
none in this step: its first access only leaves its utility in the sketch -- always, or with
``doorkeeper_when_full`` only in a step whose requests do not all fit the budget (a store with room admits on
first touch, as without the doorkeeper).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch

from cuda_ext import ops
from emb_opt.chunk_store import ChunkValues, VhpiChunkStore
from emb_opt.store_counters import StoreCounter


def admit(store: VhpiChunkStore, row_keys: torch.Tensor, slots: torch.Tensor, entries: Optional[torch.Tensor] = None,
          allow_moves: bool = True, start: Optional[ChunkValues] = None) -> torch.Tensor:
    """Give touched rows the chunks their candidate utility earns (see the module docstring).

    row_keys [U] int64, slots [U, max_chunks] int32 from ``store.lookup_rows``; returns slots with the new
    chunks. ``entries`` [U] int32 from ``lookup_rows``, if given, gets the index entries of newly stored rows (in
    place). ``allow_moves=False`` (a forward whose backward is pending holds slots of this store): only rows
    without chunks get some; rows that have chunks keep them where they are and grow in a later step.
    ``start``: the values new rows start from (``VhpiChunkStore.place_rows``), else their hashed init.
    """
    chunks = store.chunks_of(row_keys).to(torch.int64)
    live = (slots >= 0).sum(1)
    wanting = (live < chunks).nonzero().reshape(-1)
    if wanting.numel() == 0:
        return slots
    estimate = store.sketch_estimate(row_keys[wanting])
    theta = torch.cummax(store.thresholds, 0).values
    earned = (theta.unsqueeze(0) <= estimate.unsqueeze(1)).sum(1)
    wanted = _wanted(earned, chunks[wanting], live[wanting], allow_moves)
    if store.config.doorkeeper:  # a row without chunks needs evidence of an earlier access
        unproven = (live[wanting] == 0) & (estimate <= 0)
        if store.config.doorkeeper_when_full and bool(unproven.any()):
            have = live[wanting]
            need_slots, need_rows = int((have + wanted)[wanted > 0].sum()), int(((have == 0) & (wanted > 0)).sum())
            free_slots, free_rows = store.ensure_free(need_slots, need_rows)
            if free_slots >= need_slots and free_rows >= need_rows:
                unproven = torch.zeros_like(unproven)  # every request fits: nothing to keep out
        wanted = torch.where(unproven, torch.zeros_like(wanted), wanted)
    keep = wanted > 0
    rows, wanted, estimate = wanting[keep], wanted[keep], estimate[keep]
    if rows.numel() == 0:
        return slots
    have = live[rows]
    need_slots = int((have + wanted).sum())  # a row that grows moves to a new run of its new length
    need_rows = int((have == 0).sum())
    free_slots, free_rows = store.ensure_free(need_slots, need_rows)
    granted = wanted
    if free_slots < need_slots or free_rows < need_rows:
        order = torch.argsort(ops.mix_hash(row_keys[rows], 1 << 62, store.step))
        order = order[torch.argsort(estimate[order], descending=True, stable=True)]
        rows, wanted, estimate, have = rows[order], wanted[order], estimate[order], have[order]
        granted = _grant_within_budget(store, wanted, have)
        denied = int(wanted.sum() - granted.sum())
        store.count(StoreCounter.DENIED_ADMISSIONS, denied)
        _warn_full_once(store, denied)
    got = granted > 0
    if not bool(got.any()):
        return slots
    rows, granted, estimate, have = rows[got], granted[got], estimate[got], have[got]
    runs, added = store.place_rows(row_keys[rows], slots[rows], have, granted, estimate, start)
    slots[rows] = runs
    if entries is not None and added.numel():
        entries[rows[have == 0]] = added.to(entries.dtype)
    store.sketch_forget(row_keys[rows], estimate)
    return slots


def _wanted(earned: torch.Tensor, chunks: torch.Tensor, live: torch.Tensor, allow_moves: bool) -> torch.Tensor:
    """Chunks each row asks for: what its utility earns up to its table's chunks, beyond what it holds (rows
    holding chunks ask for none while rows may not move)."""
    wanted = (torch.minimum(earned, chunks) - live).clamp(min=0)
    return torch.where(live > 0, torch.zeros_like(wanted), wanted) if not allow_moves else wanted


def _grant_within_budget(store: VhpiChunkStore, wanted: torch.Tensor, have: torch.Tensor) -> torch.Tensor:
    """Chunks granted to rows in priority order (``wanted`` more each, holding ``have``): whole requests while
    pool and index fit the budget, then what is left to the first row that does not fit whole. Pool and index
    are re-sized to exactly what is granted where the budget needs it."""
    plan = store.plan
    used_slots, used_rows = store.used()
    need_slots, need_rows = have + wanted, (have == 0).to(torch.int64)
    slots, rows = used_slots + torch.cumsum(need_slots, 0), used_rows + torch.cumsum(need_rows, 0)
    whole = int(plan.fits_many(slots, rows, plan.available_bytes).sum())  # a prefix: bytes only grow
    granted = torch.where(torch.arange(wanted.numel(), device=wanted.device) < whole, wanted, torch.zeros_like(wanted))
    base: Tuple[int, int] = (int(slots[whole - 1]), int(rows[whole - 1])) if whole else (used_slots, used_rows)
    if whole < wanted.numel():
        h, new_row = int(have[whole]), int(need_rows[whole])
        g = next((g for g in range(int(wanted[whole]), 0, -1) if plan.fits(base[0] + h + g, base[1] + new_row)), 0)
        granted[whole] = g
        if g:
            base = (base[0] + h + g, base[1] + new_row)
    if base[0] > store.capacity or base[1] > store.row_capacity:
        grown = (max(base[0], store.capacity), max(base[1], store.row_capacity))
        store.reallocate(*(grown if plan.fits(*grown) else base))
    return granted


def _warn_full_once(store: VhpiChunkStore, denied: int) -> None:
    if store.warned_full:
        return
    store.warned_full = True
    warnings.warn(
        f"FIITED store full ({store.capacity} chunk slots and {store.row_capacity} rows = the memory budget): "
        f"{denied} chunk(s) of rows in this batch got no room and read as zeros until a resize frees room. "
        "(Warned once; see counters['denied_admissions'].)",
        RuntimeWarning,
        stacklevel=4,
    )
