"""FiitedEmbeddingBagCollection end to end: equivalence with dense TorchRec tables when everything fits,
the memory-budget invariant, resizing, checkpoints, DLRM, convert(), and clear errors on bad input."""
import copy
import math
import warnings

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.models.dlrm import DLRM
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad

import emb_opt
from emb_opt.budget import total_full_bytes
from emb_opt.config import OptimizerType
from emb_opt.resize import keep_limit
from emb_opt.convert import convert
from tests.fiited_helpers import random_kjt, small_tables

ROOMY = 10**7  # bytes: holds every chunk of the small tables


def dense_weights(ebc: EmbeddingBagCollection):
    return {t.name: ebc.embedding_bags[t.name].weight.detach().clone() for t in ebc.embedding_bag_configs()}


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_dense_ebc_trained_with_sgd(weighted):
    torch.manual_seed(0)
    tables = small_tables()
    ebc = EmbeddingBagCollection(tables, is_weighted=weighted)
    fiited = emb_opt.FiitedEmbeddingBagCollection(tables, ROOMY, chunk_size=4, optimizer="sgd", learning_rate=0.1,
                                                  is_weighted=weighted, warmup_steps=10**6)
    assert fiited.import_dense_weights(dense_weights(ebc)) == (40 + 25) * 2
    opt = torch.optim.SGD(ebc.parameters(), lr=0.1)
    for step in range(6):
        kjt = random_kjt(step, weighted=weighted)
        target = torch.randn(6, 24, generator=torch.Generator().manual_seed(100 + step))
        ref = ebc(kjt)
        out = fiited(kjt)
        assert out.keys() == ref.keys() == ["f0@t0", "f2@t0", "f1"] or out.keys() == ref.keys()
        torch.testing.assert_close(out.values(), ref.values(), rtol=1e-5, atol=1e-6)
        ((ref.values() - target) ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
        ((out.values() - target) ** 2).sum().backward()
    for name, w in dense_weights(ebc).items():
        torch.testing.assert_close(fiited.to_dense_weights(name), w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [8, 4, 2])
def test_rowwise_adagrad_matches_fbgemm_tbe_at_any_chunk_size(chunk_size):
    # one accumulator per row (not per chunk): FBGEMM's EXACT_ROWWISE_ADAGRAD when every chunk is live
    torch.manual_seed(1)
    tables = small_tables(dim=8)
    fused = FusedEmbeddingBagCollection(tables, optimizer_type=RowWiseAdagrad, optimizer_kwargs={"lr": 0.05, "eps": 1e-8})
    fiited = emb_opt.FiitedEmbeddingBagCollection(tables, ROOMY, chunk_size=chunk_size, optimizer="rowwise_adagrad",
                                                  learning_rate=0.05, eps=1e-8, warmup_steps=10**6)
    fiited.import_dense_weights({n: m.weight.detach().clone() for n, m in fused.embedding_bags.items()})
    for step in range(5):
        kjt = random_kjt(step)
        target = torch.randn(6, 24, generator=torch.Generator().manual_seed(200 + step))
        a, b = fused(kjt), fiited(kjt)
        torch.testing.assert_close(b.values(), a.values(), rtol=1e-5, atol=1e-6)
        ((a.values() - target) ** 2).sum().backward()
        ((b.values() - target) ** 2).sum().backward()
    for name, module in fused.embedding_bags.items():
        torch.testing.assert_close(fiited.to_dense_weights(name), module.weight.detach(), rtol=1e-4, atol=1e-6)


def test_budget_is_never_exceeded_and_resizes_prune_to_target():
    tables = [EmbeddingBagConfig(name=f"t{i}", embedding_dim=16, num_embeddings=2000, feature_names=[f"f{i}"]) for i in range(3)]
    full = total_full_bytes([2000] * 3, [16] * 3, OptimizerType.ROWWISE_ADAGRAD)
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 0.2, chunk_size=4, warmup_steps=4, resize_interval=3,
                                             initial_capacity=64, learning_rate=0.05)
    assert m.budget_bytes == int(0.2 * full)
    gen = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(30):
            ids = (torch.rand(3 * 256, generator=gen) ** 3 * 2000).long()
            kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1", "f2"], values=ids, lengths=torch.ones(3 * 256, dtype=torch.int32))
            m(kjt).values().pow(2).sum().backward()
            assert m.memory_bytes() <= m.budget_bytes
            assert m.store.capacity <= m.store.plan.max_slots and m.store.row_capacity <= m.store.plan.max_rows
            # the plan's accounting is what is allocated, to the byte
            plan = m.store.plan
            assert m.memory_bytes() == plan.fixed_bytes + plan.variable_bytes(m.store.capacity, m.store.row_capacity)
    assert len(m.telemetry) == 9  # steps 4, 7, ..., 28
    plan, limit = m.store.plan, keep_limit(m.store)
    assert limit == pytest.approx((1 - m.config.reserve_fraction) * plan.available_bytes)
    for record in m.telemetry:  # what a resize keeps fits the budget less the reserve, index entries counted
        assert plan.variable_bytes(record["live_chunks"], record["live_rows"]) <= limit
        assert record["allocated_bytes"] <= m.budget_bytes
    assert m.store.counter_dict()["pruned_chunks"] > 0
    # rows keep a prefix of their chunks: every live chunk k > 0 has chunk k-1 live
    _, keys = m.store.live_keys()
    chunk = keys & 63
    has_prev = torch.isin(keys[chunk > 0] - 1, keys)
    assert bool(has_prev.all())


