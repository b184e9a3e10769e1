"""The semantic-ID experiment on real items, end to end on a fixture: fake MovieLens frames (the interface of
``experiments.data.movielens``) -> item text -> the plain-torch MiniLM (a tiny random model) -> codes -> prefix-ngram
vs random hashing, with the embeddings cached per data set and the paired changes' s.e.m. reported."""
import glob
import os

import numpy as np
import pandas as pd
import pytest

from experiments import semantic_id_catalog as E
from experiments.data import minilm_wheel, movielens
from tests.test_minilm import tiny_encoder

WORDS = ["toy", "story", "the", "movie", "hello", "world", "cafe", "a"]
GENRES = ["Comedy", "Drama", "Action|Thriller", "Animation|Children's|Comedy"]


def fake_movielens(num_items: int = 48, num_users: int = 30, num_ratings: int = 3000, seed: int = 0):
    """A ``MovieLens`` with the loader's columns and dtypes; a third of the items are first rated late (new)."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({
        "title": [" ".join(rng.choice(WORDS, size=2)) + f" {k}" for k in range(num_items)],
        "year": np.where(np.arange(num_items) % 5 == 0, np.nan, 1990 + np.arange(num_items) % 10).astype(float),
        "genres": [GENRES[k % len(GENRES)] if k % 7 else "" for k in range(num_items)]})
    timestamp = np.sort(rng.integers(0, 10**6, size=num_ratings)).astype(np.int64)
    late = timestamp >= np.quantile(timestamp, 0.7)
    old_items, new_items = num_items * 2 // 3, num_items - num_items * 2 // 3
    item = np.where(late & (rng.random(num_ratings) < 0.5), old_items + rng.integers(0, new_items, num_ratings),
                    (rng.zipf(1.5, num_ratings) - 1) % old_items).astype(np.int64)
    ratings = pd.DataFrame({"user": rng.integers(0, num_users, num_ratings).astype(np.int64), "item": item,
                            "rating": rng.integers(1, 6, num_ratings).astype(np.float32), "timestamp": timestamp})
    return movielens.MovieLens("movielens-100k", ratings, items, None)


def test_dataset_path_runs_end_to_end_with_the_minilm_path(tmp_path, monkeypatch):
    monkeypatch.setenv("EMB_OPT_DATA_CACHE", str(tmp_path / "cache"))
    loads, encoded = [], []
    fake = fake_movielens()

    def load(source, cache_dir=None):
        loads.append(source)
        return fake

    def model(cache_dir=None):
        encoder = tiny_encoder()
        original = encoder.encode
        encoder.encode = lambda texts, **kw: (encoded.append(list(texts)), original(texts, **kw))[1]
        return encoder

    monkeypatch.setattr(movielens, "load_movielens", load)
    monkeypatch.setattr(minilm_wheel, "minilm_from_wheel", model)
    config = E.Config(dataset="movielens-100k", seeds=3, levels=2, codebook_size=4, rqvae_epochs=2, compression=4,
                      parameterizations="random,prefix_ngram", embedding_dim=4, batch_size=128, progress=False,
                      out=str(tmp_path / "out"), new_item_start=0.7)
    df = E.run(config)
    assert loads == ["movielens-100k"]
    # the item text that was embedded: title (year). Genres: ...
    assert len(encoded) == 1 and len(encoded[0]) == 48
    assert encoded[0][1] == f"{fake.items['title'][1]} (1991). Genres: Drama."
    assert encoded[0][0] == f"{fake.items['title'][0]}."                  # unknown year, no genres
    assert list(df["parameterization"]) == ["random", "prefix_ngram"] and (df["rows"] == 12).all()
    for segment in E.SEGMENTS:
        assert np.isfinite(df[f"ne_{segment}"]).all(), segment
    assert df.loc[0, "dne_new_pct_vs_random"] == 0.0
    sem = df.loc[1, [f"dne_{s}_pct_vs_random_sem" for s in E.SEGMENTS]].to_numpy(dtype=float)
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    paired = runs[runs["parameterization"] == "prefix_ngram"]["dne_new_pct_vs_random"].to_numpy()
    assert paired.size == 3 and np.isfinite(sem).all() and sem[-1] == pytest.approx(paired.std(ddof=1) / np.sqrt(3))
    assert "mean +- s.e.m." in (tmp_path / "out" / "codes_report.txt").read_text()
    cached = glob.glob(str(tmp_path / "cache" / "embeddings" / "movielens-100k-all-MiniLM-L6-v2-*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (48, 8)
    # a second run reads the cached embeddings: nothing is encoded again
    E.run(E.Config(**{**config.__dict__, "seeds": 1, "out": str(tmp_path / "out2")}))
    assert len(encoded) == 1 and not glob.glob(str(tmp_path / "cache" / "embeddings" / "*.tmp"))


def test_cached_embeddings_are_checked(tmp_path):
    texts = ["a", "b"]
    first = minilm_wheel.cached_text_embeddings(texts, "x", embed=lambda t: np.ones((len(t), 3)), cache_dir=str(tmp_path))
    assert first.dtype == np.float32 and first.shape == (2, 3)
    # other texts -> another file, not the stale one
    other = minilm_wheel.cached_text_embeddings(["a", "c"], "x", embed=lambda t: np.zeros((len(t), 3)),
                                                cache_dir=str(tmp_path))
    assert (other == 0).all() and len(os.listdir(tmp_path / "embeddings")) == 2
    path = glob.glob(str(tmp_path / "embeddings" / "*.npy"))[0]
    np.save(path, np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"cached embeddings are float32 \(5, 3\).*delete it"):
        for t in (texts, ["a", "c"]):
            minilm_wheel.cached_text_embeddings(t, "x", embed=None, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="returned shape"):
        minilm_wheel.cached_text_embeddings(["q"], "y", embed=lambda t: np.ones(3), cache_dir=str(tmp_path))


def test_dataset_option_is_checked():
    with pytest.raises(ValueError, match="dataset must be one of movielens-100k, movielens-dslabs"):
        E.check_config(E.Config(dataset="movielens-1b"))
    with pytest.raises(ValueError, match="give one of dataset"):
        E.check_config(E.Config(dataset="movielens-100k", catalog_dir="ml-1m"))
