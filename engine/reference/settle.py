"""Section 7 of docs/contract.md, plainly: a settlement, its checks in their order, its reversal.

SettlementBook holds the reference's state (the world as dicts, the persons and
their accumulators, the settlements and what each took) and answers the
one-shot 2206/2207 and 2303/2304 (with `feedetail`) and the reversals
2208/2305, one request at a time. engine.reference.stepwise builds section 11
on it from the same steps; engine.reference.oracle reads the envelopes.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.contract import money
from engine.contract.protocol import (
    CLR_TYPE_INPATIENT, CLR_TYPE_OUTPATIENT, COMMIT_INFNOS, E_ALREADY_REVERSED, E_AMOUNT_MISMATCH, E_DATE,
    E_DUPLICATE_VISIT, E_FILING_REQUIRED, E_FORBIDDEN, E_LIMIT, E_MISMATCH, E_NO_POLICY, E_NO_QUALIFICATION,
    E_NOT_FOUND, E_SCHEMA, E_UNKNOWN_INSTITUTION, E_UNKNOWN_PERSON, FUND_ACCOUNT, FUND_BASIC, FUND_NAMES,
    FUND_SECOND, LINES_MAX, MED_TYPE_CHRONIC, MED_TYPES_INPATIENT, MED_TYPES_OUTPATIENT, OUTPATIENT_INFNOS,
    REQUEST_DAY_MAX, REQUEST_DAY_MIN, Refused, is_retired, region_covers,
)
from engine.core.maintenance import MaintenanceRefused, Window
from engine.reference.rules import (
    Entry, Person, apply_took, check_line_limits, copy_person, filing_class, pay_chronic, pay_inpatient,
    pay_outpatient, reduction_of, roll_year, split_line,
)
from engine.world.loader import Policy, World

# ---------------------------------------------------------------- reading a request


def field_str(d: dict, k: str, required: bool = True) -> str | None:
    """A non-empty string field (E_SCHEMA); None when absent and not required."""
    v = d.get(k)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise Refused(E_SCHEMA, f"{k} must be a non-empty string")
    return v


def field_money(d: dict, k: str, parse=money.parse_fen) -> int:
    """A number field through an engine.contract.money parser (E_SCHEMA)."""
    try:
        return parse(d.get(k))
    except money.NumberError as e:
        raise Refused(E_SCHEMA, f"{k}: {e}") from None


def field_day(d: dict, k: str, parse=money.parse_time_day) -> int:
    """A time (or with parse=money.parse_day a date) of the request as its day; malformed, or outside
    2000-2099 (section 7, v2): E_SCHEMA."""
    try:
        day = parse(d.get(k))
    except money.NumberError as e:
        raise Refused(E_SCHEMA, f"{k}: {e}") from None
    if not REQUEST_DAY_MIN <= day <= REQUEST_DAY_MAX:
        raise Refused(E_SCHEMA, f"{k}: outside the years a request may name")
    return day


def fee_line(ln: object) -> tuple:
    """One feedetail line as (feedetl_sn, med_list_codg, amount fen, cnt, pric micro, day) (E_SCHEMA)."""
    if not isinstance(ln, dict):
        raise Refused(E_SCHEMA, "feedetail line must be an object")
    sn = ln.get("feedetl_sn")
    if not (isinstance(sn, str) and sn) and not (
        isinstance(sn, int) and not isinstance(sn, bool) and -(2**63) <= sn < 2**63
    ):
        raise Refused(E_SCHEMA, "feedetl_sn must be a non-empty string or a 64-bit integer")
    return (
        sn, field_str(ln, "med_list_codg"), field_money(ln, "det_item_fee_sumamt"),
        field_money(ln, "cnt", money.parse_cnt), field_money(ln, "pric", money.parse_micro),
        field_day(ln, "fee_ocur_time"),
    )


def fee_lines(lines_in: object) -> list[tuple]:
    """feedetail as fee_line tuples: a non-empty list (E_SCHEMA)."""
    if not isinstance(lines_in, list) or not lines_in:
        raise Refused(E_SCHEMA, "feedetail must be a non-empty list")
    return [fee_line(ln) for ln in lines_in]


# The money fields of a `result` row; feedetl_sn, which may be an integer, is echoed as sent.
ROW_MONEY = frozenset(("det_item_fee_sumamt", "fulamt_ownpay_amt", "overlmt_amt", "preselfpay_amt", "inscp_scp_amt"))
SPLIT_PARTS = ("fulamt_ownpay_amt", "overlmt_amt", "preselfpay_amt", "inscp_scp_amt")


def fmt_money(d: dict) -> dict:
    return {k: (money.format_fen(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in d.items()}


def fmt_rows(rows: list[dict]) -> list[dict]:
    """`result` rows as the wire carries them: money as yuan, the rest as it is."""
    return [{k: (money.format_fen(v) if k in ROW_MONEY else v) for k, v in r.items()} for r in rows]


# ---------------------------------------------------------------- the request and its steps


@dataclass
class SettleRequest:
    """A settlement request that passed E_SCHEMA and the line count; money in fen."""

    infno: str
    outpatient: bool
    commit: bool
    psn_no: str
    mdtrt_id: str
    med_type: str
    insutype: str
    medfee: int
    acct_flag: str
    day: int  # begntime's day (outpatient) or endtime's (inpatient)
    dise: str | None  # dise_codg of a chronic visit
    lines: list[tuple]  # fee_line tuples


def acct_flag_of(data: dict) -> str:
    flag = data.get("acct_used_flag", "0")
    if flag not in ("0", "1"):
        raise Refused(E_SCHEMA, "acct_used_flag must be 0 or 1")
    return flag


def settle_request(env: dict) -> SettleRequest:
    """The one-shot request's fields, typed and parsed (E_SCHEMA), at most LINES_MAX lines (E_LIMIT)."""
    infno = env["infno"]
    outpatient = infno in OUTPATIENT_INFNOS
    inp = env.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("data"), dict):
        raise Refused(E_SCHEMA, "input.data")
    data = inp["data"]
    for k in ("msgid", "mdtrtarea_admvs", "insuplc_admdvs", "fixmedins_code"):
        field_str(env, k)
    psn_no = field_str(data, "psn_no")
    mdtrt_id = field_str(data, "mdtrt_id")
    med_type = field_str(data, "med_type")
    if med_type not in (MED_TYPES_OUTPATIENT if outpatient else MED_TYPES_INPATIENT):
        raise Refused(E_SCHEMA, f"med_type {med_type} is not taken by {infno}")
    insutype = field_str(data, "insutype")
    medfee = field_money(data, "medfee_sumamt")
    acct_flag = acct_flag_of(data)
    begn_day = field_day(data, "begntime")
    day = begn_day if outpatient else field_day(data, "endtime")
    dise = field_str(data, "dise_codg") if med_type == MED_TYPE_CHRONIC else None
    lines = fee_lines(inp.get("feedetail"))
    if len(lines) > LINES_MAX:
        raise Refused(E_LIMIT, f"more than {LINES_MAX} fee lines")
    return SettleRequest(infno, outpatient, infno in COMMIT_INFNOS, psn_no, mdtrt_id, med_type, insutype,
                         medfee, acct_flag, day, dise, lines)


