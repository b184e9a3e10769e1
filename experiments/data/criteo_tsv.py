"""Raw Criteo TSV files -> TorchRec ``Batch``es: one vectorised parser and its reader (one piece, hence its length).

Reads Kaggle ``train.txt``/``test.txt`` or Terabyte ``day_0`` .. ``day_23``, plain or ``.gz``, as dense ``[B, 13]``
float32, a KJT with keys ``cat_0`` .. ``cat_25`` and one id per bag (``B`` values per key), labels ``[B]``.

Format: one sample per line, tab-separated, no header, 40 columns: ``label`` (0/1), ``I1``..``I13`` (integers,
possibly empty; float text such as ``260.0`` and negatives such as ``-2`` occur and are accepted), ``C1``..``C26``
(8 hex digits, possibly empty). Kaggle's ``test.txt`` has no label column (``has_label=False``, 39 columns); its
labels are then all ``UNLABELED = -1`` (as TorchRec's ``tsv_to_npys`` does), so a test file can never be mistaken
for training data with all-negative labels. ``\\r\\n`` line ends and a missing final newline are accepted.

Preprocessing (as the DLRM reference):
* dense: ``log(1 + max(x, 0))`` -- negatives are clamped to 0 first; an empty field counts as 0.
* categorical: hex -> int64 in ``[0, 2^32)``; then, per feature ``f``,
  - no ``row_budget`` and no ``vocabulary``: the raw value; an empty field -> ``EMPTY_ID = 2^32``;
  - ``row_budget`` ``H`` (one int for all 26 features or a list of 26): a non-empty value ``v`` -> ``v mod (H-1)``
    (``hash_method="modulo"``, the DLRM default) or ``hashing.random_hash(v, H-1, seed=f, method="mix")``
    (``"mix"``), always in ``[0, H-1)``; an empty field -> ``H-1``, the reserved last row;
  - ``vocabulary`` (``experiments.data.criteo_vocab``): frequency-thresholded contiguous ids.
``num_embeddings_per_feature()`` gives the 26 table sizes a DLRM needs for the chosen mapping.

Why not ``torchrec.datasets.criteo.CriteoIterDataPipe``: its row mapper casts every field of every line with a
Python call, too slow for the 45M-line Kaggle file or Terabyte's billions, and maps empty and malformed fields
silently to 0. Here a file is read in blocks of whole lines (``chunk_bytes``; a file is never held whole) and each
block is parsed vectorised: separators in one numpy pass over the bytes, the 8 bytes of every categorical field
decoded as one word (``binascii``; the table ``_HEX`` only to find bad fields), the dense fields as one fixed-width
byte-string column (at most 64 characters) through numpy's float cast. Only when a field fails is its line found:
the ``ValueError`` names the file, the 1-based line, the column (1-based, as ``cut -f``, and its name such as
``C3``/``I5``) and the text; ``skip_bad_lines=True`` drops such lines instead, counting them in ``reader.stats``
and warning once at the end of the pass.
"""
from __future__ import annotations

import binascii
import errno
import gzip
import numbers
import os
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch
from torchrec.datasets.criteo import CAT_FEATURE_COUNT, INT_FEATURE_COUNT
from torchrec.datasets.utils import Batch

from experiments.data.batch import CAT_NAMES, make_batch
from hashing import HASH_METHODS, random_hash

PathLike = Union[str, "os.PathLike[str]"]
EMPTY_ID = 1 << 32  # raw id of an empty categorical field: just past the 8-hex-digit range
UNLABELED = -1  # label of every sample read with has_label=False
TSV_COLUMNS: List[str] = (
    ["label"] + [f"I{i + 1}" for i in range(INT_FEATURE_COUNT)] + [f"C{i + 1}" for i in range(CAT_FEATURE_COUNT)]
)
DEFAULT_CHUNK_BYTES = 8 << 20
MAX_DENSE_CHARS = 64  # a longer dense field is malformed (bounds the parse buffer; _LEN_MASK covers 64)
MAX_BAD_EXAMPLES = 10  # bad-line descriptions kept in ReaderStats

