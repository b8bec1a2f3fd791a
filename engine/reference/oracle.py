"""The plain-Python reference of docs/contract.md sections 3-7: the oracle for tests.

Readable first: one function per step of the spec, dicts and ints, one request
at a time, state in memory. The compiled pipeline (engine.core.engine) must give
the same reply, field for field, for every stream of requests.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field

from engine.contract import money
from engine.contract.money import clamp_bp, ext, mulr
from engine.contract.protocol import (
    CANDIDATE_ORDER, CLR_TYPE_INPATIENT, CLR_TYPE_OUTPATIENT, CNT_MAX_TEN_THOUSANDTHS, COMMIT_INFNOS,
    E_ALREADY_REVERSED, E_AMOUNT_MISMATCH, E_DATE, E_DUPLICATE_VISIT, E_FILING_REQUIRED, E_FORBIDDEN, E_LIMIT,
    E_MISMATCH, E_MSGID_REUSED, E_NO_POLICY, E_NO_QUALIFICATION, E_NOT_FOUND, E_SCHEMA,
    E_UNKNOWN_INSTITUTION, E_UNKNOWN_PERSON, E_UNSUPPORTED, EMERGENCY, ENVELOPE_DEPTH_MAX, FILING_CLASS_OF_TYPE,
    FUND_ACCOUNT, FUND_BASIC, FUND_NAMES, FUND_SECOND, INFNO_PERSON, LINE_AMT_MAX_FEN, LINES_MAX,
    LOCAL, MED_TYPE_CHRONIC, MED_TYPES_EMERGENCY, MED_TYPES_INPATIENT, MED_TYPES_OUTPATIENT,
    OUTPATIENT_INFNOS, PRIC_MAX_MICRO, REDUCTION_KEY_OF_CLASS, REQUEST_DAY_MAX, REQUEST_DAY_MIN, REVERSE_INFNOS,
    SETTLE_INFNOS,
    TEMP_FILING_TYPES, UNFILED, WAIVED, Refused, canonical, is_retired, province,
)
from engine.core.reconcile import RECONCILE_INFNOS, parse_request
from engine.reference.reading import not_json, nesting_depth, raw_json_depth, request_time_ok
from engine.world.loader import DAY_OPEN, Policy, Tier, World

# ---------------------------------------------------------------- state


@dataclass
class Person:
    psn_no: str
    certno: str
    psn_name: str
    insuplc_admdvs: str
    insutype: str
    psn_type: str
    balc: int
    acc_year: int
    hifp_ip: int
    hifp_op: int
    ded_op: int
    burden2: int
    second_paid: int
    chronic: dict[str, list[int]] = field(default_factory=dict)  # dise -> [hifp_cd, year]
    filings: list[dict] = field(default_factory=list)


@dataclass
class Entry:
    lv: int
    selfpay_bp: int
    cap_micro: int | None
    lmt: int
    begn: int
    end: int


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
    reversed: bool = False


# ---------------------------------------------------------------- section 3


def split_line(a: int, p: int, c: int, entry: Entry | None, outpatient: bool) -> dict:
    """Split one fee line (section 3, steps 2-5); the amounts are fen."""
    r = {"fulamt_ownpay_amt": 0, "overlmt_amt": 0, "preselfpay_amt": 0, "inscp_scp_amt": 0}
    if entry is None:
        r["fulamt_ownpay_amt"], r["memo"] = a, "NOT_IN_CATALOGUE"
    elif entry.lv == 3:
        r["fulamt_ownpay_amt"], r["memo"] = a, "CLASS_C"
    elif entry.lmt == 1 and outpatient:
        r["fulamt_ownpay_amt"], r["memo"] = a, "LIMITED_USE"
    else:
        over = 0
        if entry.cap_micro is not None and p > entry.cap_micro:
            over = min(a, ext(p - entry.cap_micro, c))
        base = a - over
        pre = mulr(base, entry.selfpay_bp) if entry.lv == 2 else 0
        r.update(overlmt_amt=over, preselfpay_amt=pre, inscp_scp_amt=base - pre, memo="")
    assert sum(r[k] for k in ("fulamt_ownpay_amt", "overlmt_amt", "preselfpay_amt", "inscp_scp_amt")) == a
    return r


def check_line_limits(a: int, p: int, c: int) -> None:
    """Section 1 limits on one line, then section 3 step 1."""
    if not (0 <= p <= PRIC_MAX_MICRO and 0 < c <= CNT_MAX_TEN_THOUSANDTHS and 0 <= a <= LINE_AMT_MAX_FEN):
        raise Refused(E_LIMIT, "line outside the limits of price, count or amount")
    if abs(ext(p, c) - a) > 1:
        raise Refused(E_AMOUNT_MISMATCH, "line amount is not price times count")


# ---------------------------------------------------------------- section 4


def filing_end(f: dict) -> int:
    """The last day a filing is in force (section 4)."""
    six = money.six_months(f["begn"])
    end = f["end"]
    if f["filing_type"] in TEMP_FILING_TYPES:
        end = six if end == DAY_OPEN else min(end, six)
    if f["status"] == "2":
        end = min(end, six)
    return end


def covers(dest: str, t: str) -> bool:
    if dest == t:
        return True
    if dest.endswith("0000") and dest[:2] == t[:2]:
        return True
    return dest.endswith("00") and dest[:4] == t[:4]


def reduction_of(policy: Policy, cls: str) -> int | None:
    if cls in (LOCAL, WAIVED):
        return 0
    return policy.reduction_bp[REDUCTION_KEY_OF_CLASS[cls]]


def filing_class(person: Person, t: str, day: int, med_type: str, policy: Policy) -> str:
    """The filing class of a visit in region t on day `day` (section 4)."""
    if t == person.insuplc_admdvs:
        return LOCAL
    cands = set()
    for f in person.filings:
        if covers(f["dest"], t) and f["begn"] <= day <= filing_end(f):
            cands.add(FILING_CLASS_OF_TYPE[f["filing_type"]])
    if med_type in MED_TYPES_EMERGENCY:
        cands.add(EMERGENCY)
    if med_type in MED_TYPES_OUTPATIENT and not policy.op_requires_filing:
        cands.add(WAIVED)
    if not cands:
        return UNFILED
    return min(
        (c for c in CANDIDATE_ORDER if c in cands),
        key=lambda c: (reduction_of(policy, c), CANDIDATE_ORDER.index(c)),
    )


# ---------------------------------------------------------------- section 5 and 6


def eff(ratio_bp: int, bonus_bp: int, reduction_bp: int) -> int:
    return clamp_bp(ratio_bp + bonus_bp - reduction_bp)


def segments(lo: int, hi: int, tiers: tuple[Tier, ...], adj: int) -> int:
    total = 0
    a = 0
    for t in tiers:
        b = t.upper_fen
        top = hi if b is None else min(hi, b)
        portion = max(0, top - max(lo, a))
        total += mulr(portion, clamp_bp(t.ratio_bp + adj))
        if b is None:
            break
        a = b
    return total


def roll_year(person: Person, year: int) -> None:
    """Bring the person's accounting year forward (section 6)."""
    if year > person.acc_year:
        person.acc_year = year
        person.hifp_ip = person.hifp_op = person.ded_op = person.burden2 = person.second_paid = 0
        for q in person.chronic.values():
            q[0], q[1] = 0, year


