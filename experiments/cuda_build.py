"""Build the native operators (C++ CPU + CUDA kernels of ``cuda_ext/csrc``) on a GPU machine, in place.

The lent GPU machines get a bare checkout (no ``cuda_ext._C``; their Python is 3.12 with torch 2.11+cu130, so a
build from elsewhere would not load anyway). ``build_native_ops()`` compiles every ``cuda_ext/csrc/**/*.cpp`` and
``*.cu`` with ``torch.utils.cpp_extension.load`` into a build dir (default ``/tmp/emb_opt_cuda_build``, kept
between calls on a warm machine: a second call only links/loads) and loads the library, whose static
initialisers register ``torch.ops.emb_opt.*`` for CPU and CUDA; ``cuda_ext.adopt_registered_operators`` then makes
``cuda_ext.ops`` use them. Importing this module sets ``EMB_OPT_DISABLE_EXTENSION=1`` (unless set), so that a
``cuda_ext`` imported afterwards never loads a second copy of the operators.

The kernel suite builds through it on a machine without ``cuda_ext._C`` (tests/kernel_cases.py):

    EMB_OPT_BUILD_OPS=1 python -m pytest -q tests/test_kernels_*.py tests/test_kernel_error_messages.py
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List

os.environ.setdefault("EMB_OPT_DISABLE_EXTENSION", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "cuda_ext" / "csrc"
DEFAULT_BUILD_DIR = "/tmp/emb_opt_cuda_build"


def native_sources(with_cuda: bool) -> List[str]:
    sources = sorted(str(p) for p in CSRC.rglob("*.cpp"))
    if with_cuda:
        sources += sorted(str(p) for p in CSRC.rglob("*.cu"))
    return sources


def build_native_ops(build_dir: str = "", verbose: bool = False) -> float:
    """Compile and load the operators (CUDA kernels when torch sees a GPU); returns seconds spent."""
    from torch.utils import cpp_extension

    start = time.perf_counter()
    with_cuda = torch.cuda.is_available()
    build_dir = build_dir or os.environ.get("EMB_OPT_BUILD_DIR", DEFAULT_BUILD_DIR)
    os.makedirs(build_dir, exist_ok=True)
    if with_cuda and "TORCH_CUDA_ARCH_LIST" not in os.environ:
        major, minor = torch.cuda.get_device_capability()
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"  # sm_90 on H100/H200
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    cflags = ["-O3", "-std=c++20", "-fopenmp"] + (["-DEMB_OPT_WITH_CUDA=1"] if with_cuda else [])
    cpp_extension.load(
        name="emb_opt_native_cuda" if with_cuda else "emb_opt_native_cpu",
        sources=native_sources(with_cuda),
        extra_include_paths=[str(CSRC)],
        extra_cflags=cflags,
        extra_cuda_cflags=["-O3", "-std=c++20", "--expt-relaxed-constexpr"],
        extra_ldflags=["-fopenmp"],
        build_directory=build_dir,
        is_python_module=False,  # loads the library with torch.ops.load_library: registers torch.ops.emb_opt
        verbose=verbose,
    )
    return time.perf_counter() - start
