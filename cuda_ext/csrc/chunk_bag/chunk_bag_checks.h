// Argument checks of the chunk-bag ops, shared by the CPU (chunk_bag_cpu.cpp) and CUDA (chunk_bag.cu) kernels:
// one function per op (called by chunk_bag_entry.h for every device) checks devices, dtypes and shapes, then the
// VALUES of every index argument against the tensor it indexes (common/checks.h) and the relations between them
// (chunk_bag_relations.h), before a kernel touches memory. On the CPU every check runs, as O(n) loops; on a device
// each runs as reductions with one read-back, unless the index check mode trusts internal indices
// (common/check_mode.h) -- then the CUDA kernels test each index where they load it (chunk_bag.cu). The device
// paths run in the tests on CPU tensors (common/checks.h: checks_by_loop); on CUDA they were compiled, not run,
// in the session that wrote them.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "chunk_bag/chunk_bag_calls.h"
#include "chunk_bag/chunk_bag_relations.h"
#include "common/check_mode.h"
#include "common/checks.h"
#include "common/layout.h"

namespace emb_opt {

inline std::string tables_what(int64_t num_tables) { return detail::check_message("the ", num_tables, " tables"); }

// ---- pieces shared by several ops ------------------------------------------------------------------------

// offsets [F*B+1] int64 (feature-major bags); their values: check_offsets_facts(..., "bag").
inline void check_offsets_shape(const char* op, const at::Tensor& offsets, int64_t num_bags) {
  EMB_OPT_CHECK_DTYPE(offsets, at::kLong, detail::check_message(op, ": offsets"));
  EMB_OPT_CHECK(offsets.dim() == 1 && offsets.numel() == num_bags + 1, op, ": offsets must have F*B+1 = ",
                num_bags + 1, " entries, got shape ", offsets.sizes());
}

// table_chunks [T] int32 (T <= kMaxTables, checked with the dtypes): each table's chunks per row in [0, Cmax],
// the slot matrix's width.
inline void check_table_chunks(const char* op, const at::Tensor& table_chunks, int64_t max_chunks) {
  check_in_range(op, "table_chunks", table_chunks, 0, max_chunks + 1,
                 detail::check_message("chunks per row, at most the ", max_chunks, " columns of slots"));
}

// ---- chunk_bag_unique ------------------------------------------------------------------------------------

// Devices, dtypes, shapes and the sizes the outputs' int32 indices must hold. Offsets' and feature_table's values
// are checked by each device's kernel before its work (the CPU with offsets_facts and check_feature_table, CUDA
// from its meta kernel's status), with the messages of check_offsets_facts and check_feature_table.
inline UniqueCall check_unique_args(const at::Tensor& values, const at::Tensor& offsets,
                                    const at::Tensor& feature_table, const at::Tensor& table_rows, int64_t batch_size) {
  check_same_device(kUniqueOp, values.device(),
                    {{"offsets", &offsets}, {"feature_table", &feature_table}, {"table_rows", &table_rows}});
  EMB_OPT_CHECK_INDEX_DTYPE(values, "chunk_bag_unique: values");
  EMB_OPT_CHECK_DTYPE(feature_table, at::kInt, "chunk_bag_unique: feature_table");
  EMB_OPT_CHECK_DTYPE(table_rows, at::kLong, "chunk_bag_unique: table_rows");
  EMB_OPT_CHECK(batch_size >= 0, "chunk_bag_unique: batch_size must be >= 0, got ", batch_size);
  EMB_OPT_CHECK(table_rows.numel() <= kMaxTables, "chunk_bag_unique: more than ", kMaxTables, " tables");
  EMB_OPT_CHECK(values.numel() <= INT32_MAX, "chunk_bag_unique: more than 2^31 - 1 ids in one batch");
  const int64_t num_bags = feature_table.numel() * batch_size;
  check_offsets_shape(kUniqueOp, offsets, num_bags);
  EMB_OPT_CHECK(num_bags <= INT32_MAX, "chunk_bag_unique: more than 2^31 - 1 bags");
  UniqueCall call{values.contiguous(), offsets.contiguous(), feature_table.contiguous(), table_rows.contiguous(),
                  batch_size};
  if (checks_internal_indices(table_rows.device())) {
    check_in_range(kUniqueOp, "table_rows", call.table_rows, 0, kMaxRows + 1, "rows a table key can address");
  }
  return call;
}

// feature_table [F] int32: each feature's table in [0, T).
inline void check_feature_table(const char* op, const at::Tensor& feature_table, int64_t num_tables) {
  check_in_range(op, "feature_table", feature_table, 0, num_tables, tables_what(num_tables));
}

// ---- chunk_bag_forward -----------------------------------------------------------------------------------

// feature_cols [F] int64: feature f's columns [feature_cols[f], + table_chunks[feature_table[f]] * c) lie in
// [0, out_dim) (feature_table and table_chunks already checked).
inline void check_forward_columns(const at::Tensor& feature_cols, const at::Tensor& feature_table,
                                  const at::Tensor& table_chunks, int64_t chunk_size, int64_t out_dim) {
  check_in_range(kForwardOp, "feature_cols", feature_cols, 0, out_dim + 1, "first output column of each feature");
  const at::Tensor ends =
      feature_cols + table_chunks.index_select(0, feature_table.to(at::kLong)).to(at::kLong) * chunk_size;
  const int64_t f = first_outside(ends, 0, out_dim + 1);
  if (f >= 0) {
    EMB_OPT_CHECK_INDEX(false, "chunk_bag_forward: feature ", f, "'s columns [", feature_cols[f].item<int64_t>(),
                        ", ", ends[f].item<int64_t>(), ") pass out_dim = ", out_dim);
  }
}

// A chunk pool is float32, bfloat16 or int8 (CPU only so far for the last two: the CUDA kernels read and write
// float32); an int8 pool comes with pool_scale, float32 [S, 1] and contiguous (one scale per chunk slot), and
// the others without one. Returns the scale to use (undefined unless int8).
inline at::Tensor check_pool(const at::Tensor& pool, const std::optional<at::Tensor>& pool_scale, const char* op) {
  const auto dtype = pool.scalar_type();
  EMB_OPT_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kChar, op,
                ": pool must be Float, BFloat16 or Char (int8), got ", dtype);
  EMB_OPT_CHECK(dtype == at::kFloat || !pool.is_cuda(), op, ": pool is ", dtype, " on ", pool.device(),
                ": bfloat16 and int8 chunk pools (FiitedConfig.weight_dtype) train on the CPU only so far; use float32 "
                "on CUDA");
  const bool given = pool_scale.has_value() && pool_scale->defined();
  if (dtype != at::kChar) {
    EMB_OPT_CHECK(!given || pool_scale->numel() == 0, op, ": pool_scale is for int8 pools; this pool is ", dtype);
    return at::Tensor();
  }
  EMB_OPT_CHECK(given, op, ": an int8 pool needs pool_scale (float32 [S, 1], one scale per slot)");
  EMB_OPT_CHECK(pool_scale->device() == pool.device(), op, ": pool_scale must be on ", pool.device(), ", got ",
                pool_scale->device());
  EMB_OPT_CHECK(pool_scale->scalar_type() == at::kFloat, op, ": pool_scale must be Float, got ",
                pool_scale->scalar_type());
  EMB_OPT_CHECK(pool_scale->dim() == 2 && pool_scale->size(0) == pool.size(0) && pool_scale->size(1) == 1 &&
                    pool_scale->is_contiguous(),
                op, ": pool_scale must be contiguous [S, 1] = [", pool.size(0), ", 1], got ", pool_scale->sizes());
  return *pool_scale;
}

