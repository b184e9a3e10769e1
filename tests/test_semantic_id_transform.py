"""SemanticIdTransform (KJT -> KJT) and its EBC wrapper: tokens, lengths, weights, state_dict, errors, unknown ids."""
import pytest
import torch
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

import semantic_id as S
from hashing import random_hash

K = 4
CODES = torch.tensor([[1, 2, 3], [0, 0, 0], [3, 3, 3], [-1, -1, -1]])  # id 3 has no code
PREFIX = {0: [1, 10, 47], 1: [0, 4, 20], 2: [3, 19, 83]}                 # hand-computed, K = 4, no modulus


def kjt(weighted=False):
    # batch of 3: user [7] [8] [] ; item [0, 2] [] [1]; tag [5] [] [6, 6]
    values = torch.tensor([7, 8, 0, 2, 1, 5, 6, 6])
    lengths = torch.tensor([1, 1, 0, 2, 0, 1, 1, 0, 2])
    weights = torch.arange(8, dtype=torch.float) / 10 if weighted else None
    return KeyedJaggedTensor.from_lengths_sync(keys=["user", "item", "tag"], values=values, lengths=lengths,
                                               weights=weights)


def test_prefix_tokens_lengths_and_other_features_untouched():
    transform = S.SemanticIdTransform(CODES, "item", codebook_size=K)
    out = transform(kjt())
    assert out.keys() == ["user", "item", "tag"] and out.stride() == 3
    d = out.to_dict()
    assert d["user"].values().tolist() == [7, 8] and d["user"].lengths().tolist() == [1, 1, 0]
    assert d["tag"].values().tolist() == [5, 6, 6] and d["tag"].lengths().tolist() == [1, 0, 2]
    assert d["item"].values().tolist() == PREFIX[0] + PREFIX[2] + PREFIX[1]
    assert d["item"].lengths().tolist() == [6, 0, 3]  # 3 tokens per id
    assert transform.num_embeddings == K + K**2 + K**3  # natural space when num_buckets is None


@pytest.mark.parametrize("name,expected", [
    ("all_bigrams", {0: [6, 27], 1: [0, 16], 2: [15, 31]}),
    ("ngram", {0: [27], 1: [0], 2: [63]}),
    ("unigram", {0: [1, 6, 11], 1: [0, 4, 8], 2: [3, 7, 11]}),
    ("individual", {0: [0], 1: [1], 2: [2]}),
])
def test_other_parameterizations(name, expected):
    out = S.SemanticIdTransform(CODES[:3], "item", name, num_buckets=100, codebook_size=K)(kjt())
    assert out["item"].values().tolist() == expected[0] + expected[2] + expected[1]


def test_random_hashing_uses_hashing_random_hash():
    out = S.SemanticIdTransform(CODES, "item", "random", num_buckets=11, hash_seed=5)(kjt())
    assert out["item"].values().tolist() == random_hash(torch.tensor([0, 2, 1]), 11, 5).tolist()


def test_modulus_and_weights_repeated_per_token():
    transform = S.SemanticIdTransform(CODES, "item", num_buckets=7, codebook_size=K)
    out = transform(kjt(weighted=True))
    assert out["item"].values().tolist() == [v % 7 for v in PREFIX[0] + PREFIX[2] + PREFIX[1]]
    assert torch.allclose(out["item"].weights(), torch.tensor([.2] * 3 + [.3] * 3 + [.4] * 3))
    assert torch.allclose(out["user"].weights(), torch.tensor([0.0, 0.1]))
    assert torch.allclose(out["tag"].weights(), torch.tensor([0.5, 0.6, 0.7]))


