// Device kernels of chunk_bag_unique (host side and contract: chunk_bag.cu). Sort-based dedupe:
//   1. unique_meta_kernel    offsets / feature_table checks, nnz, per-table row bases (status, one read-back)
//   2. unique_keys_kernel    per occurrence: its bag (binary search in offsets), range check of the id (first
//                            bad position by atomicMin), packed row key, and a compact sort key
//                            table_base[t] + id (< total rows, so a radix sort needs only bit_width(total) bits)
//   3. cub radix sort of (compact key, position) pairs: stable, so positions stay ascending within a key
//   4. unique_heads_kernel + cub inclusive scan: unique id + 1 of each sorted position
//   5. unique_finalize_kernel  U and the `bad` triple (second and last read-back)
//   6. unique_scatter_kernel   inverse, row_keys, unique_offsets; unique_occ is the sorted positions as they are
#pragma once
#include "common/cuda_helpers.cuh"
#include "common/layout.h"

namespace emb_opt {
namespace chunk_bag_cuda {

using cuda::kNone;

// status: [0] offsets[num_bags] (= nnz), [1] offsets[0], [2] first bag where offsets decrease (kNone),
// [3] first feature whose table is out of range (kNone), [4] total rows of all tables. table_base [T].
__global__ void unique_meta_kernel(const int64_t* __restrict__ offsets, int64_t num_bags,
                                   const int32_t* __restrict__ feature_table, int64_t num_features,
                                   const int64_t* __restrict__ table_rows, int64_t num_tables,
                                   int64_t* __restrict__ table_base, int64_t* __restrict__ status) {
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t bag = tid; bag < num_bags; bag += stride) {
    if (offsets[bag] > offsets[bag + 1]) {
      atomicMin(reinterpret_cast<unsigned long long*>(status + 2), static_cast<unsigned long long>(bag));
    }
  }
  for (int64_t f = tid; f < num_features; f += stride) {
    const int32_t t = feature_table[f];
    if (t < 0 || t >= num_tables) {
      atomicMin(reinterpret_cast<unsigned long long*>(status + 3), static_cast<unsigned long long>(f));
    }
  }
  if (tid == 0) {
    status[0] = offsets[num_bags];
    status[1] = offsets[0];
    int64_t total = 0;
    for (int64_t t = 0; t < num_tables; ++t) {  // T <= 1024
      table_base[t] = total;
      total += max(table_rows[t], int64_t{0});
    }
    status[4] = total;
  }
}

// One thread per occurrence i < nnz (offsets already validated: [0] = 0, non-decreasing, [num_bags] = nnz).
// Ids in bags of features with a bad table are not checked (the host raises for the feature).
template <typename index_t, typename key_t>
__global__ void unique_keys_kernel(const index_t* __restrict__ values, int64_t nnz,
                                   const int64_t* __restrict__ offsets, int64_t num_bags, int64_t batch_size,
                                   const int32_t* __restrict__ feature_table, const int64_t* __restrict__ table_rows,
                                   const int64_t* __restrict__ table_base, int64_t num_tables,
                                   int32_t* __restrict__ occ_bag, int64_t* __restrict__ keys,
                                   key_t* __restrict__ sort_keys, int32_t* __restrict__ positions,
                                   int64_t* __restrict__ first_bad) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < nnz;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = num_bags - 1;  // the last bag starting at or before i is the one holding i
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) >> 1;
      if (__ldg(offsets + mid) <= i) lo = mid; else hi = mid - 1;
    }
    const int64_t bag = lo;
    const int32_t t = feature_table[bag / batch_size];
    int64_t key = 0;
    key_t sort_key = 0;
    if (t >= 0 && t < num_tables) {
      const int64_t id = static_cast<int64_t>(values[i]);
      if (id < 0 || id >= table_rows[t]) {
        atomicMin(reinterpret_cast<unsigned long long*>(first_bad), static_cast<unsigned long long>(i));
      } else {
        key = pack_row_key(t, id);
        sort_key = static_cast<key_t>(table_base[t] + id);
      }
    }
    occ_bag[i] = static_cast<int32_t>(bag);
    keys[i] = key;
    sort_keys[i] = sort_key;
    positions[i] = static_cast<int32_t>(i);
  }
}

template <typename key_t>
__global__ void unique_heads_kernel(const key_t* __restrict__ sorted, int64_t nnz, int32_t* __restrict__ head) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < nnz;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    head[i] = (i == 0 || sorted[i] != sorted[i - 1]) ? 1 : 0;
  }
}

// One thread: status[1] = U; bad = (position, id, feature) of the first bad id, or (-1, -1, -1).
template <typename index_t>
__global__ void unique_finalize_kernel(const index_t* __restrict__ values, const int32_t* __restrict__ occ_bag,
                                       int64_t batch_size, const int32_t* __restrict__ unique_plus1, int64_t nnz,
                                       int64_t* __restrict__ status, int64_t* __restrict__ bad) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  status[1] = unique_plus1[nnz - 1];
  const int64_t pos = status[0];
  if (pos != kNone) {
    bad[0] = pos;
    bad[1] = static_cast<int64_t>(values[pos]);
    bad[2] = occ_bag[pos] / batch_size;
  } else {
    bad[0] = bad[1] = bad[2] = -1;
  }
}

__global__ void unique_scatter_kernel(const int32_t* __restrict__ sorted_positions,
                                      const int32_t* __restrict__ unique_plus1, const int64_t* __restrict__ keys,
                                      int64_t nnz, int64_t num_unique, int32_t* __restrict__ inverse,
                                      int64_t* __restrict__ row_keys, int64_t* __restrict__ unique_offsets) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < nnz;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t uid = unique_plus1[i] - 1;
    const int32_t p = sorted_positions[i];
    inverse[p] = uid;
    if (i == 0 || unique_plus1[i - 1] != unique_plus1[i]) {
      row_keys[uid] = keys[p];
      unique_offsets[uid] = i;
    }
    if (i == nnz - 1) unique_offsets[num_unique] = nnz;
  }
}

// Long rows of the backward: seg_counts[u] = number of kLongRow-occurrence segments of row u if it has more
// than kLongRow occurrences, else 0; seg_start[0] = 0 (the scan fills seg_start[1:]).
__global__ void segment_counts_kernel(const int64_t* __restrict__ unique_offsets, int64_t num_unique, int64_t nnz,
                                      int64_t long_row, int32_t* __restrict__ seg_counts,
                                      int32_t* __restrict__ seg_start) {
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < num_unique;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t first = min(max(unique_offsets[u], int64_t{0}), nnz);
    const int64_t last = min(max(unique_offsets[u + 1], first), nnz);
    const int64_t count = last - first;
    seg_counts[u] = count > long_row ? static_cast<int32_t>((count + long_row - 1) / long_row) : 0;
    if (u == 0) seg_start[0] = 0;
  }
}

}  // namespace chunk_bag_cuda
}  // namespace emb_opt
