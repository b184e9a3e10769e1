// Device kernels of chunk_bag_forward and chunk_bag_backward_update_ (host side and contracts: chunk_bag.cu), one
// file over 400 lines: both kernels are built on the same row-group machinery and argument structs.
//
// Both spread one row of D = C*c floats over a row group of G lanes (common/cuda_helpers.cuh: Lc lanes per
// chunk, one V-float vector per lane, V = 4 when c % 4 == 0 and the buffers are 16-byte aligned):
//   forward:  one group per bag (feature f, sample b); the group walks the bag's occurrences G at a time
//             (lane j loads occurrence j's unique row and weight, shuffles hand them round) and gathers all
//             live chunks of each row in one go, kFwdUnroll occurrences in flight per lane; each lane sums its
//             columns in occurrence order, so results do not depend on scheduling.
//   backward: one group per unique row; each lane sums its columns of the row's gradient over the row's
//             occurrences (in unique_occ order), the chunk's Lc lanes reduce the per-occurrence norm, and the
//             lanes of live chunks apply the optimizer to their slot. A slot belongs to one unique row, so no
//             atomics are needed and the result is deterministic. Rows with more than kLongRow occurrences
//             (hot ids) are split: one group per segment of kLongRow occurrences writes partial sums, then the
//             row's group adds the partials in segment order (still deterministic) and updates.
// Every index read from a tensor is range-checked before it is used as an address: a malformed input gives
// wrong numbers (documented in chunk_bag.cu), never an out-of-bounds access.
#pragma once
#include "common/cuda_helpers.cuh"
#include "common/layout.h"

