"""Chunk-bag kernels on a bfloat16 pool (``FiitedConfig.weight_dtype="bfloat16"``, CPU), held to the pure-PyTorch
reference: the pooled forward reads bfloat16 and sums in float32; the fused backward stores each updated weight
with stochastic rounding (csrc/common/stochastic_round.h), bit-identical to ``cuda_ext.reference.stochastic_round``
where the float32 update is exact, unbiased (the mean of many rounded weights is the float32 value, which
round-to-nearest misses), seeded (a step with another ``rounding_seed`` rounds otherwise; the same one repeats).
"""
import pytest
import torch

from kernel_cases import CONFIG_NAMES, assert_close, lookup_args, make_case, ops, requires_extension, unique_args

from cuda_ext import reference
from cuda_ext.layout import OPTIMIZER_CODES, pack_row_key
from cuda_ext.reference.stochastic_round import rounding_random, to_bfloat16_stochastic

pytestmark = requires_extension
SGD, ROWWISE = OPTIMIZER_CODES["sgd"], OPTIMIZER_CODES["rowwise_adagrad"]
BF16_STEP = 2.0 ** -7  # bfloat16's spacing in [1, 2)


def _bf16_case(name: str):
    case = make_case(name, CONFIG_NAMES.index(name))
    case["pool"] = case["pool"].to(torch.bfloat16)
    return case


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_forward_on_a_bfloat16_pool_matches_reference_and_the_float32_pool(name):
    case = _bf16_case(name)
    row_keys, inverse, *_ = reference.chunk_bag_unique(*unique_args(case))
    _, slots = reference.vhpi_lookup_runs(*lookup_args(case, row_keys))
    for mode in (0, 1):
        args = (slots, inverse, case["offsets"], case["weights"], case["feature_table"], case["table_chunks"],
                case["feature_cols"], case["batch"], case["out_dim"], mode)
        got = ops.chunk_bag_forward(case["pool"], *args)
        assert got.dtype == torch.float32
        assert_close(got, reference.chunk_bag_forward(case["pool"], *args), f"{name} mode={mode}")
        assert_close(got, ops.chunk_bag_forward(case["pool"].float(), *args), f"{name} mode={mode} vs float32 pool")


def _single_chunk_rows(num_rows: int, c: int, value: float, grad: float):
    """One feature, ``num_rows`` rows of one chunk each (one occurrence each, sum pooling): SGD with lr 1 moves
    every weight from ``value`` by ``-grad`` exactly in float32, so only the rounding is left to compare."""
    values = torch.arange(num_rows)
    offsets = torch.arange(num_rows + 1)
    row_keys, inverse, uo, uocc, ob, _ = reference.chunk_bag_unique(values, offsets, torch.zeros(1, dtype=torch.int32),
                                                                     torch.tensor([num_rows]), num_rows)
    slots = torch.arange(num_rows, dtype=torch.int32).unsqueeze(1)  # row i (first-occurrence order) -> slot i
    pool = torch.full((num_rows, c), value, dtype=torch.bfloat16)
    grad_out = torch.full((num_rows, c), grad)
    rest = (slots, row_keys, uo, uocc, ob, offsets, None, torch.tensor([1], dtype=torch.int32),
            torch.zeros(1, dtype=torch.int64), num_rows, 0, SGD, 1.0, 0.0, 0, False, None)
    assert torch.equal(row_keys, pack_row_key(torch.zeros(num_rows, dtype=torch.int64), torch.arange(num_rows)))
    return pool, grad_out, rest


def _sgd_step(impl, pool, grad_out, rest, seed):
    pool = pool.clone()
    impl(pool, torch.empty(0, 0), torch.zeros(pool.shape[0]), grad_out, *rest, seed)
    return pool


@pytest.mark.parametrize("impl", ["cpu", "reference"])
def test_stochastic_rounding_is_unbiased_where_round_to_nearest_is_not(impl):
    # 1.0 - (-0.3 steps) = 1.00234375 lies 0.3 of a bfloat16 step above 1.0: round-to-nearest stores 1.0 every time
    fn = ops.chunk_bag_backward_update_ if impl == "cpu" else reference.chunk_bag_backward_update_
    pool, grad_out, rest = _single_chunk_rows(4096, 8, 1.0, -0.3 * BF16_STEP)
    target = 1.0 + 0.3 * BF16_STEP
    rounded = _sgd_step(fn, pool, grad_out, rest, seed=7).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + BF16_STEP}
    sem = BF16_STEP * (0.3 * 0.7) ** 0.5 / rounded.numel() ** 0.5
    assert abs(float(rounded.mean()) - target) < 5 * sem, (float(rounded.mean()), target, sem)
    assert abs(float(pool.float().mean()) - target) > 100 * sem  # what round-to-nearest would keep