def test_ebc_sum_pools_the_token_rows():
    table = EmbeddingBagConfig(name="t_item", embedding_dim=4, num_embeddings=10, feature_names=["item"])
    transform, ebc = S.semantic_id_pair(table, CODES[:3], num_buckets=50, codebook_size=K)
    assert ebc.embedding_bag_configs()[0].num_embeddings == 50
    features = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.tensor([0, 2, 1]),
                                                   lengths=torch.tensor([2, 0, 1]))
    pooled = ebc(transform(features))["item"]
    weight = ebc.embedding_bags["t_item"].weight
    rows = lambda i: weight[[t % 50 for t in PREFIX[i]]].sum(0)  # noqa: E731
    assert torch.allclose(pooled[0], rows(0) + rows(2), atol=1e-6)
    assert torch.allclose(pooled[1], torch.zeros(4))
    assert torch.allclose(pooled[2], rows(1), atol=1e-6)


def test_state_dict_round_trip_including_added_items():
    transform = S.SemanticIdTransform(CODES, "item", num_buckets=64, codebook_size=K)
    transform.add_items(torch.tensor([3, 6]), codes=torch.tensor([[2, 2, 2], [1, 1, 1]]))
    assert transform.num_items == 7 and transform.codes[4].tolist() == [-1, -1, -1]
    fresh = S.SemanticIdTransform(CODES, "item", num_buckets=64, codebook_size=K)
    fresh.load_state_dict(transform.state_dict())
    assert torch.equal(fresh.codes, transform.codes)
    ids = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.tensor([6, 3]), lengths=torch.tensor([2]))
    assert torch.equal(fresh(ids).values(), transform(ids).values())


def test_errors_name_feature_id_and_range():
    transform = S.SemanticIdTransform(CODES, "item", codebook_size=K)
    bad = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.tensor([0, 9]), lengths=torch.tensor([2]))
    with pytest.raises(ValueError, match=r"'item'.*id 9 .*out of range.*\[0, 4\)"):
        transform(bad)
    no_code = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.tensor([3]), lengths=torch.tensor([1]))
    with pytest.raises(ValueError, match="id 3 .*no semantic-ID code"):
        transform(no_code)
    negative = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.tensor([-2]), lengths=torch.tensor([1]))
    hashing = S.SemanticIdTransform(CODES, "item", codebook_size=K, unknown_id_policy="hash")
    with pytest.raises(ValueError, match="id -2 .*negative"):
        hashing(negative)
    with pytest.raises(ValueError, match="lacks feature 'item'"):
        transform(KeyedJaggedTensor.from_lengths_sync(keys=["x"], values=torch.tensor([0]), lengths=torch.tensor([1])))
    with pytest.raises(ValueError, match="2-D"):
        S.SemanticIdTransform(torch.tensor([1, 2, 3]), "item")
    with pytest.raises(ValueError, match="mixes -1"):
        S.SemanticIdTransform(torch.tensor([[1, -1, 2]]), "item", codebook_size=K)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        S.SemanticIdTransform(torch.tensor([[1, 5, 2]]), "item", codebook_size=K)
    with pytest.raises(ValueError, match=r"state_dict codes must be \[n, 3\], got \(5, 2\)"):
        transform.load_state_dict({"codes": torch.zeros(5, 2, dtype=torch.long)})
    with pytest.raises(ValueError, match="needs num_buckets"):
        S.SemanticIdTransform(CODES, "item", "random")


def test_unknown_ids_fallback_hash_in_reserved_rows():
    H, F = 200, 8
    transform = S.SemanticIdTransform(CODES, "item", num_buckets=H, codebook_size=K, unknown_id_policy="hash",
                                      num_fallback_buckets=F, hash_seed=2)
    assert transform.num_embeddings == H + F
    features = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.tensor([0, 3, 42, 1]),
                                                   lengths=torch.tensor([3, 1]), weights=torch.tensor([1., 2, 3, 4]))
    out = transform(features)
    fallback = (random_hash(torch.tensor([3, 42]), F, 3) + H).tolist()  # one token each, seed hash_seed + 1
    assert out.values().tolist() == PREFIX[0] + fallback + PREFIX[1]
    assert out.lengths().tolist() == [5, 3]
    assert out.weights().tolist() == [1., 1, 1, 2, 3, 4, 4, 4]
    # without reserved rows the fallback bucket is in [0, H)
    shared = S.SemanticIdTransform(CODES, "item", num_buckets=H, codebook_size=K, unknown_id_policy="hash")
    assert shared(features).values()[3].item() == random_hash(torch.tensor([3]), H, 1).item()


