// Python module entry of the native extension: importing cuda_ext._C loads this library, whose static
// initialisers register every operator (TORCH_LIBRARY_FRAGMENT(emb_opt, ...) in each op family's *_ops.cpp).
// The module also carries the C++ side of the layout contract (`layout`, held equal to cuda_ext/layout.py by
// tests/test_kernels_layout.py) and the index check mode (common/check_mode.h).
#include <torch/extension.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "common/check_mode.h"
#include "common/layout.h"

namespace {

pybind11::dict dict_of(std::initializer_list<std::pair<const char*, int64_t>> items) {
  pybind11::dict out;
  for (const auto& [name, value] : items) out[name] = value;
  return out;
}

pybind11::dict layout_dict() {
  using namespace emb_opt;  // NOLINT
  pybind11::dict layout = dict_of({{"CHUNK_BITS", kChunkBits}, {"ROW_BITS", kRowBits}, {"TABLE_BITS", kTableBits},
                                   {"MAX_CHUNKS", kMaxChunks}, {"MAX_ROWS", kMaxRows}, {"MAX_TABLES", kMaxTables},
                                   {"PROBE_SEED", kProbeSeed}});
  layout["OPTIMIZER_CODES"] =
      dict_of({{"sgd", kOptimSgd}, {"adagrad", kOptimAdagrad}, {"rowwise_adagrad", kOptimRowwiseAdagrad}});
  layout["UTILITY_CODES"] = dict_of({{"freq", kUtilityFreq}, {"grad", kUtilityGrad}, {"freq_grad", kUtilityFreqGrad}});
  layout["POOLING_CODES"] = dict_of({{"sum", kPoolingSum}, {"mean", kPoolingMean}});
  return layout;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "emb_opt native kernels (operators live in torch.ops.emb_opt)";
#ifdef EMB_OPT_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("layout") = layout_dict();
  m.def("index_check_mode", [] { return std::string(emb_opt::index_check_mode_name(emb_opt::index_check_mode())); },
        "The index check mode of every op: \"all\" or \"ids\" (common/check_mode.h).");
  m.def(
      "set_index_check_mode",
      [](const std::string& mode) { emb_opt::set_index_check_mode(emb_opt::parse_index_check_mode(mode.c_str())); },
      "Set the index check mode: \"all\" (every index argument checked) or \"ids\" (on CUDA, only user-facing ids).");
}
