"""experiments.bench_fiited: a tiny run prints and appends every method; bad arguments stop it before any timing."""
import re

import pytest

from experiments import bench_fiited

TINY = ["--batch-size", "32", "--embedding-dim", "16", "--chunk-size", "8", "--cardinality-scale", "0.001",
        "--steps", "2"]


def test_tiny_run_times_every_method(tmp_path):
    out = tmp_path / "bench.csv"
    df = bench_fiited.main(TINY + ["--budgets", "1.0,0.1", "--out", str(out)])
    assert list(df["method"]) == ["ebc_dense_adagrad", "fused_tbe_rowwise", "fiited@1", "fiited@0.1"]
    assert (df["ms_per_step"] > 0).all() and out.exists()


def test_the_chunk_pools_precisions_are_timed_side_by_side(tmp_path):
    df = bench_fiited.main(TINY + ["--budgets", "0.1", "--weight-dtypes", "float32,int8",
                                   "--out", str(tmp_path / "b.csv")])
    assert list(df["method"]) == ["ebc_dense_adagrad", "fused_tbe_rowwise", "fiited@0.1", "fiited_int8@0.1"]


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--steps", "two"], "argument --steps: invalid int value: 'two'"),
    (["--budgets", "0.1,abc"], "budgets must be comma-separated numbers"),
    (["--budgets", "1.5"], r"budgets must be fractions in \(0, 1\]"),
    (["--chunk-size", "5"], "--embedding-dim 16 is not divisible by --chunk-size 5"),
    (["--weight-dtypes", "float32,fp8"], r"--weight-dtypes must name some of \['bfloat16', 'float32', 'int8'\]"),
])
def test_bad_arguments_stop_before_timing(args, message, capsys, monkeypatch):
    monkeypatch.setattr(bench_fiited, "time_steps", lambda *a, **k: pytest.fail("timed despite a bad argument"))
    with pytest.raises(SystemExit) as exit_info:
        bench_fiited.main(TINY + args)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_out_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_fiited.main(TINY + ["--out", str(tmp_path)])
    assert "is a folder; give the CSV file" in capsys.readouterr().err
