// Argument checks of chunk_bag_backward_update_, shared by the CPU (chunk_bag_cpu.cpp) and CUDA (chunk_bag.cu)
// kernels so both reject the same inputs with the same messages.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "common/checks.h"

namespace emb_opt {

// pool [S, c], optim_state and slot_utility float32 and contiguous (updated in place); optimizer in {0, 1, 2}
// (SGD, Adagrad, row-wise Adagrad), utility rule in {0, 1, 2} (freq, grad, freq x grad).
inline void check_backward_update_args(const at::Tensor& pool, const at::Tensor& optim_state,
                                       const at::Tensor& slot_utility, int64_t optimizer, int64_t utility_rule) {
  EMB_OPT_CHECK_DTYPE(pool, at::kFloat, "chunk_bag_backward: pool");
  EMB_OPT_CHECK_DTYPE(optim_state, at::kFloat, "chunk_bag_backward: optim_state");
  EMB_OPT_CHECK_DTYPE(slot_utility, at::kFloat, "chunk_bag_backward: slot_utility");
  EMB_OPT_CHECK(pool.is_contiguous() && optim_state.is_contiguous() && slot_utility.is_contiguous(),
              "chunk_bag_backward: pool, optim_state and slot_utility must be contiguous (updated in place)");
  EMB_OPT_CHECK(optimizer >= 0 && optimizer <= 2, "chunk_bag_backward: unknown optimizer code ", optimizer);
  EMB_OPT_CHECK(utility_rule >= 0 && utility_rule <= 2, "chunk_bag_backward: unknown utility rule ", utility_rule);
  EMB_OPT_CHECK(pool.dim() == 2, "chunk_bag_backward: pool must be 2-D");
}

}  // namespace emb_opt
