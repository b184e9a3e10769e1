// CUDA kernels of the chunk-bag op family (schemas and shapes in chunk_bag_ops.cpp, CPU kernels in
// chunk_bag_cpu.cpp, reference in cuda_ext/reference/chunk_bag.py). Device code: chunk_bag_unique_kernels.cuh
// (sort-based dedupe) and chunk_bag_kernels.cuh (fused forward; backward fused with the optimizer).
//
// Contracts that differ from the CPU kernels (everything not listed here is the same):
// chunk_bag_unique(values [nnz] i32/i64, offsets [F*B+1] i64, feature_table [F] i32, table_rows [T] i64, B)
//   * unique rows come in SORTED-KEY order (ascending row key = by table, then row), not first-occurrence
//     order; inverse, unique_offsets, unique_occ (ascending within each row) and occ_bag are consistent with
//     that order. (FIITED's admission does not depend on it: when slots run short it serves rows by candidate
//     utility, ties in a pseudo-random order.)
//   * `bad` = (position, id, feature) of the first (smallest) bad position, as on the CPU; on a bad id the
//     outputs have the CPU's shapes (row_keys, unique_offsets, unique_occ empty; inverse [nnz] unset; occ_bag
//     complete). Offsets and feature_table are validated with the CPU's messages; the op synchronises twice
//     (validation + nnz; then U and `bad`), as any op whose output size depends on the data must.
// chunk_bag_forward(pool [S, c] f32, slots [U, Cmax] i32, inverse [nnz] i32, offsets, weights?, feature_table,
//                   table_chunks [T] i32, feature_cols [F] i64, B, out_dim, mode) -> [B, out_dim] f32
//   * one row group per bag gathers all live chunks of each row at once (float4 when c % 4 == 0); summation
//     per column is in occurrence order, so results are deterministic (and differ from the CPU's only by
//     fused multiply-add rounding).
//   * a chunk reads as zero where its slot is -1 (the CPU stops at a row's first -1; the same on every valid
//     input, where live chunks are a prefix).
//   * no device value is read back (no synchronisation): offsets are clamped into [0, nnz] instead of being
//     checked, a feature whose table is out of range or whose columns would pass out_dim is left zero instead
//     of raising, inverse / slot values out of range read as missing. Host-side checks (dtypes, shapes,
//     pooling mode, weights length) are the CPU's.
// chunk_bag_backward_update_(...)  -> (candidate [U] f32, weight_grad [nnz] f32 or empty)
//   * one row group per unique row (rows with > kLongRow occurrences are split into segments whose partial
//     sums are added in segment order): no atomics, deterministic run to run; gradient sums per column are in
//     unique_occ order like the CPU, per-occurrence norms and row-wise Adagrad's sum of squares are reduced
//     over the chunk's lanes as a tree (rounding differs from the CPU's sequential sums, ~1e-7 relative).
//   * device values are not read back: unique_offsets are clamped into [0, nnz], occurrences / bags / columns
//     out of range contribute nothing. Requires each slot to belong to one unique row (row_keys distinct),
//     as chunk_bag_unique + vhpi_lookup guarantee; otherwise updates of a shared slot race.
// All ops: every tensor must be on the same CUDA device; chunk_size <= 128 (c % 4 == 0) or <= 32 otherwise.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <optional>
#include <tuple>

#include "chunk_bag/chunk_bag_kernels.cuh"
#include "chunk_bag/chunk_bag_unique_kernels.cuh"
#include "chunk_bag/chunk_bag_checks.h"
#include "common/checks.h"

namespace emb_opt {
namespace {

using namespace chunk_bag_cuda;  // NOLINT
using cuda::kNone;
using cuda::kThreads;
using UniqueResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

at::Tensor scratch_bytes(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(std::max<size_t>(bytes, 1))}, like.options().dtype(at::kByte));
}

int bit_width(uint64_t x) {
  int bits = 0;
  while (x != 0) ++bits, x >>= 1;
  return bits;
}

