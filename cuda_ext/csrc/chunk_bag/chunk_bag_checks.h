// Argument checks of chunk_bag_backward_update_, shared by the CPU (chunk_bag_cpu.cpp) and CUDA (chunk_bag.cu)
// kernels so both reject the same inputs with the same messages.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

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

// The optimizer state's shape: none for SGD, [S, c] (one per pool float) for Adagrad, [R, 1] (one per index
// entry) for row-wise Adagrad, which also needs row_entries [U] int32 (the entry of each unique row). Returns
// row_entries contiguous (undefined unless row-wise). The entries' range is checked where the data is
// (the CPU kernel), not on the GPU.
inline at::Tensor check_optimizer_state(const at::Tensor& pool, const at::Tensor& optim_state, int64_t optimizer,
                                        const std::optional<at::Tensor>& row_entries, int64_t num_unique) {
  if (optimizer == 1) {
    EMB_OPT_CHECK(optim_state.dim() == 2 && optim_state.size(0) == pool.size(0) && optim_state.size(1) == pool.size(1),
                  "chunk_bag_backward: Adagrad's optim_state must be [S, c] = [", pool.size(0), ", ", pool.size(1),
                  "], got ", optim_state.sizes());
  }
  if (optimizer != 2) return at::Tensor();
  EMB_OPT_CHECK(optim_state.dim() == 2 && optim_state.size(1) == 1,
                "chunk_bag_backward: row-wise Adagrad's optim_state must be [R, 1] (one accumulator per row entry), "
                "got ", optim_state.sizes());
  EMB_OPT_CHECK(row_entries.has_value() && row_entries->defined(),
                "chunk_bag_backward: row-wise Adagrad needs row_entries (the index entry of each unique row)");
  EMB_OPT_CHECK_DTYPE(*row_entries, at::kInt, "chunk_bag_backward: row_entries");
  EMB_OPT_CHECK(row_entries->numel() == num_unique, "chunk_bag_backward: row_entries must have one entry per "
                "unique row (", num_unique, "), got ", row_entries->numel());
  EMB_OPT_CHECK(row_entries->device() == pool.device(), "chunk_bag_backward: row_entries must be on ", pool.device());
  return row_entries->contiguous();
}

}  // namespace emb_opt