def test_resize_keeps_highest_prefix_utilities_and_readmits_rising_rows():
    tables = [EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=100, feature_names=["f"])]
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 10**6, chunk_size=4, warmup_steps=10**6, reserve_fraction=0.0)
    store = m.store
    m.import_dense_weights({"t": torch.randn(100, 8)})
    assert store.num_live == 200
    # pretend the budget allows only 3 chunks in 2 rows, and set utilities by hand
    plan = store.plan
    plan.available_bytes = plan.variable_bytes(3, 2)  # reserve_fraction is 0: exactly 3 chunks in 2 rows
    slots, keys = store.live_keys()
    util = torch.zeros_like(store.slot_utility)
    rows, chunk = (keys >> 6), keys & 63
    util[slots[(rows == 5) & (chunk == 0)]] = 10.0
    util[slots[(rows == 5) & (chunk == 1)]] = 1.0  # row 5: [10, 1]
    util[slots[(rows == 7) & (chunk == 0)]] = 3.0
    util[slots[(rows == 7) & (chunk == 1)]] = 9.0  # row 7: [3, 9] -> effective [3, 3]
    util[slots[(rows == 9) & (chunk == 0)]] = 2.0
    store.slot_utility.copy_(util)
    record = m.resize_now()
    _, kept = store.live_keys()
    assert sorted(kept.tolist()) == sorted([(5 << 6), (7 << 6), (7 << 6) + 1])
    assert record["thresholds"] == [3.0, 3.0]
    assert store.counter_dict()["pruned_chunks"] == 197
    # row 5's pruned chunk 1 went to the sketch (decayed x0.5); row 9 now needs >= 3 to come back
    assert float(store.sketch_estimate(torch.tensor([5 << 6]))) == pytest.approx(0.5)
    assert float(store.sketch_estimate(torch.tensor([9 << 6]))) == pytest.approx(1.0)
    plan.available_bytes = 10**6
    store.sketch_add(torch.tensor([9 << 6]), torch.tensor([5.0]))  # row 9's candidate utility rises to 6
    m.train()
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([9, 5]), lengths=torch.tensor([1, 1]))
    m(kjt).values().sum().backward()
    assert int(store.active_chunks(0, torch.tensor([9]))) == 2  # 6 >= theta for both positions
    assert int(store.active_chunks(0, torch.tensor([5]))) == 1  # 0.5 < theta: stays at one chunk


