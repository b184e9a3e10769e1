// Argument checks of the VHPI hash-table ops, shared by the CPU (vhpi_cpu.cpp) and CUDA (vhpi.cu) kernels so
// both reject the same inputs with the same messages.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "common/checks.h"

namespace emb_opt {

// buckets [H] int32 (slot ids), slot_keys [S] int64; slot ids are int32, so S < 2^31.
inline void check_vhpi_table(const at::Tensor& buckets, const at::Tensor& slot_keys, int64_t max_probe) {
  EMB_OPT_CHECK_DTYPE(buckets, at::kInt, "vhpi: buckets");
  EMB_OPT_CHECK_DTYPE(slot_keys, at::kLong, "vhpi: slot_keys");
  EMB_OPT_CHECK_1D(buckets, "vhpi: buckets");
  EMB_OPT_CHECK_1D(slot_keys, "vhpi: slot_keys");
  EMB_OPT_CHECK(buckets.is_contiguous() && slot_keys.is_contiguous(), "vhpi: tables must be contiguous");
  EMB_OPT_CHECK(buckets.numel() > 0, "vhpi: the hash table has no buckets");
  EMB_OPT_CHECK(max_probe >= 1, "vhpi: max_probe must be >= 1, got ", max_probe);
  EMB_OPT_CHECK(slot_keys.numel() <= INT32_MAX, "vhpi: more than 2^31 - 1 slots");
}

// vhpi_lookup_runs: the row index (entry_keys [R] int64, entry_first [R] int32, entry_chunks [R] int8) and the
// queried row keys (int64); contiguous tables.
inline void check_lookup_runs_args(const at::Tensor& buckets, const at::Tensor& entry_keys,
                                   const at::Tensor& entry_first, const at::Tensor& entry_chunks,
                                   const at::Tensor& row_keys, int64_t max_chunks, int64_t max_probe) {
  check_vhpi_table(buckets, entry_keys, max_probe);
  EMB_OPT_CHECK_DTYPE(entry_first, at::kInt, "vhpi_lookup_runs: entry_first");
  EMB_OPT_CHECK_DTYPE(entry_chunks, at::kChar, "vhpi_lookup_runs: entry_chunks");
  EMB_OPT_CHECK_DTYPE(row_keys, at::kLong, "vhpi_lookup_runs: row_keys");
  EMB_OPT_CHECK(entry_first.numel() == entry_keys.numel() && entry_chunks.numel() == entry_keys.numel(),
                "vhpi_lookup_runs: entry_keys, entry_first and entry_chunks must have one value per entry, got ",
                entry_keys.numel(), ", ", entry_first.numel(), " and ", entry_chunks.numel());
  EMB_OPT_CHECK(entry_first.is_contiguous() && entry_chunks.is_contiguous(), "vhpi: tables must be contiguous");
  EMB_OPT_CHECK(max_chunks >= 1 && max_chunks <= 64, "vhpi_lookup_runs: max_chunks must be in [1, 64], got ",
                max_chunks);
}

}  // namespace emb_opt
