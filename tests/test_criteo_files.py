"""Real-data plumbing around the Criteo reader: which files of a folder are read and in what order, trailing
blank lines, evaluation slices right after the training lines, and the row-budget argument types."""
from __future__ import annotations

import gzip
import os
import warnings

import numpy as np
import pytest
import torch

from experiments.data.criteo_files import find_criteo_files
from experiments.data.criteo_tsv import CriteoTsvReader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "experiments", "data", "sample_criteo.tsv")


def sample_lines(n: int, start: int = 0):
    with open(SAMPLE) as f:
        return f.read().splitlines()[start : start + n]


def touch(folder, name: str, lines=()) -> str:
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def test_days_are_read_in_day_order_and_only_day_files_count(tmp_path):
    for name in ["day_10", "day_2", "day_0", "day_1", "day_0_dense.npy", "day_fea_count.npz", "notes.txt"]:
        touch(tmp_path, name)
    (tmp_path / "day_3").mkdir()  # a folder is not a day file
    with gzip.open(tmp_path / "day_4.gz", "wt") as f:
        f.write("")
    files = [os.path.basename(p) for p in find_criteo_files(tmp_path)]
    assert files == ["day_0", "day_1", "day_2", "day_4.gz", "day_10"]


def test_kaggle_layout_and_both_layouts(tmp_path):
    touch(tmp_path, "train.txt")
    touch(tmp_path, "train.txt.tar.gz")  # not a TSV
    assert [os.path.basename(p) for p in find_criteo_files(tmp_path)] == ["train.txt"]
    touch(tmp_path, "day_0")
    with pytest.warns(RuntimeWarning, match=r"using the Terabyte files day_\*; train.txt is ignored"):
        assert [os.path.basename(p) for p in find_criteo_files(tmp_path)] == ["day_0"]


@pytest.mark.parametrize("names, match", [(["day_0", "day_0.gz"], r"day_0 and day_0.gz are the same file twice"),
                                          (["train.txt", "train.txt.gz"], r"train.txt and train.txt.gz are the same")])
def test_a_day_present_twice_is_refused(tmp_path, names, match):
    for name in names:
        touch(tmp_path, name)
    with pytest.raises(ValueError, match=match):
        find_criteo_files(tmp_path)


def test_missing_or_empty_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="Criteo data folder not found"):
        find_criteo_files(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="Criteo data folder not found"):
        find_criteo_files(touch(tmp_path, "a_file"))
    with pytest.raises(FileNotFoundError, match=r"no Criteo files \(day_<n>\[.gz\] or train.txt\[.gz\]\)"):
        find_criteo_files(tmp_path)


def test_home_folder_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    touch(tmp_path, "train.txt")
    assert find_criteo_files("~") == [os.path.join(str(tmp_path), "train.txt")]


@pytest.mark.parametrize("tail", ["\n", "\n\n\n", "\r\n", "\r\n\r\n"])
@pytest.mark.parametrize("chunk_bytes", [1, 64, 1 << 20])
def test_trailing_blank_lines_are_ignored(tmp_path, tail, chunk_bytes):
    lines = sample_lines(5)
    path = tmp_path / "day_0"
    path.write_bytes(("\n".join(lines) + "\n").encode() + tail.encode())
    labels = torch.cat([b.labels for b in CriteoTsvReader(str(path), 2, row_budget=100, chunk_bytes=chunk_bytes)])
    assert labels.numel() == 5


def test_a_blank_line_inside_the_file_is_still_an_error(tmp_path):
    lines = sample_lines(3)
    path = touch(tmp_path, "day_0", [lines[0], "", lines[1]])
    with pytest.raises(ValueError, match=r"day_0: line 2"):
        list(CriteoTsvReader(path, 2, row_budget=100))


def test_skip_lines_starts_right_after_them_across_files(tmp_path):
    lines = sample_lines(40)
    a = touch(tmp_path, "day_0", lines[:25])
    b = touch(tmp_path, "day_1", lines[25:])
    whole = list(CriteoTsvReader([a, b], 40, row_budget=100))[0]
    part = torch.cat([x.labels for x in CriteoTsvReader([a, b], 4, row_budget=100, skip_lines=22, max_lines=10)])
    torch.testing.assert_close(part, whole.labels[22:32])
    with pytest.raises(ValueError, match="skip_lines must be >= 0"):
        CriteoTsvReader(a, 4, skip_lines=-1)


def test_row_budget_accepts_integer_types_and_names_bad_ones():
    for budget in (np.int64(100), torch.tensor(100), [np.int32(100)] * 26):
        assert CriteoTsvReader(SAMPLE, 4, row_budget=budget).num_embeddings_per_feature() == [100] * 26
    with pytest.raises(TypeError, match="row_budget must be an int or a list of 26 ints, got 100.5"):
        CriteoTsvReader(SAMPLE, 4, row_budget=100.5)
    with pytest.raises(TypeError, match=r"row_budget of feature cat_3 must be an int, got 2.5"):
        CriteoTsvReader(SAMPLE, 4, row_budget=[100] * 3 + [2.5] + [100] * 22)
    with pytest.raises(ValueError, match=r"feature cat_0 has 1"):
        CriteoTsvReader(SAMPLE, 4, row_budget=1)


def test_dlrm_evaluates_in_eval_batches_right_after_training_and_can_skip_bad_lines(tmp_path):
    from experiments import criteo_dlrm

    day = tmp_path / "data"
    day.mkdir()
    lines = sample_lines(300)
    touch(day, "day_0", lines[:150] + ["not a criteo line"] + lines[150:])
    args = ["--data-dir", str(day), "--row-budget", "1000", "--steps", "2", "--batch-size", "64",
            "--eval-batches", "2", "--eval-batch-size", "50", "--no-progress"]
    with pytest.raises(ValueError, match=r"day_0: line 151"):
        criteo_dlrm.load_data(criteo_dlrm.parse_args(args), seed=0)  # eval: lines 129-228 hold the bad line
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = criteo_dlrm.load_data(criteo_dlrm.parse_args(args + ["--skip-bad-lines"]), seed=0)
    assert [str(w.message).split(" of ")[0] for w in caught] == ["CriteoTsvReader skipped 1 malformed line(s)"]
    assert [int(b.labels.numel()) for b in data.eval_batches] == [50, 49]
    short = criteo_dlrm.parse_args(args[:-5] + ["--eval-batches", "10", "--eval-batch-size", "50", "--no-progress",
                                                "--skip-bad-lines"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the skipped line
        with pytest.warns(RuntimeWarning, match=r"hold only 173 lines after the 128 training lines"):
            criteo_dlrm.load_data(short, seed=0)
