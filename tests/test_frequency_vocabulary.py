"""hashing.frequency_vocabulary: the static frequency vocabulary baseline.

The id -> row map is checked against a pure-Python dict on random ids; the budget fit against a brute-force
ranking of every (table, id) by count; the bytes ``emb_opt.memory_report`` counts against the tensors really held
(weights, fused row-wise Adagrad state, the sorted id arrays); and the collection end to end inside a DLRM, through
its state_dict and in the Criteo comparison harness.
"""
from collections import Counter

import pytest
import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.models.dlrm import DLRM
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad

import emb_opt
from hashing import (
    FrequencyVocabularyEmbeddingBagCollection, FrequencyVocabularyTransform, feature_id_counts,
    fit_frequency_vocabularies,
)

DIMS = {"t_a": 8, "t_b": 16, "t_c": 8}
ROWS = {"t_a": 40, "t_b": 2000, "t_c": 500}


def tables(dim=None):
    return [EmbeddingBagConfig(name=name, embedding_dim=dim or DIMS[name], num_embeddings=ROWS[name],
                               feature_names=[name[2:]]) for name in DIMS]


def kjt(values_by_feature, lengths_by_feature=None):
    keys = list(values_by_feature)
    values = torch.cat([torch.as_tensor(values_by_feature[k], dtype=torch.int64) for k in keys])
    lengths = torch.cat([torch.as_tensor(lengths_by_feature[k]) if lengths_by_feature else
                         torch.ones(len(values_by_feature[k]), dtype=torch.int64) for k in keys])
    return KeyedJaggedTensor.from_lengths_sync(keys, values, lengths)


