"""engine.core.collect: the batch loops' garbage collection cadence, on a hand-driven clock."""
from __future__ import annotations

import gc

from engine.core.collect import Collector


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_young_at_most_every_interval_and_full_at_its_own() -> None:
    clock = Clock()
    c = Collector(young_s=1.0, full_s=10.0, clock=clock)
    seen = []
    for _ in range(120):  # 12 s of batches every 0.1 s
        clock.t += 0.1
        seen.append(c.after_batch())
    assert seen.count("full") == 1 and seen.index("full") in (99, 100)  # 10 s in, float steps
    # One young pass a second; the full pass puts the next young one a second after it.
    assert seen.count("young") == 10
    young_at = [i for i, s in enumerate(seen) if s == "young"]
    assert all(b - a >= 9 for a, b in zip(young_at, young_at[1:]))
    assert young_at[young_at.index(max(y for y in young_at if y < seen.index("full"))) + 1] - seen.index("full") >= 9
    assert (c.young, c.full) == (10, 1)


def test_a_due_collection_frees_a_cycle() -> None:
    class Node:
        pass

    clock = Clock()
    c = Collector(young_s=1.0, full_s=1000.0, clock=clock)
    was = gc.isenabled()
    gc.disable()
    try:
        a = Node()
        a.self = a
        probe = __import__("weakref").ref(a)
        del a
        assert c.after_batch() is None and probe() is not None  # not due: the cycle stays
        clock.t += 1.0
        assert c.after_batch() == "young"
        assert probe() is None
    finally:
        if was:
            gc.enable()
