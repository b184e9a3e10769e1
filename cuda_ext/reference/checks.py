"""Index checks of the reference ops: the checks of ``csrc/common/checks.h`` with the same messages, so a
reference raises ``IndexError`` on every input where the native op does."""
from __future__ import annotations

import torch


def position(shape, flat: int) -> str:
    """``"[4]"`` for flat position 4 of a 1-D tensor, ``"[2, 0]"`` for flat position 4 of a ``[3, 2]`` one."""
    index = []
    for extent in reversed(list(shape) or [flat + 1]):
        extent = max(int(extent), 1)
        index.append(flat % extent)
        flat //= extent
    return "[" + ", ".join(str(i) for i in reversed(index)) + "]"


def raise_outside(op: str, name: str, t: torch.Tensor, flat: int, lo: int, hi: int, what: str = "") -> None:
    value = int(t.reshape(-1)[flat])
    raise IndexError(f"{op}: {name}{position(t.shape, flat)} = {value} is outside [{lo}, {hi})"
                     + (f" ({what})" if what else ""))


def first_outside(t: torch.Tensor, lo: int, hi: int) -> int:
    """First flat position of t whose value is outside [lo, hi), or -1."""
    flat = t.reshape(-1).to(torch.int64)
    bad = ((flat < lo) | (flat >= hi)).nonzero()
    return int(bad[0, 0]) if bad.numel() else -1


def check_in_range(op: str, name: str, t: torch.Tensor, lo: int, hi: int, what: str = "") -> None:
    bad = first_outside(t, lo, hi)
    if bad >= 0:
        raise_outside(op, name, t, bad, lo, hi, what)


def check_offsets(op: str, name: str, t: torch.Tensor, count: int, exact_end: bool, count_what: str,
                  step: str) -> None:
    """An offsets-like int64 array over ``count`` elements: starts at 0, never decreases, ends at most (or, with
    ``exact_end``, exactly) at ``count``."""
    if int(t[0]) != 0:
        raise IndexError(f"{op}: {name}[0] must be 0, got {int(t[0])}")
    drops = (t[1:] < t[:-1]).nonzero()
    if drops.numel():
        raise IndexError(f"{op}: {name} decrease at {step} {int(drops[0, 0])}")
    last = int(t[-1])
    if exact_end and last != count:
        raise IndexError(f"{op}: {name}[-1] = {last} must equal the {count} {count_what}")
    if not exact_end and last > count:
        raise IndexError(f"{op}: {name}[-1] = {last} exceeds the {count} {count_what}")
