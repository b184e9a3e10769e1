"""The VHPI store's counters: one int64 buffer (``store.counters``), so checkpoints carry them.

``StoreCounter`` names each position; ``store.counter_dict()`` reads them by name. Allocation state (the
high-water marks) and the resize schedule's memory (last resize step, denials at that step) live here too, so a
store restored from a checkpoint continues exactly where it stopped.
"""
from __future__ import annotations

from enum import IntEnum


class StoreCounter(IntEnum):
    STEP = 0  # training forwards so far
    HIGH_WATER = 1  # pool slots handed out (the bump allocator's mark)
    RESIZES = 2
    DENIED_ADMISSIONS = 3  # chunks that got no room because the budget was full
    ADMITTED_CHUNKS = 4
    PRUNED_CHUNKS = 5
    HASH_REBUILDS = 6
    LAST_RESIZE_STEP = 7
    DENIED_AT_LAST_RESIZE = 8  # denied_admissions when the last resize ran (pressure = denials since)
    ROW_HIGH_WATER = 9  # index entries handed out
    RELOCATED_ROWS = 10  # rows that moved to a longer run
    SKIPPED_NONFINITE = 11  # training steps whose update was skipped: NaN / inf gradient or weights

    @property
    def label(self) -> str:
        """The counter's name in ``counter_dict()``."""
        return self.name.lower()


NUM_COUNTERS = len(StoreCounter)
COUNTER_NAMES = [c.label for c in StoreCounter]
