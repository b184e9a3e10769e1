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
//     complete). Offsets and feature_table are validated with the CPU's checks (chunk_bag_checks.h) from the
//     meta kernel's status; the op synchronises twice (validation + nnz; then U and `bad`), as any op whose
//     output size depends on the data must.
// chunk_bag_forward(pool [S, c] f32, slots [U, Cmax] i32, inverse [nnz] i32, offsets, weights?, feature_table,
//                   table_chunks [T] i32, feature_cols [F] i64, B, out_dim, mode) -> [B, out_dim] f32
//   * one row group per bag gathers all live chunks of each row at once (float4 when c % 4 == 0); summation
//     per column is in occurrence order, so results are deterministic (and differ from the CPU's only by
//     fused multiply-add rounding).
//   * a chunk reads as zero where its slot is -1 (the CPU stops at a row's first -1; the same on every valid
//     input, where live chunks are a prefix).
//   * argument checks are the CPU's (chunk_bag_checks.h): in index check mode "all" each reads back one value
//     (offsets, inverse, slots and their live prefixes, feature_table, table_chunks, feature_cols). In mode "ids"
//     nothing is read back (no synchronisation), and the kernel tests what it loads: offsets are clamped into
//     [0, nnz], a feature whose table is out of range or whose columns would pass out_dim is left zero, inverse /
//     slot values out of range read as missing.
// chunk_bag_backward_update_(...)  -> (candidate [U] f32, weight_grad [nnz] f32 or empty)
//   * one row group per unique row (rows with > kLongRow occurrences are split into segments whose partial
//     sums are added in segment order): no atomics, deterministic run to run; gradient sums per column are in
//     unique_occ order like the CPU, per-occurrence norms and row-wise Adagrad's sum of squares are reduced
//     over the chunk's lanes as a tree (rounding differs from the CPU's sequential sums, ~1e-7 relative).
//   * argument checks are the CPU's (chunk_bag_checks.h): in index check mode "all" each reads back one value
//     (the ranges of every index, live prefixes, each occurrence's columns inside grad_out, an accumulator for
//     every row holding chunks). In mode "ids" nothing is read back and the kernel tests what
//     it loads: unique_offsets are clamped into [0, nnz], occurrences / bags / columns out of range contribute
//     nothing, a row-wise Adagrad row without an accumulator in [0, R) is not updated, and a slot shared by two
//     unique rows gets racing updates (chunk_bag_unique + vhpi_lookup_runs never produce one).
// All ops: every tensor must be on the same CUDA device; chunk_size <= 128 (c % 4 == 0) or <= 32 otherwise.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <optional>
#include <tuple>

#include "chunk_bag/chunk_bag_entry.h"
#include "chunk_bag/chunk_bag_kernels.cuh"
#include "chunk_bag/chunk_bag_unique_kernels.cuh"

namespace emb_opt {
namespace {

using namespace chunk_bag_cuda;  // NOLINT
using cuda::kNone;
using cuda::kThreads;

at::Tensor scratch_bytes(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(std::max<size_t>(bytes, 1))}, like.options().dtype(at::kByte));
}

int bit_width(uint64_t x) {
  int bits = 0;
  while (x != 0) ++bits, x >>= 1;
  return bits;
}

