"""Section 11 of docs/contract.md, plainly: visits, fee lines uploaded over time, step-wise settlement, 2601.

A hospital system registers a visit (2201 outpatient, 2401 inpatient), uploads
fee lines as they occur (2204, 2301), may revoke them (2205, 2302), discharges
a stay (2402), and settles a charge batch (2207) or the whole stay (2304)
without `feedetail`: the settlement is the section 7 settlement of the lines in
force, computed by the same steps (engine.reference.settle). 2601 undoes a
message whose reply the hospital never got, or voids one that never arrived.

StepwiseBook keeps every visit with every line ever uploaded to it, in upload
order; a line is in force until it is revoked (its visit's cancellation
revokes them all). An outpatient visit is REGISTERED or CANCELLED, and each of
its batches is settled or not; a stay is ADMITTED, DISCHARGED, SETTLED or
CANCELLED. Where the contract is silent, the choices are those listed in
docs/contract.md, "Choices where the contract is silent" (section 11).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.contract import money
from engine.contract.protocol import (
    COMMIT_INFNOS, E_ALREADY_REVERSED, E_AMOUNT_MISMATCH, E_DATE, E_DUPLICATE_LINE, E_DUPLICATE_VISIT,
    E_FORBIDDEN, E_LIMIT, E_MISMATCH, E_NOT_FOUND, E_SCHEMA, E_STATE, E_UNSUPPORTED, LINES_MAX, MED_TYPE_CHRONIC,
    MED_TYPES_INPATIENT, MED_TYPES_OUTPATIENT, OUTPATIENT_INFNOS, SETTLE_INFNOS, Refused,
)
from engine.reference.settle import (
    SPLIT_PARTS, SettlementBook, SettlementRecord, SettleRequest, acct_flag_of, fee_line, field_day, field_money,
    field_str, fmt_rows,
)
from engine.world.loader import World

# The transactions of section 11 (2206/2207 and 2303/2304 without feedetail are its settlements).
INFNO_REGISTER, INFNO_UNREGISTER, INFNO_VISIT_FACTS, INFNO_OP_UPLOAD, INFNO_OP_REVOKE = (
    "2201", "2202", "2203", "2204", "2205")
INFNO_IP_UPLOAD, INFNO_IP_REVOKE = "2301", "2302"
INFNO_ADMIT, INFNO_DISCHARGE, INFNO_STAY_CHANGE, INFNO_UNADMIT, INFNO_UNDISCHARGE = (
    "2401", "2402", "2403", "2404", "2405")
INFNO_UNDO = "2601"
VISIT_INFNOS = frozenset({
    INFNO_REGISTER, INFNO_UNREGISTER, INFNO_VISIT_FACTS, INFNO_OP_UPLOAD, INFNO_OP_REVOKE, INFNO_IP_UPLOAD,
    INFNO_IP_REVOKE, INFNO_ADMIT, INFNO_DISCHARGE, INFNO_STAY_CHANGE, INFNO_UNADMIT, INFNO_UNDISCHARGE,
})
STEPWISE_INFNOS = VISIT_INFNOS | {INFNO_UNDO}
# Every section 11 transaction commits and is idempotent by msgid, except the pre-settlements.
COMMITTING_INFNOS = STEPWISE_INFNOS | COMMIT_INFNOS
UNDOABLE_INFNOS = frozenset({"2201", "2204", "2207", "2301", "2304", "2401", "2402"})

ALL_LINES = "0000"  # a chrg_bchno (2205) or feedetl_sn (2302) naming every line not settled
STAY_BATCH = ""  # the one batch of a stay
VISIT_LINES_MAX = LINES_MAX  # lines in force on one visit
OUTPATIENT_DEFAULT_MED_TYPE = "11"  # an outpatient visit's med_type before any 2203
SENT_SPLITS = (("fulamt_ownpay_amt", "fulamt_ownpay_amt"), ("overlmt_selfpay", "overlmt_amt"),
               ("preselfpay_amt", "preselfpay_amt"), ("inscp_scp_amt", "inscp_scp_amt"))
assert [hub for _, hub in SENT_SPLITS] == list(SPLIT_PARTS)

# States, as E_STATE's err_msg names them.
REGISTERED, ADMITTED, DISCHARGED, SETTLED, CANCELLED = "REGISTERED", "ADMITTED", "DISCHARGED", "SETTLED", "CANCELLED"
UNDONE, VOIDED = "UNDONE", "VOIDED"


def is_stepwise(env: dict) -> bool:
    """A section 11 transaction: its own infnos, and a (pre-)settlement whose input has no feedetail
    (absent, or null as many hospital systems write an empty field)."""
    infno = env["infno"]
    if infno in STEPWISE_INFNOS:
        return True
    inp = env.get("input")
    return infno in SETTLE_INFNOS and isinstance(inp, dict) and inp.get("feedetail") is None


@dataclass
class Line:
    """A fee line as uploaded: its fee_line tuple (feedetl_sn as sent first), batch and upload."""

    fee: tuple
    key: str  # its feedetl_sn: the line's identity within its visit
    batch: str
    msgid: str  # the upload that brought it
    revoked: bool = False


@dataclass
class Visit:
    mdtrt_id: str
    inpatient: bool
    fixmedins_code: str
    mdtrtarea_admvs: str
    psn_no: str
    insutype: str
    begntime: str
    med_type: str
    dise_codg: str | None
    ipt_otp_no: str = ""  # an outpatient visit's ("": none sent, no E_DUPLICATE_VISIT by it)
    endtime: str | None = None
    discharged_by: str | None = None  # the msgid of the 2402 in force
    cancelled: bool = False
    lines: list[Line] = field(default_factory=list)  # every line ever uploaded, in upload order
    settled: dict[str, str] = field(default_factory=dict)  # batch -> setl_id of its settlement in force

    def state(self) -> str:
        if self.cancelled:
            return CANCELLED
        if not self.inpatient:
            return REGISTERED
        if self.settled:
            return SETTLED
        return DISCHARGED if self.endtime is not None else ADMITTED

    def in_force(self, batch: str | None = None) -> list[Line]:
        return [ln for ln in self.lines if not ln.revoked and batch in (None, ln.batch)]

    def refuse_settled(self) -> None:
        """E_STATE when any batch has a settlement in force."""
        if self.settled:
            raise Refused(E_STATE, f"batch {sorted(self.settled)[0]!r} of visit {self.mdtrt_id} is {SETTLED}")


def _part(env: dict, key: str, kind: type = dict) -> object:
    """input[key], which must be a `kind` (E_SCHEMA); the envelope's fixmedins_code is required too."""
    field_str(env, "fixmedins_code")
    inp = env.get("input")
    part = inp.get(key) if isinstance(inp, dict) else None
    if not isinstance(part, kind):
        raise Refused(E_SCHEMA, f"input.{key} must be {'an object' if kind is dict else 'a list'}")
    return part


