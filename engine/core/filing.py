"""When each filing (备案) is in force: its last day, for all filings at once (docs/contract.md section 4).

The engine decides a visit's filing class from these days one person at a
time; they are computed here once per world, vectorised, from the rules of
section 4 (six_months for temporary filings and for filings on a personal
commitment).
"""
from __future__ import annotations

import numpy as np

from engine.contract import money
from engine.contract.protocol import (
    E_ALREADY_REVERSED, E_DATE, E_FORBIDDEN, E_MISMATCH, E_NOT_FOUND, E_SCHEMA, E_UNKNOWN_INSTITUTION, E_UNKNOWN_PERSON,
    FILING_CLASS_OF_TYPE, INFNO_FILING_CANCEL, INFNO_LONG_FILING, PROVINCES, REQUEST_DAY_MAX, REQUEST_DAY_MIN,
    TEMP_FILING_TYPES, Refused, required_text,
)
from engine.core.round import Flush
from engine.world.loader import DAY_OPEN, World


def filing_last_days(w: World) -> np.ndarray:
    """The last day each filing is in force (section 4), for all filings at once.

    Temporary filings end at their enddate or six_months(begndate), whichever is
    first; status 2 (personal commitment) filings end at six_months(begndate) at
    the latest; long-term filings otherwise run to their enddate or stay open.
    """
    six = six_months_days(w.fil_begn)
    end = w.fil_end.astype(np.int64)
    temp = np.isin(np.array(w.fil_type, dtype=object), list(TEMP_FILING_TYPES))
    committed = np.array(w.fil_status, dtype=object) == "2"
    cut = temp | committed
    return np.where(cut, np.minimum(end, six), end)


def six_months_days(begn: np.ndarray) -> np.ndarray:
    """engine.contract.money.six_months over an array of day numbers."""
    d = begn.astype("datetime64[D]")
    month = d.astype("datetime64[M]")
    day_of_month = (d - month).astype(np.int64)  # 0-based
    target = month + np.timedelta64(6, "M")
    month_len = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(np.int64)
    out = target.astype("datetime64[D]") + np.minimum(day_of_month, month_len - 1) - np.timedelta64(1, "D")
    return out.astype(np.int64)


def filing_last_day(filing_type: str, begn: int, end: int, status: str) -> int:
    """The last day one filing is in force (section 4): filing_last_days for a single filing."""
    if filing_type in TEMP_FILING_TYPES or status == "2":
        return min(end, money.six_months(begn))
    return end


# ---------------------------------------------------------------- filings made online

FILING_REFERRAL = "TEMP_REFERRAL"  # what a 2501 files (section 4)
LONG_FILING_TYPES = ("LONG_RESETTLED", "LONG_RESIDENT", "LONG_STATIONED")
SN_PREFIX = "F"  # trt_dcla_detl_sn = "F" + msgid of the filing request, as setl_id is "S" + msgid


class OnlineFiling:
    """A filing made online: a 2501 (a referral) or an operator's long-term filing."""

    __slots__ = ("sn", "psn_no", "filing_type", "dest", "begn", "end", "status", "fixmedins_code", "cls", "last",
                 "cancelled")

    def __init__(self, sn: str, psn_no: str, filing_type: str, dest: str, begn: int, end: int, status: str,
                 fixmedins_code: str):
        self.sn, self.psn_no, self.filing_type, self.dest = sn, psn_no, filing_type, dest
        self.begn, self.end, self.status, self.fixmedins_code = begn, end, status, fixmedins_code
        self.cls = FILING_CLASS_OF_TYPE[filing_type]
        self.last = filing_last_day(filing_type, begn, end, status)
        self.cancelled = False


class OnlineFilings:
    """The filings made online, in the order they were made, changed only through their effects:

        ["file", sn, psn_no, filing_type, dest_admdvs, begn_day, end_day (DAY_OPEN: open), status, fixmedins_code]
        ["unfile", sn]

    A store keeps each committed transaction's effects in its `step` rows and applies them again at open
    (engine.store.steps.restore_effects), so the filings after a restart are those before it.
    """

    def __init__(self):
        self.by_sn: dict[str, OnlineFiling] = {}
        self.by_psn: dict[int, list[OnlineFiling]] = {}  # by the engine's person row

    def __len__(self) -> int:
        return len(self.by_sn)

    def apply(self, effect: list, psn: int | None) -> None:
        """Apply one effect; `psn` is the engine's row of the person a "file" effect names."""
        if effect[0] == "file":
            _, sn, psn_no, filing_type, dest, begn, end, status, code = effect
            assert sn not in self.by_sn and psn is not None
            f = self.by_sn[sn] = OnlineFiling(sn, psn_no, filing_type, dest, begn, end, status, code)
            self.by_psn.setdefault(psn, []).append(f)
        elif effect[0] == "unfile":
            f = self.by_sn[effect[1]]
            assert not f.cancelled
            f.cancelled = True
        else:
            raise ValueError(f"unknown filing effect {effect[0]!r}")

    def in_force(self, psn: int) -> list[OnlineFiling]:
        """The person's filings not cancelled, in the order they were made."""
        return [f for f in self.by_psn.get(psn, ()) if not f.cancelled]


FILING_EFFECTS = frozenset({"file", "unfile"})


def _day(d: dict, k: str, required: bool) -> int | None:
    """A date YYYY-MM-DD within the years a request may name (section 7, v2), as a day number."""
    v = d.get(k)
    if v is None or (v == "" and not required):
        if required:
            raise Refused(E_SCHEMA, f"{k} must be a date YYYY-MM-DD")
        return None
    try:
        day = money.parse_day(v)
    except (money.NumberError, ValueError, TypeError):
        raise Refused(E_SCHEMA, f"{k} must be a date YYYY-MM-DD") from None
    if not REQUEST_DAY_MIN <= day <= REQUEST_DAY_MAX:
        raise Refused(E_SCHEMA, f"{k}: {v} is outside 2000-2099")
    return day


