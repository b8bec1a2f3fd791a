"""Daily reconciliation (对账): 3201 totals and 3202 listing (docs/contract.md section 8).

An institution checks its books against the hub's. With 3201 it sends its
totals for a day range by `insutype` and `clr_type` (`stmt_begndate`,
`stmt_enddate`, `medfee_sumamt`, `fund_pay_sumamt`, `acct_pay`,
`fixmedins_setl_cnt`: the national interface's names); the hub answers
`stmt_rslt` "0" (agrees) or "1" (differs) and says what differs, group by group
and field by field. With 3202 it asks for what the hub holds, settlement by
settlement.

What the hub holds for an institution and a day range: every settlement and
reversal committed before the request, in the order requests are handled
(earlier requests of the same batch included), whose `setl_time` falls on a
day of the range. A settlement counts +1 with its amounts; a reversal counts -1
with its settlement's amounts negated, on the day it is made and under its
settlement's `insutype` and `clr_type` (the rule section 8 gives for the
clearing period, applied to days). The README lists the fields.

Rows come from the engine's history (engine.core.history), which the engine
feeds with every committed change. Without a store a ReconIndex keeps every row
in RAM (replay, tests). A store's index (engine.store.recon) keeps in RAM only
the rows it has not yet folded into its `medins_time` index and reads older
ones from SQLite, so RAM stays bounded whatever the history.
"""
from __future__ import annotations

import collections
import re
from dataclasses import dataclass

from engine.contract import money
from engine.contract.protocol import (
    E_FORBIDDEN, E_LIMIT, E_SCHEMA, E_UNKNOWN_INSTITUTION, INFNO_LISTING, INFNO_RECONCILE, REQUEST_DAY_MAX,
    REQUEST_DAY_MIN, REQUEST_YEAR_MAX, REQUEST_YEAR_MIN, Refused, required_text,
)
from engine.contract.wire import DecodeError
from engine.core.records import CHANGE_SETTLE

RECONCILE_INFNOS = frozenset({INFNO_RECONCILE, INFNO_LISTING})

# Limits (STYLE.md: a limit on everything).
STMT_DAYS_MAX = 366  # days in one 3201 range
LISTING_DAYS_MAX = 31  # days in one 3202 range
GROUPS_MAX = 64  # (insutype, clr_type) groups in one 3201
PAGE_ROWS_MAX = 1_000  # rows in one 3202 page (its page_size)
PAGE_NUM_MAX = 1_000_000
SETL_CNT_MAX = 10**12  # |fixmedins_setl_cnt|

_INTEGER = re.compile(r"-?[0-9]{1,18}")

RSLT_AGREE, RSLT_DIFFER = "0", "1"
REFD_SETTLE, REFD_REVERSE = "0", "1"  # refd_setl_flag of a 3202 row
TOTAL_FIELDS = ("fixmedins_setl_cnt", "medfee_sumamt", "fund_pay_sumamt", "acct_pay")
MONEY_FIELDS = TOTAL_FIELDS[1:]
# Fields of 3201/3202 replies that hold money: the HTTP gateway writes them as JSON numbers.
REPLY_MONEY_KEYS = frozenset({*MONEY_FIELDS, "psn_cash_pay", "sent", "held", "diff"})


# ---------------------------------------------------------------- rows


@dataclass(slots=True)
class Row:
    """One committed settlement or reversal, as reconciliation sees it (money signed, fen)."""

    seq: int  # the store's journal seq (in RAM without a store: the order of commits)
    setl_id: str
    kind: str  # CHANGE_SETTLE or CHANGE_REVERSE
    reversed_setl_id: str | None
    setl_time: str
    insuplc_admdvs: str
    insutype: str
    clr_type: str
    med_type: str
    mdtrt_id: str
    psn_no: str
    medfee_fen: int
    fund_fen: int
    acct_fen: int
    cash_fen: int

    @property
    def count(self) -> int:
        return 1 if self.kind == CHANGE_SETTLE else -1


def row_of_change(change, seq: int) -> Row:
    """The Row of an engine.core.records.Change (a reversal holds its settlement's amounts negated)."""
    rec = change.settled
    sign = 1 if change.kind == CHANGE_SETTLE else -1
    a, info = rec.amounts, rec.info
    return Row(
        seq, change.setl_id, change.kind, None if sign == 1 else rec.setl_id, change.setl_time,
        rec.insuplc_admdvs, info["insutype"], info["clr_type"], info["med_type"], info["mdtrt_id"],
        info["psn_no"], sign * a["medfee_sumamt"], sign * a["fund_pay_sumamt"], sign * a["acct_pay"],
        sign * a["psn_cash_pay"],
    )


