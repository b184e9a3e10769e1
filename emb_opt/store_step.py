"""One step of a VHPI chunk store on a batch, without TorchRec: plan, admit, pooled forward, fused backward.

What ``FiitedEmbeddingBagCollection.forward`` does after it has put the KJT's features in its order, and what
the GPU checks do on raw ids (the GPU machines have no TorchRec):

1. ``plan_batch``: dedupe the batch's ids into unique rows (``chunk_bag_unique``, checking every id against its
   table's range) and look their chunk runs up (``store.lookup_rows``) -> ``BatchPlan``;
2. ``forward``: in a training step, admission (``emb_opt.admission``) gives touched rows the chunks they earn and
   the step counter advances; then the live chunks of each bag are pooled (``chunk_bag_forward``) into
   ``[B, out_dim]``;
3. backward (``ChunkBagLookup``): one ``chunk_bag_backward_update_`` applies the fused sparse optimizer to every
   live chunk the batch touched (a bfloat16 / int8 pool stores the results rounded stochastically, seeded by
   ``rounding_seed``) and adds their utilities; the would-be utility of each row's first missing
   chunk goes into the sketch, where admission reads it.

The pool is not an autograd leaf (like FBGEMM's fused TBE, the optimizer runs inside backward), so a training
forward hangs its output on a zero-size ``anchor`` that requires grad. A forward whose backward has not run
holds the store (``store.pending_backward``): rows do not move and resizes wait until it runs, or until
autograd frees the graph without it. Eval forwards change nothing; per-sample weights that require grad still
get their gradient (``EvalChunkBagLookup``).
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch

from cuda_ext import ops
from cuda_ext.layout import OPTIMIZER_CODES, UTILITY_CODES
from emb_opt.admission import admit
from emb_opt.chunk_store import ChunkValues, VhpiChunkStore
from emb_opt.store_counters import StoreCounter


@dataclass
class FeatureLayout:
    """How a batch's features map onto the store's tables and the output's columns.

    feature_table [F] int32 (table of each feature), feature_cols [F] int64 (first output column of each
    feature), out_dim (the output's width), pooling_mode (``cuda_ext.layout.POOLING_CODES``), feature_names
    (for error messages).
    """

    feature_table: torch.Tensor
    feature_cols: torch.Tensor
    out_dim: int
    pooling_mode: int
    feature_names: List[str]


class PendingBackward:
    """Marks a forward whose backward has not run yet (its slot matrix must stay valid until then)."""

    __slots__ = ("released",)

    def __init__(self) -> None:
        self.released = False


@dataclass
class BatchPlan:
    """What one batch's forward computed and its backward needs (shapes in chunk_bag_ops.cpp)."""

    row_keys: torch.Tensor  # [U] int64
    inverse: torch.Tensor  # [nnz] int32
    unique_offsets: torch.Tensor  # [U+1] int64
    unique_occ: torch.Tensor  # [nnz] int32
    occ_bag: torch.Tensor  # [nnz] int32
    entries: torch.Tensor  # [U] int32 index entry of each row (-1: not stored): its per-row optimizer state
    slots: torch.Tensor  # [U, max_chunks] int32
    offsets: torch.Tensor  # [F*B+1] int64
    weights: Optional[torch.Tensor]  # [nnz] float32 or None
    batch_size: int
    truncated: Optional[torch.Tensor] = None  # [U] bool: rows cut short by prefix dropout this step
    pending: Optional[PendingBackward] = None  # set while its backward has not run


# ---- 1. plan ----------------------------------------------------------------------------------------------
def plan_batch(store: VhpiChunkStore, layout: FeatureLayout, values: torch.Tensor, offsets: torch.Tensor,
               weights: Optional[torch.Tensor], batch_size: int) -> BatchPlan:
    """Dedupe and look up a batch: ``values`` [nnz] int32/int64 ids, ``offsets`` [F*B+1] (feature-major bags),
    ``weights`` [nnz] or None. Raises ``ValueError`` naming the feature, sample and id of a bad input."""
    if values.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"KeyedJaggedTensor ids must be int32 or int64, got {values.dtype}")
    offsets = offsets.to(torch.int64)
    num_features = len(layout.feature_names)
    if offsets.numel() != num_features * batch_size + 1:
        raise ValueError(f"KJT offsets have {offsets.numel()} entries; expected features x batch + 1 = "
                         f"{num_features * batch_size + 1}")
    negative = (offsets[1:] < offsets[:-1]).nonzero()
    if negative.numel():
        bag = int(negative[0])
        raise ValueError(f"feature {layout.feature_names[bag // batch_size]!r}: sample {bag % batch_size} has a "
                         f"negative length ({int(offsets[bag + 1] - offsets[bag])})")
    total = int(offsets[-1])
    if total != values.numel():
        _raise_length_mismatch(layout, offsets, total, values.numel(), batch_size)
    if weights is not None:
        if weights.numel() != values.numel():
            raise ValueError(f"the KeyedJaggedTensor holds {values.numel()} ids but {weights.numel()} per-sample "
                             "weights; there must be one weight per id")
        weights = weights.to(torch.float32)
    row_keys, inverse, unique_offsets, unique_occ, occ_bag, bad = ops.chunk_bag_unique(
        values, offsets, layout.feature_table, store.table_rows, batch_size)
    if int(bad[0]) >= 0:
        _raise_bad_id(store, layout, bad, offsets, batch_size)
    entries, slots = store.lookup_rows(row_keys)
    return BatchPlan(row_keys, inverse, unique_offsets, unique_occ, occ_bag, entries, slots, offsets, weights,
                     batch_size)