def test_unused_chunks_are_freed_and_the_pool_compacts():
    tables = [EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=5000, feature_names=["f"])]
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 10**7, chunk_size=4, warmup_steps=2, resize_interval=100,
                                             initial_capacity=256)
    m.import_dense_weights({"t": torch.randn(5000, 8)})
    sketch = m.store.sketch.numel() * 4  # fixed: sized from the budget, not from the live chunks
    before = m.memory_bytes() - sketch
    assert m.store.capacity >= 10000
    for _ in range(2):  # only rows 0..9 are used
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.arange(10), lengths=torch.ones(10, dtype=torch.int32))
        m(kjt).values().sum().backward()
    m(kjt).values().sum().backward()  # step 2: the resize frees the unused chunks
    assert m.store.num_live == 20
    assert m.store.counter_dict()["resizes"] == 1  # every resize compacts
    assert m.store.capacity == 256 and m.memory_bytes() - sketch < before / 10
    m.eval()
    torch.testing.assert_close(m(kjt).values()[:, :8].shape, torch.Size([10, 8]))


def test_checkpoint_resume_is_bit_identical():
    tables = small_tables(dim=8, rows=(40, 25))
    options = dict(memory_budget=3000, chunk_size=4, warmup_steps=3, resize_interval=2, initial_capacity=16, learning_rate=0.1)
    torch.manual_seed(0)
    a = emb_opt.FiitedEmbeddingBagCollection(tables, **options)
    outs_a, checkpoint = [], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(12):
            if step == 5:
                checkpoint = copy.deepcopy(a.state_dict())
            out = a(random_kjt(step, max_len=4))
            out.values().pow(2).sum().backward()
            outs_a.append(out.values().detach())
        b = emb_opt.FiitedEmbeddingBagCollection(tables, **options)
        b.load_state_dict(checkpoint)
        for step in range(5, 12):
            out = b(random_kjt(step, max_len=4))
            out.values().pow(2).sum().backward()
            assert torch.equal(out.values().detach(), outs_a[step]), f"step {step} differs after reload"
    assert torch.equal(a.store.pool_weights, b.store.pool_weights)
    assert torch.equal(a.store.sketch, b.store.sketch)
    assert a.store.counter_dict() == b.store.counter_dict()
    assert len(b.telemetry) == len(a.telemetry)


def test_load_state_dict_of_other_tables_is_refused():
    a = emb_opt.FiitedEmbeddingBagCollection(small_tables(rows=(40, 25)), 10**5, chunk_size=4)
    b = emb_opt.FiitedEmbeddingBagCollection(small_tables(rows=(41, 25)), 10**5, chunk_size=4)
    with pytest.raises(RuntimeError, match="checkpoint tables"):
        b.load_state_dict(a.state_dict())


def test_inside_dlrm_and_convert():
    torch.manual_seed(0)
    tables = [EmbeddingBagConfig(name=f"t{i}", embedding_dim=8, num_embeddings=50, feature_names=[f"f{i}"]) for i in range(2)]
    model = DLRM(embedding_bag_collection=EmbeddingBagCollection(tables), dense_in_features=3,
                 dense_arch_layer_sizes=[4, 8], over_arch_layer_sizes=[4, 1])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1"], values=torch.tensor([5, 10, 3, 9, 1]), lengths=torch.tensor([2, 0, 1, 2]))
    dense = torch.randn(2, 3)
    model.eval()
    ref = model(dense, kjt)
    convert(model, 10**6, chunk_size=4)
    fiited = model.sparse_arch.embedding_bag_collection
    assert isinstance(fiited, emb_opt.FiitedEmbeddingBagCollection)
    assert not any("embedding_bags" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(model(dense, kjt), ref)  # weights were copied
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense, kjt).squeeze(1), torch.tensor([1.0, 0.0]))
    loss.backward()
    opt.step()
    assert fiited.store.step == 1
    with pytest.raises(ValueError, match="no torchrec EmbeddingBagCollection"):
        convert(model, 0.5)


