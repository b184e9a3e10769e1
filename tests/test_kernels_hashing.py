"""The native hash kernel against its pure-PyTorch reference, and the random-hash baseline's contract."""
import os

import pytest
import torch

from kernel_cases import DEVICES, assert_same, call, on, ops, requires_extension

import cuda_ext
import hashing
from cuda_ext import reference


def test_extension_is_built():
    # CI builds the extension; a silent fallback there would hide a broken build.
    if os.environ.get("EMB_OPT_ALLOW_NO_EXTENSION") == "1":
        pytest.skip("EMB_OPT_ALLOW_NO_EXTENSION=1")
    assert cuda_ext.extension_loaded(), cuda_ext.extension_status()


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("num_buckets", [1, 7, 1000003, 2**40 + 3])
def test_mix_hash_matches_reference(device, dtype, num_buckets):
    gen = torch.Generator().manual_seed(num_buckets % 1000)
    high = 2**31 - 1 if dtype == torch.int32 else 2**62
    ids = torch.randint(0, high, (5000,), generator=gen, dtype=torch.int64).to(dtype).reshape(50, 100)
    for seed in (0, 1, 2, 12345, -5):
        got = call(device, ops.mix_hash, on(device, ids), num_buckets, seed)
        want = reference.mix_hash(ids, num_buckets, seed)
        assert got.dtype == torch.int64
        assert_same(got, want, f"buckets (seed {seed})")
        assert int(got.min()) >= 0 and int(got.max()) < num_buckets


def test_reference_mixer_known_values():
    # splitmix64 finalizer of 0 + golden (the first splitmix64 output for state 0) is a published constant.
    z = torch.tensor([0x9E3779B97F4A7C15 - (1 << 64)], dtype=torch.int64)
    assert int(reference.mix64(z)) & ((1 << 64) - 1) == 0xE220A8397B1DCDAF


def test_random_hash_shape_and_spread():
    ids = torch.arange(100_000).reshape(100, 1000)
    out = hashing.random_hash(ids, 1000, seed=3)
    assert out.shape == ids.shape and out.dtype == torch.int64
    counts = torch.bincount(out.reshape(-1), minlength=1000).double()
    # 100 ids per bucket on average: a uniform hash keeps the spread near Poisson (std 10)
    assert counts.std() < 15
    assert not torch.equal(out, hashing.random_hash(ids, 1000, seed=4))
    assert torch.equal(hashing.random_hash(ids, 1000, method="modulo"), ids % 1000)


def test_random_hash_bad_input():
    with pytest.raises(ValueError, match=r"got id -7 at position 2"):
        hashing.random_hash(torch.tensor([1, 2, -7]), 10)
    with pytest.raises(TypeError, match="int32 or int64"):
        hashing.random_hash(torch.tensor([1.0, 2.0]), 10)
    with pytest.raises(ValueError, match="num_buckets"):
        hashing.random_hash(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match="unknown hash method"):
        hashing.random_hash(torch.tensor([1]), 10, method="md5")


def test_collision_stats_match_expectation():
    ids = torch.randperm(10**7)[:20_000]
    stats = hashing.collision_stats(ids, 10_000, seed=1)
    assert stats.num_ids == 20_000
    assert abs(stats.collision_rate - stats.expected_collision_rate) < 0.02
    assert abs(stats.occupied_buckets - stats.expected_occupied_buckets) < 0.02 * 10_000
    assert sum(stats.load_histogram.values()) == 10_000
    # traffic weighting: give all the traffic to one id alone in its bucket -> rate 0
    freqs = torch.zeros(20_000)
    buckets = hashing.random_hash(ids, 10_000, 1)
    alone = [i for i in range(200) if int((buckets == buckets[i]).sum()) == 1][0]
    freqs[alone] = 1.0
    assert hashing.collision_stats(ids, 10_000, 1, frequencies=freqs).traffic_collision_rate == 0.0


def test_hashed_collection_row_budgets():
    pytest.importorskip("torchrec")  # the kernel suite runs without TorchRec (kernel_cases.py)
    from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

    from hashing.hashed_ebc import HashedEmbeddingBagCollection, hashed_table_configs, row_cap_for_fraction

    rows = [3, 10, 1000, 50_000]
    tables = [EmbeddingBagConfig(name=f"t{i}", embedding_dim=4, num_embeddings=n, feature_names=[f"f{i}"]) for i, n in enumerate(rows)]
    cap = row_cap_for_fraction(rows, 0.1)
    kept = [c.num_embeddings for c in hashed_table_configs(tables, total_row_fraction=0.1)]
    assert kept[:3] == [3, 10, 1000] and kept[3] == cap < 50_000  # small tables whole, the large one capped
    assert sum(kept) <= 0.1 * sum(rows) < sum(min(n, cap + 1) for n in rows)
    assert [c.num_embeddings for c in hashed_table_configs(tables, row_fraction=0.1)] == [1, 1, 100, 5000]
    with pytest.raises(ValueError, match="exactly one"):
        hashed_table_configs(tables, row_fraction=0.1, total_row_fraction=0.1)
    m = HashedEmbeddingBagCollection(tables, total_row_fraction=0.1, seed=5)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1", "f2", "f3"], values=torch.tensor([2, 9, 999, 49_999]),
                                              lengths=torch.ones(4, dtype=torch.int32))
    out = m(kjt)
    assert out.values().shape == (1, 16)
    with pytest.raises(ValueError, match="feature 'f2' ids must be >= 0"):  # f2's table is kept whole: checked anyway
        m(KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1", "f2", "f3"], values=torch.tensor([2, 9, -1, 4]),
                                              lengths=torch.ones(4, dtype=torch.int32)))


def test_tables_kept_whole_are_not_hashed():
    pytest.importorskip("torchrec")
    from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

    from hashing.hashed_ebc import HashedEmbeddingBagCollection

    tables = [EmbeddingBagConfig(name="small", embedding_dim=4, num_embeddings=10, feature_names=["a"]),
              EmbeddingBagConfig(name="big", embedding_dim=4, num_embeddings=100_000, feature_names=["b"])]
    m = HashedEmbeddingBagCollection(tables, total_row_fraction=0.01)
    assert set(m.transforms[0].num_buckets) == {"b"}
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.tensor([0, 1, 2, 7, 99_999]),
                                              lengths=torch.tensor([1, 1, 1, 1, 1, 0]))
    out = m.transform(kjt)
    assert out["a"].values().tolist() == [0, 1, 2]  # identity
    assert int(out["b"].values().max()) < m.collection.embedding_bag_configs()[1].num_embeddings
