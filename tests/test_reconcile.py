"""Daily reconciliation, 3201 and 3202 (docs/contract.md section 8): compiled engine, store, reference, transports."""
from __future__ import annotations

import copy
import json
import os
import random
from decimal import Decimal

import orjson
import pytest

from conftest import VECTOR_WORLD, VECTORS
from engine.contract import money
from engine.core.engine import Engine, Request
from engine.reference.oracle import ReferenceEngine
from engine.tools.replay import replay_store
from engine.store import open_store
from engine.contract.wire import JSON

REQUESTS = os.path.join(VECTORS, "requests.jsonl")
COMMITTING = ("2207", "2304", "2208", "2305")


@pytest.fixture(scope="module")
def vector_reqs():
    return [orjson.loads(x) for x in open(REQUESTS, "rb") if x.strip()]


@pytest.fixture(scope="module")
def vector_replies(vector_world, vector_reqs):
    return run_compiled(vector_world, vector_reqs)


def run_compiled(world, envs, batch: int = 1024) -> list[dict]:
    eng = Engine(world, clock="inf_time")
    out = []
    for i in range(0, len(envs), batch):
        replies = eng.handle_batch([Request(orjson.dumps(e)) for e in envs[i : i + batch]])
        out += [orjson.loads(JSON.encoder.encode(r)) for r in replies]
    return out


def run_reference(world, envs) -> list[dict]:
    eng = ReferenceEngine(world)
    return [orjson.loads(orjson.dumps(eng.handle(json.loads(orjson.dumps(e), parse_float=str),
                                                 clock=e.get("inf_time")))) for e in envs]


def run_store(tmp_path, envs, parts: int = 1, fold_rows: int = 262_144, batch: int = 1024) -> list[dict]:
    """Through the durable store, in `parts` runs (each a restart: rows of earlier runs come from SQLite)."""
    os.makedirs(tmp_path, exist_ok=True)
    data = str(tmp_path / "data")
    out = []
    cut = [len(envs) * k // parts for k in range(parts + 1)]
    for k in range(parts):
        src, dst = tmp_path / f"in{k}.jsonl", tmp_path / f"out{k}.jsonl"
        with open(src, "wb") as f:
            for e in envs[cut[k] : cut[k + 1]]:
                f.write(orjson.dumps(e) + b"\n")
        store = open_store(data, VECTOR_WORLD, clock="inf_time", fold_rows=fold_rows)
        try:
            replay_store(store, str(src), str(dst), batch_max=batch)
        finally:
            store.close()
        out += [orjson.loads(x) for x in open(dst, "rb")]
    return out


def without_err_msg(replies: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "err_msg"} for r in replies]


