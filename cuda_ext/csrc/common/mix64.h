// 64-bit mixing used by every hash in emb_opt (random-hash baseline, VHPI probe, sketches).
// splitmix64's finalizer (Steele, Lea, Flood 2014): a bijection on uint64 with full avalanche.
// Host and device: the CPU and CUDA kernels must give bit-identical buckets, and the pure-PyTorch
// reference in cuda_ext/reference/hashing.py reproduces it with int64 arithmetic.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define EMB_OPT_HD __host__ __device__ __forceinline__
#else
#define EMB_OPT_HD inline
#endif

namespace emb_opt {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

EMB_OPT_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Seeded 63-bit hash of an id: non-negative when read as int64.
EMB_OPT_HD uint64_t seeded_hash63(uint64_t id, int64_t seed) {
  return mix64(id + static_cast<uint64_t>(seed + 1) * kGolden) >> 1;
}

}  // namespace emb_opt
