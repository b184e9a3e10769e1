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

}  // namespace emb_opt
