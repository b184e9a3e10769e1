// CPU kernel of emb_opt::mix_hash: bucket = seeded_hash63(id, seed) % num_buckets.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/mix64.h"
#include "hashing/hash_checks.h"

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
  check_mix_hash_args(ids, num_buckets);
  auto contiguous = ids.contiguous();
  auto out = at::empty(ids.sizes(), ids.options().dtype(at::kLong));
  AT_DISPATCH_INDEX_TYPES(contiguous.scalar_type(), "mix_hash_cpu", [&] {
    mix_hash_kernel<index_t>(contiguous.data_ptr<index_t>(), out.data_ptr<int64_t>(), contiguous.numel(),
                             num_buckets, seed);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CPU, m) { m.impl("mix_hash", &mix_hash_cpu); }

}  // namespace emb_opt