def add_totals(out: dict[tuple[str, str], list[int]], rows) -> None:
    """Add `rows` into out: (insutype, clr_type) -> [count, medfee, fund, acct, rows]."""
    for r in rows:
        t = out.get((r.insutype, r.clr_type))
        if t is None:
            t = out[(r.insutype, r.clr_type)] = [0, 0, 0, 0, 0]
        t[0] += r.count
        t[1] += r.medfee_fen
        t[2] += r.fund_fen
        t[3] += r.acct_fen
        t[4] += 1


def listing_page(rows: list[Row], offset: int, limit: int) -> list[Row]:
    """Rows offset..offset+limit ordered by setl_time then setl_id (section 8's 3202 order)."""
    return sorted(rows, key=lambda r: (r.setl_time, r.setl_id))[offset : offset + limit]


class ReconIndex:
    """An institution's committed rows by time, every one in RAM (module docstring).

    A store keeps only its unfolded rows here and reads the rest from its own
    index (engine.store.recon.StoredReconIndex extends this class).
    """

    def __init__(self, first_seq: int = 1):
        self.next_seq = first_seq  # the seq the next added row gets
        self.by_inst: dict[str, collections.deque[Row]] = {}

    def add(self, change) -> None:
        """Index one committed change; the engine calls it in the order of its changes."""
        row = row_of_change(change, self.next_seq)
        self.next_seq += 1
        rows = self.by_inst.get(change.fixmedins_code)
        if rows is None:
            rows = self.by_inst[change.fixmedins_code] = collections.deque()
        rows.append(row)

    def ram_rows(self, code: str, t_lo: str, t_hi: str, after_seq: int = 0) -> list[Row]:
        """The RAM rows of an institution numbered after after_seq with t_lo <= setl_time < t_hi."""
        return [r for r in self.by_inst.get(code, ()) if r.seq > after_seq and t_lo <= r.setl_time < t_hi]

    def totals(self, code: str, t_lo: str, t_hi: str) -> dict[tuple[str, str], list[int]]:
        """(insutype, clr_type) -> [count, medfee, fund, acct, rows] of the rows with t_lo <= setl_time < t_hi."""
        out: dict[tuple[str, str], list[int]] = {}
        add_totals(out, self.ram_rows(code, t_lo, t_hi))
        return out

    def listing(self, code: str, t_lo: str, t_hi: str, insutype: str | None, clr_type: str | None,
                offset: int, limit: int) -> tuple[int, list[Row]]:
        """(rows in the range, the rows offset..offset+limit) ordered by setl_time then setl_id."""
        rows = [r for r in self.ram_rows(code, t_lo, t_hi) if keeps(r, insutype, clr_type)]
        return len(rows), listing_page(rows, offset, limit)

    def close(self) -> None:
        """Nothing to release in RAM (a store's index closes its connection)."""


def keeps(r: Row, insutype: str | None, clr_type: str | None) -> bool:
    """Whether a 3202's optional insutype and clr_type filters keep row r."""
    return (insutype is None or r.insutype == insutype) and (clr_type is None or r.clr_type == clr_type)


# ---------------------------------------------------------------- requests


@dataclass(slots=True)
class Group:
    """One (insutype, clr_type) line of a 3201: the institution's totals (fen)."""

    insutype: str
    clr_type: str
    setl_cnt: int
    medfee_fen: int
    fund_fen: int
    acct_fen: int

    def values(self) -> tuple[int, int, int, int]:
        return (self.setl_cnt, self.medfee_fen, self.fund_fen, self.acct_fen)


@dataclass(slots=True)
class TotalsQuery:
    begn_day: int
    end_day: int
    groups: list[Group]
    listed: bool  # `data` was a list: groups the hub holds but the list lacks count as differences


@dataclass(slots=True)
class ListingQuery:
    begn_day: int
    end_day: int
    insutype: str | None
    clr_type: str | None
    page_num: int
    page_size: int


_text = required_text


def _parsed(d: dict, k: str, parse) -> int:
    """d[k] through an engine.contract.money parser; a malformed value is E_SCHEMA naming the field."""
    try:
        return parse(d.get(k))
    except money.NumberError as e:
        raise Refused(E_SCHEMA, f"{k}: {e}") from None


def _int(d: dict, k: str, default: int | None = None) -> int:
    """A JSON integer or a decimal string without a fraction (MessagePack clients send either)."""
    v = d.get(k)
    if v is None and default is not None:
        return default
    if isinstance(v, str) and _INTEGER.fullmatch(v):
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise Refused(E_SCHEMA, f"{k} must be an integer")
    return v


def _request_day(value: object) -> int:
    """A date of a request: a date, within the years section 7 (v2) allows."""
    day = money.parse_day(value)
    if not REQUEST_DAY_MIN <= day <= REQUEST_DAY_MAX:
        raise money.NumberError(f"{value} is outside {REQUEST_YEAR_MIN}-{REQUEST_YEAR_MAX}")
    return day