_HEX = np.full(256, 255, dtype=np.uint8)  # byte -> nibble value, 255 = not a hex digit
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
del _i, _c
_DENSE_BAD = np.ones(256, dtype=np.uint8)  # 1 = a byte no number holds: nan, inf, 1_0, " 1" are rejected
_DENSE_CHARS = b"\x000123456789+-.eE"  # NUL is the padding of the fixed-width field copies
_DENSE_BAD[list(_DENSE_CHARS)] = 0
_LEN_MASK = np.array(  # [L, j]: little-endian mask of the bytes of word j inside a field of L bytes
    [[(1 << (8 * min(max(n - 8 * j, 0), 8))) - 1 for j in range(8)] for n in range(8 * 8 + 1)], dtype=np.uint64
)
_ASCII_ZEROS = np.frombuffer(b"00000000", dtype="<u8")[0]


def _unhex(words: np.ndarray) -> np.ndarray:
    """uint64 words holding 8 hex digits each (text order) -> int64 values, same shape; binascii.Error if bad."""
    return np.frombuffer(binascii.unhexlify(words.tobytes()), dtype=">u4").astype(np.int64).reshape(words.shape)


@dataclass
class ReaderStats:
    """Counts of one pass: ``lines_read`` (good + bad), ``bad_lines`` (skipped), their first descriptions."""

    lines_read: int = 0
    bad_lines: int = 0
    bad_examples: List[str] = field(default_factory=list)
    files_read: int = 0


@dataclass
class RawChunk:
    """The good lines of one block: labels int64 ``[n]`` (0/1 or ``UNLABELED``), dense float32 ``[n, 13]``
    (already ``log1p(max(x, 0))``), raw categorical values int64 ``[n, 26]`` (0 where empty), empty bool ``[n, 26]``."""

    labels: np.ndarray
    dense: np.ndarray
    cats: np.ndarray
    empty: np.ndarray


def open_tsv(path: PathLike) -> BinaryIO:
    """Open a TSV file for binary reading; gzip is detected from its magic bytes, not from the name."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "Criteo TSV file not found", path)
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # type: ignore[return-value]


def iter_line_blocks(path: PathLike, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    """Yield blocks of whole lines (each ending in ``\\n``) of about ``chunk_bytes`` bytes. Blank lines at the
    end of the file (an editor's or a concatenation's trailing newline) are dropped; blank lines inside the
    file stay, and are reported as malformed lines by the parser."""
    pending: List[bytes] = []  # held back: the last block with text, then blocks of blank lines only
    for block in _raw_line_blocks(path, chunk_bytes):
        if block.strip(b"\r\n"):
            yield from pending
            pending = [block]
        else:
            pending.append(block)
    if pending:
        text = pending[0].rstrip(b"\r\n")
        if text:
            yield text + b"\n"


def _raw_line_blocks(path: PathLike, chunk_bytes: int) -> Iterator[bytes]:
    carry = b""
    with open_tsv(path) as f:
        while True:
            try:
                data = f.read(chunk_bytes)
            except (OSError, EOFError) as error:  # corrupt / truncated gzip
                raise ValueError(f"{os.fspath(path)}: cannot read ({error})") from error
            if not data:
                if carry:
                    yield carry + b"\n"
                return
            if carry:
                data = carry + data
            cut = data.rfind(b"\n")
            if cut < 0:  # no line end yet (a line longer than chunk_bytes)
                carry = data
                continue
            carry = data[cut + 1 :]
            yield data[: cut + 1]


def _float_fallback(text: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Parse byte strings one distinct value at a time; returns (values, failed). Used only after a failure."""
    uniques, inverse = np.unique(text.reshape(-1), return_inverse=True)
    values = np.zeros(len(uniques))
    failed = np.zeros(len(uniques), dtype=bool)
    for k, item in enumerate(uniques):
        try:
            values[k] = float(item)
        except ValueError:
            failed[k] = True
    return values[inverse].reshape(text.shape), failed[inverse].reshape(text.shape)


