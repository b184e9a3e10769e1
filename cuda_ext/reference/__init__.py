"""Pure-PyTorch references of every native operator (same names and signatures as ``torch.ops.emb_opt``).

They are the specification: the C++/CUDA kernels must match them on random inputs, and they are what runs
when the extension is not built.
"""
from cuda_ext.reference.hashing import mix_hash, mix64, seeded_hash63

__all__ = ["mix_hash", "mix64", "seeded_hash63"]
