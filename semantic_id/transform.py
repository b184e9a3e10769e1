"""``SemanticIdTransform``: KJT -> KJT, turns one raw item-id feature into its semantic-ID tokens.

Placed in front of an ordinary ``EmbeddingBagCollection`` whose table for that feature has
``transform.num_embeddings`` rows: each raw id of the feature becomes ``T`` tokens (``T = 3`` for prefix-3gram),
so the feature's bag lengths are multiplied by ``T`` and the EBC's sum pooling adds the ``T`` rows into the
item's vector. Other features, the key order and the stride are untouched; per-sample weights of the feature
are repeated per token. Everything is vectorised: code-based tokens come from one fused op,
``emb_opt::semantic_id_tokens`` (C++ / CUDA kernel; reference ``cuda_ext/reference/semantic_id.py``), with no
Python loop over ids.

State: the id -> codes table is the buffer ``codes [n_items, L]`` (int64; a row of ``-1`` = "this id has no
code"), so ``state_dict`` round-trips, including items added later (loading resizes the buffer).

Unknown ids -- the documented policy:
1. New items that have a content embedding get codes on arrival: ``add_items(ids, content_emb)`` quantizes
   them with the quantizer the codes came from (same codebooks; pass ``quantizer=`` at construction or call),
   growing the table if ids are beyond it. From then on they are ordinary known ids.
2. Ids with no code (beyond the table or a ``-1`` row) and no embedding:
   * ``unknown_id_policy="error"`` (default): ``ValueError`` naming the feature, the id and the valid range;
   * ``unknown_id_policy="hash"``: ONE fallback token ``random_hash(id, F, seed + 1)`` -- in ``F =
     num_fallback_buckets`` rows reserved after the ``H`` semantic rows when ``F > 0`` (the table then has
     ``H + F`` rows and fallback ids never pollute semantic rows), else in ``[0, H)``.
   Negative ids are always an error.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from cuda_ext import ops
from hashing.random_hash import random_hash
from semantic_id.codes import check_codes_table
from semantic_id.parameterizations import (
    CODE_PARAMETERIZATIONS,
    PARAMETERIZATIONS,
    _check_modulus,
    token_plan,
)

UNKNOWN_ID_POLICIES = ("error", "hash")


class SemanticIdTransform(nn.Module):
    """Map a KJT's raw-id ``feature`` to its tokens under ``parameterization`` in a table of ``num_buckets`` rows.

    Args:
        codes: id -> codes table ``LongTensor [n_items, L]`` in ``[0, K)``; ``-1`` rows mark ids without a code.
            ``random``/``individual`` only use ``n_items`` (for validation / the table size).
        feature: the KJT key to transform.
        parameterization: one of ``semantic_id.PARAMETERIZATIONS`` (default Meta's ``prefix_ngram``).
        num_buckets: H, rows for the tokens. ``None``: the natural id space (collision-free for the codes;
            ``n_items`` for ``individual``); required for ``random``. Larger spaces are taken ``mod H``.
        codebook_size: K of the codes; default the quantizer's K, else ``codes.max() + 1``.
        ngram_size: n-gram chunk / prefix depth (default: all levels).
        hash_seed: seed of the ``random`` parameterization; the fallback hash uses ``hash_seed + 1``.
        feature_offset: shift added before ``mod H`` so features sharing a table do not share rows by accident.
        unknown_id_policy / num_fallback_buckets: see the module docstring.
        quantizer: fitted ``RQVAE``/``RQKMeans`` for ``add_items`` (kept out of ``parameters()``/``state_dict``;
            save it with ``semantic_id.save_quantizer``).
        validate: check ids (one host sync per batch); disable only for trusted, pre-validated input.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        feature: str,
        parameterization: str = "prefix_ngram",
        num_buckets: Optional[int] = None,
        codebook_size: Optional[int] = None,
        ngram_size: Optional[int] = None,
        hash_seed: int = 0,
        feature_offset: int = 0,
        unknown_id_policy: str = "error",
        num_fallback_buckets: int = 0,
        quantizer: Optional[nn.Module] = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")
        if unknown_id_policy not in UNKNOWN_ID_POLICIES:
            raise ValueError(f"unknown_id_policy must be one of {UNKNOWN_ID_POLICIES}, got {unknown_id_policy!r}")
        if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.shape[1] < 1:
            raise ValueError(f"codes table must be a 2-D LongTensor [n_items, L] with L >= 1, got "
                             f"{tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"codes table must hold integer codes, got {codes.dtype}")
        self.feature = feature
        self.parameterization = parameterization
        self.ngram_size = ngram_size
        self.hash_seed = int(hash_seed)
        self.feature_offset = int(feature_offset)
        self.unknown_id_policy = unknown_id_policy
        self.num_fallback_buckets = int(num_fallback_buckets)
        self.validate = bool(validate)
        self._quantizer: List[nn.Module] = [quantizer] if quantizer is not None else []  # hidden from nn.Module
        if self.num_fallback_buckets < 0:
            raise ValueError(f"num_fallback_buckets must be >= 0, got {num_fallback_buckets}")
        codes = codes.detach().to(torch.int64)
        self.levels = int(codes.shape[1])
        if codebook_size is None:
            if quantizer is not None:
                codebook_size = int(getattr(quantizer, "codebook_size"))
            else:
                codebook_size = int(codes.max()) + 1 if codes.numel() else 1
        self.codebook_size = int(codebook_size)
        self._check_table(codes)
        self.register_buffer("codes", codes.clone())

        n_items = codes.shape[0]
        self.plan = None
        if parameterization in CODE_PARAMETERIZATIONS:
            self.plan = token_plan(parameterization, self.levels, self.codebook_size, ngram_size)
            space = self.plan.space
        elif parameterization == "individual":
            space = n_items
        else:
            if num_buckets is None:
                raise ValueError("parameterization 'random' needs num_buckets")
            space = int(num_buckets)
        self.num_buckets = int(space if num_buckets is None else num_buckets)
        if self.num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        if parameterization == "individual" and self.num_buckets < n_items:
            raise ValueError(f"'individual' needs num_buckets >= n_items ({n_items}), got {self.num_buckets}")
        self.tokens_per_id = 1 if self.plan is None else self.plan.num_tokens
        self._token_args = None  # the plan as emb_opt::semantic_id_tokens arguments, fixed for this transform
        if self.plan is not None:
            H = self.num_buckets
            _check_modulus(self.codebook_size, H)
            offsets = [(int(o) + self.feature_offset) % H for o in self.plan.offsets]
            self._token_args = (list(self.plan.starts), list(self.plan.lengths), offsets, self.plan.add,
                                self.codebook_size, H)

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def num_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_embeddings(self) -> int:
        """Rows the embedding table behind this transform needs: ``H`` (+ reserved fallback rows)."""
        extra = self.num_fallback_buckets if self.unknown_id_policy == "hash" else 0
        return self.num_buckets + extra

    @property
    def quantizer(self) -> Optional[nn.Module]:
        return self._quantizer[0] if self._quantizer else None

    def extra_repr(self) -> str:
        return (f"feature={self.feature!r}, parameterization={self.parameterization!r}, n_items={self.num_items}, "
                f"levels={self.levels}, K={self.codebook_size}, H={self.num_buckets}, tokens_per_id="
                f"{self.tokens_per_id}, unknown_id_policy={self.unknown_id_policy!r}")

    # ------------------------------------------------------------------------------------------------ table
    def _check_table(self, codes: torch.Tensor) -> None:
        check_codes_table(codes, self.codebook_size, self.levels, what=f"feature {self.feature!r}: codes table")

    def set_quantizer(self, quantizer: nn.Module) -> None:
        if int(getattr(quantizer, "codebook_size")) != self.codebook_size:
            raise ValueError(f"quantizer has K={quantizer.codebook_size}, the codes table K={self.codebook_size}")
        self._quantizer = [quantizer]

    @torch.no_grad()
    def add_items(self, ids: torch.Tensor, content_emb: Optional[torch.Tensor] = None,
                  codes: Optional[torch.Tensor] = None, quantizer: Optional[nn.Module] = None) -> torch.Tensor:
        """Give ``ids [m]`` codes: quantize ``content_emb [m, D]`` (or take ``codes [m, L]``); returns the codes.

        The table grows (``-1`` filled) when an id is beyond it; existing rows for these ids are overwritten.
        """
        ids = ids.reshape(-1).to(torch.int64)
        if ids.numel() and int(ids.min()) < 0:
            raise ValueError(f"feature {self.feature!r}: item ids must be >= 0, got {int(ids.min())}")
        if (content_emb is None) == (codes is None):
            raise ValueError("add_items needs exactly one of content_emb or codes")
        if codes is None:
            quantizer = quantizer or self.quantizer
            if quantizer is None:
                raise ValueError("add_items(content_emb=...) needs a quantizer (constructor or argument)")
            codes = quantizer.encode(content_emb)
        codes = codes.to(torch.int64).to(self.codes.device)
        if codes.shape != (ids.numel(), self.levels):
            raise ValueError(f"codes for {ids.numel()} ids must be [{ids.numel()}, {self.levels}], got "
                             f"{tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"new codes must be in [0, {self.codebook_size})")
        if self.parameterization == "individual" and ids.numel() and int(ids.max()) >= self.num_buckets:
            raise ValueError(f"'individual' table has {self.num_buckets} rows; id {int(ids.max())} does not fit")
        if ids.numel() and int(ids.max()) >= self.num_items:
            grown = torch.full((int(ids.max()) + 1, self.levels), -1, dtype=torch.int64, device=self.codes.device)
            grown[: self.num_items] = self.codes
            self.codes = grown
        self.codes[ids.to(self.codes.device)] = codes
        return codes

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "codes"
        if key in state_dict:  # the same checks as the constructor's, before anything changes
            incoming = state_dict[key]
            check_codes_table(incoming, self.codebook_size, self.levels, what=f"state_dict {key}")
            if incoming.shape != self.codes.shape:
                self.codes = torch.empty_like(incoming, dtype=torch.int64, device=self.codes.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------------------------------------ tokens
    def _raise_bad_id(self, ids: torch.Tensor, bad: torch.Tensor, why: str) -> None:
        position = int(bad.nonzero()[0, 0])
        raise ValueError(f"SemanticIdTransform feature {self.feature!r}: id {int(ids[position])} at position "
                         f"{position} {why}; valid ids are [0, {self.num_items}) with a code "
                         f"(unknown_id_policy={self.unknown_id_policy!r})")

    def tokens(self, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens of raw ``ids [n]``: (flat tokens ``[M]`` id-major, tokens per id ``[n]``)."""
        ids = ids.reshape(-1)
        if ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"feature {self.feature!r}: ids must be int32/int64, got {ids.dtype}")
        ids = ids.to(torch.int64)
        if self.validate and ids.numel():
            negative = ids < 0
            if bool(negative.any()):
                self._raise_bad_id(ids, negative, "is negative")
        n_items = self.num_items
        in_range = ids < n_items
        safe = torch.where(in_range, ids, torch.zeros_like(ids))
        code_tokens = None
        if self.plan is not None:  # one fused op (CPU / CUDA kernel): gather codes, Horner forms, mod H
            code_tokens, _ = ops.semantic_id_tokens(ids, self.codes, *self._token_args)
            known = code_tokens[:, 0] >= 0
        else:
            known = in_range
        all_known = bool(known.all()) if (self.validate or self.unknown_id_policy == "hash") else True
        if not all_known and self.unknown_id_policy == "error":
            unknown = ~known
            first = int(unknown.nonzero()[0, 0])
            self._raise_bad_id(ids, unknown, "is out of range" if int(ids[first]) >= n_items
                               else "has no semantic-ID code")
        H = self.num_buckets
        if self.parameterization == "random":
            tokens = random_hash(ids, H, self.hash_seed).reshape(-1, 1)
            if self.feature_offset:
                tokens = torch.remainder(tokens + self.feature_offset, H)
        elif self.parameterization == "individual":
            tokens = torch.remainder(safe + self.feature_offset, H).reshape(-1, 1)
        else:
            assert code_tokens is not None
            tokens = code_tokens  # rows of unknown ids are -1: replaced by the fallback below, or an error above
        T = tokens.shape[1]
        if all_known:
            counts = torch.full((ids.numel(),), T, dtype=torch.int64, device=ids.device)
            return tokens.reshape(-1), counts
        # fallback: unknown ids keep one token, a hash bucket (reserved rows after H when F > 0)
        unknown = ~known
        F = self.num_fallback_buckets
        fallback = random_hash(ids[unknown], F if F > 0 else H, self.hash_seed + 1) + (H if F > 0 else 0)
        tokens = tokens.clone()
        tokens[unknown, 0] = fallback
        keep = torch.ones_like(tokens, dtype=torch.bool)
        keep[unknown, 1:] = False
        return tokens[keep], keep.sum(1)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        keys = features.keys()
        if self.feature not in keys:
            raise ValueError(f"SemanticIdTransform: KJT lacks feature {self.feature!r}; it has {keys}")
        if features.variable_stride_per_key():
            raise NotImplementedError("SemanticIdTransform does not support variable-batch (VBE) KJTs")
        index = keys.index(self.feature)
        length_per_key = features.length_per_key()
        start = sum(length_per_key[:index])
        count = length_per_key[index]
        stride = features.stride()
        values = features.values()
        lengths = features.lengths()
        if sum(length_per_key) != values.numel():
            raise ValueError(f"SemanticIdTransform: the KeyedJaggedTensor's lengths add up to {sum(length_per_key)} "
                             f"ids but it holds {values.numel()}")
        ids = values[start : start + count]
        bag_lengths = lengths[index * stride : (index + 1) * stride]
        if bag_lengths.numel() and (int(bag_lengths.min()) < 0 or int(bag_lengths.sum()) != count):
            raise ValueError(f"SemanticIdTransform feature {self.feature!r}: its lengths (min "
                             f"{int(bag_lengths.min())}, sum {int(bag_lengths.sum())}) do not give its {count} ids")

        flat, per_id = self.tokens(ids)
        if per_id.numel() == 0 or bool((per_id == self.tokens_per_id).all()):
            new_bag_lengths = bag_lengths * self.tokens_per_id
        else:
            csum = torch.cat([per_id.new_zeros(1), per_id.cumsum(0)])
            bounds = torch.cat([bag_lengths.new_zeros(1), bag_lengths.cumsum(0)]).to(torch.int64)
            new_bag_lengths = csum[bounds[1:]] - csum[bounds[:-1]]
        new_values = torch.cat([values[:start], flat.to(values.dtype), values[start + count :]])
        new_lengths = torch.cat([lengths[: index * stride], new_bag_lengths.to(lengths.dtype),
                                 lengths[(index + 1) * stride :]])
        weights = features.weights_or_none()
        if weights is not None:
            w = weights[start : start + count].repeat_interleave(per_id)
            weights = torch.cat([weights[:start], w, weights[start + count :]])
        new_length_per_key = list(length_per_key)
        new_length_per_key[index] = int(flat.numel())
        return KeyedJaggedTensor(
            keys=keys,
            values=new_values,
            weights=weights,
            lengths=new_lengths,
            stride=stride,
            length_per_key=new_length_per_key,
            inverse_indices=features.inverse_indices_or_none(),
        )
