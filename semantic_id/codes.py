"""Semantic-ID codes: build them from content embeddings, save/load them and the quantizer, re-quantize new items,
and report their collision structure.

* ``build_codes(content_emb [n, D], levels, codebook_size, method="rqvae"|"rqkmeans") -> LongTensor [n, L]``
  (``return_quantizer=True`` also returns the fitted quantizer, to quantize new items later).
* ``save_quantizer`` / ``load_quantizer``: a ``.pt`` file with the method, constructor config and ``state_dict``
  (loaded with ``weights_only=True``); ``quantize(quantizer, emb)`` gives new items codes from the same codebooks.
* ``save_codes`` / ``load_codes``: the id -> codes table (row ``i`` = item id ``i``; ``-1`` rows = no code), with
  ``dense_codes_table`` to build it from sparse item ids.
* ``collision_report(codes, K)``: items per full code and per prefix, codebook utilisation per level -- collisions
  of identical full codes are expected (similar items share rows), the report says how many.
"""
from __future__ import annotations

import inspect
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

from emb_opt.checkpoint_files import load_checkpoint, save_checkpoint

from semantic_id.rq_kmeans import RQKMeans
from semantic_id.rq_vae import RQVAE

QUANTIZERS = {"rqvae": RQVAE, "rqkmeans": RQKMeans}
Quantizer = Union[RQVAE, RQKMeans]
PathLike = Union[str, Path]
_FORMAT_VERSION = 1


def _split_kwargs(cls: type, kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    init_names = set(inspect.signature(cls.__init__).parameters) - {"self"}
    fit_names = set(inspect.signature(cls.fit).parameters) - {"self", "x"}
    unknown = set(kwargs) - init_names - fit_names
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown argument(s) {sorted(unknown)}; constructor takes "
                        f"{sorted(init_names)}, fit takes {sorted(fit_names)}")
    return ({k: v for k, v in kwargs.items() if k in init_names}, {k: v for k, v in kwargs.items() if k in fit_names})


def fit_quantizer(content_emb: torch.Tensor, levels: int, codebook_size: int, method: str = "rqvae",
                  seed: int = 0, **kwargs: Any) -> Quantizer:
    """Fit an ``RQVAE`` or ``RQKMeans`` on ``content_emb [n, D]``; extra kwargs go to its constructor or ``fit``."""
    if method not in QUANTIZERS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(QUANTIZERS)}")
    if not isinstance(content_emb, torch.Tensor):
        raise TypeError(f"content_emb must be a torch.Tensor [n, D], got {type(content_emb).__name__} "
                        "(for a numpy array use torch.from_numpy(array))")
    if content_emb.dim() != 2 or content_emb.shape[0] == 0:
        raise ValueError(f"content_emb must be a non-empty [n, D] tensor, got {getattr(content_emb, 'shape', None)}")
    if not torch.isfinite(content_emb).all():
        raise ValueError("content_emb has NaN/inf values")
    cls = QUANTIZERS[method]
    init_kwargs, fit_kwargs = _split_kwargs(cls, kwargs)
    quantizer = cls(input_dim=content_emb.shape[1], levels=levels, codebook_size=codebook_size, seed=seed,
                    **init_kwargs)
    return quantizer.fit(content_emb, **fit_kwargs)


def build_codes(content_emb: torch.Tensor, levels: int, codebook_size: int, method: str = "rqvae", seed: int = 0,
                return_quantizer: bool = False, **kwargs: Any) -> Union[torch.Tensor, Tuple[torch.Tensor, Quantizer]]:
    """Semantic-ID codes ``LongTensor [n, levels]`` in ``[0, codebook_size)`` for ``content_emb [n, D]``.

    ``method="rqvae"`` trains an RQ-VAE (kwargs: latent_dim, hidden_dims, beta, epochs, batch_size, lr, ...);
    ``"rqkmeans"`` runs residual k-means (kwargs: kmeans_iters, init_sample). Same seed, same codes.
    """
    quantizer = fit_quantizer(content_emb, levels, codebook_size, method, seed, **kwargs)
    codes = quantizer.encode(content_emb).cpu()
    return (codes, quantizer) if return_quantizer else codes


def quantize(quantizer: Quantizer, content_emb: torch.Tensor) -> torch.Tensor:
    """Codes ``[n, L]`` of (new) items' content embeddings with an already fitted quantizer's codebooks."""
    return quantizer.encode(content_emb).cpu()


