// How thoroughly the ops validate their index arguments (the idea of FBGEMM's bounds_check_indices mode).
//
//   kAll (default): every op checks every index argument against the tensor it indexes before touching memory,
//         on every device, and raises naming the op, the argument, the first bad position and the valid range.
//   kIds: user-facing ids are still checked (chunk_bag_unique's values, offsets and feature_table, mix_hash's
//         ids, semantic_id_tokens' ids: part of those ops' contracts), and so is everything on the CPU, where the
//         checks are O(n) loops; on CUDA the value checks of INTERNAL indices -- the arguments emb_opt's own ops
//         produce (slots, inverse, unique_offsets, unique_occ, occ_bag, row_entries, row keys, bucket contents,
//         entry runs), validated where they are produced -- are skipped, since each costs a device read-back.
//         The CUDA kernels still test each index they load before using it as an address and skip a bad one
//         (documented per op in the .cu files), so a hostile argument gives wrong numbers, not a wild access.
//
// Set from Python with cuda_ext.set_index_check_mode("all" | "ids"), or with the environment variable
// EMB_OPT_INDEX_CHECKS when the library is loaded (the only way when it was loaded by torch.ops.load_library).
#pragma once
#include <ATen/ATen.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "common/check_message.h"

namespace emb_opt {

enum class IndexCheckMode : int { kAll = 0, kIds = 1 };

inline IndexCheckMode parse_index_check_mode(const char* name) {
  if (std::strcmp(name, "all") == 0) return IndexCheckMode::kAll;
  if (std::strcmp(name, "ids") == 0) return IndexCheckMode::kIds;
  EMB_OPT_CHECK(false, "index check mode must be \"all\" or \"ids\", got \"", name, "\"");
  return IndexCheckMode::kAll;
}

inline const char* index_check_mode_name(IndexCheckMode mode) { return mode == IndexCheckMode::kAll ? "all" : "ids"; }

// The process-wide mode (one instance per loaded library).
inline std::atomic<int>& index_check_mode_state() {
  static std::atomic<int> mode{[] {
    const char* env = std::getenv("EMB_OPT_INDEX_CHECKS");
    return static_cast<int>(env == nullptr || *env == '\0' ? IndexCheckMode::kAll : parse_index_check_mode(env));
  }()};
  return mode;
}

inline IndexCheckMode index_check_mode() { return static_cast<IndexCheckMode>(index_check_mode_state().load()); }
inline void set_index_check_mode(IndexCheckMode mode) { index_check_mode_state().store(static_cast<int>(mode)); }

// Whether an op running on `device` validates the values of its internal index arguments.
inline bool checks_internal_indices(const at::Device& device) {
  return device.is_cpu() || index_check_mode() == IndexCheckMode::kAll;
}

}  // namespace emb_opt
