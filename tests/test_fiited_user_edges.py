"""What a user runs into around the FIITED module: refused checkpoints that leave the module intact, model-wide
dtype casts, convert() on tables of different sizes, malformed KJT lengths, numpy budgets, and the small
helpers' argument errors. Each case was found by driving the public API as a user would."""
import copy
import warnings

import numpy as np
import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
from torchrec.models.dlrm import DLRM

import emb_opt
from emb_opt.convert import convert
from tests.fiited_helpers import random_kjt, small_tables


def trained(**options) -> emb_opt.FiitedEmbeddingBagCollection:
    m = emb_opt.FiitedEmbeddingBagCollection(small_tables(), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(3):
            m(random_kjt(step)).values().pow(2).sum().backward()
    return m


def store_tensors(m):
    return {k: v.clone() for k, v in m.store.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize(
    "saved, target, match",
    [
        (dict(optimizer="rowwise_adagrad"), dict(optimizer="adagrad"), r"optimizer 'rowwise_adagrad' \(this module: 'adagrad'\)"),
        (dict(optimizer="rowwise_adagrad"), dict(optimizer="sgd"), r"optimizer 'rowwise_adagrad' \(this module: 'sgd'\)"),
        (dict(memory_budget=20000), dict(memory_budget=8000), r"budget_bytes 20000 \(this module: 8000\)"),
    ],
)
def test_checkpoint_of_other_settings_is_refused_and_the_module_keeps_its_state(saved, target, match):
    options = dict(memory_budget=20000, chunk_size=4)
    source = trained(**{**options, **saved})
    module = trained(**{**options, **target})
    before = store_tensors(module)
    with pytest.raises(RuntimeError, match=match):
        module.load_state_dict(source.state_dict())
    after = store_tensors(module)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    module(random_kjt(9)).values().sum().backward()  # still trains


def test_store_checks_name_the_problem_without_the_collection_header():
    # a checkpoint without the collection's self-description (e.g. a hand-made one) is checked by the store
    source = trained(memory_budget=20000, chunk_size=4)
    module = trained(memory_budget=8000, chunk_size=4)
    checkpoint = {k: v for k, v in source.state_dict().items() if k != "_extra_state"}
    with pytest.raises(RuntimeError, match=r"store.sketch: the checkpoint's utility sketch is \(2, \d+\)"):
        module.load_state_dict(checkpoint, strict=False)
    source = trained(memory_budget=20000, chunk_size=4, optimizer="adagrad")
    module = trained(memory_budget=20000, chunk_size=4)
    checkpoint = {k: v for k, v in source.state_dict().items() if k != "_extra_state"}
    with pytest.raises(RuntimeError, match=r"store.pool_state: .* optimizer 'rowwise_adagrad' keeps 1"):
        module.load_state_dict(checkpoint, strict=False)


@pytest.mark.parametrize("saved,loading", [("rowwise_adagrad", "sgd"), ("sgd", "rowwise_adagrad"),
                                           ("adagrad", "sgd")])
def test_a_checkpoint_of_another_optimizer_is_refused_and_names_both_state_layouts(saved, loading):
    # row-wise Adagrad keeps its state per row (entry_state) and SGD none: the per-slot widths alone (0 and 0)
    # do not tell them apart
    source = trained(memory_budget=20000, chunk_size=4, optimizer=saved)
    module = trained(memory_budget=20000, chunk_size=4, optimizer=loading)
    before = store_tensors(module)
    checkpoint = {k: v for k, v in source.state_dict().items() if k != "_extra_state"}
    layout = {"rowwise_adagrad": "1 per row", "sgd": "none", "adagrad": "4 per chunk"}
    with pytest.raises(RuntimeError, match=rf"optimizer state \({layout[saved]}\) does not match: this module's "
                                           rf"optimizer '{loading}' keeps {layout[loading]}"):
        module.load_state_dict(checkpoint, strict=False)
    after = store_tensors(module)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("dropped", [("store.pool_state",), ("store.entry_state", "store.pool_state"),
                                     ("store.pool_weights",)])
def test_a_checkpoint_holding_part_of_a_store_is_refused_and_names_what_is_missing(dropped):
    # strict=False would otherwise load the rest, leaving arrays of two stores side by side
    source = trained(memory_budget=20000, chunk_size=4)
    module = trained(memory_budget=20000, chunk_size=4)
    before = store_tensors(module)
    checkpoint = {k: v for k, v in source.state_dict().items() if k not in dropped}
    with pytest.raises(RuntimeError, match=rf"{sorted(dropped)[-1]}.*not in the checkpoint.*loads whole or not at all"):
        module.load_state_dict(checkpoint, strict=False)
    after = store_tensors(module)
    assert all(torch.equal(before[k], after[k]) for k in before)
    module(random_kjt(9)).values().sum().backward()  # still trains


def test_the_report_tells_the_optimizer_of_a_checkpoint_without_the_collection_description():
    # the store describes itself; at chunk_size 1, Adagrad's [S, 1] per-slot state is not row-wise Adagrad's
    # (which keeps its float per row, in entry_state)
    for optimizer in ("adagrad", "rowwise_adagrad", "sgd"):
        m = emb_opt.FiitedEmbeddingBagCollection(small_tables(), memory_budget=20000, chunk_size=1, optimizer=optimizer)
        bare = {k: v for k, v in m.state_dict().items() if k != "_extra_state"}
        assert set(emb_opt.memory_report(bare)["optimizer"]) == {optimizer}


@pytest.mark.parametrize("optimizer,chunk_size,row_bytes", [("rowwise_adagrad", 16, 297), ("rowwise_adagrad", 64, 285),
                                                            ("adagrad", 16, 4 * (64 + 64 + 4) + 21), ("sgd", 16, 293)])
def test_a_whole_row_costs_its_slots_and_one_index_entry(optimizer, chunk_size, row_bytes):
    # D = 64: row-wise Adagrad's accumulator is paid once per row (at its entry), not once per chunk
    from emb_opt.budget import row_bytes as index_bytes, slot_bytes
    from emb_opt.config import FiitedConfig

    config = FiitedConfig(chunk_size=chunk_size, optimizer=optimizer)
    assert 64 // chunk_size * slot_bytes(config) + index_bytes(config) == row_bytes
    m = trained(memory_budget=20000, chunk_size=4, optimizer=optimizer)
    per_slot, per_row = {"rowwise_adagrad": (0, 1), "adagrad": (4, 0), "sgd": (0, 0)}[optimizer]
    assert m.store.pool_state.shape == (m.store.capacity, per_slot)
    assert m.store.entry_state.shape == (m.store.row_capacity, per_row)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_model_dtype_casts_keep_the_store_float32_and_cast_the_output(dtype):
    m = trained(memory_budget=20000, chunk_size=4)
    pool = m.store.pool_weights.clone()
    m.to(dtype)
    assert m.store.pool_weights.dtype == torch.float32 and torch.equal(m.store.pool_weights, pool)
    assert m.memory_bytes() <= m.budget_bytes
    m.eval()
    out = m(random_kjt(4)).values()
    assert out.dtype == dtype
    m.float()
    torch.testing.assert_close(out.float(), m(random_kjt(4)).values(), atol=1e-2, rtol=1e-2)


def test_dlrm_in_double_precision_trains():
    torch.manual_seed(0)
    tables = [EmbeddingBagConfig(name=f"t{i}", embedding_dim=8, num_embeddings=50, feature_names=[f"f{i}"]) for i in range(2)]
    fiited = emb_opt.FiitedEmbeddingBagCollection(tables, 0.5, chunk_size=4, warmup_steps=10**6)
    model = DLRM(embedding_bag_collection=fiited, dense_in_features=3, dense_arch_layer_sizes=[4, 8],
                 over_arch_layer_sizes=[4, 1]).double()
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1"], values=torch.tensor([5, 10, 3, 9, 1]), lengths=torch.tensor([2, 0, 1, 2]))
    pool_before = None
    for _ in range(2):
        logits = model(torch.randn(2, 3, dtype=torch.float64), kjt)
        assert logits.dtype == torch.float64
        logits.sum().backward()
        pool_before = fiited.store.pool_weights.clone() if pool_before is None else pool_before
    assert not torch.equal(pool_before, fiited.store.pool_weights)  # the fused optimizer stepped in float32


def test_convert_shares_the_budget_across_tables_of_different_sizes():
    torch.manual_seed(0)
    tables = [EmbeddingBagConfig(name="small", embedding_dim=16, num_embeddings=500, feature_names=["s"]),
              EmbeddingBagConfig(name="big", embedding_dim=16, num_embeddings=20000, feature_names=["b"])]
    model = torch.nn.Sequential()
    model.add_module("ebc", EmbeddingBagCollection(tables))  # TorchRec's init: scale sqrt(1/rows) per table
    with pytest.warns(RuntimeWarning, match="look untrained"):  # a fresh model, converted on purpose
        convert(model, 0.05, chunk_size=8)
    report = emb_opt.memory_report(model).set_index("table")
    small, big = int(report.loc["small", "live_rows"]), int(report.loc["big", "live_rows"])
    # ranked by raw norm the small table (init scale 6x larger) took every row and the big one ~1%
    assert 0 < small < 500 and big > 10 * small
    assert big / 20000 > 0.5 * small / 500


def test_convert_warns_when_a_limited_import_copies_untrained_weights():
    tables = [EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=1000, feature_names=["f"])]

    def model_with(scale: float) -> torch.nn.Module:
        model = torch.nn.Sequential()
        model.add_module("ebc", EmbeddingBagCollection(tables))
        with torch.no_grad():
            model.ebc.embedding_bags["t"].weight.mul_(scale)
        return model

    with pytest.warns(RuntimeWarning, match=r"table\(s\) \['t'\] .* look untrained; \d+ of 2000 chunks were imported.*"
                                            r"until the first resize \(step 50\)"):  # a pressure resize: the store is full
        convert(model_with(1.0), 0.1, chunk_size=4)
    with pytest.warns(RuntimeWarning, match=r"until the first resize \(step 1000\)"):  # no pressure resizes: the warm-up
        convert(model_with(1.0), 0.1, chunk_size=4, pressure_resize_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a learning rate given: no warning about the default either)
        convert(model_with(3.0), 0.1, chunk_size=4, learning_rate=0.05)  # values beyond the init range: trained
        convert(model_with(1.0), 0.1, chunk_size=4, learning_rate=0.05, copy_weights=False)
        convert(model_with(1.0), 10**6, chunk_size=4, learning_rate=0.05)  # everything fits: the import is exact


@pytest.mark.parametrize(
    "values, lengths, match",
    [
        ([1, 2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1], r"holds 7 ids but its lengths add up to 6: 1 id\(s\) belong to no bag"),
        ([1, 2, 3, 4], [1, 1, 1, 1, 1, 1], r"feature 'f1': .* add up to 6 ids by the end of this feature, but it holds only 4"),
        ([1], [1, 1, 1, 1, 1, 1], r"feature 'f0': .* add up to 2 ids by the end of this feature, but it holds only 1"),
    ],
)
def test_kjt_whose_lengths_do_not_match_its_ids_is_refused(values, lengths, match):
    m = emb_opt.FiitedEmbeddingBagCollection(small_tables(), 10**5, chunk_size=4)
    kjt = KeyedJaggedTensor(keys=["f0", "f2", "f1"], values=torch.tensor(values), lengths=torch.tensor(lengths))
    with pytest.raises(ValueError, match=match):
        m(kjt)


def test_numpy_budgets_are_accepted():
    a = emb_opt.FiitedEmbeddingBagCollection(small_tables(), np.int64(10**5), chunk_size=4)
    b = emb_opt.FiitedEmbeddingBagCollection(small_tables(), np.float64(0.5), chunk_size=4)
    assert a.budget_bytes == 10**5 and b.budget_bytes == int(0.5 * b.full_bytes)
    model = torch.nn.Sequential()
    model.add_module("ebc", EmbeddingBagCollection(small_tables()))
    convert(model, np.int64(10**5), chunk_size=4)
    assert model.ebc.budget_bytes == 10**5


def test_helper_argument_errors_name_the_problem():
    from hashing import random_hash
    from semantic_id import build_codes

    with pytest.raises(ValueError, match=r"seed must be an int that fits in int64"):
        random_hash(torch.arange(4), 10, seed=2**64)
    with pytest.raises(ValueError, match=r"num_buckets must be an int in \[1, 2\^63\), got 9223372036854775808"):
        random_hash(torch.arange(4), 2**63)
    with pytest.raises(ValueError, match=r"num_buckets must be an int in \[1, 2\^63\), got 7.5"):
        random_hash(torch.arange(4), 7.5)
    with pytest.raises(TypeError, match=r"got ndarray \(for a numpy array use torch.from_numpy"):
        build_codes(np.zeros((20, 4), dtype=np.float32), levels=2, codebook_size=4, method="rqkmeans")


def test_report_cli_rejects_an_unknown_optimizer_as_an_argument_error(capsys):
    from emb_opt.report import main

    with pytest.raises(SystemExit) as exit_info:
        main(["missing.pt", "--optimizer", "adam"])
    assert exit_info.value.code == 2
    assert "argument --optimizer: unsupported optimizer 'adam'" in capsys.readouterr().err


def test_rqvae_progress_bar_counts_epochs(monkeypatch):
    from semantic_id import rq_vae

    bars = []

    class RecordingBar:
        def __init__(self, *args, total=None, **kwargs):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setattr(rq_vae, "tqdm", RecordingBar)
    model = rq_vae.RQVAE(input_dim=4, levels=2, codebook_size=4, latent_dim=3, hidden_dims=[8])
    model.fit(torch.randn(64, 4), epochs=3, batch_size=32, warmup_epochs=1, init_sample=64)
    assert [(b.total, b.n) for b in bars] == [(3, 3)]


def test_memory_report_tells_row_pruning_from_fiited(tmp_path):
    model = torch.nn.Module()
    model.fiited = emb_opt.FiitedEmbeddingBagCollection(small_tables(), 10**5, chunk_size=4)
    model.rows = emb_opt.RowPruningEmbeddingBagCollection(small_tables(), 10**5)
    for module in (model.fiited, model.rows):
        module(random_kjt(0)).values().sum().backward()
    from_module = emb_opt.memory_report(model)
    from_state = emb_opt.memory_report(model.state_dict())
    for report in (from_module, from_state):
        kinds = dict(zip(report["module"], report["kind"]))
        assert kinds == {"fiited": "fiited", "rows": "rowprune", "(all)": "mixed"}


@pytest.mark.parametrize("pooling", [PoolingType.SUM, PoolingType.MEAN])
def test_eval_mode_gives_per_sample_weights_their_gradient_and_trains_nothing(pooling):
    tables = small_tables(dim=8)
    for t in tables:
        t.pooling = pooling
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 0.7, chunk_size=4, is_weighted=True, warmup_steps=3, resize_interval=2,
                                             learning_rate=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(6):  # some rows pruned to fewer chunks, some not stored at all
            m(random_kjt(step, batch_size=16, weighted=True)).values().pow(2).sum().backward()
    m.eval()
    kjt = random_kjt(99, batch_size=16, weighted=True)
    weights = kjt.weights().clone().requires_grad_(True)
    kjt = KeyedJaggedTensor(keys=kjt.keys(), values=kjt.values(), lengths=kjt.lengths(), weights=weights)
    state = copy.deepcopy(m.state_dict())
    out = m(kjt)
    probe = torch.randn(out.values().shape, generator=torch.Generator().manual_seed(0))
    (out.values() * probe).sum().backward()
    got = weights.grad.clone()
    # the reference: the same lookup through torch's embedding_bag on the dense view of the tables
    weights.grad = None
    dense = {t.name: m.to_dense_weights(t.name) for t in tables}
    mode = "sum" if pooling == PoolingType.SUM else "mean"
    parts = []
    for key, feature in zip(kjt.keys(), kjt.to_dict().values()):
        table = next(t.name for t in tables if key in t.feature_names)
        lengths = feature.lengths()
        pooled = torch.nn.functional.embedding_bag(feature.values(), dense[table], torch.cumsum(lengths, 0) - lengths,
                                                   mode="sum", per_sample_weights=feature.weights())
        if mode == "mean":
            pooled = pooled / lengths.clamp(min=1).unsqueeze(1)
        parts.append(pooled)
    (torch.cat(parts, 1) * probe).sum().backward()
    torch.testing.assert_close(got, weights.grad, rtol=1e-5, atol=1e-6)
    assert bool((got != 0).any())
    after = m.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items() if isinstance(v, torch.Tensor))  # nothing trained


