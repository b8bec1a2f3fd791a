"""Sections 3-6 of docs/contract.md, plainly: splitting a fee line, the filing class, the fund payment.

The reference's arithmetic of one settlement, one function per step of the spec,
on dicts and ints (money in fen, ratios in bp). The section 7 steps
(engine.reference.settle) and the step-wise flow (engine.reference.stepwise)
are built from these.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.contract import money
from engine.contract.money import clamp_bp, ext, mulr
from engine.contract.protocol import (
    CANDIDATE_ORDER, CNT_MAX_TEN_THOUSANDTHS, E_AMOUNT_MISMATCH, E_LIMIT, EMERGENCY, FILING_CLASS_OF_TYPE,
    LINE_AMT_MAX_FEN, LOCAL, MED_TYPES_EMERGENCY, MED_TYPES_OUTPATIENT, PRIC_MAX_MICRO, REDUCTION_KEY_OF_CLASS,
    TEMP_FILING_TYPES, UNFILED, WAIVED, Refused,
)
from engine.world.loader import DAY_OPEN, Policy, Tier

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


def copy_person(p: Person) -> Person:
    """A copy whose accumulators a pre-settlement may change; the filings are shared (never changed)."""
    q = Person(**{k: getattr(p, k) for k in p.__dataclass_fields__ if k not in ("chronic", "filings")})
    q.chronic = {k: list(v) for k, v in p.chronic.items()}
    q.filings = p.filings
    return q
