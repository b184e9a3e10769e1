"""MovieLens ratings as a Criteo-style CTR task for DLRM: labels, sparse features with crossed ones, dense counts.

Each rating is one sample, labelled 1 when the rating is >= 4. Ratings are in time order and split in time: the
first ``train_fraction`` train, the rest evaluate (later ratings, including users and items first seen there).

Sparse features, one table ``t_<feature>`` each, one id per sample except the bags:
* base: ``user``, ``item``, ``year`` (release year; unknown is its own id), ``genres`` (a bag of the item's
  genres, pooled by the table's SUM), and where the source has users (100K) ``zip``, ``occupation``, ``gender``,
  ``age`` (bucketed as MovieLens-1M does: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+). Their tables hold every
  value of the source (an id first seen in evaluation has a row that training never touched).
* crossed (``a_x_b``): the pair's index + 1 in the dictionary of the pairs the *training* part holds; an
  evaluation pair never seen in training reads the reserved row 0 (never trained: all methods see the same
  untrained row, as a serving system sees a new pair). ``user_x_genre`` is a bag (one pair per genre of the item).
  The crosses are what make the tables long-tailed as in Criteo: most rows sit in them, most seen once or twice.
  100K: zip x item, user x genre, item x age, occupation x item, year x user; dslabs: user x genre, year x user.

Dense features (no look at any label): log1p of how many ratings the user and the item had before this one, in
time order -- what a serving system knows when it scores the event.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pandas as pd
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from experiments.data.movielens import MovieLens

AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups, as upper edges
POSITIVE_RATING = 4.0
DENSE_FEATURES = ("log1p_user_prior_ratings", "log1p_item_prior_ratings")
CROSSES_WITH_USERS = (("zip", "item"), ("user", "genre"), ("item", "age"), ("occupation", "item"),
                      ("year", "user"))
CROSSES_WITHOUT_USERS = (("user", "genre"), ("year", "user"))


@dataclass
class Bags:
    """One feature's ids for every sample as CSR: sample s has ``values[offsets[s]:offsets[s + 1]]``."""

    values: np.ndarray  # int64
    offsets: np.ndarray  # int64 [N + 1]

    @staticmethod
    def single(ids: np.ndarray) -> "Bags":
        return Bags(ids.astype(np.int64), np.arange(len(ids) + 1, dtype=np.int64))


@dataclass
class MovieLensFeatures:
    """Every sample's features, in time order; ``batches`` cuts them into TorchRec ``Batch``es."""

    name: str
    keys: List[str]  # sparse features, in KJT order
    rows: Dict[str, int]  # table rows per feature
    crossed: List[str]  # the crossed features among ``keys``
    sparse: Dict[str, Bags]
    dense: np.ndarray  # float32 [N, len(DENSE_FEATURES)]
    labels: np.ndarray  # float32 [N]
    num_train: int

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def batch(self, start: int, stop: int) -> Batch:
        """Samples ``[start, stop)`` as a ``Batch`` (dense ``[B, D]``, the KJT feature-major, labels ``[B]``)."""
        values, lengths = [], []
        for key in self.keys:
            bags = self.sparse[key]
            offsets = bags.offsets[start:stop + 1]
            values.append(bags.values[offsets[0]:offsets[-1]])
            lengths.append(np.diff(offsets))
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=list(self.keys),
                                                  values=torch.from_numpy(np.concatenate(values)),
                                                  lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)))
        return Batch(dense_features=torch.from_numpy(self.dense[start:stop]), sparse_features=kjt,
                     labels=torch.from_numpy(self.labels[start:stop]))

    def batches(self, start: int, stop: int, batch_size: int) -> Iterator[Batch]:
        """Consecutive batches of ``batch_size`` over samples ``[start, stop)`` (the last one may be smaller)."""
        for s in range(start, stop, batch_size):
            yield self.batch(s, min(s + batch_size, stop))

    def table_rows(self) -> Tuple[int, int]:
        """Rows in all tables, and in the crossed ones."""
        return sum(self.rows.values()), sum(self.rows[k] for k in self.crossed)


def _codes(values: pd.Series) -> Tuple[np.ndarray, int]:
    """Dense codes of ``values`` in order of first appearance (a missing value is a value), and their count."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64), len(uniques)


def _prior_counts(ids: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same id."""
    return pd.Series(ids).groupby(ids).cumcount().to_numpy()


