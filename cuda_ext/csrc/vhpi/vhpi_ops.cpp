// Registration of the VHPI hash-table op family (CPU impl: vhpi_cpu.cpp; CUDA impl: vhpi.cu).
// Layout and probe rule: common/vhpi_key.h.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(emb_opt, m) {
  // slots[u, k] = slot of (row_keys[u] | k) for k < num_chunks[u], stopping at the first missing chunk
  // (a row's live chunks are a prefix); -1 elsewhere. -> int32 [U, max_chunks]
  m.def(
      "vhpi_lookup(Tensor buckets, Tensor slot_keys, Tensor row_keys, Tensor num_chunks, int max_chunks, "
      "int max_probe) -> Tensor");
  // The row index of the row-keyed store (emb_opt/chunk_store.py): entries[u] = the entry whose key is
  // row_keys[u] (probing entry_keys as slot_keys above), -1 if none; a found row's chunks are the run
  // slots[u, k] = entry_first[e] + k for k < min(entry_chunks[e], max_chunks), -1 elsewhere.
  // -> (entries int32 [U], slots int32 [U, max_chunks])
  m.def(
      "vhpi_lookup_runs(Tensor buckets, Tensor entry_keys, Tensor entry_first, Tensor entry_chunks, "
      "Tensor row_keys, int max_chunks, int max_probe) -> (Tensor, Tensor)");
  // Insert slots[i] (whose key is already in slot_keys) into buckets, in order. Returns the number inserted:
  // fewer than len(slots) means slot number <return> found no empty bucket within max_probe (the caller
  // grows the table and rebuilds). Keys must not be present already.
  m.def("vhpi_insert_(Tensor(a!) buckets, Tensor slot_keys, Tensor slots, int max_probe) -> int");
  // A fresh bucket array holding every live slot (slot_keys >= 0), inserted in slot order, or an empty
  // tensor if some key found no empty bucket within max_probe.
  m.def("vhpi_rebuild(Tensor slot_keys, int num_buckets, int max_probe) -> Tensor");
}