def save_quantizer(quantizer: Quantizer, path: PathLike) -> None:
    """Write method, config and ``state_dict`` of a fitted quantizer to ``path`` (torch ``.pt``)."""
    if not bool(quantizer.fitted):
        raise ValueError("refusing to save an unfitted quantizer")
    state = {k: v.detach().cpu() for k, v in quantizer.state_dict().items()}
    save_checkpoint({"format_version": _FORMAT_VERSION, "method": quantizer.method, "config": quantizer.config(),
                     "state_dict": state}, path)


def load_quantizer(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Quantizer:
    """Rebuild a quantizer saved by ``save_quantizer``; ``encode`` then gives the same codes as before saving."""
    blob = _load_versioned(path, map_location)
    if blob.get("method") not in QUANTIZERS or not isinstance(blob.get("config"), dict):
        raise ValueError(f"{path} is not a semantic_id quantizer file")
    quantizer = QUANTIZERS[blob["method"]](**blob["config"])
    quantizer.load_state_dict(blob["state_dict"])
    quantizer.eval()
    return quantizer


def _load_versioned(path: PathLike, map_location: Union[str, torch.device]) -> Dict[str, Any]:
    """A semantic_id file (read with ``weights_only=True``) of this version's format; other versions are refused."""
    blob = load_checkpoint(path, map_location)
    if not isinstance(blob, dict):
        raise ValueError(f"{path} is not a semantic_id file")
    if blob.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {blob.get('format_version')!r} is not this version's "
                         f"{_FORMAT_VERSION}; it cannot be read")
    return blob


class CodesTable(NamedTuple):
    """An id -> codes table: ``codes [n_items, L]`` (row = item id, ``-1`` rows = no code) and ``K``."""

    codes: torch.Tensor
    codebook_size: int


def dense_codes_table(item_ids: torch.Tensor, codes: torch.Tensor, num_items: Optional[int] = None) -> torch.Tensor:
    """Scatter ``codes [m, L]`` of ``item_ids [m]`` into a dense ``[num_items, L]`` table; missing ids get ``-1``."""
    item_ids = item_ids.reshape(-1).to(torch.int64)
    if item_ids.numel() != codes.shape[0]:
        raise ValueError(f"{item_ids.numel()} item ids for {codes.shape[0]} code rows")
    if item_ids.numel() and int(item_ids.min()) < 0:
        raise ValueError("item ids must be >= 0")
    n = int(item_ids.max()) + 1 if num_items is None and item_ids.numel() else int(num_items or 0)
    if item_ids.numel() and int(item_ids.max()) >= n:
        raise ValueError(f"item id {int(item_ids.max())} >= num_items {n}")
    if torch.unique(item_ids).numel() != item_ids.numel():
        raise ValueError("item ids must be distinct")
    table = torch.full((n, codes.shape[1]), -1, dtype=torch.int64)
    table[item_ids] = codes.to(torch.int64)
    return table


def save_codes(codes: torch.Tensor, path: PathLike, codebook_size: int) -> None:
    """Write the id -> codes table ``[n_items, L]`` (``-1`` rows allowed) and ``K`` to ``path``."""
    codes = torch.as_tensor(codes).to(torch.int64).cpu()
    if codes.dim() != 2:
        raise ValueError(f"codes must be [n_items, L], got {tuple(codes.shape)}")
    save_checkpoint({"format_version": _FORMAT_VERSION, "codes": codes, "codebook_size": int(codebook_size)}, path)


def load_codes(path: PathLike) -> CodesTable:
    """Read a table written by ``save_codes`` (checked: ``check_codes_table``)."""
    blob = _load_versioned(path, "cpu")
    if "codes" not in blob or "codebook_size" not in blob:
        raise ValueError(f"{path} is not a semantic_id codes file")
    codebook_size = blob["codebook_size"]
    check_codes_table(blob["codes"], codebook_size, what=f"{path}: codes table")
    return CodesTable(blob["codes"].to(torch.int64), int(codebook_size))