inline ForwardCall check_forward_args(const at::Tensor& pool, const at::Tensor& slots, const at::Tensor& inverse,
                                      const at::Tensor& offsets, const std::optional<at::Tensor>& weights,
                                      const at::Tensor& feature_table, const at::Tensor& table_chunks,
                                      const at::Tensor& feature_cols, int64_t batch_size, int64_t out_dim,
                                      int64_t pooling_mode, const std::optional<at::Tensor>& pool_scale) {
  check_same_device(kForwardOp, pool.device(),
                    {{"slots", &slots}, {"inverse", &inverse}, {"offsets", &offsets},
                     {"weights", weights.has_value() ? &*weights : nullptr}, {"feature_table", &feature_table},
                     {"table_chunks", &table_chunks}, {"feature_cols", &feature_cols}});
  at::Tensor scale = check_pool(pool, pool_scale, "chunk_bag_forward");
  EMB_OPT_CHECK_DTYPE(slots, at::kInt, "chunk_bag_forward: slots");
  EMB_OPT_CHECK_DTYPE(inverse, at::kInt, "chunk_bag_forward: inverse");
  EMB_OPT_CHECK_DTYPE(feature_table, at::kInt, "chunk_bag_forward: feature_table");
  EMB_OPT_CHECK_DTYPE(feature_cols, at::kLong, "chunk_bag_forward: feature_cols");
  EMB_OPT_CHECK(pool.dim() == 2 && slots.dim() == 2, "chunk_bag_forward: pool and slots must be 2-D, got shapes ",
                pool.sizes(), " and ", slots.sizes());
  EMB_OPT_CHECK(pooling_mode >= 0 && pooling_mode < kNumPoolingModes, "chunk_bag_forward: pooling_mode must be ",
                kPoolingSum, " (sum) or ", kPoolingMean, " (mean), got ", pooling_mode);
  EMB_OPT_CHECK(batch_size >= 0 && out_dim >= 0, "chunk_bag_forward: batch_size and out_dim must be >= 0");
  const int64_t num_features = feature_table.numel();
  EMB_OPT_CHECK(feature_cols.numel() == num_features, "chunk_bag_forward: feature_cols must have one entry per "
                "feature (", num_features, "), got ", feature_cols.numel());
  ForwardCall in{pool.contiguous(),          slots.contiguous(),        inverse.contiguous(),
                 offsets.contiguous(),       at::Tensor(),              feature_table.contiguous(),
                 table_chunks.contiguous(),  feature_cols.contiguous(), batch_size,
                 out_dim,                    pooling_mode,              scale};
  if (weights.has_value() && weights->defined()) {
    in.weights = weights->contiguous();
    EMB_OPT_CHECK_DTYPE(in.weights, at::kFloat, "chunk_bag_forward: weights");
    EMB_OPT_CHECK(in.weights.numel() == inverse.numel(), "chunk_bag_forward: weights must have one value per id (",
                  inverse.numel(), "), got ", in.weights.numel());
  }
  check_offsets_shape(kForwardOp, in.offsets, num_features * batch_size);
  EMB_OPT_CHECK_DTYPE(table_chunks, at::kInt, "chunk_bag_forward: table_chunks");
  EMB_OPT_CHECK(table_chunks.numel() <= kMaxTables, "chunk_bag_forward: more than ", kMaxTables, " tables");
  if (!checks_internal_indices(pool.device())) return in;
  check_offsets_facts(kForwardOp, "offsets", offsets_facts(in.offsets), inverse.numel(), false, "values", "bag");
  check_in_range(kForwardOp, "inverse", in.inverse, 0, slots.size(0),
                 detail::check_message("the ", slots.size(0), " unique rows of slots"));
  check_slots(kForwardOp, in.slots, pool.size(0));
  check_feature_table(kForwardOp, in.feature_table, table_chunks.numel());
  check_table_chunks(kForwardOp, in.table_chunks, slots.size(1));
  check_forward_columns(in.feature_cols, in.feature_table, in.table_chunks, pool.size(1), out_dim);
  return in;
}

