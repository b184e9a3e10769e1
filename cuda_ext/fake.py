"""Fake (meta) implementations of every ``torch.ops.emb_opt`` operator, so that ``FakeTensorMode``, ``torch.fx``
(``make_fx``) and ``torch.compile`` trace through the ops without running them: each gives the outputs' shapes
and dtypes from the inputs' metadata alone.

Imported by ``cuda_ext`` once the compiled operators are registered (the ``*_ops.cpp`` files name this module as
the place of their fake impls). Outputs whose size depends on the data get an unbacked size from
``torch.library.get_ctx().new_dynamic_size()``, which needs a ``ShapeEnv`` (``FakeTensorMode(shape_env=...)``,
``make_fx(tracing_mode="symbolic")``, ``torch.compile`` with ``capture_dynamic_output_shape_ops``); without one
they raise ``DynamicOutputShapeException``, as ``torch.nonzero`` does:
* ``chunk_bag_unique``: nnz = offsets[-1], the U unique rows, and unique_offsets / unique_occ, which are empty
  when an id is out of range (each its own size);
* ``vhpi_rebuild``: ``num_buckets`` buckets, or none when a key found no bucket.
``vhpi_insert_`` returns the number of slots inserted, an int no fake can know (its schema says ``int``, not
``SymInt``): it raises ``DataDependentOutputException``, so ``torch.compile`` breaks the graph there and runs the
op eagerly, and the op is tagged ``data_dependent_output``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch._subclasses.fake_tensor import DataDependentOutputException

Tensors = Tuple[torch.Tensor, ...]


def _dynamic_size() -> torch.SymInt:
    return torch.library.get_ctx().new_dynamic_size()


@torch.library.register_fake("emb_opt::mix_hash")
def mix_hash(ids: torch.Tensor, num_buckets: int, seed: int) -> torch.Tensor:
    return ids.new_empty(ids.shape, dtype=torch.int64)


@torch.library.register_fake("emb_opt::semantic_id_tokens")
def semantic_id_tokens(ids: torch.Tensor, codes: torch.Tensor, starts: List[int], lengths: List[int],
                       token_offsets: List[int], add: int, codebook_size: int, num_buckets: int) -> Tensors:
    return ids.new_empty((ids.numel(), len(starts)), dtype=torch.int64), ids.new_empty((1,), dtype=torch.int64)


@torch.library.register_fake("emb_opt::vhpi_lookup_runs")
def vhpi_lookup_runs(buckets: torch.Tensor, entry_keys: torch.Tensor, entry_first: torch.Tensor,
                     entry_chunks: torch.Tensor, row_keys: torch.Tensor, max_chunks: int, max_probe: int) -> Tensors:
    n = row_keys.numel()
    return row_keys.new_empty((n,), dtype=torch.int32), row_keys.new_empty((n, max_chunks), dtype=torch.int32)


@torch.library.register_fake("emb_opt::vhpi_insert_")
def vhpi_insert_(buckets: torch.Tensor, slot_keys: torch.Tensor, slots: torch.Tensor, max_probe: int) -> int:
    raise DataDependentOutputException(torch.ops.emb_opt.vhpi_insert_.default)


@torch.library.register_fake("emb_opt::vhpi_rebuild")
def vhpi_rebuild(slot_keys: torch.Tensor, num_buckets: int, max_probe: int) -> torch.Tensor:
    return slot_keys.new_empty((_dynamic_size(),), dtype=torch.int32)


@torch.library.register_fake("emb_opt::chunk_bag_unique")
def chunk_bag_unique(values: torch.Tensor, offsets: torch.Tensor, feature_table: torch.Tensor,
                     table_rows: torch.Tensor, batch_size: int) -> Tensors:
    nnz, num_unique = _dynamic_size(), _dynamic_size()
    long, int32 = dict(dtype=torch.int64), dict(dtype=torch.int32)
    return (values.new_empty((num_unique,), **long), values.new_empty((nnz,), **int32),
            values.new_empty((_dynamic_size(),), **long), values.new_empty((_dynamic_size(),), **int32),
            values.new_empty((nnz,), **int32), values.new_empty((3,), **long))


@torch.library.register_fake("emb_opt::chunk_bag_forward")
def chunk_bag_forward(pool: torch.Tensor, slots: torch.Tensor, inverse: torch.Tensor, offsets: torch.Tensor,
                      weights: Optional[torch.Tensor], feature_table: torch.Tensor, table_chunks: torch.Tensor,
                      feature_cols: torch.Tensor, batch_size: int, out_dim: int, pooling_mode: int,
                      pool_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    return pool.new_empty((batch_size, out_dim), dtype=torch.float32)


@torch.library.register_fake("emb_opt::chunk_bag_backward_update_")
def chunk_bag_backward_update_(pool: torch.Tensor, optim_state: torch.Tensor, slot_utility: torch.Tensor,
                               grad_out: torch.Tensor, slots: torch.Tensor, row_keys: torch.Tensor,
                               unique_offsets: torch.Tensor, unique_occ: torch.Tensor, occ_bag: torch.Tensor,
                               offsets: torch.Tensor, weights: Optional[torch.Tensor], table_chunks: torch.Tensor,
                               feature_cols: torch.Tensor, batch_size: int, pooling_mode: int, optimizer: int,
                               lr: float, eps: float, utility_rule: int, need_weight_grad: bool,
                               row_entries: Optional[torch.Tensor] = None, rounding_seed: int = 0,
                               pool_scale: Optional[torch.Tensor] = None) -> Tensors:
    weight_grads = unique_occ.numel() if need_weight_grad else 0
    float32 = dict(dtype=torch.float32)
    return pool.new_empty((row_keys.numel(),), **float32), pool.new_empty((weight_grads,), **float32)
