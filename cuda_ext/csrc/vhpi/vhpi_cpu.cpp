// CPU kernels of the VHPI hash-table ops (see vhpi_ops.cpp for the contracts).
// Lookups run in parallel over rows; inserts and rebuilds are sequential, so bucket placement (and with it
// everything downstream) is deterministic.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <limits>

#include "common/checks.h"
#include "vhpi/vhpi_checks.h"
#include "common/registration.h"
#include "vhpi/vhpi_probe.h"

namespace emb_opt {
namespace {

constexpr const char* kLookupRuns = "vhpi_lookup_runs";

// The row index as raw pointers: buckets [H], entry_keys / entry_first / entry_chunks [R].
struct RowIndex {
  const int32_t *buckets, *entry_first;
  const int64_t* entry_keys;
  const int8_t* entry_chunks;
  int64_t num_buckets, num_entries, max_probe;
};

// Entry of `key` (-1 if absent), or kCorruptBucket when the probe met a bad bucket or found an entry whose run
// is malformed (*bad_bucket = the bucket, or -1 for a bad run).
int32_t find_entry(const RowIndex& index, int64_t key, int64_t* bad_bucket) {
  *bad_bucket = -1;
  const int32_t e = probe_key(index.buckets, index.entry_keys, index.num_buckets, index.num_entries, index.max_probe,
                              key, bad_bucket);
  if (e < 0) return e;
  const bool run_ok = index.entry_chunks[e] >= 0 && index.entry_chunks[e] <= kMaxChunks && index.entry_first[e] >= 0 &&
                      index.entry_first[e] < kMaxRunStart;
  return run_ok ? e : kCorruptBucket;
}

// Raises for the value that made row u's lookup fail (find_entry returned kCorruptBucket for it).
[[noreturn]] void raise_bad_lookup(const RowIndex& index, const at::Tensor& buckets, const at::Tensor& entry_first,
                                   const at::Tensor& entry_chunks, const at::Tensor& row_keys, int64_t u) {
  const std::string row = detail::check_message("probed for row_keys[", u, "]");
  int64_t bad_bucket = -1;
  const int32_t e = probe_key(index.buckets, index.entry_keys, index.num_buckets, index.num_entries, index.max_probe,
                              row_keys.data_ptr<int64_t>()[u], &bad_bucket);
  if (e == kCorruptBucket) {
    raise_outside(kLookupRuns, "buckets", buckets, bad_bucket, -1, index.num_entries,
                  detail::check_message("-1 or one of the ", index.num_entries, " entries of entry_keys; ", row));
  }
  if (index.entry_chunks[e] < 0 || index.entry_chunks[e] > kMaxChunks) {
    raise_outside(kLookupRuns, "entry_chunks", entry_chunks, e, 0, kMaxChunks + 1,
                  detail::check_message("chunks of a row, found for row_keys[", u, "]"));
  }
  raise_outside(kLookupRuns, "entry_first", entry_first, e, 0, kMaxRunStart,
                detail::check_message("first slot of a run that must fit int32, found for row_keys[", u, "]"));
}

std::tuple<at::Tensor, at::Tensor> lookup_runs_cpu(const at::Tensor& buckets, const at::Tensor& entry_keys,
                                                        const at::Tensor& entry_first, const at::Tensor& entry_chunks,
                                                        const at::Tensor& row_keys, int64_t max_chunks,
                                                        int64_t max_probe) {
  check_lookup_runs_args(buckets, entry_keys, entry_first, entry_chunks, row_keys, max_chunks, max_probe);
  const int64_t n = row_keys.numel();
  auto entries = at::empty({n}, row_keys.options().dtype(at::kInt));
  auto slots = at::empty({n, max_chunks}, row_keys.options().dtype(at::kInt));
  auto keys = row_keys.contiguous();
  const RowIndex index{buckets.data_ptr<int32_t>(), entry_first.data_ptr<int32_t>(), entry_keys.data_ptr<int64_t>(),
                       entry_chunks.data_ptr<int8_t>(), buckets.numel(), entry_keys.numel(), max_probe};
  const int64_t* rk = keys.data_ptr<int64_t>();
  int32_t* eo = entries.data_ptr<int32_t>();
  int32_t* so = slots.data_ptr<int32_t>();
  std::atomic<int64_t> first_bad_row{std::numeric_limits<int64_t>::max()};
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      int64_t bad_bucket = -1;
      int32_t e = find_entry(index, rk[u], &bad_bucket);
      if (e == kCorruptBucket) {
        int64_t seen = first_bad_row.load();
        while (u < seen && !first_bad_row.compare_exchange_weak(seen, u)) {
        }
        e = -1;
      }
      const int64_t count = e < 0 ? 0 : std::min<int64_t>(index.entry_chunks[e], max_chunks);
      const int32_t first = e < 0 ? 0 : index.entry_first[e];
      eo[u] = e;
      int32_t* row_slots = so + u * max_chunks;
      for (int64_t k = 0; k < max_chunks; ++k) row_slots[k] = k < count ? first + static_cast<int32_t>(k) : -1;
    }
  });
  if (first_bad_row.load() != std::numeric_limits<int64_t>::max()) {
    raise_bad_lookup(index, buckets, entry_first, entry_chunks, keys, first_bad_row.load());
  }
  return {entries, slots};
}

// Returns false if no empty bucket was found within max_probe.
bool insert_one(int32_t* b, int64_t nb, int64_t max_probe, int64_t key, int32_t slot) {
  int64_t pos = home_bucket(key, nb);
  for (int64_t p = 0; p < max_probe; ++p) {
    if (b[pos] < 0) {
      b[pos] = slot;
      return true;
    }
    pos = (pos + 1 == nb) ? 0 : pos + 1;
  }
  return false;
}

int64_t insert_cpu(at::Tensor& buckets, const at::Tensor& slot_keys, const at::Tensor& slots,
                        int64_t max_probe) {
  check_insert_args(buckets, slot_keys, slots, max_probe);
  auto s = slots.contiguous();
  const int32_t* sp = s.data_ptr<int32_t>();
  const int64_t* sk = slot_keys.data_ptr<int64_t>();
  int32_t* b = buckets.data_ptr<int32_t>();
  const int64_t nb = buckets.numel();
  for (int64_t i = 0; i < s.numel(); ++i) {
    if (!insert_one(b, nb, max_probe, sk[sp[i]], sp[i])) return i;
  }
  return s.numel();
}

at::Tensor rebuild_cpu(const at::Tensor& slot_keys, int64_t num_buckets, int64_t max_probe) {
  check_rebuild_args(slot_keys, num_buckets, max_probe);
  auto keys = slot_keys.contiguous();
  auto buckets = at::full({num_buckets}, -1, slot_keys.options().dtype(at::kInt));
  const int64_t* sk = keys.data_ptr<int64_t>();
  int32_t* b = buckets.data_ptr<int32_t>();
  for (int64_t s = 0; s < keys.numel(); ++s) {
    if (sk[s] < 0) continue;
    if (!insert_one(b, num_buckets, max_probe, sk[s], static_cast<int32_t>(s))) {
      return at::empty({0}, buckets.options());
    }
  }
  return buckets;
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CPU, m) { register_kernels(m, kVhpiOps, lookup_runs_cpu, insert_cpu, rebuild_cpu); }

}  // namespace emb_opt