namespace emb_opt {
namespace chunk_bag_cuda {

using cuda::GroupLayout;
using cuda::Group;
using cuda::Vec;

constexpr int kFwdUnroll = 4;   // occurrences whose chunks one lane loads before using them (forward)
constexpr int kBwdUnroll = 2;   // gradient rows in flight per lane (backward)
constexpr int kLongRow = 128;   // occurrences above which a unique row is split into segments

struct ForwardArgs {
  const float* pool;
  int64_t num_slots;
  int chunk_size;
  const int32_t* slots;
  int64_t num_unique;
  int max_chunks;
  const int32_t* inverse;
  int64_t nnz;
  const int64_t* offsets;
  const float* weights;  // nullptr: unweighted
  const int32_t* feature_table;
  const int32_t* table_chunks;
  int64_t num_tables;
  const int64_t* feature_cols;
  int64_t batch_size;
  int64_t num_bags;
  int64_t out_dim;
  int pooling_mode;
  GroupLayout layout;
  float* out;
};

template <int V>
__global__ void __launch_bounds__(cuda::kThreads) forward_kernel(const ForwardArgs a) {
  const Group g(a.layout.group_size);
  const auto [chunk_in_pass, vec, vec_ok] = cuda::ChunkLane(a.layout, g);
  const int c = a.chunk_size;
  for (int64_t bag = g.index(); bag < a.num_bags; bag += g.count()) {  // uniform within the group
    const int64_t f = bag / a.batch_size;
    const int64_t b = bag - f * a.batch_size;
    const int32_t t = a.feature_table[f];
    int chunks = (t >= 0 && t < a.num_tables) ? min(max(a.table_chunks[t], 0), a.max_chunks) : 0;
    const int64_t col0 = a.feature_cols[f];
    if (col0 < 0 || col0 + static_cast<int64_t>(chunks) * c > a.out_dim) chunks = 0;  // would overflow the row
    const int64_t start = min(max(a.offsets[bag], int64_t{0}), a.nnz);
    const int64_t stop = min(max(a.offsets[bag + 1], start), a.nnz);
    float* dst = a.out + b * a.out_dim + col0;
    const bool dst_aligned = ((b * a.out_dim + col0) & 3) == 0;
    for (int pass = 0; pass < a.layout.passes; ++pass) {
      const int k = pass * a.layout.chunks_per_pass + chunk_in_pass;
      if (pass * a.layout.chunks_per_pass >= chunks) break;  // uniform
      const bool active = vec_ok && k < chunks;
      Vec<V> acc = Vec<V>::zeros();
      for (int64_t base = start; base < stop; base += g.size) {
        const int64_t i = base + g.lane;
        int32_t my_row = -1;
        float my_weight = 1.0f;
        if (i < stop) {
          my_row = a.inverse[i];
          if (a.weights != nullptr) my_weight = a.weights[i];
        }
        const int n = static_cast<int>(min(static_cast<int64_t>(g.size), stop - base));
        for (int j = 0; j < n; j += kFwdUnroll) {
          int32_t slot[kFwdUnroll];
          float weight[kFwdUnroll];
#pragma unroll
          for (int r = 0; r < kFwdUnroll; ++r) {
            const int32_t u = g.shfl(my_row, j + r);
            weight[r] = g.shfl(my_weight, j + r);
            slot[r] = (active && j + r < n && u >= 0 && u < a.num_unique)
                          ? __ldg(a.slots + static_cast<int64_t>(u) * a.max_chunks + k)
                          : -1;
          }
          Vec<V> row[kFwdUnroll];
#pragma unroll
          for (int r = 0; r < kFwdUnroll; ++r) {
            row[r] = Vec<V>::zeros();
            if (slot[r] >= 0 && slot[r] < a.num_slots) row[r].load_ro(a.pool + static_cast<int64_t>(slot[r]) * c + vec * V);
          }
#pragma unroll
          for (int r = 0; r < kFwdUnroll; ++r) {
            if (slot[r] >= 0 && slot[r] < a.num_slots) {
#pragma unroll
              for (int e = 0; e < V; ++e) acc.x[e] += weight[r] * row[r].x[e];
            }
          }
        }
      }
      if (active) {
        if (a.pooling_mode == kPoolingMean && stop > start) {
          const float inv_len = 1.0f / static_cast<float>(stop - start);
#pragma unroll
          for (int e = 0; e < V; ++e) acc.x[e] *= inv_len;
        }
        acc.store(dst + k * c + vec * V, dst_aligned);
      }
    }
  }
}

struct BackwardArgs {
  float* pool;
  float* state;    // [S, c] Adagrad, [R, 1] row-wise Adagrad (one per index entry), unused for SGD
  const int32_t* row_entries;  // [U] row-wise Adagrad: unique row u's accumulator is state[row_entries[u]]
  int64_t num_entries;         // R (row-wise Adagrad)
  float* utility;  // [S]
  int64_t num_slots;
  int chunk_size;
  const float* grad_out;
  int64_t grad_rows;
  int64_t out_dim;
  bool grad_aligned;  // grad_out's base is 16-byte aligned
  const int32_t* slots;
  int max_chunks;
  const int64_t* row_keys;
  int64_t num_unique;
  const int64_t* unique_offsets;
  const int32_t* unique_occ;
  const int32_t* occ_bag;
  const int32_t* sorted_bag;  // [nnz] bag of occurrence unique_occ[q] (-1: invalid), gathered up front
  int64_t nnz;
  const int64_t* offsets;
  int64_t num_bags;
  const float* weights;  // nullptr: unweighted
  const int32_t* table_chunks;
  int64_t num_tables;
  const int64_t* feature_cols;
  int64_t batch_size;
  int pooling_mode;
  int optimizer;
  float lr;
  float eps;
  int utility_rule;
  float* candidate;    // [U]
  float* weight_grad;  // [nnz] (zero-filled) or nullptr
  const int32_t* seg_start;  // [U+1]: long row u owns segments seg_start[u] .. seg_start[u+1]-1
  float* seg_grad;           // [segments, max_chunks * c] partial gradients of long rows
  float* seg_norm;           // [segments, max_chunks] partial sums of per-occurrence norms
  int64_t seg_bound;         // segments allocated
  GroupLayout layout;
};

// sorted_bag[q] = occ_bag[unique_occ[q]] (-1 where unique_occ[q] is out of range): the backward reads the bag
// of each sorted occurrence with one load instead of two dependent ones.
__global__ void sorted_bag_kernel(const int32_t* __restrict__ unique_occ, const int32_t* __restrict__ occ_bag,
                                  int64_t nnz, int32_t* __restrict__ sorted_bag) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < nnz;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t i = unique_occ[q];
    sorted_bag[q] = (i >= 0 && i < nnz) ? occ_bag[i] : -1;
  }
}

struct RowInfo {
  int chunks;  // C_t of the row's table (clamped to max_chunks)
  int live;    // live prefix length
  int64_t first, last;  // occurrences unique_occ[first:last]
};