def pay_inpatient(p: Person, pol: Policy, lv: int, i: int, bonus: int, red: int) -> dict:
    ded = min(i, pol.ip_deductible_fen[lv])
    r = i - ded
    raw = segments(0, r, pol.ip_tiers[lv], bonus - red)
    hifp = min(raw, max(0, pol.annual_cap_fen - p.hifp_ip))
    burden = i - hifp
    t = pol.sl_threshold_fen
    lo = max(0, p.burden2 - t)
    hi = max(0, p.burden2 + burden - t)
    raw2 = segments(lo, hi, pol.sl_tiers, 0)
    second = min(raw2, max(0, pol.sl_annual_cap_fen - p.second_paid))
    return {
        "act_pay_dedc": ded, "hifp_pay": hifp, "second": second,
        "took": {"hifp_ip": hifp, "burden2": burden, "second_paid": second},
        "pool_bp": eff(pol.ip_tiers[lv][0].ratio_bp, bonus, red),
    }


def pay_outpatient(p: Person, pol: Policy, lv: int, i: int, bonus: int, red: int) -> dict:
    ded = min(i, max(0, pol.op_annual_deductible_fen - p.ded_op))
    r = i - ded
    ratio = eff(pol.op_ratio_bp[lv], bonus, red)
    hifp = min(mulr(r, ratio), max(0, pol.op_annual_cap_fen - p.hifp_op))
    return {
        "act_pay_dedc": ded, "hifp_pay": hifp, "second": 0,
        "took": {"ded_op": ded, "hifp_op": hifp}, "pool_bp": ratio,
    }


