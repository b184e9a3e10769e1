"""Fallback rows (ids without chunks read a shared trained row of their table) and the doorkeeper (a row without
chunks is admitted from its second access), held to plain-PyTorch references on random batches."""
import warnings

import pytest
import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.modules.embedding_configs import PoolingType

import emb_opt
from cuda_ext.layout import pack_row_key
from cuda_ext.reference import mix_hash
from emb_opt.fallback_rows import _HASH_SEED

TABLES = [(1000, 8, ["f0", "f1"]), (60, 12, ["f2"])]  # rows, dim, features (f0, f1 share table 0)


def tables(pooling=PoolingType.SUM):
    return [EmbeddingBagConfig(name=f"t{i}", embedding_dim=d, num_embeddings=n, feature_names=f, pooling=pooling)
            for i, (n, d, f) in enumerate(TABLES)]


def collection(fallback_rows=3, pooling=PoolingType.SUM, **options):
    options = {"chunk_size": 4, "learning_rate": 0.1, "warmup_steps": 4, "resize_interval": 4, **options}
    return emb_opt.FiitedEmbeddingBagCollection(tables(pooling), 0.03, fallback_rows=fallback_rows, **options)


def batch(seed, size=16, weighted=False):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (3 * size,), generator=g)
    rows = [1000] * 2 * size + [60] * size
    values = torch.cat([torch.randint(0, r, (int(n),), generator=g) for r, n in zip(rows, lengths)])
    weights = torch.rand(values.numel(), generator=g) + 0.5 if weighted else None
    return KeyedJaggedTensor.from_lengths_sync(["f0", "f1", "f2"], values, lengths.to(torch.int32), weights)


