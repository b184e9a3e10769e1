"""Pure-PyTorch references of every native operator (same names and signatures as ``torch.ops.emb_opt``).

They are the specification: the C++/CUDA kernels must match them on random inputs, they raise on the same
invalid inputs (index errors as ``IndexError``), and they are what runs when the extension is not built.
"""
from cuda_ext.reference.hashing import mix_hash, mix64, seeded_hash63
from cuda_ext.reference.vhpi import vhpi_insert_, vhpi_lookup_runs, vhpi_rebuild
from cuda_ext.reference.chunk_bag import chunk_bag_backward_update_, chunk_bag_forward, chunk_bag_unique
from cuda_ext.reference.semantic_id import semantic_id_tokens

__all__ = [
    "mix_hash",
    "mix64",
    "seeded_hash63",
    "vhpi_lookup_runs",
    "vhpi_insert_",
    "vhpi_rebuild",
    "chunk_bag_unique",
    "chunk_bag_forward",
    "chunk_bag_backward_update_",
    "semantic_id_tokens",
]