def pay_chronic(p: Person, pol: Policy, dise: str, i: int, red: int) -> dict:
    ratio_bp, cap = pol.chronic[dise]
    ratio = eff(ratio_bp, 0, red)
    hifp = min(mulr(i, ratio), max(0, cap - p.chronic[dise][0]))
    return {"act_pay_dedc": 0, "hifp_pay": hifp, "second": 0, "took": {"hifp_cd": hifp}, "pool_bp": ratio}


def apply_took(p: Person, took: dict, dise: str | None, sign: int) -> None:
    for k, v in took.items():
        if k == "hifp_cd":
            p.chronic[dise][0] += sign * v
        else:
            setattr(p, k, getattr(p, k) + sign * v)


# ---------------------------------------------------------------- section 7


def _str(d: dict, k: str, required: bool = True) -> str | None:
    v = d.get(k)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise Refused(E_SCHEMA, f"{k} must be a non-empty string")
    return v


def _money(d: dict, k: str, parse=money.parse_fen) -> int:
    try:
        return parse(d.get(k))
    except money.NumberError as e:
        raise Refused(E_SCHEMA, f"{k}: {e}") from None


def _time_day(d: dict, k: str) -> int:
    """A time of the request as its day; malformed, or outside 2000-2099 (section 7, v2): E_SCHEMA."""
    try:
        day = money.parse_time_day(d.get(k))
    except money.NumberError as e:
        raise Refused(E_SCHEMA, f"{k}: {e}") from None
    if not REQUEST_DAY_MIN <= day <= REQUEST_DAY_MAX:
        raise Refused(E_SCHEMA, f"{k}: outside the years a request may name")
    return day


# The money fields of a `result` row; feedetl_sn, which may be an integer, is echoed as sent.
_ROW_MONEY = frozenset(
    ("det_item_fee_sumamt", "fulamt_ownpay_amt", "overlmt_amt", "preselfpay_amt", "inscp_scp_amt")
)


