// The probe of a VHPI hash table, host and device (the CPU and CUDA kernels share it; the Python reference in
// cuda_ext/reference/vhpi.py mirrors it). A key is searched by linear probing from its home bucket
// (common/layout.h), at most `max_probe` buckets; an empty bucket (-1) ends the search. A bucket holds the index
// of its key in `keys`; a bucket value outside [-1, num_keys) ends the search as kCorruptBucket, before `keys`
// is read at it.
#pragma once
#include <cstdint>

#include "common/layout.h"

namespace emb_opt {

constexpr int32_t kCorruptBucket = -2;

template <typename T>
EMB_OPT_HD T load_read_only(const T* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(p);
#else
  return *p;
#endif
}

// Index of `key` in keys[0, num_keys), -1 if absent, or kCorruptBucket (then *bad_bucket = the bucket).
EMB_OPT_HD int32_t probe_key(const int32_t* buckets, const int64_t* keys, int64_t num_buckets, int64_t num_keys,
                             int64_t max_probe, int64_t key, int64_t* bad_bucket) {
  int64_t b = home_bucket(key, num_buckets);
  for (int64_t p = 0; p < max_probe; ++p) {
    const int32_t s = load_read_only(buckets + b);
    if (s == -1) return -1;
    if (s < -1 || s >= num_keys) {
      *bad_bucket = b;
      return kCorruptBucket;
    }
    if (load_read_only(keys + s) == key) return s;
    b = (b + 1 == num_buckets) ? 0 : b + 1;
  }
  return -1;
}

}  // namespace emb_opt