def test_convert_with_small_budget_keeps_largest_chunks():
    tables = [EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=1000, feature_names=["f"])]
    model = torch.nn.Sequential()
    model.add_module("ebc", EmbeddingBagCollection(tables))
    weights = model.ebc.embedding_bags["t"].weight.detach().clone()
    with pytest.warns(RuntimeWarning, match="look untrained"):  # a fresh model, converted on purpose
        convert(model, 0.1, chunk_size=4)
    dense = model.ebc.to_dense_weights("t")
    kept = dense.abs().sum(1) > 0
    assert 0 < int(kept.sum()) < 1000 and model.ebc.memory_bytes() <= model.ebc.budget_bytes
    norms = weights.reshape(1000, 2, 4).norm(dim=2)[:, 0]
    assert float(norms[kept].min()) >= float(norms[~kept].max()) - 1e-6  # first chunks chosen by magnitude
    torch.testing.assert_close(dense[kept][:, :4], weights[kept][:, :4])


def test_hundred_million_row_virtual_table_is_cheap():
    tables = [EmbeddingBagConfig(name="huge", embedding_dim=128, num_embeddings=10**8, feature_names=["f"])]
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 16 * 2**20, chunk_size=16)  # 16 MiB for a 51 GB table
    assert m.full_bytes > 5 * 10**10
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([0, 99_999_999, 12345678]), lengths=torch.tensor([2, 1]))
    out = m(kjt)
    out.values().sum().backward()
    assert out.values().shape == (2, 128)
    assert m.memory_bytes() <= 16 * 2**20
    assert int(m.store.active_chunks(0, torch.tensor([99_999_999]))) == 8


def test_full_store_policy_rows_read_zero_and_are_counted():
    tables = [EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=1000, feature_names=["f"])]
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 2000, chunk_size=4, warmup_steps=10**6)
    store, plan = m.store, m.store.plan
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.arange(100), lengths=torch.ones(100, dtype=torch.int32))
    with pytest.warns(RuntimeWarning, match="store full"):
        out = m(kjt).values()
    served = out.abs().sum(1) > 0
    chunks = store.active_chunks(0, torch.arange(100))
    assert torch.equal(served, chunks > 0) and 0 < int(served.sum()) < 100
    assert int((chunks == 1).sum()) <= 1  # 2 chunks per row while room lasts (the last row maybe 1)
    assert store.num_rows == int(served.sum()) and store.num_live == int(chunks.sum())
    assert store.counter_dict()["denied_admissions"] == 200 - store.num_live
    # the budget is spent: less than one more row of both chunks (and its share of the rounding) is left
    assert plan.variable_bytes(store.capacity, store.row_capacity) <= plan.available_bytes
    assert plan.available_bytes - plan.variable_bytes(store.num_live, store.num_rows) < 2 * (2 * plan.bytes_per_slot + plan.bytes_per_row) + 8
    assert m.memory_bytes() <= m.budget_bytes
    # equal (zero) candidate utility: the served rows are a pseudo-random pick, not the first ids
    assert not bool(served[: int(served.sum())].all())


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1"], values=torch.tensor([1, 2]), lengths=torch.tensor([1, 1, 0, 0])),
         ValueError, r"lacks feature\(s\) \['f2'\]"),
        (lambda: KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f2", "f1"], values=torch.tensor([1, -4, 2]), lengths=torch.tensor([1, 1, 1, 0, 0, 0])),
         ValueError, r"feature 'f0' \(table 't0'\): id -4 of sample 1 is out of range \[0, 40\)"),
        (lambda: KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f2", "f1"], values=torch.tensor([1, 2, 25]), lengths=torch.tensor([1, 0, 1, 0, 0, 1])),
         ValueError, r"feature 'f1' \(table 't1'\): id 25 of sample 1 is out of range \[0, 25\)"),
        (lambda: KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f2", "f1"], values=torch.tensor([1.0, 2.0, 3.0]), lengths=torch.tensor([1, 1, 1])),
         ValueError, "ids must be int32 or int64"),
    ],
)
def test_bad_input_errors(make, error, match):
    m = emb_opt.FiitedEmbeddingBagCollection(small_tables(), 10**5, chunk_size=4)
    with pytest.raises(error, match=match):
        m(make())