def qualify(req: SettleRequest, person: Person, policy: Policy, t: str, now: str) -> tuple[str, int]:
    """The day (E_DATE: after the hub's clock day, or in a year before the person's), the filing
    class and its reduction (E_FILING_REQUIRED), the chronic qualification (E_NO_QUALIFICATION):
    (filing class, reduction_bp)."""
    try:
        today = money.parse_time_day(now)
    except money.NumberError:
        today = REQUEST_DAY_MAX  # a clock that is not a time (a replay's malformed inf_time) bars no day
    if req.day > today:
        raise Refused(E_DATE, "the settlement day is after the hub's clock day")
    year = money.day_year(req.day)
    if year < person.acc_year:
        raise Refused(E_DATE, f"year {year} before the accounting year {person.acc_year}")
    cls = filing_class(person, t, req.day, req.med_type, policy)
    red = reduction_of(policy, cls)
    if red is None:
        raise Refused(E_FILING_REQUIRED, "unfiled visit")
    if req.dise is not None and (req.dise not in person.chronic or req.dise not in policy.chronic):
        raise Refused(E_NO_QUALIFICATION, f"disease {req.dise}")
    return cls, red


def pay_fund(p: Person, person: Person, policy: Policy, req: SettleRequest, lv: int, inscp: int, red: int) -> dict:
    """Section 6 on `p` (the person, or a copy for a pre-settlement), rolled to the visit's year:
    the setting's payment, then the account; `pay` gains fund, psn_part and acct (fen)."""
    retired = person.insutype == "310" and is_retired(person.psn_type)
    if req.med_type in MED_TYPES_INPATIENT:
        pay = pay_inpatient(p, policy, lv, inscp, policy.ip_retiree_bonus_bp if retired else 0, red)
    elif req.med_type == MED_TYPE_CHRONIC:
        pay = pay_chronic(p, policy, req.dise, inscp, red)
    else:
        pay = pay_outpatient(p, policy, lv, inscp, policy.op_retiree_bonus_bp if retired else 0, red)
    pay["fund"] = pay["hifp_pay"] + pay["second"]
    pay["psn_part"] = req.medfee - pay["fund"]
    use_account = person.insutype == "310" and req.acct_flag == "1"
    pay["acct"] = max(0, min(p.balc, pay["psn_part"])) if use_account else 0
    apply_took(p, pay["took"], req.dise, +1)
    p.balc -= pay["acct"]
    return pay


