"""Inference export: ``export_inference(model)`` replaces every FIITED collection of a trained model by a
read-only ``FiitedInferenceCollection``.

The inference collection keeps what a lookup reads -- the live chunks, trimmed and compacted, and the row index
(``emb_opt.inference_store.InferenceChunkStore``) -- and drops the training state: optimizer state, utilities,
the sketch, thresholds, counters, the resize schedule and telemetry. Its forward is the trained collection's
eval forward, through the same code (``emb_opt.store_step.plan_batch`` and ``forward`` outside training, the
same kernels), so its outputs equal the trained model's in eval mode bit for bit, in ``train()`` mode too (it
never trains). Like the trained collection it is one ``torch.fx`` leaf call (``fiited_pooled_embeddings``), so
``torchrec.fx.symbolic_trace`` traces a model holding it; under ``torch.export`` the lookup is one custom op
(``emb_opt.inference_store.pooled_op``), so a model holding it exports (batch size and id count may be dynamic)
and the exported program gives the same outputs. ``emb_opt.memory_report`` reports it as kind
``"fiited_inference"`` (weights, index and metadata bytes; full bytes are the dense fp32 tables without
optimizer state).

Its ``state_dict`` (``store.*`` with ``store._extra_state`` = kind ``"fiited_inference"`` and its layout
version) loads into an export of a model built the same way (``export_inference(build_model())``); a training
checkpoint of a FIITED collection is refused with an error saying to export the trained model instead.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, NamedTuple, Optional

import torch
from torch import nn
from torchrec.distributed.types import ShardedModule
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from emb_opt import store_step
from emb_opt.budget import total_full_bytes
from emb_opt.config import OptimizerType
from emb_opt.fiited_ebc import FiitedEmbeddingBagCollection, fiited_pooled_embeddings
from emb_opt.inference_store import INFERENCE_KIND, InferenceChunkStore

# a torch.fx leaf here too: ``torch.fx.wrap`` patches the name in the module that calls it
torch.fx.wrap("fiited_pooled_embeddings")


class _Bags(NamedTuple):
    """A batch's bags as ``_mean_scale`` reads them (a ``BatchPlan`` has the same two fields)."""

    offsets: torch.Tensor
    batch_size: int


