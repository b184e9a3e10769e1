"""Checkpoint files: written atomically, read without running code.

* ``save_checkpoint(obj, path)``: ``torch.save`` into a temporary file in the same folder, flushed and fsynced,
  then renamed over ``path`` (and the folder fsynced): a process killed at any moment leaves the old file or
  the new one, whole -- never a truncated mix.
* ``load_checkpoint(path)``: ``torch.load(..., weights_only=True)``: tensors, numbers, strings and plain
  containers only (what ``state_dict()`` holds, FIITED's self-description included). A file that needs anything
  else -- a whole pickled module, or a pickle crafted to run code -- is refused with a ``ValueError`` saying why,
  before any of it runs. What loads is then validated by whoever uses it (``load_state_dict`` checks a FIITED
  store whole before it touches the module).
"""
from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any, Union

import torch

PathLike = Union[str, "os.PathLike[str]"]


def save_checkpoint(obj: Any, path: PathLike) -> None:
    """Write ``obj`` (e.g. ``{"model": model.state_dict(), "step": step}``) to ``path`` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Any:
    """Read a checkpoint file with ``weights_only=True``; a file that needs more is refused (see above)."""
    path = os.fspath(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: refused to load: it holds objects other than tensors and plain containers, which unpickling "
            "would have to run code to build (a whole pickled module, or a file crafted to run code). Save "
            f"model.state_dict() instead. ({str(error).splitlines()[0]})"
        ) from None