def make_setlinfo(req: SettleRequest, person: Person, p: Person, totals: dict, pay: dict, cls: str,
                  now: str) -> dict:
    """setlinfo of section 7, money in fen (fmt_money formats it)."""
    second = pay["second"]
    return {
        "medfee_sumamt": req.medfee,
        "fulamt_ownpay_amt": totals["fulamt_ownpay_amt"],
        "overlmt_selfpay": totals["overlmt_amt"],
        "preselfpay_amt": totals["preselfpay_amt"],
        "inscp_scp_amt": totals["inscp_scp_amt"],
        "act_pay_dedc": pay["act_pay_dedc"],
        "hifp_pay": pay["hifp_pay"],
        "hifmi_pay": second if person.insutype == "390" else 0,
        "hifob_pay": second if person.insutype == "310" else 0,
        "fund_pay_sumamt": pay["fund"],
        "psn_part_amt": pay["psn_part"],
        "acct_pay": pay["acct"],
        "psn_cash_pay": pay["psn_part"] - pay["acct"],
        "balc": p.balc,
        "cvlserv_pay": 0, "hifes_pay": 0, "maf_pay": 0, "oth_pay": 0, "hosp_part_amt": 0,
        "pool_prop_selfpay": money.format_bp(pay["pool_bp"]),
        "filing_class": cls,
        "mdtrt_id": req.mdtrt_id, "psn_no": req.psn_no, "insutype": req.insutype, "med_type": req.med_type,
        "setl_time": now,
        "clr_type": CLR_TYPE_OUTPATIENT if req.outpatient else CLR_TYPE_INPATIENT,
    }


def fund_detail(insutype: str, pay: dict) -> list[dict]:
    """setldetail: one row per fund that paid something, basic, second layer, account."""
    detail = []
    for fund_type, amt in (
        (FUND_BASIC[insutype], pay["hifp_pay"]),
        (FUND_SECOND[insutype], pay["second"]),
        (FUND_ACCOUNT, pay["acct"]),
    ):
        if amt:
            detail.append({"fund_pay_type": fund_type, "fund_pay_type_name": FUND_NAMES[fund_type],
                           "fund_payamt": money.format_fen(amt)})
    return detail


# The setlinfo amounts a reversal negates (section 7); balc is the balance after it.
REVERSED_AMOUNTS = (
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt", "act_pay_dedc",
    "hifp_pay", "hifmi_pay", "hifob_pay", "fund_pay_sumamt", "psn_part_amt", "acct_pay", "psn_cash_pay",
    "cvlserv_pay", "hifes_pay", "maf_pay", "oth_pay", "hosp_part_amt",
)