def test_kernel_rounds_bit_identically_to_the_reference_and_by_its_seed():
    pool, grad_out, rest = _single_chunk_rows(512, 16, 0.5, 0.001)
    got = _sgd_step(ops.chunk_bag_backward_update_, pool, grad_out, rest, seed=3)
    want = _sgd_step(reference.chunk_bag_backward_update_, pool, grad_out, rest, seed=3)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    again = _sgd_step(ops.chunk_bag_backward_update_, pool, grad_out, rest, seed=3)
    assert torch.equal(got.view(torch.int16), again.view(torch.int16))
    other = _sgd_step(ops.chunk_bag_backward_update_, pool, grad_out, rest, seed=4)
    assert not torch.equal(got, other)
    exact = torch.tensor(0.5 - 0.001)
    assert bool(((got.float() - exact).abs() <= 2.0 ** -9).all())  # one of the two neighbours (step 2^-9 at 0.5)


def test_reference_rounding_keeps_representable_values_nan_and_inf():
    values = torch.tensor([1.0, -2.5, 0.0, float("inf"), float("-inf"), float("nan"), 3.0e38])
    out = to_bfloat16_stochastic(values, rounding_random(1, torch.arange(values.numel()), 1).reshape(-1))
    assert out[:5].float().tolist() == [1.0, -2.5, 0.0, float("inf"), float("-inf")]
    assert torch.isnan(out[5])
    assert out[6].float() >= 3.0e38 or torch.isinf(out[6])


@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_CODES.values()))
def test_backward_update_on_a_bfloat16_pool_matches_reference(name, optimizer):
    case = _bf16_case(name)
    gen, c, num_slots = case["gen"], case["c"], case["pool"].shape[0]
    row_keys, inverse, uo, uocc, ob, _ = reference.chunk_bag_unique(*unique_args(case))
    entries, slots = reference.vhpi_lookup_runs(*lookup_args(case, row_keys))
    grad_out = torch.randn(case["batch"], case["out_dim"], generator=gen)
    state_shape = {0: (num_slots, 0), 1: (num_slots, c), 2: (case["entry_keys"].numel(), 1)}[optimizer]
    state0, util0 = torch.rand(*state_shape, generator=gen), torch.rand(num_slots, generator=gen)
    results = []
    for impl in (ops.chunk_bag_backward_update_, reference.chunk_bag_backward_update_):
        pool, state, util = case["pool"].clone(), state0.clone(), util0.clone()
        candidate, weight_grad = impl(pool, state, util, grad_out, slots, row_keys, uo, uocc, ob, case["offsets"],
                                      case["weights"], case["table_chunks"], case["feature_cols"], case["batch"], 1,
                                      optimizer, 0.05, 1e-8, 2, True, entries, 11)
        results.append((pool, state, util, candidate, weight_grad))
    (pool, state, util, candidate, weight_grad), want = results
    assert pool.dtype == torch.bfloat16 and candidate.dtype == weight_grad.dtype == torch.float32
    # float32 sums may differ in their last bit, which flips a rounding decision with probability ~2^-16: at most a
    # few weights differ, by one bfloat16 step
    differ = pool.view(torch.int16) != want[0].view(torch.int16)
    assert int(differ.sum()) <= max(2, differ.numel() // 10_000), f"{int(differ.sum())} weights differ"
    assert bool(((pool.float() - want[0].float()).abs() <= want[0].float().abs() * 2.0 ** -7 + 1e-30).all())
    moved = pool.view(torch.int16) != case["pool"].view(torch.int16)
    assert bool(moved.any())
    for got_x, want_x, part in zip((state, util, candidate, weight_grad), want[1:], ("state", "utility", "candidate",
                                                                                      "weight_grad")):
        if want_x.numel():
            assert_close(got_x, want_x, f"{name} optimizer={optimizer}: {part}")


def test_a_pool_neither_float32_nor_bfloat16_is_refused_by_name():
    case = make_case("c4", 0)
    row_keys, inverse, *_ = reference.chunk_bag_unique(*unique_args(case))
    _, slots = reference.vhpi_lookup_runs(*lookup_args(case, row_keys))
    args = (slots, inverse, case["offsets"], None, case["feature_table"], case["table_chunks"], case["feature_cols"],
            case["batch"], case["out_dim"], 0)
    for impl in (ops.chunk_bag_forward, reference.chunk_bag_forward):
        with pytest.raises((RuntimeError, ValueError), match="pool must be"):
            impl(case["pool"].double(), *args)