def _range(d: dict) -> tuple[int, int]:
    b, e = _parsed(d, "stmt_begndate", _request_day), _parsed(d, "stmt_enddate", _request_day)
    if e < b:
        raise Refused(E_SCHEMA, "stmt_enddate is before stmt_begndate")
    return b, e


def parse_totals(data: object) -> TotalsQuery:
    """3201 `input.data`: one group (the national form) or a list of groups sharing one day range."""
    listed = isinstance(data, list)
    items = data if listed else [data]
    if not items or not all(isinstance(x, dict) for x in items):
        raise Refused(E_SCHEMA, "input.data must be an object or a non-empty list of objects")
    groups: list[Group] = []
    begn = end = None
    for x in items:
        b, e = _range(x)
        if begn is None:
            begn, end = b, e
        elif (b, e) != (begn, end):
            raise Refused(E_SCHEMA, "every group of one 3201 must have the same stmt_begndate and stmt_enddate")
        g = Group(_text(x, "insutype"), _text(x, "clr_type"), _int(x, "fixmedins_setl_cnt"),
                  _parsed(x, "medfee_sumamt", money.parse_fen), _parsed(x, "fund_pay_sumamt", money.parse_fen),
                  _parsed(x, "acct_pay", money.parse_fen))
        if any((h.insutype, h.clr_type) == (g.insutype, g.clr_type) for h in groups):
            raise Refused(E_SCHEMA, f"insutype {g.insutype} clr_type {g.clr_type} sent twice")
        groups.append(g)
    if len(groups) > GROUPS_MAX:
        raise Refused(E_LIMIT, f"more than {GROUPS_MAX} groups")
    if end - begn + 1 > STMT_DAYS_MAX:
        raise Refused(E_LIMIT, f"more than {STMT_DAYS_MAX} days")
    if any(abs(g.setl_cnt) > SETL_CNT_MAX for g in groups):
        raise Refused(E_LIMIT, "fixmedins_setl_cnt outside the limits")
    return TotalsQuery(begn, end, groups, listed)


def parse_listing(data: object) -> ListingQuery:
    """3202 `input.data`: a day range, optional insutype and clr_type filters, a page."""
    if not isinstance(data, dict):
        raise Refused(E_SCHEMA, "input.data must be an object")
    b, e = _range(data)
    q = ListingQuery(b, e, _text(data, "insutype", False), _text(data, "clr_type", False),
                     _int(data, "page_num", 1), _int(data, "page_size", PAGE_ROWS_MAX))
    if q.page_num < 1 or q.page_size < 1:
        raise Refused(E_SCHEMA, "page_num and page_size must be positive")
    if q.page_size > PAGE_ROWS_MAX or q.page_num > PAGE_NUM_MAX:
        raise Refused(E_LIMIT, f"page_size at most {PAGE_ROWS_MAX}, page_num at most {PAGE_NUM_MAX}")
    if e - b + 1 > LISTING_DAYS_MAX:
        raise Refused(E_LIMIT, f"more than {LISTING_DAYS_MAX} days")
    return q


def parse_request(infno: str, env, decoded_input: object, institutions: dict) -> TotalsQuery | ListingQuery:
    """Section 7's order for 3201/3202: E_SCHEMA, E_LIMIT, E_UNKNOWN_INSTITUTION, E_FORBIDDEN.

    `institutions`: fixmedins_code -> (admdvs, ...). Only an institution's own rows are answered.
    """
    for k in ("fixmedins_code", "mdtrtarea_admvs"):
        v = getattr(env, k) if not isinstance(env, dict) else env.get(k)
        if not isinstance(v, str) or not v:
            raise Refused(E_SCHEMA, f"{k} must be a non-empty string")
    if not isinstance(decoded_input, dict):
        raise Refused(E_SCHEMA, "input must be an object")
    data = decoded_input.get("data")
    q = parse_totals(data) if infno == INFNO_RECONCILE else parse_listing(data)
    code = env.get("fixmedins_code") if isinstance(env, dict) else env.fixmedins_code
    admdvs = env.get("mdtrtarea_admvs") if isinstance(env, dict) else env.mdtrtarea_admvs
    inst = institutions.get(code)
    if inst is None:
        raise Refused(E_UNKNOWN_INSTITUTION)
    if inst[0] != admdvs:
        raise Refused(E_FORBIDDEN, "the institution is not in mdtrtarea_admvs")
    return q


def time_bounds(begn_day: int, end_day: int) -> tuple[str, str]:
    """setl_time bounds of a day range: t_lo <= setl_time < t_hi ('YYYY-MM-DD HH:MM:SS' sorts as text)."""
    return money.format_day(begn_day), money.format_day(end_day + 1)


