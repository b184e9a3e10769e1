"""semantic_id_tokens (csrc/semantic_id) on every device (tests/kernel_cases.py) held to its reference, and the
reference to apply_plan (the parameterizations' own arithmetic), on random code tables with ids that have no
code, for every code-based parameterization."""
import pytest
import torch

from kernel_cases import DEVICES, assert_same, call, on, ops, requires_extension

from cuda_ext import reference
from semantic_id.parameterizations import CODE_PARAMETERIZATIONS, apply_plan, token_plan

pytestmark = requires_extension


def plan_args(plan, H, feature_offset):
    return (list(plan.starts), list(plan.lengths), [(o + feature_offset) % H for o in plan.offsets], plan.add,
            plan.codebook_size, H)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CODE_PARAMETERIZATIONS)
@pytest.mark.parametrize("levels,K,H,feature_offset", [(3, 16, None, 0), (4, 256, 5000, 17), (6, 2048, 10**9 + 7, 3)])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
def test_tokens_match_reference_and_apply_plan(device, name, levels, K, H, feature_offset, id_dtype):
    if name in ("trigram", "fourgram") and levels < (3 if name == "trigram" else 4):
        pytest.skip("needs more levels")
    gen = torch.Generator().manual_seed(levels * K)
    plan = token_plan(name, levels, K)
    H = plan.space if H is None else H
    codes = torch.randint(0, K, (500, levels), generator=gen)
    codes[torch.randperm(500, generator=gen)[:40], 0] = -1  # ids without a code
    ids = torch.randint(-3, 560, (3000,), generator=gen).to(id_dtype)
    args = plan_args(plan, H, feature_offset)
    got, first = call(device, ops.semantic_id_tokens, *on(device, ids, codes), *args)
    want, want_first = reference.semantic_id_tokens(ids, codes, *args)
    assert_same(got, want, "tokens")
    assert_same(first, want_first, "first unknown id")
    flat = ids.long()
    known = (flat >= 0) & (flat < 500)
    known[known.clone()] &= codes[flat[known], 0] >= 0
    assert int(first) == int((~known).nonzero()[0, 0])
    assert torch.equal(want[known], apply_plan(codes[flat[known]], plan, H, feature_offset))
    assert (want[~known] == -1).all()


@pytest.mark.parametrize("device", DEVICES)
def test_all_known_and_empty(device):
    plan = token_plan("prefix_ngram", 3, 8)
    codes = torch.randint(0, 8, (50, 3), device=device)
    tokens, first = call(device, ops.semantic_id_tokens, torch.arange(50, device=device), codes,
                         *plan_args(plan, plan.space, 0))
    assert int(first) == -1 and tokens.shape == (50, 3) and (tokens >= 0).all()
    empty, first = ops.semantic_id_tokens(torch.zeros(0, dtype=torch.int64, device=device), codes,
                                          *plan_args(plan, plan.space, 0))
    assert empty.shape == (0, 3) and int(first) == -1


def test_bad_arguments_raise():
    codes = torch.zeros(4, 3, dtype=torch.int64)
    ids = torch.arange(3)
    with pytest.raises(RuntimeError, match=r"token 0 reads code levels \[2, 4\) of 3"):
        ops.semantic_id_tokens(ids, codes, [2], [2], [0], 0, 8, 100)
    with pytest.raises(RuntimeError, match=r"token_offsets\[0\] = 100 is not reduced mod 100"):
        ops.semantic_id_tokens(ids, codes, [0], [1], [100], 0, 8, 100)
    with pytest.raises(RuntimeError, match="codes must be Long"):
        ops.semantic_id_tokens(ids, codes.int(), [0], [1], [0], 0, 8, 100)
    with pytest.raises(RuntimeError, match="overflows int64"):
        ops.semantic_id_tokens(ids, codes, [0], [1], [0], 0, 2**40, 2**40)
