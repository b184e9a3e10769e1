// How a chunk pool stores its weights, for the CPU kernels (chunk_bag_cpu.cpp): the kernels compute in float32,
// read a chunk's weights through load() and write an updated chunk through store():
//   float        as is;
//   bfloat16     each weight rounded stochastically (common/stochastic_round.h);
//   int8         a float32 scale per chunk (pool_scale [S, 1]; weight = q * scale) set to max |w| / 127 by each
//                update, each weight quantized stochastically: q = floor(w / scale + u), u uniform in [0, 1)
//                from the same random bits, so the stored weight's expectation is the float32 one.
// The pure-PyTorch twin: cuda_ext/reference/pool_codec.py (bit-identical for the same float32 values).
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/stochastic_round.h"

namespace emb_opt {

constexpr float kInt8Levels = 127.0f;  // int8 weights use -127..127 (symmetric)

// A uniform float in [0, 1) from the top 24 bits of a 64-bit random value.
inline float unit_uniform(uint64_t random) { return static_cast<float>(random >> 40) * 5.9604644775390625e-8f; }

template <typename weight_t>
struct PoolCodec;

template <>
struct PoolCodec<float> {
  static float load(const float* chunk, const float* /*scale*/, int64_t j) { return chunk[j]; }
  static void store(float* chunk, float* /*scale*/, const float* values, int64_t c, int64_t /*seed*/,
                    int64_t /*slot*/) {
    std::copy(values, values + c, chunk);
  }
};

template <>
struct PoolCodec<at::BFloat16> {
  static float load(const at::BFloat16* chunk, const float* /*scale*/, int64_t j) {
    return static_cast<float>(chunk[j]);
  }
  static void store(at::BFloat16* chunk, float* /*scale*/, const float* values, int64_t c, int64_t seed,
                    int64_t slot) {
    for (int64_t j = 0; j < c; ++j) {
      chunk[j] = at::BFloat16(bfloat16_bits_stochastic(values[j], rounding_random(seed, slot, c, j)),
                              at::BFloat16::from_bits());
    }
  }
};

template <>
struct PoolCodec<int8_t> {
  static float load(const int8_t* chunk, const float* scale, int64_t j) {
    return static_cast<float>(chunk[j]) * *scale;
  }
  static void store(int8_t* chunk, float* scale, const float* values, int64_t c, int64_t seed, int64_t slot) {
    float absmax = 0.0f;
    for (int64_t j = 0; j < c; ++j) absmax = std::max(absmax, std::fabs(values[j]));
    const float s = absmax / kInt8Levels;
    *scale = s;
    for (int64_t j = 0; j < c; ++j) {
      float q = 0.0f;
      if (s > 0.0f) {
        q = std::floor(values[j] / s + unit_uniform(rounding_random(seed, slot, c, j)));
        q = std::min(kInt8Levels, std::max(-kInt8Levels, q));
      }
      chunk[j] = static_cast<int8_t>(q);
    }
  }
};

}  // namespace emb_opt
