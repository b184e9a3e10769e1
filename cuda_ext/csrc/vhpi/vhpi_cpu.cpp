// CPU kernels of the VHPI hash-table ops (see vhpi_ops.cpp for the contracts).
// Lookups run in parallel over rows; inserts and rebuilds are sequential, so bucket placement (and with it
// everything downstream) is deterministic.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/vhpi_key.h"
#include "vhpi/vhpi_checks.h"

namespace emb_opt {
namespace {

at::Tensor vhpi_lookup_cpu(const at::Tensor& buckets, const at::Tensor& slot_keys, const at::Tensor& row_keys,
                           const at::Tensor& num_chunks, int64_t max_chunks, int64_t max_probe) {
  check_vhpi_table(buckets, slot_keys, max_probe);
  EMB_OPT_CHECK_DTYPE(row_keys, at::kLong, "vhpi_lookup: row_keys");
  EMB_OPT_CHECK_DTYPE(num_chunks, at::kInt, "vhpi_lookup: num_chunks");
  EMB_OPT_CHECK(row_keys.numel() == num_chunks.numel(), "vhpi_lookup: row_keys and num_chunks differ in length");
  EMB_OPT_CHECK(max_chunks >= 1 && max_chunks <= (1 << kChunkBits), "vhpi_lookup: max_chunks out of range");
  const int64_t n = row_keys.numel();
  auto out = at::full({n, max_chunks}, -1, row_keys.options().dtype(at::kInt));
  auto keys = row_keys.contiguous();
  auto chunks = num_chunks.contiguous();
  const int32_t* b = buckets.data_ptr<int32_t>();
  const int64_t* sk = slot_keys.data_ptr<int64_t>();
  const int64_t* rk = keys.data_ptr<int64_t>();
  const int32_t* nc = chunks.data_ptr<int32_t>();
  int32_t* o = out.data_ptr<int32_t>();
  const int64_t nb = buckets.numel();
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t limit = std::min<int64_t>(nc[u], max_chunks);
      for (int64_t k = 0; k < limit; ++k) {
        const int32_t s = probe_slot(b, sk, nb, max_probe, rk[u] | k);
        if (s < 0) break;
        o[u * max_chunks + k] = s;
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> vhpi_lookup_runs_cpu(const at::Tensor& buckets, const at::Tensor& entry_keys,
                                                        const at::Tensor& entry_first, const at::Tensor& entry_chunks,
                                                        const at::Tensor& row_keys, int64_t max_chunks,
                                                        int64_t max_probe) {
  check_lookup_runs_args(buckets, entry_keys, entry_first, entry_chunks, row_keys, max_chunks, max_probe);
  const int64_t n = row_keys.numel();
  auto entries = at::empty({n}, row_keys.options().dtype(at::kInt));
  auto slots = at::empty({n, max_chunks}, row_keys.options().dtype(at::kInt));
  auto keys = row_keys.contiguous();
  const int32_t* b = buckets.data_ptr<int32_t>();
  const int64_t* ek = entry_keys.data_ptr<int64_t>();
  const int32_t* ef = entry_first.data_ptr<int32_t>();
  const int8_t* ec = entry_chunks.data_ptr<int8_t>();
  const int64_t* rk = keys.data_ptr<int64_t>();
  int32_t* eo = entries.data_ptr<int32_t>();
  int32_t* so = slots.data_ptr<int32_t>();
  const int64_t nb = buckets.numel();
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int32_t e = probe_slot(b, ek, nb, max_probe, rk[u]);
      const int64_t count = e < 0 ? 0 : std::min<int64_t>(std::max<int64_t>(ec[e], 0), max_chunks);
      const int32_t first = e < 0 ? 0 : ef[e];
      eo[u] = e;
      for (int64_t k = 0; k < max_chunks; ++k) so[u * max_chunks + k] = k < count ? first + static_cast<int32_t>(k) : -1;
    }
  });
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

int64_t vhpi_insert_cpu(at::Tensor& buckets, const at::Tensor& slot_keys, const at::Tensor& slots,
                        int64_t max_probe) {
  check_vhpi_table(buckets, slot_keys, max_probe);
  EMB_OPT_CHECK_DTYPE(slots, at::kInt, "vhpi_insert_: slots");
  auto s = slots.contiguous();
  const int32_t* sp = s.data_ptr<int32_t>();
  const int64_t* sk = slot_keys.data_ptr<int64_t>();
  int32_t* b = buckets.data_ptr<int32_t>();
  const int64_t nb = buckets.numel();
  const int64_t ns = slot_keys.numel();
  for (int64_t i = 0; i < s.numel(); ++i) {
    EMB_OPT_CHECK(sp[i] >= 0 && sp[i] < ns, "vhpi_insert_: slot ", sp[i], " out of range [0, ", ns, ")");
    EMB_OPT_CHECK(sk[sp[i]] >= 0, "vhpi_insert_: slot ", sp[i], " has no key");
    if (!insert_one(b, nb, max_probe, sk[sp[i]], sp[i])) return i;
  }
  return s.numel();
}

at::Tensor vhpi_rebuild_cpu(const at::Tensor& slot_keys, int64_t num_buckets, int64_t max_probe) {
  EMB_OPT_CHECK_DTYPE(slot_keys, at::kLong, "vhpi_rebuild: slot_keys");
  EMB_OPT_CHECK(num_buckets >= 1, "vhpi_rebuild: num_buckets must be >= 1");
  EMB_OPT_CHECK(max_probe >= 1, "vhpi_rebuild: max_probe must be >= 1");
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

TORCH_LIBRARY_IMPL(emb_opt, CPU, m) {
  m.impl("vhpi_lookup", &vhpi_lookup_cpu);
  m.impl("vhpi_lookup_runs", &vhpi_lookup_runs_cpu);
  m.impl("vhpi_insert_", &vhpi_insert_cpu);
  m.impl("vhpi_rebuild", &vhpi_rebuild_cpu);
}

}  // namespace emb_opt
