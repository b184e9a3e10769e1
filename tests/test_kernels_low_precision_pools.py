"""Chunk-bag kernels on low-precision pools (``FiitedConfig.weight_dtype``, CPU), held to the pure-PyTorch reference
(``cuda_ext.reference.pool_codec``): bfloat16, and int8 with a float32 scale per chunk (``pool_scale`` [S, 1]).

* the pooled forward reads the stored weights and sums in float32, as the reference and as a float32 pool of the
  decoded weights;
* the fused backward stores each updated weight with stochastic rounding (int8: after setting the chunk's scale
  to max |w| / 127): bit-identical to the reference where the float32 update is exact, within one step of the
  stored type where float32 sums may round otherwise; unbiased (the mean of many rounded weights is the float32
  value, which round-to-nearest misses); seeded (another ``rounding_seed`` rounds otherwise, the same repeats);
* an int8 pool without its scales, or scales of the wrong shape, is refused by name.
"""
import pytest
import torch

from kernel_cases import CONFIG_NAMES, assert_close, lookup_args, make_case, ops, requires_extension, unique_args

from cuda_ext import reference
from cuda_ext.layout import OPTIMIZER_CODES, pack_row_key
from cuda_ext.reference.pool_codec import load
from cuda_ext.reference.stochastic_round import rounding_random, to_bfloat16_stochastic
from emb_opt.chunk_precision import decode, encode

pytestmark = requires_extension
SGD = OPTIMIZER_CODES["sgd"]
LOW = [torch.bfloat16, torch.int8]
BF16_STEP = 2.0 ** -7  # bfloat16's spacing in [1, 2)


def low_case(name: str, dtype: torch.dtype):
    """A kernel case whose pool is encoded in ``dtype`` (round to nearest), with its scales (or None)."""
    case = make_case(name, CONFIG_NAMES.index(name))
    case["pool"], scale = encode(case["pool"], dtype)
    case["scale"] = scale if dtype == torch.int8 else None
    return case


def stored(pool: torch.Tensor) -> torch.Tensor:
    """The pool's bits, for bit-for-bit comparisons."""
    return pool.view(torch.int16) if pool.dtype == torch.bfloat16 else pool


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_forward_on_a_low_precision_pool_matches_reference_and_the_decoded_float32_pool(name, dtype):
    case = low_case(name, dtype)
    row_keys, inverse, *_ = reference.chunk_bag_unique(*unique_args(case))
    _, slots = reference.vhpi_lookup_runs(*lookup_args(case, row_keys))
    decoded = decode(case["pool"], case["scale"] if case["scale"] is not None else case["pool"].new_zeros(0, 0))
    for mode in (0, 1):
        args = (slots, inverse, case["offsets"], case["weights"], case["feature_table"], case["table_chunks"],
                case["feature_cols"], case["batch"], case["out_dim"], mode)
        got = ops.chunk_bag_forward(case["pool"], *args, case["scale"])
        assert got.dtype == torch.float32
        assert_close(got, reference.chunk_bag_forward(case["pool"], *args, case["scale"]), f"{name} mode={mode}")
        assert_close(got, ops.chunk_bag_forward(decoded, *args), f"{name} mode={mode} vs the decoded float32 pool")


def single_chunk_rows(num_rows: int, c: int, dtype: torch.dtype, value: float, grad: torch.Tensor):
    """One feature, ``num_rows`` rows of one chunk each at slot i (one occurrence each, sum pooling): SGD with lr 1
    moves every weight from ``value`` by ``-grad`` [c] exactly in float32, so only the rounding is left to compare."""
    values = torch.arange(num_rows)
    offsets = torch.arange(num_rows + 1)
    row_keys, _, uo, uocc, ob, _ = reference.chunk_bag_unique(values, offsets, torch.zeros(1, dtype=torch.int32),
                                                              torch.tensor([num_rows]), num_rows)
    assert torch.equal(row_keys, pack_row_key(torch.zeros(num_rows, dtype=torch.int64), torch.arange(num_rows)))
    slots = torch.arange(num_rows, dtype=torch.int32).unsqueeze(1)  # row i (first-occurrence order) -> slot i
    pool, scale = encode(torch.full((num_rows, c), value), dtype)
    rest = (slots, row_keys, uo, uocc, ob, offsets, None, torch.tensor([1], dtype=torch.int32),
            torch.zeros(1, dtype=torch.int64), num_rows, 0, SGD, 1.0, 0.0, 0, False, None)
    return pool, (scale if dtype == torch.int8 else None), grad.expand(num_rows, c).contiguous(), rest