// ---- chunk_bag_backward_update_ --------------------------------------------------------------------------

// pool [S, c], optim_state and slot_utility [S] float32 and contiguous (updated in place); the optimizer's state:
// none for SGD, [S, c] (one per pool float) for Adagrad, [R, 1] (one per index entry) for row-wise Adagrad,
// which also needs row_entries [U] int32 (the entry of each unique row).
inline void check_updated_tensors(const at::Tensor& pool, const at::Tensor& optim_state, const at::Tensor& slot_utility,
                                  int64_t optimizer, const std::optional<at::Tensor>& row_entries, int64_t num_unique) {
  EMB_OPT_CHECK_DTYPE(optim_state, at::kFloat, "chunk_bag_backward_update_: optim_state");
  EMB_OPT_CHECK_DTYPE(slot_utility, at::kFloat, "chunk_bag_backward_update_: slot_utility");
  EMB_OPT_CHECK(pool.is_contiguous() && optim_state.is_contiguous() && slot_utility.is_contiguous(),
                "chunk_bag_backward_update_: pool, optim_state and slot_utility must be contiguous (updated in place)");
  EMB_OPT_CHECK(pool.dim() == 2, "chunk_bag_backward_update_: pool must be 2-D, got shape ", pool.sizes());
  EMB_OPT_CHECK(slot_utility.numel() == pool.size(0), "chunk_bag_backward_update_: slot_utility must have one entry "
                "per pool slot (", pool.size(0), "), got ", slot_utility.numel());
  EMB_OPT_CHECK(optimizer >= 0 && optimizer < kNumOptimizers, "chunk_bag_backward_update_: unknown optimizer code ",
                optimizer);
  if (optimizer == kOptimAdagrad) {
    EMB_OPT_CHECK(optim_state.dim() == 2 && optim_state.size(0) == pool.size(0) && optim_state.size(1) == pool.size(1),
                  "chunk_bag_backward_update_: Adagrad's optim_state must be [S, c] = [", pool.size(0), ", ",
                  pool.size(1), "], got ", optim_state.sizes());
  }
  if (optimizer != kOptimRowwiseAdagrad) return;
  EMB_OPT_CHECK(optim_state.dim() == 2 && optim_state.size(1) == 1,
                "chunk_bag_backward_update_: row-wise Adagrad's optim_state must be [R, 1] (one accumulator per row "
                "entry), got ", optim_state.sizes());
  EMB_OPT_CHECK(row_entries.has_value() && row_entries->defined(),
                "chunk_bag_backward_update_: row-wise Adagrad needs row_entries (the index entry of each unique row)");
  EMB_OPT_CHECK_DTYPE(*row_entries, at::kInt, "chunk_bag_backward_update_: row_entries");
  EMB_OPT_CHECK(row_entries->numel() == num_unique, "chunk_bag_backward_update_: row_entries must have one entry per "
                "unique row (", num_unique, "), got ", row_entries->numel());
}

