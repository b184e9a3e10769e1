"""Hashing: random-hash baselines, collision statistics, and the hash functions the VHPI store uses.

Public API: ``random_hash(ids, num_buckets, seed)``, ``collision_stats``, ``expected_collision_rate``,
``HashingTransform`` and ``HashedEmbeddingBagCollection`` (drop-in TorchRec modules), and the static frequency
vocabulary baseline (``FrequencyVocabularyTransform``, ``FrequencyVocabularyEmbeddingBagCollection``,
``fit_frequency_vocabularies``, ``feature_id_counts``).
"""
from hashing.random_hash import HASH_METHODS, check_ids, random_hash
from hashing.collisions import CollisionStats, collision_stats, expected_collision_rate

__all__ = [
    "HASH_METHODS",
    "check_ids",
    "random_hash",
    "CollisionStats",
    "collision_stats",
    "expected_collision_rate",
    "HashingTransform",
    "HashedEmbeddingBagCollection",
    "hashed_table_configs",
    "FrequencyVocabularyTransform",
    "FrequencyVocabularyEmbeddingBagCollection",
    "VocabularyPlan",
    "feature_id_counts",
    "fit_frequency_vocabularies",
]
_VOCABULARY = ("FrequencyVocabularyTransform", "FrequencyVocabularyEmbeddingBagCollection", "VocabularyPlan",
               "feature_id_counts", "fit_frequency_vocabularies")


def __getattr__(name: str):  # TorchRec is imported only when the modules are asked for
    if name in ("HashingTransform", "HashedEmbeddingBagCollection", "hashed_table_configs"):
        from hashing import hashed_ebc

        return getattr(hashed_ebc, name)
    if name in _VOCABULARY:
        from hashing import frequency_vocabulary

        return getattr(frequency_vocabulary, name)
    raise AttributeError(f"module 'hashing' has no attribute {name!r}")
