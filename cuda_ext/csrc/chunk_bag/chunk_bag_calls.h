// The chunk-bag ops' checked calls: each op's arguments once chunk_bag_checks.h has checked them, contiguous, as the
// CPU (chunk_bag_cpu.cpp) and CUDA (chunk_bag.cu) kernels take them; and a backward call's arrays as host pointers.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <cstdint>

#include "common/checks.h"

namespace emb_opt {

constexpr const char* kUniqueOp = "chunk_bag_unique";
constexpr const char* kForwardOp = "chunk_bag_forward";
constexpr const char* kBackwardOp = "chunk_bag_backward_update_";
constexpr std::array<const char*, 3> kChunkBagOps = {kUniqueOp, kForwardOp, kBackwardOp};  // kernels' order


// chunk_bag_unique's arguments, contiguous, once checked (offsets' and feature_table's values by the kernels).
struct UniqueCall {
  at::Tensor values, offsets, feature_table, table_rows;
  int64_t batch_size;
};

// chunk_bag_forward's arguments, contiguous, once checked (weights undefined when absent).
struct ForwardCall {
  at::Tensor pool, slots, inverse, offsets, weights, feature_table, table_chunks, feature_cols;
  int64_t batch_size, out_dim, pooling_mode;
  at::Tensor pool_scale;  // [S, 1] float32 for an int8 pool, else undefined
};

// chunk_bag_backward_update_'s read-only arguments, contiguous (grad_out as float32), once checked; the tensors
// it updates in place (pool, optim_state, slot_utility) are checked contiguous and passed as they are.
struct BackwardCall {
  at::Tensor grad_out, slots, row_keys, unique_offsets, unique_occ, occ_bag, offsets, weights, table_chunks,
      feature_cols, row_entries;  // weights: undefined when absent; row_entries: defined for row-wise Adagrad only
  int64_t batch_size, pooling_mode, optimizer;
  double lr, eps;
  int64_t utility_rule;
  bool need_weight_grad;
  int64_t rounding_seed;  // seeds the stochastic rounding of a bfloat16 / int8 pool's updated weights
  at::Tensor pool_scale;  // [S, 1] float32 for an int8 pool (updated in place with its chunks), else undefined
};

// A checked backward call's read-only arrays as host pointers (the CPU kernel and the CPU checks walk them).
struct BackwardArrays {
  const float *grad_out, *weights;                                            // weights: nullptr when absent
  const int32_t *slots, *unique_occ, *occ_bag, *table_chunks, *row_entries;  // row_entries: nullptr unless row-wise
  const int64_t *row_keys, *unique_offsets, *offsets, *feature_cols;

  explicit BackwardArrays(const BackwardCall& in)
      : grad_out(in.grad_out.data_ptr<float>()), weights(data_or_null<float>(in.weights)),
        slots(in.slots.data_ptr<int32_t>()), unique_occ(in.unique_occ.data_ptr<int32_t>()),
        occ_bag(in.occ_bag.data_ptr<int32_t>()), table_chunks(in.table_chunks.data_ptr<int32_t>()),
        row_entries(data_or_null<int32_t>(in.row_entries)), row_keys(in.row_keys.data_ptr<int64_t>()),
        unique_offsets(in.unique_offsets.data_ptr<int64_t>()), offsets(in.offsets.data_ptr<int64_t>()),
        feature_cols(in.feature_cols.data_ptr<int64_t>()) {}
};

}  // namespace emb_opt
