"""3201 daily totals and 3202 listing (docs/contract.md section 8), plainly: the reference's own reading.

A query is read into a plain dict, in section 7's order of checks for these
infnos (E_SCHEMA, E_LIMIT, E_UNKNOWN_INSTITUTION, E_FORBIDDEN), and answered
from the reference's list of committed rows (engine.reference.settle.committed_row).
The README's "Reconciliation, clearing and pre-payment" gives the fields and bounds.
"""
from __future__ import annotations

import re

from engine.contract import money
from engine.contract.protocol import E_FORBIDDEN, E_LIMIT, E_SCHEMA, E_UNKNOWN_INSTITUTION, Refused
from engine.reference.settle import field_day, field_money, field_str

RECONCILE_INFNOS = frozenset({"3201", "3202"})
STMT_DAYS_MAX = 366  # days in one 3201
LISTING_DAYS_MAX = 31  # days in one 3202
GROUPS_MAX = 64  # (insutype, clr_type) groups in one 3201
PAGE_SIZE_MAX = 1_000
PAGE_NUM_MAX = 1_000_000
SETL_CNT_MAX = 10**12  # |fixmedins_setl_cnt|
TOTAL_FIELDS = ("fixmedins_setl_cnt", "medfee_sumamt", "fund_pay_sumamt", "acct_pay")

_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,18}")


def _whole(d: dict, k: str, default: int | None = None) -> int:
    """A JSON integer, or a decimal string of one (MessagePack clients send either); E_SCHEMA else."""
    v = d.get(k)
    if v is None and default is not None:
        return default
    if isinstance(v, str) and _WHOLE_NUMBER.fullmatch(v):
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise Refused(E_SCHEMA, f"{k} must be an integer")
    return v


def _days(d: dict) -> tuple[int, int]:
    """stmt_begndate and stmt_enddate: dates YYYY-MM-DD within 2000-2099, in order (E_SCHEMA)."""
    begn, end = field_day(d, "stmt_begndate", money.parse_day), field_day(d, "stmt_enddate", money.parse_day)
    if end < begn:
        raise Refused(E_SCHEMA, "stmt_enddate is before stmt_begndate")
    return begn, end


def read_totals(data: object) -> dict:
    """3201 `input.data`: one group, or a non-empty list of groups with one day range."""
    listed = isinstance(data, list)
    items = data if listed else [data]
    if not items or any(not isinstance(x, dict) for x in items):
        raise Refused(E_SCHEMA, "input.data must be an object or a non-empty list of objects")
    groups: list[dict] = []
    days = None
    for x in items:
        if days is None:
            days = _days(x)
        elif _days(x) != days:
            raise Refused(E_SCHEMA, "the groups of one 3201 must share stmt_begndate and stmt_enddate")
        g = {"insutype": field_str(x, "insutype"), "clr_type": field_str(x, "clr_type"),
             "fixmedins_setl_cnt": _whole(x, "fixmedins_setl_cnt"),
             **{k: field_money(x, k) for k in TOTAL_FIELDS[1:]}}
        if any((h["insutype"], h["clr_type"]) == (g["insutype"], g["clr_type"]) for h in groups):
            raise Refused(E_SCHEMA, f"insutype {g['insutype']} clr_type {g['clr_type']} sent twice")
        groups.append(g)
    if len(groups) > GROUPS_MAX:
        raise Refused(E_LIMIT, f"more than {GROUPS_MAX} groups")
    if days[1] - days[0] + 1 > STMT_DAYS_MAX:
        raise Refused(E_LIMIT, f"more than {STMT_DAYS_MAX} days")
    if any(abs(g["fixmedins_setl_cnt"]) > SETL_CNT_MAX for g in groups):
        raise Refused(E_LIMIT, "fixmedins_setl_cnt outside the limits")
    return {"begn": days[0], "end": days[1], "groups": groups, "listed": listed}


def read_listing(data: object) -> dict:
    """3202 `input.data`: a day range, optional insutype and clr_type, a page (1 and 1000 by default)."""
    if not isinstance(data, dict):
        raise Refused(E_SCHEMA, "input.data must be an object")
    begn, end = _days(data)
    q = {"begn": begn, "end": end, "insutype": field_str(data, "insutype", False),
         "clr_type": field_str(data, "clr_type", False), "page_num": _whole(data, "page_num", 1),
         "page_size": _whole(data, "page_size", PAGE_SIZE_MAX)}
    if q["page_num"] < 1 or q["page_size"] < 1:
        raise Refused(E_SCHEMA, "page_num and page_size must be positive")
    if q["page_size"] > PAGE_SIZE_MAX or q["page_num"] > PAGE_NUM_MAX:
        raise Refused(E_LIMIT, f"page_size at most {PAGE_SIZE_MAX}, page_num at most {PAGE_NUM_MAX}")
    if end - begn + 1 > LISTING_DAYS_MAX:
        raise Refused(E_LIMIT, f"more than {LISTING_DAYS_MAX} days")
    return q


