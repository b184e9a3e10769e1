// Registration of the hashing op family (schemas only; CPU impl in hash_cpu.cpp, CUDA in hash.cu).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(emb_opt, m) {
  // Seeded 63-bit hash of every id, reduced mod num_buckets. ids: int32/int64 of any shape, all >= 0.
  // Returns int64 of the same shape. Negative ids are an error naming the first offending position.
  m.def("mix_hash(Tensor ids, int num_buckets, int seed) -> Tensor");
}
