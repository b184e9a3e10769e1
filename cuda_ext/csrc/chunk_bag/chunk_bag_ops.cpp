// Registration of the chunk-bag op family: pooled embedding-bag lookup over a VHPI chunk pool, and its
// backward fused with the sparse optimizer and the utility update. CPU impl: chunk_bag_cpu.cpp; CUDA
// impl: chunk_bag.cu; argument checks: chunk_bag_checks.h; fake (meta) impls: cuda_ext/fake.py; pure-PyTorch
// reference: cuda_ext/reference/chunk_bag.py. Integer codes (optimizer, utility rule, pooling): common/layout.h.
//
// Shapes: a KJT with F features and batch B gives values [nnz] and offsets [F*B+1] (feature-major bags).
// feature_table [F] int32 (table of each feature), table_rows [T] int64 (virtual rows), table_chunks [T]
// int32 (chunks per row, C_t = D_t / c), feature_cols [F] int64 (first output column of each feature).
// The batch's distinct (table, row) pairs are U "unique rows" with row keys (common/layout.h);
// slots [U, Cmax] int32 are their live chunk slots (-1 past the live prefix; Cmax >= every table's chunks).
// pool [S, c] float32, or on the CPU bfloat16 or int8 (with pool_scale [S, 1] float32: weight = q * scale;
// cuda_ext/csrc/chunk_bag/pool_codec.h).
// Every index argument is checked against what it indexes before memory is touched (the
// index check mode, common/check_mode.h, says how thoroughly on CUDA): an out-of-range value raises naming the
// op, the argument, its first bad position and the valid range.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(emb_opt, m) {
  m.set_python_module("cuda_ext.fake");
  // Dedupe the batch's ids into unique rows, first-occurrence order (CUDA: sorted-key order). The output sizes
  // depend on the data (nnz = offsets[-1], U). Returns
  // (row_keys [U] int64, inverse [nnz] int32, unique_offsets [U+1] int64, unique_occ [nnz] int32 (occurrences
  //  grouped by unique row, ascending), occ_bag [nnz] int32 (bag of each occurrence),
  //  bad [3] int64 = (position, id, feature) of the first id outside [0, table_rows) or (-1, -1, -1)).
  m.def(
      "chunk_bag_unique(Tensor values, Tensor offsets, Tensor feature_table, Tensor table_rows, int batch_size)"
      " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // out[b, feature_cols[f] + k*c : +c] = pool(mode) over the bag (f, b) of w_i * pool[slots[inverse[i], k]];
  // missing chunks read as zero. pooling_mode: 0 sum, 1 mean. weights: one per id (inverse's length) or None.
  // feature_cols[f] + C_t * c <= out_dim for each feature's table t. -> [B, out_dim] float32
  m.def(
      "chunk_bag_forward(Tensor pool, Tensor slots, Tensor inverse, Tensor offsets, Tensor? weights, "
      "Tensor feature_table, Tensor table_chunks, Tensor feature_cols, int batch_size, int out_dim, "
      "int pooling_mode, Tensor? pool_scale=None) -> Tensor");
  // Backward of chunk_bag_forward fused with the optimizer step on every live chunk of every unique row
  // (optimizer: 0 SGD, 1 Adagrad (state [S, c], per slot), 2 row-wise Adagrad (state [R, 1]: one accumulator
  // per ROW, optim_state[row_entries[u]] for unique row u (its index entry), += mean squared gradient over the
  // row's live dims; as FBGEMM's row-wise Adagrad, whatever the chunk size)), the utility update
  // slot_utility[s] += score (utility_rule: 0 freq = #occurrences, 1 grad = mean per-occurrence gradient
  // norm, 2 freq_grad = sum of per-occurrence gradient norms), and the score the row's first missing chunk
  // would get from the same rule on its (virtual) gradient. Returns (candidate_score [U] float32, 0 for full
  // rows; weight_grad [nnz] float32 if need_weight_grad else empty). row_entries [U] int32: needed by row-wise
  // Adagrad only (each row with live chunks must have one in [0, R), the others -1). grad_out [B, out_dim];
  // weights one per occurrence or None. That no slot appears in two unique rows is the caller's invariant (not
  // checked: the store gives each slot to one row); if broken, the two rows' updates of the slot race or add up.
  // CPU: a row whose gradient (its live chunks and the next one) holds NaN or inf is skipped -- its chunks,
  // optimizer state and utilities stay -- and its candidate_score is NaN. (CUDA: the caller checks first.)
  // A bfloat16 pool: each updated weight is computed in float32 and stored rounded stochastically with the random
  // bits of (rounding_seed, slot, column) (common/stochastic_round.h); an int8 pool: each updated chunk gets the
  // scale max |w| / 127 and its weights are quantized stochastically with the same bits (pool_scale is updated in
  // place); a float32 pool ignores rounding_seed.
  m.def(
      "chunk_bag_backward_update_(Tensor(a!) pool, Tensor(b!) optim_state, Tensor(c!) slot_utility, "
      "Tensor grad_out, Tensor slots, Tensor row_keys, Tensor unique_offsets, Tensor unique_occ, "
      "Tensor occ_bag, Tensor offsets, Tensor? weights, Tensor table_chunks, Tensor feature_cols, "
      "int batch_size, int pooling_mode, int optimizer, float lr, float eps, int utility_rule, "
      "bool need_weight_grad, Tensor? row_entries=None, int rounding_seed=0, Tensor(d!)? pool_scale=None) -> "
      "(Tensor, Tensor)");
}
