// Argument checks of mix_hash, shared by the CPU (hash_cpu.cpp) and CUDA (hash.cu) kernels.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "common/checks.h"

namespace emb_opt {

// ids int32/int64 of any shape, all >= 0 (user-facing: checked in every index check mode, a negative id raises
// ValueError as in the reference); num_buckets >= 1.
inline void check_mix_hash_args(const at::Tensor& ids, int64_t num_buckets) {
  EMB_OPT_CHECK_INDEX_DTYPE(ids, "mix_hash: ids");
  EMB_OPT_CHECK(num_buckets >= 1, "mix_hash: num_buckets must be >= 1, got ", num_buckets);
  const int64_t bad = first_outside(ids, 0, kUnbounded);
  if (bad >= 0) {
    EMB_OPT_CHECK_VALUE(false, "mix_hash: ids must be >= 0, got ids", position_string(ids.sizes(), bad), " = ",
                  ids.reshape({-1})[bad].item<int64_t>());
  }
}

}  // namespace emb_opt