__device__ __forceinline__ RowInfo row_info(const BackwardArgs& a, const Group& g, int64_t u) {
  RowInfo r;
  // independent loads first (row key, occurrence range, this lane's slot of the first pass): one round trip
  const int64_t key = a.row_keys[u];
  const int64_t first_raw = a.unique_offsets[u], last_raw = a.unique_offsets[u + 1];
  const int32_t first_pass_slot = g.lane < a.max_chunks ? a.slots[u * a.max_chunks + g.lane] : -1;
  const int64_t t = key_table(key);
  r.chunks = (key >= 0 && t < a.num_tables) ? min(max(a.table_chunks[t], 0), a.max_chunks) : 0;
  r.live = r.chunks;
  for (int k0 = 0; k0 < r.chunks; k0 += g.size) {
    const int k = k0 + g.lane;
    bool missing = false;
    if (k < r.chunks) {
      const int32_t s = k0 == 0 ? first_pass_slot : a.slots[u * a.max_chunks + k];
      missing = s < 0 || s >= a.num_slots;
    }
    const unsigned bits = g.ballot(missing);
    if (bits != 0) {
      r.live = k0 + __ffs(bits) - 1;
      break;
    }
  }
  r.first = min(max(first_raw, int64_t{0}), a.nnz);
  r.last = min(max(last_raw, r.first), a.nnz);
  return r;
}

// Adds, for occurrences unique_occ[qb:qe] of a row, this lane's columns of the scaled gradient to `grad` and the
// per-occurrence norms of its chunk to `norm_sum`; adds the per-sample-weight gradients (this pass's chunks) to
// weight_grad. `active`: the lane holds a column of a chunk < last_chunk; `is_live`: of a live chunk (w_old set).
template <int V>
__device__ __forceinline__ void accumulate(const BackwardArgs& a, const Group& g, int64_t qb, int64_t qe, int k,
                                           int vec, bool active, bool is_live, const Vec<V>& w_old, Vec<V>& grad,
                                           float& norm_sum, bool with_weight_grad = true) {
  const int c = a.chunk_size;
  const int col = k * c + vec * V;  // within the feature's columns
  for (int64_t base = qb; base < qe; base += g.size) {
    const int64_t q = base + g.lane;
    int32_t my_occ = -1;
    float my_scale = 0.0f, my_wscale = 1.0f;
    int64_t my_row = 0, my_room = 0;  // grad_out offset of the feature's first column; columns it has
    if (q < qe) {
      const bool need_occ = a.weights != nullptr || (with_weight_grad && a.weight_grad != nullptr);
      const int32_t bag = a.sorted_bag[q];  // -1 when unique_occ[q] is out of range
      const int32_t i = need_occ ? a.unique_occ[q] : static_cast<int32_t>(q);  // else only a validity marker
      if (bag >= 0 && bag < a.num_bags && i >= 0 && i < a.nnz) {
        const int64_t f = bag / a.batch_size;
        const int64_t b = bag - f * a.batch_size;
        const int64_t fcol = a.feature_cols[f];
        if (b < a.grad_rows && fcol >= 0) {
          my_occ = i;
          my_scale = a.weights != nullptr ? a.weights[i] : 1.0f;
          if (a.pooling_mode == kPoolingMean) {
            const int64_t len = a.offsets[bag + 1] - a.offsets[bag];
            const float flen = static_cast<float>(len > 0 ? len : 1);
            my_scale /= flen;
            my_wscale = 1.0f / flen;
          }
          my_row = b * a.out_dim + fcol;
          my_room = a.out_dim - fcol;
        }
      }
    }
    const int n = static_cast<int>(min(static_cast<int64_t>(g.size), qe - base));
    for (int j = 0; j < n; j += kBwdUnroll) {
      int32_t occ[kBwdUnroll];
      float scale[kBwdUnroll], wscale[kBwdUnroll];
      Vec<V> gv[kBwdUnroll];
#pragma unroll
      for (int r = 0; r < kBwdUnroll; ++r) {
        occ[r] = g.shfl(my_occ, j + r);
        scale[r] = g.shfl(my_scale, j + r);
        wscale[r] = g.shfl(my_wscale, j + r);
        const int64_t row = g.shfl(my_row, j + r);
        const int64_t room = g.shfl(my_room, j + r);
        if (j + r >= n) occ[r] = -1;
        gv[r] = Vec<V>::zeros();
        if (active && occ[r] >= 0 && col + V <= room) {
          gv[r].load(a.grad_out + row + col, a.grad_aligned && (row & 3) == 0);
        }
      }
#pragma unroll
      for (int r = 0; r < kBwdUnroll; ++r) {
        float sq = 0.0f;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float v = scale[r] * gv[r].x[e];
          grad.x[e] += v;
          sq += v * v;
        }
        sq = g.sum(sq, a.layout.lanes_per_chunk);
        if (occ[r] >= 0) norm_sum += sqrtf(sq);
        if (with_weight_grad && a.weight_grad != nullptr) {  // d loss / d w_i = <grad_out slice, unweighted live chunks> (x 1/len)
          const float d = g.sum(is_live ? gv[r].dot(w_old) : 0.0f, g.size);
          if (g.lane == 0 && occ[r] >= 0) a.weight_grad[occ[r]] += d * wscale[r];
        }
      }
    }
  }
}

