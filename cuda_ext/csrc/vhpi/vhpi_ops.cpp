// Registration of the VHPI hash-table op family (CPU impl: vhpi_cpu.cpp; CUDA impl: vhpi.cu; argument checks:
// vhpi_checks.h; fake (meta) impls: cuda_ext/fake.py; reference: cuda_ext/reference/vhpi.py).
// Key layout: common/layout.h; probe rule: vhpi/vhpi_probe.h.
#include <ATen/core/enum_tag.h>
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(emb_opt, m) {
  m.set_python_module("cuda_ext.fake");
  // The row index of the row-keyed store (emb_opt/chunk_store.py): entries[u] = the entry whose key is
  // row_keys[u], found by probing buckets (values: indices into entry_keys, -1 = empty), -1 if none; a found
  // row's chunks are the run slots[u, k] = entry_first[e] + k for k < min(entry_chunks[e], max_chunks), -1
  // elsewhere. Bucket values must lie in [-1, R), entry_chunks in [0, 64] and entry_first in [0, 2^31 - 63), so a
  // run's slot ids fit int32; that a run lies inside the pool is the caller's invariant (the pool is no argument
  // here) and the chunk-bag ops check every slot against the pool. -> (entries int32 [U], slots int32 [U, Cmax])
  m.def(
      "vhpi_lookup_runs(Tensor buckets, Tensor entry_keys, Tensor entry_first, Tensor entry_chunks, "
      "Tensor row_keys, int max_chunks, int max_probe) -> (Tensor, Tensor)");
  // Insert slots[i] (whose key is already in slot_keys, so slots[i] in [0, S) and slot_keys[slots[i]] >= 0) into
  // buckets, in order. Returns the number inserted: fewer than len(slots) means slot number <return> found no
  // empty bucket within max_probe (the caller grows the table and rebuilds). Keys must not be present already.
  // The count depends on the data: under FakeTensorMode the op raises DataDependentOutputException.
  m.def("vhpi_insert_(Tensor(a!) buckets, Tensor slot_keys, Tensor slots, int max_probe) -> int",
        {at::Tag::data_dependent_output});
  // A fresh bucket array holding every live slot (slot_keys >= 0), inserted in slot order, or an empty
  // tensor if some key found no empty bucket within max_probe.
  m.def("vhpi_rebuild(Tensor slot_keys, int num_buckets, int max_probe) -> Tensor");
}
