// The per-id arithmetic of semantic_id_tokens, host and device: the CPU (semantic_id_cpu.cpp) and CUDA
// (semantic_id.cu) kernels both call write_semantic_id_tokens; cuda_ext/reference/semantic_id.py is the same
// arithmetic on tensors.
#pragma once
#include <cstdint>

#include "common/mix64.h"

namespace emb_opt {

constexpr int kMaxSemanticIdTokens = 16;

// The TokenPlan as plain values (passed to CUDA kernels by value).
struct SemanticIdPlan {
  int num_tokens;
  int64_t levels;  // L, columns of codes
  int64_t start[kMaxSemanticIdTokens];
  int64_t length[kMaxSemanticIdTokens];
  int64_t offset[kMaxSemanticIdTokens];
  int64_t add, codebook_size, num_buckets;
};

// Token t of an id whose code row starts at `row` (L entries). Codes below 0 count as 0, as in apply_plan.
EMB_OPT_HD int64_t semantic_id_token(const SemanticIdPlan& plan, const int64_t* row, int t) {
  int64_t v = 0;
  for (int64_t s = plan.start[t]; s < plan.start[t] + plan.length[t]; ++s) {
    const int64_t code = row[s];
    v = (v * plan.codebook_size + (code > 0 ? code : 0) + plan.add) % plan.num_buckets;
  }
  return (v + plan.offset[t]) % plan.num_buckets;
}

// Writes the T tokens of item `id` to dst (-1s for an id outside [0, num_items) or without codes, whose code
// row starts below 0); returns whether the id was known. The per-id body of both kernels.
EMB_OPT_HD bool write_semantic_id_tokens(const SemanticIdPlan& plan, int64_t id, const int64_t* codes,
                                         int64_t num_items, int64_t* dst) {
  const int64_t* row = (id >= 0 && id < num_items) ? codes + id * plan.levels : nullptr;
  const bool known = row != nullptr && row[0] >= 0;
  for (int t = 0; t < plan.num_tokens; ++t) dst[t] = known ? semantic_id_token(plan, row, t) : -1;
  return known;
}

}  // namespace emb_opt
