// Python module entry of the native extension: importing cuda_ext._C loads this library, whose static
// initialisers register every operator (TORCH_LIBRARY_FRAGMENT(emb_opt, ...) in each op family's *_ops.cpp).
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "emb_opt native kernels (operators live in torch.ops.emb_opt)";
#ifdef EMB_OPT_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
