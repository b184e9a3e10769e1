"""What the training store (``emb_opt.chunk_store``) and the inference store (``emb_opt.inference_store``) share:
the row index's lookup and sizes, the pool's decoding, buffers that keep their dtypes under dtype casts, copies
without pending backwards, and loads that validate first."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from cuda_ext import ops
from emb_opt.chunk_precision import decode, scale_argument


class ChunkStoreBase(nn.Module):
    """Base of the chunk stores. Subclasses hold the row index (``hash_buckets``, ``entry_keys``, ``entry_first``,
    ``entry_chunks``) and the pool (``pool_weights``, ``pool_scale``: ``emb_opt.chunk_precision``), set ``max_chunks`` and ``max_probe``, keep
    ``pending_backward`` (forwards whose backward still reads the store) and define ``checkpoint_problems(state_dict,
    prefix) -> List[str]`` (empty when the checkpoint can load).

    * Device moves apply; dtype casts (``.half()``, ``.double()``, ``.to(torch.bfloat16)``, ``.float()``) do not:
      the pool keeps its dtype (``FiitedConfig.weight_dtype``: the kernels' type and the budget's accounting) and
      every other float buffer float32, so casting a model neither rounds trained chunks nor changes its memory.
      The collection casts its output instead.
    * A copy (deepcopy, pickle) holds no autograd graph of earlier forwards: its ``pending_backward`` is 0.
    * ``load_state_dict`` changes nothing unless ``checkpoint_problems`` finds none; then the buffers take the
      checkpoint's sizes (a store's sizes change as it trains) before the copy.
    """

    pending_backward: int
    max_chunks: int
    max_probe: int

    def lookup_rows(self, row_keys: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(entries int32 [U] (-1: not stored), slots int32 [U, max_chunks]) of each row: its index entry (where
        its per-row optimizer state is) and its live chunk slots -- one probe per row and its run expanded, in
        one kernel (``vhpi_lookup_runs``)."""
        return ops.vhpi_lookup_runs(self.hash_buckets, self.entry_keys, self.entry_first, self.entry_chunks, row_keys,
                                    self.max_chunks, self.max_probe)

    def chunk_values(self, slots: torch.Tensor) -> torch.Tensor:
        """float32 ``[n, c]`` weights of the chunks at ``slots`` [n] (decoded from the pool's dtype)."""
        return decode(self.pool_weights[slots], self.pool_scale[slots])

    @property
    def scale_argument(self) -> Optional[torch.Tensor]:
        """The ``pool_scale`` the chunk-bag ops take: an int8 pool's scales, else None."""
        return scale_argument(self.pool_scale)

    @property
    def num_live(self) -> int:
        """Live chunks."""
        return int(self.entry_chunks.sum())

    @property
    def num_rows(self) -> int:
        """Rows holding at least one chunk."""
        return int((self.entry_chunks > 0).sum())

    def _apply(self, fn, recurse=True):
        device = self.pool_weights.device
        dtypes = (torch.float32, self.pool_weights.dtype)
        probes = [fn(torch.zeros(0, dtype=dtype, device=device)) for dtype in dtypes]
        if all(probe.dtype == dtype for probe, dtype in zip(probes, dtypes)):
            return super()._apply(fn, recurse)  # a move, no cast
        return super()._apply(lambda t: t.to(device=probes[0].device), recurse)

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["pending_backward"] = 0
        return state

    def set_extra_state(self, state: Any) -> None:
        pass  # checked before the load (checkpoint_problems); nothing in it is state

    def checkpoint_problems(self, state_dict: Mapping[str, Any], prefix: str) -> List[str]:
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        problems = self.checkpoint_problems(state_dict, prefix)
        if problems:
            error_msgs.extend(problems)
            return
        for name, buffer in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buffer is not None and state_dict[key].shape != buffer.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
