// Stochastic rounding of float32 to bfloat16, for chunk pools stored in bfloat16: the fused optimizer computes
// each updated weight in float32 and stores it rounded up or down at random, with the probability that makes
// the stored value's expectation equal the float32 one (as FBGEMM trains fp16 / bf16 tables). An update
// smaller than half a bfloat16 step is then not lost: it moves the weight in expectation.
// Host and device; the pure-PyTorch twin is cuda_ext/reference/stochastic_round.py (bit-identical).
#pragma once
#include <cstdint>
#include <cstring>

#include "common/mix64.h"

namespace emb_opt {

// The random bits of pool float (slot, column j) in the update with seed `seed`: one mix64 of its flat index
// and the seed, so every float of every step draws independently and the result does not depend on threads.
EMB_OPT_HD uint64_t rounding_random(int64_t seed, int64_t slot, int64_t chunk_size, int64_t column) {
  return mix64(static_cast<uint64_t>(slot * chunk_size + column) + static_cast<uint64_t>(seed) * kGolden);
}

// The bfloat16 bits of `value` rounded stochastically with `random`'s low 16 bits: add them below the bfloat16
// mantissa and truncate (the carry rounds the magnitude up with probability = the dropped fraction). NaN and
// inf round to nearest (they stay NaN / inf); a finite value past bfloat16's largest rounds to inf at most.
EMB_OPT_HD uint16_t bfloat16_bits_stochastic(float value, uint64_t random) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7F800000u) == 0x7F800000u) {  // NaN / inf: keep NaN quiet, inf exact
    return static_cast<uint16_t>((bits >> 16) | ((bits & 0x007FFFFFu) ? 0x0040u : 0u));
  }
  bits += static_cast<uint32_t>(random & 0xFFFFu);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace emb_opt
