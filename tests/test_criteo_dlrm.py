"""The main job's engine end to end at toy size: every method trains, is evaluated, and lands in the CSV and
the plot; real-file mode reads the repo's Criteo sample; bad arguments get clear errors."""
import os

import pandas as pd
import pytest

from experiments import criteo_dlrm

TINY = ["--steps", "4", "--batch-size", "128", "--eval-batches", "2", "--eval-batch-size", "256",
        "--cardinality-scale", "0.002", "--warmup-steps", "2", "--resize-interval", "1", "--no-progress",
        "--sid-codebook-size", "8"]


def test_every_method_runs_and_is_reported(tmp_path):
    df = criteo_dlrm.main(TINY + ["--out", str(tmp_path), "--budgets", "0.1,0.02"])
    assert list(df["method"]) == ["full", "hash@0.1", "hash@0.02", "rowprune@0.1", "rowprune@0.02", "fiited@0.1",
                                  "fiited@0.02", "sid@0.1", "sid@0.02", "fiited_sid@0.1", "fiited_sid@0.02"]
    assert df["auc"].between(0, 1).all() and (df["log_loss"] > 0).all()
    for _, row in df.iterrows():  # every compressed method stays within its budget
        assert row["bytes_fraction"] <= row["budget"] + 1e-9
    assert (df.loc[df["method"] == "full", "bytes_fraction"] == 1.0).all()
    saved = pd.read_csv(tmp_path / "results.csv")
    assert len(saved) == len(df) and "cfg_steps" in saved.columns
    assert os.path.getsize(tmp_path / "auc_vs_bytes.png") > 1000
    assert os.path.getsize(tmp_path / "telemetry_fiited@0.1.png") > 1000
    tables = pd.read_csv(tmp_path / "tables_fiited@0.1.csv")  # what the store kept, what the eval data read
    assert len(tables) == 26 and tables["lookups"].gt(0).all() and tables["stored_share"].between(0, 1).all()
    assert (tables["live_rows"] <= tables["virtual_rows"]).all() and tables["table_bytes"].sum() > 0
    assert os.path.exists(tmp_path / "tables_rowprune@0.1.csv")


@pytest.mark.distributed
def test_sharded_run_on_two_processes(tmp_path, capfd):
    df = criteo_dlrm.main(TINY + ["--out", str(tmp_path), "--methods", "full,fiited,fiited_sid", "--budgets", "0.1",
                                  "--nproc", "2"])
    assert list(df["method"]) == ["full", "fiited@0.1", "fiited_sid@0.1"] and (df["nproc"] == 2).all()
    assert df["auc"].between(0, 1).all() and (df["samples"] == 4 * 128).all()  # 4 global steps of 128 samples
    assert (df.loc[df["method"] != "full", "bytes_fraction"] <= 0.1).all() and df["bytes_fraction"][0] == 1.0
    assert capfd.readouterr().out.count("sharding plan (2 ranks)") == 1  # the first FIITED method's (rank 0)


@pytest.mark.distributed
def test_sharded_run_with_int8_chunk_stores(tmp_path):
    df = criteo_dlrm.main(TINY + ["--out", str(tmp_path), "--methods", "full,rowprune,fiited", "--budgets", "0.1",
                                  "--nproc", "2", "--weight-dtype", "int8"])
    assert list(df["method"]) == ["full", "rowprune@0.1", "fiited@0.1"] and (df["nproc"] == 2).all()
    assert df["auc"].between(0, 1).all() and (df.loc[df["method"] != "full", "bytes_fraction"] <= 0.1).all()


