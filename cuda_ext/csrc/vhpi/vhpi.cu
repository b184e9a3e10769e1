// CUDA kernels of the VHPI hash-table ops (schemas in vhpi_ops.cpp, layout and probe rule in
// common/vhpi_key.h, CPU kernels in vhpi_cpu.cpp, reference in cuda_ext/reference/vhpi.py).
//
// vhpi_lookup(buckets [H] i32, slot_keys [S] i64, row_keys [U] i64, num_chunks [U] i32, Cmax, max_probe)
//     -> slots [U, Cmax] i32. One group of next_pow2(min(Cmax, 32)) lanes per row; lane k probes chunk k (and
//     k+32 for Cmax > 32) in parallel, and a ballot keeps the prefix up to the first missing chunk. Same output
//     as the CPU kernel on every input (the CPU stops probing at the first missing chunk; here every chunk is
//     probed, then masked). Every output element is written (no fill pass).
// vhpi_lookup_runs(buckets, entry_keys [R] i64, entry_first [R] i32, entry_chunks [R] i8, row_keys [U] i64, Cmax,
//     max_probe) -> (entries [U] i32, slots [U, Cmax] i32). One group of next_pow2(min(Cmax, 32)) lanes per row:
//     every lane probes the row key (the same addresses: one transaction per load), lane k writes run slots k,
//     k + G, ... Same output as the CPU kernel; every output element is written.
// vhpi_insert_(buckets, slot_keys, slots [n] i32, max_probe) -> int. One thread per slot, claiming an empty
//     bucket with atomicCAS along its probe sequence. CONTRACT ON CUDA (differs from the CPU):
//       * bucket placement depends on thread timing (the CPU inserts in `slots` order), so buckets may differ
//         from the CPU's bit for bit; every inserted key is still findable within max_probe (a key only passes
//         buckets that were full when it passed them, and buckets never empty during an insert), no key is
//         placed twice (one CAS success per thread);
//       * the return value is the NUMBER OF SLOTS INSERTED; the slots that found no empty bucket within
//         max_probe are left out (not a prefix of `slots`, as on the CPU). The caller compares it with
//         len(slots) and rebuilds, as chunk_store.py does;
//       * arguments are all validated before anything is inserted: a bad slot raises the CPU's message
//         ("slot X out of range [0, S)" / "slot X has no key") for the first bad position and leaves the
//         table untouched (the CPU inserts the slots before it).
// vhpi_rebuild(slot_keys, H, max_probe) -> buckets [H] i32, or an empty tensor if a key found no bucket.
//     Parallel atomicCAS insertion of every live slot: placement differs from the CPU's slot order (and may
//     differ run to run), and whether a table near the probe bound fails may too; the set of keys and their
//     findability are the same.
// Each op that returns a host value (insert's count, rebuild's success) synchronises once.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/cuda_helpers.cuh"
#include "common/vhpi_key.h"
#include "vhpi/vhpi_checks.h"

