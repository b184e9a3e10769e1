"""Frequency-thresholded vocabularies for the 26 Criteo categorical features, built in one streaming pass.

For each feature ``f`` every raw value (hex -> int in ``[0, 2^32)``) seen at least ``min_count`` times gets a
contiguous id ``0 .. V_f-1``, the most frequent value first (ties by value), so low ids are the hot rows. Any
other value (rare, or never seen: e.g. in a later day) maps to ``V_f``, an empty field to ``V_f + 1``; the table
of feature ``f`` therefore has ``V_f + 2`` rows (``num_embeddings_per_feature()``). This is the DLRM/TorchRec
"frequency threshold" preprocessing (TorchRec uses ``FREQUENCY_THRESHOLD = 3``), with the empty field kept apart
from the rare ones.

Counting streams the files through ``criteo_tsv.iter_raw_chunks`` (same parsing, validation and ``skip_bad_lines``
as the reader): each block's values are reduced with ``np.unique`` and the per-block counts are merged into a
sorted (value, count) table only when they outgrow it, so the cost is ``O(N log N)`` and memory is the number of
distinct values (16 bytes each; ~ a few GB for the largest Terabyte features), never the raw data.

``save``/``load`` use one ``.npz``: ``values_f``/``counts_f`` (int64 ``[V_f]``, in id order) for ``f`` in 0..25,
plus ``min_count``, ``num_lines``, ``rare_counts`` and ``empty_counts`` (int64 ``[26]``, occurrences).
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np
from torchrec.datasets.criteo import CAT_FEATURE_COUNT

from experiments.data.criteo_tsv import DEFAULT_CHUNK_BYTES, PathLike, ReaderStats, as_path_list, iter_raw_chunks

_FORMAT_VERSION = 1


class CriteoVocabulary:
    """Per-feature value -> id maps. ``values[f]``/``counts[f]``: int64 ``[V_f]`` kept values and their counts, in id
    order. ``lookup`` maps raw values int64 ``[n, 26]`` (+ empty mask) to ids int64 ``[n, 26]``."""

    def __init__(
        self,
        values: Sequence[np.ndarray],
        counts: Sequence[np.ndarray],
        min_count: int,
        rare_counts: Sequence[int],
        empty_counts: Sequence[int],
        num_lines: int,
    ) -> None:
        if len(values) != CAT_FEATURE_COUNT or len(counts) != CAT_FEATURE_COUNT:
            raise ValueError(f"need {CAT_FEATURE_COUNT} value and count arrays, got {len(values)}, {len(counts)}")
        self.values = [np.asarray(v, dtype=np.int64) for v in values]
        self.counts = [np.asarray(c, dtype=np.int64) for c in counts]
        for f, (v, c) in enumerate(zip(self.values, self.counts)):
            if v.shape != c.shape or v.ndim != 1:
                raise ValueError(f"feature {f}: values {v.shape} and counts {c.shape} must be equal 1-d shapes")
        self.min_count, self.num_lines = int(min_count), int(num_lines)
        self.rare_counts = np.asarray(rare_counts, dtype=np.int64)
        self.empty_counts = np.asarray(empty_counts, dtype=np.int64)
        self._order = [np.argsort(v, kind="stable") for v in self.values]  # for lookup by binary search
        self._sorted = [v[o] for v, o in zip(self.values, self._order)]
        for f, s in enumerate(self._sorted):
            if len(s) > 1 and (s[1:] == s[:-1]).any():
                raise ValueError(f"feature {f}: duplicate values in the vocabulary")

    def sizes(self) -> List[int]:
        """``V_f``: the number of kept values per feature."""
        return [len(v) for v in self.values]

    def num_embeddings_per_feature(self) -> List[int]:
        """Rows per feature: ``V_f`` kept values + the rare row + the empty row."""
        return [len(v) + 2 for v in self.values]

    def lookup(self, cats: np.ndarray, empty: np.ndarray) -> np.ndarray:
        """Raw values int64 ``[n, 26]`` and empty bool ``[n, 26]`` -> ids int64 ``[n, 26]``."""
        if cats.ndim != 2 or cats.shape[1] != CAT_FEATURE_COUNT or empty.shape != cats.shape:
            raise ValueError(f"expected [n, {CAT_FEATURE_COUNT}] values and mask, got {cats.shape}, {empty.shape}")
        out = np.empty(cats.shape, dtype=np.int64)
        for f in range(CAT_FEATURE_COUNT):
            column, table, size = cats[:, f], self._sorted[f], len(self._sorted[f])
            pos = np.minimum(np.searchsorted(table, column), max(size - 1, 0))
            found = (table[pos] == column) if size else np.zeros(len(column), dtype=bool)
            ids = np.where(found, self._order[f][pos] if size else 0, size)
            out[:, f] = np.where(empty[:, f], size + 1, ids)
        return out

    def save(self, path: PathLike) -> str:
        """Write one ``.npz`` (numpy appends the suffix if missing); returns the path written."""
        path = os.fspath(path)
        arrays = {f"values_{f}": v for f, v in enumerate(self.values)}
        arrays.update({f"counts_{f}": c for f, c in enumerate(self.counts)})
        np.savez(
            path,
            format_version=_FORMAT_VERSION,
            min_count=self.min_count,
            num_lines=self.num_lines,
            rare_counts=self.rare_counts,
            empty_counts=self.empty_counts,
            **arrays,
        )
        return path if path.endswith(".npz") else path + ".npz"

    @classmethod
    def load(cls, path: PathLike) -> "CriteoVocabulary":
        """Read a vocabulary written by ``save``; a missing or foreign file raises naming it."""
        path = os.fspath(path)
        with np.load(path) as data:
            needed = ["format_version", "min_count", "num_lines", "rare_counts", "empty_counts"]
            needed += [f"{k}_{f}" for k in ("values", "counts") for f in range(CAT_FEATURE_COUNT)]
            missing = [k for k in needed if k not in data.files]
            if missing:
                raise ValueError(f"{path}: not a Criteo vocabulary file (missing {missing[:3]})")
            if int(data["format_version"]) != _FORMAT_VERSION:
                raise ValueError(f"{path}: vocabulary format {int(data['format_version'])} != {_FORMAT_VERSION}")
            return cls(
                [data[f"values_{f}"] for f in range(CAT_FEATURE_COUNT)],
                [data[f"counts_{f}"] for f in range(CAT_FEATURE_COUNT)],
                int(data["min_count"]),
                data["rare_counts"],
                data["empty_counts"],
                int(data["num_lines"]),
            )


class _ValueCounter:
    """Exact counts of int64 values, merged lazily: per-block ``np.unique`` results wait in a list and are folded
    into the sorted table when they outgrow it (amortised ``O(N log N)``)."""

    def __init__(self) -> None:
        self.values = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)
        self._pending: List[np.ndarray] = []
        self._pending_counts: List[np.ndarray] = []
        self._pending_n = 0

    def add(self, values: np.ndarray) -> None:
        uniques, counts = np.unique(values, return_counts=True)
        self._pending.append(uniques)
        self._pending_counts.append(counts.astype(np.int64))
        self._pending_n += len(uniques)
        if self._pending_n > max(len(self.values), 1 << 20):
            self.merge()

    def merge(self) -> None:
        if not self._pending:
            return
        values = np.concatenate([self.values, *self._pending])
        counts = np.concatenate([self.counts, *self._pending_counts])
        order = np.argsort(values, kind="stable")
        values, counts = values[order], counts[order]
        heads = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
        self.values, self.counts = values[heads], np.add.reduceat(counts, heads) if len(values) else counts
        self._pending, self._pending_counts, self._pending_n = [], [], 0


def build_vocabulary(
    paths: Union[PathLike, Iterable[PathLike]],
    min_count: int,
    *,
    has_label: bool = True,
    skip_bad_lines: bool = False,
    max_lines: Optional[int] = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    stats: Optional[ReaderStats] = None,
) -> CriteoVocabulary:
    """Count every categorical value of ``paths`` (one pass) and keep those seen ``>= min_count`` times."""
    if int(min_count) < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    stats = stats if stats is not None else ReaderStats()
    counters = [_ValueCounter() for _ in range(CAT_FEATURE_COUNT)]
    empty_counts = np.zeros(CAT_FEATURE_COUNT, dtype=np.int64)
    num_lines = 0
    chunks = iter_raw_chunks(
        as_path_list(paths),
        has_label=has_label,
        skip_bad_lines=skip_bad_lines,
        max_lines=max_lines,
        chunk_bytes=chunk_bytes,
        stats=stats,
    )
    for chunk in chunks:
        num_lines += len(chunk.labels)
        empty_counts += chunk.empty.sum(0)
        for f, counter in enumerate(counters):
            counter.add(chunk.cats[~chunk.empty[:, f], f])
    values, counts, rare = [], [], np.zeros(CAT_FEATURE_COUNT, dtype=np.int64)
    for f, counter in enumerate(counters):
        counter.merge()
        keep = counter.counts >= int(min_count)
        rare[f] = int(counter.counts[~keep].sum())
        kept_values, kept_counts = counter.values[keep], counter.counts[keep]
        order = np.lexsort((kept_values, -kept_counts))  # most frequent first, ties by value
        values.append(kept_values[order])
        counts.append(kept_counts[order])
    return CriteoVocabulary(values, counts, int(min_count), rare, empty_counts, num_lines)
