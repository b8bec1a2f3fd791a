"""Visits and their fee lines: the state of section 11's step-wise flow (docs/contract.md).

Every change to this state is an *effect*, a short list of plain values, made by
the engine's step-wise transactions (engine.core.stepwise) and applied by
`VisitBook.apply`, the one function that changes a visit. A store keeps each
committed transaction's effects and, at open, applies them again in order
(engine.store), so the state after a restart is the state before it by
construction.

Effects:

    ["open", mdtrt_id, fixmedins_code, mdtrtarea_admvs, psn_no, insutype, outpatient, med_type, dise_codg,
     begntime, otp_no]
    ["cancel", mdtrt_id]
    ["info", mdtrt_id, med_type, dise_codg, begntime]          (None: unchanged)
    ["upload", mdtrt_id, batch, msgid, codes, sns, amt_fen, cnt, pric_micro, day]
        (amt_fen, cnt and pric_micro little-endian int64, day int32, each as the bytes of its column;
        lists of int in the stores written before, read alike)
    ["revoke", mdtrt_id, positions]
    ["discharge", mdtrt_id, endtime, msgid] / ["undischarge", mdtrt_id]
    ["settle", mdtrt_id, batch, setl_id] / ["unsettle", setl_id]
    ["void", msgid, oinfno, fixmedins_code]

A visit's lines are kept as columns (the parsed values a settlement's kernels
read: engine.core.kernels.FeeBuffer.extend), about a hundred bytes a line.
"""
from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from itertools import repeat

INPATIENT_BATCH = ""  # a stay is one batch


class VisitLines:
    """Every line ever uploaded to a visit, in upload order, as columns."""

    __slots__ = ("sn_pos", "codes", "sns", "amt", "cnt", "pric", "day", "batch", "upload", "revoked", "in_force",
                 "batch_lines")

    def __init__(self):
        self.sn_pos: dict[str, int] = {}  # feedetl_sn -> position (E_DUPLICATE_LINE: every line ever uploaded)
        self.codes: list[str] = []
        self.sns: list[str] = []
        self.amt = array.array("q")
        self.cnt = array.array("q")
        self.pric = array.array("q")
        self.day = array.array("i")
        self.batch: list[str] = []  # chrg_bchno (INPATIENT_BATCH for a stay)
        self.upload: list[str] = []  # the msgid of the upload that brought the line
        self.revoked = bytearray()
        self.in_force = 0
        self.batch_lines: dict[str, int] = {}  # chrg_bchno -> lines ever uploaded in it

    def __len__(self) -> int:
        return len(self.sns)

    def positions(self, batch: str | None = None, upload: str | None = None) -> list[int]:
        """Positions of the lines in force, in upload order: of one batch, one upload, or all."""
        n = len(self.sns)
        if self.in_force == n and upload is None and (batch is None or self.batch_lines.get(batch) == n):
            return list(range(n))  # nothing revoked, one batch: every line (the usual settlement)
        rev, b, u = self.revoked, self.batch, self.upload
        return [i for i in range(len(rev)) if not rev[i] and (batch is None or b[i] == batch)
                and (upload is None or u[i] == upload)]

    def columns(self, pos: list[int]) -> tuple:
        """(codes, sns, amt, cnt, pric, day) of the lines at `pos`, for FeeBuffer.extend."""
        if len(pos) == len(self.sns):  # every line ever uploaded: the columns as they are
            return list(self.codes), list(self.sns), self.amt, self.cnt, self.pric, self.day
        codes, sns = self.codes, self.sns
        return ([codes[i] for i in pos], [sns[i] for i in pos],
                array.array("q", [self.amt[i] for i in pos]), array.array("q", [self.cnt[i] for i in pos]),
                array.array("q", [self.pric[i] for i in pos]), array.array("i", [self.day[i] for i in pos]))


class Visit:
    """An outpatient visit (2201) or an inpatient stay (2401)."""

    __slots__ = ("mdtrt_id", "fixmedins_code", "mdtrtarea_admvs", "psn_no", "insutype", "outpatient", "med_type",
                 "dise_codg", "begntime", "endtime", "discharged_by", "otp_no", "cancelled", "settled", "lines")

    def __init__(self, mdtrt_id: str, fixmedins_code: str, mdtrtarea_admvs: str, psn_no: str, insutype: str,
                 outpatient: bool, med_type: str, dise_codg: str, begntime: str, otp_no: str):
        self.mdtrt_id = mdtrt_id
        self.fixmedins_code = fixmedins_code
        self.mdtrtarea_admvs = mdtrtarea_admvs
        self.psn_no = psn_no
        self.insutype = insutype
        self.outpatient = outpatient
        self.med_type = med_type
        self.dise_codg = dise_codg
        self.begntime = begntime
        self.endtime: str | None = None  # inpatient: set by 2402
        self.discharged_by = ""  # the msgid of the 2402 in force
        self.otp_no = otp_no  # ipt_otp_no (outpatient) or ipt_no (inpatient)
        self.cancelled = False
        self.settled: dict[str, str] = {}  # batch -> setl_id of its settlement in force
        self.lines = VisitLines()

    @property
    def state(self) -> str:
        """The state named in E_STATE's err_msg."""
        if self.cancelled:
            return "cancelled"
        if self.outpatient:
            return "settled" if self.settled else "registered"
        if self.settled:
            return "settled"
        return "discharged" if self.endtime is not None else "admitted"


@dataclass(slots=True)
class Voided:
    """A msgid that a 2601 voided before it was ever committed (section 11)."""

    oinfno: str
    fixmedins_code: str


