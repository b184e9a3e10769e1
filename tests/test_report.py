"""emb_opt.report: the per-table memory report of FIITED, dense, fused and hashed collections, its plots and CLI.

The FIITED numbers are checked against the store itself (``allocated_bytes``, ``total_bytes``) and against
counts computed here from the live chunk keys by plain bit arithmetic; the same report must come out of a module,
a DLRM holding it, its state_dict and a saved checkpoint file.
"""
import os
import pickle
import subprocess
import sys
import warnings
from collections import Counter

import pandas as pd
import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.models.dlrm import DLRM
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection

import emb_opt
from emb_opt.report import BYTE_COLUMNS, main, parse_histogram
from hashing.hashed_ebc import HashedEmbeddingBagCollection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = {"t0": 300, "t1": 120, "t2": 50}
DIM, CHUNK = 16, 4


def tables():
    return [EmbeddingBagConfig(name=n, embedding_dim=DIM, num_embeddings=r, feature_names=[f"f{i}"])
            for i, (n, r) in enumerate(ROWS.items())]


def batch(step: int, batch_size: int = 32):
    gen = torch.Generator().manual_seed(step)
    lengths = torch.randint(0, 4, (len(ROWS) * batch_size,), generator=gen)
    values = []
    for f, rows in enumerate(ROWS.values()):
        n = int(lengths[f * batch_size : (f + 1) * batch_size].sum())
        values.append((torch.rand(n, generator=gen) ** 2 * rows).long())
    keys = [f"f{i}" for i in range(len(ROWS))]
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=lengths)
    return torch.randn(batch_size, 4, generator=gen), kjt, torch.randint(0, 2, (batch_size,), generator=gen).float()


@pytest.fixture(scope="module")
def dlrm():
    """A DLRM whose EBC was converted to FIITED (25% budget) and trained until it pruned rows."""
    torch.manual_seed(0)
    model = DLRM(embedding_bag_collection=EmbeddingBagCollection(tables()), dense_in_features=4,
                 dense_arch_layer_sizes=[8, DIM], over_arch_layer_sizes=[8, 1])
    emb_opt.convert(model, 0.25, copy_weights=False, chunk_size=CHUNK, warmup_steps=2, resize_interval=2,
                    initial_capacity=64, learning_rate=0.05)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "store full": expected at a 25% budget
        for step in range(9):
            dense, kjt, labels = batch(step)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense, kjt).squeeze(1), labels)
            loss.backward()
            opt.step()
            opt.zero_grad()
    fiited = model.sparse_arch.embedding_bag_collection
    assert len(fiited.telemetry) >= 3 and fiited.store.counter_dict()["pruned_chunks"] > 0
    return model


@pytest.fixture(scope="module")
def fiited(dlrm):
    return dlrm.sparse_arch.embedding_bag_collection


def table_rows(df):
    return df[~df["table"].isin(["(shared)", "TOTAL"])]


def test_fiited_rows_add_up_to_the_collection_bytes(fiited):
    df = emb_opt.memory_report(fiited)
    assert list(df["table"]) == ["t0", "t1", "t2", "(shared)", "TOTAL"]
    assert set(df["kind"]) == {"fiited"} and set(df["optimizer"]) == {"rowwise_adagrad"}
    parts, total = df[df["table"] != "TOTAL"], df[df["table"] == "TOTAL"].iloc[0]
    # every buffer: the store's and the collection's feature layout (shared metadata)
    assert int(parts["total_bytes"].sum()) == fiited.memory_bytes() == int(total["total_bytes"])
    layout = fiited.memory_bytes() - fiited.store.total_bytes()
    assert layout == 3 * (4 + 8)  # three features: table (int32) and first output column (int64) of each
    for category, nbytes in fiited.store.allocated_bytes().items():
        nbytes += layout if category == "metadata" else 0
        assert int(parts[f"{category}_bytes"].sum()) == nbytes, category
        assert int(total[f"{category}_bytes"]) == nbytes, category
    assert (df["total_bytes"] == df[BYTE_COLUMNS].sum(axis=1)).all()
    assert int(total["full_bytes"]) == fiited.full_bytes == int(table_rows(df)["full_bytes"].sum())
    assert int(total["virtual_rows"]) == sum(ROWS.values())
    assert int(total["live_chunks"]) == fiited.store.num_live
    for _, row in pd.concat([table_rows(df), df[df["table"] == "TOTAL"]]).iterrows():
        ratio = row["full_bytes"] / row["total_bytes"] if row["total_bytes"] else float("inf")
        assert row["compression_ratio"] == pytest.approx(ratio)
    assert float(total["compression_ratio"]) > 3.0  # a 25% budget: >= 4x up to rounding
    assert int(total["total_bytes"]) <= fiited.budget_bytes


