"""The history an Engine is built over: what it looks up of earlier requests, and where its changes go.

The engine answers a request from the world, its own state and what earlier
requests committed (docs/contract.md section 7): the first reply of a msgid
(idempotency), the settlement a reversal names, whether a visit has a
settlement in force (E_DUPLICATE_VISIT), and the rows 3201/3202 reconcile
(section 8). It reaches them only through the History it is built with,

    engine = Engine(world, clock="wall", history=history)

and hands each change, as it makes it, to the history's change sink. Without a
history the engine keeps everything in RAM (MemoryHistory: replay, tests); a
durable store (engine.store) passes its own, whose lookups read what it has
committed and whose sink builds each change's journal row. The store reads the
accumulators it writes at commit through the engine's AccumulatorSource.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from engine.contract.wire import Codec, Reply
from engine.core import reconcile
from engine.core.records import Change, Settled


class JournalLookup(Protocol):
    """msgid -> (infno, codec, raw input, first reply, fixmedins_code) of every committed request."""

    def get(self, msgid: str, default=None) -> tuple[str, Codec, bytes, Reply, str] | None: ...

    def __setitem__(self, msgid: str, entry: tuple[str, Codec, bytes, Reply, str]) -> None: ...


class SettledLookup(Protocol):
    """setl_id -> the Settled a reversal needs; the engine marks a record reversed in place."""

    def get(self, setl_id: str, default=None) -> Settled | None: ...

    def __setitem__(self, setl_id: str, rec: Settled) -> None: ...


class OpenVisitSet(Protocol):
    """The (fixmedins_code, mdtrt_id) visits with a settlement in force."""

    def __contains__(self, visit: tuple[str, str]) -> bool: ...

    def add(self, visit: tuple[str, str]) -> None: ...

    def discard(self, visit: tuple[str, str]) -> None: ...


class ReconRows(Protocol):
    """Every committed change by institution and time, for 3201/3202 (engine.core.reconcile)."""

    def add(self, change: Change) -> None: ...

    def totals(self, code: str, t_lo: str, t_hi: str) -> dict[tuple[str, str], list[int]]: ...

    def listing(self, code: str, t_lo: str, t_hi: str, insutype: str | None, clr_type: str | None,
                offset: int, limit: int) -> tuple[int, list[reconcile.Row]]: ...


# Called with each Change as the engine makes it, while its objects are still in
# the CPU's caches (a store builds the change's journal row there); None: no sink.
ChangeSink = Callable[[Change], None]


class History(Protocol):
    """What an Engine is built with (module docstring). The engine reads each member once, at construction."""

    journal: JournalLookup
    step_journal: JournalLookup  # the same, of section 11's step-wise transactions (engine.core.stepwise)
    settled: SettledLookup
    open_visits: OpenVisitSet
    recon: ReconRows
    on_change: ChangeSink | None


class AccumulatorSource(Protocol):
    """The accumulators after the last batch, which a store writes with that batch's changes (section 6)."""

    def person_accumulators(self, psns: np.ndarray) -> list[list[int]]:
        """Of persons `psns`: the columns balc, acc_year, hifp_ip, hifp_op, ded_op, burden2, second_paid."""
        ...

    def chronic_accumulators(self, slots: np.ndarray) -> tuple[list[int], list[int]]:
        """Of chronic slots `slots`: hifp_cd and the year it counts in."""
        ...


class MemoryHistory:
    """Every lookup in RAM and no change sink: the history of an engine without a store."""

    def __init__(self):
        self.journal: dict[str, tuple[str, Codec, bytes, Reply, str]] = {}
        self.step_journal: dict[str, tuple[str, Codec, bytes, Reply, str]] = {}
        self.settled: dict[str, Settled] = {}
        self.open_visits: set[tuple[str, str]] = set()
        self.recon = reconcile.ReconIndex()
        self.on_change: ChangeSink | None = None