class _Block:
    """One parsed block: the good rows (``chunk``) and the bad lines (``bad_lines``, ascending, 0-based in the
    block, with the 0-based column of their first bad field in ``bad_columns``, -1 for a wrong column count)."""

    def __init__(self, buf: bytes, has_label: bool) -> None:
        self.buf, self.columns = buf, TSV_COLUMNS if has_label else TSV_COLUMNS[1:]
        a = np.frombuffer(buf, dtype=np.uint8)
        ncols = len(self.columns)
        sep = np.flatnonzero((a == 9) | (a == 10))
        nl_k = np.flatnonzero(a[sep] == 10)  # index into sep of each line end
        self.line_end = sep[nl_k]
        self.line_start = np.concatenate([[0], self.line_end[:-1] + 1])
        self.ncols_found = np.diff(nl_k, prepend=-1)
        rows = np.flatnonzero(self.ncols_found == ncols)
        ends = sep[nl_k[rows, None] - (ncols - 1) + np.arange(ncols)]  # [g, ncols] field end offsets
        starts = np.empty_like(ends)
        starts[:, 0] = self.line_start[rows]
        starts[:, 1:] = ends[:, :-1] + 1
        last = ends[:, -1]
        ends[:, -1] -= (last > starts[:, -1]) & (a[last - 1] == 13)  # "\r\n"
        lens = ends - starts
        bad = np.zeros(ends.shape, dtype=bool)

        d0 = 1 if has_label else 0
        if has_label:
            first = a[starts[:, 0]]
            bad[:, 0] = (lens[:, 0] != 1) | ((first != 48) & (first != 49))
            labels = first.astype(np.int64) - 48
        else:
            labels = np.full(len(rows), UNLABELED, dtype=np.int64)

        dl = lens[:, d0 : d0 + INT_FEATURE_COUNT]
        too_long = dl > MAX_DENSE_CHARS
        dl = np.minimum(dl, MAX_DENSE_CHARS)
        k = max((int(dl.max(initial=0)) + 7) // 8, 1)  # 8-byte words per dense field
        padded = np.concatenate([a, np.zeros(8 * k + 8, dtype=np.uint8)])
        word_at = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))  # word at each byte
        words = word_at[starts[:, d0 : d0 + INT_FEATURE_COUNT, None] + 8 * np.arange(k)]  # [g, 13, k]
        words &= _LEN_MASK[: 8 * k + 1, :k][dl]  # zero the bytes past each field's end
        text = words.view(np.uint8)  # [g, 13, 8k]
        bad_dense = too_long.copy()
        if text.tobytes().translate(None, _DENSE_CHARS):  # some byte no number holds: find the fields (LUT)
            bad_dense |= (_DENSE_BAD[text].view(np.uint64) != 0).any(-1)
        if (a == 0).any():  # a NUL inside a field would pass as padding
            bad_dense |= ((text == 0) & (np.arange(8 * k) < dl[..., None])).any(-1)
        if bad_dense.any():
            words[bad_dense] = 0
        words[(dl == 0) | bad_dense, 0] = 48  # empty -> "0"; bad ones are parsed as "0" and dropped below
        strings = words.view(f"S{8 * k}")[..., 0]
        try:
            values = strings.astype(np.float64)
        except ValueError:  # e.g. "1-2" or "." passed the character check
            values, failed = _float_fallback(strings)
            bad_dense |= failed
        bad_dense |= ~np.isfinite(values)
        bad[:, d0 : d0 + INT_FEATURE_COUNT] = bad_dense
        dense = np.log1p(np.maximum(values, 0.0)).astype(np.float32)

        c0 = d0 + INT_FEATURE_COUNT
        cl = lens[:, c0:]
        empty = cl == 0
        words = word_at[starts[:, c0:]]  # [g, 26]: the 8 bytes from each field's start, in text order
        words[cl != 8] = _ASCII_ZEROS  # empty (and wrong-length) fields decode as 0
        try:  # binascii's C table is the fast path; the numpy LUT below only runs to locate bad digits
            cats = _unhex(words)
            bad_hex = np.zeros(cl.shape, dtype=bool)
        except binascii.Error:
            bad_hex = (_HEX[words.view(np.uint8)].reshape(*cl.shape, 8) == 255).any(-1)
            words[bad_hex] = _ASCII_ZEROS
            cats = _unhex(words)
        bad_cat = ~empty & ((cl != 8) | bad_hex)
        bad[:, c0:] = bad_cat
        cats[empty | bad_cat] = 0

        line_bad = bad.any(1)
        ok = ~line_bad
        self.chunk = RawChunk(labels[ok], dense[ok], cats[ok], empty[ok])
        wrong = np.flatnonzero(self.ncols_found != ncols)
        self.bad_lines = np.concatenate([wrong, rows[line_bad]])
        self.bad_columns = np.concatenate([np.full(len(wrong), -1), bad[line_bad].argmax(1)])
        order = np.argsort(self.bad_lines, kind="stable")
        self.bad_lines, self.bad_columns = self.bad_lines[order], self.bad_columns[order]

    @property
    def num_lines(self) -> int:
        return len(self.line_end)

    def describe(self, k: int, path: str, first_line: int) -> str:
        """Describe bad line ``k`` (index into ``bad_lines``); ``first_line`` is the block's first line number."""
        i, col = int(self.bad_lines[k]), int(self.bad_columns[k])
        line = self.buf[self.line_start[i] : self.line_end[i]]
        where = f"{path}: line {first_line + i}"
        if col < 0:
            return (
                f"{where}: expected {len(self.columns)} tab-separated columns, found {int(self.ncols_found[i])}: "
                f"{line[:200]!r}"
            )
        text = line.rstrip(b"\r").split(b"\t")[col]
        name = self.columns[col]
        if name == "label":
            reason = "label must be 0 or 1"
        elif name.startswith("I"):
            reason = f"dense value must be a number (at most {MAX_DENSE_CHARS} characters) or empty"
        else:
            reason = "categorical value must be 8 hex digits or empty"
        return f"{where}: column {col + 1} ({name}): {reason}, got {text[:100]!r}"