// Chunk k of unique row u as one lane sees it: whether the lane holds a column of a chunk below
// min(live + 1, chunks) (active: its gradient is summed) and of a live chunk (is_live: its slot is updated), the
// slot, the lane's V old values of it, and the sums the gradient sweep accumulates: the lane's columns of the
// chunk's gradient and the chunk's per-occurrence gradient norms.
template <int V>
struct LaneChunk {
  bool active, is_live;
  int64_t slot;
  Vec<V> w_old, grad;
  float norm_sum;
};

template <int V>
__device__ __forceinline__ LaneChunk<V> lane_chunk(const BackwardArgs& a, int64_t u, const RowInfo& r, int k, int vec,
                                                   bool vec_ok) {
  LaneChunk<V> x;
  x.active = vec_ok && k < min(r.live + 1, r.chunks);
  x.is_live = x.active && k < r.live;
  x.slot = x.is_live ? a.slots[u * a.max_chunks + k] : -1;
  x.w_old = Vec<V>::zeros();
  if (x.is_live) x.w_old.load(a.pool + x.slot * a.chunk_size + vec * V);
  x.grad = Vec<V>::zeros();
  x.norm_sum = 0.0f;
  return x;
}

// Row-wise Adagrad's accumulator of unique row u, or -1 when the row takes no row-wise step (another optimizer,
// no live chunk, or an entry outside [0, R): the host checks those in index check mode "all"). Group-uniform.
__device__ __forceinline__ int64_t rowwise_entry(const BackwardArgs& a, int64_t u, const RowInfo& r) {
  if (a.optimizer != kOptimRowwiseAdagrad || r.live <= 0) return -1;
  const int64_t entry = a.row_entries[u];
  return entry < a.num_entries ? entry : -1;  // a negative entry stays negative
}

// One group per segment of a long row: partial gradient and norm sums -> seg_grad / seg_norm.
template <int V>
__global__ void __launch_bounds__(cuda::kThreads, 2) backward_segments_kernel(const BackwardArgs a) {
  const Group g(a.layout.group_size);
  const auto [chunk_in_pass, vec, vec_ok] = cuda::ChunkLane(a.layout, g);
  const int c = a.chunk_size;
  const int64_t total = a.seg_start[a.num_unique];
  for (int64_t seg = g.index(); seg < total && seg < a.seg_bound; seg += g.count()) {
    int64_t lo = 0, hi = a.num_unique;  // u = last row with seg_start[u] <= seg
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) >> 1;
      if (a.seg_start[mid] <= seg) lo = mid; else hi = mid - 1;
    }
    const int64_t u = lo;
    const RowInfo r = row_info(a, g, u);
    const int last_chunk = min(r.live + 1, r.chunks);
    const int64_t qb = min(r.first + (seg - a.seg_start[u]) * kLongRow, r.last);
    const int64_t qe = min(qb + kLongRow, r.last);
    for (int pass = 0; pass < a.layout.passes; ++pass) {
      const int k = pass * a.layout.chunks_per_pass + chunk_in_pass;
      if (pass * a.layout.chunks_per_pass >= last_chunk) break;
      LaneChunk<V> x = lane_chunk<V>(a, u, r, k, vec, vec_ok);
      accumulate<V>(a, g, qb, qe, k, vec, x.active, x.is_live, x.w_old, x.grad, x.norm_sum);
      if (x.active) {
        x.grad.store(a.seg_grad + seg * a.max_chunks * c + k * c + vec * V);
        if (vec == 0) a.seg_norm[seg * a.max_chunks + k] = x.norm_sum;
      }
    }
  }
}

