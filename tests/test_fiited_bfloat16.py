"""A FIITED collection whose chunk pool is bfloat16 (``FiitedConfig.weight_dtype="bfloat16"``): the budget buys more
rows for the same bytes and the report counts them at 2 bytes a weight; it trains as float32 does (stochastic
rounding keeps updates below half a bfloat16 step), its checkpoints carry the dtype (a float32 one is refused by
name, the module keeping its state), dtype casts of the model leave the pool alone, and the inference export and
fake tensors read it. The kernels themselves: tests/test_kernels_bfloat16_pool.py.
"""
import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

import emb_opt
from emb_opt import FiitedConfig, FiitedEmbeddingBagCollection
from emb_opt.budget import slot_bytes

ROWS, DIM = 3000, 32


def tables():
    return [EmbeddingBagConfig(name="t0", embedding_dim=DIM, num_embeddings=ROWS, feature_names=["f0"]),
            EmbeddingBagConfig(name="t1", embedding_dim=DIM, num_embeddings=ROWS, feature_names=["f1"])]


def collection(weight_dtype="bfloat16", budget=0.1, **options):
    options = dict(dict(warmup_steps=15, resize_interval=15, learning_rate=0.05), **options)
    return FiitedEmbeddingBagCollection(tables(), memory_budget=budget, weight_dtype=weight_dtype, **options)


def batch(seed, size=128):
    gen = torch.Generator().manual_seed(seed)
    ids = (torch.rand(2 * size, generator=gen) ** 3 * ROWS).long()  # skewed: some rows hot
    return KeyedJaggedTensor.from_lengths_sync(["f0", "f1"], ids, torch.ones(2 * size, dtype=torch.int32))


def target(kjt):
    """A label each row can learn on its own: whether either id is odd."""
    ids = kjt.values().view(2, -1)
    return ((ids[0] % 2) | (ids[1] % 2)).float()


def train(m, steps, seed=0):
    head = torch.nn.Linear(2 * DIM, 1)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(steps):
            kjt = batch(seed * 1000 + step)
            logits = head(m(kjt).values()).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target(kjt))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses


def test_the_budget_buys_more_rows_and_the_report_counts_two_bytes_a_weight():
    half, single = collection("bfloat16"), collection("float32")
    assert half.store.pool_weights.dtype == torch.bfloat16 and single.store.pool_weights.dtype == torch.float32
    assert slot_bytes(half.config) == slot_bytes(single.config) - 2 * half.config.chunk_size
    assert half.store.plan.max_rows > 1.5 * single.store.plan.max_rows
    train(half, 40), train(single, 40)
    for m in (half, single):
        assert m.memory_bytes() <= m.budget_bytes
        report = emb_opt.memory_report(m)
        assert int(report.loc[report["table"] == "TOTAL", "total_bytes"].iloc[-1]) == m.memory_bytes()
    assert half.store.allocated_bytes()["weights"] == 2 * half.store.pool_weights.numel()
    assert half.store.num_live > 1.3 * single.store.num_live  # the same bytes hold more chunks


def test_it_trains_like_the_float32_pool():
    single, half = train(collection("float32", budget=1.0), 150), train(collection("bfloat16", budget=1.0), 150)
    assert sum(half[-20:]) / 20 < 0.8 * sum(half[:20]) / 20  # it learns
    assert abs(sum(half[-20:]) - sum(single[-20:])) / 20 < 0.05


def test_updates_smaller_than_half_a_step_are_not_lost():
    # lr so small that every update is far below half a bfloat16 step of the weights: round-to-nearest would
    # store the initial values again and again; stochastic rounding moves them by the float32 sum in expectation
    m = collection("bfloat16", budget=1.0, learning_rate=1e-4, optimizer="sgd")
    ref = collection("float32", budget=1.0, learning_rate=1e-4, optimizer="sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kjt = batch(1)
        for _ in range(40):
            for model in (m, ref):
                model(kjt).values().sum().backward()  # the same gradient (ones) every step
    w_half, w_single = m.to_dense_weights("t0"), ref.to_dense_weights("t0")
    start = collection("float32", budget=1.0)
    start(kjt)  # admits the batch's rows with their init values
    touched = w_single != start.to_dense_weights("t0")
    moved_single = (w_single - start.to_dense_weights("t0"))[touched]
    moved_half = (w_half - start.to_dense_weights("t0"))[touched]
    assert float(moved_single.abs().mean()) > 0
    torch.testing.assert_close(moved_half.mean(), moved_single.mean(), rtol=0.1, atol=0)


def test_checkpoints_carry_the_dtype_and_a_float32_one_is_refused_by_name():
    m = collection()
    train(m, 20)
    copy = collection()
    copy.load_state_dict(m.state_dict())
    m.eval(), copy.eval()
    kjt = batch(99)
    torch.testing.assert_close(copy(kjt).values(), m(kjt).values(), rtol=0, atol=0)
    single = collection("float32")
    train(single, 20)
    before = m.state_dict()["store.pool_weights"].clone()
    with pytest.raises(RuntimeError, match="weight_dtype 'float32' \\(this module: 'bfloat16'\\)"):
        m.load_state_dict(single.state_dict())
    assert torch.equal(m.state_dict()["store.pool_weights"], before)
    forged = m.state_dict()
    forged["store.pool_weights"] = forged["store.pool_weights"].float()
    with pytest.raises(RuntimeError, match="pool_weights: expected a torch.bfloat16 tensor, got torch.float32"):
        copy.load_state_dict(forged)


def test_casts_leave_the_pool_and_the_export_reads_it():
    m = collection()
    train(m, 20)
    m.eval()
    kjt = batch(5)
    want = m(kjt).values()
    for cast in (lambda x: x.float(), lambda x: x.double(), lambda x: x.bfloat16(), lambda x: x.half()):
        cast(m)
        assert m.store.pool_weights.dtype == torch.bfloat16
        assert m.store.slot_utility.dtype == torch.float32 and m.store.sketch.dtype == torch.float32
    m.float()
    torch.testing.assert_close(m(kjt).values(), want, rtol=0, atol=0)
    inference = emb_opt.export_inference(m)
    assert inference.store.pool_weights.dtype == torch.bfloat16
    torch.testing.assert_close(inference(kjt).values(), want, rtol=0, atol=0)
    again = emb_opt.export_inference(m)
    again.load_state_dict(inference.state_dict())


def test_fake_tensors_trace_a_bfloat16_pool_to_a_float32_output():
    m = collection()
    train(m, 5)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        pool = mode.from_tensor(m.store.pool_weights)
        out = torch.ops.emb_opt.chunk_bag_forward(pool, torch.zeros(4, 2, dtype=torch.int32),
                                                  torch.zeros(4, dtype=torch.int32), torch.arange(5),
                                                  None, torch.zeros(1, dtype=torch.int32),
                                                  torch.tensor([2], dtype=torch.int32), torch.zeros(1, dtype=torch.int64),
                                                  4, DIM, 0)
    assert out.dtype == torch.float32 and tuple(out.shape) == (4, DIM)


@pytest.mark.parametrize("value, ok", [("bfloat16", True), (torch.bfloat16, True), ("float32", True),
                                       ("float16", False), ("int8", False)])
def test_weight_dtype_is_validated(value, ok):
    if ok:
        assert FiitedConfig(weight_dtype=value).weight_torch_dtype in (torch.bfloat16, torch.float32)
    else:
        with pytest.raises(ValueError, match="weight_dtype must be one of \\['bfloat16', 'float32'\\]"):
            FiitedConfig(weight_dtype=value)