[[noreturn]] void raise_bad_feature(const at::Tensor& feature_table, int64_t feature, int64_t num_tables) {
  const int64_t table = feature_table[feature].item<int64_t>();
  EMB_OPT_CHECK(false, "chunk_bag_unique: feature ", feature, " maps to table ", table, " of ", num_tables);
}

template <typename index_t, typename key_t>
UniqueResult unique_sorted(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& feature_table,
                           const at::Tensor& table_rows, const at::Tensor& table_base, int64_t batch_size,
                           int64_t nnz, int64_t total_rows, int64_t bad_feature) {
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto long_opts = values.options().dtype(at::kLong);
  const auto int_opts = values.options().dtype(at::kInt);
  const auto key_opts = values.options().dtype(sizeof(key_t) == 4 ? at::kInt : at::kLong);
  const int64_t num_bags = offsets.numel() - 1;
  auto occ_bag = at::empty({nnz}, int_opts);
  auto keys = at::empty({nnz}, long_opts);
  auto sort_in = at::empty({nnz}, key_opts), sort_out = at::empty({nnz}, key_opts);
  auto positions = at::empty({nnz}, int_opts), sorted_positions = at::empty({nnz}, int_opts);
  auto status = at::full({2}, kNone, long_opts);  // (first bad position, U)
  auto bad = at::empty({3}, long_opts);
  const int64_t blocks = cuda::blocks_for(nnz);
  unique_keys_kernel<index_t, key_t><<<blocks, kThreads, 0, stream>>>(
      values.data_ptr<index_t>(), nnz, offsets.data_ptr<int64_t>(), num_bags, batch_size,
      feature_table.data_ptr<int32_t>(), table_rows.data_ptr<int64_t>(), table_base.data_ptr<int64_t>(),
      table_rows.numel(), occ_bag.data_ptr<int32_t>(), keys.data_ptr<int64_t>(),
      reinterpret_cast<key_t*>(sort_in.data_ptr()), positions.data_ptr<int32_t>(), status.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const int end_bit = std::max(1, bit_width(static_cast<uint64_t>(std::max<int64_t>(total_rows - 1, 1))));
  const key_t* sort_in_ptr = reinterpret_cast<const key_t*>(sort_in.data_ptr());
  key_t* sort_out_ptr = reinterpret_cast<key_t*>(sort_out.data_ptr());
  auto head = at::empty({nnz}, int_opts), unique_plus1 = at::empty({nnz}, int_opts);
  const int n = static_cast<int>(nnz);
  size_t sort_bytes = 0, scan_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, sort_in_ptr, sort_out_ptr,
                                                 positions.data_ptr<int32_t>(), sorted_positions.data_ptr<int32_t>(),
                                                 n, 0, end_bit, stream));
  C10_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, head.data_ptr<int32_t>(),
                                               unique_plus1.data_ptr<int32_t>(), n, stream));
  auto temp = scratch_bytes(std::max(sort_bytes, scan_bytes), values);
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), sort_bytes, sort_in_ptr, sort_out_ptr,
                                                 positions.data_ptr<int32_t>(), sorted_positions.data_ptr<int32_t>(),
                                                 n, 0, end_bit, stream));
  unique_heads_kernel<key_t><<<blocks, kThreads, 0, stream>>>(sort_out_ptr, nnz, head.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  C10_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp.data_ptr(), scan_bytes, head.data_ptr<int32_t>(),
                                               unique_plus1.data_ptr<int32_t>(), n, stream));
  unique_finalize_kernel<index_t><<<1, 1, 0, stream>>>(values.data_ptr<index_t>(), occ_bag.data_ptr<int32_t>(),
                                                       batch_size, unique_plus1.data_ptr<int32_t>(), nnz,
                                                       status.data_ptr<int64_t>(), bad.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const auto host = cuda::read_back(status);
  const int64_t bad_pos = host[0], num_unique = host[1];
  if (bad_feature != kNone) {  // the CPU raises at the feature's first bag unless an earlier id was bad
    const int64_t first_position = offsets[bad_feature * batch_size].item<int64_t>();
    if (bad_pos == kNone || bad_pos >= first_position) raise_bad_feature(feature_table, bad_feature, table_rows.numel());
  }
  auto inverse = at::empty({nnz}, int_opts);
  if (bad_pos != kNone) {
    return {at::empty({0}, long_opts), inverse, at::empty({0}, long_opts), at::empty({0}, int_opts), occ_bag, bad};
  }
  auto row_keys = at::empty({num_unique}, long_opts);
  auto unique_offsets = at::empty({num_unique + 1}, long_opts);
  unique_scatter_kernel<<<blocks, kThreads, 0, stream>>>(
      sorted_positions.data_ptr<int32_t>(), unique_plus1.data_ptr<int32_t>(), keys.data_ptr<int64_t>(), nnz,
      num_unique, inverse.data_ptr<int32_t>(), row_keys.data_ptr<int64_t>(), unique_offsets.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {row_keys, inverse, unique_offsets, sorted_positions, occ_bag, bad};
}

UniqueResult chunk_bag_unique_cuda(const at::Tensor& values, const at::Tensor& offsets,
                                   const at::Tensor& feature_table, const at::Tensor& table_rows,
                                   int64_t batch_size) {
  EMB_OPT_CHECK_INDEX_DTYPE(values, "chunk_bag_unique: values");
  EMB_OPT_CHECK_DTYPE(feature_table, at::kInt, "chunk_bag_unique: feature_table");
  EMB_OPT_CHECK_DTYPE(table_rows, at::kLong, "chunk_bag_unique: table_rows");
  EMB_OPT_CHECK(batch_size >= 0, "chunk_bag_unique: batch_size must be >= 0");
  EMB_OPT_CHECK_DTYPE(offsets, at::kLong, "chunk_bag: offsets");
  cuda::check_device("chunk_bag_unique", values.device(),
                     {{"offsets", &offsets}, {"feature_table", &feature_table}, {"table_rows", &table_rows}});
  c10::cuda::CUDAGuard guard(values.device());
  auto v = values.contiguous();
  auto o = offsets.contiguous();
  auto ft = feature_table.contiguous();
  auto tr = table_rows.contiguous();
  const int64_t num_features = ft.numel(), num_tables = tr.numel();
  const int64_t num_bags = num_features * batch_size;
  EMB_OPT_CHECK(o.numel() == num_bags + 1, "chunk_bag: offsets must have F*B+1 = ", num_bags + 1, " entries, got ",
              o.numel());
  const auto long_opts = v.options().dtype(at::kLong);
  auto table_base = at::empty({std::max<int64_t>(num_tables, 1)}, long_opts);
  auto status = at::full({5}, kNone, long_opts);
  unique_meta_kernel<<<cuda::blocks_for(std::max(num_bags, num_features)), kThreads, 0,
                       c10::cuda::getCurrentCUDAStream()>>>(o.data_ptr<int64_t>(), num_bags, ft.data_ptr<int32_t>(),
                                                            num_features, tr.data_ptr<int64_t>(), num_tables,
                                                            table_base.data_ptr<int64_t>(), status.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const auto st = cuda::read_back(status);
  const int64_t nnz = st[0];
  EMB_OPT_CHECK(st[1] == 0, "chunk_bag: offsets[0] must be 0, got ", st[1]);
  EMB_OPT_CHECK(nnz <= v.numel(), "chunk_bag: offsets[-1] = ", nnz, " exceeds the ", v.numel(), " values");
  EMB_OPT_CHECK(st[2] == kNone, "chunk_bag: offsets decrease at bag ", st[2]);
  EMB_OPT_CHECK(nnz <= INT32_MAX, "chunk_bag_unique: more than 2^31 - 1 ids in one batch");
  const int64_t bad_feature = batch_size > 0 ? st[3] : kNone;
  if (nnz == 0) {
    if (bad_feature != kNone) raise_bad_feature(ft, bad_feature, num_tables);
    const auto int_opts = v.options().dtype(at::kInt);
    return {at::empty({0}, long_opts), at::empty({0}, int_opts), at::zeros({1}, long_opts),
            at::empty({0}, int_opts), at::empty({0}, int_opts), at::full({3}, -1, long_opts)};
  }
  const int64_t total_rows = st[4];
  UniqueResult result;
  AT_DISPATCH_INDEX_TYPES(v.scalar_type(), "chunk_bag_unique_cuda", [&] {
    if (total_rows <= (int64_t{1} << 32)) {
      result = unique_sorted<index_t, uint32_t>(v, o, ft, tr, table_base, batch_size, nnz, total_rows, bad_feature);
    } else {
      result = unique_sorted<index_t, uint64_t>(v, o, ft, tr, table_base, batch_size, nnz, total_rows, bad_feature);
    }
  });
  return result;
}

at::Tensor chunk_bag_forward_cuda(const at::Tensor& pool, const at::Tensor& slots, const at::Tensor& inverse,
                                  const at::Tensor& offsets, const std::optional<at::Tensor>& weights,
                                  const at::Tensor& feature_table, const at::Tensor& table_chunks,
                                  const at::Tensor& feature_cols, int64_t batch_size, int64_t out_dim,
                                  int64_t pooling_mode) {
  EMB_OPT_CHECK_DTYPE(pool, at::kFloat, "chunk_bag_forward: pool");
  EMB_OPT_CHECK_DTYPE(slots, at::kInt, "chunk_bag_forward: slots");
  EMB_OPT_CHECK_DTYPE(inverse, at::kInt, "chunk_bag_forward: inverse");
  EMB_OPT_CHECK(pool.dim() == 2 && slots.dim() == 2, "chunk_bag_forward: pool and slots must be 2-D");
  EMB_OPT_CHECK(pooling_mode == 0 || pooling_mode == 1, "chunk_bag_forward: pooling_mode must be 0 or 1");
  EMB_OPT_CHECK_DTYPE(offsets, at::kLong, "chunk_bag: offsets");
  EMB_OPT_CHECK_DTYPE(feature_table, at::kInt, "chunk_bag_forward: feature_table");
  EMB_OPT_CHECK_DTYPE(table_chunks, at::kInt, "chunk_bag_forward: table_chunks");
  EMB_OPT_CHECK_DTYPE(feature_cols, at::kLong, "chunk_bag_forward: feature_cols");
  EMB_OPT_CHECK(batch_size >= 0 && out_dim >= 0, "chunk_bag_forward: batch_size and out_dim must be >= 0");
  const int64_t num_features = feature_table.numel();
  const int64_t num_bags = num_features * batch_size;
  EMB_OPT_CHECK(offsets.numel() == num_bags + 1, "chunk_bag: offsets must have F*B+1 = ", num_bags + 1,
              " entries, got ", offsets.numel());
  EMB_OPT_CHECK(feature_cols.numel() == num_features, "chunk_bag_forward: feature_cols must have one entry per feature");
  at::Tensor w;
  if (weights.has_value() && weights->defined()) {
    w = weights->contiguous();
    EMB_OPT_CHECK_DTYPE(w, at::kFloat, "chunk_bag_forward: weights");
    EMB_OPT_CHECK(w.numel() >= inverse.numel(), "chunk_bag_forward: fewer weights than values");
  }
  cuda::check_device("chunk_bag_forward", pool.device(),
                     {{"slots", &slots}, {"inverse", &inverse}, {"offsets", &offsets}, {"weights", &w},
                      {"feature_table", &feature_table}, {"table_chunks", &table_chunks},
                      {"feature_cols", &feature_cols}});
  c10::cuda::CUDAGuard guard(pool.device());
  auto p = pool.contiguous();
  auto sl = slots.contiguous();
  auto inv = inverse.contiguous();
  auto o = offsets.contiguous();
  auto ft = feature_table.contiguous();
  auto tc = table_chunks.contiguous();
  auto fc = feature_cols.contiguous();
  auto out = at::zeros({batch_size, out_dim}, p.options());
  const int64_t c = p.size(1), max_chunks = sl.size(1);
  if (num_bags == 0 || c == 0 || max_chunks == 0 || out_dim == 0) return out;
  const int vec = (c % 4 == 0 && cuda::aligned16(p.data_ptr())) ? 4 : 1;
  ForwardArgs a;
  a.pool = p.data_ptr<float>();
  a.num_slots = p.size(0);
  a.chunk_size = static_cast<int>(c);
  a.slots = sl.data_ptr<int32_t>();
  a.num_unique = sl.size(0);
  a.max_chunks = static_cast<int>(max_chunks);
  a.inverse = inv.data_ptr<int32_t>();
  a.nnz = inv.numel();
  a.offsets = o.data_ptr<int64_t>();
  a.weights = w.defined() ? w.data_ptr<float>() : nullptr;
  a.feature_table = ft.data_ptr<int32_t>();
  a.table_chunks = tc.data_ptr<int32_t>();
  a.num_tables = tc.numel();
  a.feature_cols = fc.data_ptr<int64_t>();
  a.batch_size = batch_size;
  a.num_bags = num_bags;
  a.out_dim = out_dim;
  a.pooling_mode = static_cast<int>(pooling_mode);
  a.layout = cuda::make_layout("chunk_bag_forward", c, max_chunks, vec);
  a.out = out.data_ptr<float>();
  const int64_t blocks = cuda::blocks_for(num_bags * a.layout.group_size);
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (vec == 4) {
    forward_kernel<4><<<blocks, kThreads, 0, stream>>>(a);
  } else {
    forward_kernel<1><<<blocks, kThreads, 0, stream>>>(a);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> chunk_bag_backward_update_cuda(
    at::Tensor& pool, at::Tensor& optim_state, at::Tensor& slot_utility, const at::Tensor& grad_out,
    const at::Tensor& slots, const at::Tensor& row_keys, const at::Tensor& unique_offsets,
    const at::Tensor& unique_occ, const at::Tensor& occ_bag, const at::Tensor& offsets,
    const std::optional<at::Tensor>& weights, const at::Tensor& table_chunks, const at::Tensor& feature_cols,
    int64_t batch_size, int64_t pooling_mode, int64_t optimizer, double lr, double eps, int64_t utility_rule,
    bool need_weight_grad, const std::optional<at::Tensor>& row_entries) {
  check_backward_update_args(pool, optim_state, slot_utility, optimizer, utility_rule);
  const int64_t c = pool.size(1), num_slots = pool.size(0);
  const at::Tensor entries = check_optimizer_state(pool, optim_state, optimizer, row_entries, row_keys.numel());
  EMB_OPT_CHECK(slot_utility.numel() == num_slots, "chunk_bag_backward: slot_utility must have one entry per slot");
  EMB_OPT_CHECK_DTYPE(slots, at::kInt, "chunk_bag_backward: slots");
  EMB_OPT_CHECK_DTYPE(row_keys, at::kLong, "chunk_bag_backward: row_keys");
  EMB_OPT_CHECK_DTYPE(unique_offsets, at::kLong, "chunk_bag_backward: unique_offsets");
  EMB_OPT_CHECK_DTYPE(unique_occ, at::kInt, "chunk_bag_backward: unique_occ");
  EMB_OPT_CHECK_DTYPE(occ_bag, at::kInt, "chunk_bag_backward: occ_bag");
  EMB_OPT_CHECK_DTYPE(offsets, at::kLong, "chunk_bag: offsets");
  EMB_OPT_CHECK_DTYPE(table_chunks, at::kInt, "chunk_bag_backward: table_chunks");
  EMB_OPT_CHECK_DTYPE(feature_cols, at::kLong, "chunk_bag_backward: feature_cols");
  const int64_t num_unique = row_keys.numel(), nnz = unique_occ.numel();
  EMB_OPT_CHECK(slots.dim() == 2 && slots.size(0) == num_unique, "chunk_bag_backward: slots must be [U, Cmax]");
  EMB_OPT_CHECK(unique_offsets.numel() == num_unique + 1, "chunk_bag_backward: unique_offsets must have U+1 entries");
  EMB_OPT_CHECK(occ_bag.numel() >= nnz, "chunk_bag_backward: occ_bag shorter than unique_occ");
  EMB_OPT_CHECK(offsets.numel() >= 1 && batch_size >= 0, "chunk_bag_backward: offsets must have F*B+1 entries");
  EMB_OPT_CHECK(grad_out.dim() == 2, "chunk_bag_backward: grad_out must be [B, out_dim]");
  at::Tensor w;
  if (weights.has_value() && weights->defined()) {
    w = weights->contiguous();
    EMB_OPT_CHECK_DTYPE(w, at::kFloat, "chunk_bag_backward: weights");
    EMB_OPT_CHECK(w.numel() >= nnz, "chunk_bag_backward: fewer weights than values");
  }
  cuda::check_device("chunk_bag_backward_update_", pool.device(),
                     {{"optim_state", &optim_state}, {"slot_utility", &slot_utility}, {"grad_out", &grad_out},
                      {"slots", &slots}, {"row_keys", &row_keys}, {"unique_offsets", &unique_offsets},
                      {"unique_occ", &unique_occ}, {"occ_bag", &occ_bag}, {"offsets", &offsets}, {"weights", &w},
                      {"table_chunks", &table_chunks}, {"feature_cols", &feature_cols}});
  c10::cuda::CUDAGuard guard(pool.device());
  auto g = grad_out.contiguous().to(at::kFloat);
  auto sl = slots.contiguous();
  auto rk = row_keys.contiguous();
  auto uo = unique_offsets.contiguous();
  auto uocc = unique_occ.contiguous();
  auto ob = occ_bag.contiguous();
  auto o = offsets.contiguous();
  auto tc = table_chunks.contiguous();
  auto fc = feature_cols.contiguous();
  auto candidate = at::empty({num_unique}, pool.options());
  auto weight_grad = need_weight_grad ? at::zeros({nnz}, pool.options()) : at::empty({0}, pool.options());
  const int64_t max_chunks = sl.size(1);
  if (num_unique == 0) return {candidate, weight_grad};
  if (c == 0 || max_chunks == 0) return {candidate.zero_(), weight_grad};
  const bool vec_ok = c % 4 == 0 && cuda::aligned16(pool.data_ptr()) &&
                      (optimizer != 1 || cuda::aligned16(optim_state.data_ptr()));
  const int vec = vec_ok ? 4 : 1;
  BackwardArgs a;
  a.pool = pool.data_ptr<float>();
  a.state = optimizer == 0 ? nullptr : optim_state.data_ptr<float>();
  a.row_entries = entries.defined() ? entries.data_ptr<int32_t>() : nullptr;
  a.utility = slot_utility.data_ptr<float>();
  a.num_slots = num_slots;
  a.chunk_size = static_cast<int>(c);
  a.grad_out = g.data_ptr<float>();
  a.grad_rows = g.size(0);
  a.out_dim = g.size(1);
  a.grad_aligned = cuda::aligned16(g.data_ptr());
  a.slots = sl.data_ptr<int32_t>();
  a.max_chunks = static_cast<int>(max_chunks);
  a.row_keys = rk.data_ptr<int64_t>();
  a.num_unique = num_unique;
  a.unique_offsets = uo.data_ptr<int64_t>();
  a.unique_occ = uocc.data_ptr<int32_t>();
  a.occ_bag = ob.data_ptr<int32_t>();
  a.sorted_bag = nullptr;  // set below, once the stream is known
  a.nnz = nnz;
  a.offsets = o.data_ptr<int64_t>();
  a.num_bags = std::min(o.numel() - 1, fc.numel() * batch_size);  // bags whose feature has columns
  a.weights = w.defined() ? w.data_ptr<float>() : nullptr;
  a.table_chunks = tc.data_ptr<int32_t>();
  a.num_tables = tc.numel();
  a.feature_cols = fc.data_ptr<int64_t>();
  a.batch_size = batch_size;
  a.pooling_mode = static_cast<int>(pooling_mode);
  a.optimizer = static_cast<int>(optimizer);
  a.lr = static_cast<float>(lr);
  a.eps = static_cast<float>(eps);
  a.utility_rule = static_cast<int>(utility_rule);
  a.candidate = candidate.data_ptr<float>();
  a.weight_grad = need_weight_grad ? weight_grad.data_ptr<float>() : nullptr;
  a.seg_start = nullptr;
  a.seg_grad = a.seg_norm = nullptr;
  a.seg_bound = 0;
  a.layout = cuda::make_layout("chunk_bag_backward", c, max_chunks, vec);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int group = a.layout.group_size;
  auto sorted_bag = at::empty({std::max<int64_t>(nnz, 1)}, ob.options());
  if (nnz > 0) {
    sorted_bag_kernel<<<cuda::blocks_for(nnz), kThreads, 0, stream>>>(uocc.data_ptr<int32_t>(), ob.data_ptr<int32_t>(),
                                                                       nnz, sorted_bag.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  a.sorted_bag = sorted_bag.data_ptr<int32_t>();
  at::Tensor seg_start, seg_grad, seg_norm;
  if (nnz > kLongRow) {  // some row may be long: count its segments, then reduce them first
    a.seg_bound = 2 * ((nnz + kLongRow - 1) / kLongRow) + 1;
    seg_start = at::empty({num_unique + 1}, rk.options().dtype(at::kInt));
    auto seg_counts = at::empty({num_unique}, seg_start.options());
    seg_grad = at::empty({a.seg_bound, max_chunks * c}, pool.options());
    seg_norm = at::empty({a.seg_bound, max_chunks}, pool.options());
    segment_counts_kernel<<<cuda::blocks_for(num_unique), kThreads, 0, stream>>>(
        uo.data_ptr<int64_t>(), num_unique, nnz, kLongRow, seg_counts.data_ptr<int32_t>(),
        seg_start.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    size_t bytes = 0;
    int32_t* scan_out = seg_start.data_ptr<int32_t>() + 1;
    C10_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, bytes, seg_counts.data_ptr<int32_t>(), scan_out,
                                                 static_cast<int>(num_unique), stream));
    auto temp = scratch_bytes(bytes, pool);
    C10_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp.data_ptr(), bytes, seg_counts.data_ptr<int32_t>(), scan_out,
                                                 static_cast<int>(num_unique), stream));
    a.seg_start = seg_start.data_ptr<int32_t>();
    a.seg_grad = seg_grad.data_ptr<float>();
    a.seg_norm = seg_norm.data_ptr<float>();
    const int64_t blocks = cuda::blocks_for(a.seg_bound * group);
    if (vec == 4) {
      backward_segments_kernel<4><<<blocks, kThreads, 0, stream>>>(a);
    } else {
      backward_segments_kernel<1><<<blocks, kThreads, 0, stream>>>(a);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const int64_t blocks = cuda::blocks_for(num_unique * group);
  if (vec == 4) {
    backward_rows_kernel<4><<<blocks, kThreads, 0, stream>>>(a);
  } else {
    backward_rows_kernel<1><<<blocks, kThreads, 0, stream>>>(a);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {candidate, weight_grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CUDA, m) {
  m.impl("chunk_bag_unique", &chunk_bag_unique_cuda);
  m.impl("chunk_bag_forward", &chunk_bag_forward_cuda);
  m.impl("chunk_bag_backward_update_", &chunk_bag_backward_update_cuda);
}

}  // namespace emb_opt
