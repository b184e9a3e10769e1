"""emb_opt.transformed.TransformedEmbeddingBagCollection: KJT transforms in front of a collection, and the hashed and
semantic-ID collections that are one."""
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

import emb_opt
from emb_opt.transformed import TransformedEmbeddingBagCollection
from hashing import HashedEmbeddingBagCollection, HashingTransform
from semantic_id import SemanticIdEmbeddingBagCollection

TABLES = [EmbeddingBagConfig(name="t_a", embedding_dim=4, num_embeddings=10, feature_names=["a"]),
          EmbeddingBagConfig(name="t_b", embedding_dim=4, num_embeddings=1000, feature_names=["b"])]


def kjt() -> KeyedJaggedTensor:
    return KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.tensor([1, 2, 3, 999, 500, 7]),
                                               lengths=torch.tensor([1, 2, 1, 2]))


def test_forward_is_the_collection_on_the_transformed_features():
    torch.manual_seed(0)
    hashing = HashingTransform({"b": 10}, {"b": 3})
    small = [TABLES[0], EmbeddingBagConfig(name="t_b", embedding_dim=4, num_embeddings=10, feature_names=["b"])]
    collection = EmbeddingBagCollection(small)
    wrapped = TransformedEmbeddingBagCollection([hashing], collection)
    assert list(wrapped.transforms) == [hashing] and wrapped.collection is collection
    assert wrapped.transform(kjt())["b"].values().tolist() == hashing(kjt())["b"].values().tolist()
    torch.testing.assert_close(wrapped(kjt()).values(), collection(hashing(kjt())).values(), rtol=0, atol=0)
    assert wrapped.embedding_bag_configs() == collection.embedding_bag_configs()
    assert wrapped.is_weighted() is False and wrapped.device == collection.device


def test_hashed_and_semantic_id_collections_are_transformed_collections():
    hashed = HashedEmbeddingBagCollection(TABLES, total_row_fraction=0.1)
    assert isinstance(hashed, TransformedEmbeddingBagCollection)
    assert [type(t) for t in hashed.transforms] == [HashingTransform]
    assert [t.num_embeddings for t in hashed.virtual_configs] == [10, 1000]
    assert [t.num_embeddings for t in hashed.collection.embedding_bag_configs()] == [10, 91]
    codes = torch.randint(0, 4, (10, 2), generator=torch.Generator().manual_seed(0))
    sid = SemanticIdEmbeddingBagCollection.from_tables(TABLES, {"a": codes}, num_buckets=16, codebook_size=4)
    assert isinstance(sid, TransformedEmbeddingBagCollection) and len(sid.transforms) == 1
    assert sid(kjt()).values().shape == (2, 8)


def test_memory_report_finds_the_collection_inside():
    fiited = emb_opt.FiitedEmbeddingBagCollection(TABLES, 10**6, chunk_size=2)
    wrapped = TransformedEmbeddingBagCollection([HashingTransform({"b": 1000}, {})], fiited)
    report = emb_opt.memory_report(wrapped)
    assert set(report["module"]) == {"collection"}
    hashed = emb_opt.memory_report(HashedEmbeddingBagCollection(TABLES, row_fraction=0.5))
    assert set(hashed["kind"]) == {"hashed"} and list(hashed["physical_rows"][:2]) == [5, 500]