def random_batches(num, batch, seed=0):
    """Zipf-like ids: a few frequent, a long tail (so counts tie at the bottom, as in real data)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        out.append(kjt({name[2:]: (torch.rand(batch, generator=g) ** 4 * ROWS[name]).long() for name in DIMS}))
    return out


def row_bytes(dim):  # weights + row-wise Adagrad state
    return 4 * dim + 4


def test_transform_matches_a_python_dict_on_random_ids():
    g = torch.Generator().manual_seed(3)
    vocab_a = torch.randperm(1000, generator=g)[:137]
    vocab_b = torch.randperm(50, generator=g)[:20] * 10**9  # ids beyond int32
    transform = FrequencyVocabularyTransform({"t_a": vocab_a, "t_b": vocab_b}, {"a": "t_a", "b": "t_b", "b2": "t_b"})
    ids_a = torch.randint(0, 1200, (500,), generator=g)
    ids_b = torch.cat([vocab_b[torch.randint(0, 20, (100,), generator=g)],
                       torch.randint(0, 10**12, (100,), generator=g)])
    ids_c = torch.randint(0, 7, (30,), generator=g)  # not listed: passes unchanged
    ids_b2 = ids_b.flip(0)[:100]  # a second feature reading the same vocabulary
    lengths = {"a": torch.full((100,), 5), "b": torch.full((100,), 2), "c": torch.full((100,), 0),
               "b2": torch.ones(100, dtype=torch.int64)}
    lengths["c"][:30] = 1
    out = transform(kjt({"a": ids_a, "b": ids_b, "c": ids_c, "b2": ids_b2}, lengths))

    def reference(vocabulary, ids):
        row_of = {int(i): r + 1 for r, i in enumerate(sorted(vocabulary.tolist()))}
        return [row_of.get(int(i), 0) for i in ids]

    got = out.to_dict()
    assert got["a"].values().tolist() == reference(vocab_a, ids_a)
    assert got["b"].values().tolist() == reference(vocab_b, ids_b)
    assert got["b2"].values().tolist() == reference(vocab_b, ids_b2)
    assert got["c"].values().tolist() == ids_c.tolist()
    assert 0 in got["a"].values().tolist() and max(got["a"].values().tolist()) <= 137  # OOV used, rows in range
    assert torch.equal(out.lengths(), torch.cat([lengths[k] for k in ("a", "b", "c", "b2")]))
    assert transform.num_embeddings == {"t_a": 138, "t_b": 21}
    # int32 ids map the same, and the KJT keeps its dtype
    assert transform.rows("a", ids_a.to(torch.int32)).tolist() == reference(vocab_a, ids_a)
    small = transform(kjt({"a": ids_a, "b": ids_b[:5], "b2": ids_b2[:5]}))
    assert transform(KeyedJaggedTensor.from_lengths_sync(small.keys(), small.values().to(torch.int32),
                                                         small.lengths())).values().dtype == torch.int32


def test_empty_vocabulary_sends_everything_to_the_oov_row():
    transform = FrequencyVocabularyTransform({"x": torch.zeros(0, dtype=torch.int64)})
    assert transform(kjt({"x": [0, 5, 99]})).values().tolist() == [0, 0, 0]


def test_feature_id_counts_match_a_counter():
    batches = random_batches(5, 64)
    counts = feature_id_counts(batches)
    for feature in ("a", "b", "c"):
        expected = Counter(v for b in batches for v in b[feature].values().tolist())
        got = {i: int(c) for i, c in enumerate(counts[feature].tolist()) if c}
        assert got == dict(expected)
    some = feature_id_counts(batches, ["a", "zz"])  # only those asked for; one never seen counts nothing
    assert set(some) == {"a", "zz"} and some["zz"].numel() == 0 and torch.equal(some["a"], counts["a"])


@pytest.mark.parametrize("fraction", [0.002, 0.01, 0.1, 0.8])
def test_budget_fit_is_one_global_count_threshold(fraction):
    counts = feature_id_counts(random_batches(10, 256))
    full = sum(ROWS[t] * row_bytes(DIMS[t]) for t in DIMS)
    budget = int(fraction * full)
    plan = fit_frequency_vocabularies(tables(), counts, budget)
    kept_bytes = sum(row_bytes(DIMS[t]) * (ids.numel() + 1) + 8 * ids.numel() for t, ids in plan.ids.items())
    assert plan.bytes == kept_bytes <= budget
    count_of = {(t, i): int(c) for t in DIMS for i, c in enumerate(counts[t[2:]].tolist()) if c}
    kept = {(t, int(i)) for t, ids in plan.ids.items() for i in ids}
    assert kept <= set(count_of), "only ids seen in training get rows"
    left_out = {k: c for k, c in count_of.items() if k not in kept}
    if fraction == 0.8:
        assert not left_out and plan.threshold == min(count_of.values())  # every seen id fits
        return
    threshold = plan.threshold
    assert threshold == min(count_of[k] for k in kept)
    assert all(c <= threshold for c in left_out.values()), "every id counted more than the threshold has a row"
    at_threshold = [k for k, c in count_of.items() if c == threshold]
    assert plan.threshold_ids == len(at_threshold) and plan.threshold_kept == len(kept.intersection(at_threshold))
    # the budget is filled: the most frequent ids left out (the next in the ranking is one of them) do not fit
    top = max(left_out.values())
    dearest = max(row_bytes(DIMS[t]) + 8 for (t, _), c in left_out.items() if c == top)
    assert budget - plan.bytes < dearest
    for table, ids in plan.ids.items():
        assert torch.equal(ids, torch.sort(ids).values) and ids.numel() == torch.unique(ids).numel()
    assert plan.num_embeddings == {t: len([k for k in kept if k[0] == t]) + 1 for t in DIMS}


def test_sparse_counts_and_shared_tables():
    """(ids, counts) pairs give the same plan as dense counts; two features of one table add their counts."""
    dense = {"a": torch.tensor([0, 5, 1, 0, 3]), "b": torch.tensor([2, 0, 0, 9])}
    sparse = {"a": (torch.tensor([1, 2, 4]), torch.tensor([5, 1, 3])),
              "b": (torch.tensor([0, 3]), torch.tensor([2, 9]))}
    shared = [EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10, feature_names=["a", "b"])]
    budget = row_bytes(4) + 3 * (row_bytes(4) + 8)  # the OOV row and three ids
    one, two = fit_frequency_vocabularies(shared, dense, budget), fit_frequency_vocabularies(shared, sparse, budget)
    # summed counts: id 3 -> 12, id 1 -> 5, id 4 -> 3, id 0 -> 2, id 2 -> 1
    assert one.ids["t"].tolist() == two.ids["t"].tolist() == [1, 3, 4] and one.threshold == 3
    # ties at the threshold are kept as far as the budget goes: ids 0, 2, 4 counted 3 times, room for two of them
    ties = {"a": torch.tensor([3, 0, 3, 9, 3]), "b": torch.zeros(0, dtype=torch.int64)}
    tied = fit_frequency_vocabularies(shared, ties, budget)
    assert (tied.threshold, tied.threshold_kept, tied.threshold_ids) == (3, 2, 3) and 3 in tied.ids["t"].tolist()
    assert set(tied.ids["t"].tolist()) - {3} < {0, 2, 4}
    ebc = FrequencyVocabularyEmbeddingBagCollection(shared, dense, budget)
    assert ebc.vocabulary(kjt({"a": [3, 2], "b": [4, 1]})).values().tolist() == [2, 0, 3, 1]


def fused_factory(configs):
    return FusedEmbeddingBagCollection(configs, optimizer_type=RowWiseAdagrad,
                                       optimizer_kwargs={"lr": 0.1, "eps": 1e-8})


def test_memory_report_counts_tables_state_and_the_map():
    counts = feature_id_counts(random_batches(10, 256))
    ebc = FrequencyVocabularyEmbeddingBagCollection(tables(), counts, 0.03, collection_factory=fused_factory)
    report = emb_opt.memory_report(ebc).set_index("table")
    assert set(report["kind"]) == {"freqvocab"} and list(report.index) == ["t_a", "t_b", "t_c", "(shared)", "TOTAL"]
    held = 0
    for config in ebc.embedding_bag_configs():
        kept = ebc.vocabulary.vocabulary(config.name).numel()
        assert config.num_embeddings == kept + 1
        row = report.loc[config.name]
        assert int(row["index_bytes"]) == 8 * kept  # the sorted id array
        assert int(row["weights_bytes"]) == (kept + 1) * config.embedding_dim * 4
        assert int(row["optimizer_bytes"]) == (kept + 1) * 4  # the fused optimizer's real row-wise state
        assert int(row["virtual_rows"]) == ROWS[config.name] and int(row["physical_rows"]) == kept + 1
        held += int(row["weights_bytes"]) + int(row["optimizer_bytes"]) + int(row["index_bytes"])
    weights = sum(p.numel() * 4 for p in ebc.collection.parameters())
    state = sum(t.numel() * t.element_size() for s in ebc.collection.fused_optimizer().state.values()
                for t in s.values() if isinstance(t, torch.Tensor))
    total = int(report.loc["TOTAL", "total_bytes"])
    assert total == held == weights + state + ebc.vocabulary.memory_bytes() == ebc.plan.bytes <= ebc.budget_bytes
    assert ebc.budget_bytes == int(0.03 * sum(ROWS[t] * row_bytes(DIMS[t]) for t in DIMS))
    # the same figures from the state_dict (the id arrays are in it) and through a DLRM holding it
    from_sd = emb_opt.memory_report(ebc.state_dict()).set_index("table")
    assert int(from_sd.loc["TOTAL", "index_bytes"]) == ebc.vocabulary.memory_bytes()
    assert list(from_sd["index_bytes"][:3]) == list(report["index_bytes"][:3])
    in_model = emb_opt.memory_report(torch.nn.ModuleDict({"sparse": ebc}))
    assert int(in_model.loc[in_model["table"] == "TOTAL", "total_bytes"].iloc[-1]) == total


def test_state_dict_round_trip():
    counts = feature_id_counts(random_batches(10, 256))
    ebc = FrequencyVocabularyEmbeddingBagCollection(tables(), counts, 0.05)
    sd = ebc.state_dict()
    assert {k for k in sd if k.startswith("transforms.")} == {f"transforms.0.vocabulary_{i}" for i in range(3)}
    assert torch.equal(sd["transforms.0.vocabulary_1"], ebc.plan.ids["t_b"])
    # a collection of the same shapes whose weights and vocabulary differ reads like the saved one once loaded
    other = FrequencyVocabularyEmbeddingBagCollection(tables(), counts, 0.05)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
        other.vocabulary.vocabulary_1.add_(1)  # other ids (still sorted and unique)
    batch = random_batches(1, 64, seed=9)[0]
    assert not torch.equal(other.vocabulary(batch).values(), ebc.vocabulary(batch).values())
    other.load_state_dict(sd)
    assert torch.equal(other(batch).values(), ebc(batch).values())
    assert torch.equal(other.vocabulary.vocabulary_1, ebc.plan.ids["t_b"])


def test_inside_dlrm_forward_and_backward_trains_the_oov_row():
    counts = feature_id_counts(random_batches(10, 256))
    ebc = FrequencyVocabularyEmbeddingBagCollection(tables(dim=8), counts, 0.01)  # DLRM: one width
    model = DLRM(embedding_bag_collection=ebc, dense_in_features=4, dense_arch_layer_sizes=[16, 8],
                 over_arch_layer_sizes=[8, 1])
    unseen = ROWS["t_b"] * 10  # an id never counted (and beyond the raw table): reads the OOV row
    batch = kjt({"a": [0, 1], "b": [unseen, int(ebc.plan.ids["t_b"][0])], "c": [3, 4]})
    logits = model(torch.randn(2, 4), batch)
    assert logits.shape == (2, 1)
    logits.sum().backward()
    grad = ebc.collection.embedding_bags["t_b"].weight.grad
    assert grad.shape[0] == ebc.plan.num_embeddings["t_b"]
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0  # the OOV row and the kept id's row (row 1)
    assert grad[2:].abs().sum() == 0


def test_clear_errors():
    transform = FrequencyVocabularyTransform({"t_a": torch.tensor([1, 2])}, {"a": "t_a"})
    with pytest.raises(ValueError, match=r"feature 'a' ids must be >= 0: got id -3"):
        transform(kjt({"a": [1, -3]}))
    with pytest.raises(ValueError, match=r"KJT lacks feature\(s\) \['a'\]"):
        transform(kjt({"b": [1]}))
    with pytest.raises(ValueError, match=r"vocabulary 't_a': id 2 is listed more than once"):
        FrequencyVocabularyTransform({"t_a": torch.tensor([2, 1, 2])})
    with pytest.raises(ValueError, match=r"read vocabularies that are not given"):
        FrequencyVocabularyTransform({"t_a": torch.tensor([1])}, {"a": "t_x"})
    counts = feature_id_counts(random_batches(2, 32))
    with pytest.raises(ValueError, match=r"id_counts has no entry for feature 'c' \(table 't_c'\)"):
        fit_frequency_vocabularies(tables(), {"a": counts["a"], "b": counts["b"]}, 10**6)
    minimum = sum(row_bytes(d) for d in DIMS.values())
    with pytest.raises(ValueError, match=rf"below the {minimum} bytes of one out-of-vocabulary row per table"):
        FrequencyVocabularyEmbeddingBagCollection(tables(), counts, minimum - 1)
    with pytest.raises(ValueError, match=r"id_counts\['a'\]: counts must be >= 0"):
        fit_frequency_vocabularies(tables(), {**counts, "a": torch.tensor([1, -1])}, 10**6)
    with pytest.raises(TypeError, match=r"id_counts\['a'\]: counts must be integers"):
        fit_frequency_vocabularies(tables(), {**counts, "a": torch.tensor([1.0])}, 10**6)
    with pytest.raises(ValueError, match=r"memory_budget as a fraction must be in \(0, 1\]"):
        FrequencyVocabularyEmbeddingBagCollection(tables(), counts, 1.5)
    # the budget exactly at the minimum: only the OOV rows
    oov_only = FrequencyVocabularyEmbeddingBagCollection(tables(), counts, minimum)
    assert oov_only.plan.num_embeddings == {t: 1 for t in DIMS} and oov_only.plan.threshold is None


def test_harness_method_needs_counts_and_runs(tmp_path):
    from experiments import criteo_dlrm
    from experiments.dlrm_methods import build_collection

    with pytest.raises(ValueError, match="freqvocab needs the id counts of the training stream"):
        build_collection("freqvocab", 0.1, tables(), seed=0, learning_rate=0.1, chunk_size=4, fiited_options={})
    tiny = ["--steps", "4", "--batch-size", "128", "--eval-batches", "2", "--eval-batch-size", "256",
            "--cardinality-scale", "0.002", "--no-progress", "--methods", "full,hash,freqvocab", "--budgets", "0.01",
            "--seeds", "1,2", "--out", str(tmp_path)]
    df = criteo_dlrm.main(tiny)
    assert list(df["method"].unique()) == ["full", "hash@0.01", "freqvocab@0.01"]
    assert (df["bytes_fraction"] <= df["budget"] + 1e-9).all()
    assert (df.loc[df["method"] == "freqvocab@0.01", "bytes_fraction"] > 0.009).all()  # the budget is used
    import pandas as pd

    summary = pd.read_csv(tmp_path / "seeds_summary.csv").set_index("method")
    vocab, hashed = (df[df["method"] == m].set_index("seed")["auc"] for m in ("freqvocab@0.01", "hash@0.01"))
    assert summary.loc["hash@0.01", "vs_freqvocab_mean"] == pytest.approx((hashed - vocab).mean())
    assert pd.isna(summary.loc["freqvocab@0.01", "vs_freqvocab_mean"])


def test_training_counts_are_the_trained_batches():
    from experiments import criteo_dlrm

    config = criteo_dlrm.parse_args(["--steps", "3", "--batch-size", "64", "--cardinality-scale", "0.002"])
    data = criteo_dlrm.load_data(config, 1)
    counts = criteo_dlrm.training_id_counts(config, data)
    batches = [b for _, b in zip(range(3), data.train_batches())]
    assert all(int(counts[f].sum()) == sum(b.sparse_features[f].values().numel() for b in batches) for f in counts)
    first = batches[0].sparse_features["cat_0"].values()
    assert int(counts["cat_0"][int(first[0])]) >= 1


@pytest.mark.distributed
def test_sharded_freqvocab_on_two_processes(tmp_path):
    from experiments import criteo_dlrm

    df = criteo_dlrm.main(["--steps", "4", "--batch-size", "128", "--eval-batches", "2", "--eval-batch-size", "256",
                           "--cardinality-scale", "0.002", "--no-progress", "--methods", "full,freqvocab",
                           "--budgets", "0.05", "--nproc", "2", "--out", str(tmp_path)])
    assert list(df["method"]) == ["full", "freqvocab@0.05"] and (df["nproc"] == 2).all()
    assert df["auc"].between(0, 1).all() and (df["samples"] == 4 * 128).all()
    # the vocabulary counts every rank's batches: 8 local batches of 64 (rank r trains on every other one)
    local = criteo_dlrm.parse_args(["--steps", "8", "--batch-size", "64", "--cardinality-scale", "0.002"])
    data = criteo_dlrm.load_data(local, 0)
    whole = FrequencyVocabularyEmbeddingBagCollection(data.tables, criteo_dlrm.training_id_counts(local, data), 0.05)
    assert int(df.loc[1, "embedding_bytes"]) == whole.plan.bytes <= 0.05 * int(df.loc[0, "embedding_bytes"])