def read_query(env: dict, institutions: dict) -> dict:
    """E_SCHEMA (the envelope, then input.data), E_LIMIT, E_UNKNOWN_INSTITUTION, E_FORBIDDEN."""
    code, admdvs = field_str(env, "fixmedins_code"), field_str(env, "mdtrtarea_admvs")
    inp = env.get("input")
    if not isinstance(inp, dict):
        raise Refused(E_SCHEMA, "input must be an object")
    q = read_totals(inp.get("data")) if env["infno"] == "3201" else read_listing(inp.get("data"))
    inst = institutions.get(code)
    if inst is None:
        raise Refused(E_UNKNOWN_INSTITUTION)
    if inst[1] != admdvs:
        raise Refused(E_FORBIDDEN, "the institution is not in mdtrtarea_admvs")
    return q


def answer(env: dict, institutions: dict, committed: list[dict]) -> dict:
    """3201: the institution's totals against its committed rows; 3202: the rows, a page of them."""
    q = read_query(env, institutions)
    lo, hi = money.format_day(q["begn"]), money.format_day(q["end"])
    rows = [r for r in committed if r["fixmedins_code"] == env["fixmedins_code"] and lo <= r["setl_time"][:10] <= hi]
    info = {"stmt_begndate": lo, "stmt_enddate": hi}
    if env["infno"] == "3202":
        rows = [r for r in rows if q["insutype"] in (None, r["insutype"]) and q["clr_type"] in (None, r["clr_type"])]
        rows.sort(key=lambda r: (r["setl_time"], r["setl_id"]))
        n, size = q["page_num"], q["page_size"]
        info.update(record_cnt=len(rows), page_num=n, page_size=size)
        return {"stmtinfo": info, "stmtdetail": [{
            "setl_id": r["setl_id"], "mdtrt_id": r["mdtrt_id"], "psn_no": r["psn_no"],
            "insuplc_admdvs": r["insuplc_admdvs"], "setl_time": r["setl_time"], "insutype": r["insutype"],
            "clr_type": r["clr_type"], "med_type": r["med_type"],
            "refd_setl_flag": "0" if r["sign"] == 1 else "1", "reversed_setl_id": r["reversed_setl_id"],
            **{k: money.format_fen(r[k]) for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay")},
        } for r in rows[(n - 1) * size : n * size]]}
    held: dict[tuple[str, str], dict] = {}
    for r in rows:
        h = held.setdefault((r["insutype"], r["clr_type"]), dict.fromkeys(TOTAL_FIELDS, 0))
        h["fixmedins_setl_cnt"] += r["sign"]
        for k in TOTAL_FIELDS[1:]:
            h[k] += r[k]
    compared = [((g["insutype"], g["clr_type"]), g, True) for g in q["groups"]]
    if q["listed"]:
        sent = {key for key, _, _ in compared}
        compared += [(key, dict.fromkeys(TOTAL_FIELDS, 0), False) for key in sorted(held) if key not in sent]

    def text(k: str, v: int) -> str:
        return str(v) if k == "fixmedins_setl_cnt" else money.format_fen(v)

    totals, diffs, parts = [], [], []
    for (it, ct), sent_group, was_sent in compared:
        h = held.get((it, ct), dict.fromkeys(TOTAL_FIELDS, 0))
        bad = [k for k in TOTAL_FIELDS if sent_group[k] != h[k]]
        totals.append({"insutype": it, "clr_type": ct, "stmt_rslt": "1" if bad else "0",
                       **{k: h[k] if k == "fixmedins_setl_cnt" else money.format_fen(h[k]) for k in TOTAL_FIELDS}})
        for k in bad:
            diffs.append({"insutype": it, "clr_type": ct, "field": k, "sent": text(k, sent_group[k]),
                          "held": text(k, h[k]), "diff": text(k, h[k] - sent_group[k])})
        if bad:
            parts.append(f"insutype {it} clr_type {ct}{'' if was_sent else ' (not sent)'}: "
                         + ", ".join(f"{k} sent {text(k, sent_group[k])} held {text(k, h[k])}" for k in bad))
    info["stmt_rslt"] = "1" if diffs else "0"
    info["stmt_rslt_dscr"] = "differs: " + "; ".join(parts) if diffs else f"agrees: {len(totals)} group(s)"
    return {"stmtinfo": info, "stmttotal": totals, "stmtdiff": diffs}
