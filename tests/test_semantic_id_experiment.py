"""The semantic-ID experiment: metrics, segments, the synthetic catalog, and the quick path end to end."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from experiments import semantic_id_catalog as E
from experiments.data.synthetic_catalog import SyntheticCatalogConfig, make_synthetic_catalog


def test_normalized_entropy_and_auc_by_hand():
    labels = np.array([1, 0, 0, 1, 0], dtype=np.float32)
    ctr = labels.mean()
    assert E.normalized_entropy(labels, np.full(5, ctr)) == pytest.approx(1.0)
    p = np.array([0.9, 0.2, 0.3, 0.6, 0.1])
    loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    entropy = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))
    assert E.normalized_entropy(labels, p) == pytest.approx(loss / entropy)
    assert E.auc(labels, p) == 1.0 and E.auc(labels, -p) == 0.0
    assert E.auc(labels, np.zeros(5)) == 0.5
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.4
    s = np.round(rng.random(60), 1)  # many ties
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(s[y], s[~y])]
    assert E.auc(y.astype(float), s) == pytest.approx(np.mean(pairs))
    assert math.isnan(E.auc(np.ones(3), np.arange(3.0)))


def test_item_segments_by_traffic_share():
    # item 0: 6 impressions, item 1: 3, item 2: 1, item 3: 0 (old), item 4: new
    train_items = np.array([0] * 6 + [1] * 3 + [2] + [4] * 5)
    is_new = np.array([False, False, False, False, True])
    segment = E.item_segments(train_items, is_new, 5)
    # shares before each item (new excluded): 0 -> 0.0 (head), 1 -> 0.6 (torso), 2 -> 0.9 (tail)
    assert segment.tolist() == [0, 1, 2, 2, 3]


def test_synthetic_catalog_properties():
    config = SyntheticCatalogConfig(num_items=300, num_users=40, num_events=5000, emb_dim=8, branching=(4, 3, 2),
                                    seed=3)
    a, b = make_synthetic_catalog(config), make_synthetic_catalog(config)
    assert torch.equal(a.items, b.items) and torch.equal(a.content, b.content)  # deterministic
    assert a.content.shape == (300, 8) and a.labels.shape == (5000,)
    assert bool((a.times[1:] >= a.times[:-1]).all())
    assert bool((a.birth[a.items] <= a.times).all())  # no item is shown before it exists
    assert bool(a.is_new.any()) and bool((a.birth[a.is_new] >= config.new_item_start).all())
    # the content hierarchy is visible: items of one leaf are closer than items of different top clusters
    leaf, top = a.clusters[:, 2], a.clusters[:, 0]
    d = torch.cdist(a.content, a.content)
    same_leaf = (leaf[:, None] == leaf[None, :]) & ~torch.eye(300, dtype=torch.bool)
    other_top = top[:, None] != top[None, :]
    assert d[same_leaf].mean() < 0.5 * d[other_top].mean()
    # clicks follow the planted probabilities
    assert abs(float(a.labels.mean()) - float(a.probs.mean())) < 0.03


def test_quick_path_end_to_end(tmp_path):
    out = tmp_path / "run"
    df = E.run(E.parse_args([
        "--quick", "--num-items", "400", "--num-users", "40", "--num-events", "6000", "--rqvae-epochs", "2",
        "--codebook-size", "8", "--eval-windows", "2", "--no-progress", "--out", str(out)]))
    names = ["random", "individual", "ngram", "all_bigrams", "unigram", "prefix_ngram", "oracle"]
    assert df["parameterization"].tolist() == names
    assert np.isfinite(df[[f"ne_{s}" for s in E.SEGMENTS]].to_numpy()).all()
    # equal table size for every compressed parameterization; individual = #items
    rows = dict(zip(df["parameterization"], df["rows"]))
    assert rows["individual"] == 400 and {rows[n] for n in names[:-1] if n != "individual"} == {100}
    saved = pd.read_csv(out / "results.csv")
    assert saved["parameterization"].tolist() == names
    assert (out / "ne_by_segment.png").stat().st_size > 1000 and (out / "runs.csv").exists()
    assert "codebook usage per level" in (out / "codes_report.txt").read_text()


def test_quick_flag_keeps_explicit_options():
    config = E.parse_args(["--quick", "--num-items", "123"])
    assert config.num_items == 123 and config.num_events == E.QUICK["num_events"] and config.seeds == 1
    assert E.parse_args([]).num_items == E.Config().num_items


def test_item_embeddings_need_a_catalog_dir(tmp_path, capsys):
    # the embeddings are a file catalog's content; without --catalog-dir they were silently ignored
    with pytest.raises(SystemExit):
        E.parse_args(["--item-embeddings", "emb.npy"])
    assert "needs catalog_dir (--catalog-dir)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"item_embeddings \(emb.npy\) needs catalog_dir"):
        E.run(E.Config(item_embeddings="emb.npy", out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_format_change():
    assert E.format_change(1.234) == "+1.23" and E.format_change(-0.5, 0.25, seeds=3) == "-0.50 +- 0.25"
    assert E.format_change(1.234, 0.0, seeds=1) == "+1.23 +- n/a"  # one seed: no spread, not a zero one
    assert E.format_change(float("nan"), 0.0, seeds=3) == "-" and E.format_change(float("nan")) == "-"
