"""FIITED collections whose chunk pool is bfloat16 or int8 (``FiitedConfig.weight_dtype``): the budget buys more
rows for the same bytes and the report counts them at 2 bytes a weight (int8: 1, and a 4-byte scale per chunk);
they train as float32 does (stochastic rounding keeps updates below half a step of the stored type), their
checkpoints carry the dtype (a float32 one is refused by name, the module keeping its state), dtype casts of the
model leave the pool alone, and the inference export and fake tensors read it. The kernels themselves:
tests/test_kernels_low_precision_pools.py.
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
LOW = ["bfloat16", "int8"]
TORCH_DTYPE = {"bfloat16": torch.bfloat16, "int8": torch.int8}


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


@pytest.mark.parametrize("dtype, saved_per_chunk, more_rows", [("bfloat16", 2 * 16, 1.5), ("int8", 3 * 16 - 4, 1.8)])
def test_the_budget_buys_more_rows_and_the_report_counts_the_stored_bytes(dtype, saved_per_chunk, more_rows):
    low, single = collection(dtype), collection("float32")
    assert low.store.pool_weights.dtype == TORCH_DTYPE[dtype] and single.store.pool_weights.dtype == torch.float32
    assert slot_bytes(low.config) == slot_bytes(single.config) - saved_per_chunk
    assert low.store.plan.max_rows > more_rows * single.store.plan.max_rows
    train(low, 40), train(single, 40)
    for m in (low, single):
        assert m.memory_bytes() <= m.budget_bytes
        report = emb_opt.memory_report(m)
        assert int(report.loc[report["table"] == "TOTAL", "total_bytes"].iloc[-1]) == m.memory_bytes()
        assert int(report.loc[report["table"] == "TOTAL", "weights_bytes"].iloc[-1]) == m.store.allocated_bytes()["weights"]
    weight_bytes = {"bfloat16": 2 * 16, "int8": 16 + 4}[dtype]  # per chunk slot, scale included
    assert low.store.allocated_bytes()["weights"] == weight_bytes * low.store.capacity
    assert low.store.num_live > 0.8 * more_rows * single.store.num_live  # the same bytes hold more chunks


@pytest.mark.parametrize("dtype", LOW)
def test_it_trains_like_the_float32_pool(dtype):
    single, low = train(collection("float32", budget=1.0), 150), train(collection(dtype, budget=1.0), 150)
    assert sum(low[-20:]) / 20 < 0.8 * sum(low[:20]) / 20  # it learns
    assert abs(sum(low[-20:]) - sum(single[-20:])) / 20 < 0.05


@pytest.mark.parametrize("dtype", LOW)
def test_updates_smaller_than_half_a_step_are_not_lost(dtype):
    # SGD steps of 1e-6 x occurrences, far below half a step of the stored weights (~1e-2 in size: bfloat16's half
    # step there is ~3e-5, int8's ~7e-5): round to nearest would store the same values again and again, stochastic
    # rounding moves them by the float32 sum in expectation
    low, single, start = (collection(d, budget=1.0, learning_rate=1e-6, optimizer="sgd")
                          for d in (dtype, "float32", dtype))
    kjt = batch(1, size=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(200):
            for model in (low, single):
                model(kjt).values().sum().backward()  # the same gradient (ones) every step
        start(kjt)  # the batch's rows with their (encoded) init values, untrained
    w_start = start.to_dense_weights("t0")
    touched = w_start != 0
    moved_low = (low.to_dense_weights("t0") - w_start)[touched]
    moved_single = (single.to_dense_weights("t0") - single_start(kjt))[touched]
    assert float(moved_single.mean()) < -1e-4  # every step moves every touched weight down
    torch.testing.assert_close(moved_low.mean(), moved_single.mean(), rtol=0.1, atol=0)


def single_start(kjt):
    start = collection("float32", budget=1.0)
    start(kjt)
    return start.to_dense_weights("t0")


@pytest.mark.parametrize("dtype", LOW)
def test_checkpoints_carry_the_dtype_and_a_float32_one_is_refused_by_name(dtype):
    m = collection(dtype)
    train(m, 20)
    copy = collection(dtype)
    copy.load_state_dict(m.state_dict())
    m.eval(), copy.eval()
    kjt = batch(99)
    torch.testing.assert_close(copy(kjt).values(), m(kjt).values(), rtol=0, atol=0)
    single = collection("float32")
    train(single, 20)
    before = m.state_dict()["store.pool_weights"].clone()
    with pytest.raises(RuntimeError, match=f"weight_dtype 'float32' \\(this module: '{dtype}'\\)"):
        m.load_state_dict(single.state_dict())
    assert torch.equal(m.state_dict()["store.pool_weights"], before)
    forged = m.state_dict()
    forged["store.pool_weights"] = forged["store.pool_weights"].float()
    with pytest.raises(RuntimeError, match=f"pool_weights: expected a torch.{dtype} tensor, got torch.float32"):
        copy.load_state_dict(forged)


def test_int8_scales_are_validated_on_load_in_training_and_export_checkpoints():
    m = collection("int8")
    train(m, 20)
    for bad, match in ((-1.0, "must be >= 0"), (float("nan"), "must be finite")):
        forged = m.state_dict()
        forged["store.pool_scale"] = forged["store.pool_scale"].clone()
        forged["store.pool_scale"][3, 0] = bad
        with pytest.raises(RuntimeError, match=rf"store.pool_scale\[3\] = {bad}: {match}"):
            collection("int8").load_state_dict(forged)
    inference = emb_opt.export_inference(m)
    forged = inference.state_dict()
    forged["store.pool_scale"] = forged["store.pool_scale"][:, :0].clone()
    with pytest.raises(RuntimeError, match="pool_scale: expected 1 column"):
        emb_opt.export_inference(m).load_state_dict(forged)


@pytest.mark.parametrize("dtype", LOW)
def test_casts_leave_the_pool_and_the_export_reads_it(dtype):
    m = collection(dtype)
    train(m, 20)
    m.eval()
    kjt = batch(5)
    want = m(kjt).values()
    for cast in (lambda x: x.float(), lambda x: x.double(), lambda x: x.bfloat16(), lambda x: x.half()):
        cast(m)
        assert m.store.pool_weights.dtype == TORCH_DTYPE[dtype] and m.store.pool_scale.dtype == torch.float32
        assert m.store.slot_utility.dtype == torch.float32 and m.store.sketch.dtype == torch.float32
    m.float()
    torch.testing.assert_close(m(kjt).values(), want, rtol=0, atol=0)
    inference = emb_opt.export_inference(m)
    assert inference.store.pool_weights.dtype == TORCH_DTYPE[dtype]
    torch.testing.assert_close(inference(kjt).values(), want, rtol=0, atol=0)
    again = emb_opt.export_inference(m)
    again.load_state_dict(inference.state_dict())


@pytest.mark.parametrize("dtype", LOW)
def test_fake_tensors_trace_a_low_precision_pool_to_a_float32_output(dtype):
    m = collection(dtype)
    train(m, 5)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        pool = mode.from_tensor(m.store.pool_weights)
        scale = m.store.scale_argument
        out = torch.ops.emb_opt.chunk_bag_forward(pool, torch.zeros(4, 2, dtype=torch.int32),
                                                  torch.zeros(4, dtype=torch.int32), torch.arange(5),
                                                  None, torch.zeros(1, dtype=torch.int32),
                                                  torch.tensor([2], dtype=torch.int32), torch.zeros(1, dtype=torch.int64),
                                                  4, DIM, 0, None if scale is None else mode.from_tensor(scale))
    assert out.dtype == torch.float32 and tuple(out.shape) == (4, DIM)


@pytest.mark.parametrize("value, ok", [("bfloat16", True), (torch.bfloat16, True), ("float32", True), ("int8", True),
                                       (torch.int8, True), ("float16", False), ("uint8", False)])
def test_weight_dtype_is_validated(value, ok):
    if ok:
        assert FiitedConfig(weight_dtype=value).weight_torch_dtype in (torch.bfloat16, torch.float32, torch.int8)
    else:
        with pytest.raises(ValueError, match="weight_dtype must be one of \\['bfloat16', 'float32', 'int8'\\]"):
            FiitedConfig(weight_dtype=value)