def fmt_money(d: dict) -> dict:
    return {k: (money.format_fen(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in d.items()}


# ---------------------------------------------------------------- section 7: settlement steps


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
    lines: list[tuple]  # (feedetl_sn, med_list_codg, amount fen, cnt, pric micro, day)


def _settle_request(env: dict) -> SettleRequest:
    """The request's fields, typed and parsed (E_SCHEMA), at most LINES_MAX lines (E_LIMIT)."""
    infno = env["infno"]
    outpatient = infno in OUTPATIENT_INFNOS
    inp = env.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("data"), dict):
        raise Refused(E_SCHEMA, "input.data")
    data = inp["data"]
    for k in ("msgid", "mdtrtarea_admvs", "insuplc_admdvs", "fixmedins_code"):
        _str(env, k)
    psn_no = _str(data, "psn_no")
    mdtrt_id = _str(data, "mdtrt_id")
    med_type = _str(data, "med_type")
    if med_type not in (MED_TYPES_OUTPATIENT if outpatient else MED_TYPES_INPATIENT):
        raise Refused(E_SCHEMA, f"med_type {med_type} is not taken by {infno}")
    insutype = _str(data, "insutype")
    medfee = _money(data, "medfee_sumamt")
    acct_flag = data.get("acct_used_flag", "0")
    if acct_flag not in ("0", "1"):
        raise Refused(E_SCHEMA, "acct_used_flag must be 0 or 1")
    begn_day = _time_day(data, "begntime")
    day = begn_day if outpatient else _time_day(data, "endtime")
    dise = _str(data, "dise_codg") if med_type == MED_TYPE_CHRONIC else None
    lines = _fee_lines(inp.get("feedetail"))
    if len(lines) > LINES_MAX:
        raise Refused(E_LIMIT, f"more than {LINES_MAX} fee lines")
    return SettleRequest(infno, outpatient, infno in COMMIT_INFNOS, psn_no, mdtrt_id, med_type, insutype,
                         medfee, acct_flag, day, dise, lines)


def _fee_lines(lines_in: object) -> list[tuple]:
    """feedetail as (feedetl_sn, med_list_codg, amount fen, cnt, pric micro, day) tuples (E_SCHEMA)."""
    if not isinstance(lines_in, list) or not lines_in:
        raise Refused(E_SCHEMA, "feedetail must be a non-empty list")
    lines = []
    for ln in lines_in:
        if not isinstance(ln, dict):
            raise Refused(E_SCHEMA, "feedetail line must be an object")
        sn = ln.get("feedetl_sn")
        if not (isinstance(sn, str) and sn) and not (
            isinstance(sn, int) and not isinstance(sn, bool) and -(2**63) <= sn < 2**63
        ):
            raise Refused(E_SCHEMA, "feedetl_sn must be a non-empty string or a 64-bit integer")
        lines.append((
            sn, _str(ln, "med_list_codg"), _money(ln, "det_item_fee_sumamt"),
            _money(ln, "cnt", money.parse_cnt), _money(ln, "pric", money.parse_micro),
            _time_day(ln, "fee_ocur_time"),
        ))
    return lines


def _qualify(req: SettleRequest, person: Person, policy: Policy, t: str, now: str) -> tuple[str, int]:
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


def _pay_fund(p: Person, person: Person, policy: Policy, req: SettleRequest, lv: int, inscp: int,
              red: int) -> dict:
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


def _setlinfo(req: SettleRequest, person: Person, p: Person, totals: dict, pay: dict, cls: str,
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


def _fund_detail(insutype: str, pay: dict) -> list[dict]:
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


class ReferenceEngine:
    """Handles envelopes one at a time, in order, in memory (sections 3-7)."""

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
        self.journal: dict[str, tuple[str, bytes, dict, str]] = {}  # msgid -> (infno, input, reply, fixmedins_code)
        self.settlements: dict[str, SettlementRecord] = {}
        self.open_visits: dict[tuple[str, str], str] = {}
        # Committed settlements and reversals in order, money signed: what 3201/3202 read (section 8).
        self.committed: list[dict] = []

    # -- entry point

    def handle_body(self, body: bytes) -> dict:
        """One JSON body in, as replay reads it: its depth from the raw text, then decoded, the
        clock its inf_time (when a string)."""
        if raw_json_depth(body) > ENVELOPE_DEPTH_MAX:
            # Section 7 (v2): not read at all, so neither its msgid nor its inf_time answers.
            wall = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            return self.reply(None, wall, None, Refused(E_SCHEMA, f"nested deeper than {ENVELOPE_DEPTH_MAX} levels"))
        try:
            env = json.loads(body, parse_float=str, parse_constant=not_json)
        except (ValueError, RecursionError):  # not JSON, or nested past what json.loads follows
            env = None
        clock = env.get("inf_time") if isinstance(env, dict) else None
        return self.handle(env, clock if isinstance(clock, str) else None)

    def handle(self, env: object, clock: str | None = None) -> dict:
        """One envelope in, one reply out. `clock` is the time of the reply (replay: inf_time)."""
        wall = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        now = clock or wall
        if nesting_depth(env) > ENVELOPE_DEPTH_MAX:
            return self.reply(None, wall, None, Refused(E_SCHEMA, f"nested deeper than {ENVELOPE_DEPTH_MAX} levels"))
        msgid = env.get("msgid") if isinstance(env, dict) else None
        if clock is not None and not request_time_ok(clock):
            # The replay clock is the request's inf_time: a time of the request like any other.
            return self.reply(msgid, wall, None, Refused(E_SCHEMA, "inf_time: not a time within 2000-2099"))
        try:
            if not isinstance(env, dict) or not isinstance(env.get("infno"), str):
                raise Refused(E_SCHEMA, "not an envelope")
            infno = env["infno"]
            if (infno not in SETTLE_INFNOS and infno not in REVERSE_INFNOS and infno != INFNO_PERSON
                    and infno not in RECONCILE_INFNOS):
                raise Refused(E_UNSUPPORTED, f"infno {infno}")
            if infno == INFNO_PERSON:
                output = self.person_info(env)
            elif infno in RECONCILE_INFNOS:
                output = self.reconciliation(env)
            else:
                committing = infno in COMMIT_INFNOS or infno in REVERSE_INFNOS
                if committing:
                    _str(env, "msgid")
                    inp = canonical(env.get("input"))
                    hit = self.journal.get(msgid)
                    if hit is not None:
                        # Another institution's msgid is never answered with its reply (section 7, v2).
                        if hit[0] == infno and hit[1] == inp and hit[3] == env.get("fixmedins_code"):
                            return hit[2]
                        raise Refused(E_MSGID_REUSED, f"msgid {msgid}")
                if infno in REVERSE_INFNOS:
                    output = self.reverse(env, now)
                else:
                    output = self.settle(env, now)
                reply = self.reply(msgid, now, output)
                if committing:
                    self.journal[msgid] = (infno, inp, reply, env.get("fixmedins_code"))
                return reply
        except Refused as r:
            return self.reply(msgid, now, None, r)
        return self.reply(msgid, now, output)

    @staticmethod
    def reply(msgid: object, now: str, output: dict | None, err: Refused | None = None) -> dict:
        r = {
            "infcode": 0 if err is None else -1,
            "inf_refmsgid": msgid if isinstance(msgid, str) else "",
            "refmsg_time": now,
            "respond_time": now,
            "err_msg": "" if err is None else (err.detail or err.code),
        }
        if err is not None:
            r["err_code"] = err.code
            r["output"] = {}
        else:
            r["output"] = output
        return r

    # -- 1101

    def person_info(self, env: dict) -> dict:
        data = (env.get("input") or {}).get("data") if isinstance(env.get("input"), dict) else None
        if not isinstance(data, dict):
            raise Refused(E_SCHEMA, "input.data")
        kind = _str(data, "mdtrt_cert_type")
        no = _str(data, "mdtrt_cert_no")
        if kind == "01":
            p = self.persons.get(no)
        elif kind in ("02", "03"):
            psn_no = self.by_certno.get(no)
            p = self.persons.get(psn_no) if psn_no else None
        else:
            raise Refused(E_SCHEMA, "mdtrt_cert_type must be 01, 02 or 03")
        if p is None:
            raise Refused(E_UNKNOWN_PERSON)
        return {
            "baseinfo": {"psn_no": p.psn_no, "certno": p.certno, "psn_name": p.psn_name},
            "insuinfo": [{
                "insutype": p.insutype, "psn_type": p.psn_type, "balc": money.format_fen(p.balc),
                "insuplc_admdvs": p.insuplc_admdvs,
            }],
            "filinginfo": [{
                "filing_type": f["filing_type"], "dest_admdvs": f["dest"],
                "begndate": money.format_day(f["begn"]),
                "enddate": None if f["end"] == DAY_OPEN else money.format_day(f["end"]),
                "status": f["status"],
            } for f in p.filings],
        }

    # -- 2206/2207, 2303/2304

    def settle(self, env: dict, now: str) -> dict:
        """2206/2207/2304/2303: the steps of section 7 in their order; each refuses with its code."""
        req = _settle_request(env)
        inst, person, policy = self._settle_parties(env, req)
        results, totals = self._split_lines(env, req)
        cls, red = _qualify(req, person, policy, env["mdtrtarea_admvs"], now)
        p = person if req.commit else _copy_person(person)  # a pre-settlement changes nothing
        roll_year(p, money.day_year(req.day))
        pay = _pay_fund(p, person, policy, req, inst[2], totals["inscp_scp_amt"], red)
        setlinfo = _setlinfo(req, person, p, totals, pay, cls, now)
        setl_id = "S" + env["msgid"]
        if req.commit:
            setlinfo["setl_id"] = setl_id
            self._record(env, req, person, p, setl_id, setlinfo, pay)
        return {
            "setlinfo": fmt_money(setlinfo), "setldetail": _fund_detail(person.insutype, pay),
            "result": [{k: (money.format_fen(v) if k in _ROW_MONEY else v) for k, v in r.items()} for r in results],
        }

    def _settle_parties(self, env: dict, req: SettleRequest) -> tuple[tuple, Person, Policy]:
        """The institution, the person and the policy (E_UNKNOWN_INSTITUTION, E_FORBIDDEN,
        E_UNKNOWN_PERSON, E_MISMATCH, E_NO_POLICY), and no open visit of the same mdtrt_id
        (E_DUPLICATE_VISIT)."""
        inst = self.institutions.get(env["fixmedins_code"])
        if inst is None:
            raise Refused(E_UNKNOWN_INSTITUTION)
        if inst[1] != env["mdtrtarea_admvs"]:
            raise Refused(E_FORBIDDEN, "the institution is not in mdtrtarea_admvs")
        person = self.persons.get(req.psn_no)
        if person is None:
            raise Refused(E_UNKNOWN_PERSON)
        if env["insuplc_admdvs"] != person.insuplc_admdvs or req.insutype != person.insutype:
            raise Refused(E_MISMATCH, "insuplc_admdvs or insutype")
        policy = self.policies.get((person.insuplc_admdvs, person.insutype))
        if policy is None:
            raise Refused(E_NO_POLICY)
        if (env["fixmedins_code"], req.mdtrt_id) in self.open_visits:
            raise Refused(E_DUPLICATE_VISIT)
        return inst, person, policy

    def _split_lines(self, env: dict, req: SettleRequest) -> tuple[list[dict], dict[str, int]]:
        """Section 3 line by line: the limits (E_LIMIT), the catalogue entry in force on the
        line's day, the split; then the lines must add up to medfee_sumamt (E_AMOUNT_MISMATCH).
        Returns the result rows and the four totals (fen)."""
        prov2 = env["mdtrtarea_admvs"][:2]
        results = []
        totals = dict.fromkeys(("fulamt_ownpay_amt", "overlmt_amt", "preselfpay_amt", "inscp_scp_amt"), 0)
        line_sum = 0
        for sn, code, a, c, p, d in req.lines:
            check_line_limits(a, p, c)
            entry = next(
                (e for e in self.catalogue.get((prov2, code), ()) if e.begn <= d <= e.end), None
            )
            r = split_line(a, p, c, entry, req.outpatient)
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
        if line_sum != req.medfee:
            raise Refused(E_AMOUNT_MISMATCH, "medfee_sumamt is not the sum of the lines")
        return results, totals

    def _record(self, env: dict, req: SettleRequest, person: Person, p: Person, setl_id: str,
                setlinfo: dict, pay: dict) -> None:
        """Keep a committed settlement: what it took (for its reversal), the open visit, the row."""
        took = dict(pay["took"], balc=-pay["acct"])
        self.settlements[setl_id] = SettlementRecord(
            setl_id=setl_id, infno=req.infno, fixmedins_code=env["fixmedins_code"], mdtrt_id=req.mdtrt_id,
            psn_no=req.psn_no, insuplc_admdvs=person.insuplc_admdvs, mdtrtarea_admvs=env["mdtrtarea_admvs"],
            year=p.acc_year, setlinfo=setlinfo, took=took, dise_codg=req.dise,
        )
        self.open_visits[(env["fixmedins_code"], req.mdtrt_id)] = setl_id
        self.committed.append(_committed_row(env["fixmedins_code"], person.insuplc_admdvs, setl_id, None, setlinfo, +1))

    # -- 2208/2305

    def reverse(self, env: dict, now: str) -> dict:
        infno = env["infno"]
        inp = env.get("input")
        if not isinstance(inp, dict) or not isinstance(inp.get("data"), dict):
            raise Refused(E_SCHEMA, "input.data")
        data = inp["data"]
        _str(env, "fixmedins_code")
        setl_id = _str(data, "setl_id")
        mdtrt_id = _str(data, "mdtrt_id")
        psn_no = _str(data, "psn_no")
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
        p = self.persons[rec.psn_no]
        p.balc -= rec.took["balc"]
        if p.acc_year == rec.year:
            apply_took(p, {k: v for k, v in rec.took.items() if k != "balc"}, rec.dise_codg, -1)
        rec.reversed = True
        del self.open_visits[(rec.fixmedins_code, rec.mdtrt_id)]
        s = dict(rec.setlinfo)
        for k in ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
                  "act_pay_dedc", "hifp_pay", "hifmi_pay", "hifob_pay", "fund_pay_sumamt", "psn_part_amt",
                  "acct_pay", "psn_cash_pay", "cvlserv_pay", "hifes_pay", "maf_pay", "oth_pay", "hosp_part_amt"):
            s[k] = -s[k]
        s["balc"] = p.balc
        s["setl_id"] = "S" + env["msgid"]
        s["setl_time"] = now
        self.committed.append(_committed_row(rec.fixmedins_code, rec.insuplc_admdvs, s["setl_id"], rec.setl_id, rec.setlinfo, -1, now))
        return {"setlinfo": fmt_money(s)}

    # -- 3201/3202 (section 8)

    def reconciliation(self, env: dict) -> dict:
        """3201: the institution's totals against the committed rows; 3202: the rows (engine.core.reconcile)."""
        infno = env["infno"]
        q = parse_request(infno, env, env.get("input"), {c: (v[1],) for c, v in self.institutions.items()})
        lo, hi = money.format_day(q.begn_day), money.format_day(q.end_day)
        rows = [r for r in self.committed
                if r["fixmedins_code"] == env["fixmedins_code"] and lo <= r["setl_time"][:10] <= hi]
        info = {"stmt_begndate": lo, "stmt_enddate": hi}
        if infno == "3202":
            rows = [r for r in rows if q.insutype in (None, r["insutype"]) and q.clr_type in (None, r["clr_type"])]
            rows.sort(key=lambda r: (r["setl_time"], r["setl_id"]))
            page = rows[(q.page_num - 1) * q.page_size : q.page_num * q.page_size]
            info.update(record_cnt=len(rows), page_num=q.page_num, page_size=q.page_size)
            return {"stmtinfo": info, "stmtdetail": [{
                "setl_id": r["setl_id"], "mdtrt_id": r["mdtrt_id"], "psn_no": r["psn_no"],
                "insuplc_admdvs": r["insuplc_admdvs"], "setl_time": r["setl_time"], "insutype": r["insutype"],
                "clr_type": r["clr_type"], "med_type": r["med_type"],
                "refd_setl_flag": "0" if r["sign"] == 1 else "1", "reversed_setl_id": r["reversed_setl_id"],
                **{k: money.format_fen(r[k]) for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay")},
            } for r in page]}
        fields = ("fixmedins_setl_cnt", "medfee_sumamt", "fund_pay_sumamt", "acct_pay")
        held: dict[tuple[str, str], dict] = {}
        for r in rows:
            h = held.setdefault((r["insutype"], r["clr_type"]), dict.fromkeys(fields, 0))
            h["fixmedins_setl_cnt"] += r["sign"]
            for k in fields[1:]:
                h[k] += r[k]
        groups = [((g.insutype, g.clr_type), dict(zip(fields, g.values())), True) for g in q.groups]
        if q.listed:
            groups += [(k, dict.fromkeys(fields, 0), False) for k in sorted(held) if k not in {g[0] for g in groups}]
        totals, diffs, parts = [], [], []
        for (it, ct), sent, was_sent in groups:
            h = held.get((it, ct), dict.fromkeys(fields, 0))
            text = lambda k, v: str(v) if k == "fixmedins_setl_cnt" else money.format_fen(v)  # noqa: E731
            bad = [k for k in fields if sent[k] != h[k]]
            totals.append({"insutype": it, "clr_type": ct, "stmt_rslt": "1" if bad else "0",
                           **{k: h[k] if k == "fixmedins_setl_cnt" else money.format_fen(h[k]) for k in fields}})
            for k in bad:
                diffs.append({"insutype": it, "clr_type": ct, "field": k, "sent": text(k, sent[k]),
                              "held": text(k, h[k]), "diff": text(k, h[k] - sent[k])})
            if bad:
                parts.append(f"insutype {it} clr_type {ct}{'' if was_sent else ' (not sent)'}: "
                             + ", ".join(f"{k} sent {text(k, sent[k])} held {text(k, h[k])}" for k in bad))
        info["stmt_rslt"] = "1" if diffs else "0"
        info["stmt_rslt_dscr"] = "differs: " + "; ".join(parts) if diffs else f"agrees: {len(totals)} group(s)"
        return {"stmtinfo": info, "stmttotal": totals, "stmtdiff": diffs}


def _committed_row(code: str, insuplc: str, setl_id: str, reversed_id: str | None, setlinfo: dict, sign: int,
                   now: str | None = None) -> dict:
    """A committed settlement (sign 1) or its reversal (sign -1) as 3201/3202 see it; money signed fen."""
    return {
        "fixmedins_code": code, "setl_id": setl_id, "reversed_setl_id": reversed_id, "sign": sign,
        "setl_time": now or setlinfo["setl_time"], "insuplc_admdvs": insuplc, **{
            k: setlinfo[k] for k in ("insutype", "clr_type", "med_type", "mdtrt_id", "psn_no")},
        **{k: sign * setlinfo[k] for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay")},
    }


def _copy_person(p: Person) -> Person:
    q = Person(**{k: getattr(p, k) for k in p.__dataclass_fields__ if k not in ("chronic", "filings")})
    q.chronic = {k: list(v) for k, v in p.chronic.items()}
    q.filings = p.filings
    return q
