// Key layout and probe rule of the VHPI (virtually-hashed, physically-indexed) chunk store.
//
// A virtual chunk (table t, row r, chunk k) is the non-negative int64
//     key = ((t << kRowBits | r) << kChunkBits) | k,   kChunkBits = 6, kRowBits = 47, t < 2^10,
// so sorting keys groups a row's chunks together in chunk order. A "row key" is the key of chunk 0.
// The hash table is an int32 array of `num_buckets` buckets holding slot ids (-1 = empty); the key of a
// slot lives in slot_keys[slot] (8 bytes per slot, 4 per bucket: cheaper than storing keys in buckets).
// A key is found by linear probing from seeded_hash63(key, kProbeSeed) % num_buckets, at most
// `max_probe` buckets; an empty bucket ends the search. The Python reference mirrors this exactly.
#pragma once
#include <cstdint>

#include "common/mix64.h"

namespace emb_opt {

constexpr int kChunkBits = 6;
constexpr int kRowBits = 47;
constexpr int64_t kChunkMask = (int64_t{1} << kChunkBits) - 1;
constexpr int64_t kMaxRows = int64_t{1} << kRowBits;
constexpr int64_t kMaxTables = int64_t{1} << 10;
constexpr int64_t kProbeSeed = 0x5EED;

EMB_OPT_HD int64_t pack_row_key(int64_t table, int64_t row) {
  return ((table << kRowBits) | row) << kChunkBits;
}
EMB_OPT_HD int64_t key_table(int64_t key) { return key >> (kRowBits + kChunkBits); }
EMB_OPT_HD int64_t key_chunk(int64_t key) { return key & kChunkMask; }
EMB_OPT_HD int64_t home_bucket(int64_t key, int64_t num_buckets) {
  return static_cast<int64_t>(seeded_hash63(static_cast<uint64_t>(key), kProbeSeed) %
                              static_cast<uint64_t>(num_buckets));
}

// Slot of `key`, or -1. buckets: [num_buckets] int32, slot_keys: [num_slots] int64.
EMB_OPT_HD int32_t probe_slot(const int32_t* buckets, const int64_t* slot_keys, int64_t num_buckets,
                              int64_t max_probe, int64_t key) {
  int64_t b = home_bucket(key, num_buckets);
  for (int64_t p = 0; p < max_probe; ++p) {
    const int32_t s = buckets[b];
    if (s < 0) return -1;
    if (slot_keys[s] == key) return s;
    b = (b + 1 == num_buckets) ? 0 : b + 1;
  }
  return -1;
}

}  // namespace emb_opt