def committed_rows(envs, replies) -> list[dict]:
    """Every committed settlement and reversal, once, from the requests and replies alone."""
    seen, by_setl, rows = set(), {}, []
    for q, r in zip(envs, replies):
        if q.get("infno") not in COMMITTING or r["infcode"] != 0:
            continue
        s = r["output"]["setlinfo"]
        if s["setl_id"] in seen:
            continue  # a retry: the journaled reply again
        seen.add(s["setl_id"])
        settle = q["infno"] in ("2207", "2304")
        orig = q if settle else by_setl[q["input"]["data"]["setl_id"]]
        if settle:
            by_setl[s["setl_id"]] = q
        rows.append({"fixmedins_code": orig["fixmedins_code"], "mdtrtarea_admvs": orig["mdtrtarea_admvs"],
                     "day": s["setl_time"][:10], "insutype": s["insutype"], "clr_type": s["clr_type"],
                     "cnt": 1 if settle else -1, "setl_id": s["setl_id"], "setl_time": s["setl_time"],
                     **{k: money.parse_fen(s[k]) for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")}})
    return rows


def totals_from(rows, code, lo, hi) -> dict:
    out: dict = {}
    for r in rows:
        if r["fixmedins_code"] == code and lo <= r["day"] <= hi:
            t = out.setdefault((r["insutype"], r["clr_type"]), [0, 0, 0, 0])
            t[0] += r["cnt"]
            t[1] += r["medfee_sumamt"]
            t[2] += r["fund_pay_sumamt"]
            t[3] += r["acct_pay"]
    return out


def q3201(code, admdvs, msgid, lo, hi, groups: dict, listed=True, inf_time="2026-12-31 23:00:00") -> dict:
    items = [{"stmt_begndate": lo, "stmt_enddate": hi, "insutype": it, "clr_type": ct, "fixmedins_setl_cnt": t[0],
              "medfee_sumamt": money.format_fen(t[1]), "fund_pay_sumamt": money.format_fen(t[2]),
              "acct_pay": money.format_fen(t[3]), "setl_optins": "ignored"} for (it, ct), t in groups.items()]
    return {"infno": "3201", "msgid": msgid, "fixmedins_code": code, "mdtrtarea_admvs": admdvs,
            "inf_time": inf_time, "input": {"data": items if listed else items[0]}}


def q3202(code, admdvs, msgid, lo, hi, inf_time="2026-12-31 23:00:00", **extra) -> dict:
    return {"infno": "3202", "msgid": msgid, "fixmedins_code": code, "mdtrtarea_admvs": admdvs,
            "inf_time": inf_time, "input": {"data": {"stmt_begndate": lo, "stmt_enddate": hi, **extra}}}


def interleaved_stream(reqs, replies, seed: int = 3) -> list[dict]:
    """The vectors with 3201/3202 after many settlements: right after (same batch), for the day so far."""
    rng = random.Random(seed)
    rows = committed_rows(reqs, replies)
    out = []
    for i, q in enumerate(reqs):
        out.append(q)
        if q.get("infno") not in COMMITTING or rng.random() < 0.3:
            continue
        code, adm = q["fixmedins_code"], q["mdtrtarea_admvs"]
        if not isinstance(code, str) or not isinstance(adm, str):
            continue
        day = q["inf_time"][:10]
        # What the replies so far say (a retry of an earlier msgid is in there once).
        so_far = committed_rows(reqs[: i + 1], replies[: i + 1])
        t = totals_from(so_far, code, day, day) or {("310", "11"): [0, 0, 0, 0]}
        if rng.random() < 0.5:  # one field off by a fen or a count off by one
            (it, ct) = rng.choice(sorted(t))
            t[(it, ct)][rng.randrange(4)] += rng.choice((-1, 1))
        out.append(q3201(code, adm, f"R{i}", day, day, t, listed=rng.random() < 0.7, inf_time=q["inf_time"]))
        lo = money.format_day(money.parse_day(day) - rng.randrange(0, 20))
        out.append(q3202(code, adm, f"L{i}", lo, day, inf_time=q["inf_time"], page_size=rng.choice((1, 3, 1000)),
                         page_num=rng.choice((1, 1, 2))))
    assert rows
    return out


def test_compiled_store_and_reference_agree(vector_world, vector_reqs, vector_replies, tmp_path):
    stream = interleaved_stream(vector_reqs, vector_replies)
    assert sum(e["infno"] in ("3201", "3202") for e in stream) > 200
    a = without_err_msg(run_compiled(vector_world, stream))
    b = without_err_msg(run_reference(vector_world, stream))
    assert a == b
    verdicts = [r["output"]["stmtinfo"]["stmt_rslt"] for e, r in zip(stream, a) if e["infno"] == "3201"
                and r["infcode"] == 0]
    n_differ, n_agree = verdicts.count("1"), verdicts.count("0")
    assert n_differ > 20 and n_agree > 20
    assert any(r["output"].get("stmtdetail") for e, r in zip(stream, a) if e["infno"] == "3202")
    # The stream's own 3201s were computed from the replies: an unaltered one agrees.
    assert len(verdicts) > 200
    # The durable store: in small batches with frequent folds (rows read back from SQLite), and across
    # restarts (every row of an earlier run comes from SQLite).
    assert without_err_msg(run_store(tmp_path / "s1", stream, parts=1, fold_rows=16, batch=7)) == a
    assert without_err_msg(run_store(tmp_path / "s2", stream, parts=3)) == a


def test_3201_agrees_with_the_replies_and_names_a_difference(vector_world, vector_reqs, vector_replies):
    rows = committed_rows(vector_reqs, vector_replies)
    insts = sorted({(r["fixmedins_code"], r["mdtrtarea_admvs"]) for r in rows})
    queries = []
    for code, adm in insts:
        for lo, hi in (("2025-12-01", "2026-11-30"), ("2026-03-01", "2026-03-31")):
            t = totals_from(rows, code, lo, hi)
            if t:
                queries.append(q3201(code, adm, f"OK-{code}-{lo}", lo, hi, t))
    got = run_compiled(vector_world, vector_reqs + queries)[len(vector_reqs):]
    assert len(got) >= len(insts)
    for q, r in zip(queries, got):
        assert r["infcode"] == 0 and r["output"]["stmtinfo"]["stmt_rslt"] == "0", r
        assert r["output"]["stmtdiff"] == []
        assert r["output"]["stmtinfo"]["stmt_rslt_dscr"].startswith("agrees")
    # A deliberate difference: one fen less of fund_pay_sumamt and one settlement more in one group,
    # and a group the institution did not send.
    code, adm = insts[0]
    t = totals_from(rows, code, "2025-12-01", "2026-11-30")
    (it, ct), held = sorted(t.items())[0]
    sent = dict(t)
    sent[(it, ct)] = [held[0] + 1, held[1], held[2] - 1, held[3]]
    dropped = sorted(t)[-1] if len(t) > 1 else None
    if dropped:
        del sent[dropped]
    r = run_compiled(vector_world, vector_reqs + [q3201(code, adm, "BAD", "2025-12-01", "2026-11-30", sent)])[-1]
    out = r["output"]
    assert out["stmtinfo"]["stmt_rslt"] == "1"
    want = [
        {"insutype": it, "clr_type": ct, "field": "fixmedins_setl_cnt", "sent": str(held[0] + 1),
         "held": str(held[0]), "diff": "-1"},
        {"insutype": it, "clr_type": ct, "field": "fund_pay_sumamt", "sent": money.format_fen(held[2] - 1),
         "held": money.format_fen(held[2]), "diff": "0.01"},
    ]
    if dropped:
        d = t[dropped]
        for k, f in enumerate(("fixmedins_setl_cnt", "medfee_sumamt", "fund_pay_sumamt", "acct_pay")):
            if d[k]:
                txt = str if k == 0 else money.format_fen
                want.append({"insutype": dropped[0], "clr_type": dropped[1], "field": f, "sent": txt(0),
                             "held": txt(d[k]), "diff": txt(d[k])})
    assert out["stmtdiff"] == want
    dscr = out["stmtinfo"]["stmt_rslt_dscr"]
    assert dscr.startswith(f"differs: insutype {it} clr_type {ct}: fixmedins_setl_cnt sent {held[0] + 1} "
                           f"held {held[0]}, fund_pay_sumamt sent {money.format_fen(held[2] - 1)} "
                           f"held {money.format_fen(held[2])}")
    assert ("(not sent)" in dscr) == bool(dropped)
    by_group = {(x["insutype"], x["clr_type"]): x for x in out["stmttotal"]}
    assert by_group[(it, ct)]["stmt_rslt"] == "1"
    assert by_group[(it, ct)]["fixmedins_setl_cnt"] == held[0]
    assert by_group[(it, ct)]["medfee_sumamt"] == money.format_fen(held[1])


def test_3201_in_the_same_batch_sees_the_settlements_before_it_only(vector_world, vector_reqs, vector_replies):
    rows = committed_rows(vector_reqs, vector_replies)
    k = next(i for i, (q, r) in enumerate(zip(vector_reqs, vector_replies))
             if q["infno"] == "2207" and r["infcode"] == 0)
    q = vector_reqs[k]
    day = vector_replies[k]["output"]["setlinfo"]["setl_time"][:10]
    ask = q3202(q["fixmedins_code"], q["mdtrtarea_admvs"], "L-same", day, day, inf_time=q["inf_time"])
    s = vector_replies[k]["output"]["setlinfo"]
    eng = Engine(vector_world, clock="inf_time")
    # Everything before k in one batch, then [3202, the settlement, 3202] in another.
    eng.handle_batch([Request(orjson.dumps(e)) for e in vector_reqs[:k]])
    before, settled, after = [orjson.loads(JSON.encoder.encode(r)) for r in eng.handle_batch(
        [Request(orjson.dumps(ask)), Request(orjson.dumps(q)), Request(orjson.dumps(dict(ask, msgid="L-2")))])]
    assert settled["infcode"] == 0
    ids_before = [x["setl_id"] for x in before["output"]["stmtdetail"]]
    ids_after = [x["setl_id"] for x in after["output"]["stmtdetail"]]
    assert s["setl_id"] not in ids_before and s["setl_id"] in ids_after
    assert after["output"]["stmtinfo"]["record_cnt"] == before["output"]["stmtinfo"]["record_cnt"] + 1
    row = next(x for x in after["output"]["stmtdetail"] if x["setl_id"] == s["setl_id"])
    assert row["refd_setl_flag"] == "0" and row["reversed_setl_id"] is None
    assert (row["medfee_sumamt"], row["fund_pay_sumamt"], row["acct_pay"]) == (
        s["medfee_sumamt"], s["fund_pay_sumamt"], s["acct_pay"])
    assert len(rows) > k // 2


def test_3202_pages_through_what_3201_totals(vector_world, vector_reqs, vector_replies):
    rows = committed_rows(vector_reqs, vector_replies)
    code, adm = max({(r["fixmedins_code"], r["mdtrtarea_admvs"]) for r in rows},
                    key=lambda k: sum(r["fixmedins_code"] == k[0] for r in rows))
    days = sorted({r["day"] for r in rows if r["fixmedins_code"] == code})
    lo = days[0]
    hi = money.format_day(min(money.parse_day(days[-1]), money.parse_day(lo) + 30))
    whole = q3202(code, adm, "W", lo, hi)
    pages = [q3202(code, adm, f"P{n}", lo, hi, page_num=n, page_size="2") for n in range(1, 40)]
    got = run_compiled(vector_world, vector_reqs + [whole] + pages)[len(vector_reqs):]
    all_rows = got[0]["output"]["stmtdetail"]
    want = sorted((r for r in rows if r["fixmedins_code"] == code and lo <= r["day"] <= hi),
                  key=lambda r: (r["setl_time"], r["setl_id"]))
    assert [x["setl_id"] for x in all_rows] == [r["setl_id"] for r in want] and len(want) >= 2
    paged = [x for r in got[1:] for x in r["output"]["stmtdetail"]]
    assert paged == all_rows
    assert all(r["output"]["stmtinfo"]["record_cnt"] == len(all_rows) for r in got)
    reversals = [x for x in all_rows if x["refd_setl_flag"] == "1"]
    assert all(x["reversed_setl_id"] and x["medfee_sumamt"].startswith("-") or x["medfee_sumamt"] == "0.00"
               for x in reversals)


BASE = {"stmt_begndate": "2026-03-01", "stmt_enddate": "2026-03-31", "insutype": "310", "clr_type": "11",
        "medfee_sumamt": "1.00", "fund_pay_sumamt": 0, "acct_pay": "0", "fixmedins_setl_cnt": 1}


def _with(**kw):
    d = dict(BASE)
    for k, v in kw.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


@pytest.mark.parametrize("infno,env_extra,data,code", [
    ("3201", {}, _with(stmt_begndate="2026-3-01"), "E_SCHEMA"),
    ("3201", {}, _with(stmt_enddate="2026-02-28"), "E_SCHEMA"),
    ("3201", {}, _with(insutype=None), "E_SCHEMA"),
    ("3201", {}, _with(medfee_sumamt="1.001"), "E_SCHEMA"),
    ("3201", {}, _with(medfee_sumamt=1.555), "E_SCHEMA"),
    ("3201", {}, _with(fixmedins_setl_cnt="1.0"), "E_SCHEMA"),
    ("3201", {}, _with(fixmedins_setl_cnt=True), "E_SCHEMA"),
    ("3201", {}, [BASE, BASE], "E_SCHEMA"),
    ("3201", {}, [BASE, _with(clr_type="21", stmt_enddate="2026-03-30")], "E_SCHEMA"),
    ("3201", {}, [], "E_SCHEMA"),
    ("3201", {}, "x", "E_SCHEMA"),
    ("3201", {"fixmedins_code": None}, BASE, "E_SCHEMA"),
    ("3201", {}, _with(stmt_begndate="2025-01-01", stmt_enddate="2026-03-31"), "E_LIMIT"),
    ("3201", {}, [_with(insutype=str(i)) for i in range(65)], "E_LIMIT"),
    ("3201", {"fixmedins_code": "NO-SUCH"}, BASE, "E_UNKNOWN_INSTITUTION"),
    ("3201", {"mdtrtarea_admvs": "110101"}, BASE, "E_FORBIDDEN"),
    ("3202", {}, {"stmt_begndate": "2026-03-01", "stmt_enddate": "2026-04-01"}, "E_LIMIT"),
    ("3202", {}, {"stmt_begndate": "2026-03-01", "stmt_enddate": "2026-03-02", "page_size": 1001}, "E_LIMIT"),
    ("3202", {}, {"stmt_begndate": "2026-03-01", "stmt_enddate": "2026-03-02", "page_num": 0}, "E_SCHEMA"),
    ("3202", {}, {"stmt_begndate": "2026-03-01", "stmt_enddate": "2026-03-02", "insutype": 310}, "E_SCHEMA"),
    ("3202", {}, {"stmt_begndate": "2026-03-01"}, "E_SCHEMA"),
    ("3202", {"fixmedins_code": "NO-SUCH"}, {"stmt_begndate": "2026-03-01", "stmt_enddate": "2026-03-02"},
     "E_UNKNOWN_INSTITUTION"),
])
def test_refusals_are_the_same_on_both_paths(vector_world, vector_reqs, infno, env_extra, data, code):
    q = next(e for e in vector_reqs if e["infno"] == "2207")
    env = {"infno": infno, "msgid": "E1", "fixmedins_code": q["fixmedins_code"],
           "mdtrtarea_admvs": q["mdtrtarea_admvs"], "inf_time": "2026-04-01 08:00:00", "input": {"data": data}}
    for k, v in env_extra.items():
        env[k] = v
    a = run_compiled(vector_world, [env])[0]
    b = run_reference(vector_world, [env])[0]
    assert a["err_code"] == b["err_code"] == code, (a, b)
    assert a["infcode"] == -1 and a["output"] == {}


def test_3201_3202_over_tcp_and_http_and_prepay_in_metrics(tmp_path, vector_reqs, vector_replies, vector_world):
    import http.client

    from test_server import ServerThread, WAIT_S
    from engine.hub.http import HTTP_PATH

    rows = committed_rows(vector_reqs, vector_replies)
    code, adm = rows[0]["fixmedins_code"], rows[0]["mdtrtarea_admvs"]
    t = totals_from(rows, code, "2025-12-01", "2026-11-30")
    asks = [q3201(code, adm, "T1", "2025-12-01", "2026-11-30", t),
            q3202(code, adm, "T2", rows[0]["day"], rows[0]["day"])]
    want = run_compiled(vector_world, vector_reqs + asks)[len(vector_reqs):]
    store = open_store(str(tmp_path / "data"), VECTOR_WORLD, clock="inf_time")
    with ServerThread(store) as srv, srv.client() as c:
        c.pipeline(vector_reqs)
        tcp = c.pipeline(asks)
        conn = http.client.HTTPConnection(*srv.server.http_address, timeout=WAIT_S)
        got_http = []
        for e in asks:
            conn.request("POST", HTTP_PATH, body=orjson.dumps(e), headers={"Content-Type": "application/json"})
            body = conn.getresponse().read()
            assert b'"medfee_sumamt":"' not in body  # money as JSON numbers over HTTP
            got_http.append(json.loads(body, parse_float=Decimal))
        conn.close()
        status, metrics = srv.http_get("/metrics")
    store.close()
    assert want[0]["output"]["stmtinfo"]["stmt_rslt"] == "0"

    def norm(x):  # numbers and decimal strings compare by value
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items() if k not in ("refmsg_time", "respond_time", "err_msg")}
        if isinstance(x, list):
            return [norm(v) for v in x]
        if isinstance(x, (str, int, Decimal)) and not isinstance(x, bool):
            try:
                return Decimal(str(x))
            except ArithmeticError:
                return x
        return x

    for w, a, b in zip(want, tcp, got_http):
        assert norm(w) == norm(a) == norm(b)
    assert status == 200 and b"yidi_prepay_used_fen{insured_prov=" in metrics
    assert b"yidi_prepay_warning_threshold_ratio 0.7" in metrics


def test_reversal_rows_count_on_their_own_day(vector_world, vector_reqs, vector_replies):
    """A reversal is listed and totalled on the day it is made, under its settlement's insutype and clr_type."""
    rows = committed_rows(vector_reqs, vector_replies)
    rev = next(r for r in rows if r["cnt"] == -1)
    orig_id = next(q["input"]["data"]["setl_id"] for q, r in zip(vector_reqs, vector_replies)
                   if q["infno"] in ("2208", "2305") and r["infcode"] == 0
                   and r["output"]["setlinfo"]["setl_id"] == rev["setl_id"])
    ask = q3202(rev["fixmedins_code"], rev["mdtrtarea_admvs"], "RV", rev["day"], rev["day"])
    got = run_compiled(vector_world, vector_reqs + [ask])[-1]["output"]["stmtdetail"]
    row = next(x for x in got if x["setl_id"] == rev["setl_id"])
    assert row["refd_setl_flag"] == "1" and row["reversed_setl_id"] == orig_id
    assert (row["insutype"], row["clr_type"]) == (rev["insutype"], rev["clr_type"])
    assert money.parse_fen(row["medfee_sumamt"]) == rev["medfee_sumamt"] <= 0
    assert copy.deepcopy(row) == row