// This lane's columns of chunk k's gradient of unique row u: from the occurrences, or for a long row from the
// partial sums of its segments. Group-uniform arguments except vec/active/is_live/w_old.
template <int V>
__device__ __forceinline__ void chunk_gradient(const BackwardArgs& a, const Group& g, int64_t u, const RowInfo& r,
                                               bool long_row, int k, int vec, bool active, bool is_live,
                                               const Vec<V>& w_old, Vec<V>& grad, float& norm_sum,
                                               bool with_weight_grad) {
  const int c = a.chunk_size;
  if (!long_row) {
    accumulate<V>(a, g, r.first, r.last, k, vec, active, is_live, w_old, grad, norm_sum, with_weight_grad);
  } else if (active) {
    const int64_t s0 = max(a.seg_start[u], 0), s1 = min(static_cast<int64_t>(a.seg_start[u + 1]), a.seg_bound);
    for (int64_t seg = s0; seg < s1; ++seg) {
      Vec<V> part;
      part.load(a.seg_grad + seg * a.max_chunks * c + k * c + vec * V);
#pragma unroll
      for (int e = 0; e < V; ++e) grad.x[e] += part.x[e];
      norm_sum += a.seg_norm[seg * a.max_chunks + k];
    }
  }
}

// Applies the optimizer to live chunk `slot` (this lane's V columns) given its gradient; row_mult: the row-wise
// Adagrad step size lr / (sqrt(G) + eps) of the row (unused by SGD / Adagrad).
template <int V>
__device__ __forceinline__ void apply_update(const BackwardArgs& a, int64_t slot, int vec, const Vec<V>& w_old,
                                             const Vec<V>& grad, float row_mult) {
  const int c = a.chunk_size;
  Vec<V> w = w_old;
  if (a.optimizer == kOptimSgd) {
#pragma unroll
    for (int e = 0; e < V; ++e) w.x[e] -= a.lr * grad.x[e];
  } else if (a.optimizer == kOptimAdagrad) {
    float* st_ptr = a.state + slot * c + vec * V;
    Vec<V> st;
    st.load(st_ptr);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      st.x[e] += grad.x[e] * grad.x[e];
      w.x[e] -= a.lr * grad.x[e] / (sqrtf(st.x[e]) + a.eps);
    }
    st.store(st_ptr);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) w.x[e] -= row_mult * grad.x[e];
  }
  w.store(a.pool + slot * c + vec * V);
}

// Row-wise Adagrad's step for one row (group-uniform): its accumulator state[entry] (read as state_old by every
// lane) += row_sq / (live * c), the row's mean squared gradient; returns the row's multiplier lr / (sqrt + eps).
__device__ __forceinline__ float rowwise_step(const BackwardArgs& a, const Group& g, int64_t entry, float state_old,
                                              float row_sq, int live) {
  __syncwarp(g.mask);  // every lane read the accumulator before lane 0 writes it
  const float state_new = state_old + row_sq / static_cast<float>(live * a.chunk_size);
  if (g.lane == 0) a.state[entry] = state_new;
  return a.lr / (sqrtf(state_new) + a.eps);
}

// The end of chunk k's update, given its gradient: the utility score (written as the candidate score when k is
// the row's first missing chunk), and for a live chunk its utility and the optimizer step.
template <int V>
__device__ __forceinline__ void update_chunk(const BackwardArgs& a, int64_t u, const RowInfo& r, int k, int vec,
                                             const LaneChunk<V>& x, float count, float row_mult) {
  const float score = utility_score(a.utility_rule, count, x.norm_sum);
  if (x.active && k == r.live && vec == 0) a.candidate[u] = score;  // the first missing chunk
  if (!x.is_live) return;
  if (vec == 0) a.utility[x.slot] += score;
  apply_update<V>(a, x.slot, vec, x.w_old, x.grad, row_mult);
}