def _cross(a: Bags, b: Bags, b_rows: int, num_train: int) -> Tuple[Bags, int]:
    """The pair feature of ``a`` x ``b`` (at most one of them a bag): pair ids from the training samples'
    dictionary, 1-based, 0 for a pair no training sample holds; and the table's rows."""
    a_single, b_single = len(a.values) == len(a.offsets) - 1, len(b.values) == len(b.offsets) - 1
    if not (a_single and np.array_equal(a.offsets, np.arange(len(a.offsets)))) and \
            not (b_single and np.array_equal(b.offsets, np.arange(len(b.offsets)))):
        raise ValueError("a cross of two bags is not supported")
    offsets = b.offsets if a_single and np.array_equal(a.offsets, np.arange(len(a.offsets))) else a.offsets
    lengths = np.diff(offsets)  # expand the single-id side to the other side's entries
    a_values = a.values if offsets is a.offsets else np.repeat(a.values, lengths)
    b_values = b.values if offsets is b.offsets else np.repeat(b.values, lengths)
    keys = a_values * np.int64(b_rows) + b_values
    dictionary = np.unique(keys[:offsets[num_train]])
    position = np.searchsorted(dictionary, keys)
    found = (position < len(dictionary)) & (dictionary[np.minimum(position, len(dictionary) - 1)] == keys) \
        if len(dictionary) else np.zeros(len(keys), dtype=bool)
    return Bags(np.where(found, position + 1, 0).astype(np.int64), offsets), 1 + len(dictionary)


def movielens_features(data: MovieLens, train_fraction: float) -> MovieLensFeatures:
    """The features above for every rating of ``data``; the first ``train_fraction`` of them (in time) train."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    ratings, items = data.ratings, data.items
    n = len(ratings)
    num_train = int(n * train_fraction)
    if not 0 < num_train < n:
        raise ValueError(f"{data.name}: {n} ratings leave no training or no evaluation sample at train_fraction "
                         f"{train_fraction}")
    user, item = ratings["user"].to_numpy(), ratings["item"].to_numpy()
    sparse: Dict[str, Bags] = {"user": Bags.single(user), "item": Bags.single(item)}
    rows: Dict[str, int] = {"user": int(user.max()) + 1 if data.users is None else len(data.users),
                            "item": len(items)}
    year, rows["year"] = _codes(items["year"])
    sparse["year"] = Bags.single(year[item])
    genre_lists = [[g for g in str(s).split("|") if g] for s in items["genres"]]
    genre_names = sorted({g for gs in genre_lists for g in gs})
    index = {g: i for i, g in enumerate(genre_names)}
    item_lengths = np.array([len(gs) for gs in genre_lists], dtype=np.int64)
    item_offsets = np.concatenate([[0], np.cumsum(item_lengths)])
    item_values = np.array([index[g] for gs in genre_lists for g in gs], dtype=np.int64)
    lengths = item_lengths[item]
    starts = np.repeat(item_offsets[item], lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    sparse["genres"] = Bags(item_values[starts + within], np.concatenate([[0], np.cumsum(lengths)]))
    rows["genres"] = max(len(genre_names), 1)
    sources = {"user": "user", "item": "item", "year": "year", "genre": "genres"}
    if data.users is not None:
        users = data.users
        for column in ("zip", "occupation", "gender"):
            codes, rows[column] = _codes(users[column])
            sparse[column] = Bags.single(codes[user])
            sources[column] = column
        sparse["age"] = Bags.single(np.searchsorted(AGE_BUCKETS, users["age"].to_numpy(), side="right")[user])
        rows["age"] = len(AGE_BUCKETS) + 1
        sources["age"] = "age"
    crossed = []
    for a, b in CROSSES_WITH_USERS if data.users is not None else CROSSES_WITHOUT_USERS:
        name = f"{a}_x_{b}"
        sparse[name], rows[name] = _cross(sparse[sources[a]], sparse[sources[b]], rows[sources[b]], num_train)
        crossed.append(name)
    keys = list(sparse)
    dense = np.log1p(np.stack([_prior_counts(user), _prior_counts(item)], axis=1)).astype(np.float32)
    labels = (ratings["rating"].to_numpy() >= POSITIVE_RATING).astype(np.float32)
    return MovieLensFeatures(data.name, keys, rows, crossed, sparse, dense, labels, num_train)
