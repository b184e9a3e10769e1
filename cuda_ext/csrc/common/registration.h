// register_kernels: one line per op family and device in the *_cpu.cpp / *.cu files, naming the family's ops once
// (their *_checks.h) and the file's kernels in the same order.
#pragma once
#include <torch/library.h>

#include <array>
#include <cstddef>

namespace emb_opt {

// Registers kernels[i] as op names[i]'s kernel in `m` (a TORCH_LIBRARY_IMPL block: one dispatch key).
template <std::size_t N, typename... Kernels>
void register_kernels(torch::Library& m, const std::array<const char*, N>& names, Kernels*... kernels) {
  static_assert(sizeof...(Kernels) == N, "one kernel per op");
  std::size_t i = 0;
  (m.impl(names[i++], kernels), ...);
}

}  // namespace emb_opt