def committed_row(code: str, insuplc: str, setl_id: str, reversed_id: str | None, setlinfo: dict, sign: int,
                  now: str | None = None) -> dict:
    """A committed settlement (sign 1) or its reversal (sign -1) as 3201/3202 see it; money signed fen."""
    return {
        "fixmedins_code": code, "setl_id": setl_id, "reversed_setl_id": reversed_id, "sign": sign,
        "setl_time": now or setlinfo["setl_time"], "insuplc_admdvs": insuplc, **{
            k: setlinfo[k] for k in ("insutype", "clr_type", "med_type", "mdtrt_id", "psn_no")},
        **{k: sign * setlinfo[k] for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay")},
    }


@dataclass
class SettlementRecord:
    """What a committed settlement took, so that a reversal can give it back exactly."""

    setl_id: str
    infno: str
    fixmedins_code: str
    mdtrt_id: str
    psn_no: str
    insuplc_admdvs: str
    mdtrtarea_admvs: str
    year: int
    setlinfo: dict
    took: dict  # accumulator -> amount added
    dise_codg: str | None
    batch: str | None = None  # the chrg_bchno of a step-wise settlement ("" for a stay); None: one-shot
    reversed: bool = False


# ---------------------------------------------------------------- the book


class SettlementBook:
    """The reference's state and the one-shot transactions of section 7, in memory."""

    def __init__(self, world: World):
        self.institutions = {
            c: (n, a, int(lv))
            for c, n, a, lv in zip(world.inst_code, world.inst_name, world.inst_admdvs, world.inst_lv)
        }
        self.catalogue: dict[tuple[str, str], list[Entry]] = {}
        codes = world.cat_code.to_pylist()
        for i, code in enumerate(codes):
            cap = int(world.cat_cap_micro[i])
            self.catalogue.setdefault((f"{int(world.cat_prov[i]):02d}", code), []).append(
                Entry(
                    lv=int(world.cat_lv[i]), selfpay_bp=int(world.cat_selfpay_bp[i]),
                    cap_micro=None if cap < 0 else cap, lmt=int(world.cat_lmt[i]),
                    begn=int(world.cat_begn[i]), end=int(world.cat_end[i]),
                )
            )
        self.persons: dict[str, Person] = {}
        self.by_certno: dict[str, str] = {}
        cols = [
            world.psn_no.to_pylist(), world.psn_certno.to_pylist(), world.psn_name.to_pylist(),
            world.psn_insuplc.to_pylist(), world.psn_insutype.to_pylist(), world.psn_type.to_pylist(),
        ]
        nums = [world.psn_balc, world.psn_acc_year, world.psn_hifp_ip, world.psn_hifp_op,
                world.psn_ded_op, world.psn_burden2, world.psn_second_paid]
        order = []
        for i in range(world.n_persons):
            p = Person(*(c[i] for c in cols), *(int(a[i]) for a in nums))
            self.persons[p.psn_no] = p
            self.by_certno.setdefault(p.certno, p.psn_no)
            order.append(p)
        for i, dise in enumerate(world.chr_dise):
            p = order[int(world.chr_psn[i])]
            p.chronic[dise] = [int(world.chr_hifp_cd[i]), p.acc_year]
        for i in range(len(world.fil_type)):
            order[int(world.fil_psn[i])].filings.append({
                "filing_type": world.fil_type[i], "dest": world.fil_dest[i],
                "begn": int(world.fil_begn[i]), "end": int(world.fil_end[i]),
                "status": world.fil_status[i],
            })
        self.policies = world.policy_map()
        # Idempotency (section 7): msgid -> (infno, canonical input, reply, fixmedins_code) of what committed.
        self.journal: dict[str, tuple[str, bytes, dict, str]] = {}
        self.settlements: dict[str, SettlementRecord] = {}
        # One-shot settlements in force: (fixmedins_code, mdtrt_id) -> setl_id.
        self.open_visits: dict[tuple[str, str], str] = {}
        # Committed settlements and reversals in order, money signed: what 3201/3202 read (section 8).
        self.committed: list[dict] = []
        # Section 12: the maintenance windows, in the order of their file (maintenance_window).
        self.maintenance: list[Window] = []

    # -- section 12

    def maintenance_window(self, insuplc: str, now: str) -> Window | None:
        """The window in force at `now` (begin included, end excluded) covering insured region `insuplc`;
        of several, the one that ends last, the first in the file on a tie."""
        best = None
        for w in self.maintenance:
            if w.begin <= now < w.end and region_covers(w.admdvs, insuplc) and (best is None or w.end > best.end):
                best = w
        return best

    def refuse_in_maintenance(self, person: Person, now: str) -> None:
        """E_MAINTENANCE for a transaction that charges or queries `person` during a window of their
        insured region (docs/contract.md section 12 and its choices)."""
        w = self.maintenance_window(person.insuplc_admdvs, now)
        if w is not None:
            raise MaintenanceRefused(w)

    # -- 2206/2207, 2303/2304 with feedetail

    def settle(self, env: dict, now: str) -> dict:
        """The steps of section 7 in their order; each refuses with its code."""
        req = settle_request(env)
        inst, person, policy = self.parties(env, req.psn_no, req.insutype, now)
        if (env["fixmedins_code"], req.mdtrt_id) in self.open_visits:
            raise Refused(E_DUPLICATE_VISIT)
        results, totals, line_sum = self.split_lines(env["mdtrtarea_admvs"][:2], req.lines, req.outpatient)
        if line_sum != req.medfee:
            raise Refused(E_AMOUNT_MISMATCH, "medfee_sumamt is not the sum of the lines")
        return self.compute(env, req, inst, person, policy, results, totals, now)

    def parties(self, env: dict, psn_no: str, insutype: str, now: str | None) -> tuple[tuple, Person, Policy]:
        """The institution, the person and the policy, in section 7's order (E_UNKNOWN_INSTITUTION,
        E_FORBIDDEN, E_UNKNOWN_PERSON, E_MISMATCH, then section 12's E_MAINTENANCE unless `now` is None,
        E_NO_POLICY)."""
        inst = self.institutions.get(env["fixmedins_code"])
        if inst is None:
            raise Refused(E_UNKNOWN_INSTITUTION)
        if inst[1] != env["mdtrtarea_admvs"]:
            raise Refused(E_FORBIDDEN, "the institution is not in mdtrtarea_admvs")
        person = self.persons.get(psn_no)
        if person is None:
            raise Refused(E_UNKNOWN_PERSON)
        if env["insuplc_admdvs"] != person.insuplc_admdvs or insutype != person.insutype:
            raise Refused(E_MISMATCH, "insuplc_admdvs or insutype")
        if now is not None:
            self.refuse_in_maintenance(person, now)
        policy = self.policies.get((person.insuplc_admdvs, person.insutype))
        if policy is None:
            raise Refused(E_NO_POLICY)
        return inst, person, policy

    def split_lines(self, prov2: str, lines: list[tuple], outpatient: bool) -> tuple[list[dict], dict, int]:
        """Section 3 line by line in the catalogue of province prov2: the limits (E_LIMIT,
        E_AMOUNT_MISMATCH), the entry in force on the line's day, the split. Returns the result
        rows, the four totals and the sum of the amounts (fen)."""
        results = []
        totals = dict.fromkeys(SPLIT_PARTS, 0)
        line_sum = 0
        for sn, code, a, c, p, d in lines:
            check_line_limits(a, p, c)
            entry = next((e for e in self.catalogue.get((prov2, code), ()) if e.begn <= d <= e.end), None)
            r = split_line(a, p, c, entry, outpatient)
            for k in totals:
                totals[k] += r[k]
            line_sum += a
            results.append({
                "feedetl_sn": sn, "det_item_fee_sumamt": a,
                "cnt": money.format_cnt(c), "pric": money.format_micro(p),
                "pric_uplmt_amt": (
                    money.format_micro(entry.cap_micro) if entry and entry.cap_micro is not None else None
                ),
                "selfpay_prop": money.format_bp(entry.selfpay_bp) if entry else None,
                "chrgitm_lv": f"0{entry.lv}" if entry else "",
                **{k: r[k] for k in totals}, "memo": r["memo"],
            })
        return results, totals, line_sum

    def compute(self, env: dict, req: SettleRequest, inst: tuple, person: Person, policy: Policy,
                results: list[dict], totals: dict, now: str, batch: str | None = None) -> dict:
        """Section 7 from E_DATE on, then sections 4-6; a settlement commits (with its batch when
        step-wise), a pre-settlement changes nothing. Returns the output."""
        cls, red = qualify(req, person, policy, env["mdtrtarea_admvs"], now)
        p = person if req.commit else copy_person(person)  # a pre-settlement changes nothing
        roll_year(p, money.day_year(req.day))
        pay = pay_fund(p, person, policy, req, inst[2], totals["inscp_scp_amt"], red)
        setlinfo = make_setlinfo(req, person, p, totals, pay, cls, now)
        if req.commit:
            setlinfo["setl_id"] = "S" + env["msgid"]
            self.record(env, req, person, setlinfo, pay, batch)
        return {"setlinfo": fmt_money(setlinfo), "setldetail": fund_detail(person.insutype, pay),
                "result": fmt_rows(results)}

    def record(self, env: dict, req: SettleRequest, person: Person, setlinfo: dict, pay: dict,
               batch: str | None) -> None:
        """Keep a committed settlement: what it took (for its reversal), the visit in force, the row."""
        setl_id = setlinfo["setl_id"]
        self.settlements[setl_id] = SettlementRecord(
            setl_id=setl_id, infno=req.infno, fixmedins_code=env["fixmedins_code"], mdtrt_id=req.mdtrt_id,
            psn_no=req.psn_no, insuplc_admdvs=person.insuplc_admdvs, mdtrtarea_admvs=env["mdtrtarea_admvs"],
            year=person.acc_year, setlinfo=setlinfo, took=dict(pay["took"], balc=-pay["acct"]),
            dise_codg=req.dise, batch=batch,
        )
        if batch is None:
            self.open_visits[(env["fixmedins_code"], req.mdtrt_id)] = setl_id
        self.committed.append(committed_row(env["fixmedins_code"], person.insuplc_admdvs, setl_id, None,
                                            setlinfo, +1))

    # -- 2208/2305

    def reverse(self, env: dict, now: str) -> dict:
        """Section 7's reversal: E_SCHEMA, E_NOT_FOUND, E_FORBIDDEN, E_ALREADY_REVERSED, E_MISMATCH."""
        infno = env["infno"]
        inp = env.get("input")
        if not isinstance(inp, dict) or not isinstance(inp.get("data"), dict):
            raise Refused(E_SCHEMA, "input.data")
        data = inp["data"]
        field_str(env, "fixmedins_code")
        setl_id = field_str(data, "setl_id")
        mdtrt_id = field_str(data, "mdtrt_id")
        psn_no = field_str(data, "psn_no")
        rec = self.settlements.get(setl_id)
        if rec is None:
            raise Refused(E_NOT_FOUND, f"settlement {setl_id}")
        if rec.fixmedins_code != env["fixmedins_code"]:
            raise Refused(E_FORBIDDEN, "only the institution that settled may reverse")
        if rec.reversed:
            raise Refused(E_ALREADY_REVERSED)
        kind_ok = (infno in OUTPATIENT_INFNOS) == (rec.infno in OUTPATIENT_INFNOS)
        if not kind_ok or rec.mdtrt_id != mdtrt_id or rec.psn_no != psn_no:
            raise Refused(E_MISMATCH, "infno, mdtrt_id or psn_no differ from the settlement")
        return {"setlinfo": fmt_money(self.undo_settlement(rec, "S" + env["msgid"], now))}

    def undo_settlement(self, rec: SettlementRecord, setl_id: str, now: str) -> dict:
        """Give back exactly what a settlement took and post its reversal; the reversal's setlinfo (fen)."""
        p = self.persons[rec.psn_no]
        p.balc -= rec.took["balc"]
        if p.acc_year == rec.year:
            apply_took(p, {k: v for k, v in rec.took.items() if k != "balc"}, rec.dise_codg, -1)
        rec.reversed = True
        self.unsettle(rec)
        s = dict(rec.setlinfo)
        for k in REVERSED_AMOUNTS:
            s[k] = -s[k]
        s["balc"] = p.balc
        s["setl_id"] = setl_id
        s["setl_time"] = now
        self.committed.append(committed_row(rec.fixmedins_code, rec.insuplc_admdvs, setl_id, rec.setl_id,
                                            rec.setlinfo, -1, now))
        return s

    def unsettle(self, rec: SettlementRecord) -> None:
        """The visit of a reversed settlement has no settlement in force any more."""
        del self.open_visits[(rec.fixmedins_code, rec.mdtrt_id)]