namespace emb_opt {
namespace {

using cuda::Group;
using cuda::kNone;
using cuda::kThreads;

// probe_slot of vhpi_key.h, ignoring bucket entries that point past the slot table (a corrupt table must not
// make the kernel read out of bounds).
__device__ __forceinline__ int32_t probe_slot_checked(const int32_t* __restrict__ buckets,
                                                      const int64_t* __restrict__ slot_keys, int64_t num_buckets,
                                                      int64_t num_slots, int64_t max_probe, int64_t key) {
  int64_t b = home_bucket(key, num_buckets);
  for (int64_t p = 0; p < max_probe; ++p) {
    const int32_t s = __ldg(buckets + b);
    if (s < 0) return -1;
    if (s < num_slots && __ldg(slot_keys + s) == key) return s;
    b = (b + 1 == num_buckets) ? 0 : b + 1;
  }
  return -1;
}

__global__ void __launch_bounds__(kThreads)
    vhpi_lookup_kernel(const int32_t* __restrict__ buckets, const int64_t* __restrict__ slot_keys,
                       int64_t num_buckets, int64_t num_slots, int64_t max_probe,
                       const int64_t* __restrict__ row_keys, const int32_t* __restrict__ num_chunks, int64_t n,
                       int max_chunks, int group_size, int32_t* __restrict__ out) {
  const Group g(group_size);
  for (int64_t u = g.index(); u < n; u += g.count()) {  // uniform within the group
    const int64_t key0 = row_keys[u];
    const int limit = min(max(num_chunks[u], 0), max_chunks);
    bool alive = true;  // no chunk missing in earlier passes
    for (int k0 = 0; k0 < max_chunks; k0 += group_size) {
      const int k = k0 + g.lane;
      int32_t s = -1;
      if (alive && k < limit) s = probe_slot_checked(buckets, slot_keys, num_buckets, num_slots, max_probe, key0 | k);
      const unsigned missing = g.ballot(k < limit && s < 0);
      const bool before_first_missing = (missing & ((1u << g.lane) - 1u)) == 0;
      if (k < max_chunks) out[u * max_chunks + k] = (alive && before_first_missing) ? s : -1;
      if (missing != 0 || k0 + group_size >= limit) alive = false;
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    vhpi_lookup_runs_kernel(const int32_t* __restrict__ buckets, const int64_t* __restrict__ entry_keys,
                            int64_t num_buckets, int64_t num_entries, int64_t max_probe,
                            const int32_t* __restrict__ entry_first, const int8_t* __restrict__ entry_chunks,
                            const int64_t* __restrict__ row_keys, int64_t n, int max_chunks, int group_size,
                            int32_t* __restrict__ entries, int32_t* __restrict__ slots) {
  const Group g(group_size);
  for (int64_t u = g.index(); u < n; u += g.count()) {  // uniform within the group
    const int32_t e = probe_slot_checked(buckets, entry_keys, num_buckets, num_entries, max_probe, row_keys[u]);
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

// status[0] = first position whose slot is out of range or keyless (kNone if none)
__global__ void vhpi_validate_slots_kernel(const int32_t* __restrict__ slots, int64_t n,
                                           const int64_t* __restrict__ slot_keys, int64_t num_slots,
                                           int64_t* __restrict__ status) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t s = slots[i];
    if (s < 0 || s >= num_slots || slot_keys[s] < 0) {
      atomicMin(reinterpret_cast<unsigned long long*>(status), static_cast<unsigned long long>(i));
    }
  }
}

// Inserts slots[i] for all i unless validation found a bad one; status[1] += number inserted.
__global__ void vhpi_insert_kernel(int32_t* __restrict__ buckets, int64_t num_buckets, int64_t max_probe,
                                   const int64_t* __restrict__ slot_keys, const int32_t* __restrict__ slots,
                                   int64_t n, int64_t* __restrict__ status) {
  if (status[0] != kNone) return;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t slot = slots[i];
    const bool ok = insert_one(buckets, num_buckets, max_probe, slot_keys[slot], slot);
    const unsigned active = __activemask();
    const unsigned done = __ballot_sync(active, ok);
    if ((threadIdx.x & 31) == __ffs(active) - 1 && done != 0) {
      atomicAdd(reinterpret_cast<unsigned long long*>(status + 1), static_cast<unsigned long long>(__popc(done)));
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

at::Tensor vhpi_lookup_cuda(const at::Tensor& buckets, const at::Tensor& slot_keys, const at::Tensor& row_keys,
                            const at::Tensor& num_chunks, int64_t max_chunks, int64_t max_probe) {
  check_vhpi_table(buckets, slot_keys, max_probe);
  EMB_OPT_CHECK_DTYPE(row_keys, at::kLong, "vhpi_lookup: row_keys");
  EMB_OPT_CHECK_DTYPE(num_chunks, at::kInt, "vhpi_lookup: num_chunks");
  EMB_OPT_CHECK(row_keys.numel() == num_chunks.numel(), "vhpi_lookup: row_keys and num_chunks differ in length");
  EMB_OPT_CHECK(max_chunks >= 1 && max_chunks <= (1 << kChunkBits), "vhpi_lookup: max_chunks out of range");
  cuda::check_device("vhpi_lookup", buckets.device(),
                     {{"slot_keys", &slot_keys}, {"row_keys", &row_keys}, {"num_chunks", &num_chunks}});
  c10::cuda::CUDAGuard guard(buckets.device());
  const int64_t n = row_keys.numel();
  auto out = at::empty({n, max_chunks}, row_keys.options().dtype(at::kInt));
  if (n == 0) return out;
  auto keys = row_keys.contiguous();
  auto chunks = num_chunks.contiguous();
  const int group = cuda::next_pow2(std::min<int64_t>(max_chunks, 32));
  vhpi_lookup_kernel<<<cuda::blocks_for(n * group), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      buckets.data_ptr<int32_t>(), slot_keys.data_ptr<int64_t>(), buckets.numel(), slot_keys.numel(), max_probe,
      keys.data_ptr<int64_t>(), chunks.data_ptr<int32_t>(), n, static_cast<int>(max_chunks), group,
      out.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> vhpi_lookup_runs_cuda(const at::Tensor& buckets, const at::Tensor& entry_keys,
                                                         const at::Tensor& entry_first,
                                                         const at::Tensor& entry_chunks, const at::Tensor& row_keys,
                                                         int64_t max_chunks, int64_t max_probe) {
  check_lookup_runs_args(buckets, entry_keys, entry_first, entry_chunks, row_keys, max_chunks, max_probe);
  cuda::check_device("vhpi_lookup_runs", buckets.device(),
                     {{"entry_keys", &entry_keys}, {"entry_first", &entry_first}, {"entry_chunks", &entry_chunks},
                      {"row_keys", &row_keys}});
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

int64_t vhpi_insert_cuda(at::Tensor& buckets, const at::Tensor& slot_keys, const at::Tensor& slots,
                         int64_t max_probe) {
  check_vhpi_table(buckets, slot_keys, max_probe);
  EMB_OPT_CHECK_DTYPE(slots, at::kInt, "vhpi_insert_: slots");
  cuda::check_device("vhpi_insert_", buckets.device(), {{"slot_keys", &slot_keys}, {"slots", &slots}});
  c10::cuda::CUDAGuard guard(buckets.device());
  auto s = slots.contiguous();
  const int64_t n = s.numel();
  if (n == 0) return 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto status = at::full({2}, kNone, slot_keys.options());  // (first bad position, number inserted)
  status.narrow(0, 1, 1).zero_();
  const int64_t blocks = cuda::blocks_for(n);
  vhpi_validate_slots_kernel<<<blocks, kThreads, 0, stream>>>(s.data_ptr<int32_t>(), n,
                                                              slot_keys.data_ptr<int64_t>(), slot_keys.numel(),
                                                              status.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  vhpi_insert_kernel<<<blocks, kThreads, 0, stream>>>(buckets.data_ptr<int32_t>(), buckets.numel(), max_probe,
                                                      slot_keys.data_ptr<int64_t>(), s.data_ptr<int32_t>(), n,
                                                      status.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const auto host = cuda::read_back(status);
  if (host[0] != kNone) {
    const int64_t bad_slot = s[host[0]].item<int64_t>();
    const int64_t ns = slot_keys.numel();
    EMB_OPT_CHECK(bad_slot >= 0 && bad_slot < ns, "vhpi_insert_: slot ", bad_slot, " out of range [0, ", ns, ")");
    EMB_OPT_CHECK(false, "vhpi_insert_: slot ", bad_slot, " has no key");
  }
  return host[1];
}

at::Tensor vhpi_rebuild_cuda(const at::Tensor& slot_keys, int64_t num_buckets, int64_t max_probe) {
  EMB_OPT_CHECK_DTYPE(slot_keys, at::kLong, "vhpi_rebuild: slot_keys");
  EMB_OPT_CHECK(num_buckets >= 1, "vhpi_rebuild: num_buckets must be >= 1");
  EMB_OPT_CHECK(max_probe >= 1, "vhpi_rebuild: max_probe must be >= 1");
  EMB_OPT_CHECK(slot_keys.numel() <= INT32_MAX, "vhpi_rebuild: more than 2^31 - 1 slots");
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

TORCH_LIBRARY_IMPL(emb_opt, CUDA, m) {
  m.impl("vhpi_lookup", &vhpi_lookup_cuda);
  m.impl("vhpi_lookup_runs", &vhpi_lookup_runs_cuda);
  m.impl("vhpi_insert_", &vhpi_insert_cuda);
  m.impl("vhpi_rebuild", &vhpi_rebuild_cuda);
}

}  // namespace emb_opt
