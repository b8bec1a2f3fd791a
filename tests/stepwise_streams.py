"""Hypothesis streams of the step-wise flow (docs/contract.md section 11), for the reference and the compiled engine.

`stepwise_streams()` draws a world (test_differential.worlds) and a stream of
envelopes over it the way hospital systems send them: visits registered and
admitted, their facts sent and changed, fee lines uploaded over several
requests (some with a bad line, a feedetl_sn used before, another batch),
lines revoked, stays discharged and discharges undone, batches and stays
pre-settled and settled (with the hospital's split totals, right or a fen off),
reversed and settled again, visits cancelled, 2601 before the original (then
the original) and after it, retries, reused msgids, malformed requests, and a
one-shot settlement now and then. A reference engine follows the stream as it
is drawn so that later requests aim at what really happened (test_differential.Stream);
it only steers the generator. The result is a test_differential.Case, so the
same streams can go through run_reference and run_compiled.
"""
from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from hypothesis import strategies as st

from test_differential import (
    SETTLE_DAYS, Case, Stream, fee_line, load_world_data, malformed, money_value, reversal, settlement, worlds,
    yuan,
)

REQUESTS_MAX = 40  # envelopes per drawn stream
UPLOAD_LINES_MAX = 4
BATCHES = ("1", "2", "3")
KINDS = (("next",) * 24 + ("register",) * 3 + ("admit",) * 3 + ("facts",) * 2 + ("change",) + ("upload",) * 7 + ("revoke",) * 2
         + ("discharge",) * 3 + ("undischarge",) + ("presettle",) * 2 + ("settle",) * 6 + ("reverse",) * 2
         + ("cancel",) + ("undo",) * 2 + ("void",) + ("voided_original",) * 2 + ("retry",) * 2 + ("reuse",)
         + ("malformed",) * 2 + ("one_shot",))
UNDOABLE = ("2201", "2204", "2207", "2301", "2304", "2401", "2402")


class StepwiseStream(Stream):
    """A test_differential.Stream that also remembers the originals a 2601 voided before they were sent."""

    def __init__(self, w: dict, world):
        super().__init__(w, world)
        self.void_originals: list[dict] = []  # envelopes whose msgid a 2601 voided, not yet sent
        self.sn = 0

    def fresh_sn(self) -> str:
        self.sn += 1
        return f"{self.sn:04d}"

    def envelope(self, infno: str, inst: dict, insuplc: str, day: dt.date, inp: dict, prefix: str = "S") -> dict:
        return {"infno": infno, "msgid": self.fresh(prefix), "mdtrtarea_admvs": inst["admdvs"],
                "insuplc_admdvs": insuplc, "recer_sys_code": "YIDI", "infver": "V1.0", "opter_type": "1",
                "opter": "0001", "opter_name": "clerk", "inf_time": f"{day.isoformat()} 18:00:00",
                "fixmedins_code": inst["fixmedins_code"], "fixmedins_name": inst["fixmedins_name"], "input": inp}

    def visits(self, inpatient: bool | None = None) -> list:
        return [v for v in self.observer.visits.values() if inpatient in (None, v.inpatient)]

    def institution(self, code: str) -> dict:
        return next(i for i in self.w["institutions"] if i["fixmedins_code"] == code)

    def person(self, psn_no: str) -> dict:
        return next(p for p in self.w["persons"] if p["psn_no"] == psn_no)


def rarely(draw, one_in: int) -> bool:
    """True about once in `one_in` draws; False is what Hypothesis shrinks to."""
    return draw(st.sampled_from((False,) * (one_in - 1) + (True,)))