def _first_lines(buf: bytes, n: int) -> bytes:
    ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
    return buf if len(ends) <= n else buf[: int(ends[n - 1]) + 1]


def _drop_first_lines(buf: bytes, n: int) -> Tuple[bytes, int]:
    """``buf`` without its first ``n`` lines, and how many lines were dropped."""
    ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
    if len(ends) <= n:
        return b"", len(ends)
    return buf[int(ends[n - 1]) + 1 :], n


def iter_raw_chunks(
    paths: Sequence[PathLike],
    *,
    has_label: bool = True,
    skip_bad_lines: bool = False,
    max_lines: Optional[int] = None,
    skip_lines: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    stats: Optional[ReaderStats] = None,
) -> Iterator[RawChunk]:
    """Parse ``paths`` in sequence, yielding the good lines of each block (see ``RawChunk``).

    A bad line raises ``ValueError`` (file, line, column, text) unless ``skip_bad_lines``; then it is counted in
    ``stats``. The first ``skip_lines`` lines over all files are passed over unparsed (e.g. the training lines
    before an evaluation slice); ``max_lines`` then caps the lines read (good and bad).
    """
    stats = stats if stats is not None else ReaderStats()
    remaining = max_lines
    to_skip = int(skip_lines)
    for path in paths:
        path = os.fspath(path)
        line_no = 1
        for buf in iter_line_blocks(path, chunk_bytes):
            if to_skip:
                buf, dropped = _drop_first_lines(buf, to_skip)
                to_skip -= dropped
                line_no += dropped
                if not buf:
                    continue
            if remaining is not None:
                if remaining <= 0:
                    return
                buf = _first_lines(buf, remaining)
            block = _Block(buf, has_label)
            if len(block.bad_lines):
                if not skip_bad_lines:
                    raise ValueError(block.describe(0, path, line_no))
                stats.bad_lines += len(block.bad_lines)
                for k in range(min(len(block.bad_lines), MAX_BAD_EXAMPLES - len(stats.bad_examples))):
                    stats.bad_examples.append(block.describe(k, path, line_no))
            stats.lines_read += block.num_lines
            line_no += block.num_lines
            if remaining is not None:
                remaining -= block.num_lines
            if len(block.chunk.labels):
                yield block.chunk
        stats.files_read += 1
        if remaining is not None and remaining <= 0:
            return


