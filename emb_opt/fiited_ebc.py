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
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface, get_embedding_names_by_table
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from cuda_ext.layout import MAX_ROWS, MAX_TABLES, POOLING_CODES, key_chunk, key_row, key_table
from emb_opt import store_step
from emb_opt.budget import chunk_counts, plan_store, resolve_budget, total_full_bytes
from emb_opt.chunk_store import VhpiChunkStore
from emb_opt.config import FiitedConfig, merge_config
from emb_opt.declared_optimizer import optimizer_from_fused_params, resolve_optimizer_options
from emb_opt.dense_import import import_dense_weights
from emb_opt.fallback_rows import FallbackLookup, FallbackRows
from emb_opt.resize import resize_due, resize_store
from emb_opt.store_step import BatchPlan, FeatureLayout


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
        fused_params: the embedding optimizer as TorchRec / FBGEMM declare it (``{"optimizer":
            EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.05, "eps": 1e-8}``), used where neither the
            arguments nor ``config`` set it (``emb_opt.declared_optimizer``).

    Example::

        tables = [EmbeddingBagConfig(name="t0", embedding_dim=64, num_embeddings=10**6, feature_names=["f0"])]
        ebc = FiitedEmbeddingBagCollection(tables, memory_budget=0.05, learning_rate=0.05)
        pooled = ebc(kjt)  # KeyedTensor, [B, 64]; ebc.memory_bytes() <= ebc.budget_bytes
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
        fused_params: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> None:
        super().__init__()
        declared = optimizer_from_fused_params(fused_params) if config is None else {}
        explicit = dict(optimizer=optimizer, learning_rate=learning_rate, eps=options.pop("eps", None))
        resolved = resolve_optimizer_options(explicit, declared, type(self).__name__, config)
        self.config = merge_config(config, chunk_size=chunk_size, **resolved, **options)
        # whether the user chose the optimizer (a sharder's fused_params apply only where they did not)
        self.optimizer_chosen = config is not None or bool(resolved)
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
        self._pooling_mode = POOLING_CODES["mean" if poolings == {PoolingType.MEAN} else "sum"]
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
        # feature layout: EBC order (tables in order, each table's features in order)
        self._feature_names: List[str] = [f for t in self._tables for f in t.feature_names]
        self._embedding_names: List[str] = [n for names_ in get_embedding_names_by_table(self._tables) for n in names_]
        self._feature_dims: List[int] = [t.embedding_dim for t in self._tables for _ in t.feature_names]
        feature_table = [i for i, t in enumerate(self._tables) for _ in t.feature_names]
        cols = [0]
        for d in self._feature_dims[:-1]:
            cols.append(cols[-1] + d)
        kw: Dict[str, Any] = dict(device=self._device)
        self.register_buffer("_feature_table", torch.tensor(feature_table, dtype=torch.int32, **kw), persistent=False)
        self.register_buffer("_feature_cols", torch.tensor(cols, dtype=torch.int64, **kw), persistent=False)
        if self._divides_means:  # mixed pooling: which features to divide by their bag lengths, and their widths
            self.register_buffer("_mean_features", torch.tensor(mixed_mean, **kw), persistent=False)
            self.register_buffer("_feature_widths", torch.tensor(self._feature_dims, **kw), persistent=False)
        # follows .half() / .double() / .to(dtype) of the model (the store stays float32): the output's dtype
        self.register_buffer("_output_dtype", torch.zeros(0, **kw), persistent=False)
        self.fallback = (FallbackRows(dims, self.config.fallback_rows, self.config, self._device)
                         if self.config.fallback_rows else None)
        layout_bytes = sum(t.numel() * t.element_size() for t in self.buffers())
        try:
            plan = plan_store(self.budget_bytes, self.full_bytes, len(self._tables), max(chunks), self.config,
                              layout_bytes)
        except ValueError as error:
            if self.fallback is None:
                raise
            fallback_bytes = sum(b.numel() * b.element_size() for b in self.fallback.buffers())
            raise ValueError(f"{error}; of the fixed overhead, fallback_rows={self.config.fallback_rows} takes "
                             f"{fallback_bytes} bytes ({self.config.fallback_rows} rows per table): use fewer "
                             "fallback rows or a larger budget") from None
        scales = [self._init_scale(t) for t in self._tables]
        self.store = VhpiChunkStore(names, rows, chunks, scales, plan, self.config, self._device)
        self._out_dim = sum(self._feature_dims)
        self._anchor = torch.zeros(0, requires_grad=True, device=self._device)
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

    def _layout(self) -> FeatureLayout:
        return FeatureLayout(self._feature_table, self._feature_cols, self._out_dim, self._pooling_mode,
                             self._feature_names)

    # ---- forward ---------------------------------------------------------------------------------------
    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pooled embeddings ``[B, sum of the features' dims]`` of ``features`` (see ``emb_opt.store_step``).

        The step is one call of ``fiited_pooled_embeddings``, a ``torch.fx.wrap``-ped function: under
        ``torch.fx`` / ``torchrec.fx.symbolic_trace`` it is one node of the graph (taking this module and the
        KJT), and the traced module runs the whole step -- checks, admission, resizes, counters and the fused
        backward -- exactly as this forward does."""
        values = fiited_pooled_embeddings(self, features)
        return KeyedTensor(keys=self._embedding_names, length_per_key=self._feature_dims, values=values)

    def _pooled_values(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """The forward's ``[B, out_dim]`` values: checks the KJT, puts its features in the collection's order and
        runs the store's step (``_pooled``)."""
        kjt, weights = self._checked_batch(features)
        return self._pooled(kjt.values(), kjt.offsets(), weights, kjt.stride())

    def _checked_batch(self, features: KeyedJaggedTensor) -> Tuple[KeyedJaggedTensor, Optional[torch.Tensor]]:
        """The KJT with the collection's features in its order, and its per-sample weights (weighted collections)."""
        if features.variable_stride_per_key():
            raise ValueError(f"{type(self).__name__} does not take variable batch sizes per feature (VBE)")
        kjt = self._ordered_features(features)
        weights = None
        if self._is_weighted:
            weights = kjt.weights_or_none()
            if weights is None:
                raise ValueError("this collection is weighted (is_weighted=True) but the KJT carries no weights")
        return kjt, weights

    @torch.compiler.disable
    def _pooled(self, values: torch.Tensor, offsets: torch.Tensor, weights: Optional[torch.Tensor],
                batch_size: int) -> torch.Tensor:
        """The store's step on the ordered batch. Data-dependent (admission, resizes, sizes that depend on the ids):
        ``torch.compile`` runs it eagerly between the graphs it compiles around it."""
        if self.store.pool_weights.is_meta:  # shape inference (planners, meta models): no store to read
            return torch.zeros(batch_size, self._out_dim, device="meta", dtype=self._output_dtype.dtype)
        training = self.training and torch.is_grad_enabled()
        if training and self.store.pending_backward == 0 and resize_due(self.store):
            self.resize_now()
        layout = self._layout()
        plan = store_step.plan_batch(self.store, layout, values, offsets, weights, batch_size)
        start = self.fallback.chunk_values if self.config.fallback_init else None
        out = store_step.forward(self.store, layout, plan, training, self._anchor, self.config.prefix_dropout, start)
        if self.fallback is not None:
            out = out + self._fallback_values(plan, training)
        if self._divides_means:
            out = out * self._mean_scale(plan)
        if out.dtype != self._output_dtype.dtype:
            out = out.to(self._output_dtype.dtype)
        return out

    def _fallback_values(self, plan: BatchPlan, training: bool) -> torch.Tensor:
        """``[B, out_dim]``: the fallback rows read by the batch's ids that hold no chunk (``emb_opt.fallback_rows``),
        pooled as the kernels pool; trained in this step's backward when ``training``."""
        batch = self.fallback.gather(plan, self._feature_table, self._feature_cols, self._out_dim,
                                     self._pooling_mode == POOLING_CODES["mean"])
        if training:
            return FallbackLookup.apply(self._anchor, plan.weights, self.fallback, batch)
        return self.fallback.pooled(batch, plan.weights)

    def _mean_scale(self, plan: BatchPlan) -> torch.Tensor:
        """[B, out_dim] factors that turn the summed bags of MEAN-pooled features into means (1 / bag length,
        0-length bags stay 0) when tables mix SUM and MEAN; autograd carries them into the fused backward, so
        gradients, utilities and per-sample-weight gradients are those of mean pooling, as a MEAN-only
        collection's kernels compute them."""
        lengths = (plan.offsets[1:] - plan.offsets[:-1]).reshape(len(self._feature_dims), plan.batch_size)
        inverse = 1.0 / lengths.clamp(min=1).to(torch.float32)
        factors = torch.where(self._mean_features.unsqueeze(1), inverse, torch.ones_like(inverse))
        return factors.repeat_interleave(self._feature_widths, dim=0, output_size=self._out_dim).t()

    # ---- resizing ----------------------------------------------------------------------------------
    def resize_now(self) -> Dict[str, Any]:
        """Run a resize step immediately (normally scheduled); returns its telemetry record."""
        if self.store.pending_backward:
            raise RuntimeError(
                f"resize_now(): {self.store.pending_backward} forward(s) of this collection still wait for their "
                "backward, and a resize moves the slots their backward updates; call it after backward (or drop "
                "those outputs)")
        record = resize_store(self.store)
        self.telemetry.append(record)
        return record

    def import_dense_weights(self, weights: Dict[str, torch.Tensor]) -> int:
        """Seed the empty store from dense tables (name -> [rows, dim]); see ``emb_opt.dense_import``."""
        return import_dense_weights(self.store, self._tables, weights)

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
        cols = (key_chunk(keys[mine]) * c).unsqueeze(1) + torch.arange(c, device=self._device)
        dense[key_row(keys[mine]).unsqueeze(1), cols] = self.store.chunk_values(slots[mine])
        return dense

    def set_learning_rate(self, learning_rate: float) -> None:
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.config.learning_rate = float(learning_rate)

    # ---- memory and checkpoints ----------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Bytes allocated now: every buffer, the store's and the feature layout's (never above ``budget_bytes``)."""
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def get_extra_state(self) -> Dict[str, Any]:
        """Self-description carried by checkpoints, so ``emb_opt.report`` can read a bare state_dict (the store's
        own ``_extra_state`` carries its layout version and settings)."""
        return {
            "kind": self.report_kind,
            "tables": [
                {"name": t.name, "num_embeddings": t.num_embeddings, "embedding_dim": t.embedding_dim,
                 "feature_names": list(t.feature_names)}
                for t in self._tables
            ],
            "utility": self.config.utility.value,
            "full_bytes": self.full_bytes,
            "layout_bytes": self.memory_bytes() - self.store.total_bytes(),
            "telemetry": self.telemetry,
        }

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.telemetry = list(state.get("telemetry", []))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # the telemetry goes with the store: a checkpoint the store refuses (it names why when its turn comes)
        # changes nothing here either
        if self.store.checkpoint_problems(state_dict, prefix + "store."):
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


@torch.fx.wrap
def fiited_pooled_embeddings(module: torch.nn.Module, features: KeyedJaggedTensor) -> torch.Tensor:
    """``module._pooled_values(features)``: the pooled ``[B, out_dim]`` values of a FIITED collection's forward
    (``module``: a ``FiitedEmbeddingBagCollection``, or the read-only ``emb_opt.inference.FiitedInferenceCollection``).

    A leaf of ``torch.fx`` tracing (``torch.fx.wrap``): the step is data-dependent (input checks, admission,
    resizes, sizes that depend on the ids), so a traced graph holds it as one ``call_function`` node whose
    arguments are the collection (a ``get_attr`` of the traced module) and the KJT; called from the graph it
    runs the same step as an eager forward."""
    return module._pooled_values(features)