def _day(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


def _visit_day(v) -> dt.date:
    """The day a request about visit v is sent: its discharge day, else its start."""
    return _day(v.endtime or v.begntime)


@st.composite
def _some_visit(draw, s: StepwiseStream, inpatient: bool | None):
    """A visit of the stream (mostly), or None when there is none."""
    pool = s.visits(inpatient)
    return draw(st.sampled_from(pool)) if pool else None


@st.composite
def _aimed(draw, s: StepwiseStream, v, infno: str, inp_of, day: dt.date | None = None) -> dict:
    """An envelope about visit v from its institution, now and then from another one, naming another
    person or an unknown visit: `inp_of(mdtrt_id, psn_no)` builds the input."""
    inst, mdtrt_id, psn_no = s.institution(v.fixmedins_code), v.mdtrt_id, v.psn_no
    wrong = draw(st.sampled_from(("",) * 24 + ("inst", "psn", "visit")))
    if wrong == "inst":
        inst = draw(st.sampled_from(s.w["institutions"]))
    elif wrong == "psn":
        psn_no = draw(st.sampled_from(s.w["persons"]))["psn_no"]
    elif wrong == "visit":
        mdtrt_id = "M" + s.fresh("NOSUCH")
    return s.envelope(infno, inst, s.person(v.psn_no)["insuplc_admdvs"], day or _visit_day(v), inp_of(mdtrt_id, psn_no))


@st.composite
def open_visit(draw, s: StepwiseStream, inpatient: bool) -> dict:
    """2201 or 2401: a person at an institution, mostly where the person is insured or filed."""
    w = s.w
    person = draw(st.sampled_from(w["persons"]))
    local = [i for i in w["institutions"] if i["admdvs"] == person["insuplc_admdvs"]]
    inst = draw(st.sampled_from(local)) if local and not rarely(draw, 3) else draw(st.sampled_from(w["institutions"]))
    day = draw(st.sampled_from(SETTLE_DAYS))
    data = {"psn_no": person["psn_no"], "insutype": person["insutype"], "begntime": f"{day.isoformat()} 08:00:00",
            "mdtrt_cert_type": "02", "mdtrt_cert_no": person["certno"]}
    odd = draw(st.sampled_from(("",) * 30 + ("psn", "insutype")))
    if odd == "psn":
        data["psn_no"] = "PNOBODY"
    elif odd == "insutype":
        data["insutype"] = "390" if person["insutype"] == "310" else "310"
    if inpatient:
        data.update(med_type=draw(st.sampled_from(("21", "24"))), ipt_no=s.fresh("I"))
        return s.envelope("2401", inst, person["insuplc_admdvs"], day, {"mdtrtinfo": data, "diseinfo": []})
    # Mostly a new ipt_otp_no; sometimes one of the institution's visits (E_DUPLICATE_VISIT unless cancelled).
    same = [v.ipt_otp_no for v in s.visits(False) if v.fixmedins_code == inst["fixmedins_code"]]
    data["ipt_otp_no"] = draw(st.sampled_from(same)) if same and rarely(draw, 5) else s.fresh("OTP")
    return s.envelope("2201", inst, person["insuplc_admdvs"], day, {"data": data})


@st.composite
def upload(draw, s: StepwiseStream, v, batch: str | None = None) -> dict:
    """2204 (one batch) or 2301: a few lines, fresh sns mostly, sometimes one used before or a bad line."""
    used = [ln.key for ln in v.lines]
    batch = batch or draw(st.sampled_from(BATCHES))
    day = _day(v.begntime)
    lines = []
    for _ in range(draw(st.integers(1, UPLOAD_LINES_MAX))):
        sn = draw(st.sampled_from(used)) if used and rarely(draw, 15) else s.fresh_sn()
        ln, _ = draw(fee_line(s, v.mdtrtarea_admvs[:2], sn, day))
        ln["medins_list_name"] = "item"
        if not v.inpatient:
            ln["chrg_bchno"] = batch
        lines.append(ln)
    if rarely(draw, 20):
        lines.append(copy.deepcopy(lines[0]))  # the same feedetl_sn twice in one upload
    env = draw(_aimed(s, v, "2301" if v.inpatient else "2204",
                      lambda m, p: {"feedetail": [dict(ln, mdtrt_id=m, psn_no=p) for ln in lines]}))
    if not v.inpatient and len(lines) > 1 and rarely(draw, 20):
        env["input"]["feedetail"][-1]["chrg_bchno"] = "9"  # two batches in one upload: E_SCHEMA
    return env


@st.composite
def revoke(draw, s: StepwiseStream, v) -> dict:
    """2205 (a batch, or "0000") or 2302 (some sns, or "0000")."""
    if not v.inpatient:
        batch = draw(st.sampled_from(BATCHES + ("0000",)))
        return draw(_aimed(s, v, "2205", lambda m, p: {"data": {"mdtrt_id": m, "chrg_bchno": batch, "psn_no": p}}))
    keys = [ln.key for ln in v.lines] or ["0001"]
    sns = draw(st.lists(st.sampled_from(keys + ["0000", "9999"]), min_size=1, max_size=3))
    return draw(_aimed(s, v, "2302", lambda m, p: {"data": [{"feedetl_sn": sn, "mdtrt_id": m, "psn_no": p}
                                                            for sn in sns]}))


@st.composite
def settle_visit(draw, s: StepwiseStream, v, commit: bool, batch: str | None = None) -> dict:
    """2206/2207 of a batch or 2303/2304 of the stay, the totals the hub holds (sometimes a fen off)."""
    ready = sorted({ln.batch for ln in v.in_force()} - set(v.settled))
    if v.inpatient:
        batch = ""
    elif batch is None:
        batch = draw(st.sampled_from(ready)) if ready and not rarely(draw, 5) else draw(st.sampled_from(BATCHES))
    fees = [ln.fee for ln in v.in_force(batch)]
    person = s.person(v.psn_no)
    data = {"psn_no": v.psn_no, "mdtrt_cert_type": "02", "mdtrt_cert_no": person["certno"],
            "medfee_sumamt": None, "psn_setlway": "01", "mdtrt_id": v.mdtrt_id, "insutype": v.insutype,
            "acct_used_flag": draw(st.sampled_from(("0", "1", "1")))}
    if not rarely(draw, 4):
        data["med_type"] = draw(st.sampled_from(("11", "13", "21", "24"))) if rarely(draw, 20) else v.med_type
    if v.inpatient:
        data["mid_setl_flag"] = "1" if rarely(draw, 20) else "0"
    else:
        data["chrg_bchno"] = batch
    total = sum(f[2] for f in fees) + draw(st.sampled_from((0,) * 20 + (1, -1)))
    data["medfee_sumamt"] = money_value(draw, yuan(total))
    if fees and draw(st.booleans()):
        try:
            _, totals, _ = s.observer.split_lines(v.mdtrtarea_admvs[:2], fees, not v.inpatient)
        except Exception:  # noqa: BLE001 - lines the hub refused never stay in force; nothing to send then
            totals = {}
        for k, hub in (("fulamt_ownpay_amt", "fulamt_ownpay_amt"), ("overlmt_selfpay", "overlmt_amt"),
                       ("preselfpay_amt", "preselfpay_amt"), ("inscp_scp_amt", "inscp_scp_amt")):
            if hub in totals and not rarely(draw, 4):
                data[k] = yuan(totals[hub] + (1 if rarely(draw, 20) else 0))
    infno = ("2304" if commit else "2303") if v.inpatient else ("2207" if commit else "2206")
    clock = _visit_day(v) + dt.timedelta(draw(st.sampled_from((0,) * 10 + (1, -1))))
    env = draw(_aimed(s, v, infno, lambda m, p: {"data": dict(data, mdtrt_id=m, psn_no=p)}, clock))
    return env


@st.composite
def undo(draw, s: StepwiseStream) -> dict:
    """2601 of a committed message (mostly the sender's own, its own oinfno and person)."""
    done = [(m, j) for m, j in s.observer.journal.items() if j[0] in UNDOABLE]
    inst = draw(st.sampled_from(s.w["institutions"]))
    if not done:
        return draw(void(s))
    omsgid, (oinfno, _, _, code) = draw(st.sampled_from(done))
    if not rarely(draw, 8):
        inst = s.institution(code)
    if oinfno in ("2207", "2304"):
        psn_no = s.observer.settlements["S" + omsgid].psn_no
    else:
        psn_no = s.observer.visits[s.observer.visit_of_msg[omsgid]].psn_no
    if rarely(draw, 10):
        oinfno = draw(st.sampled_from(UNDOABLE + ("2208",)))
    if rarely(draw, 12):
        psn_no = draw(st.sampled_from(s.w["persons"]))["psn_no"]
    day = draw(st.sampled_from(SETTLE_DAYS))
    return s.envelope("2601", inst, "", day, {"data": {"psn_no": psn_no, "omsgid": omsgid, "oinfno": oinfno}})


@st.composite
def void(draw, s: StepwiseStream) -> dict:
    """2601 before the original: the original (drawn now, kept for later) has a msgid never committed."""
    pool = s.visits()
    if pool and draw(st.booleans()):
        v = draw(st.sampled_from(pool))
        kind = draw(st.sampled_from(("upload", "settle")))
        original = draw(upload(s, v)) if kind == "upload" else draw(settle_visit(s, v, True))
    else:
        original = draw(open_visit(s, draw(st.booleans())))
    s.void_originals.append(original)
    inst = s.institution(original["fixmedins_code"])
    day = _day(original["inf_time"])
    return s.envelope("2601", inst, "", day, {"data": {"psn_no": "P000", "omsgid": original["msgid"],
                                                       "oinfno": original["infno"]}})


@st.composite
def next_step(draw, s: StepwiseStream) -> dict:
    """The step a hospital system would send next for one of its visits, or a new visit."""
    live = [v for v in s.visits() if v.state() != "CANCELLED"]
    if not live or rarely(draw, 6):
        return draw(open_visit(s, draw(st.booleans())))
    v = draw(st.sampled_from(live))
    if v.inpatient:
        state = v.state()
        if state == "ADMITTED":
            if len(v.in_force()) < 2 or rarely(draw, 3):
                return draw(upload(s, v))
            return draw(stepwise_envelope(s, "discharge", v))
        if state == "DISCHARGED":
            return draw(settle_visit(s, v, not rarely(draw, 4)))
        rec = s.observer.settlements[v.settled[""]]
        return draw(_reversal_of(s, rec))
    if v.med_type == "11" and not v.lines and rarely(draw, 2):
        return draw(stepwise_envelope(s, "facts", v))
    ready = sorted({ln.batch for ln in v.in_force()} - set(v.settled))
    if ready and not rarely(draw, 3):
        return draw(settle_visit(s, v, not rarely(draw, 4), draw(st.sampled_from(ready))))
    if v.settled and rarely(draw, 3):
        return draw(_reversal_of(s, s.observer.settlements[draw(st.sampled_from(sorted(v.settled.values())))]))
    free = [b for b in BATCHES if b not in v.settled]
    return draw(upload(s, v, draw(st.sampled_from(free)) if free else None))


@st.composite
def _reversal_of(draw, s: StepwiseStream, rec) -> dict:
    """2208/2305 of a settlement in force, or now and then its 2601."""
    inst = s.institution(rec.fixmedins_code)
    day = draw(st.sampled_from(SETTLE_DAYS))
    if rarely(draw, 4):
        return s.envelope("2601", inst, "", day, {"data": {"psn_no": rec.psn_no, "omsgid": rec.setl_id[1:],
                                                           "oinfno": rec.infno}})
    return s.envelope("2208" if rec.infno == "2207" else "2305", inst, "", day,
                      {"data": {"setl_id": rec.setl_id, "mdtrt_id": rec.mdtrt_id, "psn_no": rec.psn_no}})


@st.composite
def stepwise_envelope(draw, s: StepwiseStream, kind: str | None = None, v=None) -> Any:
    """One envelope of the stream: `kind` (drawn from KINDS when None) about visit v (drawn when None)."""
    if kind is None:
        kind = draw(st.sampled_from(KINDS))
    if kind == "next":
        return draw(next_step(s))
    earlier = [e for e in s.envs if isinstance(e, dict)]
    inpatient = draw(st.booleans()) if v is None else v.inpatient
    v = v or draw(_some_visit(s, inpatient)) or draw(_some_visit(s, None))
    if v is None and kind not in ("void", "undo", "one_shot", "voided_original") or not earlier and kind in (
            "retry", "reuse", "malformed"):
        kind = "register" if not inpatient else "admit"
    if kind == "register" or kind == "admit":
        return draw(open_visit(s, kind == "admit"))
    if kind == "facts":
        if v.inpatient:
            kind = "change"
        else:
            med_type = draw(st.sampled_from(("11", "13", "14") * 4 + ("21",)))
            info = {"med_type": med_type, "begntime": v.begntime, "main_cond_dscr": ""}
            if med_type == "14" and not rarely(draw, 10):
                info["dise_codg"] = draw(st.sampled_from(("M03900", "M01600", "M00500", "M99999")))
            return draw(_aimed(s, v, "2203", lambda m, p: {"mdtrtinfo": dict(info, mdtrt_id=m, psn_no=p),
                                                           "diseinfo": []}))
    if kind == "change":
        if not v.inpatient:
            kind = "upload"
        else:
            info = {"med_type": draw(st.sampled_from(("21", "24")))}
            if rarely(draw, 4):
                info["begntime"] = (_day(v.begntime) - dt.timedelta(draw(st.sampled_from((0, 1, -3))))).isoformat() \
                    + " 07:00:00"
            return draw(_aimed(s, v, "2403", lambda m, p: {"adminfo": dict(info, mdtrt_id=m, psn_no=p)}))
    if kind == "upload":
        return draw(upload(s, v))
    if kind == "revoke":
        return draw(revoke(s, v))
    if kind in ("discharge", "undischarge", "cancel"):
        if kind == "discharge" and v.inpatient:
            end = _day(v.begntime) + dt.timedelta(draw(st.sampled_from((0, 1, 3, -1))))
            return draw(_aimed(s, v, "2402", lambda m, p: {"dscginfo": {
                "mdtrt_id": m, "psn_no": p, "insutype": v.insutype, "endtime": f"{end.isoformat()} 16:00:00"},
                "diseinfo": []}, end))
        infno = {"undischarge": "2405", "cancel": "2404"}.get(kind, "2402") if v.inpatient else "2202"
        return draw(_aimed(s, v, infno, lambda m, p: {"data": {"mdtrt_id": m, "psn_no": p, "ipt_otp_no": ""}}))
    if kind in ("presettle", "settle"):
        return draw(settle_visit(s, v, kind == "settle"))
    if kind == "reverse":
        return draw(reversal(s))
    if kind == "undo":
        return draw(undo(s))
    if kind == "void":
        return draw(void(s))
    if kind == "voided_original":
        if s.void_originals:
            return s.void_originals.pop(draw(st.integers(0, len(s.void_originals) - 1)))
        return draw(void(s))
    if kind == "retry":
        env = copy.deepcopy(draw(st.sampled_from(earlier)))
        if rarely(draw, 5):
            inst = draw(st.sampled_from(s.w["institutions"]))  # the same msgid from another institution
            env["fixmedins_code"], env["mdtrtarea_admvs"] = inst["fixmedins_code"], inst["admdvs"]
        return env
    if kind == "reuse":
        env = draw(stepwise_envelope(s))
        if isinstance(env, dict):
            env["msgid"] = draw(st.sampled_from(earlier))["msgid"]
        return env
    if kind == "malformed":
        return draw(malformed(draw(st.sampled_from(earlier))))
    return draw(settlement(s))  # one_shot


@st.composite
def stepwise_streams(draw, requests_max: int = REQUESTS_MAX) -> Case:
    """A world, a step-wise stream of envelope bodies over it, and batch sizes for the compiled engine."""
    w = draw(worlds())
    world = load_world_data(w)
    s = StepwiseStream(w, world)
    bodies = [s.append(draw(stepwise_envelope(s))) for _ in range(draw(st.integers(1, requests_max)))]
    sizes = []
    while sum(sizes) < len(bodies):
        sizes.append(draw(st.integers(1, len(bodies) - sum(sizes))))
    return Case(w, world, bodies, sizes)