// The update of unique row u when all its chunks fit one pass of the group (chunks <= G / Lc, e.g. D = 128 at
// c = 16 or 32): each lane's gradient is summed ONCE over the occurrences and kept in registers, so row-wise
// Adagrad needs no second sweep for its row norm. Same arithmetic, in the same order, as the two-sweep path.
template <int V>
__device__ __forceinline__ void update_row_one_pass(const BackwardArgs& a, const Group& g, int64_t u,
                                                    const RowInfo& r, bool long_row, float count, int k, int vec,
                                                    bool vec_ok) {
  LaneChunk<V> x = lane_chunk<V>(a, u, r, k, vec, vec_ok);
  const int64_t entry = rowwise_entry(a, u, r);
  const float state_old = entry >= 0 ? a.state[entry] : 0.0f;  // issued with w_old, before the gradient sweep
  chunk_gradient<V>(a, g, u, r, long_row, k, vec, x.active, x.is_live, x.w_old, x.grad, x.norm_sum, true);
  const float row_mult = entry < 0 ? 0.0f  // group-uniform: the group's reduction runs on every lane or none
                                   : rowwise_step(a, g, entry, state_old,
                                                  g.sum(x.is_live ? x.grad.dot(x.grad) : 0.0f, g.size), r.live);
  update_chunk<V>(a, u, r, k, vec, x, count, row_mult);
}

// One group per unique row: gradient (from the occurrences, or from the segments of a long row), utility,
// candidate score and the optimizer step on each live chunk. Row-wise Adagrad keeps ONE accumulator per row
// (at the row's index entry, as the CPU kernel): a first sweep sums the squared gradient over all live chunks.
template <int V>
__global__ void __launch_bounds__(cuda::kThreads, 3) backward_rows_kernel(const BackwardArgs a) {
  const Group g(a.layout.group_size);
  const auto [chunk_in_pass, vec, vec_ok] = cuda::ChunkLane(a.layout, g);
  for (int64_t u = g.index(); u < a.num_unique; u += g.count()) {
    const RowInfo r = row_info(a, g, u);
    const int last_chunk = min(r.live + 1, r.chunks);
    const float count = static_cast<float>(r.last - r.first);
    const bool long_row = a.seg_start != nullptr && r.last - r.first > kLongRow;
    if (r.live >= r.chunks && g.lane == 0) a.candidate[u] = 0.0f;  // full row: no candidate chunk
    if (a.layout.passes == 1) {  // the whole row fits the group: one sweep over the occurrences (group-uniform)
      update_row_one_pass<V>(a, g, u, r, long_row, count, chunk_in_pass, vec, vec_ok);
      continue;
    }
    float row_mult = 0.0f;
    const int64_t entry = rowwise_entry(a, u, r);
    if (entry >= 0) {  // group-uniform condition: every lane takes the same branches
      float row_sq = 0.0f;
      for (int pass = 0; pass < a.layout.passes; ++pass) {
        const int k = pass * a.layout.chunks_per_pass + chunk_in_pass;
        if (pass * a.layout.chunks_per_pass >= r.live) break;
        const bool is_live = vec_ok && k < r.live;
        Vec<V> grad = Vec<V>::zeros();
        float unused_norm = 0.0f;
        chunk_gradient<V>(a, g, u, r, long_row, k, vec, is_live, is_live, Vec<V>::zeros(), grad, unused_norm, false);
        if (is_live) row_sq += grad.dot(grad);
      }
      row_sq = g.sum(row_sq, g.size);  // over all lanes of the group = all live chunks of the row
      row_mult = rowwise_step(a, g, entry, a.state[entry], row_sq, r.live);
    }
    for (int pass = 0; pass < a.layout.passes; ++pass) {
      const int k = pass * a.layout.chunks_per_pass + chunk_in_pass;
      if (pass * a.layout.chunks_per_pass >= last_chunk) break;
      LaneChunk<V> x = lane_chunk<V>(a, u, r, k, vec, vec_ok);
      chunk_gradient<V>(a, g, u, r, long_row, k, vec, x.active, x.is_live, x.w_old, x.grad, x.norm_sum, true);
      update_chunk<V>(a, u, r, k, vec, x, count, row_mult);
    }
  }
}

}  // namespace chunk_bag_cuda
}  // namespace emb_opt
