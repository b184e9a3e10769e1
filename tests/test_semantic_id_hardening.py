"""Semantic-ID inputs a user can get wrong -- codes tables, KJTs -- are refused naming the problem, and k-means
iterates as asked."""
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

import semantic_id as S
from semantic_id.codes import check_codes_table
from semantic_id.kmeans import kmeans, nearest

K = 4
CODES = torch.tensor([[1, 2, 3], [0, 0, 0], [3, 3, 3], [-1, -1, -1]])


def test_more_iterations_lower_the_kmeans_objective():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(400, 8, generator=gen) + 3 * torch.randn(1, 8, generator=gen) for _ in range(12)])
    objective = [float(nearest(x, kmeans(x, 16, iters=iters, seed=1, tol=0.0))[1].mean()) for iters in (1, 3, 25)]
    assert objective[0] > objective[1] > objective[2], objective
    # converged: one more iteration than it needed changes nothing
    assert float(nearest(x, kmeans(x, 16, iters=200, seed=1))[1].mean()) <= objective[2] * (1 + 1e-6)


@pytest.mark.parametrize("codes, match", [
    (torch.tensor([[1, 2, 3], [0, 4, 0]]), r"values must be in \[0, 4\) or -1: row 1 level 1 holds 4"),
    (torch.tensor([[1, 2, 3], [-1, 0, -1]]), r"row 1 mixes -1 and codes"),
    (torch.tensor([[1, 2], [0, 0]]), r"must be \[n, 3\], got \(2, 2\)"),
    (torch.tensor([[1.0, 2.0, 3.0]]), r"must be an int32/int64 \[n, L\] tensor"),
])
def test_load_state_dict_checks_codes_and_keeps_the_table(codes, match):
    transform = S.SemanticIdTransform(CODES, "item", codebook_size=K)
    with pytest.raises(ValueError, match=match):
        check_codes_table(codes, K, 3)
    with pytest.raises(ValueError, match=match):
        transform.load_state_dict({"codes": codes})
    assert torch.equal(transform.codes, CODES)
    if codes.dtype == torch.int64 and codes.shape[1] == 3:  # what the constructor refuses, a load refuses too
        with pytest.raises(ValueError, match=match):
            S.SemanticIdTransform(codes, "item", codebook_size=K)


def test_load_codes_refuses_codes_outside_the_codebook(tmp_path):
    S.save_codes(CODES, tmp_path / "ok.pt", codebook_size=K)
    table = S.load_codes(tmp_path / "ok.pt")
    assert torch.equal(table.codes, CODES) and table.codebook_size == K
    torch.save({"format_version": 1, "codes": torch.tensor([[1, 2, 7]]), "codebook_size": K}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad.pt: codes table values must be in \[0, 4\) or -1: row 0 level 2 holds 7"):
        S.load_codes(tmp_path / "bad.pt")
    torch.save({"format_version": 1, "codes": CODES, "codebook_size": 2.5}, tmp_path / "k.pt")
    with pytest.raises(ValueError, match=r"codebook size must be an int >= 1, got 2.5"):
        S.load_codes(tmp_path / "k.pt")
    torch.save({"format_version": 0, "codes": CODES, "codebook_size": K}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old.pt: format_version 0 is not this version's 1"):
        S.load_codes(tmp_path / "old.pt")


def test_a_kjt_whose_lengths_do_not_give_its_ids_is_refused():
    transform = S.SemanticIdTransform(CODES, "item", codebook_size=K)
    values = torch.tensor([7, 0, 2, 1])
    surplus = KeyedJaggedTensor(keys=["user", "item"], values=torch.cat([values, torch.tensor([1])]),
                                lengths=torch.tensor([1, 0, 2, 1]))
    with pytest.raises(ValueError, match="lengths add up to 4 ids but it holds 5"):
        transform(surplus)
    negative = KeyedJaggedTensor(keys=["user", "item"], values=values, lengths=torch.tensor([1, 0, 4, -1]),
                                 length_per_key=[1, 3])
    with pytest.raises(ValueError, match=r"feature 'item': its lengths \(min -1, sum 3\)"):
        transform(negative)