def filing_dates(d: dict) -> tuple[int, int]:
    """begndate and enddate (absent or "": open, DAY_OPEN) of a filing's input, E_SCHEMA when malformed."""
    begn = _day(d, "begndate", True)
    end = _day(d, "enddate", False)
    return begn, DAY_OPEN if end is None else end


def destination(d: dict, k: str) -> str:
    """A region code of a known province (section 2), else E_SCHEMA."""
    v = d.get(k)
    if not (isinstance(v, str) and len(v) == 6 and v.isdigit() and v[:2] in PROVINCES):
        raise Refused(E_SCHEMA, f"{k} must be a region code (6 digits, a known province)")
    return v


class FilingMixin:
    """2501 转院备案 and 2502 its cancellation (docs/contract.md, "Filings online"), and the operator's long-term
    filing, for engine.core.engine.Engine: checked like the step-wise transactions, journaled by msgid in the
    step journal, committed through their effects (OnlineFilings)."""

    def _filing(self, env, codec, now: str, rnd) -> object:
        """A 2501, a 2502 or an operator's long-term filing (INFNO_LONG_FILING): its reply, committed."""
        infno = env.infno
        if isinstance(env.msgid, str) and env.msgid in rnd.msgids:
            raise Flush()
        inp_c = self._step_journal_check(env, infno, codec)
        operator = infno == INFNO_LONG_FILING  # no institution: the operator files for the insured region
        if not operator and (not isinstance(env.fixmedins_code, str) or not env.fixmedins_code):
            raise Refused(E_SCHEMA, "fixmedins_code must be a non-empty string")
        inp = self._step_input(env, codec)
        if infno == INFNO_FILING_CANCEL:
            output, effects = self._unfile(env, inp)
        else:
            output, effects = self._file(env, inp, operator)
        return self._step_commit(env, infno, now, inp_c, output, effects)

    def _file(self, env, inp: dict, operator: bool) -> tuple[dict, list]:
        """2501: a referral to `refmedin.mdtrtarea_admdvs`, status 1. The operator's long-term filing: `data`
        {psn_no, insutype, filing_type (LONG_*), dest_admdvs, begndate, enddate, status (2: 个人承诺, the
        six-month rule of section 4; 1: materials complete)}, approved at once."""
        if not operator:
            d = inp.get("refmedin")
            if not isinstance(d, dict):
                raise Refused(E_SCHEMA, "input.refmedin")
            filing_type, status, dest_key = FILING_REFERRAL, "1", "mdtrtarea_admdvs"
        else:
            d = inp.get("data")
            if not isinstance(d, dict):
                raise Refused(E_SCHEMA, "input.data")
            filing_type = required_text(d, "filing_type")
            if filing_type not in LONG_FILING_TYPES:
                raise Refused(E_SCHEMA, f"filing_type must be one of {', '.join(LONG_FILING_TYPES)}")
            status, dest_key = d.get("status", "2"), "dest_admdvs"
            if status not in ("1", "2"):
                raise Refused(E_SCHEMA, "status must be 1 or 2")
        psn_no = required_text(d, "psn_no")
        insutype = required_text(d, "insutype")
        dest = destination(d, dest_key)
        begn, end = filing_dates(d)
        if operator:
            psn = self.psn_index.get(psn_no)
            if psn is None:
                raise Refused(E_UNKNOWN_PERSON)
            if insutype != self.psn_insutype[psn]:
                raise Refused(E_MISMATCH, "insutype is not the person's")
        else:
            for k in ("mdtrtarea_admvs", "insuplc_admdvs"):
                if not isinstance(getattr(env, k), str) or not getattr(env, k):
                    raise Refused(E_SCHEMA, f"{k} must be a non-empty string")
            self._parties(env, psn_no, insutype, None)  # a window does not hold a filing back
        if end < begn:
            raise Refused(E_DATE, "enddate is before begndate")
        sn = SN_PREFIX + env.msgid
        effect = ["file", sn, psn_no, filing_type, dest, begn, end, status, env.fixmedins_code if not operator else ""]
        return {"result": {"trt_dcla_detl_sn": sn}}, [effect]

    def _unfile(self, env, inp: dict) -> tuple[dict, list]:
        d = inp.get("data")
        if not isinstance(d, dict):
            raise Refused(E_SCHEMA, "input.data")
        sn = required_text(d, "trt_dcla_detl_sn")
        psn_no = required_text(d, "psn_no")
        memo = d.get("memo")
        if memo is not None and not isinstance(memo, str):
            raise Refused(E_SCHEMA, "memo must be a string")
        inst = self.inst.get(env.fixmedins_code)
        if inst is None:
            raise Refused(E_UNKNOWN_INSTITUTION)
        if inst[0] != env.mdtrtarea_admvs:
            raise Refused(E_FORBIDDEN, "the institution is not in mdtrtarea_admvs")
        f = self.filings_online.by_sn.get(sn)
        if f is None:
            raise Refused(E_NOT_FOUND, f"no filing {sn}")
        if f.fixmedins_code != env.fixmedins_code:
            raise Refused(E_FORBIDDEN, "the filing was made by another institution")
        if f.psn_no != psn_no:
            raise Refused(E_MISMATCH, "psn_no is not the filing's")
        if f.cancelled:
            raise Refused(E_ALREADY_REVERSED, f"filing {sn} is already cancelled")
        return {"result": {"trt_dcla_detl_sn": sn}}, [["unfile", sn]]