def _holes_and_free_slots_are_zero(store) -> bool:
    """Every pool slot outside a live row's run is zero: nothing wrote into a slot a row had left."""
    in_run = torch.zeros(store.capacity, dtype=torch.bool)
    entries, _, counts = store.live_rows()
    for first, count in zip(store.entry_first[entries].tolist(), counts.tolist()):
        in_run[first : first + count] = True
    return not bool(store.pool_weights[~in_run].any())


def test_two_forwards_before_one_backward_lose_no_update():
    """A collection called twice per step (two towers, a shared collection): the second forward must not move
    rows whose slots the first forward's backward will write to."""
    tables = small_tables(dim=64, rows=(300, 200))
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 0.1, chunk_size=4, optimizer="sgd", learning_rate=0.1, warmup_steps=3,
                                             resize_interval=4, pressure_resize_steps=2, position_exponent=1.0,
                                             reserve_fraction=0.3, initial_capacity=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(25):
            a = m(random_kjt(2 * step, batch_size=32, rows=(300, 200), max_len=4))
            b = m(random_kjt(2 * step + 1, batch_size=32, rows=(300, 200), max_len=4))
            (a.values().sum() + b.values().sum()).backward()
            assert _holes_and_free_slots_are_zero(m.store), f"step {step}: an update went to a slot its row had left"
    assert m.store.counter_dict()["relocated_rows"] > 0  # rows did grow, in the first forwards of steps


