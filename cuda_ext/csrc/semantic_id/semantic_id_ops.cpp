// Registration of the semantic-ID op family (CPU impl: semantic_id_cpu.cpp; CUDA impl: semantic_id.cu; argument
// checks: semantic_id_checks.h; the per-id arithmetic: semantic_id_tokens.h; fake (meta) impl: cuda_ext/fake.py;
// reference: cuda_ext/reference/semantic_id.py; caller: semantic_id/transform.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(emb_opt, m) {
  m.set_python_module("cuda_ext.fake");
  // Tokens of raw item ids under a code-based parameterization (a TokenPlan of T <= 16 tokens, Horner forms):
  //   ids [n] int32/int64, codes [N, L] int64 (a row starting with -1 = "no code"); starts / lengths /
  //   token_offsets: T ints each, token_offsets already (plan offset + feature offset) mod H.
  //   token t of id i = (Horner_K over s < lengths[t] of (max(codes[i, starts[t] + s], 0) + add), reduced mod H at
  //   every step, + token_offsets[t]) mod H   -- exactly semantic_id.parameterizations.apply_plan.
  // Returns (tokens [n, T] int64, first_unknown [1] int64): ids that are negative, >= N, or whose code row starts
  // with -1 get -1 in every column; first_unknown = the first such position, -1 if none. No host sync.
  m.def(
      "semantic_id_tokens(Tensor ids, Tensor codes, int[] starts, int[] lengths, int[] token_offsets, int add, "
      "int codebook_size, int num_buckets) -> (Tensor, Tensor)");
}