inline BackwardCall check_backward_update_args(
    const at::Tensor& pool, const at::Tensor& optim_state, const at::Tensor& slot_utility, const at::Tensor& grad_out,
    const at::Tensor& slots, const at::Tensor& row_keys, const at::Tensor& unique_offsets,
    const at::Tensor& unique_occ, const at::Tensor& occ_bag, const at::Tensor& offsets,
    const std::optional<at::Tensor>& weights, const at::Tensor& table_chunks, const at::Tensor& feature_cols,
    int64_t batch_size, int64_t pooling_mode, int64_t optimizer, double lr, double eps, int64_t utility_rule,
    bool need_weight_grad, const std::optional<at::Tensor>& row_entries, int64_t rounding_seed,
    const std::optional<at::Tensor>& pool_scale) {
  const at::Tensor scale = check_pool(pool, pool_scale, "chunk_bag_backward_update_");
  check_same_device(kBackwardOp, pool.device(),
                    {{"optim_state", &optim_state}, {"slot_utility", &slot_utility}, {"grad_out", &grad_out},
                     {"slots", &slots}, {"row_keys", &row_keys}, {"unique_offsets", &unique_offsets},
                     {"unique_occ", &unique_occ}, {"occ_bag", &occ_bag}, {"offsets", &offsets},
                     {"weights", weights.has_value() ? &*weights : nullptr}, {"table_chunks", &table_chunks},
                     {"feature_cols", &feature_cols},
                     {"row_entries", row_entries.has_value() ? &*row_entries : nullptr}});
  const int64_t num_unique = row_keys.numel(), nnz = unique_occ.numel(), num_features = feature_cols.numel();
  check_updated_tensors(pool, optim_state, slot_utility, optimizer, row_entries, num_unique);
  EMB_OPT_CHECK(utility_rule >= 0 && utility_rule < kNumUtilityRules, "chunk_bag_backward_update_: unknown utility "
                "rule ", utility_rule);
  EMB_OPT_CHECK(pooling_mode >= 0 && pooling_mode < kNumPoolingModes, "chunk_bag_backward_update_: pooling_mode "
                "must be ", kPoolingSum, " (sum) or ", kPoolingMean, " (mean), got ", pooling_mode);
  EMB_OPT_CHECK(batch_size >= 0, "chunk_bag_backward_update_: batch_size must be >= 0, got ", batch_size);
  EMB_OPT_CHECK_DTYPE(slots, at::kInt, "chunk_bag_backward_update_: slots");
  EMB_OPT_CHECK_DTYPE(row_keys, at::kLong, "chunk_bag_backward_update_: row_keys");
  EMB_OPT_CHECK_DTYPE(unique_offsets, at::kLong, "chunk_bag_backward_update_: unique_offsets");
  EMB_OPT_CHECK_DTYPE(unique_occ, at::kInt, "chunk_bag_backward_update_: unique_occ");
  EMB_OPT_CHECK_DTYPE(occ_bag, at::kInt, "chunk_bag_backward_update_: occ_bag");
  EMB_OPT_CHECK_DTYPE(table_chunks, at::kInt, "chunk_bag_backward_update_: table_chunks");
  EMB_OPT_CHECK_DTYPE(feature_cols, at::kLong, "chunk_bag_backward_update_: feature_cols");
  EMB_OPT_CHECK(table_chunks.numel() <= kMaxTables, "chunk_bag_backward_update_: more than ", kMaxTables, " tables");
  EMB_OPT_CHECK(slots.dim() == 2 && slots.size(0) == num_unique, "chunk_bag_backward_update_: slots must be [U, Cmax] "
                "with U = ", num_unique, " unique rows, got shape ", slots.sizes());
  EMB_OPT_CHECK(unique_offsets.numel() == num_unique + 1, "chunk_bag_backward_update_: unique_offsets must have U+1 = ",
                num_unique + 1, " entries, got ", unique_offsets.numel());
  EMB_OPT_CHECK(occ_bag.numel() == nnz, "chunk_bag_backward_update_: occ_bag must have one entry per occurrence (",
                nnz, "), got ", occ_bag.numel());
  check_offsets_shape(kBackwardOp, offsets, num_features * batch_size);
  EMB_OPT_CHECK(grad_out.dim() == 2 && grad_out.size(0) == batch_size && at::isFloatingType(grad_out.scalar_type()),
                "chunk_bag_backward_update_: grad_out must be floating [B, out_dim] with B = ", batch_size, ", got ",
                grad_out.scalar_type(), " ", grad_out.sizes());
  BackwardCall in{grad_out.contiguous().to(at::kFloat), slots.contiguous(), row_keys.contiguous(),
                  unique_offsets.contiguous(), unique_occ.contiguous(), occ_bag.contiguous(), offsets.contiguous(),
                  at::Tensor(), table_chunks.contiguous(), feature_cols.contiguous(), at::Tensor(), batch_size,
                  pooling_mode, optimizer, lr, eps, utility_rule, need_weight_grad, rounding_seed, scale};
  if (weights.has_value() && weights->defined()) {
    in.weights = weights->contiguous();
    EMB_OPT_CHECK_DTYPE(in.weights, at::kFloat, "chunk_bag_backward_update_: weights");
    EMB_OPT_CHECK(in.weights.numel() == nnz, "chunk_bag_backward_update_: weights must have one value per occurrence (",
                  nnz, "), got ", in.weights.numel());
  }
  if (optimizer == kOptimRowwiseAdagrad) in.row_entries = row_entries->contiguous();
  if (!checks_internal_indices(pool.device())) return in;
  const int64_t num_tables = table_chunks.numel(), num_entries = optim_state.dim() == 2 ? optim_state.size(0) : 0;
  check_table_chunks(kBackwardOp, in.table_chunks, slots.size(1));
  check_in_range(kBackwardOp, "row_keys", in.row_keys, 0, pack_row_key(num_tables, 0),
                 detail::check_message("row keys of the ", num_tables, " tables"));
  check_slots(kBackwardOp, in.slots, pool.size(0));
  check_offsets_facts(kBackwardOp, "unique_offsets", offsets_facts(in.unique_offsets), nnz, true, "occurrences",
                      "unique row");
  check_in_range(kBackwardOp, "unique_occ", in.unique_occ, 0, nnz, detail::check_message("the ", nnz, " occurrences"));
  check_in_range(kBackwardOp, "occ_bag", in.occ_bag, 0, num_features * batch_size,
                 detail::check_message("the F*B = ", num_features * batch_size, " bags"));
  check_offsets_facts(kBackwardOp, "offsets", offsets_facts(in.offsets), nnz, false, "occurrences", "bag");
  check_in_range(kBackwardOp, "feature_cols", in.feature_cols, 0, in.grad_out.size(1) + 1,
                 "first column of each feature in grad_out");
  check_backward_rows(in, pool.size(1), num_entries);
  return in;
}

}  // namespace emb_opt