def test_fiited_live_chunks_and_dimension_histogram_match_the_live_keys(fiited):
    df = emb_opt.memory_report(fiited).set_index("table")
    store = fiited.store
    keys = store.live_keys()[1].tolist()
    chunks_per_row = Counter((k >> 53, (k >> 6) & ((1 << 47) - 1)) for k in keys)  # (table, row) -> chunks
    entries, buckets = store.entry_keys.numel(), store.hash_buckets.numel() * 4
    histograms_differ = set()
    for t, (name, rows) in enumerate(ROWS.items()):
        live = sum(1 for k in keys if k >> 53 == t)
        counts = Counter(n for (table, _), n in chunks_per_row.items() if table == t)
        live_rows = sum(counts.values())
        row = df.loc[name]
        assert int(row["live_chunks"]) == live and int(row["live_rows"]) == live_rows
        expected = {CHUNK * n: c for n, c in counts.items()}
        expected[0] = rows - live_rows
        assert parse_histogram(row["dims_histogram"]) == {d: c for d, c in expected.items() if c}
        assert sum(parse_histogram(row["dims_histogram"]).values()) == rows == int(row["virtual_rows"])
        assert float(row["mean_dim"]) == pytest.approx(CHUNK * live / live_rows if live_rows else 0.0)
        # row-wise Adagrad: one accumulator per stored row
        assert int(row["weights_bytes"]) == live * 4 * CHUNK and int(row["optimizer_bytes"]) == live_rows * 4
        assert int(row["index_bytes"]) == live_rows * (8 + 4 + 1) + live_rows * buckets // entries
        assert int(row["utility_bytes"]) == live * 4
        histograms_differ.add(len(expected))
    assert max(histograms_differ) > 2, "the fixture should have rows of several dimensions"


def test_same_report_from_module_state_dict_file_and_dlrm(dlrm, fiited, tmp_path):
    bare = emb_opt.memory_report(fiited)
    pd.testing.assert_frame_equal(emb_opt.memory_report(fiited.state_dict()), bare)
    path = tmp_path / "ckpt.pt"
    emb_opt.save_checkpoint({"epoch": 3, "model_state_dict": dlrm.state_dict()}, path)
    loaded = emb_opt.load_checkpoint(path)
    in_model = bare.assign(module="sparse_arch.embedding_bag_collection")
    pd.testing.assert_frame_equal(emb_opt.memory_report(dlrm), in_model)
    pd.testing.assert_frame_equal(emb_opt.memory_report(loaded), in_model)
    pd.testing.assert_frame_equal(emb_opt.memory_report(loaded["model_state_dict"]), in_model)
    # without the collection's description: generic table names, the same bytes but for the feature layout,
    # which only the collection knows
    anonymous = emb_opt.memory_report({k: v for k, v in fiited.state_dict().items() if k != "_extra_state"})
    assert list(anonymous["table"])[:3] == ["table0", "table1", "table2"]
    cols = [c for c in BYTE_COLUMNS if c != "metadata_bytes"] + ["full_bytes", "live_chunks", "live_rows", "dims_histogram"]
    pd.testing.assert_frame_equal(anonymous[cols], bare[cols])
    layout = fiited.memory_bytes() - fiited.store.total_bytes()
    for column in ("metadata_bytes", "total_bytes"):
        assert (bare[column] - anonymous[column]).tolist() == [0, 0, 0, layout, layout], column
    # a store missing a buffer is refused naming it (not a KeyError)
    partial = {k: v for k, v in fiited.state_dict().items() if k != "store.pool_weights"}
    with pytest.raises(ValueError, match="store.pool_weights: not in the checkpoint"):
        emb_opt.memory_report(partial)
    # a store without a layout version (an unreleased layout) is refused, naming it
    unversioned = {k: v for k, v in fiited.state_dict().items() if k != "store._extra_state"}
    with pytest.raises(ValueError, match="store._extra_state: the checkpoint's store layout_version is None"):
        emb_opt.memory_report(unversioned)


