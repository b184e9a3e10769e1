// Registration of the hashing op family (CPU impl: hash_cpu.cpp; CUDA impl: hash.cu; argument checks:
// hash_checks.h; fake (meta) impl: cuda_ext/fake.py; reference: cuda_ext/reference/hashing.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(emb_opt, m) {
  m.set_python_module("cuda_ext.fake");
  // Seeded 63-bit hash of every id, reduced mod num_buckets. ids: int32/int64 of any shape, all >= 0.
  // Returns int64 of the same shape. Negative ids are an error naming the first offending position.
  m.def("mix_hash(Tensor ids, int num_buckets, int seed) -> Tensor");
}