def test_extra_features_are_ignored_and_order_does_not_matter():
    from torchrec.sparse.jagged_tensor import JaggedTensor

    m = emb_opt.FiitedEmbeddingBagCollection(small_tables(), ROOMY, chunk_size=4)
    m(random_kjt(3)).values().sum().backward()  # admits the batch's rows: they read their init values now
    m.eval()
    base = random_kjt(3)
    # a feature no table reads, with ids no table holds: ignored, as EmbeddingBagCollection ignores it
    unread = JaggedTensor(values=torch.tensor([10**9, 7]), lengths=torch.tensor([1, 0, 1, 0, 0, 0]))
    reordered = KeyedJaggedTensor.from_jt_dict({"f1": base["f1"], "unread": unread, "f0": base["f0"], "f2": base["f2"]})
    assert reordered.keys() == ["f1", "unread", "f0", "f2"]
    out = m(base).values()
    assert out.abs().sum() > 0
    torch.testing.assert_close(out, m(reordered).values(), rtol=0, atol=0)


def test_bad_construction_errors():
    with pytest.raises(ValueError, match="embedding_dim 10 is not divisible by chunk_size 4"):
        emb_opt.FiitedEmbeddingBagCollection([EmbeddingBagConfig(name="x", embedding_dim=10, num_embeddings=5, feature_names=["f"])], 10**5, chunk_size=4)
    with pytest.raises(ValueError, match="too small"):
        emb_opt.FiitedEmbeddingBagCollection(small_tables(), 100, chunk_size=4)
    with pytest.raises(ValueError, match="fraction must be in"):
        emb_opt.FiitedEmbeddingBagCollection(small_tables(), 1.5, chunk_size=4)
    with pytest.raises(ValueError, match="unsupported optimizer"):
        emb_opt.FiitedEmbeddingBagCollection(small_tables(), 10**5, chunk_size=4, optimizer="adam")
    with pytest.raises(TypeError, match="unknown FIITED option"):
        emb_opt.FiitedEmbeddingBagCollection(small_tables(), 10**5, chunk_size=4, warmup=3)


def test_chunk_init_depends_on_table_name_not_position():
    # a table gets the same fresh chunks whichever collection (or shard) holds it, at any index
    t_a = EmbeddingBagConfig(name="a", embedding_dim=8, num_embeddings=30, feature_names=["fa"])
    t_b = EmbeddingBagConfig(name="b", embedding_dim=8, num_embeddings=30, feature_names=["fb"])
    both = emb_opt.FiitedEmbeddingBagCollection([t_a, t_b], ROOMY, chunk_size=4)
    alone = emb_opt.FiitedEmbeddingBagCollection([t_b], ROOMY, chunk_size=4)
    ids = torch.tensor([3, 7, 29])
    both(KeyedJaggedTensor.from_lengths_sync(keys=["fa", "fb"], values=torch.cat([ids, ids]), lengths=torch.ones(6, dtype=torch.int32)))
    alone(KeyedJaggedTensor.from_lengths_sync(keys=["fb"], values=ids, lengths=torch.ones(3, dtype=torch.int32)))
    torch.testing.assert_close(both.to_dense_weights("b"), alone.to_dense_weights("b"), rtol=0, atol=0)
    assert not torch.equal(both.to_dense_weights("a")[ids], both.to_dense_weights("b")[ids])