def sgd_step(impl, pool, scale, grad_out, rest, seed):
    pool, scale = pool.clone(), None if scale is None else scale.clone()
    impl(pool, torch.empty(0, 0), torch.zeros(pool.shape[0]), grad_out, *rest, seed, scale)
    return pool, scale


@pytest.mark.parametrize("impl", ["cpu", "reference"])
def test_bfloat16_rounding_is_unbiased_where_round_to_nearest_is_not(impl):
    # 1.0 - (-0.3 steps) = 1.00234375 lies 0.3 of a bfloat16 step above 1.0: round-to-nearest stores 1.0 every time
    fn = ops.chunk_bag_backward_update_ if impl == "cpu" else reference.chunk_bag_backward_update_
    pool, scale, grad_out, rest = single_chunk_rows(4096, 8, torch.bfloat16, 1.0, torch.tensor(-0.3 * BF16_STEP))
    target = 1.0 + 0.3 * BF16_STEP
    rounded = sgd_step(fn, pool, scale, grad_out, rest, seed=7)[0].float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + BF16_STEP}
    sem = BF16_STEP * (0.3 * 0.7) ** 0.5 / rounded.numel() ** 0.5
    assert abs(float(rounded.mean()) - target) < 5 * sem, (float(rounded.mean()), target, sem)
    assert abs(float(pool.float().mean()) - target) > 100 * sem  # what round-to-nearest would keep


@pytest.mark.parametrize("impl", ["cpu", "reference"])
def test_int8_quantization_is_unbiased_where_round_to_nearest_is_not(impl):
    # from zeros, one step to [1.27, 0.00503 x 7]: the chunk's scale is 1.27 / 127 ~ 0.01 and 0.00503 lies at 0.503
    # of a level, which round-to-nearest stores as 1 (0.01) every time
    fn = ops.chunk_bag_backward_update_ if impl == "cpu" else reference.chunk_bag_backward_update_
    small = 0.00503
    pool, scale, grad_out, rest = single_chunk_rows(4096, 8, torch.int8, 0.0, -torch.tensor([1.27] + [small] * 7))
    q, s = sgd_step(fn, pool, scale, grad_out, rest, seed=5)
    torch.testing.assert_close(s, torch.full_like(s, 1.27 / 127), rtol=1e-6, atol=0)
    assert bool((q[:, 0] == 127).all()) and set(q[:, 1:].unique().tolist()) == {0, 1}
    values = (q[:, 1:].float() * s).reshape(-1)
    p = small / float(s[0])
    sem = float(s[0]) * (p * (1 - p)) ** 0.5 / values.numel() ** 0.5
    assert abs(float(values.mean()) - small) < 5 * sem, (float(values.mean()), small, sem)
    assert abs(float(s[0]) - small) > 100 * sem  # round to nearest: one level, 0.01


@pytest.mark.parametrize("dtype", LOW)
def test_kernel_rounds_bit_identically_to_the_reference_and_by_its_seed(dtype):
    grad = torch.linspace(-0.002, 0.003, 16)
    pool, scale, grad_out, rest = single_chunk_rows(512, 16, dtype, 0.5, grad)
    got = sgd_step(ops.chunk_bag_backward_update_, pool, scale, grad_out, rest, seed=3)
    want = sgd_step(reference.chunk_bag_backward_update_, pool, scale, grad_out, rest, seed=3)
    again = sgd_step(ops.chunk_bag_backward_update_, pool, scale, grad_out, rest, seed=3)
    other = sgd_step(ops.chunk_bag_backward_update_, pool, scale, grad_out, rest, seed=4)
    for a, b in ((got, want), (got, again)):
        assert torch.equal(stored(a[0]), stored(b[0])) and (a[1] is None or torch.equal(a[1], b[1]))
    assert not torch.equal(got[0], other[0])
    exact = 0.5 - grad
    values = load(got[0], got[1], torch.arange(512))
    step = 2.0 ** -8 if dtype == torch.bfloat16 else float(got[1].max())  # bfloat16 spacing in [0.5, 1); an int8 level
    assert bool(((values - exact).abs() <= step * 1.0001).all())  # one of the two neighbours


