"""Filings online, plainly (docs/contract.md, "Filings online"): 2501 转院备案 and 2502 its cancellation.

A 2501 from the referring hospital files a TEMP_REFERRAL filing (section 4) for
the person to `refmedin.mdtrtarea_admdvs`, status 1, in force for the next
request; its `trt_dcla_detl_sn` is "F" + its msgid. A 2502 from the same
institution cancels it: the filing no longer counts for later settlements, nor
shows in 1101. Both commit and are idempotent by msgid (engine.reference.oracle).
"""
from __future__ import annotations

from engine.contract import money
from engine.contract.protocol import (
    E_ALREADY_REVERSED, E_DATE, E_FORBIDDEN, E_MISMATCH, E_NOT_FOUND, E_SCHEMA, E_UNKNOWN_INSTITUTION, PROVINCES,
    Refused,
)
from engine.reference.settle import field_day, field_str
from engine.world.loader import DAY_OPEN

INFNO_REFERRAL, INFNO_FILING_CANCEL = "2501", "2502"
FILING_INFNOS = frozenset({INFNO_REFERRAL, INFNO_FILING_CANCEL})


def _part(inp: dict, key: str) -> dict:
    d = inp.get(key)
    if not isinstance(d, dict):
        raise Refused(E_SCHEMA, f"input.{key}")
    return d


class OnlineFiling:
    def __init__(self, sn: str, psn_no: str, fixmedins_code: str, filing: dict):
        self.sn, self.psn_no, self.fixmedins_code, self.filing = sn, psn_no, fixmedins_code, filing
        self.cancelled = False


class FilingBook:
    """The filings made online, by trt_dcla_detl_sn; each is also one of its person's filings while in force."""

    def __init__(self, world):
        super().__init__(world)
        self.online: dict[str, OnlineFiling] = {}

    def filing(self, env: dict, now: str) -> dict:
        """A 2501 or a 2502; the output, or Refused."""
        field_str(env, "fixmedins_code")
        inp = env.get("input")
        if not isinstance(inp, dict):
            raise Refused(E_SCHEMA, "input must be an object")
        if env["infno"] == INFNO_FILING_CANCEL:
            return self.unfile(env, inp)
        return self.file(env, inp)

    def file(self, env: dict, inp: dict) -> dict:
        d = _part(inp, "refmedin")
        psn_no = field_str(d, "psn_no")
        insutype = field_str(d, "insutype")
        dest = d.get("mdtrtarea_admdvs")
        if not (isinstance(dest, str) and len(dest) == 6 and dest.isdigit() and dest[:2] in PROVINCES):
            raise Refused(E_SCHEMA, "mdtrtarea_admdvs must be a region code")
        begn = field_day(d, "begndate", parse=money.parse_day)
        end = DAY_OPEN if d.get("enddate") in (None, "") else field_day(d, "enddate", parse=money.parse_day)
        for k in ("mdtrtarea_admvs", "insuplc_admdvs"):
            field_str(env, k)
        _, person, _ = self.parties(env, psn_no, insutype, None)  # a window does not hold a filing back
        if end < begn:
            raise Refused(E_DATE, "enddate is before begndate")
        sn = "F" + env["msgid"]
        f = {"filing_type": "TEMP_REFERRAL", "dest": dest, "begn": begn, "end": end, "status": "1"}
        person.filings.append(f)
        self.online[sn] = OnlineFiling(sn, psn_no, env["fixmedins_code"], f)
        return {"result": {"trt_dcla_detl_sn": sn}}

    def unfile(self, env: dict, inp: dict) -> dict:
        d = _part(inp, "data")
        sn = field_str(d, "trt_dcla_detl_sn")
        psn_no = field_str(d, "psn_no")
        if d.get("memo") is not None and not isinstance(d.get("memo"), str):
            raise Refused(E_SCHEMA, "memo must be a string")
        inst = self.institutions.get(env["fixmedins_code"])
        if inst is None:
            raise Refused(E_UNKNOWN_INSTITUTION)
        if inst[1] != env.get("mdtrtarea_admvs"):
            raise Refused(E_FORBIDDEN, "the institution is not in mdtrtarea_admvs")
        of = self.online.get(sn)
        if of is None:
            raise Refused(E_NOT_FOUND, f"filing {sn}")
        if of.fixmedins_code != env["fixmedins_code"]:
            raise Refused(E_FORBIDDEN, f"filing {sn} was made by another institution")
        if of.psn_no != psn_no:
            raise Refused(E_MISMATCH, f"psn_no is not that of filing {sn}")
        if of.cancelled:
            raise Refused(E_ALREADY_REVERSED, f"filing {sn} is already cancelled")
        of.cancelled = True
        filings = self.persons[psn_no].filings
        filings.remove(next(f for f in filings if f is of.filing))
        return {"result": {"trt_dcla_detl_sn": sn}}
