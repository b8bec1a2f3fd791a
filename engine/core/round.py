"""A round: the settlements and uploads of a batch computed together by the kernels (engine.core.engine).

A request that depends on something an earlier, not yet computed request of the
same round may change closes the round first (_Flush), so the outcome always
equals processing the requests one at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.contract.wire import Reply
from engine.core import kernels
from engine.core.records import Pending

ROUND_LINES_START = 4096  # a round's FeeBuffer starts with room for this many lines, and doubles


@dataclass(slots=True)
class RoundArrays:
    cat: kernels.Catalogue
    starts: np.ndarray
    lines: kernels.Lines
    row: np.ndarray
    split: kernels.Split
    emitter: object = None  # kernels.RowEmitter over the round's columns, made when first needed



class Round:
    __slots__ = ("pending", "lines", "msgids", "visits", "persons", "step_visits")

    def __init__(self):
        self.pending: list[Pending] = []
        self.lines = kernels.FeeBuffer(ROUND_LINES_START)  # the pending settlements' fee lines, in order
        self.msgids: set[str] = set()  # of the round's settlements (not pre-settlements)
        self.visits: set[tuple] = set()  # (fixmedins_code, mdtrt_id)
        self.persons: set[int] = set()  # whose state the round may change
        self.step_visits: set[str] = set()  # mdtrt_id of the step-wise visits its uploads and settlements change

    def add(self, p: Pending) -> None:
        self.pending.append(p)


class Flush(Exception):
    """The request conflicts with the open round: compute the round first."""


class Journaled(Exception):
    """The msgid was committed before with the same input: answer the stored reply."""

    def __init__(self, reply: Reply):
        self.reply = reply


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