def test_growing_rows_move_to_a_new_run_and_the_next_resize_closes_the_holes():
    from emb_opt.store_counters import StoreCounter

    HIGH_WATER, ROW_HIGH_WATER = StoreCounter.HIGH_WATER, StoreCounter.ROW_HIGH_WATER

    tables = [EmbeddingBagConfig(name="t", embedding_dim=12, num_embeddings=1000, feature_names=["f"])]
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 10**6, chunk_size=4, warmup_steps=10**6, reserve_fraction=0.0)
    store = m.store
    weights = torch.randn(1000, 12)
    m.import_dense_weights({"t": weights})
    assert store.num_live == 3000 and int(store.counters[HIGH_WATER]) == 3000
    # keep rows 0..9 with 1, 2, 3, 1, 2, 3, ... chunks (utility set by hand), prune the rest
    slots, keys = store.live_keys()
    rows, chunk = keys >> 6, keys & 63
    util = torch.zeros_like(store.slot_utility)
    util[slots[(rows < 10) & (chunk <= rows % 3)]] = 1.0
    store.slot_utility.copy_(util)
    m.resize_now()
    kept = store.active_chunks(0, torch.arange(10))
    assert kept.tolist() == [1, 2, 3] * 3 + [1] and store.num_live == 19
    assert int(store.counters[HIGH_WATER]) == 19 and int(store.counters[ROW_HIGH_WATER]) == 10  # compacted
    assert torch.equal(m.to_dense_weights("t")[:10, :4], weights[:10, :4])
    # row-wise Adagrad's accumulator lives at the row's index entry: it stays with the row through moves and resizes
    def accumulators():
        entries, _ = store.lookup_rows(torch.arange(10) << 6)
        return store.entry_state[entries.long(), 0]

    assert store.pool_state.shape[1] == 0 and store.entry_state.shape == (store.row_capacity, 1)
    store.entry_state[store.lookup_rows(torch.arange(10) << 6)[0].long(), 0] = torch.arange(1.0, 11.0)
    # rows 0 and 3 earn their other chunks: they move to new runs at the high-water mark
    store.thresholds.zero_()
    before = m.to_dense_weights("t")[[0, 3]].clone()
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([0, 3]), lengths=torch.ones(2, dtype=torch.int32))
    m.train()
    m(kjt)  # a training forward admits (no backward: nothing trains)
    assert store.active_chunks(0, torch.tensor([0, 3])).tolist() == [3, 3]
    assert int(store.counters[HIGH_WATER]) == 19 + 6 and store.counter_dict()["relocated_rows"] == 2
    after = m.to_dense_weights("t")[[0, 3]]
    assert torch.equal(after[:, :4], before[:, :4])  # the moved chunk kept its values
    assert bool((after[:, 4:] != 0).all())  # the new chunks got their init values
    lookup = store.lookup(torch.tensor([0, 3]) << 6)
    assert lookup[0].tolist() == [19, 20, 21] and lookup[1].tolist() == [22, 23, 24]
    assert accumulators().tolist() == list(range(1, 11))
    # the next resize closes the two holes and keeps everything (all utilities > 0 now)
    store.slot_utility[store.live_keys()[0]] = 1.0
    m.resize_now()
    assert store.num_live == 23 and int(store.counters[HIGH_WATER]) == 23
    assert torch.equal(m.to_dense_weights("t")[[0, 3]], after)
    assert accumulators().tolist() == list(range(1, 11))
    assert m.memory_bytes() <= m.budget_bytes