def test_dense_fused_and_hashed_collections():
    dense_tables = [EmbeddingBagConfig(name="a", embedding_dim=8, num_embeddings=100, feature_names=["fa"]),
                    EmbeddingBagConfig(name="b", embedding_dim=16, num_embeddings=1000, feature_names=["fb"])]
    df = emb_opt.memory_report(EmbeddingBagCollection(dense_tables)).set_index("table")
    assert list(df.index) == ["a", "b", "(shared)", "TOTAL"] and set(df["kind"]) == {"dense"}
    assert int(df.loc["b", "weights_bytes"]) == 1000 * 16 * 4 and int(df.loc["b", "optimizer_bytes"]) == 1000 * 4
    assert df.loc["b", "dims_histogram"] == "16:1000" and int(df.loc["b", "live_rows"]) == 1000
    assert int(df.loc["TOTAL", "total_bytes"]) == 100 * (32 + 4) + 1000 * (64 + 4) == int(df.loc["TOTAL", "full_bytes"])
    assert (df["compression_ratio"].dropna() == 1.0).all()
    sgd = emb_opt.memory_report(EmbeddingBagCollection(dense_tables), optimizer="sgd").set_index("table")
    adagrad = emb_opt.memory_report(EmbeddingBagCollection(dense_tables), optimizer="adagrad").set_index("table")
    assert int(sgd.loc["TOTAL", "optimizer_bytes"]) == 0
    assert int(adagrad.loc["a", "optimizer_bytes"]) == 100 * 8 * 4
    fused = FusedEmbeddingBagCollection(dense_tables, optimizer_type=torch.optim.Adagrad, optimizer_kwargs={"lr": 0.1})
    f = emb_opt.memory_report(fused).set_index("table")  # its own optimizer, not the default argument
    assert int(f.loc["b", "optimizer_bytes"]) == 1000 * 16 * 4 and f.loc["b", "optimizer"] == "Adagrad"

    hashed = HashedEmbeddingBagCollection(dense_tables, row_fraction=0.1)
    h = emb_opt.memory_report(hashed).set_index("table")
    assert list(h.index) == ["a", "b", "(shared)", "TOTAL"]  # the inner EBC is not reported a second time
    assert set(h["kind"]) == {"hashed"}
    assert int(h.loc["b", "virtual_rows"]) == 1000 and int(h.loc["b", "physical_rows"]) == 100
    assert int(h.loc["b", "total_bytes"]) == 100 * (64 + 4) and int(h.loc["b", "full_bytes"]) == 1000 * (64 + 4)
    assert float(h.loc["b", "compression_ratio"]) == pytest.approx(10.0)
    assert h.loc["b", "dims_histogram"] == "16:1000"
    def fused_sgd(configs):
        return FusedEmbeddingBagCollection(configs, optimizer_type=torch.optim.SGD, optimizer_kwargs={"lr": 0.1})

    fused_hashed = HashedEmbeddingBagCollection(dense_tables, row_fraction=0.1, collection_factory=fused_sgd)
    fh = emb_opt.memory_report(fused_hashed).set_index("table")
    assert int(fh.loc["TOTAL", "optimizer_bytes"]) == 0 and int(fh.loc["b", "full_bytes"]) == 1000 * 64


def test_model_with_several_collections_has_an_overall_total(fiited):
    model = torch.nn.ModuleDict({"fiited": fiited, "hashed": HashedEmbeddingBagCollection(tables(), row_fraction=0.5)})
    df = emb_opt.memory_report(model)
    assert list(df["module"].unique()) == ["fiited", "hashed", "(all)"]
    totals = df[(df["table"] == "TOTAL") & (df["module"] != "(all)")]
    grand = df[df["module"] == "(all)"].iloc[0]
    for column in ["total_bytes", "full_bytes", "virtual_rows", *BYTE_COLUMNS]:
        assert int(grand[column]) == int(totals[column].sum()), column
    assert int(totals.iloc[0]["total_bytes"]) == fiited.memory_bytes()


