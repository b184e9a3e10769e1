// Helpers shared by the CUDA kernels of emb_opt (vhpi.cu, chunk_bag.cu): device checks, launch sizes,
// read-back of small status tensors, row groups (a warp or an aligned sub-warp that owns one bag or one row
// and spreads the row's chunk columns over its lanes) and 1- or 4-float vectors.
//
// Include <c10/cuda/CUDAStream.h>, never <ATen/cuda/CUDAContext.h>: the latter pulls cusparse.h, which the
// toolkit on the build machines lacks.
#pragma once
#include "common/check_message.h"
#include "common/checks.h"
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

namespace emb_opt {
namespace cuda {

constexpr int kThreads = 256;  // block size of every kernel here
constexpr int64_t kMaxBlocks = int64_t{1} << 20;
constexpr int64_t kNone = INT64_MAX;  // "nothing found" in status tensors (reduced with atomicMin)

// A CUDA call: every tensor on `device` (common/checks.h), which is a CUDA device.
inline void check_device(const char* op, const at::Device& device,
                         std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
  EMB_OPT_CHECK(device.is_cuda(), op, ": expected CUDA tensors, got ", device);
  check_same_device(op, device, tensors);
}

inline int64_t blocks_for(int64_t work_items, int64_t items_per_block = kThreads) {
  return std::max<int64_t>(1, std::min<int64_t>((work_items + items_per_block - 1) / items_per_block, kMaxBlocks));
}

inline int next_pow2(int64_t n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

// The values of a small int64 device tensor on the host (one synchronising copy).
inline std::vector<int64_t> read_back(const at::Tensor& status) {
  auto host = status.to(at::kCPU);
  const int64_t* p = host.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + host.numel());
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// ---- row groups ---------------------------------------------------------------------------------------
// A row of D = C*c floats is spread over a group of G lanes (G a power of 2 <= 32, groups aligned in the warp):
// each chunk gets Lc lanes (Lc = next_pow2(c / V) <= 32), each lane holds one V-float vector of it, and one pass
// covers G / Lc chunks; rows of more chunks take several passes. Lanes past c / V in a chunk stay idle.
struct GroupLayout {
  int group_size;       // G
  int lanes_per_chunk;  // Lc
  int vecs_per_chunk;   // c / V
  int chunks_per_pass;  // G / Lc
  int passes;           // ceil(max_chunks / chunks_per_pass)
};

inline GroupLayout make_layout(const char* op, int64_t chunk_size, int64_t max_chunks, int vec) {
  const int64_t vecs = chunk_size / vec;
  EMB_OPT_CHECK(vecs >= 1 && vecs <= 32, op, ": chunk_size ", chunk_size, " is too wide for the CUDA kernels (at most ",
              32 * vec, " floats with ", vec, "-float vectors)");
  GroupLayout layout;
  layout.vecs_per_chunk = static_cast<int>(vecs);
  layout.lanes_per_chunk = next_pow2(vecs);
  layout.group_size = std::min(32, layout.lanes_per_chunk * next_pow2(std::max<int64_t>(max_chunks, 1)));
  layout.chunks_per_pass = layout.group_size / layout.lanes_per_chunk;
  layout.passes = static_cast<int>((std::max<int64_t>(max_chunks, 1) + layout.chunks_per_pass - 1) /
                                   layout.chunks_per_pass);
  return layout;
}

#if defined(__CUDACC__)

// This thread's place in its group of `size` lanes (a power of 2 <= 32, aligned within the warp).
struct Group {
  int size;
  int lane;       // 0 .. size-1
  int base;       // first warp lane of the group
  unsigned mask;  // the group's lanes, as a warp mask

  __device__ __forceinline__ explicit Group(int group_size) : size(group_size) {
    const int warp_lane = threadIdx.x & 31;
    lane = warp_lane & (group_size - 1);
    base = warp_lane - lane;
    mask = group_size == 32 ? 0xffffffffu : (((1u << group_size) - 1u) << base);
  }
  // group index of this thread in the grid, and the number of groups in the grid
  __device__ __forceinline__ int64_t index() const {
    return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / size;
  }
  __device__ __forceinline__ int64_t count() const { return static_cast<int64_t>(gridDim.x) * blockDim.x / size; }
  // bit j set = lane j of the group had `pred`
  __device__ __forceinline__ unsigned ballot(bool pred) const {
    const unsigned bits = __ballot_sync(mask, pred) >> base;
    return size == 32 ? bits : bits & ((1u << size) - 1u);
  }
  template <typename T>
  __device__ __forceinline__ T shfl(T value, int src_lane) const {
    return __shfl_sync(mask, value, src_lane, size);
  }
  // sum over aligned runs of `width` lanes (a power of 2 <= size); every lane of the run gets the same bits
  __device__ __forceinline__ float sum(float value, int width) const {
    for (int offset = width >> 1; offset > 0; offset >>= 1) value += __shfl_xor_sync(mask, value, offset, size);
    return value;
  }
};

// Where a lane sits in a row group laid out by `layout`: the chunk of each pass it serves, its vector within that
// chunk, and whether that vector exists (c / V may be below Lc).
struct ChunkLane {
  int chunk_in_pass;
  int vec;
  bool vec_ok;

  __device__ __forceinline__ ChunkLane(const GroupLayout& layout, const Group& g)
      : chunk_in_pass(g.lane / layout.lanes_per_chunk),
        vec(g.lane & (layout.lanes_per_chunk - 1)),
        vec_ok(vec < layout.vecs_per_chunk) {}
};

// V consecutive floats in registers (V = 4: one 16-byte access when aligned).
template <int V>
struct Vec {
  float x[V];

  __device__ __forceinline__ static Vec zeros() {
    Vec v;
#pragma unroll
    for (int j = 0; j < V; ++j) v.x[j] = 0.0f;
    return v;
  }
  // aligned: p is 16-byte aligned (only read when V == 4)
  __device__ __forceinline__ void load(const float* p, bool aligned = true) {
    if constexpr (V == 4) {
      if (aligned) {
        const float4 t = *reinterpret_cast<const float4*>(p);
        x[0] = t.x, x[1] = t.y, x[2] = t.z, x[3] = t.w;
        return;
      }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) x[j] = p[j];
  }
  __device__ __forceinline__ void load_ro(const float* __restrict__ p) {  // read-only path, always aligned
    if constexpr (V == 4) {
      const float4 t = __ldg(reinterpret_cast<const float4*>(p));
      x[0] = t.x, x[1] = t.y, x[2] = t.z, x[3] = t.w;
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) x[j] = __ldg(p + j);
    }
  }
  __device__ __forceinline__ void store(float* p, bool aligned = true) const {
    if constexpr (V == 4) {
      if (aligned) {
        *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
        return;
      }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) p[j] = x[j];
  }
  __device__ __forceinline__ float dot(const Vec& o) const {
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < V; ++j) acc += x[j] * o.x[j];
    return acc;
  }
};

#endif  // __CUDACC__

}  // namespace cuda
}  // namespace emb_opt