def test_reference_rounding_keeps_representable_values_nan_and_inf():
    values = torch.tensor([1.0, -2.5, 0.0, float("inf"), float("-inf"), float("nan"), 3.0e38])
    out = to_bfloat16_stochastic(values, rounding_random(1, torch.arange(values.numel()), 1).reshape(-1))
    assert out[:5].float().tolist() == [1.0, -2.5, 0.0, float("inf"), float("-inf")]
    assert torch.isnan(out[5])
    assert out[6].float() >= 3.0e38 or torch.isinf(out[6])


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_CODES.values()))
def test_backward_update_on_a_low_precision_pool_matches_reference(name, optimizer, dtype):
    case = low_case(name, dtype)
    gen, c, num_slots = case["gen"], case["c"], case["pool"].shape[0]
    row_keys, inverse, uo, uocc, ob, _ = reference.chunk_bag_unique(*unique_args(case))
    entries, slots = reference.vhpi_lookup_runs(*lookup_args(case, row_keys))
    grad_out = torch.randn(case["batch"], case["out_dim"], generator=gen)
    state_shape = {0: (num_slots, 0), 1: (num_slots, c), 2: (case["entry_keys"].numel(), 1)}[optimizer]
    state0, util0 = torch.rand(*state_shape, generator=gen), torch.rand(num_slots, generator=gen)
    results = []
    for impl in (ops.chunk_bag_backward_update_, reference.chunk_bag_backward_update_):
        pool, state, util = case["pool"].clone(), state0.clone(), util0.clone()
        scale = None if case["scale"] is None else case["scale"].clone()
        candidate, weight_grad = impl(pool, state, util, grad_out, slots, row_keys, uo, uocc, ob, case["offsets"],
                                      case["weights"], case["table_chunks"], case["feature_cols"], case["batch"], 1,
                                      optimizer, 0.05, 1e-8, 2, True, entries, 11, scale)
        results.append((pool, scale, state, util, candidate, weight_grad))
    (pool, scale, state, util, candidate, weight_grad), want = results
    assert pool.dtype == dtype and candidate.dtype == weight_grad.dtype == torch.float32
    # float32 sums may differ in their last bit, which flips a rounding decision (or an int8 scale) rarely: at most
    # a few weights differ, by one step of the stored type
    differ = stored(pool) != stored(want[0])
    assert int(differ.sum()) <= max(2, differ.numel() // 10_000), f"{int(differ.sum())} weights differ"
    every = torch.arange(num_slots)
    got_values, want_values = load(pool, scale, every), load(want[0], want[1], every)
    step = want_values.abs() * 2.0 ** -7 if dtype == torch.bfloat16 else want[1] * 1.001
    assert bool(((got_values - want_values).abs() <= step + 1e-30).all())
    assert bool((stored(pool) != stored(case["pool"])).any())
    if scale is not None:
        torch.testing.assert_close(scale, want[1], rtol=1e-5, atol=0)
    for got_x, want_x, part in zip((state, util, candidate, weight_grad), want[2:],
                                   ("state", "utility", "candidate", "weight_grad")):
        if want_x.numel():
            assert_close(got_x, want_x, f"{name} optimizer={optimizer}: {part}")


@pytest.mark.parametrize("impl", ["cpu", "reference"])
def test_pools_of_another_dtype_or_without_their_scales_are_refused_by_name(impl):
    forward = ops.chunk_bag_forward if impl == "cpu" else reference.chunk_bag_forward
    case = make_case("c4", 0)
    row_keys, inverse, *_ = reference.chunk_bag_unique(*unique_args(case))
    _, slots = reference.vhpi_lookup_runs(*lookup_args(case, row_keys))
    args = (slots, inverse, case["offsets"], None, case["feature_table"], case["table_chunks"], case["feature_cols"],
            case["batch"], case["out_dim"], 0)
    pool, scale = encode(case["pool"], torch.int8)
    with pytest.raises((RuntimeError, ValueError), match="pool must be"):
        forward(case["pool"].double(), *args)
    with pytest.raises((RuntimeError, ValueError), match="an int8 pool needs pool_scale"):
        forward(pool, *args)
    with pytest.raises((RuntimeError, ValueError), match=r"pool_scale must be contiguous \[S, 1\]"):
        forward(pool, *args, scale[:-1])
    with pytest.raises((RuntimeError, ValueError), match="pool_scale is for int8 pools"):
        forward(case["pool"], *args, scale)
