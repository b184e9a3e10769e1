// The contract between Python and the native kernels, C++ side: the VHPI key layout, the probe rule's seed and
// the integer codes the ops take. Python's twin is cuda_ext/layout.py; tests/test_kernels_layout.py holds the two
// equal through cuda_ext._C.layout (module.cpp).
//
// A virtual chunk (table t, row r, chunk k) is the non-negative int64
//     key = ((t << kRowBits | r) << kChunkBits) | k,   t < 2^kTableBits, r < 2^kRowBits, k < 2^kChunkBits,
// so sorting keys groups a row's chunks together in chunk order. A "row key" is the key of chunk 0.
// A VHPI hash table is an int32 array of buckets holding indices into a key array (-1 = empty); a key's home
// bucket is seeded_hash63(key, kProbeSeed) % num_buckets (the probe itself: vhpi/vhpi_probe.h).
#pragma once
#include <cstdint>

#include "common/mix64.h"

namespace emb_opt {

constexpr int kChunkBits = 6;
constexpr int kRowBits = 47;
constexpr int kTableBits = 10;
constexpr int64_t kMaxChunks = int64_t{1} << kChunkBits;  // chunk positions a key can hold
constexpr int64_t kMaxRows = int64_t{1} << kRowBits;
constexpr int64_t kMaxTables = int64_t{1} << kTableBits;
constexpr int64_t kProbeSeed = 0x5EED;

// chunk_bag_backward_update_'s `optimizer`
constexpr int kOptimSgd = 0;
constexpr int kOptimAdagrad = 1;          // state [S, c]: one accumulator per pool float
constexpr int kOptimRowwiseAdagrad = 2;   // state [R, 1]: one accumulator per row (index entry)
constexpr int kNumOptimizers = 3;
// chunk_bag_backward_update_'s `utility_rule`: the score a chunk's utility gets from one batch
constexpr int kUtilityFreq = 0;      // occurrences of the row
constexpr int kUtilityGrad = 1;      // mean per-occurrence gradient norm
constexpr int kUtilityFreqGrad = 2;  // sum of per-occurrence gradient norms
constexpr int kNumUtilityRules = 3;

// The score of `rule` for a chunk of a row with `count` occurrences whose per-occurrence gradient norms sum to
// norm_sum (the CPU and CUDA backward both call it).
EMB_OPT_HD float utility_score(int rule, float count, float norm_sum) {
  return rule == kUtilityFreq ? count : (rule == kUtilityGrad ? norm_sum / count : norm_sum);
}

// chunk_bag_forward's / chunk_bag_backward_update_'s `pooling_mode`
constexpr int kPoolingSum = 0;
constexpr int kPoolingMean = 1;
constexpr int kNumPoolingModes = 2;

EMB_OPT_HD int64_t pack_row_key(int64_t table, int64_t row) {
  return ((table << kRowBits) | row) << kChunkBits;
}
EMB_OPT_HD int64_t key_table(int64_t key) { return key >> (kRowBits + kChunkBits); }
EMB_OPT_HD int64_t key_chunk(int64_t key) { return key & (kMaxChunks - 1); }
EMB_OPT_HD int64_t home_bucket(int64_t key, int64_t num_buckets) {
  return static_cast<int64_t>(seeded_hash63(static_cast<uint64_t>(key), kProbeSeed) %
                              static_cast<uint64_t>(num_buckets));
}

}  // namespace emb_opt