def test_resize_and_load_between_a_forward_and_its_backward_are_refused():
    m = emb_opt.FiitedEmbeddingBagCollection(small_tables(), 10**5, chunk_size=4)
    out = m(random_kjt(0))
    saved = copy.deepcopy(m.state_dict())
    with pytest.raises(RuntimeError, match=r"resize_now\(\): 1 forward\(s\) of this collection still wait for their backward"):
        m.resize_now()
    with pytest.raises(RuntimeError, match="still wait for their backward"):
        m.load_state_dict(saved)
    out.values().sum().backward()
    m.resize_now()  # after the backward both are fine
    m.load_state_dict(saved)


def test_a_skipped_backward_does_not_stop_resizing():
    tables = small_tables()
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 10**5, chunk_size=4, warmup_steps=2, resize_interval=2)
    for step in range(10):
        out = m(random_kjt(step))
        if step != 3:  # e.g. a NaN loss skipped: the output (and its graph) is dropped
            out.values().sum().backward()
        del out
    assert m.store.pending_backward == 0 and len(m.telemetry) == 4  # steps 2, 4, 6, 8
    out = m(random_kjt(10))
    assert m.store.pending_backward == 1 and copy.deepcopy(m).store.pending_backward == 0  # a copy holds no graph of m's


@pytest.mark.parametrize("budget", [375, 450, 575, 800])
def test_a_budget_just_above_the_minimum_stores_what_fits(budget):
    """One row of a 64-dim table in chunks of 4 (16 chunks) under a few hundred bytes: the row gets the prefix the
    budget holds, not nothing."""
    tables = [EmbeddingBagConfig(name="t", embedding_dim=64, num_embeddings=100, feature_names=["f"])]
    m = emb_opt.FiitedEmbeddingBagCollection(tables, budget, chunk_size=4, warmup_steps=10**6)
    plan = m.store.plan
    fitting = max(k for k in range(1, 17) if plan.fits(k, 1))
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([7]), lengths=torch.tensor([1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = m(kjt).values()
    assert int(m.store.active_chunks(0, torch.tensor([7]))) == fitting
    assert bool(out[0, : 4 * fitting].ne(0).all()) and not bool(out[0, 4 * fitting :].any())
    assert m.memory_bytes() <= m.budget_bytes


def test_tables_may_mix_sum_and_mean_pooling_as_in_an_embedding_bag_collection():
    # t0 (features f0, f2) sums, t1 (f1) averages: the same outputs, per-sample-weight gradients and training as
    # two single-pooling collections of the same tables (same hashed init, everything stored, no resize)
    tables = small_tables(dim=8)
    tables[1].pooling = PoolingType.MEAN
    options = dict(chunk_size=4, is_weighted=True, warmup_steps=100, learning_rate=0.1)
    mixed = emb_opt.FiitedEmbeddingBagCollection(tables, 10**6, **options)
    sums = emb_opt.FiitedEmbeddingBagCollection(tables[:1], 10**6, **options)
    means = emb_opt.FiitedEmbeddingBagCollection(tables[1:], 10**6, **options)
    for step in range(4):
        kjt = random_kjt(step, batch_size=8, weighted=True)
        weights = kjt.weights().clone().requires_grad_(True)
        kjt = KeyedJaggedTensor(keys=kjt.keys(), values=kjt.values(), lengths=kjt.lengths(), weights=weights)
        parts = kjt.to_dict()
        out = mixed(kjt).to_dict()
        ref = {**sums(KeyedJaggedTensor.from_jt_dict({k: parts[k] for k in ("f0", "f2")})).to_dict(),
               **means(KeyedJaggedTensor.from_jt_dict({"f1": parts["f1"]})).to_dict()}
        for key in ("f0", "f2", "f1"):
            torch.testing.assert_close(out[key], ref[key])
        probe = torch.randn(8, 24, generator=torch.Generator().manual_seed(step))
        got = torch.autograd.grad((torch.cat([out[k] for k in ("f0", "f2", "f1")], 1) * probe).sum(), weights)[0]
        expected = torch.autograd.grad((torch.cat([ref[k] for k in ("f0", "f2", "f1")], 1) * probe).sum(), weights)[0]
        torch.testing.assert_close(got, expected)
    for name, single in (("t0", sums), ("t1", means)):
        torch.testing.assert_close(mixed.to_dense_weights(name), single.to_dense_weights(name))
    assert not torch.equal(mixed.to_dense_weights("t1"), emb_opt.FiitedEmbeddingBagCollection(tables, 10**6, **options).to_dense_weights("t1"))
    lengths = kjt.lengths().reshape(3, 8)[2]
    assert bool((lengths > 1).any())  # some mean bags really average more than one row


def test_a_pooling_the_kernels_do_not_have_is_refused_naming_the_table():
    tables = small_tables()
    tables[1].pooling = PoolingType.NONE
    with pytest.raises(ValueError, match="table 't1': pooling must be SUM or MEAN, got NONE"):
        emb_opt.FiitedEmbeddingBagCollection(tables, 1.0, chunk_size=4)


@pytest.mark.parametrize("names", [(None, None), (None, ["fb"]), (["fa"], None)])
def test_mixed_pooling_follows_each_table_also_when_its_feature_is_named_after_it(names):
    # a table without feature_names is read by one feature of its own name; the MEAN division must find it
    tables = [EmbeddingBagConfig(name="a", num_embeddings=10, embedding_dim=8, feature_names=names[0] or [],
                                 pooling=PoolingType.SUM),
              EmbeddingBagConfig(name="b", num_embeddings=10, embedding_dim=8, feature_names=names[1] or [],
                                 pooling=PoolingType.MEAN)]
    m = emb_opt.FiitedEmbeddingBagCollection(tables, 10**6, chunk_size=4, warmup_steps=100)
    keys = [(names[0] or ["a"])[0], (names[1] or ["b"])[0]]
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.tensor([1, 2, 3, 4, 5]), lengths=torch.tensor([2, 0, 3, 0]))
    out = m(kjt).values()
    a, b = m.to_dense_weights("a"), m.to_dense_weights("b")  # the values the forward read (its update comes in backward)
    torch.testing.assert_close(out[0, :8], a[1] + a[2])
    torch.testing.assert_close(out[0, 8:], (b[3] + b[4] + b[5]) / 3)
    assert not bool(out[1].any())
