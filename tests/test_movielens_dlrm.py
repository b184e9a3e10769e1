"""The DLRM comparison's MovieLens mode end to end on fixture wheels (no network): features built on the training
part, crossed ids with the unseen row, one epoch by default, every method within its budget, the seeds summary."""
import numpy as np
import pandas as pd
import pytest

from experiments import criteo_dlrm
from experiments.data.movielens import load_movielens
from experiments.data.movielens_features import movielens_features
from test_movielens import ML100K_FILES, write_fixture_wheels

TINY = ["--embedding-dim", "8", "--chunk-size", "4", "--warmup-steps", "1", "--resize-interval", "1", "--no-progress"]


def random_ml100k_files(users: int = 40, items: int = 30, ratings: int = 400, seed: int = 0) -> dict:
    """Atomic files of a random MovieLens-100K-shaped source, big enough for FIITED's fixed store overhead."""
    rng = np.random.default_rng(seed)
    genres = ["Action", "Comedy", "Drama", "Sci-Fi", "Children's"]
    item = "".join(f"{i + 1}\tMovie {i}\t{1950 + i % 40}\t{' '.join(rng.choice(genres, 1 + i % 3, replace=False))}\n"
                   for i in range(items))
    user = "".join(f"{u + 1}\t{15 + u}\t{'MF'[u % 2]}\tjob{u % 6}\t{10000 + u % 25:05d}\n" for u in range(users))
    inter = "".join(f"{rng.integers(1, users + 1)}\t{rng.integers(1, items + 1)}\t{rng.integers(1, 6)}\t{1000 + t}\n"
                    for t in range(ratings))
    header = {k: v.split("\n")[0] + "\n" for k, v in ML100K_FILES.items()}
    return {"inter": header["inter"] + inter, "item": header["item"] + item, "user": header["user"] + user}


@pytest.fixture(autouse=True)
def fresh_feature_cache():
    criteo_dlrm.movielens_features.cache_clear()  # fixtures differ between tests, the cache key may not
    yield
    criteo_dlrm.movielens_features.cache_clear()


def test_features_crosses_and_bags(tmp_path, monkeypatch):
    write_fixture_wheels(str(tmp_path), monkeypatch)
    f = movielens_features(load_movielens("movielens-100k", str(tmp_path)), train_fraction=0.75)
    assert f.num_train == 6 and f.labels.tolist() == [1, 0, 0, 1, 0, 1, 1, 1]
    assert f.crossed == ["zip_x_item", "user_x_genre", "item_x_age", "occupation_x_item", "year_x_user"]
    assert f.rows["user"] == 3 and f.rows["item"] == 3 and f.rows["age"] == 7
    # (user, item) in time order: (0,0) (2,2) (0,1) (1,1) (1,0) (2,1) | eval (0,2) (1,2); zips are per user
    zip_item = f.sparse["zip_x_item"].values
    assert f.rows["zip_x_item"] == 1 + 6 and (zip_item[:6] > 0).all() and zip_item[6:].tolist() == [0, 0]
    # user x genre is a bag like genres: one pair per genre of the item, unseen pairs -> row 0
    genres, user_genre = f.sparse["genres"], f.sparse["user_x_genre"]
    assert np.array_equal(genres.offsets, user_genre.offsets) and np.diff(genres.offsets).tolist()[:3] == [3, 1, 2]
    assert user_genre.values[genres.offsets[6]:].tolist() == [0, 0]  # item 2 ("unknown") by users 0 and 1
    # dense: log1p of each user's / item's earlier ratings, never a label
    assert np.allclose(np.expm1(f.dense[:, 0]), [0, 0, 1, 0, 1, 1, 2, 2])
    batch = f.batch(0, 3)
    assert batch.sparse_features.keys() == f.keys and batch.dense_features.shape == (3, 2)
    assert batch.sparse_features["genres"].lengths().tolist() == [3, 1, 2]


def test_movielens_mode_runs_every_method_within_budget(tmp_path, monkeypatch, capsys):
    write_fixture_wheels(str(tmp_path / "cache"), monkeypatch, ml100k_files=random_ml100k_files())
    df = criteo_dlrm.main(TINY + ["--dataset", "movielens-100k", "--data-cache", str(tmp_path / "cache"),
                                  "--batch-size", "50", "--eval-batch-size", "64", "--budgets", "0.5,0.3",
                                  "--seeds", "1,2",
                                  "--methods", "full,hash,rowprune,fiited,sid", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "semantic-ID methods are skipped" in out
    assert "rows in 13 tables" in out and "in the 5 crossed ones" in out
    assert list(df["method"].unique()) == ["full", "hash@0.5", "hash@0.3", "rowprune@0.5", "rowprune@0.3",
                                           "fiited@0.5", "fiited@0.3"]
    assert (df["steps"] == 7).all() and (df["samples"] == 320).all()  # one epoch: 320 training ratings, batches of 50
    assert df["auc"].between(0, 1).all() and (df["bytes_fraction"] <= df["budget"] + 1e-9).all()
    summary = pd.read_csv(tmp_path / "out" / "seeds_summary.csv")
    assert summary.loc[summary["method"] == "fiited@0.5", "seeds"].item() == 2
    assert {"vs_full_mean", "vs_rowprune_mean", "vs_hash_mean"} <= set(summary.columns)


def test_dslabs_mode_and_steps_cap(tmp_path, monkeypatch):
    write_fixture_wheels(str(tmp_path / "cache"), monkeypatch)
    df = criteo_dlrm.main(TINY + ["--batch-size", "2", "--dataset", "movielens-dslabs",
                                  "--data-cache", str(tmp_path / "cache"),
                                  "--train-fraction", "0.5", "--budgets", "0.9", "--methods", "full,fiited",
                                  "--steps", "1", "--out", str(tmp_path / "out")])
    assert list(df["method"]) == ["full", "fiited@0.9"] and (df["steps"] == 1).all()


def test_bad_movielens_arguments(capsys):
    for argv, message in [(["--dataset", "ml-1m"], "unknown --dataset 'ml-1m'"),
                          (["--dataset", "movielens-100k", "--data-dir", "x"], "does not go with --dataset"),
                          (["--dataset", "movielens-100k", "--latent-dim", "4"], "configures the synthetic"),
                          (["--dataset", "movielens-100k", "--train-fraction", "1"], "--train-fraction must be"),
                          (["--steps", "0"], "--steps must be positive")]:
        with pytest.raises(SystemExit):
            criteo_dlrm.parse_args(argv)
        assert message in capsys.readouterr().err
