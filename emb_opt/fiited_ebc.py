"""``FiitedEmbeddingBagCollection``: a drop-in TorchRec EmbeddingBagCollection whose rows keep only the
embedding chunks their measured utility earns, within a memory budget (FIITED, arXiv 2401.04408).

Same input (``KeyedJaggedTensor``) and output (``KeyedTensor``, ``[B, sum of embedding dims]``) as
``torchrec.EmbeddingBagCollection``; works inside ``torchrec.models.dlrm.DLRM``. Differences a user sees:
* the optimizer is fused (applied in backward, like TorchRec's fused/sharded EBC): the module has no
  ``nn.Parameter``s for the tables, so the dense optimizer of the training loop never sees them;
* memory is the budget (``memory_budget``: bytes, or a fraction of the full tables' bytes including their
  optimizer state), whatever the number of virtual rows; ``memory_report`` says where it went;
* every ``resize_interval`` training steps after ``warmup_steps`` the dimensions are re-decided, and sooner
  when the store is full and admissions are being denied (``pressure_resize_steps``; ``emb_opt.resize``);
  ``telemetry`` keeps one record per resize.

Inputs are checked: missing features, ids out of ``[0, num_embeddings)`` or negative, non-integer ids, and
variable batch sizes per feature raise a ``ValueError`` naming the feature, the sample and the id. Features
of the KJT that no table reads are ignored, as ``EmbeddingBagCollection`` does. A training step is a forward
with grad enabled in ``train()`` mode; eval forwards change nothing (per-sample weights that require grad still
get their gradient).
"""
from __future__ import annotations

import copy
import weakref
from typing import Any, Dict, List, Optional, Union

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface, get_embedding_names_by_table
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from cuda_ext import ops
from emb_opt.budget import chunk_counts, plan_store, resolve_budget, total_full_bytes
from emb_opt.chunk_bag_lookup import BatchPlan, ChunkBagLookup, EvalChunkBagLookup, PendingBackward
from emb_opt.chunk_store import STEP, VhpiChunkStore
from emb_opt.config import FiitedConfig, merge_config
from emb_opt.resize import resize_due, resize_store, telemetry_record
from cuda_ext.reference.vhpi import MAX_CHUNKS, MAX_ROWS, MAX_TABLES, key_row, key_table


class FiitedEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """Pooled embeddings with per-row, per-chunk dimensions decided during training.

    Args:
        tables: TorchRec ``EmbeddingBagConfig``s (``num_embeddings`` = virtual rows, up to 2^47).
        memory_budget: bytes (int) or fraction of the full tables' bytes (float in (0, 1]).
        chunk_size: floats per chunk; every ``embedding_dim`` must be a multiple.
        optimizer: "rowwise_adagrad" (default), "adagrad", "sgd" (or FBGEMM / torch spellings).
        learning_rate, eps: of the fused optimizer.
        device: where the store lives (CPU kernels; CUDA kernels when built with CUDA).
        is_weighted: read per-sample weights from the KJT.
        config: a ``FiitedConfig`` with the remaining options; keyword ``options`` override its fields.
    """

    report_kind = "fiited"  # what memory reports and checkpoints call this collection

    def __init__(
        self,
        tables: List[EmbeddingBagConfig],
        memory_budget: Union[int, float],
        chunk_size: Optional[int] = None,
        optimizer: Any = None,
        learning_rate: Optional[float] = None,
        device: Optional[torch.device] = None,
        is_weighted: bool = False,
        config: Optional[FiitedConfig] = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.config = merge_config(config, chunk_size=chunk_size, optimizer=optimizer, learning_rate=learning_rate, **options)
        if not tables:
            raise ValueError("FiitedEmbeddingBagCollection needs at least one table")
        if len(tables) > MAX_TABLES:
            raise ValueError(f"at most {MAX_TABLES} tables per collection, got {len(tables)}")
        self._tables = [copy.deepcopy(t) for t in tables]
        names = [t.name for t in self._tables]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate table names in {names}")
        for t in self._tables:
            if t.pooling not in (PoolingType.SUM, PoolingType.MEAN):
                raise ValueError(f"table {t.name!r}: pooling must be SUM or MEAN, got {t.pooling.name}")
        poolings = {t.pooling for t in self._tables}
        # one pooling for all: the kernels pool that way; mixed: they sum, and MEAN features are divided after
        self._pooling_mode = 1 if poolings == {PoolingType.MEAN} else 0
        for t in self._tables:
            if not t.feature_names:
                t.feature_names = [t.name]
            if not 1 <= t.num_embeddings <= MAX_ROWS:
                raise ValueError(f"table {t.name!r}: num_embeddings must be in [1, 2^47], got {t.num_embeddings}")
        mixed_mean = [len(poolings) > 1 and t.pooling == PoolingType.MEAN for t in self._tables for _ in t.feature_names]
        self._divides_means = any(mixed_mean)
        self._is_weighted = is_weighted
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        rows = [t.num_embeddings for t in self._tables]
        dims = [t.embedding_dim for t in self._tables]
        chunks = chunk_counts(dims, self.config.chunk_size, names)
        self.full_bytes = total_full_bytes(rows, dims, self.config.optimizer)
        self.budget_bytes = resolve_budget(memory_budget, self.full_bytes)
        num_features = sum(len(t.feature_names) for t in self._tables)
        plan = plan_store(self.budget_bytes, self.full_bytes, len(self._tables), max(chunks), self.config, num_features)
        scales = [self._init_scale(t) for t in self._tables]
        self.store = VhpiChunkStore(names, rows, chunks, scales, plan, self.config, self._device)
        # feature layout: EBC order (tables in order, each table's features in order)
        self._feature_names: List[str] = [f for t in self._tables for f in t.feature_names]
        self._embedding_names: List[str] = [n for names_ in get_embedding_names_by_table(self._tables) for n in names_]
        self._feature_dims: List[int] = [t.embedding_dim for t in self._tables for _ in t.feature_names]
        feature_table = [i for i, t in enumerate(self._tables) for _ in t.feature_names]
        cols = [0]
        for d in self._feature_dims[:-1]:
            cols.append(cols[-1] + d)
        self.register_buffer("_feature_table", torch.tensor(feature_table, dtype=torch.int32, device=self._device), persistent=False)
        self.register_buffer("_feature_cols", torch.tensor(cols, dtype=torch.int64, device=self._device), persistent=False)
        # mixed pooling: which features to divide by their bag lengths, and the output columns of each feature
        self.register_buffer("_mean_features", torch.tensor(mixed_mean, device=self._device), persistent=False)
        self.register_buffer("_feature_widths", torch.tensor(self._feature_dims, device=self._device), persistent=False)
        # follows .half() / .double() / .to(dtype) of the model (the store stays float32): the output's dtype
        self.register_buffer("_output_dtype", torch.zeros(0, device=self._device), persistent=False)
        self._out_dim = sum(self._feature_dims)
        self._anchor = torch.zeros(0, requires_grad=True, device=self._device)
        self._pending_backward = 0
        self.telemetry: List[Dict[str, Any]] = []

    @staticmethod
    def _init_scale(table: EmbeddingBagConfig) -> float:
        low, high = table.weight_init_min, table.weight_init_max
        if low is not None and high is not None:
            if abs(low + high) > 1e-12:
                raise ValueError(f"table {table.name!r}: FIITED initialises chunks symmetrically; got [{low}, {high}]")
            return float(high)
        return float((1.0 / table.num_embeddings) ** 0.5)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)  # the store keeps float32 under dtype casts (VhpiChunkStore._apply)
        self._device = self.store.pool_weights.device
        if self._anchor.device != self._device:
            self._anchor = torch.zeros(0, requires_grad=True, device=self._device)
        return self

    # ---- EmbeddingBagCollectionInterface --------------------------------------------------------------
    def embedding_bag_configs(self) -> List[EmbeddingBagConfig]:
        return self._tables

    def is_weighted(self) -> bool:
        return self._is_weighted

    @property
    def device(self) -> torch.device:
        return self._device

    # ---- input handling --------------------------------------------------------------------------------
    def _ordered_features(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        keys = features.keys()
        if keys == self._feature_names:
            return features
        index = {k: i for i, k in enumerate(keys)}
        missing = [f for f in self._feature_names if f not in index]
        if missing:
            raise ValueError(
                f"FiitedEmbeddingBagCollection: the KeyedJaggedTensor lacks feature(s) {missing} that tables read "
                f"(expected {self._feature_names}); it has {keys}"
            )
        return features.permute([index[f] for f in self._feature_names])

    def _raise_bad_id(self, bad: torch.Tensor, offsets: torch.Tensor, batch_size: int) -> None:
        position, value, feature = bad.tolist()
        bag = int(torch.searchsorted(offsets, torch.tensor(position), right=True)) - 1
        table = self._tables[int(self._feature_table[feature])]
        raise ValueError(
            f"feature {self._feature_names[feature]!r} (table {table.name!r}): id {value} of sample {bag % batch_size} "
            f"is out of range [0, {table.num_embeddings})"
        )

    def _raise_length_mismatch(self, offsets: torch.Tensor, total: int, num_values: int, batch_size: int) -> None:
        if total < num_values:
            raise ValueError(f"the KeyedJaggedTensor holds {num_values} ids but its lengths add up to {total}: "
                             f"{num_values - total} id(s) belong to no bag")
        ends = offsets[batch_size::batch_size]  # end offset of each feature
        feature = int((ends > num_values).nonzero()[0])
        raise ValueError(f"feature {self._feature_names[feature]!r}: the KeyedJaggedTensor's lengths add up to "
                         f"{int(ends[feature])} ids by the end of this feature, but it holds only {num_values}")

    def _plan(self, features: KeyedJaggedTensor) -> BatchPlan:
        if features.variable_stride_per_key():
            raise ValueError("FiitedEmbeddingBagCollection does not take variable batch sizes per feature (VBE)")
        kjt = self._ordered_features(features)
        values = kjt.values()
        if values.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"KeyedJaggedTensor ids must be int32 or int64, got {values.dtype}")
        batch_size = kjt.stride()
        offsets = kjt.offsets().to(torch.int64)
        if offsets.numel() != len(self._feature_names) * batch_size + 1:
            raise ValueError(f"KJT offsets have {offsets.numel()} entries; expected features x batch + 1")
        total = int(offsets[-1])
        if total != values.numel():
            self._raise_length_mismatch(offsets, total, values.numel(), batch_size)
        weights = None
        if self._is_weighted:
            weights = kjt.weights_or_none()
            if weights is None:
                raise ValueError("this collection is weighted (is_weighted=True) but the KJT carries no weights")
            weights = weights.to(torch.float32)
        row_keys, inverse, unique_offsets, unique_occ, occ_bag, bad = ops.chunk_bag_unique(
            values, offsets, self._feature_table, self.store.table_rows, batch_size
        )
        if int(bad[0]) >= 0:
            self._raise_bad_id(bad, offsets, batch_size)
        entries, slots = self.store.lookup_rows(row_keys)
        return BatchPlan(row_keys, inverse, unique_offsets, unique_occ, occ_bag, slots, offsets, weights, batch_size,
                         entries=entries)

    # ---- forward / backward --------------------------------------------------------------------------
    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        training = self.training and torch.is_grad_enabled()
        if training:
            self._maybe_resize()
        plan = self._plan(features)
        if training:
            # rows move only when no earlier forward's backward still holds their slots
            plan.slots = self.store.admit(plan.row_keys, plan.slots, allow_moves=self._pending_backward == 0,
                                          entries=plan.entries)
            if self.config.prefix_dropout > 0:
                self._drop_chunk_suffixes(plan)
            self.store.counters[STEP] += 1
            self._hold_until_backward(plan)
            out = ChunkBagLookup.apply(self._anchor, plan.weights, self, plan)
        elif plan.weights is not None and plan.weights.requires_grad and torch.is_grad_enabled():
            self._hold_until_backward(plan)
            out = EvalChunkBagLookup.apply(plan.weights, self, plan)  # weights get their gradient; nothing trains
        else:
            out = self._pool(plan)
        if getattr(self, "_divides_means", False):  # absent in modules pickled before mixed pooling (none mixed)
            out = out * self._mean_scale(plan)
        if out.dtype != self._output_dtype.dtype:
            out = out.to(self._output_dtype.dtype)
        return KeyedTensor(keys=self._embedding_names, length_per_key=self._feature_dims, values=out)

    def _mean_scale(self, plan: BatchPlan) -> torch.Tensor:
        """[B, out_dim] factors that turn the summed bags of MEAN-pooled features into means (1 / bag length,
        0-length bags stay 0) when tables mix SUM and MEAN; autograd carries them into the fused backward, so
        gradients, utilities and per-sample-weight gradients are those of mean pooling, as a MEAN-only
        collection's kernels compute them."""
        lengths = (plan.offsets[1:] - plan.offsets[:-1]).reshape(len(self._feature_dims), plan.batch_size)
        inverse = 1.0 / lengths.clamp(min=1).to(torch.float32)
        factors = torch.where(self._mean_features.unsqueeze(1), inverse, torch.ones_like(inverse))
        return factors.repeat_interleave(self._feature_widths, dim=0, output_size=self._out_dim).t()

    def _drop_chunk_suffixes(self, plan: BatchPlan) -> None:
        """Nested (Matryoshka-style) chunk dropout: with probability ``prefix_dropout`` a row of the batch uses
        only a random prefix of its live chunks in this step, so leading chunks learn to carry most of a row's
        information and rows that keep fewer chunks lose less. Deterministic per (row, step)."""
        slots = plan.slots
        live = (slots >= 0).sum(1)
        step = self.store.step
        coin = ops.mix_hash(plan.row_keys, 1 << 24, 2 * step + 1).to(torch.float32) / float(1 << 24)
        keep = 1 + ops.mix_hash(plan.row_keys, 1 << 30, 2 * step + 2) % live.clamp(min=1)
        dropped = (coin < self.config.prefix_dropout) & (live > 1)
        cut = dropped.unsqueeze(1) & (torch.arange(slots.shape[1], device=slots.device).unsqueeze(0) >= keep.unsqueeze(1))
        plan.slots = slots.masked_fill(cut, -1)
        plan.truncated = dropped

    def _pool(self, plan: BatchPlan) -> torch.Tensor:
        return ops.chunk_bag_forward(
            self.store.pool_weights, plan.slots, plan.inverse, plan.offsets, plan.weights, self._feature_table,
            self.store.table_chunks, self._feature_cols, plan.batch_size, self._out_dim, self._pooling_mode,
        )

    def _backward_update(self, plan: BatchPlan, grad_out: torch.Tensor, need_weight_grad: bool) -> Optional[torch.Tensor]:
        store = self.store
        candidate, weight_grad = ops.chunk_bag_backward_update_(
            store.pool_weights, store.optimizer_state, store.slot_utility, grad_out, plan.slots, plan.row_keys,
            plan.unique_offsets, plan.unique_occ, plan.occ_bag, plan.offsets, plan.weights, store.table_chunks,
            self._feature_cols, plan.batch_size, self._pooling_mode, self.config.optimizer.code,
            self.config.learning_rate, self.config.eps, self.config.utility.code, need_weight_grad, plan.entries,
        )
        live = (plan.slots >= 0).sum(1)
        wanting = live < store.chunks_of(plan.row_keys)
        if plan.truncated is not None:  # a row cut by prefix dropout is not missing those chunks
            wanting &= ~plan.truncated
        store.sketch_add(plan.row_keys[wanting], candidate[wanting])
        self._release(plan.pending)
        return weight_grad if need_weight_grad else None

    def _hold_until_backward(self, plan: BatchPlan) -> None:
        """Count a forward whose backward has not run: resizes wait for it, and rows do not move meanwhile (its
        backward writes through its slot matrix). Released by that backward, or when autograd frees the graph
        without one (a skipped backward, a dropped output), so a skipped step does not stop resizing."""
        plan.pending = PendingBackward()
        self._pending_backward += 1
        weakref.finalize(plan, self._release, plan.pending)

    def _release(self, token: Optional[PendingBackward]) -> None:
        if token is not None and not token.released:
            token.released = True
            self._pending_backward -= 1

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_pending_backward"] = 0  # a copy (deepcopy, pickle) holds no autograd graph of these forwards
        return state

    # ---- resizing ----------------------------------------------------------------------------------
    def _maybe_resize(self) -> None:
        if self._pending_backward == 0 and resize_due(self.store):
            self.resize_now()

    def resize_now(self) -> Dict[str, Any]:
        """Run a resize step immediately (normally scheduled); returns its telemetry record."""
        if self._pending_backward:
            raise RuntimeError(
                f"resize_now(): {self._pending_backward} forward(s) of this collection still wait for their backward, "
                "and a resize moves the slots their backward updates; call it after backward (or drop those outputs)")
        record = resize_store(self.store)
        self.telemetry.append(record)
        return record

    def import_dense_weights(self, weights: Dict[str, torch.Tensor]) -> int:
        """Seed the empty store from dense tables (name -> [rows, dim]); see ``emb_opt.dense_import``."""
        from emb_opt.dense_import import import_dense_weights

        return import_dense_weights(self, weights)

    @torch.no_grad()
    def to_dense_weights(self, table: str) -> torch.Tensor:
        """The table as a dense ``[num_embeddings, embedding_dim]`` tensor (chunks not stored -- pruned, or of rows
        no training forward has touched yet -- are zeros).

        Allocates the full table: meant for inspection, export and tests on tables that fit in memory.
        """
        names = [t.name for t in self._tables]
        if table not in names:
            raise ValueError(f"unknown table {table!r}; tables are {names}")
        t = names.index(table)
        config = self._tables[t]
        c = self.config.chunk_size
        dense = torch.zeros(config.num_embeddings, config.embedding_dim, device=self._device)
        slots, keys = self.store.live_keys()
        mine = key_table(keys) == t
        rows = key_row(keys[mine])
        chunk = keys[mine] & (MAX_CHUNKS - 1)
        cols = (chunk * c).unsqueeze(1) + torch.arange(c, device=self._device)
        dense[rows.unsqueeze(1), cols] = self.store.pool_weights[slots[mine]]
        return dense

    def set_learning_rate(self, learning_rate: float) -> None:
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.config.learning_rate = float(learning_rate)

    # ---- memory ----------------------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Bytes allocated now: the store plus the per-feature layout (never above ``budget_bytes``)."""
        layout = self._feature_table.numel() * 4 + self._feature_cols.numel() * 8
        return self.store.total_bytes() + layout

    def snapshot(self) -> Dict[str, Any]:
        """A telemetry record of the store as it is now."""
        return telemetry_record(self.store)

    def get_extra_state(self) -> Dict[str, Any]:
        """Self-description carried by checkpoints, so ``emb_opt.report`` can read a bare state_dict."""
        return {
            "kind": self.report_kind,
            "tables": [
                {"name": t.name, "num_embeddings": t.num_embeddings, "embedding_dim": t.embedding_dim,
                 "feature_names": list(t.feature_names)}
                for t in self._tables
            ],
            "chunk_size": self.config.chunk_size,
            "optimizer": self.config.optimizer.value,
            "utility": self.config.utility.value,
            "budget_bytes": self.budget_bytes,
            "full_bytes": self.full_bytes,
            "max_slots": self.store.plan.max_slots,
            "max_rows": self.store.plan.max_rows,
            "telemetry": self.telemetry,
        }

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # the checkpoint's self-description names what differs (optimizer, chunk size, budget) before the store's
        # own shape checks; a mismatch refuses the whole load, so the module keeps its training state
        if self._pending_backward:
            error_msgs.append(f"{prefix or 'FIITED collection '}{self._pending_backward} forward(s) still wait for their "
                              "backward, which would write into the loaded store; load before the forward or after "
                              "the backward")
            self.store._refuse_next_load = True
            return
        saved = state_dict.get(prefix + "_extra_state")
        if isinstance(saved, dict) and saved.get("kind") == self.report_kind:
            mine = {"optimizer": self.config.optimizer.value, "chunk_size": self.config.chunk_size,
                    "budget_bytes": self.budget_bytes}
            differ = [f"{k} {saved[k]!r} (this module: {v!r})" for k, v in mine.items() if k in saved and saved[k] != v]
            if differ:
                error_msgs.append(f"{prefix or 'FIITED collection '}checkpoint was saved with {', '.join(differ)}; "
                                  "build the module with the checkpoint's settings to load it")
                self.store._refuse_next_load = True
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.telemetry = list(state.get("telemetry", []))