# ---------------------------------------------------------------- replies


def _count_text(n: int) -> str:
    return str(n)


def _field_text(field: str, v: int) -> str:
    return _count_text(v) if field == "fixmedins_setl_cnt" else money.format_fen(v)


def totals_output(q: TotalsQuery, held: dict[tuple[str, str], list[int]]) -> dict:
    """The 3201 reply's output: stmtinfo (the verdict), stmttotal (what the hub holds), stmtdiff."""
    compared: list[tuple[str, str, tuple, bool]] = [
        (g.insutype, g.clr_type, g.values(), True) for g in q.groups
    ]
    if q.listed:
        sent = {(g.insutype, g.clr_type) for g in q.groups}
        compared += [(it, ct, (0, 0, 0, 0), False) for (it, ct) in sorted(held) if (it, ct) not in sent]
    totals, diffs, parts = [], [], []
    for it, ct, sent_vals, was_sent in compared:
        h = held.get((it, ct), [0, 0, 0, 0, 0])
        held_vals = tuple(h[:4])
        differing = [k for k in range(4) if sent_vals[k] != held_vals[k]]
        totals.append({
            "insutype": it, "clr_type": ct, "stmt_rslt": RSLT_DIFFER if differing else RSLT_AGREE,
            "fixmedins_setl_cnt": held_vals[0], "medfee_sumamt": money.format_fen(held_vals[1]),
            "fund_pay_sumamt": money.format_fen(held_vals[2]), "acct_pay": money.format_fen(held_vals[3]),
        })
        if not differing:
            continue
        words = []
        for k in differing:
            f = TOTAL_FIELDS[k]
            s, hv = _field_text(f, sent_vals[k]), _field_text(f, held_vals[k])
            diffs.append({"insutype": it, "clr_type": ct, "field": f, "sent": s, "held": hv,
                          "diff": _field_text(f, held_vals[k] - sent_vals[k])})
            words.append(f"{f} sent {s} held {hv}")
        parts.append(f"insutype {it} clr_type {ct}{'' if was_sent else ' (not sent)'}: " + ", ".join(words))
    rslt = RSLT_DIFFER if diffs else RSLT_AGREE
    dscr = ("differs: " + "; ".join(parts)) if diffs else f"agrees: {len(totals)} group(s)"
    return {
        "stmtinfo": {
            "stmt_begndate": money.format_day(q.begn_day), "stmt_enddate": money.format_day(q.end_day),
            "stmt_rslt": rslt, "stmt_rslt_dscr": dscr,
        },
        "stmttotal": totals,
        "stmtdiff": diffs,
    }


def detail_row(r: Row) -> dict:
    return {
        "setl_id": r.setl_id, "mdtrt_id": r.mdtrt_id, "psn_no": r.psn_no, "insuplc_admdvs": r.insuplc_admdvs,
        "setl_time": r.setl_time, "insutype": r.insutype, "clr_type": r.clr_type, "med_type": r.med_type,
        "refd_setl_flag": REFD_SETTLE if r.kind == CHANGE_SETTLE else REFD_REVERSE,
        "reversed_setl_id": r.reversed_setl_id,
        "medfee_sumamt": money.format_fen(r.medfee_fen), "fund_pay_sumamt": money.format_fen(r.fund_fen),
        "acct_pay": money.format_fen(r.acct_fen), "psn_cash_pay": money.format_fen(r.cash_fen),
    }


def listing_output(q: ListingQuery, total: int, rows: list[Row]) -> dict:
    return {
        "stmtinfo": {
            "stmt_begndate": money.format_day(q.begn_day), "stmt_enddate": money.format_day(q.end_day),
            "record_cnt": total, "page_num": q.page_num, "page_size": q.page_size,
        },
        "stmtdetail": [detail_row(r) for r in rows],
    }


def answer(infno: str, env, codec, institutions: dict, index) -> dict:
    """The output of a 3201 or 3202 (raises Refused); the engine's entry point.

    index: the history's rows (engine.core.history.ReconRows: a ReconIndex or a store's).
    """
    try:
        inp = codec.generic.decode(env.input)
    except DecodeError as e:
        raise Refused(E_SCHEMA, f"input: {e}") from None
    q = parse_request(infno, env, inp, institutions)
    t_lo, t_hi = time_bounds(q.begn_day, q.end_day)
    if isinstance(q, TotalsQuery):
        return totals_output(q, index.totals(env.fixmedins_code, t_lo, t_hi))
    total, rows = index.listing(env.fixmedins_code, t_lo, t_hi, q.insutype, q.clr_type,
                                (q.page_num - 1) * q.page_size, q.page_size)
    return listing_output(q, total, rows)


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