class _Payload:
    """A pickle that creates a file when it is unpickled (what a hostile checkpoint would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def is_png(path) -> bool:
    with open(path, "rb") as f:
        return os.path.getsize(path) > 1000 and f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plots_are_written(fiited, tmp_path):
    df = emb_opt.memory_report(fiited)
    assert emb_opt.plot_memory_report(df, str(tmp_path / "r.png")) == str(tmp_path / "r.png")
    assert is_png(tmp_path / "r.png")
    df.to_csv(tmp_path / "r.csv", index=False)  # a report read back from its CSV plots too
    from_csv = pd.read_csv(tmp_path / "r.csv", keep_default_na=False, na_values=[""])
    assert is_png(emb_opt.plot_memory_report(from_csv, str(tmp_path / "csv.png")))
    assert is_png(emb_opt.plot_telemetry(fiited.telemetry, str(tmp_path / "t.png")))
    with pytest.raises(ValueError, match="telemetry is empty"):
        emb_opt.plot_telemetry([], str(tmp_path / "none.png"))
    with pytest.raises(ValueError, match="lacks column"):
        emb_opt.plot_memory_report(df.drop(columns=["index_bytes"]), str(tmp_path / "bad.png"))
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "bad.png").exists()


def test_the_telemetry_figure_of_one_resize_shows_it_and_bytes_start_at_zero(fiited):
    from emb_opt.report.plots import telemetry_figure

    record = dict(fiited.telemetry[-1])
    record["allocated_bytes"] = 10**7 + 30  # a value an offset axis would show as "+1e7"
    fig = telemetry_figure([record])
    counts, _, rows, bytes_axis = fig.axes
    bars = [p for p in rows.patches if p.get_height() > 0]
    assert sum(p.get_height() for p in bars) == sum(sum(h) for h in record["rows_by_chunks"].values())
    for axis in (counts, bytes_axis):
        assert axis.get_ylim()[0] == 0
    fig.canvas.draw()
    assert bytes_axis.yaxis.get_offset_text().get_text() == ""


@pytest.fixture(scope="module", autouse=True)
def cli_runs(dlrm, tmp_path_factory):
    """``python -m emb_opt.report`` on a saved DLRM, on a missing file and on a pickle that would run code, started
    before the other tests so that their torch/torchrec imports overlap with them; ``test_cli_*`` collects the
    results."""
    folder = tmp_path_factory.mktemp("cli")
    emb_opt.save_checkpoint({"model": dlrm.state_dict()}, folder / "model.pt")
    torch.save(dlrm, folder / "whole_module.pt")
    with open(folder / "payload.pt", "wb") as f:
        pickle.dump(_Payload(str(folder / "payload_ran")), f)
    cmd = [sys.executable, "-m", "emb_opt.report"]
    pipes = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = {"ok": subprocess.Popen([*cmd, str(folder / "model.pt"), "--out", str(folder / "out")], **pipes),
            "missing": subprocess.Popen([*cmd, str(folder / "nope.pt")], **pipes),
            "module": subprocess.Popen([*cmd, str(folder / "whole_module.pt"), "--out", str(folder / "m")], **pipes),
            "payload": subprocess.Popen([*cmd, str(folder / "payload.pt"), "--out", str(folder / "p")], **pipes)}
    yield folder, runs
    for process in runs.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_writes_the_report_and_fails_cleanly(dlrm, cli_runs, tmp_path, capsys):
    folder, runs = cli_runs
    out = folder / "out"
    stdout, stderr = runs["ok"].communicate(timeout=120)
    assert runs["ok"].returncode == 0, stderr
    for name in ["memory_report.csv", "memory_report.json", "memory_report.png", "telemetry.png", "telemetry.csv"]:
        assert (out / name).stat().st_size > 0, name
    assert "TOTAL" in stdout and "sparse_arch.embedding_bag_collection" in stdout and " t2 " in stdout
    written = pd.read_csv(out / "memory_report.csv", keep_default_na=False, na_values=[""])
    expected = emb_opt.memory_report(dlrm)
    assert written["total_bytes"].tolist() == expected["total_bytes"].astype(int).tolist()
    as_json = pd.read_json(out / "memory_report.json")
    assert as_json["full_bytes"].fillna(0).astype(int).tolist() == expected["full_bytes"].fillna(0).astype(int).tolist()
    stdout, stderr = runs["missing"].communicate(timeout=120)
    assert runs["missing"].returncode == 2 and "checkpoint not found" in stderr and "Traceback" not in stderr
    # files are read with weights_only=True: a pickled module and a pickle crafted to run code are refused, and
    # the payload never runs
    for name in ("module", "payload"):
        stdout, stderr = runs[name].communicate(timeout=120)
        assert runs[name].returncode == 2 and "refused to load" in stderr and "Traceback" not in stderr, stderr
        assert "state_dict()" in stderr
    assert not (folder / "payload_ran").exists() and not (folder / "m").exists() and not (folder / "p").exists()

    empty = tmp_path / "empty.pt"
    torch.save({"model": {"linear.weight": torch.zeros(2, 2)}}, empty)
    assert main([str(empty)]) == 2
    assert "no embedding collections" in capsys.readouterr().err
    assert not (tmp_path / "empty_report").exists()
    # without --out, each checkpoint's report goes to its own folder beside it
    for name in ("a", "b"):
        emb_opt.save_checkpoint({"model": dlrm.state_dict()}, tmp_path / f"{name}.pt")
        assert main([str(tmp_path / f"{name}.pt")]) == 0
    assert (tmp_path / "a_report" / "memory_report.csv").exists() and (tmp_path / "b_report" / "memory_report.csv").exists()
