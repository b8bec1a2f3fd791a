"""Garbage collection for the batch loops (`yidi serve`, `yidi replay`).

The automatic collector is off there: its full passes walk every live object
(the world's indexes, the engine's maps) and stall a batch for tens of
milliseconds at random, and its young passes walk each batch's objects while
they are still alive. A batch's objects are trees, freed by reference counting
the moment the batch is answered (no cyclic garbage was found in any replay or
load run), so collection is only insurance against a stray cycle: the young
generations at most every YOUNG_GC_INTERVAL_S, a full pass at most every
FULL_GC_INTERVAL_S, both between batches. Stray cycles can then hold at most a
second's worth of garbage.
"""
from __future__ import annotations

import gc
import time

YOUNG_GC_INTERVAL_S = 1.0
FULL_GC_INTERVAL_S = 600.0


class Collector:
    """Call after_batch() between batches; it collects when one is due and says which."""

    def __init__(self, young_s: float = YOUNG_GC_INTERVAL_S, full_s: float = FULL_GC_INTERVAL_S, clock=time.monotonic):
        self.young_s, self.full_s, self.clock = young_s, full_s, clock
        now = clock()
        self._young_at = now + young_s
        self._full_at = now + full_s
        self.young = self.full = 0  # collections made

    def after_batch(self) -> str | None:
        now = self.clock()
        if now >= self._full_at:
            gc.collect()
            self.full += 1
            done = self.clock()
            self._full_at, self._young_at = done + self.full_s, done + self.young_s
            return "full"
        if now >= self._young_at:
            gc.collect(1)
            self.young += 1
            self._young_at = self.clock() + self.young_s
            return "young"
        return None