def test_real_criteo_files_path(tmp_path):
    data = os.path.join(os.path.dirname(__file__), "..", "experiments", "data")
    day = tmp_path / "data"
    day.mkdir()
    # the repo's 300-line sample in the Terabyte layout: train on the first 256 lines, evaluate on the rest
    with open(os.path.join(data, "sample_criteo.tsv")) as src, open(day / "day_0", "w") as dst:
        dst.write(src.read())
    df = criteo_dlrm.main(["--data-dir", str(day), "--row-budget", "1000", "--steps", "2", "--batch-size", "128",
                           "--eval-batches", "1", "--eval-batch-size", "44", "--methods", "full,fiited,sid",
                           "--budgets", "0.5", "--no-progress", "--out", str(tmp_path / "out"), "--warmup-steps", "1"])
    assert list(df["method"]) == ["full", "fiited@0.5"]  # no item content in Criteo files: sid is skipped


def test_a_file_too_small_for_the_batch_size_says_which_settings_fit(tmp_path):
    data = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "sample_criteo.tsv")
    day = tmp_path / "data"
    day.mkdir()
    with open(data) as src, open(day / "day_0", "w") as dst:
        dst.write(src.read())
    base = ["--data-dir", str(day), "--row-budget", "1000", "--methods", "full", "--no-progress",
            "--out", str(tmp_path / "out")]
    with pytest.raises(criteo_dlrm.DataTooSmall, match="hold 300 lines.*300 x 4096 = 1228800") as error:
        criteo_dlrm.main(base)
    hint = str(error.value).split("try ")[1].split()
    df = criteo_dlrm.main(base + hint)  # the settings it suggests run
    assert list(df["method"]) == ["full"]


def test_bad_method_arguments(capsys):
    with pytest.raises(ValueError, match="unknown method"):
        criteo_dlrm.runs(criteo_dlrm.Config(methods="full,magic", budgets="0.1"))
    with pytest.raises(ValueError, match="fractions in"):
        criteo_dlrm.runs(criteo_dlrm.Config(methods="hash", budgets="1.5"))
    with pytest.raises(SystemExit):  # from the command line: stops before anything runs
        criteo_dlrm.main(TINY + ["--methods", "full,magic"])
    assert "unknown method(s) ['magic']" in capsys.readouterr().err


def test_fiited_options_reach_the_collection(tmp_path, monkeypatch):
    from emb_opt import FiitedEmbeddingBagCollection

    seen = []
    original = FiitedEmbeddingBagCollection.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.config)

    monkeypatch.setattr(FiitedEmbeddingBagCollection, "__init__", spy)
    criteo_dlrm.main(TINY + ["--out", str(tmp_path), "--methods", "fiited", "--budgets", "0.1",
                             "--utility", "freq", "--position-exponent=2", "--prefix_dropout", "0.25"])
    (config,) = seen
    assert config.utility.value == "freq" and config.position_exponent == 2 and config.prefix_dropout == 0.25
    with pytest.raises(SystemExit):
        criteo_dlrm.main(TINY + ["--out", str(tmp_path), "--methods", "fiited", "--utilty", "freq"])


def test_generator_options_reach_the_generator(tmp_path, monkeypatch, capsys):
    from experiments.data import synthetic_criteo

    seen = []
    original = synthetic_criteo.SyntheticCriteo.__init__

    def spy(self, config=None):
        original(self, config)
        seen.append(self.config)

    monkeypatch.setattr(synthetic_criteo.SyntheticCriteo, "__init__", spy)
    df = criteo_dlrm.main(TINY + ["--out", str(tmp_path), "--methods", "full", "--latent-dim", "4",
                                  "--interaction-scale", "1"])
    (config,) = seen
    assert (config.latent_dim, config.interaction_scale) == (4, 1.0)
    assert isinstance(config.interaction_scale, float)
    assert "latent_dim=4, interaction_scale=1.0" in pd.read_csv(tmp_path / "results.csv")["data"][0]
    assert len(df) == 1
    with pytest.raises(SystemExit):  # the seed is --seeds; the generator takes no other option
        criteo_dlrm.main(TINY + ["--out", str(tmp_path), "--methods", "full", "--seed", "3"])
    assert "unrecognized arguments: --seed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        criteo_dlrm.main(TINY + ["--out", str(tmp_path), "--methods", "full", "--latent-dim", "4",
                                 "--data-dir", str(tmp_path)])
    assert "--latent-dim configures the synthetic generator; it does not apply with --data-dir" in capsys.readouterr().err