class FiitedInferenceCollection(EmbeddingBagCollectionInterface):
    """A trained FIITED collection, read-only: ``KeyedJaggedTensor`` in, ``KeyedTensor`` out, as the trained
    collection's eval forward, with only the live chunks and the row index in memory.

    Args:
        module: the trained ``FiitedEmbeddingBagCollection`` (or ``RowPruningEmbeddingBagCollection``); its
            live chunks, tables, feature layout, weighting and output dtype are copied, and it is not changed.

    Example::

        inference = FiitedInferenceCollection(trained_ebc)
        pooled = inference(kjt)  # == trained_ebc.eval()(kjt), bit for bit
        inference.memory_bytes() < trained_ebc.memory_bytes()
    """

    report_kind = INFERENCE_KIND

    def __init__(self, module: FiitedEmbeddingBagCollection) -> None:
        super().__init__()
        if not isinstance(module, FiitedEmbeddingBagCollection):
            raise TypeError(f"FiitedInferenceCollection exports a FiitedEmbeddingBagCollection, got "
                            f"{type(module).__name__}")
        if module.store.pool_weights.is_meta:
            raise ValueError("FiitedInferenceCollection: the collection is on the meta device and holds no chunks "
                             "to export; export a materialised (trained or loaded) collection")
        self.exported_from = module.report_kind
        self._tables: List[EmbeddingBagConfig] = copy.deepcopy(module.embedding_bag_configs())
        self._is_weighted = module.is_weighted()
        self._feature_names = list(module._feature_names)
        self._embedding_names = list(module._embedding_names)
        self._feature_dims = list(module._feature_dims)
        self._out_dim = module._out_dim
        self._pooling_mode = module._pooling_mode
        self._divides_means = module._divides_means
        # the dense fp32 tables it stands for (no optimizer state: nothing trains them)
        self.full_bytes = total_full_bytes([t.num_embeddings for t in self._tables],
                                           [t.embedding_dim for t in self._tables], OptimizerType.SGD)
        for name in ("_feature_table", "_feature_cols", "_mean_features", "_feature_widths", "_output_dtype"):
            if hasattr(module, name):
                self.register_buffer(name, getattr(module, name).detach().clone(), persistent=False)
        self.store = InferenceChunkStore(module.store)
        self.fallback = None if module.fallback is None else module.fallback.read_only()
        self._no_anchor = torch.zeros(0)  # store_step.forward's anchor: unused outside training

    # the trained collection's interface, input handling and mean-pooling factors (same attributes, same code)
    embedding_bag_configs = FiitedEmbeddingBagCollection.embedding_bag_configs
    is_weighted = FiitedEmbeddingBagCollection.is_weighted
    _ordered_features = FiitedEmbeddingBagCollection._ordered_features
    _checked_batch = FiitedEmbeddingBagCollection._checked_batch
    _layout = FiitedEmbeddingBagCollection._layout
    _mean_scale = FiitedEmbeddingBagCollection._mean_scale
    _fallback_values = FiitedEmbeddingBagCollection._fallback_values

    @property
    def device(self) -> torch.device:
        return self.store.pool_weights.device

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pooled embeddings ``[B, sum of the features' dims]`` of ``features``: the trained collection's eval
        output. One ``torch.fx`` leaf call (``fiited_pooled_embeddings``) under tracing."""
        values = fiited_pooled_embeddings(self, features)
        return KeyedTensor(keys=self._embedding_names, length_per_key=self._feature_dims, values=values)

    def _pooled_values(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """Checks the KJT, orders its features and pools their live chunks (``store_step`` outside training:
        nothing changes; per-sample weights that require grad get their gradient)."""
        kjt, weights = self._checked_batch(features)
        if self.store.pool_weights.is_meta:  # shape inference (a meta copy): no store to read
            return torch.zeros(kjt.stride(), self._out_dim, device="meta", dtype=self._output_dtype.dtype)
        if torch.compiler.is_exporting():  # torch.export: the data-dependent lookup as one opaque op
            if self.fallback is not None:
                raise NotImplementedError("torch.export of a FIITED collection with fallback rows (fallback_rows > 0) "
                                          "is not supported; its eager and torch.fx inference paths are")
            layout, bags = self._layout(), _Bags(kjt.offsets().to(torch.int64), kjt.stride())
            out = self.store.exported_pooled(layout, kjt.values(), bags.offsets, weights, bags.batch_size)
            return self._finish(out, bags)
        return self._pooled(kjt.values(), kjt.offsets(), weights, kjt.stride())

    @torch.compiler.disable
    def _pooled(self, values: torch.Tensor, offsets: torch.Tensor, weights: Optional[torch.Tensor],
                batch_size: int) -> torch.Tensor:
        """The trained collection's eval step on the ordered batch (``store_step.plan_batch`` and ``forward``
        outside training); data-dependent, so ``torch.compile`` runs it eagerly between the graphs around it."""
        layout = self._layout()
        plan = store_step.plan_batch(self.store, layout, values, offsets, weights, batch_size)
        out = store_step.forward(self.store, layout, plan, False, self._no_anchor)
        if self.fallback is not None:
            out = out + self._fallback_values(plan, False)
        return self._finish(out, plan)

    def _finish(self, out: torch.Tensor, bags: Any) -> torch.Tensor:
        """Mean factors of MEAN features when tables mix poolings, and the output dtype."""
        if self._divides_means:
            out = out * self._mean_scale(bags)
        if out.dtype != self._output_dtype.dtype:
            out = out.to(self._output_dtype.dtype)
        return out

    # ---- memory and checkpoints ----------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Bytes allocated: every buffer, the store's and the feature layout's."""
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def get_extra_state(self) -> Dict[str, Any]:
        """Self-description carried by checkpoints, so ``emb_opt.report`` can read a bare state_dict."""
        return {
            "kind": self.report_kind,
            "exported_from": self.exported_from,
            "tables": [{"name": t.name, "num_embeddings": t.num_embeddings, "embedding_dim": t.embedding_dim,
                        "feature_names": list(t.feature_names)} for t in self._tables],
            "full_bytes": self.full_bytes,
            "layout_bytes": self.memory_bytes() - self.store.total_bytes(),
        }

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        pass  # the description is checked by the store's load; nothing in it is state

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # a checkpoint the store refuses (it names why when its turn comes) changes nothing here either
        if self.store.checkpoint_problems(state_dict, prefix + "store."):
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


def export_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference: every ``FiitedEmbeddingBagCollection`` (and
    ``RowPruningEmbeddingBagCollection``) in it is replaced by a ``FiitedInferenceCollection`` of its live chunks,
    the rest is deep-copied, and the copy is in eval mode. ``model`` is not changed.

    Args:
        model: a trained model (or a FIITED collection itself), not sharded: under ``DistributedModelParallel``
            each rank holds only its tables.

    Returns:
        the inference copy; ``torchrec.fx.symbolic_trace`` traces it, ``emb_opt.memory_report`` reports its
        collections as kind ``"fiited_inference"``.

    Example::

        served = emb_opt.export_inference(model)  # model: a DLRM whose collection is FIITED
        torch.testing.assert_close(served(dense, kjt), model.eval()(dense, kjt), rtol=0, atol=0)
        traced = torchrec.fx.symbolic_trace(served)
        served.load_state_dict(torch.load("served.pt"))  # the state_dict of another export of this model
    """
    sharded = [name for name, m in model.named_modules() if isinstance(m, ShardedModule)]
    if sharded:
        raise ValueError(f"export_inference takes an unsharded model; {sharded[0] or 'the model'!r} is a sharded "
                         f"{type(model.get_submodule(sharded[0])).__name__} (each rank holds only its tables): export the "
                         "unsharded model holding the trained collections")
    replaced = {id(m): FiitedInferenceCollection(m) for m in model.modules()
                if isinstance(m, FiitedEmbeddingBagCollection)}
    if not replaced:
        raise ValueError(f"export_inference: no FiitedEmbeddingBagCollection in this {type(model).__name__}")
    exported = copy.deepcopy(model, memo=dict(replaced))
    return exported.eval()
