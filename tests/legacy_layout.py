"""Test helpers: a state_dict of today's row-keyed FIITED store rewritten in the older layouts, to check that such
checkpoints still load and report: ``to_slot_rowwise_state`` (row-keyed, but row-wise Adagrad's accumulator in
``pool_state [S, 1]`` at the slot of the row's chunk 0, no ``entry_state``) and ``to_chunk_keyed`` (what
checkpoints saved before the row index hold: ``slot_keys``, chunk-keyed ``hash_buckets``, ``free_stack``, 8 or
10 counters, and the accumulators in slots as well)."""
from __future__ import annotations

import math
from typing import Dict

import torch

from cuda_ext import ops


def to_slot_rowwise_state(state_dict: Dict[str, torch.Tensor], prefix: str = "store.") -> Dict[str, torch.Tensor]:
    sd = dict(state_dict)
    entry_state = sd.pop(prefix + "entry_state")
    if entry_state.shape[1] == 1:  # row-wise Adagrad: each row's accumulator goes to the slot of its chunk 0
        first, stored = sd[prefix + "entry_first"].to(torch.int64), sd[prefix + "entry_chunks"] > 0
        pool_state = torch.zeros(sd[prefix + "pool_weights"].shape[0], 1)
        pool_state[first[stored]] = entry_state[stored]
        sd[prefix + "pool_state"] = pool_state
    return sd


def to_chunk_keyed(state_dict: Dict[str, torch.Tensor], prefix: str = "store.", counters: int = 10) -> Dict[str, torch.Tensor]:
    sd = to_slot_rowwise_state(state_dict, prefix)
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