def test_prefix_dropout_truncates_rows_in_training_only():
    tables = [EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=200, feature_names=["f"])]
    m = emb_opt.FiitedEmbeddingBagCollection(tables, ROOMY, chunk_size=4, warmup_steps=10**6, prefix_dropout=0.9,
                                             optimizer="sgd", learning_rate=0.1)
    m.import_dense_weights({"t": torch.randn(200, 8)})
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.arange(200), lengths=torch.ones(200, dtype=torch.int32))
    before = m.to_dense_weights("t")
    out = m(kjt).values()
    cut = out[:, 4:].abs().sum(1) == 0  # rows that used only their first chunk in this step
    assert 0.3 < float(cut.float().mean()) < 0.6  # p x P(prefix of 1 of 2 chunks) = 0.9 x 0.5
    out.sum().backward()
    after = m.to_dense_weights("t")
    assert torch.equal(after[cut, 4:], before[cut, 4:])  # the dropped chunks were not trained this step
    assert not torch.equal(after[~cut, 4:], before[~cut, 4:])
    assert float(m.store.sketch.sum()) == 0.0  # truncated rows are not candidates for more chunks
    m.eval()
    assert bool((m(kjt).values()[:, 4:].abs().sum(1) > 0).all())  # evaluation uses every live chunk


def test_chunks_that_get_no_gradient_are_pruned_and_their_bytes_store_more_rows():
    """FIITED's premise in miniature: when a model reads only the first chunk of every row (the other dimensions
    get no gradient), resizes prune the unread chunks and the budget holds rows of one chunk -- about twice the
    rows that whole-row pruning holds in the same bytes."""
    tables = [EmbeddingBagConfig(name="t", embedding_dim=16, num_embeddings=4000, feature_names=["f"])]
    common = dict(memory_budget=0.08, warmup_steps=4, resize_interval=4, learning_rate=0.05)
    fiited = emb_opt.FiitedEmbeddingBagCollection(tables, chunk_size=4, **common)
    rowprune = emb_opt.RowPruningEmbeddingBagCollection(tables, **common)
    gen = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(40):
            ids = (torch.rand(512, generator=gen) * 4000).long()
            kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=ids, lengths=torch.ones(512, dtype=torch.int32))
            for m in (fiited, rowprune):
                m(kjt).values()[:, :4].pow(2).sum().backward()  # the model reads dimensions 0..3 only
    # after the last resize every stored row keeps its first chunk only (rows admitted since then are whole until
    # the next one: with room left, thresholds are 0), and one-chunk rows cost 45 bytes against 93 for whole ones
    last, baseline = fiited.telemetry[-1], rowprune.telemetry[-1]
    assert last["rows_by_chunks"]["t"][1:] == [0, 0, 0] and last["live_rows"] == last["live_chunks"]
    assert last["live_rows"] > 1.8 * baseline["live_rows"]
    assert fiited.memory_bytes() <= fiited.budget_bytes and rowprune.memory_bytes() <= rowprune.budget_bytes


def test_torch_compile_of_a_dlrm_with_fiited_equals_eager():
    # the collection's data-dependent step runs eagerly between the compiled graphs around it (torch.compile's
    # graph break); the compiled model trains exactly as the eager one: outputs, dense gradients, trained tables
    tables = small_tables(dim=8)

    def model() -> DLRM:
        torch.manual_seed(0)
        ebc = emb_opt.FiitedEmbeddingBagCollection(tables, 0.5, chunk_size=4, warmup_steps=1, resize_interval=1)
        return DLRM(embedding_bag_collection=ebc, dense_in_features=3, dense_arch_layer_sizes=[8],
                    over_arch_layer_sizes=[4, 1])

    eager, compiled = model(), model()
    run = torch.compile(compiled)
    for step in range(3):
        dense = torch.randn(6, 3, generator=torch.Generator().manual_seed(step))
        a, b = eager(dense, random_kjt(step)), run(dense, random_kjt(step))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        a.sum().backward()
        b.sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name)
    fiited = [m.sparse_arch.embedding_bag_collection for m in (eager, compiled)]
    assert len(fiited[0].telemetry) == len(fiited[1].telemetry) == 2
    for t in ("t0", "t1"):
        torch.testing.assert_close(fiited[0].to_dense_weights(t), fiited[1].to_dense_weights(t), rtol=0, atol=0)