def _time(d: dict, k: str, required: bool = True) -> str | None:
    """A time of the request, kept as its text (YYYY-MM-DD HH:MM:SS sorts as time); E_SCHEMA as field_day."""
    if d.get(k) is None and not required:
        return None
    field_day(d, k)
    return d[k]


def _med_type(d: dict, allowed: frozenset, required: bool) -> str | None:
    med_type = field_str(d, "med_type", required)
    if med_type is not None and med_type not in allowed:
        raise Refused(E_SCHEMA, f"med_type {med_type} is not one of {sorted(allowed)}")
    return med_type


def _dise(d: dict) -> str | None:
    """dise_codg when sent: a string (E_SCHEMA otherwise), "" naming none."""
    dise = d.get("dise_codg")
    if dise is not None and not isinstance(dise, str):
        raise Refused(E_SCHEMA, "dise_codg must be a string")
    return dise or None


class StepwiseBook(SettlementBook):
    """The section 7 book with the visits of section 11, their lines, and the voided msgids."""

    def __init__(self, world: World):
        super().__init__(world)
        self.visits: dict[str, Visit] = {}
        self.visit_of_msg: dict[str, str] = {}  # msgid of a 2201/2401/2204/2301/2402 -> mdtrt_id
        self.voided: dict[str, tuple[str, str]] = {}  # msgid -> (oinfno, fixmedins_code) of the 2601 voiding it

    def stepwise(self, env: dict, now: str) -> dict:
        """One section 11 transaction; the output, or Refused."""
        infno = env["infno"]
        if infno in SETTLE_INFNOS:
            return self.settle_stepwise(env, now)
        return {
            INFNO_REGISTER: self.register, INFNO_UNREGISTER: self.unregister, INFNO_VISIT_FACTS: self.visit_facts,
            INFNO_OP_UPLOAD: self.upload, INFNO_IP_UPLOAD: self.upload, INFNO_OP_REVOKE: self.revoke_batch,
            INFNO_IP_REVOKE: self.revoke_lines, INFNO_ADMIT: self.admit, INFNO_DISCHARGE: self.discharge,
            INFNO_STAY_CHANGE: self.change_stay, INFNO_UNADMIT: self.unadmit, INFNO_UNDISCHARGE: self.undischarge,
            INFNO_UNDO: self.undo,
        }[infno](env, now)

    # -- the visit a request names

    def visit_for(self, env: dict, mdtrt_id: str, psn_nos: list[str], inpatient: bool | None) -> Visit:
        """E_NOT_FOUND (no such visit), E_FORBIDDEN (another institution's), E_MISMATCH (another
        person); E_STATE for a visit of the other kind (docs/contract.md's choice)."""
        v = self.visits.get(mdtrt_id)
        if v is None:
            raise Refused(E_NOT_FOUND, f"visit {mdtrt_id}")
        if v.fixmedins_code != env["fixmedins_code"]:
            raise Refused(E_FORBIDDEN, f"visit {mdtrt_id} belongs to another institution")
        if any(p != v.psn_no for p in psn_nos):
            raise Refused(E_MISMATCH, f"psn_no is not that of visit {mdtrt_id}")
        if inpatient is not None:
            self.require_kind(v, inpatient)
        return v

    @staticmethod
    def require_kind(v: Visit, inpatient: bool) -> None:
        if v.inpatient != inpatient:
            raise Refused(E_STATE, f"visit {v.mdtrt_id} is {'an inpatient stay' if v.inpatient else 'outpatient'}")

    @staticmethod
    def require(v: Visit, *allowed: str) -> None:
        if v.state() not in allowed:
            raise Refused(E_STATE, f"visit {v.mdtrt_id} is {v.state()}")

    def unsettle(self, rec: SettlementRecord) -> None:
        if rec.batch is None:
            super().unsettle(rec)
        else:
            del self.visits[rec.mdtrt_id].settled[rec.batch]

    @staticmethod
    def cancel(v: Visit) -> None:
        v.cancelled = True
        for ln in v.lines:
            ln.revoked = True

    # -- opening: 2201, 2401

    def _open(self, env: dict, data: dict, inpatient: bool, med_type: str, dise: str | None, now: str) -> Visit:
        """Section 7's checks up to E_NO_POLICY, then a new visit "M" + msgid (not yet kept)."""
        for k in ("msgid", "mdtrtarea_admvs", "insuplc_admdvs"):
            field_str(env, k)
        psn_no, insutype, begntime = field_str(data, "psn_no"), field_str(data, "insutype"), _time(data, "begntime")
        self.parties(env, psn_no, insutype, now)
        return Visit("M" + env["msgid"], inpatient, env["fixmedins_code"], env["mdtrtarea_admvs"], psn_no, insutype,
                     begntime, med_type, dise)

    def _keep(self, env: dict, v: Visit) -> None:
        self.visits[v.mdtrt_id] = v
        self.visit_of_msg[env["msgid"]] = v.mdtrt_id

    def register(self, env: dict, now: str) -> dict:
        """2201: an outpatient visit; E_DUPLICATE_VISIT for an ipt_otp_no (when sent) of the institution's
        visits not cancelled."""
        data = _part(env, "data")
        ipt_otp_no = data.get("ipt_otp_no") or ""
        if not isinstance(ipt_otp_no, str):
            raise Refused(E_SCHEMA, "ipt_otp_no must be a string")
        v = self._open(env, data, False, OUTPATIENT_DEFAULT_MED_TYPE, None, now)
        v.ipt_otp_no = ipt_otp_no
        if ipt_otp_no and any(not w.inpatient and not w.cancelled and w.fixmedins_code == v.fixmedins_code
                              and w.ipt_otp_no == ipt_otp_no for w in self.visits.values()):
            raise Refused(E_DUPLICATE_VISIT, f"ipt_otp_no {ipt_otp_no} has a visit not cancelled")
        self._keep(env, v)
        return {"data": {"mdtrt_id": v.mdtrt_id, "psn_no": v.psn_no, "ipt_otp_no": ipt_otp_no}}

    def admit(self, env: dict, now: str) -> dict:
        """2401: a stay; E_DUPLICATE_VISIT while the person has one neither settled nor cancelled, anywhere."""
        info = _part(env, "mdtrtinfo")
        med_type = _med_type(info, MED_TYPES_INPATIENT, True)
        _dise(info)  # read, not kept: no inpatient rule uses it
        v = self._open(env, info, True, med_type, None, now)
        if any(w.inpatient and w.psn_no == v.psn_no and w.state() in (ADMITTED, DISCHARGED)
               for w in self.visits.values()):
            raise Refused(E_DUPLICATE_VISIT, f"person {v.psn_no} has a stay neither settled nor cancelled")
        self._keep(env, v)
        return {"result": {"mdtrt_id": v.mdtrt_id}}

    # -- changing a visit: 2202, 2203, 2402-2405

    def _named(self, env: dict, key: str, inpatient: bool) -> tuple[dict, Visit]:
        part = _part(env, key)
        return part, self.visit_for(env, field_str(part, "mdtrt_id"), [field_str(part, "psn_no")], inpatient)

    def unregister(self, env: dict, now: str) -> dict:
        """2202: cancel an outpatient visit none of whose batches is settled; its lines go with it."""
        _, v = self._named(env, "data", False)
        self.require(v, REGISTERED)
        v.refuse_settled()
        self.cancel(v)
        return {}

    def visit_facts(self, env: dict, now: str) -> dict:
        """2203: med_type and dise_codg (begntime when sent), until a batch of the visit is settled."""
        info = _part(env, "mdtrtinfo")
        med_type = _med_type(info, MED_TYPES_OUTPATIENT, True)
        dise = _dise(info)
        if med_type == MED_TYPE_CHRONIC and not dise:
            raise Refused(E_SCHEMA, "a chronic visit (med_type 14) names its dise_codg")
        begntime = _time(info, "begntime", False)
        _, v = self._named(env, "mdtrtinfo", False)
        self.require(v, REGISTERED)
        v.refuse_settled()
        v.med_type, v.dise_codg = med_type, dise if med_type == MED_TYPE_CHRONIC else None
        if begntime is not None:
            v.begntime = begntime
        return {}

    def discharge(self, env: dict, now: str) -> dict:
        """2402: endtime of a stay not settled, not before its begntime (E_DATE); a second 2402 moves it."""
        info = _part(env, "dscginfo")
        endtime = _time(info, "endtime")
        _, v = self._named(env, "dscginfo", True)
        self.require(v, ADMITTED, DISCHARGED)
        if endtime < v.begntime:
            raise Refused(E_DATE, f"endtime {endtime} is before begntime {v.begntime}")
        v.endtime, v.discharged_by = endtime, env["msgid"]
        self.visit_of_msg[env["msgid"]] = v.mdtrt_id
        return {}

    def change_stay(self, env: dict, now: str) -> dict:
        """2403: med_type and begntime of a stay not yet settled, each when sent."""
        info = _part(env, "adminfo")
        med_type = _med_type(info, MED_TYPES_INPATIENT, False)
        _dise(info)
        begntime = _time(info, "begntime", False)
        _, v = self._named(env, "adminfo", True)
        self.require(v, ADMITTED, DISCHARGED)
        if begntime is not None and v.endtime is not None and v.endtime < begntime:
            raise Refused(E_DATE, f"begntime {begntime} is after endtime {v.endtime}")
        v.med_type = med_type or v.med_type
        v.begntime = begntime or v.begntime
        return {}

    def unadmit(self, env: dict, now: str) -> dict:
        """2404: cancel a stay with no settlement in force; its lines go with it."""
        _, v = self._named(env, "data", True)
        self.require(v, ADMITTED, DISCHARGED)
        self.cancel(v)
        return {}

    def undischarge(self, env: dict, now: str) -> dict:
        """2405: undo the discharge of a stay not settled."""
        _, v = self._named(env, "data", True)
        self.require(v, DISCHARGED)
        v.endtime = v.discharged_by = None
        return {}

    # -- lines: 2204, 2301, 2205, 2302

    def upload(self, env: dict, now: str) -> dict:
        """2204/2301, all or nothing, checked in docs/contract.md's order: the upload's shape (E_SCHEMA: one
        visit, one person, for 2204 one batch, every feedetl_sn a non-empty string), the visit, E_STATE,
        E_DUPLICATE_LINE, the lines in force (E_LIMIT), then the lines as section 7 reads them (E_SCHEMA)
        and section 3, line by line (E_LIMIT, E_AMOUNT_MISMATCH)."""
        inpatient = env["infno"] == INFNO_IP_UPLOAD
        lines_in = _part(env, "feedetail", list)
        field_str(env, "msgid")
        if not lines_in or any(not isinstance(ln, dict) for ln in lines_in):
            raise Refused(E_SCHEMA, "feedetail must be a non-empty list of objects")
        names = {(field_str(ln, "mdtrt_id"), field_str(ln, "psn_no"),
                  STAY_BATCH if inpatient else field_str(ln, "chrg_bchno")) for ln in lines_in}
        if len(names) > 1:
            raise Refused(E_SCHEMA, "one upload names one visit, one person" + ("" if inpatient else " and one batch"))
        mdtrt_id, psn_no, batch = names.pop()
        keys = [field_str(ln, "feedetl_sn") for ln in lines_in]
        if ALL_LINES in (batch, *keys):
            raise Refused(E_SCHEMA, f"{ALL_LINES} names every line: it is not a feedetl_sn or a chrg_bchno")
        v = self.visit_for(env, mdtrt_id, [psn_no], inpatient)
        self.require(v, *((ADMITTED, DISCHARGED) if inpatient else (REGISTERED,)))
        if batch in v.settled:
            raise Refused(E_STATE, f"batch {batch!r} of visit {v.mdtrt_id} is {SETTLED}")
        used = {ln.key for ln in v.lines}
        if len(set(keys)) < len(keys) or used & set(keys):
            raise Refused(E_DUPLICATE_LINE, f"a feedetl_sn already used in visit {v.mdtrt_id}")
        if len(v.in_force()) + len(keys) > VISIT_LINES_MAX:  # (a request's own 10,000 lines included)
            raise Refused(E_LIMIT, f"more than {VISIT_LINES_MAX} lines in force on visit {v.mdtrt_id}")
        fees = [fee_line(ln) for ln in lines_in]
        results, _, _ = self.split_lines(v.mdtrtarea_admvs[:2], fees, not inpatient)
        v.lines += [Line(f, k, batch, env["msgid"]) for f, k in zip(fees, keys)]
        self.visit_of_msg[env["msgid"]] = v.mdtrt_id
        return {"result": fmt_rows(results)}

    def revoke_batch(self, env: dict, now: str) -> dict:
        """2205: the lines in force of a batch not settled; "0000": every line in force not settled."""
        batch = field_str(_part(env, "data"), "chrg_bchno")
        _, v = self._named(env, "data", False)
        self.require(v, REGISTERED)
        if batch != ALL_LINES and batch in v.settled:
            raise Refused(E_STATE, f"batch {batch!r} of visit {v.mdtrt_id} is {SETTLED}")
        gone = [ln for ln in v.in_force(None if batch == ALL_LINES else batch) if ln.batch not in v.settled]
        if not gone and batch != ALL_LINES:  # "0000" with nothing left to revoke is done already
            raise Refused(E_NOT_FOUND, f"no line in force in batch {batch!r} of visit {v.mdtrt_id}")
        for ln in gone:
            ln.revoked = True
        return {}

    def revoke_lines(self, env: dict, now: str) -> dict:
        """2302: the named lines in force of a stay not settled; a feedetl_sn "0000": every one."""
        items = _part(env, "data", list)
        if not items or any(not isinstance(x, dict) for x in items):
            raise Refused(E_SCHEMA, "input.data must be a non-empty list of objects")
        keys = {field_str(x, "feedetl_sn") for x in items}
        names = {(field_str(x, "mdtrt_id"), field_str(x, "psn_no")) for x in items}
        if len(names) > 1:
            raise Refused(E_SCHEMA, "one revocation names one stay and one person")
        mdtrt_id, psn_no = names.pop()
        v = self.visit_for(env, mdtrt_id, [psn_no], True)
        self.require(v, ADMITTED, DISCHARGED)
        in_force = v.in_force()
        gone = in_force if ALL_LINES in keys else [ln for ln in in_force if ln.key in keys]
        if ALL_LINES not in keys and len(gone) < len(keys):
            raise Refused(E_NOT_FOUND, f"a feedetl_sn not in force on visit {v.mdtrt_id}")
        for ln in gone:
            ln.revoked = True
        return {}

    # -- settling: 2206/2207, 2303/2304 without feedetail

    def settle_stepwise(self, env: dict, now: str) -> dict:
        """Section 7 up to E_NO_POLICY; the visit (E_NOT_FOUND, E_FORBIDDEN, E_MISMATCH, E_STATE); no line
        in force: E_NOT_FOUND; then the rest of section 7 on the lines in force of the batch (the stay),
        with the hospital's split totals, when sent, checked against the hub's (E_AMOUNT_MISMATCH)."""
        infno = env["infno"]
        outpatient = infno in OUTPATIENT_INFNOS
        data = _part(env, "data")
        for k in ("msgid", "mdtrtarea_admvs", "insuplc_admdvs"):
            field_str(env, k)
        psn_no, mdtrt_id, insutype = field_str(data, "psn_no"), field_str(data, "mdtrt_id"), field_str(data, "insutype")
        medfee = field_money(data, "medfee_sumamt")
        acct_flag = acct_flag_of(data)
        med_type = _med_type(data, MED_TYPES_OUTPATIENT if outpatient else MED_TYPES_INPATIENT, False)
        batch = field_str(data, "chrg_bchno") if outpatient else STAY_BATCH
        sent = {hub: field_money(data, k) for k, hub in SENT_SPLITS if data.get(k) is not None}
        flag = None if outpatient else data.get("mid_setl_flag")
        if flag not in (None, "", "0", "1"):
            raise Refused(E_SCHEMA, "mid_setl_flag must be 0 or 1 (or empty: 0)")
        if flag == "1":  # a well-formed request the hub does not do: after every E_SCHEMA
            raise Refused(E_UNSUPPORTED, "interim settlement (mid_setl_flag 1)")
        inst, person, policy = self.parties(env, psn_no, insutype, now)
        v = self.visit_for(env, mdtrt_id, [psn_no], None)
        if med_type is not None and med_type != v.med_type:
            raise Refused(E_MISMATCH, f"med_type {med_type} is not the visit's {v.med_type}")
        self.require_kind(v, not outpatient)
        if outpatient:
            self.require(v, REGISTERED)
            if batch in v.settled:
                raise Refused(E_STATE, f"batch {batch!r} of visit {v.mdtrt_id} is {SETTLED}")
        else:
            self.require(v, DISCHARGED)
        lines = v.in_force(batch)
        if not lines:
            raise Refused(E_NOT_FOUND, f"no line in force in batch {batch!r} of visit {v.mdtrt_id}")
        fees = [ln.fee for ln in lines]
        results, totals, line_sum = self.split_lines(v.mdtrtarea_admvs[:2], fees, outpatient)
        if line_sum != medfee:
            raise Refused(E_AMOUNT_MISMATCH, "medfee_sumamt is not the sum of the lines in force")
        differ = [k for k, amount in sent.items() if amount != totals[k]]
        if differ:
            raise Refused(E_AMOUNT_MISMATCH, f"the hub's {', '.join(differ)} differ from the request's")
        day = money.parse_time_day(v.begntime if outpatient else v.endtime)
        dise = v.dise_codg if v.med_type == MED_TYPE_CHRONIC else None
        req = SettleRequest(infno, outpatient, infno in COMMIT_INFNOS, psn_no, mdtrt_id, v.med_type, insutype,
                            medfee, acct_flag, day, dise, fees)
        output = self.compute(env, req, inst, person, policy, results, totals, now, batch)
        if req.commit:
            v.settled[batch] = "S" + env["msgid"]
        return output

    # -- 2601

    def undo(self, env: dict, now: str) -> dict:
        """2601: undo a message of this institution as its own undo would (E_FORBIDDEN, E_MISMATCH,
        E_ALREADY_REVERSED, then that undo's E_STATE), or void a msgid never committed."""
        data = _part(env, "data")
        field_str(env, "msgid")
        psn_no, omsgid = field_str(data, "psn_no"), field_str(data, "omsgid")
        oinfno = data.get("oinfno")
        if oinfno not in UNDOABLE_INFNOS:
            raise Refused(E_SCHEMA, f"oinfno must be one of {sorted(UNDOABLE_INFNOS)}")
        code = env["fixmedins_code"]
        hit = self.journal.get(omsgid)
        if hit is None:
            if omsgid in self.voided:  # whoever voided it, and as whatever: nothing can arrive under it
                raise Refused(E_ALREADY_REVERSED, f"msgid {omsgid} was voided already")
            self.voided[omsgid] = (oinfno, code)
            return {"data": {"omsgid": omsgid, "oinfno": oinfno, "status": VOIDED}}
        if hit[3] != code:
            raise Refused(E_FORBIDDEN, f"msgid {omsgid} is another institution's")
        if hit[0] != oinfno:
            raise Refused(E_MISMATCH, f"msgid {omsgid} is a {hit[0]}")
        if oinfno in ("2207", "2304"):
            rec = self.settlements["S" + omsgid]
            self._undo_check(psn_no, rec.psn_no, rec.reversed)
            self.undo_settlement(rec, "S" + env["msgid"], now)
        else:
            self._undo_visit_message(oinfno, omsgid, psn_no)
        return {"data": {"omsgid": omsgid, "oinfno": oinfno, "status": UNDONE}}

    @staticmethod
    def _undo_check(psn_no: str, theirs: str, undone: bool) -> None:
        if psn_no != theirs:
            raise Refused(E_MISMATCH, "psn_no is not that of the message undone")
        if undone:
            raise Refused(E_ALREADY_REVERSED, "the message was undone already")

    def _undo_visit_message(self, oinfno: str, omsgid: str, psn_no: str) -> None:
        """2201 as 2202, 2401 as 2404, 2204/2301 by revoking the lines it uploaded, 2402 as 2405."""
        v = self.visits[self.visit_of_msg[omsgid]]
        if oinfno in ("2201", "2401"):
            self._undo_check(psn_no, v.psn_no, v.cancelled)
            if v.inpatient:
                self.require(v, ADMITTED, DISCHARGED)
            v.refuse_settled()
            self.cancel(v)
        elif oinfno in ("2204", "2301"):
            mine = [ln for ln in v.in_force() if ln.msgid == omsgid]
            self._undo_check(psn_no, v.psn_no, not mine)
            if any(ln.batch in v.settled for ln in mine):
                raise Refused(E_STATE, f"lines of msgid {omsgid} are {SETTLED}")
            for ln in mine:
                ln.revoked = True
        else:
            self._undo_check(psn_no, v.psn_no, v.discharged_by != omsgid)
            self.require(v, DISCHARGED)
            v.endtime = v.discharged_by = None