template <typename index_t, typename key_t>
UniqueResult unique_sorted(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& feature_table,
                           const at::Tensor& table_rows, const at::Tensor& table_base, int64_t batch_size,
                           int64_t nnz, int64_t total_rows) {
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

UniqueResult unique_cuda(const UniqueCall& call) {
  c10::cuda::CUDAGuard guard(call.values.device());
  const at::Tensor &v = call.values, &o = call.offsets, &ft = call.feature_table, &tr = call.table_rows;
  const int64_t batch_size = call.batch_size;
  const int64_t num_features = ft.numel(), num_tables = tr.numel();
  const int64_t num_bags = num_features * batch_size;
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
  check_offsets_facts(kUniqueOp, "offsets", OffsetsFacts{st[1], nnz, st[2] == kNone ? -1 : st[2]}, v.numel(), false,
                      "values", "bag");
  if (st[3] != kNone) raise_outside(kUniqueOp, "feature_table", ft, st[3], 0, num_tables, tables_what(num_tables));
  if (nnz == 0) {
    const auto int_opts = v.options().dtype(at::kInt);
    return {at::empty({0}, long_opts), at::empty({0}, int_opts), at::zeros({1}, long_opts),
            at::empty({0}, int_opts), at::empty({0}, int_opts), at::full({3}, -1, long_opts)};
  }
  const int64_t total_rows = st[4];
  UniqueResult result;
  AT_DISPATCH_INDEX_TYPES(v.scalar_type(), "unique_cuda", [&] {
    if (total_rows <= (int64_t{1} << 32)) {
      result = unique_sorted<index_t, uint32_t>(v, o, ft, tr, table_base, batch_size, nnz, total_rows);
    } else {
      result = unique_sorted<index_t, uint64_t>(v, o, ft, tr, table_base, batch_size, nnz, total_rows);
    }
  });
  return result;
}

at::Tensor forward_cuda(const ForwardCall& in) {
  const int64_t batch_size = in.batch_size, out_dim = in.out_dim;
  c10::cuda::CUDAGuard guard(in.pool.device());
  const at::Tensor &p = in.pool, &sl = in.slots, &inv = in.inverse, &o = in.offsets, &w = in.weights;
  const at::Tensor &ft = in.feature_table, &tc = in.table_chunks, &fc = in.feature_cols;
  const int64_t num_bags = ft.numel() * batch_size;
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
  a.pooling_mode = static_cast<int>(in.pooling_mode);
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

std::tuple<at::Tensor, at::Tensor> backward_cuda(const BackwardCall& in, at::Tensor& pool, at::Tensor& optim_state,
                                                 at::Tensor& slot_utility) {
  const int64_t batch_size = in.batch_size, optimizer = in.optimizer;
  const bool need_weight_grad = in.need_weight_grad;
  c10::cuda::CUDAGuard guard(pool.device());
  const at::Tensor &g = in.grad_out, &sl = in.slots, &rk = in.row_keys, &uo = in.unique_offsets;
  const at::Tensor &uocc = in.unique_occ, &ob = in.occ_bag, &o = in.offsets, &w = in.weights;
  const at::Tensor &tc = in.table_chunks, &fc = in.feature_cols, &entries = in.row_entries;
  const int64_t c = pool.size(1), num_slots = pool.size(0), num_unique = rk.numel(), nnz = uocc.numel();
  auto candidate = at::empty({num_unique}, pool.options());
  auto weight_grad = need_weight_grad ? at::zeros({nnz}, pool.options()) : at::empty({0}, pool.options());
  const int64_t max_chunks = sl.size(1);
  if (num_unique == 0) return {candidate, weight_grad};
  if (c == 0 || max_chunks == 0) return {candidate.zero_(), weight_grad};
  const bool vec_ok = c % 4 == 0 && cuda::aligned16(pool.data_ptr()) &&
                      (optimizer != kOptimAdagrad || cuda::aligned16(optim_state.data_ptr()));
  const int vec = vec_ok ? 4 : 1;
  BackwardArgs a;
  a.pool = pool.data_ptr<float>();
  a.state = optimizer == kOptimSgd ? nullptr : optim_state.data_ptr<float>();
  a.row_entries = entries.defined() ? entries.data_ptr<int32_t>() : nullptr;
  a.num_entries = optimizer == kOptimRowwiseAdagrad ? optim_state.size(0) : 0;
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
  a.num_bags = fc.numel() * batch_size;  // = o.numel() - 1 (checked)
  a.weights = w.defined() ? w.data_ptr<float>() : nullptr;
  a.table_chunks = tc.data_ptr<int32_t>();
  a.num_tables = tc.numel();
  a.feature_cols = fc.data_ptr<int64_t>();
  a.batch_size = batch_size;
  a.pooling_mode = static_cast<int>(in.pooling_mode);
  a.optimizer = static_cast<int>(optimizer);
  a.lr = static_cast<float>(in.lr);
  a.eps = static_cast<float>(in.eps);
  a.utility_rule = static_cast<int>(in.utility_rule);
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

TORCH_LIBRARY_IMPL(emb_opt, CUDA, m) { register_chunk_bag<unique_cuda, forward_cuda, backward_cuda>(m); }

}  // namespace emb_opt