def test_a_config_file_then_options(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"methods": ["full", "fiited"], "budgets": [0.1], "latent_dim": 4, "steps": 3, "quick": true}')
    config = criteo_dlrm.parse_args([str(path), "--steps=5", "--no-progress"])
    assert (config.methods, config.budgets, config.latent_dim, config.steps) == ("full,fiited", "0.1", 4, 5)
    assert config.batch_size == criteo_dlrm.QUICK["batch_size"] and not config.progress  # quick: what is not set
    path.write_text('{"stepz": 3}')
    with pytest.raises(SystemExit):
        criteo_dlrm.parse_args([str(path)])
    path.write_text('{"steps": "3"}')
    with pytest.raises(SystemExit):
        criteo_dlrm.parse_args([str(path)])
    shipped = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "second_generator.json")
    config = criteo_dlrm.parse_args([shipped, "--seeds=1,2,3"])
    assert (config.latent_dim, config.interaction_scale, config.seeds) == (32, 1.0, "1,2,3")


def test_several_seeds_are_summarised(tmp_path):
    df = criteo_dlrm.main(TINY + ["--out", str(tmp_path), "--methods", "full,hash,rowprune,fiited", "--budgets", "0.1",
                                  "--seeds", "1,2"])
    assert sorted(set(df["seed"])) == [1, 2] and len(df) == 8
    summary = pd.read_csv(tmp_path / "seeds_summary.csv").set_index("method")
    assert list(summary.index) == ["full", "hash@0.1", "rowprune@0.1", "fiited@0.1"]
    fiited = df[df["method"] == "fiited@0.1"].set_index("seed")["auc"]
    rowprune = df[df["method"] == "rowprune@0.1"].set_index("seed")["auc"]
    assert summary.loc["fiited@0.1", "vs_rowprune_mean"] == pytest.approx((fiited - rowprune).mean())
    assert summary.loc["fiited@0.1", "auc_mean"] == pytest.approx(fiited.mean())
    full = df[df["method"] == "full"].set_index("seed")["auc"]
    assert summary.loc["fiited@0.1", "vs_full_mean"] == pytest.approx((fiited - full).mean())
    assert pd.isna(summary.loc["full", "vs_full_mean"])
    assert pd.isna(summary.loc["full", "vs_rowprune_mean"]) and summary.loc["full", "seeds"] == 2
    assert os.path.exists(tmp_path / "seed_1" / "results.csv") and os.path.exists(tmp_path / "seed_2" / "results.csv")
    assert os.path.getsize(tmp_path / "auc_vs_bytes.png") > 1000  # the over-seeds plot, with its bands


def test_the_over_seeds_plot_draws_a_band_per_compressed_method(tmp_path):
    df = pd.DataFrame({"kind": ["full"] * 2 + ["fiited"] * 4, "budget": [1.0, 1.0, 0.1, 0.05, 0.1, 0.05],
                       "auc": [0.70, 0.71, 0.69, 0.68, 0.695, 0.683], "embedding_bytes": [100, 100, 10, 5, 10, 5],
                       "seed": [1, 2, 1, 1, 2, 2]})
    import matplotlib.pyplot as plt

    made = []
    original = plt.subplots
    plt.subplots = lambda *a, **k: made.append(original(*a, **k)) or made[-1]
    try:
        criteo_dlrm.plot_auc_vs_bytes_over_seeds(df, str(tmp_path / "p.png"), "t")
    finally:
        plt.subplots = original
    ax = made[0][1]
    bands = [c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
    assert len(bands) == 2  # fiited's 1 and 2 s.e.m. bands (full, one budget, gets error bars)
    assert ax.lines[0].get_ydata().tolist() == pytest.approx([0.705])  # full's mean over seeds
