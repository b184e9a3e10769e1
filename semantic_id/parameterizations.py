"""ID parameterizations: how a raw item id (and its semantic-ID codes) becomes row indices of one table of H rows.

Every parameterization maps ``n`` items to a ``LongTensor [n, T]`` of tokens in ``[0, H)``; the embedding bag
sum-pools the ``T`` rows into the item's vector (``T`` tokens per id). With codes ``c_1..c_L`` in ``[0, K)``
(``codes [n, L]``, 1-indexed below as in the papers; columns are 0-indexed in code):

==================  ====  ============================================================  =====================
name                T     token(s)                                                       natural id space
==================  ====  ============================================================  =====================
``random``          1     ``hashing.random_hash(id, H, seed)`` (baseline)               H
``individual``      1     ``id`` (collision-free; needs ``H >= n_items``)               n_items
``unigram``         L     ``K(i-1) + c_i``                                               L K
``ngram``           L/n   chunk j of n codes: ``j K^n + sum_s K^(n-1-s) c_(jn+s)``       ceil(L/n) K^n
                          (``n = L``: the full code ``K^2 c_1 + K c_2 + c_3`` for L=3;
                          ``trigram``/``fourgram`` are n = 3 / 4)
``all_bigrams``     L-1   ``K^2 (i-1) + K c_i + c_(i+1)``                                (L-1) K^2
``prefix_ngram``    n     ``p_i = sum_(t<=i) K^(i-t) (c_t + 1) - 1`` for i = 1..n         K + K^2 + ... + K^n
==================  ====  ============================================================  =====================

Meta's prefix-ngram (``p_i``) gives every prefix length its own id range: ``p_1`` in ``[0, K)``, ``p_2`` in
``[K, K + K^2)``, ... so a token of prefix length i never equals one of another length. When the natural id space
is larger than the table, tokens are taken ``mod H``; a per-feature ``offset`` is added before the ``mod`` so that
features sharing one table do not share rows by accident (``(token + offset) mod H``). With a space that fits
(``space <= H``, ``offset = 0``) the ``mod`` changes nothing and tokens are exact.

All code-based parameterizations are "Horner forms" ``offset_t + sum_s K^(len_t-1-s) (c_(start_t+s) + add)``, kept
as a small ``TokenPlan``; ``apply_plan`` evaluates it with the reference of the native token op
(``cuda_ext.reference.semantic_id.horner_tokens``: vectorised over ids, a loop only over the T <= L tokens,
arithmetic mod H at each step so K = 2048, L = 6 never overflows int64) -- the one arithmetic the kernels are
held to; ``apply_plan_numpy`` takes and gives numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from cuda_ext.reference.semantic_id import horner_tokens
from hashing.random_hash import random_hash

CODE_PARAMETERIZATIONS = ("prefix_ngram", "ngram", "trigram", "fourgram", "all_bigrams", "unigram")
ID_PARAMETERIZATIONS = ("random", "individual")
PARAMETERIZATIONS = ID_PARAMETERIZATIONS + CODE_PARAMETERIZATIONS

_MAX_INT64 = 2**63 - 1


@dataclass(frozen=True)
class TokenPlan:
    """Token ``t`` = ``(offsets[t] + Horner_K(c[starts[t] : starts[t] + lengths[t]] + add)) mod H``.

    ``space`` is the exact number of distinct token values before any ``mod`` (Python int, may exceed int64).
    """

    name: str
    codebook_size: int
    starts: Tuple[int, ...]
    lengths: Tuple[int, ...]
    offsets: Tuple[int, ...]
    add: int
    space: int

    @property
    def num_tokens(self) -> int:
        return len(self.starts)

    @property
    def levels_used(self) -> int:
        return max(s + n for s, n in zip(self.starts, self.lengths))


def token_plan(name: str, levels: int, codebook_size: int, ngram_size: Optional[int] = None) -> TokenPlan:
    """The ``TokenPlan`` of a code-based parameterization for codes of ``levels`` columns in ``[0, codebook_size)``.

    ``ngram_size``: chunk size for ``ngram`` (default: all levels, i.e. the full code) and prefix depth for
    ``prefix_ngram`` (default: all levels). ``trigram``/``fourgram`` are ``ngram`` with 3 / 4.
    """
    L, K = int(levels), int(codebook_size)
    if L < 1 or K < 1:
        raise ValueError(f"levels and codebook_size must be >= 1, got levels={levels}, codebook_size={codebook_size}")
    if name in ("trigram", "fourgram"):
        n = 3 if name == "trigram" else 4
        if ngram_size not in (None, n):
            raise ValueError(f"{name} means ngram_size={n}, got ngram_size={ngram_size}")
        if L < n:
            raise ValueError(f"{name} needs codes with >= {n} levels, got {L}")
        plan = token_plan("ngram", L, K, n)
        return TokenPlan(name, K, plan.starts, plan.lengths, plan.offsets, plan.add, plan.space)
    if name == "ngram":
        n = L if ngram_size is None else int(ngram_size)
        if not 1 <= n <= L:
            raise ValueError(f"ngram_size must be in [1, {L}], got {ngram_size}")
        starts = tuple(range(0, L, n))
        lengths = tuple(min(n, L - s) for s in starts)
        offsets = tuple(j * K**n for j in range(len(starts)))
        return TokenPlan(name, K, starts, lengths, offsets, 0, len(starts) * K**n)
    if name == "prefix_ngram":
        n = L if ngram_size is None else int(ngram_size)
        if not 1 <= n <= L:
            raise ValueError(f"prefix depth (ngram_size) must be in [1, {L}], got {ngram_size}")
        # p_i = sum_{t<=i} K^{i-t}(c_t + 1) - 1 : Horner over c_1..c_i with add=1, then offset -1.
        return TokenPlan(name, K, (0,) * n, tuple(range(1, n + 1)), (-1,) * n, 1, sum(K**i for i in range(1, n + 1)))
    if name == "all_bigrams":
        if L < 2:
            raise ValueError("all_bigrams needs codes with >= 2 levels")
        return TokenPlan(name, K, tuple(range(L - 1)), (2,) * (L - 1), tuple(K * K * i for i in range(L - 1)), 0,
                         (L - 1) * K * K)
    if name == "unigram":
        return TokenPlan(name, K, tuple(range(L)), (1,) * L, tuple(K * i for i in range(L)), 0, L * K)
    raise ValueError(f"unknown code parameterization {name!r}; expected one of {CODE_PARAMETERIZATIONS}")


def parameterization_space(name: str, levels: int, codebook_size: int, num_items: int,
                           ngram_size: Optional[int] = None, num_buckets: Optional[int] = None) -> int:
    """Natural id space (rows needed for no ``mod`` collisions) of any parameterization."""
    if name == "random":
        if num_buckets is None:
            raise ValueError("random hashing has no natural space: give num_buckets")
        return int(num_buckets)
    if name == "individual":
        return int(num_items)
    return token_plan(name, levels, codebook_size, ngram_size).space


def _check_modulus(codebook_size: int, num_buckets: int) -> None:
    if int(num_buckets) < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    if (int(num_buckets) + 1) * (int(codebook_size) + 1) >= _MAX_INT64:
        raise ValueError(f"num_buckets ({num_buckets}) x codebook_size ({codebook_size}) overflows int64")


def _check_codes(codes: torch.Tensor, plan: TokenPlan) -> None:
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        raise ValueError(f"codes must be a 2-D LongTensor [n, L], got {getattr(codes, 'shape', type(codes))}")
    if codes.shape[1] < plan.levels_used:
        raise ValueError(f"{plan.name} needs codes with >= {plan.levels_used} levels, got {codes.shape[1]}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= plan.codebook_size):
        raise ValueError(f"codes must be in [0, {plan.codebook_size}), got min {int(codes.min())}, "
                         f"max {int(codes.max())}")


def apply_plan(codes: torch.Tensor, plan: TokenPlan, num_buckets: Optional[int] = None, offset: int = 0,
               check: bool = True) -> torch.Tensor:
    """Tokens ``[n, T]`` (int64) of ``codes [n, L]`` under ``plan``: ``(token + offset) mod H``.

    ``num_buckets=None`` means the natural space (no collisions from the modulus); ``offset`` is the per-feature
    shift.
    """
    H = plan.space if num_buckets is None else int(num_buckets)
    _check_modulus(plan.codebook_size, H)
    if check:
        _check_codes(codes, plan)
    offsets = [(o + int(offset)) % H for o in plan.offsets]
    return horner_tokens(codes.to(torch.int64), plan.starts, plan.lengths, offsets, plan.add, plan.codebook_size, H)


def apply_plan_numpy(codes: np.ndarray, plan: TokenPlan, num_buckets: Optional[int] = None,
                     offset: int = 0) -> np.ndarray:
    """``apply_plan`` on a numpy code table (``codes`` int array ``[n, L]`` -> int64 ``[n, T]``)."""
    return apply_plan(torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64)), plan, num_buckets, offset).numpy()


# ----------------------------------------------------------------------------------------------------------------
# Named functions (the public per-parameterization API)
# ----------------------------------------------------------------------------------------------------------------
def prefix_ngram_tokens(codes: torch.Tensor, codebook_size: int, num_buckets: Optional[int] = None,
                        depth: Optional[int] = None, offset: int = 0) -> torch.Tensor:
    """Meta's prefix-ngram: ``[n, depth]`` tokens ``p_i = sum_{t<=i} K^{i-t}(c_t+1) - 1`` (then ``mod H``)."""
    plan = token_plan("prefix_ngram", codes.shape[1], codebook_size, depth)
    return apply_plan(codes, plan, num_buckets, offset)


