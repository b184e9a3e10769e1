// CPU kernel of emb_opt::mix_hash: bucket = seeded_hash63(id, seed) % num_buckets.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/mix64.h"

namespace emb_opt {
namespace {

template <typename index_t>
void mix_hash_kernel(const index_t* ids, int64_t* out, int64_t n, int64_t num_buckets, int64_t seed) {
  at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out[i] = static_cast<int64_t>(seeded_hash63(static_cast<uint64_t>(ids[i]), seed) %
                                    static_cast<uint64_t>(num_buckets));
    }
  });
}

at::Tensor mix_hash_cpu(const at::Tensor& ids, int64_t num_buckets, int64_t seed) {
  EMB_OPT_CHECK_INDEX_DTYPE(ids, "mix_hash: ids");
  EMB_OPT_CHECK(num_buckets >= 1, "mix_hash: num_buckets must be >= 1, got ", num_buckets);
  auto contiguous = ids.contiguous();
  auto out = at::empty(ids.sizes(), ids.options().dtype(at::kLong));
  const int64_t n = contiguous.numel();
  if (n == 0) return out;
  auto min_value = contiguous.min().item<int64_t>();
  if (min_value < 0) {
    auto flat = contiguous.reshape({-1});
    auto position = (flat < 0).nonzero().select(1, 0)[0].item<int64_t>();
    EMB_OPT_CHECK(false, "mix_hash: ids must be >= 0, got id ", flat[position].item<int64_t>(),
                " at flat position ", position);
  }
  AT_DISPATCH_INDEX_TYPES(contiguous.scalar_type(), "mix_hash_cpu", [&] {
    mix_hash_kernel<index_t>(contiguous.data_ptr<index_t>(), out.data_ptr<int64_t>(), n, num_buckets, seed);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CPU, m) { m.impl("mix_hash", &mix_hash_cpu); }

}  // namespace emb_opt
