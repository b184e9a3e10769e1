"""The MovieLens loader on small fixture wheels it writes itself (no network): dense ids, time order, titles and
genres parsed, bad files refused naming file / column / row, and the pickle read without running foreign code."""
import hashlib
import io
import lzma
import os
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest

from experiments.data import movielens, wheel_cache

ML100K_FILES = {
    "inter": ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
              "7\t20\t4\t300\n3\t10\t5\t100\n3\t20\t2\t200\n9\t30\t3\t100\n7\t10\t1\t400\n9\t20\t5\t500\n"
              "3\t30\t4\t600\n7\t30\t5\t700\n"),
    "item": ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
             "10\tToy Story\t1995\tAnimation Children's Comedy\n20\tHeat (1995)\t1995\tAction Crime\n"
             "30\tunkonwn\tunkonwn\tunknown\n"),
    "user": ("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
             "3\t24\tM\ttechnician\t85711\n7\t53\tF\tother\t94043\n9\t17\tM\tstudent\t05201\n"),
}
DSLABS_FRAME = pd.DataFrame({
    "rownames": np.arange(1, 7), "movieId": np.array([31, 1029, 31, 5, 1029, 5]),
    "title": ["Dangerous Minds", "Dumbo (1941)", "Dangerous Minds", None, "Dumbo (1941)", None],
    "year": [1995.0, 1941.0, 1995.0, np.nan, 1941.0, np.nan],
    "genres": ["Drama", "Animation|Children", "Drama", "(no genres listed)", "Animation|Children",
               "(no genres listed)"],
    "userId": np.array([2, 2, 1, 1, 4, 4]), "rating": [2.5, 3.0, 0.5, 5.0, 4.0, 3.5],
    "timestamp": np.array([50, 10, 10, 30, 20, 40])})


