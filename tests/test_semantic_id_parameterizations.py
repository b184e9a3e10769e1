"""Parameterizations against hand-computed tokens (the prefix-ngram formula of Meta's paper), the modulus, offsets and
the numpy entry point."""
import numpy as np
import pytest
import torch

import semantic_id as S
from hashing import random_hash

K = 4
CODES = torch.tensor([[1, 2, 3], [0, 0, 0], [3, 3, 3]])


def test_prefix_ngram_hand_computed():
    # p1 = c1; p2 = K(c1+1) + (c2+1) - 1; p3 = K^2(c1+1) + K(c2+1) + (c3+1) - 1
    expected = torch.tensor([
        [1, 4 * 2 + 3 - 1, 16 * 2 + 4 * 3 + 4 - 1],   # [1, 10, 47]
        [0, 4 * 1 + 1 - 1, 16 * 1 + 4 * 1 + 1 - 1],   # [0, 4, 20]
        [3, 4 * 4 + 4 - 1, 16 * 4 + 4 * 4 + 4 - 1],   # [3, 19, 83]
    ])
    assert torch.equal(S.prefix_ngram_tokens(CODES, K), expected)
    # every prefix length has its own range: [0,K), [K, K+K^2), [K+K^2, K+K^2+K^3)
    all_codes = torch.cartesian_prod(torch.arange(K), torch.arange(K), torch.arange(K))
    tokens = S.prefix_ngram_tokens(all_codes, K)
    assert tokens[:, 0].min() == 0 and tokens[:, 0].max() == K - 1
    assert tokens[:, 1].min() == K and tokens[:, 1].max() == K + K**2 - 1
    assert tokens[:, 2].min() == K + K**2 and tokens[:, 2].max() == K + K**2 + K**3 - 1
    assert torch.unique(tokens[:, 2]).numel() == K**3  # full prefixes are distinct
    assert S.token_plan("prefix_ngram", 3, K).space == K + K**2 + K**3
    # depth 2 = the first two columns
    assert torch.equal(S.prefix_ngram_tokens(CODES, K, depth=2), expected[:, :2])


def test_ngram_bigrams_unigrams_hand_computed():
    assert torch.equal(S.ngram_tokens(CODES, K), torch.tensor([[16 * 1 + 4 * 2 + 3], [0], [16 * 3 + 4 * 3 + 3]]))
    # all bigrams: K^2 (i-1) + K c_i + c_{i+1}
    assert torch.equal(S.all_bigram_tokens(CODES, K), torch.tensor([[4 + 2, 16 + 8 + 3], [0, 16], [15, 16 + 15]]))
    assert torch.equal(S.unigram_tokens(CODES, K), torch.tensor([[1, 4 + 2, 8 + 3], [0, 4, 8], [3, 7, 11]]))
    codes4 = torch.tensor([[1, 2, 3, 0], [3, 0, 1, 2]])
    # trigram on 4 levels: chunk (c1,c2,c3) and chunk (c4) in the second range [K^3, 2K^3)
    assert torch.equal(S.parameterization_tokens("trigram", torch.tensor([0, 1]), codes4, K, num_buckets=10**6),
                       torch.tensor([[16 + 8 + 3, 64 + 0], [48 + 0 + 1, 64 + 2]]))
    assert torch.equal(S.parameterization_tokens("fourgram", torch.tensor([0, 1]), codes4, K, num_buckets=10**6),
                       torch.tensor([[64 + 32 + 12 + 0], [192 + 0 + 4 + 2]]))
    with pytest.raises(ValueError, match=">= 4 levels"):
        S.token_plan("fourgram", 3, K)


def test_modulus_and_feature_offset():
    H = 7
    assert torch.equal(S.prefix_ngram_tokens(CODES, K, num_buckets=H), torch.tensor([[1, 3, 5], [0, 4, 6], [3, 5, 6]]))
    assert torch.equal(S.prefix_ngram_tokens(CODES, K, num_buckets=H, offset=3),
                       torch.remainder(torch.tensor([[1, 10, 47], [0, 4, 20], [3, 19, 83]]) + 3, H))
    ids = torch.tensor([0, 5, 123456789])
    assert torch.equal(S.random_hash_tokens(ids, 97, seed=3).flatten(), random_hash(ids, 97, 3))
    assert torch.equal(S.individual_tokens(ids[:2], 10).flatten(), ids[:2])
    with pytest.raises(ValueError, match="num_buckets >= num_items"):
        S.individual_tokens(ids, 10, num_buckets=5)


def test_large_codebooks_do_not_overflow():
    # Meta production: L=6, K=2048 -> id space ~2^66; tokens must equal exact big-int arithmetic mod H
    K2, H = 2048, 1_000_003
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, K2, (50, 6), generator=g)
    tokens = S.prefix_ngram_tokens(codes, K2, num_buckets=H)
    for row, tok in zip(codes.tolist(), tokens.tolist()):
        exact = [sum(K2 ** (i - t) * (row[t] + 1) for t in range(i + 1)) - 1 for i in range(6)]
        assert tok == [e % H for e in exact]


def test_numpy_entry_point_matches_torch():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 32, (1000, 4), generator=g)
    for name in S.CODE_PARAMETERIZATIONS:
        plan = S.token_plan(name, 4, 32)
        for H, offset in ((None, 0), (997, 5)):
            expected = S.apply_plan(codes, plan, H, offset)
            got = S.apply_plan_numpy(codes.numpy(), plan, H, offset)
            assert np.array_equal(got, expected.numpy()), name


def test_bad_codes_rejected():
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        S.prefix_ngram_tokens(torch.tensor([[0, 4, 1]]), K)
    with pytest.raises(ValueError, match="2-D"):
        S.apply_plan(torch.tensor([1, 2, 3]), S.token_plan("prefix_ngram", 3, K))
    with pytest.raises(ValueError, match="unknown code parameterization"):
        S.token_plan("bogus", 3, K)
    assert S.tokens_per_id("prefix_ngram", 3) == 3 and S.tokens_per_id("all_bigrams", 3) == 2
    assert S.tokens_per_id("random", 3) == 1