def _raise_bad_id(store: VhpiChunkStore, layout: FeatureLayout, bad: torch.Tensor, offsets: torch.Tensor,
                  batch_size: int) -> None:
    position, value, feature = bad.tolist()
    bag = int(torch.searchsorted(offsets.cpu(), torch.tensor(position), right=True)) - 1
    table = int(layout.feature_table[feature])
    raise ValueError(
        f"feature {layout.feature_names[feature]!r} (table {store.table_names[table]!r}): id {value} of sample "
        f"{bag % batch_size} is out of range [0, {int(store.table_rows[table])})"
    )


def _raise_length_mismatch(layout: FeatureLayout, offsets: torch.Tensor, total: int, num_values: int,
                           batch_size: int) -> None:
    if total < num_values:
        raise ValueError(f"the KeyedJaggedTensor holds {num_values} ids but its lengths add up to {total}: "
                         f"{num_values - total} id(s) belong to no bag")
    ends = offsets[batch_size::batch_size]  # end offset of each feature
    feature = int((ends > num_values).nonzero()[0])
    raise ValueError(f"feature {layout.feature_names[feature]!r}: the KeyedJaggedTensor's lengths add up to "
                     f"{int(ends[feature])} ids by the end of this feature, but it holds only {num_values}")


# ---- 2. forward ---------------------------------------------------------------------------------------------
def forward(store: VhpiChunkStore, layout: FeatureLayout, plan: BatchPlan, training: bool, anchor: torch.Tensor,
            prefix_dropout: float = 0.0, start: Optional[ChunkValues] = None) -> torch.Tensor:
    """Pooled ``[B, out_dim]`` float32 output of the planned batch. ``training``: a training step (admission,
    step counter, fused backward through ``anchor``); otherwise nothing in the store changes. ``start``: the
    values rows admitted without chunks start from (``emb_opt.admission.admit``)."""
    if training:
        # rows move only when no earlier forward's backward still holds their slots
        plan.slots = admit(store, plan.row_keys, plan.slots, plan.entries, allow_moves=store.pending_backward == 0,
                           start=start)
        if prefix_dropout > 0:
            drop_chunk_suffixes(store, plan, prefix_dropout)
        store.count(StoreCounter.STEP)
        hold_until_backward(store, plan)
        return ChunkBagLookup.apply(anchor, plan.weights, store, layout, plan)
    if plan.weights is not None and plan.weights.requires_grad and torch.is_grad_enabled():
        hold_until_backward(store, plan)
        return EvalChunkBagLookup.apply(plan.weights, store, layout, plan)  # weights get their gradient
    return pool(store, layout, plan)


def drop_chunk_suffixes(store: VhpiChunkStore, plan: BatchPlan, probability: float) -> None:
    """Nested (Matryoshka-style) chunk dropout: with ``probability`` a row of the batch uses only a random prefix
    of its live chunks in this step, so leading chunks learn to carry most of a row's information and rows that
    keep fewer chunks lose less. Deterministic per (row, step)."""
    slots = plan.slots
    live = (slots >= 0).sum(1)
    step = store.step
    coin = ops.mix_hash(plan.row_keys, 1 << 24, 2 * step + 1).to(torch.float32) / float(1 << 24)
    keep = 1 + ops.mix_hash(plan.row_keys, 1 << 30, 2 * step + 2) % live.clamp(min=1)
    dropped = (coin < probability) & (live > 1)
    cut = dropped.unsqueeze(1) & (torch.arange(slots.shape[1], device=slots.device).unsqueeze(0) >= keep.unsqueeze(1))
    plan.slots = slots.masked_fill(cut, -1)
    plan.truncated = dropped


