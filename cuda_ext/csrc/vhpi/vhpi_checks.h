// Argument checks of the VHPI hash-table ops, shared by the CPU (vhpi_cpu.cpp) and CUDA (vhpi.cu) kernels so
// both reject the same inputs with the same messages (value checks: common/checks.h, modes: common/check_mode.h).
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <string>

#include "common/check_mode.h"
#include "common/checks.h"
#include "common/layout.h"

namespace emb_opt {

constexpr std::array<const char*, 3> kVhpiOps = {"vhpi_lookup_runs", "vhpi_insert_", "vhpi_rebuild"};  // kernels' order

// A run of up to kMaxChunks slots starting at entry_first must fit int32: entry_first in [0, kMaxRunStart).
constexpr int64_t kMaxRunStart = int64_t{INT32_MAX} - kMaxChunks + 2;

// buckets [H] int32 (indices into keys), keys [S] int64; indices are int32, so S < 2^31.
inline void check_vhpi_table(const char* op, const at::Tensor& buckets, const char* keys_name, const at::Tensor& keys,
                             int64_t max_probe) {
  EMB_OPT_CHECK(buckets.scalar_type() == at::kInt, op, ": buckets must be Int, got ", buckets.scalar_type());
  EMB_OPT_CHECK(keys.scalar_type() == at::kLong, op, ": ", keys_name, " must be Long, got ", keys.scalar_type());
  EMB_OPT_CHECK(buckets.dim() == 1 && keys.dim() == 1, op, ": buckets and ", keys_name, " must be 1-D, got shapes ",
                buckets.sizes(), " and ", keys.sizes());
  EMB_OPT_CHECK(buckets.is_contiguous() && keys.is_contiguous(), op, ": buckets and ", keys_name,
                " must be contiguous");
  EMB_OPT_CHECK(buckets.numel() > 0, op, ": the hash table has no buckets");
  EMB_OPT_CHECK(max_probe >= 1, op, ": max_probe must be >= 1, got ", max_probe);
  EMB_OPT_CHECK(keys.numel() <= INT32_MAX, op, ": more than 2^31 - 1 ", keys_name);
}

// vhpi_lookup_runs: the row index (entry_keys [R] int64, entry_first [R] int32, entry_chunks [R] int8) and the
// queried row keys (int64). Values: bucket contents in [-1, R), entry_chunks in [0, kMaxChunks], entry_first
// in [0, kMaxRunStart). The CPU kernel checks the values a lookup reads as it reads them (the buckets it probes,
// the entries it finds: O(probes), not O(H + R)); a device checks them all here, when the mode asks for it.
inline void check_lookup_runs_args(const at::Tensor& buckets, const at::Tensor& entry_keys,
                                   const at::Tensor& entry_first, const at::Tensor& entry_chunks,
                                   const at::Tensor& row_keys, int64_t max_chunks, int64_t max_probe) {
  constexpr const char* op = "vhpi_lookup_runs";
  check_vhpi_table(op, buckets, "entry_keys", entry_keys, max_probe);
  EMB_OPT_CHECK_DTYPE(entry_first, at::kInt, "vhpi_lookup_runs: entry_first");
  EMB_OPT_CHECK_DTYPE(entry_chunks, at::kChar, "vhpi_lookup_runs: entry_chunks");
  EMB_OPT_CHECK_DTYPE(row_keys, at::kLong, "vhpi_lookup_runs: row_keys");
  EMB_OPT_CHECK(entry_first.numel() == entry_keys.numel() && entry_chunks.numel() == entry_keys.numel(),
                "vhpi_lookup_runs: entry_keys, entry_first and entry_chunks must have one value per entry, got ",
                entry_keys.numel(), ", ", entry_first.numel(), " and ", entry_chunks.numel());
  EMB_OPT_CHECK(entry_first.is_contiguous() && entry_chunks.is_contiguous(),
                "vhpi_lookup_runs: entry_first and entry_chunks must be contiguous");
  EMB_OPT_CHECK(max_chunks >= 1 && max_chunks <= kMaxChunks, "vhpi_lookup_runs: max_chunks must be in [1, ",
                kMaxChunks, "], got ", max_chunks);
  if (checks_by_loop(buckets) || !checks_internal_indices(buckets.device())) return;
  const int64_t num_entries = entry_keys.numel();
  check_in_range(op, "buckets", buckets, -1, num_entries,
                 detail::check_message("-1 or one of the ", num_entries, " entries of entry_keys"));
  check_in_range(op, "entry_chunks", entry_chunks, 0, kMaxChunks + 1, "chunks of a row");
  check_in_range(op, "entry_first", entry_first, 0, kMaxRunStart, "a run's first slot, with room for its run in int32");
}

// vhpi_insert_: slots [n] int32, each a slot of slot_keys that holds a key. Checked in full before anything is
// inserted (on a device: unless the mode trusts internal indices, and then the kernel skips such slots).
inline void check_insert_args(const at::Tensor& buckets, const at::Tensor& slot_keys, const at::Tensor& slots,
                              int64_t max_probe) {
  constexpr const char* op = "vhpi_insert_";
  check_vhpi_table(op, buckets, "slot_keys", slot_keys, max_probe);
  EMB_OPT_CHECK_DTYPE(slots, at::kInt, "vhpi_insert_: slots");
  if (!checks_internal_indices(buckets.device())) return;
  const int64_t num_slots = slot_keys.numel();
  check_in_range(op, "slots", slots, 0, num_slots, detail::check_message("the ", num_slots, " slots of slot_keys"));
  const at::Tensor keys = slot_keys.index_select(0, slots.reshape({-1}).to(at::kLong));
  const int64_t keyless = first_outside(keys, 0, kUnbounded);
  if (keyless >= 0) {
    const int64_t slot = slots.reshape({-1})[keyless].item<int64_t>();
    EMB_OPT_CHECK_INDEX(false, "vhpi_insert_: slots", position_string(slots.sizes(), keyless), " = ", slot,
                  " has no key (slot_keys[", slot, "] = ", keys[keyless].item<int64_t>(), ")");
  }
}

// vhpi_rebuild: slot_keys [S] int64 (a key or -1 per slot) into num_buckets buckets.
inline void check_rebuild_args(const at::Tensor& slot_keys, int64_t num_buckets, int64_t max_probe) {
  EMB_OPT_CHECK_DTYPE(slot_keys, at::kLong, "vhpi_rebuild: slot_keys");
  EMB_OPT_CHECK_1D(slot_keys, "vhpi_rebuild: slot_keys");
  EMB_OPT_CHECK(num_buckets >= 1, "vhpi_rebuild: num_buckets must be >= 1, got ", num_buckets);
  EMB_OPT_CHECK(max_probe >= 1, "vhpi_rebuild: max_probe must be >= 1, got ", max_probe);
  EMB_OPT_CHECK(slot_keys.numel() <= INT32_MAX, "vhpi_rebuild: more than 2^31 - 1 slots");
}

}  // namespace emb_opt