class IdMapping(Protocol):
    """Raw categorical values -> row ids, e.g. ``experiments.data.criteo_vocab.CriteoVocabulary``."""

    def lookup(self, cats: np.ndarray, empty: np.ndarray) -> np.ndarray: ...

    def num_embeddings_per_feature(self) -> List[int]: ...


def as_path_list(paths: Union[PathLike, Iterable[PathLike]]) -> List[str]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("no Criteo TSV paths given")
    out = [os.fspath(p) for p in items]
    for path in out:
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, "Criteo TSV file not found", path)
    return out


def _as_budgets(row_budget: Union[None, int, Sequence[int]]) -> Optional[List[int]]:
    if row_budget is None:
        return None
    if isinstance(row_budget, torch.Tensor) and row_budget.dim() == 0:
        row_budget = row_budget.item()
    if isinstance(row_budget, numbers.Integral) and not isinstance(row_budget, bool):
        budgets = [int(row_budget)] * CAT_FEATURE_COUNT
    elif isinstance(row_budget, Iterable) and not isinstance(row_budget, (str, bytes)):
        budgets = list(row_budget)
        if len(budgets) != CAT_FEATURE_COUNT:
            raise ValueError(f"row_budget must be an int or a list of {CAT_FEATURE_COUNT} ints, got {len(budgets)}")
        bad = [(f, h) for f, h in enumerate(budgets)
               if not isinstance(h, numbers.Integral) or isinstance(h, bool)]
        if bad:
            raise TypeError(f"row_budget of feature {CAT_NAMES[bad[0][0]]} must be an int, got {bad[0][1]!r}")
        budgets = [int(h) for h in budgets]
    else:
        raise TypeError(f"row_budget must be an int or a list of {CAT_FEATURE_COUNT} ints, got {row_budget!r}")
    small = [(f, h) for f, h in enumerate(budgets) if h < 2]
    if small:
        raise ValueError(f"row_budget must be >= 2 (one row is reserved for empty fields); feature "
                         f"{CAT_NAMES[small[0][0]]} has {small[0][1]}")
    return budgets