def pool(store: VhpiChunkStore, layout: FeatureLayout, plan: BatchPlan) -> torch.Tensor:
    """``chunk_bag_forward``: the live chunks of each bag pooled into ``[B, out_dim]``."""
    return ops.chunk_bag_forward(
        store.pool_weights, plan.slots, plan.inverse, plan.offsets, plan.weights, layout.feature_table,
        store.table_chunks, layout.feature_cols, plan.batch_size, layout.out_dim, layout.pooling_mode,
        store.scale_argument,
    )


# ---- 3. backward --------------------------------------------------------------------------------------------
def backward_update(store: VhpiChunkStore, layout: FeatureLayout, plan: BatchPlan, grad_out: torch.Tensor,
                    need_weight_grad: bool) -> Optional[torch.Tensor]:
    """The fused optimizer step and utility update of a training step's backward (``grad_out`` [B, out_dim]);
    returns the per-sample weights' gradient [nnz] when asked for.

    NaN / inf in ``grad_out`` or the per-sample weights (``config.nonfinite``): with "skip", no non-finite value
    reaches the store -- non-finite weights skip the whole step; a non-finite gradient skips, on the CPU, each row
    it reaches (the kernel checks each row's gradient as it sums it; a NaN loss reaches every row, so such a step
    leaves the store unchanged), on CUDA the whole step (checked first) -- and the step is counted
    (``skipped_nonfinite``) and warned about once; with "raise", the step is checked first and raises
    ``FloatingPointError`` before anything changes."""
    config = store.config
    whole_step = config.nonfinite == "raise" or grad_out.is_cuda  # else the CPU kernel checks the gradient by row
    if not _all_finite(grad_out if whole_step else None, plan.weights):
        _note_nonfinite_step(store, plan)
        return occurrence_weight_grad(store, layout, plan, grad_out) if need_weight_grad else None
    candidate, weight_grad = ops.chunk_bag_backward_update_(
        store.pool_weights, store.optimizer_state, store.slot_utility, grad_out, plan.slots, plan.row_keys,
        plan.unique_offsets, plan.unique_occ, plan.occ_bag, plan.offsets, plan.weights, store.table_chunks,
        layout.feature_cols, plan.batch_size, layout.pooling_mode, OPTIMIZER_CODES[config.optimizer.value],
        config.learning_rate, config.eps, UTILITY_CODES[config.utility.value], need_weight_grad, plan.entries,
        rounding_seed(store), store.scale_argument,
    )
    wanting = (plan.slots >= 0).sum(1) < store.chunks_of(plan.row_keys)
    if plan.truncated is not None:  # a row cut by prefix dropout is not missing those chunks
        wanting &= ~plan.truncated
    if not grad_out.is_cuda:
        skipped = torch.isnan(candidate)  # rows the CPU kernel left alone: their gradient was not finite
        if bool(skipped.any()):
            _note_nonfinite_step(store, plan)
            wanting &= ~skipped
    store.sketch_add(plan.row_keys[wanting], candidate[wanting])
    return weight_grad if need_weight_grad else None


def rounding_seed(store: VhpiChunkStore) -> int:
    """Seed of a step's stochastic rounding (bfloat16 / int8 pools): from ``init_seed`` and the step, so each step draws
    afresh and a run repeats exactly."""
    return (store.config.init_seed * 1_000_003 + store.step) % (1 << 62)


def _all_finite(grad_out: Optional[torch.Tensor], weights: Optional[torch.Tensor]) -> bool:
    """Whether the gradient and the weights (those given) hold no NaN / inf: one float32 sum of each (a NaN or an
    inf anywhere makes it non-finite; so would a sum past 3.4e38, which only a diverged step reaches)."""
    total = torch.zeros((), dtype=torch.float32)
    for tensor in (grad_out, weights):
        if tensor is not None:
            total = total + tensor.sum(dtype=torch.float32).cpu()
    return bool(torch.isfinite(total))