def check_codes_table(codes: Any, codebook_size: Any, levels: Optional[int] = None,
                      what: str = "codes table") -> None:
    """Raise a ``ValueError`` naming the problem unless ``codes`` is an integer ``[n, L]`` table (``L = levels``
    when given) whose rows are all codes in ``[0, codebook_size)`` or all ``-1`` (no code)."""
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, numbers.Integral) or codebook_size < 1:
        raise ValueError(f"{what}: codebook size must be an int >= 1, got {codebook_size!r}")
    if not isinstance(codes, torch.Tensor) or codes.dtype not in (torch.int32, torch.int64) or codes.dim() != 2:
        found = f"{codes.dtype} {tuple(codes.shape)}" if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"{what} must be an int32/int64 [n, L] tensor, got {found}")
    if levels is not None and codes.shape[1] != levels:
        raise ValueError(f"{what} must be [n, {levels}], got {tuple(codes.shape)}")
    if not codes.numel():
        return
    missing = codes < 0
    partial = missing.any(1) & ~missing.all(1)
    if bool(partial.any()):
        row = int(partial.nonzero()[0, 0])
        raise ValueError(f"{what} row {row} mixes -1 and codes ({codes[row].tolist()}); a row is all codes or all -1 "
                         "(no code)")
    bad = (codes < -1) | (codes >= codebook_size)
    if bool(bad.any()):
        row, level = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{what} values must be in [0, {codebook_size}) or -1: row {row} level {level} holds "
                         f"{int(codes[row, level])}")


# ---------------------------------------------------------------------------------------------------- report
@dataclass
class CollisionReport:
    """Collision structure of a codes table (items without a code, ``-1`` rows, are left out)."""

    num_items: int
    levels: int
    codebook_size: int
    usage_per_level: List[float]          # distinct codes used at level l / K
    distinct_prefixes: List[int]          # prefix length i = 1..L: distinct prefixes
    mean_items_per_prefix: List[float]
    max_items_per_prefix: List[int]
    shared_fraction: List[float]          # share of items whose length-i prefix is shared with another item
    full_code_load_histogram: Dict[int, int] = field(default_factory=dict)  # items per full code -> #codes

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def table(self):  # -> pandas.DataFrame
        """One row per prefix length (``L`` = full code)."""
        import pandas as pd

        return pd.DataFrame({
            "prefix_len": list(range(1, self.levels + 1)),
            "usage_of_level": self.usage_per_level,
            "distinct_prefixes": self.distinct_prefixes,
            "mean_items_per_prefix": self.mean_items_per_prefix,
            "max_items_per_prefix": self.max_items_per_prefix,
            "shared_fraction": self.shared_fraction,
        })

    def summary(self) -> str:
        lines = [f"{self.num_items} items, L={self.levels}, K={self.codebook_size}"]
        for i in range(self.levels):
            lines.append(f"  level {i + 1}: usage {self.usage_per_level[i]:.1%}; prefix[:{i + 1}] "
                         f"{self.distinct_prefixes[i]} distinct, {self.mean_items_per_prefix[i]:.2f} items each "
                         f"(max {self.max_items_per_prefix[i]}), {self.shared_fraction[i]:.1%} of items shared")
        return "\n".join(lines)


def _prefix_counts(codes: np.ndarray, length: int, K: int) -> np.ndarray:
    """Items per distinct prefix of ``length`` (sorted keys' counts)."""
    if K ** length < 2**62:
        key = np.zeros(codes.shape[0], dtype=np.int64)
        for s in range(length):
            key = key * K + codes[:, s]
        _, counts = np.unique(key, return_counts=True)
    else:
        _, counts = np.unique(codes[:, :length], axis=0, return_counts=True)
    return counts


def collision_report(codes: torch.Tensor, codebook_size: int) -> CollisionReport:
    """Items per full code and per prefix, and codebook utilisation per level, of ``codes [n, L]``."""
    array = torch.as_tensor(codes).cpu().numpy().astype(np.int64)
    if array.ndim != 2:
        raise ValueError(f"codes must be [n, L], got {array.shape}")
    array = array[(array >= 0).all(1)]
    n, L = array.shape
    K = int(codebook_size)
    if n and array.max() >= K:
        raise ValueError(f"codes must be < codebook_size {K}, got {array.max()}")
    usage, distinct, mean, maxi, shared = [], [], [], [], []
    histogram: Dict[int, int] = {}
    for length in range(1, L + 1):
        usage.append(float(np.unique(array[:, length - 1]).size / K) if n else 0.0)
        counts = _prefix_counts(array, length, K) if n else np.zeros(0, dtype=np.int64)
        distinct.append(int(counts.size))
        mean.append(float(counts.mean()) if counts.size else 0.0)
        maxi.append(int(counts.max()) if counts.size else 0)
        shared.append(float(counts[counts > 1].sum() / n) if n else 0.0)
        if length == L:
            loads, how_many = np.unique(counts, return_counts=True)
            histogram = {int(a): int(b) for a, b in zip(loads, how_many)}
    return CollisionReport(n, L, K, usage, distinct, mean, maxi, shared, histogram)