def _extend(column: array.array, values) -> None:
    """A column of an upload effect appended: the little-endian bytes of its values, or a list of int."""
    if type(values) is bytes:
        if _BIG_ENDIAN:
            more = array.array(column.typecode, values)
            more.byteswap()
            column.extend(more)
        else:
            column.frombytes(values)
    else:
        column.extend(values)


_BIG_ENDIAN = sys.byteorder == "big"


class VisitBook:
    """Every visit, and the indexes section 11's checks need; changed only by `apply`."""

    def __init__(self):
        self.visits: dict[str, Visit] = {}
        self.otp_open: dict[tuple[str, str], str] = {}  # (fixmedins_code, ipt_otp_no) -> mdtrt_id not cancelled
        self.stays_open: dict[str, set[str]] = {}  # psn_no -> its stays neither settled nor cancelled
        self.setl_batch: dict[str, tuple[str, str]] = {}  # setl_id in force -> (mdtrt_id, batch)
        self.voided: dict[str, Voided] = {}
        self.by_msgid: dict[str, str] = {}  # msgid of an upload or a discharge -> its visit (2601)

    # ------------------------------------------------------------ the one place visits change

    def apply(self, effect: list) -> None:
        kind = effect[0]
        if kind == "upload":
            _, mdtrt_id, batch, msgid, codes, sns, amt, cnt, pric, day = effect
            ls = self.visits[mdtrt_id].lines
            self.by_msgid[msgid] = mdtrt_id
            base, n = len(ls.sns), len(sns)
            sn_pos = ls.sn_pos
            for i, sn in enumerate(sns, base):
                sn_pos[sn] = i
            ls.codes.extend(codes)
            ls.sns.extend(sns)
            if _BIG_ENDIAN or not (type(amt) is bytes and type(cnt) is bytes and type(pric) is bytes
                                   and type(day) is bytes):
                for column, values in ((ls.amt, amt), (ls.cnt, cnt), (ls.pric, pric), (ls.day, day)):
                    _extend(column, values)
            else:  # the effect the engine makes: each column's little-endian bytes, appended as they are
                ls.amt.frombytes(amt)
                ls.cnt.frombytes(cnt)
                ls.pric.frombytes(pric)
                ls.day.frombytes(day)
            ls.batch.extend(repeat(batch, n))
            ls.batch_lines[batch] = ls.batch_lines.get(batch, 0) + n
            ls.upload.extend(repeat(msgid, n))
            ls.revoked.extend(bytes(n))
            ls.in_force += n
        elif kind == "revoke":
            ls = self.visits[effect[1]].lines
            for i in effect[2]:
                assert not ls.revoked[i]
                ls.revoked[i] = 1
            ls.in_force -= len(effect[2])
        elif kind == "settle":
            _, mdtrt_id, batch, setl_id = effect
            v = self.visits[mdtrt_id]
            assert batch not in v.settled
            v.settled[batch] = setl_id
            self.setl_batch[setl_id] = (mdtrt_id, batch)
            if not v.outpatient:
                self._stay_closed(v)
        elif kind == "unsettle":
            mdtrt_id, batch = self.setl_batch.pop(effect[1])
            v = self.visits[mdtrt_id]
            del v.settled[batch]
            if not v.outpatient:
                self.stays_open.setdefault(v.psn_no, set()).add(mdtrt_id)
        elif kind == "open":
            _, mdtrt_id, code, admvs, psn_no, insutype, outpatient, med_type, dise, begntime, otp_no = effect
            assert mdtrt_id not in self.visits
            v = self.visits[mdtrt_id] = Visit(mdtrt_id, code, admvs, psn_no, insutype, bool(outpatient), med_type,
                                              dise, begntime, otp_no)
            if outpatient:
                if otp_no:
                    self.otp_open[(code, otp_no)] = mdtrt_id
            else:
                self.stays_open.setdefault(psn_no, set()).add(mdtrt_id)
        elif kind == "cancel":
            v = self.visits[effect[1]]
            v.cancelled = True
            if v.outpatient:
                if v.otp_no and self.otp_open.get((v.fixmedins_code, v.otp_no)) == v.mdtrt_id:
                    del self.otp_open[(v.fixmedins_code, v.otp_no)]
            else:
                self._stay_closed(v)
            ls = v.lines  # its lines go with it
            pos = ls.positions()
            for i in pos:
                ls.revoked[i] = 1
            ls.in_force -= len(pos)
        elif kind == "info":
            _, mdtrt_id, med_type, dise, begntime = effect
            v = self.visits[mdtrt_id]
            if med_type is not None:
                v.med_type = med_type
            if dise is not None:
                v.dise_codg = dise
            if begntime is not None:
                v.begntime = begntime
        elif kind == "discharge":
            v = self.visits[effect[1]]
            v.endtime, v.discharged_by = effect[2], effect[3]
            self.by_msgid[effect[3]] = effect[1]
        elif kind == "undischarge":
            v = self.visits[effect[1]]
            v.endtime, v.discharged_by = None, ""
        elif kind == "void":
            self.voided[effect[1]] = Voided(effect[2], effect[3])
        else:
            raise ValueError(f"unknown visit effect {kind!r}")

    def _stay_closed(self, v: Visit) -> None:
        open_ = self.stays_open.get(v.psn_no)
        if open_ is not None:
            open_.discard(v.mdtrt_id)
            if not open_:
                del self.stays_open[v.psn_no]


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
