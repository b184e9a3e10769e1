"""Build and install emb_opt, hashing, semantic_id and cuda_ext (``experiments/`` runs from the repository root).

The native extension ``cuda_ext._C`` is built with ``torch.utils.cpp_extension``:
  * C++ sources (``cuda_ext/csrc/**/*.cpp``) always;
  * CUDA sources (``cuda_ext/csrc/**/*.cu``) only when the installed torch has CUDA and nvcc is found
    (or ``EMB_OPT_FORCE_CUDA=1``). ``EMB_OPT_NO_CUDA=1`` skips them.
If the build fails, nothing is lost: every operator has a pure-PyTorch reference in ``cuda_ext.reference``
that the packages fall back to (with one warning). ``EMB_OPT_NO_EXTENSION=1`` skips the build entirely.

Install with ``pip install --no-build-isolation -e .`` (torch must already be installed; see
scripts/setup_env.sh).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    if os.environ.get("EMB_OPT_NO_EXTENSION") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension, CUDA_HOME

    csrc = os.path.join("cuda_ext", "csrc")
    cpp_sources = sorted(glob.glob(os.path.join(csrc, "**", "*.cpp"), recursive=True))
    cu_sources = sorted(glob.glob(os.path.join(csrc, "**", "*.cu"), recursive=True))
    has_nvcc = CUDA_HOME is not None or shutil.which("nvcc") is not None
    with_cuda = (
        os.environ.get("EMB_OPT_NO_CUDA") != "1"
        and (torch.version.cuda is not None or os.environ.get("EMB_OPT_FORCE_CUDA") == "1")
        and has_nvcc
    )
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp"]
    include_dirs = [os.path.join(ROOT, csrc)]
    if with_cuda:
        ext = CUDAExtension(
            name="cuda_ext._C",
            sources=cpp_sources + cu_sources,
            include_dirs=include_dirs,
            define_macros=[("EMB_OPT_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20", "--expt-relaxed-constexpr"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            name="cuda_ext._C",
            sources=cpp_sources,
            include_dirs=include_dirs,
            extra_compile_args=cxx_flags,
            extra_link_args=["-fopenmp"],
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


ext_modules, cmdclass = _extensions()

setup(
    name="emb_opt",
    version="0.1.0",
    description="Smaller, better embedding tables for TorchRec DLRM: FIITED chunk pruning on a VHPI store, "
    "semantic-ID prefix-ngrams, hashing baselines, native kernels.",
    packages=find_packages(include=["emb_opt*", "hashing*", "semantic_id*", "cuda_ext*"]),  # experiments/: run from the repo
    package_data={"cuda_ext": ["csrc/**/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    python_requires=">=3.10",
)
