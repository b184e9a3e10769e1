// CUDA kernel of emb_opt::mix_hash (same buckets as the CPU kernel and the reference).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/mix64.h"
#include "hashing/hash_checks.h"

namespace emb_opt {
namespace {

template <typename index_t>
__global__ void mix_hash_kernel(const index_t* __restrict__ ids, int64_t* __restrict__ out, int64_t n,
                                int64_t num_buckets, int64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = static_cast<int64_t>(seeded_hash63(static_cast<uint64_t>(ids[i]), seed) %
                                  static_cast<uint64_t>(num_buckets));
  }
}

at::Tensor mix_hash_cuda(const at::Tensor& ids, int64_t num_buckets, int64_t seed) {
  check_mix_hash_args(ids, num_buckets);
  c10::cuda::CUDAGuard guard(ids.device());
  auto contiguous = ids.contiguous();
  auto out = at::empty(ids.sizes(), ids.options().dtype(at::kLong));
  const int64_t n = contiguous.numel();
  if (n == 0) return out;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535 * 8);
  AT_DISPATCH_INDEX_TYPES(contiguous.scalar_type(), "mix_hash_cuda", [&] {
    mix_hash_kernel<index_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        contiguous.data_ptr<index_t>(), out.data_ptr<int64_t>(), n, num_buckets, seed);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CUDA, m) { m.impl("mix_hash", &mix_hash_cuda); }

}  // namespace emb_opt
