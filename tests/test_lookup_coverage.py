"""``emb_opt.lookup_coverage``: per feature, the share of some data's lookups that read stored chunks, read whole
rows, and the mean width read -- checked against the store's own lookups, on the training collection and on its
inference export, with nothing in the store changed; a bad id is named."""
import warnings

import pytest
import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

import emb_opt
from emb_opt import FiitedEmbeddingBagCollection


def tables():
    return [EmbeddingBagConfig(name="t0", embedding_dim=32, num_embeddings=500, feature_names=["f0", "f2"]),
            EmbeddingBagConfig(name="t1", embedding_dim=16, num_embeddings=80, feature_names=["f1"])]


def kjt(seed, size=64):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.cat([(torch.rand(size, generator=gen) ** 3 * 500).long(), torch.randint(0, 80, (size,), generator=gen),
                     torch.randint(0, 500, (size,), generator=gen)])
    return KeyedJaggedTensor.from_lengths_sync(["f0", "f1", "f2"], ids, torch.ones(3 * size, dtype=torch.int32))


def trained():
    m = FiitedEmbeddingBagCollection(tables(), memory_budget=0.15, warmup_steps=5, resize_interval=5,
                                     learning_rate=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(30):
            m(kjt(step)).values().pow(2).sum().backward()
    return m


def test_coverage_counts_what_the_store_holds_and_changes_nothing():
    m = trained()
    held_out = [kjt(100 + i) for i in range(3)]
    counters, live = m.store.counter_dict(), m.store.num_live
    df = emb_opt.lookup_coverage(m, held_out)
    assert m.store.counter_dict() == counters and m.store.num_live == live
    assert list(df["feature"]) == ["f0", "f2", "f1"] and list(df["table"]) == ["t0", "t0", "t1"]
    for feature, table, dim in (("f0", "t0", 32), ("f2", "t0", 32), ("f1", "t1", 16)):
        ids = torch.cat([k[feature].values() for k in held_out])
        widths = m.store.active_chunks(["t0", "t1"].index(table), ids) * 16
        row = df[df["feature"] == feature].iloc[0]
        assert row["lookups"] == ids.numel()
        assert row["stored_share"] == pytest.approx(float((widths > 0).float().mean()))
        assert row["full_width_share"] == pytest.approx(float((widths == dim).float().mean()))
        assert row["mean_dim"] == pytest.approx(float(widths.float().mean()))
    shares = df.set_index("feature")["stored_share"]
    assert 0 < shares["f2"] < shares["f0"] <= 1  # uniform ids miss more than skewed ones at this budget
    exported = emb_opt.export_inference(m)
    assert emb_opt.lookup_coverage(exported, held_out).equals(df)


def test_an_id_outside_its_table_is_named():
    m = trained()
    bad = KeyedJaggedTensor.from_lengths_sync(["f0", "f1", "f2"], torch.tensor([3, 80, 4]),
                                              torch.ones(3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"feature 'f1' \(table 't1'\): id 80 is out of range \[0, 80\)"):
        emb_opt.lookup_coverage(m, [bad])
