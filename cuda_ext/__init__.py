"""Native kernels of emb_opt, with a pure-PyTorch reference for every operator.

``ops.<name>(...)`` calls ``torch.ops.emb_opt.<name>`` when the compiled extension ``cuda_ext._C`` is present
(C++ CPU kernels always, CUDA kernels when it was built with CUDA), and otherwise the reference
implementation in ``cuda_ext.reference`` -- saying so once with a warning, so a missing build costs speed, never
correctness. Tests hold the kernels to the references on random inputs (``tests/test_kernels_*.py``).

Set ``EMB_OPT_DISABLE_EXTENSION=1`` to force the references (e.g. to compare).

Every op checks its index arguments before it touches memory (``csrc/common/check_mode.h``):
``set_index_check_mode("ids")`` lets the CUDA ops trust the indices emb_opt's own ops produce (no device
read-backs for them); the default ``"all"`` checks everything everywhere. The key layout and the ops' integer codes
are in ``cuda_ext.layout``; fake (meta) implementations of every op, for tracing, in ``cuda_ext.fake``.
"""
from __future__ import annotations

import importlib
import os
import warnings
from typing import Any, Callable, Optional

import torch

from cuda_ext import reference

_load_error: Optional[BaseException] = None
_C: Any = None
if os.environ.get("EMB_OPT_DISABLE_EXTENSION") != "1":
    try:
        _C = importlib.import_module("cuda_ext._C")  # importing registers torch.ops.emb_opt.*
    except ImportError as error:  # not built, or built against another torch
        _load_error = error
    else:
        importlib.import_module("cuda_ext.fake")
else:
    _load_error = RuntimeError("disabled by EMB_OPT_DISABLE_EXTENSION=1")

_warned = False


def extension_loaded() -> bool:
    """True when the compiled operators are registered in ``torch.ops.emb_opt``."""
    return _C is not None


def extension_with_cuda() -> bool:
    """True when the compiled extension carries CUDA kernels."""
    return _C is not None and bool(getattr(_C, "with_cuda", False))


def extension_status() -> str:
    """One line for logs and the README: what is loaded and why not."""
    if _C is None:
        return f"not loaded ({_load_error}); using the pure-PyTorch reference kernels"
    return "loaded (C++ CPU kernels" + (" + CUDA kernels)" if extension_with_cuda() else ")")


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"emb_opt: native extension {extension_status()}. Run `pip install --no-build-isolation -e .` "
            "(or scripts/setup_env.sh) to build it.",
            RuntimeWarning,
            stacklevel=3,
        )


def adopt_registered_operators(with_cuda: bool) -> None:
    """Call ``torch.ops.emb_opt.*`` registered by a library loaded elsewhere, not the references.

    ``experiments/cuda_build.py`` compiles the operators on a GPU machine (where no ``cuda_ext._C`` exists for
    its Python) and loads them with ``torch.ops.load_library``; after this call ``ops.<name>`` uses them.
    """
    global _C, _load_error
    getattr(torch.ops.emb_opt, "chunk_bag_forward")  # raises if no library registered the operators
    importlib.import_module("cuda_ext.fake")
    _C = type("RegisteredOperators", (), {"with_cuda": bool(with_cuda)})()
    _load_error = None


def index_check_mode() -> str:
    """``"all"`` (every op checks every index argument) or ``"ids"`` (the CUDA ops check user-facing ids only)."""
    return _check_mode_module().index_check_mode()


def set_index_check_mode(mode: str) -> None:
    """Set how thoroughly the ops check their index arguments (``csrc/common/check_mode.h``): ``"all"`` (default)
    or ``"ids"``. The CPU ops check everything in both modes."""
    _check_mode_module().set_index_check_mode(mode)


def _check_mode_module() -> Any:
    if _C is None or not hasattr(_C, "set_index_check_mode"):
        raise RuntimeError("the index check mode is set on cuda_ext._C; operators loaded another way read it from "
                           "the environment variable EMB_OPT_INDEX_CHECKS (\"all\" or \"ids\") when they load")
    return _C


class _Ops:
    """Dispatch ``ops.name(...)`` to the compiled operator or to ``cuda_ext.reference.name``."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if _C is not None:
            return getattr(torch.ops.emb_opt, name)
        _warn_once()
        return getattr(reference, name)


ops = _Ops()

__all__ = ["ops", "reference", "extension_loaded", "extension_with_cuda", "extension_status",
           "adopt_registered_operators", "index_check_mode", "set_index_check_mode"]
