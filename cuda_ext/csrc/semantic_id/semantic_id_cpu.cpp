// CPU kernel of emb_opt::semantic_id_tokens (contract in semantic_id_ops.cpp): parallel over ids.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>

#include "semantic_id/semantic_id_checks.h"

namespace emb_opt {
namespace {

template <typename index_t>
int64_t tokens_kernel(const index_t* ids, int64_t n, const int64_t* codes, int64_t num_items,
                      const SemanticIdPlan& plan, int64_t* out) {
  std::atomic<int64_t> first_unknown{INT64_MAX};
  at::parallel_for(0, n, 1 << 12, [&](int64_t begin, int64_t end) {
    int64_t mine = INT64_MAX;
    for (int64_t i = begin; i < end; ++i) {
      if (!write_semantic_id_tokens(plan, static_cast<int64_t>(ids[i]), codes, num_items, out + i * plan.num_tokens)) {
        mine = std::min(mine, i);
      }
    }
    int64_t seen = first_unknown.load();
    while (mine < seen && !first_unknown.compare_exchange_weak(seen, mine)) {
    }
  });
  const int64_t first = first_unknown.load();
  return first == INT64_MAX ? -1 : first;
}

std::tuple<at::Tensor, at::Tensor> semantic_id_tokens_cpu(const at::Tensor& ids, const at::Tensor& codes,
                                                          at::IntArrayRef starts, at::IntArrayRef lengths,
                                                          at::IntArrayRef token_offsets, int64_t add,
                                                          int64_t codebook_size, int64_t num_buckets) {
  const SemanticIdTokensCall call =
      prepare_semantic_id_tokens(ids, codes, starts, lengths, token_offsets, add, codebook_size, num_buckets);
  int64_t first = -1;
  AT_DISPATCH_INDEX_TYPES(call.ids.scalar_type(), "semantic_id_tokens_cpu", [&] {
    first = tokens_kernel<index_t>(call.ids.data_ptr<index_t>(), call.n, call.codes.data_ptr<int64_t>(),
                                   call.codes.size(0), call.plan, call.tokens.data_ptr<int64_t>());
  });
  return {call.tokens, at::full({1}, first, call.ids.options().dtype(at::kLong))};
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CPU, m) { m.impl("semantic_id_tokens", &semantic_id_tokens_cpu); }

}  // namespace emb_opt