def test_new_items_quantized_on_arrival():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(60, 8, generator=g)
    codes, quantizer = S.build_codes(content[:50], 2, 4, method="rqkmeans", return_quantizer=True)
    transform = S.SemanticIdTransform(codes, "item", num_buckets=30, quantizer=quantizer)
    assert transform.codebook_size == 4
    new_ids = torch.arange(50, 60)
    assigned = transform.add_items(new_ids, content[50:])
    assert torch.equal(assigned, S.quantize(quantizer, content[50:]))
    out = transform(KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=new_ids,
                                                        lengths=torch.ones(10, dtype=torch.int32)))
    assert torch.equal(out.values().view(10, 2), S.prefix_ngram_tokens(assigned, 4, num_buckets=30))
    assert "_quantizer" not in dict(transform.named_modules()) and not list(transform.parameters())
    with pytest.raises(ValueError, match="needs a quantizer"):
        S.SemanticIdTransform(codes, "item", codebook_size=4).add_items(new_ids, content[50:])


def test_dlrm_with_semantic_id_collection_trains():
    torch.manual_seed(0)
    tables = [EmbeddingBagConfig(name="t_user", embedding_dim=8, num_embeddings=5, feature_names=["user"]),
              EmbeddingBagConfig(name="t_item", embedding_dim=8, num_embeddings=3, feature_names=["item"])]
    collection = S.SemanticIdEmbeddingBagCollection.from_tables(tables, {"item": CODES[:3]}, num_buckets=16,
                                                                codebook_size=K)
    assert [c.num_embeddings for c in collection.embedding_bag_configs()] == [5, 16]
    model = DLRM(embedding_bag_collection=collection, dense_in_features=2, dense_arch_layer_sizes=[8],
                 over_arch_layer_sizes=[4, 1])
    features = KeyedJaggedTensor.from_lengths_sync(keys=["user", "item"], values=torch.tensor([0, 4, 2, 1]),
                                                   lengths=torch.ones(4, dtype=torch.int32))
    logits = model(torch.randn(2, 2), features)
    assert logits.shape == (2, 1)
    logits.sum().backward()
    grad = collection.collection.embedding_bags["t_item"].weight.grad
    touched = sorted(set((grad.abs().sum(1) > 0).nonzero().flatten().tolist()))
    assert touched == sorted({t % 16 for t in PREFIX[2] + PREFIX[1]})
    # state_dict of the whole model carries the codes table
    assert "sparse_arch.embedding_bag_collection.transforms.0.codes" in model.state_dict()


def test_shared_table_features_get_disjoint_shifts_and_custom_ebc():
    table = EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=3, feature_names=["item", "last_item"])
    built = []

    def factory(tables, **kwargs):  # any EBC-shaped class can sit behind the transform (e.g. a FIITED EBC)
        built.append(kwargs)
        return EmbeddingBagCollection(tables=tables)

    transform, ebc = S.semantic_id_pair(table, CODES[:3], num_buckets=200, codebook_size=K, ebc_cls=factory,
                                        ebc_kwargs={"marker": 1})
    assert built == [{"marker": 1}]
    features = KeyedJaggedTensor.from_lengths_sync(keys=["item", "last_item"], values=torch.tensor([0, 0]),
                                                   lengths=torch.tensor([1, 1]))
    out = transform(features)
    space = K + K**2 + K**3  # 84: the two features' ranges [0, 84) and [84, 168) do not overlap
    assert out["item"].values().tolist() == PREFIX[0]
    assert out["last_item"].values().tolist() == [t + space for t in PREFIX[0]]
    with pytest.raises(ValueError, match="tokens need"):
        small = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10,
                                                                  feature_names=["item"])])
        S.SemanticIdEmbeddingBagCollection(S.SemanticIdTransform(CODES[:3], "item", codebook_size=K), small)
