// CUDA kernel of emb_opt::semantic_id_tokens (contract in semantic_id_ops.cpp): one thread per id computes its
// T tokens; unknown ids are reduced to the first position with atomicMin. No host synchronisation.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/cuda_helpers.cuh"
#include "semantic_id/semantic_id_checks.h"

namespace emb_opt {
namespace {

using cuda::kNone;
using cuda::kThreads;

template <typename index_t>
__global__ void __launch_bounds__(kThreads)
    semantic_id_tokens_kernel(const index_t* __restrict__ ids, int64_t n, const int64_t* __restrict__ codes,
                              int64_t num_items, const __grid_constant__ SemanticIdPlan plan, int64_t* __restrict__ out,
                              int64_t* __restrict__ first_unknown) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!write_semantic_id_tokens(plan, static_cast<int64_t>(ids[i]), codes, num_items, out + i * plan.num_tokens)) {
      atomicMin(reinterpret_cast<unsigned long long*>(first_unknown), static_cast<unsigned long long>(i));
    }
  }
}

std::tuple<at::Tensor, at::Tensor> semantic_id_tokens_cuda(const at::Tensor& ids, const at::Tensor& codes,
                                                           at::IntArrayRef starts, at::IntArrayRef lengths,
                                                           at::IntArrayRef token_offsets, int64_t add,
                                                           int64_t codebook_size, int64_t num_buckets) {
  cuda::check_device("semantic_id_tokens", ids.device(), {{"codes", &codes}});
  c10::cuda::CUDAGuard guard(ids.device());
  const SemanticIdTokensCall call =
      prepare_semantic_id_tokens(ids, codes, starts, lengths, token_offsets, add, codebook_size, num_buckets);
  auto status = at::full({1}, kNone, call.ids.options().dtype(at::kLong));
  if (call.n > 0) {
    AT_DISPATCH_INDEX_TYPES(call.ids.scalar_type(), "semantic_id_tokens_cuda", [&] {
      semantic_id_tokens_kernel<index_t><<<cuda::blocks_for(call.n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          call.ids.data_ptr<index_t>(), call.n, call.codes.data_ptr<int64_t>(), call.codes.size(0), call.plan,
          call.tokens.data_ptr<int64_t>(), status.data_ptr<int64_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {call.tokens, at::where(status == kNone, at::full_like(status, -1), status)};
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CUDA, m) { m.impl("semantic_id_tokens", &semantic_id_tokens_cuda); }

}  // namespace emb_opt
