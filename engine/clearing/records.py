"""The records of a clearing (docs/contract.md section 8): a period's close, its statement rows, its netted flows."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Closing:
    """A closed period (or, for a dry run, one as a close now would record it): what its files are computed from."""

    period: str
    closed_at: str
    last_seq: int
    prepay_fen: dict[str, int]  # as read at the first close
    warn_bp: int
    world_dir: str
    new: bool  # closed by this call (False: it was closed before and nothing changed)
    forced: str = ""  # closed with force: the refusal it overrode (close_refusal); kept with the close
    preview: bool = False  # a dry run: not closed; computed as a close at last_seq would be


@dataclass(slots=True)
class PairRow:
    """One statement row: what `insured` owes `treatment` for the period (fen, reversals subtracted)."""

    insured: str
    treatment: str
    setl_cnt: int = 0
    medfee_fen: int = 0
    fund_fen: int = 0
    acct_fen: int = 0

    @property
    def clear_fen(self) -> int:
        return self.fund_fen + self.acct_fen

    def add(self, cnt: int, medfee: int, fund: int, acct: int) -> None:
        self.setl_cnt += cnt
        self.medfee_fen += medfee
        self.fund_fen += fund
        self.acct_fen += acct


@dataclass(slots=True, frozen=True)
class NetRow:
    payer: str
    payee: str
    net_fen: int
