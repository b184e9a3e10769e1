// CUDA kernels of the VHPI hash-table ops (schemas in vhpi_ops.cpp, layout in common/layout.h, probe in
// vhpi/vhpi_probe.h, argument checks in vhpi/vhpi_checks.h, CPU kernels in vhpi_cpu.cpp, reference in
// cuda_ext/reference/vhpi.py).
//
// vhpi_lookup_runs(buckets, entry_keys [R] i64, entry_first [R] i32, entry_chunks [R] i8, row_keys [U] i64, Cmax,
//     max_probe) -> (entries [U] i32, slots [U, Cmax] i32). One group of next_pow2(min(Cmax, 32)) lanes per row:
//     every lane probes the row key (the same addresses: one transaction per load), lane k writes run slots k,
//     k + G, ... Same output as the CPU kernel on every valid index; every output element is written. Index values
//     (bucket contents, entry runs) are checked on the host, all of them, in index check mode "all" (one
//     read-back each; the CPU checks those a lookup reads). In mode "ids" they are not: a bucket value outside
//     [-1, R) ends the probe (the row reads as absent) and a malformed run gives slot values the chunk-bag ops
//     treat as missing.
// vhpi_insert_(buckets, slot_keys, slots [n] i32, max_probe) -> int. One thread per slot, claiming an empty
//     bucket with atomicCAS along its probe sequence. CONTRACT ON CUDA (differs from the CPU):
//       * bucket placement depends on thread timing (the CPU inserts in `slots` order), so buckets may differ
//         from the CPU's bit for bit; every inserted key is still findable within max_probe (a key only passes
//         buckets that were full when it passed them, and buckets never empty during an insert), no key is
//         placed twice (one CAS success per thread);
//       * the return value is the NUMBER OF SLOTS INSERTED; the slots that found no empty bucket within
//         max_probe are left out (not a prefix of `slots`, as on the CPU). The caller compares it with
//         len(slots) and rebuilds, as chunk_store.py does;
//       * arguments are all validated before anything is inserted, by the CPU's checks (vhpi_checks.h); in index
//         check mode "ids" they are not, and a slot outside [0, S) or without a key is skipped (not counted).
// vhpi_rebuild(slot_keys, H, max_probe) -> buckets [H] i32, or an empty tensor if a key found no bucket.
//     Parallel atomicCAS insertion of every live slot: placement differs from the CPU's slot order (and may
//     differ run to run), and whether a table near the probe bound fails may too; the set of keys and their
//     findability are the same.
// Each op that returns a host value (insert's count, rebuild's success) synchronises once for it; in index check
// mode "all" each host-side value check (vhpi_checks.h) reads back one more value.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/cuda_helpers.cuh"
#include "vhpi/vhpi_checks.h"
#include "common/registration.h"
#include "vhpi/vhpi_probe.h"

namespace emb_opt {
namespace {

using cuda::Group;
using cuda::kThreads;

__global__ void __launch_bounds__(kThreads)
    vhpi_lookup_runs_kernel(const int32_t* __restrict__ buckets, const int64_t* __restrict__ entry_keys,
                            int64_t num_buckets, int64_t num_entries, int64_t max_probe,
                            const int32_t* __restrict__ entry_first, const int8_t* __restrict__ entry_chunks,
                            const int64_t* __restrict__ row_keys, int64_t n, int max_chunks, int group_size,
                            int32_t* __restrict__ entries, int32_t* __restrict__ slots) {
  const Group g(group_size);
  for (int64_t u = g.index(); u < n; u += g.count()) {  // uniform within the group
    int64_t bad_bucket = -1;
    int32_t e = probe_key(buckets, entry_keys, num_buckets, num_entries, max_probe, row_keys[u], &bad_bucket);
    if (e == kCorruptBucket) e = -1;
    const int count = e < 0 ? 0 : min(max(static_cast<int>(__ldg(entry_chunks + e)), 0), max_chunks);
    const int32_t first = e < 0 ? 0 : __ldg(entry_first + e);
    if (g.lane == 0) entries[u] = e;
    for (int k = g.lane; k < max_chunks; k += group_size) slots[u * max_chunks + k] = k < count ? first + k : -1;
  }
}

// Claims an empty bucket on key's probe sequence; false if none within max_probe.
__device__ __forceinline__ bool insert_one(int32_t* buckets, int64_t num_buckets, int64_t max_probe, int64_t key,
                                           int32_t slot) {
  int64_t pos = home_bucket(key, num_buckets);
  for (int64_t p = 0; p < max_probe; ++p) {
    if (atomicCAS(buckets + pos, -1, slot) == -1) return true;
    pos = (pos + 1 == num_buckets) ? 0 : pos + 1;
  }
  return false;
}

// Inserts slots[i] for all i; status[0] += number inserted. A slot outside [0, num_slots) or without a key (only
// possible when the host did not check them, index check mode "ids") is skipped.
__global__ void vhpi_insert_kernel(int32_t* __restrict__ buckets, int64_t num_buckets, int64_t max_probe,
                                   const int64_t* __restrict__ slot_keys, int64_t num_slots,
                                   const int32_t* __restrict__ slots, int64_t n, int64_t* __restrict__ status) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t slot = slots[i];
    const int64_t key = (slot >= 0 && slot < num_slots) ? slot_keys[slot] : -1;
    const bool ok = key >= 0 && insert_one(buckets, num_buckets, max_probe, key, slot);
    const unsigned active = __activemask();
    const unsigned done = __ballot_sync(active, ok);
    if ((threadIdx.x & 31) == __ffs(active) - 1 && done != 0) {
      atomicAdd(reinterpret_cast<unsigned long long*>(status), static_cast<unsigned long long>(__popc(done)));
    }
  }
}

