"""Test helper: a state_dict of today's row-keyed FIITED store rewritten in the older chunk-keyed layout (what
checkpoints saved before the row index hold: ``slot_keys``, chunk-keyed ``hash_buckets``, ``free_stack``, 8 or
10 counters), to check that such checkpoints still load and report."""
from __future__ import annotations

import math
from typing import Dict

import torch

from cuda_ext import ops


def to_chunk_keyed(state_dict: Dict[str, torch.Tensor], prefix: str = "store.", counters: int = 10) -> Dict[str, torch.Tensor]:
    sd = dict(state_dict)
    entry_keys = sd.pop(prefix + "entry_keys")
    entry_first = sd.pop(prefix + "entry_first").to(torch.int64)
    entry_chunks = sd.pop(prefix + "entry_chunks").to(torch.int64)
    slot_keys = torch.full((sd[prefix + "pool_weights"].shape[0],), -1, dtype=torch.int64)
    for key, first, count in zip(entry_keys.tolist(), entry_first.tolist(), entry_chunks.tolist()):
        for k in range(count):
            slot_keys[first + k] = key + k
    sd[prefix + "slot_keys"] = slot_keys
    sd[prefix + "hash_buckets"] = ops.vhpi_rebuild(slot_keys, max(16, math.ceil(slot_keys.numel() / 0.5)), 128)
    sd[prefix + "free_stack"] = torch.zeros(0, dtype=torch.int32)
    sd[prefix + "counters"] = sd[prefix + "counters"][:counters].clone()
    return sd