def quiet_train(m, steps, weighted=False, start=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(start, start + steps):
            m(batch(step, weighted=weighted)).values().pow(2).sum().backward()


def reference_fallback(m, kjt, weights=None):
    """[B, out_dim]: the fallback values each bag should get, from the store's index and the rows' formula."""
    feature_table, dims, cols = [0, 0, 1], [8, 12], [0, 8, 16]  # table of each feature, table dims, columns
    size, F = kjt.stride(), m.config.fallback_rows
    out = torch.zeros(size, 28)
    offsets, values = kjt.offsets(), kjt.values()
    mean = m.embedding_bag_configs()[0].pooling == PoolingType.MEAN
    for bag in range(3 * size):
        f, sample = bag // size, bag % size
        start, end = int(offsets[bag]), int(offsets[bag + 1])
        for i in range(start, end):
            t = feature_table[f]
            key = pack_row_key(torch.tensor([t]), values[i:i + 1])
            _, slots = m.store.lookup_rows(key)
            if int(slots[0, 0]) >= 0:
                continue  # a row that holds a chunk reads only its chunks
            row = t * F + int(mix_hash(key, F, _HASH_SEED))
            scale = (1.0 if weights is None else float(weights[i])) / ((end - start) if mean else 1)
            out[sample, cols[f]:cols[f] + dims[t]] += scale * m.fallback.weights[row, :dims[t]]
    return out


def store_only(m, kjt):
    saved = m.fallback
    m.fallback = None
    try:
        return m(kjt).values()
    finally:
        m.fallback = saved


@pytest.mark.parametrize("pooling", [PoolingType.SUM, PoolingType.MEAN])
@pytest.mark.parametrize("weighted", [False, True])
def test_ids_without_chunks_read_their_fallback_row(pooling, weighted):
    m = collection(pooling=pooling, is_weighted=weighted)
    quiet_train(m, 9, weighted)
    assert m.fallback.weights.abs().sum() > 0  # trained, so the comparison is not of zeros
    m.eval()
    kjt = batch(100, weighted=weighted)
    expected = store_only(m, kjt) + reference_fallback(m, kjt, kjt.weights_or_none())
    unstored = (m.store.lookup_rows(pack_row_key(torch.zeros(1000, dtype=torch.int64), torch.arange(1000)))[1][:, 0]
                < 0).sum()
    assert unstored > 100  # the budget leaves most rows of the big table without chunks
    torch.testing.assert_close(m(kjt).values(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise_adagrad"])
def test_a_training_step_updates_the_fallback_rows_as_its_optimizer_does(optimizer):
    m = collection(optimizer=optimizer)
    quiet_train(m, 6)
    kjt = batch(200)
    before, state = m.fallback.weights.clone(), m.fallback.state.clone()
    # the gradient each fallback row gets: d loss / d row = sum over its occurrences of grad_out at their columns
    probe = torch.zeros_like(m.fallback.weights, requires_grad=True)
    with torch.no_grad():
        m.fallback.weights.zero_()
    m.eval()
    grad_out = torch.randn(kjt.stride(), 28)
    with torch.enable_grad():
        saved = m.fallback.weights
        m.fallback.weights = probe  # the eval path is plain torch ops: autograd gives the rows' gradient
        (m(kjt).values() * grad_out).sum().backward()
        m.fallback.weights = saved
    grad = probe.grad
    with torch.no_grad():
        m.fallback.weights.copy_(before)
    m.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (m(kjt).values() * grad_out).sum().backward()
    touched = grad.abs().sum(1) > 0
    assert touched.any()
    lr, eps = 0.1, m.config.eps
    if optimizer == "sgd":
        expected = before - lr * grad
    elif optimizer == "adagrad":
        acc = state + grad * grad
        expected = torch.where(touched.unsqueeze(1), before - lr * grad / (acc.sqrt() + eps), before)
    else:
        dims = torch.tensor([8] * 3 + [12] * 3, dtype=torch.float32)
        acc = state[:, 0] + (grad * grad).sum(1) / dims
        expected = torch.where(touched.unsqueeze(1), before - lr * grad / (acc.sqrt().unsqueeze(1) + eps), before)
    torch.testing.assert_close(m.fallback.weights, expected, rtol=1e-5, atol=1e-6)
    assert (m.fallback.weights[0:3, 8:] == 0).all()  # columns past table 0's dimension stay zero


def test_per_sample_weights_get_the_fallback_rows_part_of_their_gradient():
    m = collection(is_weighted=True)
    quiet_train(m, 9, weighted=True)
    kjt = batch(300, weighted=True)
    grad_out = torch.randn(kjt.stride(), 28)

    def weight_grad(fallback_on: bool) -> torch.Tensor:
        weights = kjt.weights().clone().requires_grad_(True)
        w_kjt = KeyedJaggedTensor.from_lengths_sync(kjt.keys(), kjt.values(), kjt.lengths(), weights)
        saved = m.fallback
        m.fallback = saved if fallback_on else None
        try:
            (m(w_kjt).values() * grad_out).sum().backward()
        finally:
            m.fallback = saved
        return weights.grad

    m.eval()  # nothing trains: the store-only and the total gradient differ by the fallback part alone
    store_part, total = weight_grad(False), weight_grad(True)
    m.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trained_total = weight_grad(True)  # the training step's weight gradient, read before its update
    assert not torch.allclose(store_part, total)
    torch.testing.assert_close(trained_total, total, rtol=1e-4, atol=1e-5)


def test_the_budget_pays_for_the_fallback_rows_and_the_report_counts_them():
    small, with_rows = collection(fallback_rows=0), collection(fallback_rows=4)
    quiet_train(small, 9)
    quiet_train(with_rows, 9)
    for m in (small, with_rows):
        assert m.memory_bytes() <= m.budget_bytes
        report = emb_opt.memory_report(m)
        assert int(report.loc[report["table"] == "TOTAL", "total_bytes"].iloc[-1]) == m.memory_bytes()
    fallback_bytes = sum(b.numel() * b.element_size() for b in with_rows.fallback.buffers())
    assert fallback_bytes == 2 * 4 * 12 * 4 + 2 * 4 * 4 + 2 * 8  # weights, row-wise state, table dims
    assert with_rows.store.plan.available_bytes == small.store.plan.available_bytes - fallback_bytes


def test_fallback_rows_are_saved_loaded_and_exported():
    m = collection()
    quiet_train(m, 9)
    copy = collection()
    copy.load_state_dict(m.state_dict())
    m.eval(), copy.eval()
    kjt = batch(400)
    torch.testing.assert_close(copy(kjt).values(), m(kjt).values(), rtol=0, atol=0)
    inference = emb_opt.export_inference(m)
    torch.testing.assert_close(inference(kjt).values(), m(kjt).values(), rtol=0, atol=0)
    assert inference.fallback.state.numel() == 0  # no optimizer state in the inference copy
    state = m.state_dict()
    state["fallback.weights"] = state["fallback.weights"].clone()
    state["fallback.weights"][1, 2] = float("nan")
    with pytest.raises(RuntimeError, match="fallback.weights holds NaN or inf"):
        copy.load_state_dict(state)
    torch.testing.assert_close(copy(kjt).values(), m(kjt).values(), rtol=0, atol=0)


def test_the_doorkeeper_admits_a_row_from_its_second_access():
    m = collection(fallback_rows=0, doorkeeper=True, warmup_steps=1000)
    one = KeyedJaggedTensor.from_lengths_sync(["f0", "f1", "f2"], torch.tensor([7, 7, 5]),
                                              torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.int32))
    key = pack_row_key(torch.tensor([0]), torch.tensor([7]))
    m(one).values().pow(2).sum().backward()  # all zeros: a zero gradient leaves no evidence
    assert int(m.store.lookup_rows(key)[1][0, 0]) < 0
    (m(one).values() + 1).pow(2).sum().backward()  # first access with a gradient: evidence, no chunks
    assert int(m.store.lookup_rows(key)[1][0, 0]) < 0
    m(one).values().sum().backward()  # the second: admitted
    assert int(m.store.lookup_rows(key)[1][0, 0]) >= 0
    plain = collection(fallback_rows=0, warmup_steps=1000)
    plain(one).values().sum().backward()
    assert int(plain.store.lookup_rows(key)[1][0, 0]) >= 0  # without it: first touch


def test_with_fallback_init_a_new_row_starts_from_the_fallback_row_it_read():
    def first_access_then_admission(m):
        quiet_train(m, 6)  # with the doorkeeper, first accesses read (and train) the fallback rows
        unseen = next(i for i in range(1000) if int(m.store.lookup_rows(key_of(i))[1][0, 0]) < 0
                      and float(m.store.sketch_estimate(key_of(i))[0]) == 0)
        one = KeyedJaggedTensor.from_lengths_sync(["f0", "f1", "f2"], torch.tensor([unseen]),
                                                  torch.tensor([1, 0, 0], dtype=torch.int32))
        (m(one).values() + 1).pow(2).sum().backward()  # its first access: evidence, no chunks
        assert int(m.store.lookup_rows(key_of(unseen))[1][0, 0]) < 0
        m.eval()
        before = m(one).values()  # it reads its fallback row
        m.train()
        admitted = m(one).values()  # its second access: admitted
        slots = m.store.lookup_rows(key_of(unseen))[1][0, :2]
        assert bool((slots >= 0).all())
        row = int(mix_hash(key_of(unseen), 3, _HASH_SEED))
        return before, admitted, m.store.pool_weights[slots.long()].reshape(-1), m.fallback.weights[row, :8].clone()

    def key_of(i):
        return pack_row_key(torch.tensor([0]), torch.tensor([i]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        before, admitted, chunks, fallback = first_access_then_admission(
            collection(fallback_rows=3, fallback_init=True, doorkeeper=True, warmup_steps=1000))
        assert fallback.abs().sum() > 0
        torch.testing.assert_close(chunks, fallback, rtol=0, atol=0)
        torch.testing.assert_close(admitted, before, rtol=0, atol=0)  # the output does not jump at admission
        before, admitted, chunks, fallback = first_access_then_admission(
            collection(fallback_rows=3, doorkeeper=True, warmup_steps=1000))
        assert not torch.equal(chunks, fallback) and not torch.equal(admitted, before)  # without: its hashed init


def test_the_doorkeeper_when_full_admits_on_first_touch_while_every_request_fits():
    # one wide table: a store of ~200 whole rows and a sketch wide enough that most untouched ids read 0 in it
    table = [EmbeddingBagConfig(name="t0", embedding_dim=64, num_embeddings=100_000, feature_names=["f0"])]

    def fresh_ids(m, n):  # ids neither stored nor on record in the sketch
        ids = torch.arange(0, 100_000, 7)
        keys = pack_row_key(torch.zeros_like(ids), ids)
        fresh = ids[(m.store.lookup_rows(keys)[1][:, 0] < 0) & (m.store.sketch_estimate(keys) == 0)]
        assert fresh.numel() >= n
        return fresh[:n]

    def first_access(m, ids):
        kjt = KeyedJaggedTensor.from_lengths_sync(["f0"], ids, torch.tensor([ids.numel()], dtype=torch.int32))
        stored = m.store.num_rows
        (m(kjt).values() + 1).pow(2).sum().backward()
        return m.store.num_rows - stored

    def collection_of(**options):
        return emb_opt.FiitedEmbeddingBagCollection(table, 60_000, chunk_size=64, learning_rate=0.1,
                                                    warmup_steps=1000, **options)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain, always, when_full = (collection_of(), collection_of(doorkeeper=True),
                                    collection_of(doorkeeper=True, doorkeeper_when_full=True))
        room = plain.store.plan.max_rows
        assert 100 < room < 400
        crowd = fresh_ids(plain, 400)  # more first accesses than the store holds: they do not all fit
        assert first_access(plain, crowd) > 100  # first touch fills the store
        assert first_access(always, crowd) == 0
        assert first_access(when_full, crowd) == 0  # the doorkeeper applies: the room waits for proven rows
        one = fresh_ids(when_full, 1)
        assert first_access(always, one) == 0
        assert first_access(when_full, one) == 1  # every request fits: first touch admits


def test_fallback_rows_that_leave_no_room_for_the_store_are_named():
    with pytest.raises(ValueError, match=r"fallback_rows=200 takes \d+ bytes \(200 rows per table\)"):
        collection(fallback_rows=200)


@pytest.mark.parametrize("options, match", [
    (dict(fallback_rows=-1), r"fallback_rows must be in \[0, 2\^20\]"),
    (dict(fallback_rows=1.5), "fallback_rows must be an int"),
    (dict(doorkeeper=1), "doorkeeper must be a bool"),
    (dict(fallback_init=1), "fallback_init must be a bool"),
    (dict(doorkeeper_when_full=True), "doorkeeper_when_full=True says when the doorkeeper applies: it needs "
                                      "doorkeeper=True"),
    (dict(fallback_rows=0, fallback_init=True), "fallback_init=True starts new rows from their fallback rows: it "
                                                "needs fallback_rows > 0"),
])
def test_bad_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        collection(**options)