// Inserts every live slot; status[0] = 1 if some key found no bucket.
__global__ void vhpi_rebuild_kernel(int32_t* __restrict__ buckets, int64_t num_buckets, int64_t max_probe,
                                    const int64_t* __restrict__ slot_keys, int64_t num_slots,
                                    int64_t* __restrict__ status) {
  for (int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; s < num_slots;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t key = slot_keys[s];
    if (key < 0) continue;
    if (!insert_one(buckets, num_buckets, max_probe, key, static_cast<int32_t>(s))) {
      atomicExch(reinterpret_cast<unsigned long long*>(status), 1ull);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> lookup_runs_cuda(const at::Tensor& buckets, const at::Tensor& entry_keys,
                                                         const at::Tensor& entry_first,
                                                         const at::Tensor& entry_chunks, const at::Tensor& row_keys,
                                                         int64_t max_chunks, int64_t max_probe) {
  cuda::check_device("vhpi_lookup_runs", buckets.device(),
                     {{"entry_keys", &entry_keys}, {"entry_first", &entry_first}, {"entry_chunks", &entry_chunks},
                      {"row_keys", &row_keys}});
  check_lookup_runs_args(buckets, entry_keys, entry_first, entry_chunks, row_keys, max_chunks, max_probe);
  c10::cuda::CUDAGuard guard(buckets.device());
  const int64_t n = row_keys.numel();
  auto entries = at::empty({n}, row_keys.options().dtype(at::kInt));
  auto slots = at::empty({n, max_chunks}, row_keys.options().dtype(at::kInt));
  if (n == 0) return {entries, slots};
  auto keys = row_keys.contiguous();
  const int group = cuda::next_pow2(std::min<int64_t>(max_chunks, 32));
  vhpi_lookup_runs_kernel<<<cuda::blocks_for(n * group), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      buckets.data_ptr<int32_t>(), entry_keys.data_ptr<int64_t>(), buckets.numel(), entry_keys.numel(), max_probe,
      entry_first.data_ptr<int32_t>(), entry_chunks.data_ptr<int8_t>(), keys.data_ptr<int64_t>(), n,
      static_cast<int>(max_chunks), group, entries.data_ptr<int32_t>(), slots.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {entries, slots};
}

int64_t insert_cuda(at::Tensor& buckets, const at::Tensor& slot_keys, const at::Tensor& slots,
                         int64_t max_probe) {
  cuda::check_device("vhpi_insert_", buckets.device(), {{"slot_keys", &slot_keys}, {"slots", &slots}});
  check_insert_args(buckets, slot_keys, slots, max_probe);
  c10::cuda::CUDAGuard guard(buckets.device());
  auto s = slots.contiguous();
  const int64_t n = s.numel();
  if (n == 0) return 0;
  auto inserted = at::zeros({1}, slot_keys.options());
  vhpi_insert_kernel<<<cuda::blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      buckets.data_ptr<int32_t>(), buckets.numel(), max_probe, slot_keys.data_ptr<int64_t>(), slot_keys.numel(),
      s.data_ptr<int32_t>(), n, inserted.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return cuda::read_back(inserted)[0];
}

at::Tensor rebuild_cuda(const at::Tensor& slot_keys, int64_t num_buckets, int64_t max_probe) {
  check_rebuild_args(slot_keys, num_buckets, max_probe);
  c10::cuda::CUDAGuard guard(slot_keys.device());
  auto keys = slot_keys.contiguous();
  auto buckets = at::full({num_buckets}, -1, keys.options().dtype(at::kInt));
  const int64_t ns = keys.numel();
  if (ns == 0) return buckets;
  auto status = at::zeros({1}, keys.options());
  vhpi_rebuild_kernel<<<cuda::blocks_for(ns), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      buckets.data_ptr<int32_t>(), num_buckets, max_probe, keys.data_ptr<int64_t>(), ns,
      status.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (cuda::read_back(status)[0] != 0) return at::empty({0}, buckets.options());
  return buckets;
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CUDA, m) { register_kernels(m, kVhpiOps, lookup_runs_cuda, insert_cuda, rebuild_cuda); }

}  // namespace emb_opt