class CriteoTsvReader:
    """Iterable over ``Batch``es of Criteo TSV files read in sequence (batches run across file boundaries).

    Every ``iter()`` is a fresh pass that resets ``stats``. The last partial batch is yielded unless ``drop_last``.
    ``row_budget`` and ``vocabulary`` are exclusive; with neither, ids are raw (``EMPTY_ID`` for empty fields).
    """

    def __init__(
        self,
        paths: Union[PathLike, Iterable[PathLike]],
        batch_size: int,
        row_budget: Union[None, int, Sequence[int]] = None,
        hash_method: str = "modulo",
        skip_bad_lines: bool = False,
        drop_last: bool = False,
        has_label: bool = True,
        max_lines: Optional[int] = None,
        vocabulary: Optional[IdMapping] = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        skip_lines: int = 0,
    ) -> None:
        self.paths = as_path_list(paths)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if hash_method not in HASH_METHODS:
            raise ValueError(f"unknown hash_method {hash_method!r}; expected one of {HASH_METHODS}")
        if row_budget is not None and vocabulary is not None:
            raise ValueError("give row_budget or vocabulary, not both")
        if max_lines is not None and int(max_lines) < 0:
            raise ValueError(f"max_lines must be >= 0, got {max_lines}")
        if int(skip_lines) < 0:
            raise ValueError(f"skip_lines must be >= 0, got {skip_lines}")
        self.skip_lines = int(skip_lines)
        if int(chunk_bytes) < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        self.batch_size, self.hash_method = int(batch_size), hash_method
        self.row_budget = _as_budgets(row_budget)
        self.skip_bad_lines, self.drop_last, self.has_label = skip_bad_lines, drop_last, has_label
        self.max_lines = None if max_lines is None else int(max_lines)
        self.vocabulary, self.chunk_bytes = vocabulary, int(chunk_bytes)
        self.stats = ReaderStats()

    def num_embeddings_per_feature(self) -> List[int]:
        """Table size of each of the 26 features under this reader's id mapping (``2^32 + 1`` when raw)."""
        if self.vocabulary is not None:
            return self.vocabulary.num_embeddings_per_feature()
        if self.row_budget is not None:
            return list(self.row_budget)
        return [EMPTY_ID + 1] * CAT_FEATURE_COUNT

    def map_ids(self, cats: np.ndarray, empty: np.ndarray) -> np.ndarray:
        """Raw values int64 ``[n, 26]`` + empty mask -> embedding row ids int64 ``[n, 26]``."""
        if self.vocabulary is not None:
            return self.vocabulary.lookup(cats, empty)
        if self.row_budget is None:
            return np.where(empty, EMPTY_ID, cats)
        ids = np.empty_like(cats)
        for f, rows in enumerate(self.row_budget):
            column = torch.from_numpy(np.ascontiguousarray(cats[:, f]))
            ids[:, f] = random_hash(column, rows - 1, seed=f, method=self.hash_method).numpy()
        return np.where(empty, np.asarray(self.row_budget, dtype=np.int64) - 1, ids)

    def _batch(self, labels: np.ndarray, dense: np.ndarray, ids: np.ndarray) -> Batch:
        return make_batch(
            torch.from_numpy(dense.copy()),  # a copy, so a kept batch does not pin the whole chunk
            torch.from_numpy(ids),
            torch.from_numpy(labels),
            keys=CAT_NAMES,
        )

    def __iter__(self) -> Iterator[Batch]:
        self.stats = stats = ReaderStats()
        size = self.batch_size
        pending: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        pending_n = 0
        chunks = iter_raw_chunks(
            self.paths,
            has_label=self.has_label,
            skip_bad_lines=self.skip_bad_lines,
            max_lines=self.max_lines,
            skip_lines=self.skip_lines,
            chunk_bytes=self.chunk_bytes,
            stats=stats,
        )
        for chunk in chunks:
            pending.append((chunk.labels, chunk.dense, self.map_ids(chunk.cats, chunk.empty)))
            pending_n += len(chunk.labels)
            if pending_n < size:
                continue
            labels, dense, ids = (np.concatenate(parts) for parts in zip(*pending)) if len(pending) > 1 else pending[0]
            full = pending_n // size * size
            for s in range(0, full, size):
                yield self._batch(labels[s : s + size], dense[s : s + size], ids[s : s + size])
            pending = [(labels[full:], dense[full:], ids[full:])] if full < pending_n else []
            pending_n -= full
        if pending_n and not self.drop_last:
            labels, dense, ids = (np.concatenate(parts) for parts in zip(*pending))
            yield self._batch(labels, dense, ids)
        if stats.bad_lines:
            warnings.warn(
                f"CriteoTsvReader skipped {stats.bad_lines} malformed line(s) of {stats.lines_read} read; "
                f"first: {stats.bad_examples[0]}",
                RuntimeWarning,
                stacklevel=2,
            )