def write_wheel(cache_dir: str, name: str, version: str, members: dict) -> str:
    """A zip named as ``fetch_wheel``'s glob expects, with ``members`` (path -> bytes), and its hash pinned
    (the caller undoes the pin with monkeypatch)."""
    wheels = os.path.join(cache_dir, "wheels")
    os.makedirs(wheels, exist_ok=True)
    path = os.path.join(wheels, f"{name.replace('-', '_')}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def dslabs_bytes(frame: pd.DataFrame = DSLABS_FRAME) -> bytes:
    return lzma.compress(pickle.dumps(frame, protocol=4))


def write_fixture_wheels(cache_dir: str, monkeypatch, ml100k_files: dict = ML100K_FILES,
                         dslabs: bytes = b"") -> None:
    """Both sources' fixture wheels in ``cache_dir``, their hashes pinned through monkeypatch."""
    paths = {
        movielens.ML100K_WHEEL: write_wheel(cache_dir, *movielens.ML100K_WHEEL, {
            f"{movielens.ML100K_DIR}.{k}": v.encode() for k, v in ml100k_files.items()}),
        movielens.DSLABS_WHEEL: write_wheel(cache_dir, *movielens.DSLABS_WHEEL, {
            movielens.DSLABS_MEMBER: dslabs or dslabs_bytes()}),
    }
    for key, path in paths.items():
        monkeypatch.setitem(wheel_cache.PINNED_WHEELS, key, hashlib.sha256(open(path, "rb").read()).hexdigest())


def test_ml100k_dense_ids_time_order_and_content(tmp_path, monkeypatch):
    write_fixture_wheels(str(tmp_path), monkeypatch)
    data = movielens.load_movielens("movielens-100k", str(tmp_path))
    r = data.ratings
    assert list(r.columns) == ["user", "item", "rating", "timestamp"]
    assert [str(t) for t in r.dtypes] == ["int64", "int64", "float32", "int64"]
    # users 3, 7, 9 -> 0, 1, 2 and items 10, 20, 30 -> 0, 1, 2 (file order); ties at t=100 by user
    assert r["timestamp"].tolist() == [100, 100, 200, 300, 400, 500, 600, 700]
    assert r[["user", "item"]].values.tolist() == [[0, 0], [2, 2], [0, 1], [1, 1], [1, 0], [2, 1], [0, 2], [1, 2]]
    assert r["rating"].tolist() == [5, 3, 2, 4, 1, 5, 4, 5]
    assert data.items["title"].tolist() == ["Toy Story", "Heat", "unkonwn"]
    assert data.items["year"].tolist()[:2] == [1995.0, 1995.0] and np.isnan(data.items["year"][2])
    assert data.items["genres"].tolist() == ["Animation|Children's|Comedy", "Action|Crime", "unknown"]
    assert data.users.to_dict("list") == {"age": [24, 53, 17], "gender": ["M", "F", "M"],
                                          "occupation": ["technician", "other", "student"],
                                          "zip": ["85711", "94043", "05201"]}


def test_dslabs_sorted_raw_ids_and_items_from_first_rows(tmp_path, monkeypatch):
    write_fixture_wheels(str(tmp_path), monkeypatch)
    data = movielens.load_movielens("movielens-dslabs", str(tmp_path))
    assert data.users is None
    # users 1, 2, 4 -> 0, 1, 2; movies 5, 31, 1029 -> 0, 1, 2 (sorted raw ids)
    assert data.ratings.values.tolist() == [[0, 1, 0.5, 10], [1, 2, 3.0, 10], [2, 2, 4.0, 20], [0, 0, 5.0, 30],
                                            [2, 0, 3.5, 40], [1, 1, 2.5, 50]]
    assert data.items["title"].tolist() == ["", "Dangerous Minds", "Dumbo"]
    assert data.items["genres"].tolist() == ["", "Drama", "Animation|Children"]
    assert np.isnan(data.items["year"][0]) and data.items["year"].tolist()[1:] == [1995.0, 1941.0]


@pytest.mark.parametrize("member, old, new, message", [
    ("inter", "rating:float", "score:float", r"ml-100k.inter: missing column\(s\) \['rating'\]"),
    ("inter", "9\t30\t3\t100", "9\tx30\t3\t100", r"ml-100k.inter: column 'item_id', row 3: 'x30' is not an integer"),
    ("inter", "9\t30\t3\t100", "9\t30\t6\t100", r"ml-100k.inter: column 'rating', row 3: .*outside the rating scale"),
    ("inter", "9\t30\t3\t100", "9\t99\t3\t100", r"ml-100k.inter: column 'item_id', row 3: id 99 is not among"),
    ("user", "7\t53", "3\t53", r"ml-100k.user: column 'user_id', row 1: id 3 is listed more than once"),
])
def test_bad_ml100k_files_are_refused_naming_file_column_and_row(tmp_path, monkeypatch, member, old, new, message):
    files = dict(ML100K_FILES)
    files[member] = files[member].replace(old, new)
    write_fixture_wheels(str(tmp_path), monkeypatch, ml100k_files=files)
    with pytest.raises(ValueError, match=message):
        movielens.load_movielens("movielens-100k", str(tmp_path))


def test_bad_dslabs_frames_are_refused(tmp_path, monkeypatch):
    write_fixture_wheels(str(tmp_path), monkeypatch, dslabs=dslabs_bytes(DSLABS_FRAME.drop(columns="userId")))
    with pytest.raises(ValueError, match=r"movielens.pkl.compress: missing column\(s\) \['userId'\]"):
        movielens.load_movielens("movielens-dslabs", str(tmp_path))
    other = tmp_path / "other"
    write_fixture_wheels(str(other), monkeypatch, dslabs=dslabs_bytes(DSLABS_FRAME.assign(rating=[1, 2, 3, 4, 9, 1])))
    with pytest.raises(ValueError, match=r"column 'rating', row 4: .*outside the rating scale \[0.5, 5\]"):
        movielens.load_movielens("movielens-dslabs", str(other))


class Exploit:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_the_restricted_unpickler_refuses_foreign_code(tmp_path, monkeypatch):
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (posix|nt|os)\.system"):
        movielens.restricted_loads(pickle.dumps(Exploit()))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.eval"):
        movielens.restricted_loads(pickle.dumps(eval))
    # inside the wheel, in place of the DataFrame
    write_fixture_wheels(str(tmp_path), monkeypatch, dslabs=lzma.compress(pickle.dumps([Exploit()])))
    with pytest.raises(pickle.UnpicklingError, match="movielens.pkl.compress: refusing to load"):
        movielens.load_movielens("movielens-dslabs", str(tmp_path))
    frame = movielens.restricted_loads(pickle.dumps(DSLABS_FRAME))  # what a DataFrame needs still loads
    pd.testing.assert_frame_equal(frame, DSLABS_FRAME)


def test_unknown_source_and_unpinned_fixture(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown MovieLens source 'ml-1m'"):
        movielens.load_movielens("ml-1m", str(tmp_path))
    write_wheel(str(tmp_path), *movielens.ML100K_WHEEL, {f"{movielens.ML100K_DIR}.{k}": v.encode()
                                                          for k, v in ML100K_FILES.items()})
    with pytest.raises(ValueError, match="not the pinned"):  # the real pin guards a fixture...
        movielens.load_movielens("movielens-100k", str(tmp_path))
    assert len(movielens.load_movielens("movielens-100k", str(tmp_path), verify=False).ratings) == 8  # ...unless told