def ngram_tokens(codes: torch.Tensor, codebook_size: int, n: Optional[int] = None,
                 num_buckets: Optional[int] = None, offset: int = 0) -> torch.Tensor:
    """n-gram: one token per chunk of ``n`` consecutive codes (default ``n = L``: the full code)."""
    plan = token_plan("ngram", codes.shape[1], codebook_size, n)
    return apply_plan(codes, plan, num_buckets, offset)


def all_bigram_tokens(codes: torch.Tensor, codebook_size: int, num_buckets: Optional[int] = None,
                      offset: int = 0) -> torch.Tensor:
    """All bigrams: ``[n, L-1]`` tokens ``K^2 (i-1) + K c_i + c_{i+1}``."""
    plan = token_plan("all_bigrams", codes.shape[1], codebook_size)
    return apply_plan(codes, plan, num_buckets, offset)


def unigram_tokens(codes: torch.Tensor, codebook_size: int, num_buckets: Optional[int] = None,
                   offset: int = 0) -> torch.Tensor:
    """Unigrams: ``[n, L]`` tokens ``K (i-1) + c_i`` (each level its own range)."""
    plan = token_plan("unigram", codes.shape[1], codebook_size)
    return apply_plan(codes, plan, num_buckets, offset)


def random_hash_tokens(ids: torch.Tensor, num_buckets: int, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """Random-hash baseline: ``[n, 1]`` tokens ``hashing.random_hash(id, H, seed)`` (offset then ``mod H``)."""
    tokens = random_hash(ids.reshape(-1), int(num_buckets), int(seed))
    if offset:
        tokens = torch.remainder(tokens + int(offset), int(num_buckets))
    return tokens.reshape(-1, 1)


def individual_tokens(ids: torch.Tensor, num_items: int, num_buckets: Optional[int] = None,
                      offset: int = 0) -> torch.Tensor:
    """Individual embeddings: ``[n, 1]`` tokens ``id`` (requires ``num_buckets >= num_items``)."""
    H = int(num_items) if num_buckets is None else int(num_buckets)
    if H < int(num_items):
        raise ValueError(f"individual ids need num_buckets >= num_items ({num_items}), got {H}; "
                         "use a hashing parameterization to compress")
    return torch.remainder(ids.reshape(-1, 1).to(torch.int64) + int(offset), H)


def tokens_per_id(name: str, levels: int, ngram_size: Optional[int] = None) -> int:
    """How many tokens (rows pooled) each id becomes under ``name``."""
    if name in ID_PARAMETERIZATIONS:
        return 1
    # codebook size does not change the token count; 2 is a placeholder.
    return token_plan(name, levels, 2, ngram_size).num_tokens


def parameterization_tokens(name: str, ids: torch.Tensor, codes: Optional[torch.Tensor], codebook_size: int,
                            num_buckets: int, num_items: Optional[int] = None, ngram_size: Optional[int] = None,
                            seed: int = 0, offset: int = 0) -> torch.Tensor:
    """Dispatch: tokens ``[n, T]`` of ``ids [n]`` whose codes are ``codes [n, L]`` (ignored by id-based ones)."""
    if name == "random":
        return random_hash_tokens(ids, num_buckets, seed, offset)
    if name == "individual":
        if num_items is None:
            raise ValueError("individual needs num_items")
        return individual_tokens(ids, num_items, num_buckets, offset)
    if codes is None:
        raise ValueError(f"{name} needs codes")
    plan = token_plan(name, codes.shape[1], codebook_size, ngram_size)
    return apply_plan(codes, plan, num_buckets, offset)


__all__: List[str] = [
    "PARAMETERIZATIONS",
    "CODE_PARAMETERIZATIONS",
    "ID_PARAMETERIZATIONS",
    "TokenPlan",
    "token_plan",
    "apply_plan",
    "apply_plan_numpy",
    "parameterization_space",
    "prefix_ngram_tokens",
    "ngram_tokens",
    "all_bigram_tokens",
    "unigram_tokens",
    "random_hash_tokens",
    "individual_tokens",
    "tokens_per_id",
    "parameterization_tokens",
]