def _note_nonfinite_step(store: VhpiChunkStore, plan: BatchPlan) -> None:
    """A step with NaN / inf in its gradient or weights: raise (``nonfinite="raise"``), or count it and warn once."""
    what = "output gradient" if plan.weights is None else "output gradient or per-sample weights"
    if store.config.nonfinite == "raise":
        raise FloatingPointError(f"FIITED: the {what} of this training step hold NaN or inf (nonfinite='raise')")
    store.count(StoreCounter.SKIPPED_NONFINITE)
    if not store.warned_nonfinite:
        store.warned_nonfinite = True
        warnings.warn(f"FIITED: the {what} of a training step hold NaN or inf; no row they reach was updated (a NaN "
                      "loss reaches every row: the step left the store unchanged). Warned once; see "
                      "counter_dict()['skipped_nonfinite']", RuntimeWarning, stacklevel=4)


def occurrence_weight_grad(store: VhpiChunkStore, layout: FeatureLayout, plan: BatchPlan,
                           grad_out: torch.Tensor) -> torch.Tensor:
    """Gradient of the pooled output with respect to each occurrence's weight, float32 [nnz], with nothing
    trained: the dot product of the occurrence's row (its live chunks; pruned ones are zeros) with the output
    gradient of its bag's columns (divided by the bag length under mean pooling). grad_out [B, out_dim]."""
    device, c, max_chunks = store.pool_weights.device, store.pool_weights.shape[1], plan.slots.shape[1]
    lengths = plan.offsets[1:] - plan.offsets[:-1]
    bag = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)  # [nnz]
    row_slots = plan.slots[plan.inverse.to(torch.int64)].to(torch.int64)  # [nnz, Cmax]
    rows = store.chunk_values(row_slots.clamp(min=0).reshape(-1)).reshape(bag.numel(), max_chunks, c)
    rows = (rows * (row_slots >= 0).unsqueeze(-1)).reshape(bag.numel(), max_chunks * c)
    cols = layout.feature_cols[bag // plan.batch_size].unsqueeze(1) + torch.arange(max_chunks * c, device=device)
    grads = grad_out.to(torch.float32)[(bag % plan.batch_size).unsqueeze(1), cols.clamp(max=grad_out.shape[1] - 1)]
    weight_grad = (grads * rows).sum(1)  # columns past a row's table read zero chunks: they add nothing
    if layout.pooling_mode == 1:
        weight_grad = weight_grad / lengths[bag].to(torch.float32)
    return weight_grad


def hold_until_backward(store: VhpiChunkStore, plan: BatchPlan) -> None:
    """Count a forward whose backward has not run: resizes wait for it, and rows do not move meanwhile (its
    backward writes through its slot matrix). Released by that backward, or when autograd frees the graph
    without one (a skipped backward, a dropped output), so a skipped step does not stop resizing."""
    plan.pending = PendingBackward()
    store.pending_backward += 1
    weakref.finalize(plan, release, store, plan.pending)


def release(store: VhpiChunkStore, token: Optional[PendingBackward]) -> None:
    if token is not None and not token.released:
        token.released = True
        store.pending_backward -= 1


class ChunkBagLookup(torch.autograd.Function):
    """A training step's pooled lookup; its backward is the fused update (``backward_update``)."""

    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, weights: Optional[torch.Tensor], store: VhpiChunkStore,
                layout: FeatureLayout, plan: BatchPlan) -> torch.Tensor:
        ctx.step = (store, layout, plan)
        ctx.need_weight_grad = weights is not None and weights.requires_grad
        return pool(store, layout, plan)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Tuple[None, Optional[torch.Tensor], None, None, None]:
        store, layout, plan = ctx.step
        try:
            weight_grad = backward_update(store, layout, plan, grad_out, ctx.need_weight_grad)
        finally:
            release(store, plan.pending)
        return None, weight_grad, None, None, None


class EvalChunkBagLookup(torch.autograd.Function):
    """The eval-mode lookup when per-sample weights require grad: their gradient, and nothing trained."""

    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, store: VhpiChunkStore, layout: FeatureLayout,
                plan: BatchPlan) -> torch.Tensor:
        ctx.step = (store, layout, plan)
        return pool(store, layout, plan)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Tuple[Optional[torch.Tensor], None, None, None]:
        store, layout, plan = ctx.step
        weight_grad = occurrence_weight_grad(store, layout, plan, grad_out)
        release(store, plan.pending)
        return weight_grad, None, None, None
