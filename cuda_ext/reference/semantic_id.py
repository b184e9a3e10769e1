"""Reference of ``emb_opt::semantic_id_tokens``: raw item ids -> their semantic-ID tokens (contract in
``cuda_ext/csrc/semantic_id/semantic_id_ops.cpp``; used by ``semantic_id.transform.SemanticIdTransform``).

Token ``t`` of an id with code row ``c`` is the Horner form ``sum_s K^(len_t-1-s) (max(c[start_t+s], 0) + add)``
reduced mod H at every step, plus ``token_offsets[t]`` (already reduced mod H), mod H -- the arithmetic of
``semantic_id.parameterizations.apply_plan``. Ids that are negative, beyond the table, or whose code row starts
with -1 get -1 in every column; the second output is the first such position (-1 if none).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

MAX_TOKENS = 16


def horner_tokens(codes: torch.Tensor, starts: Sequence[int], lengths: Sequence[int], token_offsets: Sequence[int],
                  add: int, codebook_size: int, num_buckets: int) -> torch.Tensor:
    """Tokens ``[n, T]`` of code rows ``codes [n, L]`` (int64, >= 0): token t is the Horner form over levels
    ``starts[t] .. + lengths[t]`` of ``code + add`` in base K, reduced mod H at every step, plus ``token_offsets[t]``
    (reduced mod H), mod H -- the arithmetic of ``semantic_id_tokens.h`` and of ``apply_plan``."""
    K, H = int(codebook_size), int(num_buckets)
    columns: List[torch.Tensor] = []
    for start, length, offset in zip(starts, lengths, token_offsets):
        value = torch.zeros(codes.shape[0], dtype=torch.int64, device=codes.device)
        for s in range(start, start + length):
            value = torch.remainder(value * K + codes[:, s] + add, H)
        columns.append(torch.remainder(value + offset, H))
    if not codes.shape[0]:
        return torch.zeros(0, len(columns), dtype=torch.int64, device=codes.device)
    return torch.stack(columns, 1)


def semantic_id_tokens(ids: torch.Tensor, codes: torch.Tensor, starts: Sequence[int], lengths: Sequence[int],
                       token_offsets: Sequence[int], add: int, codebook_size: int,
                       num_buckets: int) -> Tuple[torch.Tensor, torch.Tensor]:
    if ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"semantic_id_tokens: ids must be int32 or int64, got {ids.dtype}")
    if codes.dtype != torch.int64 or codes.dim() != 2:
        raise TypeError(f"semantic_id_tokens: codes must be int64 [N, L], got {codes.dtype} {tuple(codes.shape)}")
    T = len(starts)
    if not (1 <= T <= MAX_TOKENS and len(lengths) == T and len(token_offsets) == T):
        raise ValueError("semantic_id_tokens: starts, lengths and token_offsets must have the same 1..16 entries")
    K, H = int(codebook_size), int(num_buckets)
    if K < 1 or H < 1 or add not in (0, 1):
        raise ValueError("semantic_id_tokens: codebook_size, num_buckets >= 1 and add in {0, 1}")
    if H > (2**63 - 1 - 2 * K) // K:  # v * K + code + add must fit int64
        raise ValueError("semantic_id_tokens: num_buckets x codebook_size overflows int64")
    for t, (start, length, offset) in enumerate(zip(starts, lengths, token_offsets)):
        if start < 0 or length < 1 or start + length > codes.shape[1]:
            raise ValueError(f"semantic_id_tokens: token {t} reads code levels [{start}, {start + length}) of "
                             f"{codes.shape[1]}")
        if not 0 <= offset < H:
            raise ValueError(f"semantic_id_tokens: token_offsets[{t}] = {offset} is not reduced mod {H}")
    flat = ids.reshape(-1).to(torch.int64)
    n_items = codes.shape[0]
    in_range = (flat >= 0) & (flat < n_items)
    rows = codes[torch.where(in_range, flat, torch.zeros_like(flat))] if n_items else \
        torch.full((flat.numel(), codes.shape[1]), -1, dtype=torch.int64, device=flat.device)
    known = in_range & (rows[:, 0] >= 0)
    rows = rows.clamp_min(0)
    tokens = horner_tokens(rows, starts, lengths, token_offsets, add, K, H)
    tokens = torch.where(known.unsqueeze(1), tokens, torch.full_like(tokens, -1))
    unknown = (~known).nonzero()
    first = int(unknown[0, 0]) if unknown.numel() else -1
    return tokens, torch.tensor([first], dtype=torch.int64, device=flat.device)
