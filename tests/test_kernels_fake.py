"""Fake (meta) implementations of every emb_opt op (cuda_ext/fake.py), on the CPU: each op runs under
FakeTensorMode (with a ShapeEnv where output sizes depend on the data), passes torch.library.opcheck's schema,
fake-tensor and autograd-registration tests on valid inputs, and a pipeline of them traces with make_fx and compiles
with torch.compile into the same numbers."""
import pytest
import torch
import torch._dynamo
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from kernel_cases import lookup_args, make_case, ops, requires_extension, unique_args

from cuda_ext import reference
from cuda_ext.layout import OPTIMIZER_CODES, UTILITY_CODES

pytestmark = requires_extension
OPCHECK_TESTS = ("test_schema", "test_faketensor", "test_autograd_registration")


def valid_calls():
    """Valid arguments of every op, from one random batch and store (tests/kernel_cases.py)."""
    case = make_case("c4", 0)
    rk, inverse, uo, uocc, ob, _ = reference.chunk_bag_unique(*unique_args(case))
    entries, slots = reference.vhpi_lookup_runs(*lookup_args(case, rk))
    gen = torch.Generator().manual_seed(1)
    live_entries = (case["entry_keys"] >= 0).nonzero().reshape(-1)
    half = live_entries.numel() // 2
    first_half = torch.where(torch.isin(torch.arange(case["entry_keys"].numel()), live_entries[:half]),
                             case["entry_keys"], -1)
    codes = torch.randint(0, 16, (40, 3), generator=gen)
    forward_tail = (case["offsets"], case["weights"], case["feature_table"], case["table_chunks"],
                    case["feature_cols"], case["batch"], case["out_dim"], 1)
    num_entries = case["entry_keys"].numel()
    return {
        "mix_hash": (torch.randint(0, 10**6, (3, 7), generator=gen), 1000, 3),
        "semantic_id_tokens": (torch.randint(-2, 45, (30,), generator=gen), codes, [0, 0], [1, 2], [0, 5], 1, 16, 300),
        "vhpi_lookup_runs": lookup_args(case, rk),
        "vhpi_insert_": (reference.vhpi_rebuild(first_half, 2 * num_entries, 32), case["entry_keys"],
                         live_entries[half:].to(torch.int32), 32),
        "vhpi_rebuild": (case["entry_keys"], 2 * num_entries, 32),
        "chunk_bag_unique": unique_args(case),
        "chunk_bag_forward": (case["pool"], slots, inverse) + forward_tail,
        "chunk_bag_backward_update_": (
            case["pool"].clone(), torch.rand(num_entries, 1, generator=gen), torch.zeros(case["pool"].shape[0]),
            torch.randn(case["batch"], case["out_dim"], generator=gen), slots, rk, uo, uocc, ob, case["offsets"],
            case["weights"], case["table_chunks"], case["feature_cols"], case["batch"], 1,
            OPTIMIZER_CODES["rowwise_adagrad"], 0.05, 1e-8, UTILITY_CODES["freq_grad"], True, entries),
    }


OPS = sorted(valid_calls())


def test_every_op_has_a_case():
    registered = {name.split("::")[1].split(".")[0] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("emb_opt::")}
    assert registered == set(OPS)


@pytest.mark.parametrize("name", OPS)
def test_opcheck(name):
    torch.library.opcheck(getattr(ops, name), valid_calls()[name], test_utils=OPCHECK_TESTS)


@pytest.mark.parametrize("name", OPS)
def test_runs_under_fake_tensor_mode(name):
    args = valid_calls()[name]
    real = getattr(ops, name)(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        if name == "vhpi_insert_":  # returns how many went in: data no fake holds
            with pytest.raises(DataDependentOutputException):
                getattr(ops, name)(*fake_args)
            return
        fake = getattr(ops, name)(*fake_args)
    real, fake = (real, fake) if isinstance(real, tuple) else ((real,), (fake,))
    assert len(fake) == len(real)
    for r, f in zip(real, fake):
        assert f.dtype == r.dtype and f.device == r.device and f.dim() == r.dim()
        for rs, fs in zip(r.shape, f.shape):
            assert isinstance(fs, torch.SymInt) or fs == rs, (name, tuple(r.shape), tuple(f.shape))


def test_data_dependent_sizes_need_a_shape_env():
    args = valid_calls()
    with FakeTensorMode() as mode:
        with pytest.raises(DynamicOutputShapeException):
            ops.chunk_bag_unique(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                                   for a in args["chunk_bag_unique"]])
        static = ops.chunk_bag_forward(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                                         for a in args["chunk_bag_forward"]])
        assert tuple(static.shape) == (16, 36)


def pipeline(values, offsets, feature_table, table_rows, buckets, entry_keys, entry_first, entry_chunks, pool,
             table_chunks, feature_cols):
    """unique -> lookup -> forward, as FiitedEmbeddingBagCollection runs them (the c4 case's batch of 16)."""
    row_keys, inverse, *_ = ops.chunk_bag_unique(values, offsets, feature_table, table_rows, 16)
    _, slots = ops.vhpi_lookup_runs(buckets, entry_keys, entry_first, entry_chunks, row_keys, 3, 64)
    return ops.chunk_bag_forward(pool, slots, inverse, offsets, None, feature_table, table_chunks, feature_cols, 16, 36,
                                 0)


def pipeline_args():
    case = make_case("c4", 0)
    assert case["batch"] == 16 and case["out_dim"] == 36 and case["cmax"] == 3
    return (case["values"], case["offsets"], case["feature_table"], case["table_rows"], case["buckets"],
            case["entry_keys"], case["entry_first"], case["entry_chunks"], case["pool"], case["table_chunks"],
            case["feature_cols"])


def test_make_fx_and_torch_compile_trace_a_pipeline():
    args = pipeline_args()
    want = pipeline(*args)
    for mode in ("fake", "symbolic"):
        graph = make_fx(pipeline, tracing_mode=mode)(*args)
        assert "emb_opt.chunk_bag_unique" in graph.code and "emb_opt.chunk_bag_forward" in graph.code
        assert torch.equal(graph(*args), want)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(pipeline, backend="eager", fullgraph=True)
        assert torch.equal(compiled(*args), want)
