// The chunk-bag ops' entry points, the same for every device: the schema's arguments are checked
// (chunk_bag_checks.h), then the device's kernel runs on the checked call. chunk_bag_cpu.cpp and chunk_bag.cu
// register their kernels with register_chunk_bag.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "chunk_bag/chunk_bag_checks.h"
#include "common/registration.h"

namespace emb_opt {

using UniqueResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using UniqueKernel = UniqueResult (*)(const UniqueCall&);
using ForwardKernel = at::Tensor (*)(const ForwardCall&);
using BackwardKernel = std::tuple<at::Tensor, at::Tensor> (*)(const BackwardCall&, at::Tensor& pool,
                                                             at::Tensor& optim_state, at::Tensor& slot_utility);

template <UniqueKernel kernel>
UniqueResult chunk_bag_unique_op(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& feature_table,
                                 const at::Tensor& table_rows, int64_t batch_size) {
  return kernel(check_unique_args(values, offsets, feature_table, table_rows, batch_size));
}

template <ForwardKernel kernel>
at::Tensor chunk_bag_forward_op(const at::Tensor& pool, const at::Tensor& slots, const at::Tensor& inverse,
                                const at::Tensor& offsets, const std::optional<at::Tensor>& weights,
                                const at::Tensor& feature_table, const at::Tensor& table_chunks,
                                const at::Tensor& feature_cols, int64_t batch_size, int64_t out_dim,
                                int64_t pooling_mode, const std::optional<at::Tensor>& pool_scale) {
  return kernel(check_forward_args(pool, slots, inverse, offsets, weights, feature_table, table_chunks, feature_cols,
                                   batch_size, out_dim, pooling_mode, pool_scale));
}

template <BackwardKernel kernel>
std::tuple<at::Tensor, at::Tensor> chunk_bag_backward_update_op(
    at::Tensor& pool, at::Tensor& optim_state, at::Tensor& slot_utility, const at::Tensor& grad_out,
    const at::Tensor& slots, const at::Tensor& row_keys, const at::Tensor& unique_offsets,
    const at::Tensor& unique_occ, const at::Tensor& occ_bag, const at::Tensor& offsets,
    const std::optional<at::Tensor>& weights, const at::Tensor& table_chunks, const at::Tensor& feature_cols,
    int64_t batch_size, int64_t pooling_mode, int64_t optimizer, double lr, double eps, int64_t utility_rule,
    bool need_weight_grad, const std::optional<at::Tensor>& row_entries, int64_t rounding_seed,
    const std::optional<at::Tensor>& pool_scale) {
  const BackwardCall call = check_backward_update_args(
      pool, optim_state, slot_utility, grad_out, slots, row_keys, unique_offsets, unique_occ, occ_bag, offsets,
      weights, table_chunks, feature_cols, batch_size, pooling_mode, optimizer, lr, eps, utility_rule,
      need_weight_grad, row_entries, rounding_seed, pool_scale);
  return kernel(call, pool, optim_state, slot_utility);
}

// Registers one device's kernels as the three ops' (called in that device's TORCH_LIBRARY_IMPL block).
template <UniqueKernel unique, ForwardKernel forward, BackwardKernel backward>
void register_chunk_bag(torch::Library& m) {
  register_kernels(m, kChunkBagOps, chunk_bag_unique_op<unique>, chunk_bag_forward_op<forward>,
                   chunk_bag_backward_update_op<backward>);
}

}  // namespace emb_opt
