"""Hashing: random-hash baselines, collision statistics, and the hash functions the VHPI store uses.

Public API: ``random_hash(ids, num_buckets, seed)``, ``collision_stats``, ``expected_collision_rate``,
``HashingTransform`` and ``HashedEmbeddingBagCollection`` (drop-in TorchRec modules).
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
]


def __getattr__(name: str):  # TorchRec is imported only when the modules are asked for
    if name in ("HashingTransform", "HashedEmbeddingBagCollection", "hashed_table_configs"):
        from hashing import hashed_ebc

        return getattr(hashed_ebc, name)
    raise AttributeError(f"module 'hashing' has no attribute {name!r}")
