// Argument checks of semantic_id_tokens and the checked token plan, shared by the CPU (semantic_id_cpu.cpp) and
// CUDA (semantic_id.cu) kernels.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "common/checks.h"
#include "semantic_id/semantic_id_tokens.h"

namespace emb_opt {

inline SemanticIdPlan make_semantic_id_plan(const at::Tensor& ids, const at::Tensor& codes, at::IntArrayRef starts,
                                            at::IntArrayRef lengths, at::IntArrayRef token_offsets, int64_t add,
                                            int64_t codebook_size, int64_t num_buckets) {
  EMB_OPT_CHECK_INDEX_DTYPE(ids, "semantic_id_tokens: ids");
  EMB_OPT_CHECK_DTYPE(codes, at::kLong, "semantic_id_tokens: codes");
  EMB_OPT_CHECK(codes.dim() == 2, "semantic_id_tokens: codes must be [N, L], got shape ", codes.sizes());
  const int64_t T = static_cast<int64_t>(starts.size());
  EMB_OPT_CHECK(T >= 1 && T <= kMaxSemanticIdTokens && lengths.size() == starts.size() &&
                    token_offsets.size() == starts.size(),
                "semantic_id_tokens: starts, lengths and token_offsets must have the same 1..", kMaxSemanticIdTokens,
                " entries, got ", T, ", ", static_cast<int64_t>(lengths.size()), ", ",
                static_cast<int64_t>(token_offsets.size()));
  EMB_OPT_CHECK(codebook_size >= 1 && num_buckets >= 1, "semantic_id_tokens: codebook_size and num_buckets must be >= 1");
  EMB_OPT_CHECK(add == 0 || add == 1, "semantic_id_tokens: add must be 0 or 1, got ", add);
  // v * K + code + add with v < H and code < K must fit int64 (the Python side checks the same, _check_modulus)
  EMB_OPT_CHECK(num_buckets <= (INT64_MAX - 2 * codebook_size) / codebook_size,
                "semantic_id_tokens: num_buckets x codebook_size overflows int64");
  SemanticIdPlan plan;
  plan.num_tokens = static_cast<int>(T);
  plan.levels = codes.size(1);
  plan.add = add;
  plan.codebook_size = codebook_size;
  plan.num_buckets = num_buckets;
  for (int64_t t = 0; t < T; ++t) {
    EMB_OPT_CHECK(starts[t] >= 0 && lengths[t] >= 1 && starts[t] + lengths[t] <= codes.size(1),
                  "semantic_id_tokens: token ", t, " reads code levels [", starts[t], ", ", starts[t] + lengths[t],
                  ") of ", codes.size(1));
    EMB_OPT_CHECK(token_offsets[t] >= 0 && token_offsets[t] < num_buckets, "semantic_id_tokens: token_offsets[", t,
                  "] = ", token_offsets[t], " is not reduced mod ", num_buckets);
    plan.start[t] = starts[t];
    plan.length[t] = lengths[t];
    plan.offset[t] = token_offsets[t];
  }
  return plan;
}

// What both kernels start from: the checked plan, the ids flattened, the code table, the token output [n, T].
struct SemanticIdTokensCall {
  SemanticIdPlan plan;
  at::Tensor ids, codes, tokens;
  int64_t n;
};

inline SemanticIdTokensCall prepare_semantic_id_tokens(const at::Tensor& ids, const at::Tensor& codes,
                                                       at::IntArrayRef starts, at::IntArrayRef lengths,
                                                       at::IntArrayRef token_offsets, int64_t add,
                                                       int64_t codebook_size, int64_t num_buckets) {
  SemanticIdTokensCall call;
  call.plan = make_semantic_id_plan(ids, codes, starts, lengths, token_offsets, add, codebook_size, num_buckets);
  call.ids = ids.contiguous().reshape({-1});
  call.codes = codes.contiguous();
  call.n = call.ids.numel();
  call.tokens = at::empty({call.n, call.plan.num_tokens}, call.ids.options().dtype(at::kLong));
  return call;
}

}  // namespace emb_opt
