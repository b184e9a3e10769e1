// Relations between the chunk-bag ops' arguments that take a walk over the data: a row's live slots form a prefix,
// each occurrence's columns lie inside grad_out, each row holding chunks has a row-wise Adagrad accumulator.
// That no slot belongs to two unique rows is the caller's invariant, not checked per call (a bitmap over the pool
// would cost about 1% of a CPU training step): the store gives each slot to one row, and a broken invariant makes
// two rows' updates of the slot race (or add up), never an access outside a tensor. The CPU walks the data (O(U x Cmax + nnz), in parallel); a device detects a
// violation with reductions (one read-back per check) and, only then, the CPU walk on host copies raises, so the
// messages are the same on every device. The device paths run in the tests on CPU tensors (common/checks.h:
// checks_by_loop); on CUDA they were compiled, not run, in the session that wrote them.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chunk_bag/chunk_bag_calls.h"
#include "common/checks.h"
#include "common/layout.h"

namespace emb_opt {

// Whether a device's bool flag is set (one read-back).
inline bool flag_set(const at::Tensor& flag) { return flag.item<bool>(); }

// check_slots on the host: a branch-free pass over the matrix (a live slot after a missing one is a prefix break
// unless it starts a row: the breaks are counted, and those at row starts subtracted); only when something is
// wrong, a loop finds and raises for the first bad slot.
inline void walk_slots(const char* op, const at::Tensor& slots, int64_t num_slots) {  // host tensor
  const std::string what = detail::check_message("-1 or one of the pool's ", num_slots, " slots");
  const int64_t rows = slots.size(0), width = slots.size(1), n = slots.numel();
  if (n == 0) return;
  const int32_t* s = slots.data_ptr<int32_t>();
  const int32_t last = static_cast<int32_t>(std::min<int64_t>(num_slots - 1, INT32_MAX));
  const int64_t wrong = at::parallel_reduce(  // values outside + prefix breaks - breaks at row starts
      0, rows, 1 << 14, int64_t{0},
      [&](int64_t begin, int64_t end, int64_t sum) {
        for (int64_t i = begin * width; i < end * width; ++i) sum += (s[i] < -1) | (s[i] > last);
        for (int64_t i = std::max<int64_t>(begin * width, 1); i < end * width; ++i) {
          sum += (s[i - 1] < 0) & (s[i] >= 0);
        }
        for (int64_t u = std::max<int64_t>(begin, 1); u < end; ++u) {
          sum -= (s[u * width - 1] < 0) & (s[u * width] >= 0);
        }
        return sum;
      },
      [](int64_t a, int64_t b) { return a + b; });
  if (wrong == 0) return;
  for (int64_t i = 0; i < n; ++i) {
    const bool broken = i % width != 0 && s[i - 1] < 0 && s[i] >= 0;
    if (s[i] < -1 || s[i] > last) raise_outside(op, "slots", slots, i, -1, num_slots, what);
    EMB_OPT_CHECK_INDEX(!broken, op, ": slots", position_string(slots.sizes(), i), " = ", s[i],
                        " follows a -1 in its row: a row's live slots must be a prefix");
  }
}

// slots [U, Cmax] int32: -1 or a slot of the pool's S, and a row's live slots a prefix.
inline void check_slots(const char* op, const at::Tensor& slots, int64_t num_slots) {
  if (checks_by_loop(slots)) return walk_slots(op, slots, num_slots);
  check_in_range(op, "slots", slots, -1, num_slots, detail::check_message("-1 or one of the pool's ", num_slots,
                                                                           " slots"));
  if (slots.size(1) < 2) return;
  const at::Tensor live = slots.ge(0);  // a live slot after a missing one breaks the prefix
  const int64_t width = slots.size(1);
  const at::Tensor broken = live.narrow(1, 1, width - 1).logical_and(live.narrow(1, 0, width - 1).logical_not());
  if (flag_set(broken.any())) walk_slots(op, slots.cpu(), num_slots);
}

// CPU: the first unique row whose occurrences read grad_out past its width, or which holds chunks but has no
// accumulator in [0, R) (row-wise Adagrad); INT64_MAX if none. Values of every index already checked. First the
// columns each occurrence has left after its feature's first one (a pass in occurrence order, where the bags
// ascend for every input chunk_bag_unique makes, so the feature is found without a division), then the rows.
inline int64_t first_bad_backward_row(const BackwardCall& in, int64_t chunk_size, int64_t batch_size,
                                      int64_t num_entries) {
  const int64_t width = in.slots.size(1), out_dim = in.grad_out.size(1), nnz = in.unique_occ.numel();
  const BackwardArrays x(in);
  const std::unique_ptr<int32_t[]> room(new int32_t[nnz]);  // out_dim - feature_cols[f] fits int32: a tensor width
  at::parallel_for(0, nnz, 1 << 14, [&](int64_t begin, int64_t end) {
    int64_t feature = 0, feature_end = 0;  // bags of `feature`: [feature_end - batch_size, feature_end)
    for (int64_t i = begin; i < end; ++i) {
      const int64_t bag = x.occ_bag[i];
      if (bag >= feature_end || bag < feature_end - batch_size) {
        feature = bag / batch_size;
        feature_end = (feature + 1) * batch_size;
      }
      room[i] = static_cast<int32_t>(std::min<int64_t>(out_dim - x.feature_cols[feature], INT32_MAX));
    }
  });
  return at::parallel_reduce(
      0, in.row_keys.numel(), 256, std::numeric_limits<int64_t>::max(),
      [&](int64_t begin, int64_t end, int64_t found) {
        for (int64_t u = begin; u < std::min(end, found); ++u) {
          const int64_t chunks = x.table_chunks[key_table(x.row_keys[u])], span = chunks * chunk_size;
          const bool holds_chunks = chunks > 0 && x.slots[u * width] >= 0;  // chunks <= width
          const bool needs_entry = holds_chunks && x.row_entries != nullptr;  // row-wise Adagrad
          int bad = static_cast<int>(needs_entry && (x.row_entries[u] < 0 || x.row_entries[u] >= num_entries));
          for (int64_t q = x.unique_offsets[u]; q < x.unique_offsets[u + 1]; ++q) {
            bad |= static_cast<int>(room[x.unique_occ[q]] < span);
          }
          if (bad != 0) return u;
        }
        return found;
      },
      [](int64_t a, int64_t b) { return std::min(a, b); });
}

// Raises for unique row u, found by first_bad_backward_row.
[[noreturn]] inline void raise_bad_backward_row(const BackwardCall& in, int64_t u, int64_t chunk_size,
                                                int64_t batch_size, int64_t num_entries) {
  const BackwardArrays x(in);
  const int64_t span = x.table_chunks[key_table(x.row_keys[u])] * chunk_size, out_dim = in.grad_out.size(1);
  for (int64_t q = x.unique_offsets[u]; q < x.unique_offsets[u + 1]; ++q) {
    const int64_t i = x.unique_occ[q], f = x.occ_bag[i] / batch_size, first = x.feature_cols[f];
    EMB_OPT_CHECK_INDEX(first + span <= out_dim, "chunk_bag_backward_update_: occurrence ", i, " (unique row ", u,
                        ", feature ", f, ") reads grad_out columns [", first, ", ", first + span,
                        "), past its out_dim = ", out_dim);
  }
  raise_outside(kBackwardOp, "row_entries", in.row_entries, u, 0, num_entries,
                detail::check_message("the ", num_entries, " accumulators of optim_state; row ", u, " holds chunks"));
}

// The backward's read-only tensors copied to the host (to walk them for a message).
inline BackwardCall on_host(const BackwardCall& in) {
  BackwardCall host = in;
  for (at::Tensor* t : {&host.grad_out, &host.slots, &host.row_keys, &host.unique_offsets, &host.unique_occ,
                        &host.occ_bag, &host.offsets, &host.weights, &host.table_chunks, &host.feature_cols,
                        &host.row_entries}) {
    if (t->defined()) *t = t->cpu();
  }
  return host;
}

// Device: whether some unique row's occurrences read grad_out past its width, or a row holding chunks has no
// accumulator in [0, R) (first_bad_backward_row's conditions as reductions).
inline at::Tensor any_bad_backward_row(const BackwardCall& in, int64_t chunk_size, int64_t num_entries) {
  const int64_t num_unique = in.row_keys.numel(), nnz = in.unique_occ.numel(), width = in.slots.size(1);
  auto bad = at::zeros({}, in.row_keys.options().dtype(at::kBool));
  if (num_unique == 0 || width == 0) return bad;
  const at::Tensor chunks =
      in.table_chunks.index_select(0, in.row_keys.div(int64_t{1} << (kRowBits + kChunkBits), "floor")).to(at::kLong);
  if (nnz > 0) {
    const at::Tensor counts = in.unique_offsets.narrow(0, 1, num_unique) - in.unique_offsets.narrow(0, 0, num_unique);
    const at::Tensor owner =  // unique row of each unique_occ position
        at::repeat_interleave(counts, /*output_size=*/std::optional<int64_t>(nnz));
    const at::Tensor features =
        in.occ_bag.index_select(0, in.unique_occ.to(at::kLong)).to(at::kLong).div(in.batch_size, "floor");
    const at::Tensor ends = in.feature_cols.index_select(0, features) + chunks.index_select(0, owner) * chunk_size;
    bad = bad.logical_or(ends.gt(in.grad_out.size(1)).any());
  }
  if (in.row_entries.defined()) {
    const at::Tensor holds = chunks.gt(0).logical_and(in.slots.select(1, 0).ge(0));
    const at::Tensor outside = in.row_entries.lt(0).logical_or(in.row_entries.ge(num_entries));
    bad = bad.logical_or(holds.logical_and(outside).any());
  }
  return bad;
}

// Every unique row's occurrences read grad_out inside its width, and with row-wise Adagrad every row holding
// chunks has its accumulator in [0, R) (the values of every index already checked).
inline void check_backward_rows(const BackwardCall& in, int64_t chunk_size, int64_t num_entries) {
  const bool by_loop = checks_by_loop(in.slots);
  if (!by_loop && !flag_set(any_bad_backward_row(in, chunk_size, num_entries))) return;
  const BackwardCall host = by_loop ? in : on_host(in);
  const int64_t bad_row = first_bad_backward_row(host, chunk_size, in.batch_size, num_entries);
  if (bad_row != std::numeric_limits<int64_t>::max()) {
    raise_bad_backward_row(host, bad_row, chunk_size, in.batch_size, num_entries);
  }
}

}  // namespace emb_opt
