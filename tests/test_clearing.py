"""Monthly clearing and pre-payment (docs/contract.md section 8) through `yidi replay --data` and `yidi clear`."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import ROOT, VECTOR_WORLD, VECTORS
from pg_fixtures import STORES, store_at, store_flag
from engine.clearing import clearing
from engine.clearing.clearing import PairRow
from engine.clearing.report import prov_label

CLEARING = os.path.join(VECTORS, "clearing")
PERIODS = sorted({f.split("-", 1)[1][:-4] for f in os.listdir(CLEARING) if f.endswith(".csv")})
REQUESTS = os.path.join(VECTORS, "requests.jsonl")


def yidi(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def replay(data_dir, requests_path, out_path) -> list[dict]:
    yidi("replay", "--world", VECTOR_WORLD, "--in", str(requests_path), "--out", str(out_path),
         *store_flag(str(data_dir)))
    return [orjson.loads(x) for x in open(out_path, "rb")]


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def store_state(data_dir) -> list:
    """What a close may change in the store: the closed periods, the meta, the journal's size."""
    if str(data_dir).startswith("postgresql://"):
        conn = clearing.open_db(str(data_dir))
        try:
            return [[tuple(r) for r in conn.execute(q).fetchall()] for q in (
                "SELECT * FROM closed_period ORDER BY period", "SELECT * FROM meta ORDER BY key",
                "SELECT COUNT(*), MAX(seq) FROM journal")]
        finally:
            conn.close()
    conn = sqlite3.connect(f"file:{os.path.join(data_dir, 'yidi.sqlite3')}?mode=ro", uri=True)
    try:
        return [conn.execute("SELECT * FROM closed_period ORDER BY period").fetchall(),
                conn.execute("SELECT * FROM meta ORDER BY key").fetchall(),
                conn.execute("SELECT COUNT(*), MAX(seq) FROM journal").fetchall()]
    finally:
        conn.close()


def write_jsonl(path, envs) -> None:
    with open(path, "wb") as f:
        for e in envs:
            f.write(orjson.dumps(e) + b"\n")


@pytest.fixture(scope="module")
def vector_store(tmp_path_factory):
    """The public requests replayed into a kept store (not closed: each test copies it)."""
    d = tmp_path_factory.mktemp("vectors")
    replies = replay(d / "data", REQUESTS, d / "replies.jsonl")
    return d / "data", replies


def copy_store(src, dst) -> str:
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


@pytest.mark.parametrize("kind", STORES)
def test_vector_periods_byte_for_byte_and_closing_twice(vector_store, tmp_path, kind):
    """The files of each period equal the published ones (the embedded store's), on either store."""
    with store_at(kind, tmp_path) as where:
        if kind == "sqlite":
            where = copy_store(vector_store[0], tmp_path / "data")
        else:
            replay(where, REQUESTS, tmp_path / "replies.jsonl")
        _periods_byte_for_byte(where, tmp_path)


def _periods_byte_for_byte(data: str, tmp_path) -> None:
    first = {}
    for p in PERIODS:
        r = yidi("clear", *store_flag(data), "--period", p, "--out", str(tmp_path / "out1"))
        assert f"period {p} closed" in r.stderr
        for kind in ("statement", "netting"):
            got = read(tmp_path / "out1" / f"{kind}-{p}.csv")
            assert got == read(os.path.join(CLEARING, f"{kind}-{p}.csv")), f"{kind}-{p}.csv differs"
        for name in os.listdir(tmp_path / "out1"):
            first[name] = read(tmp_path / "out1" / name)
    before = store_state(data)
    for p in reversed(PERIODS):  # again, in another order, into another folder
        r = yidi("clear", *store_flag(data), "--period", p, "--out", str(tmp_path / "out2"))
        assert "already closed" in r.stderr
    assert store_state(data) == before
    again = {name: read(tmp_path / "out2" / name) for name in os.listdir(tmp_path / "out2")}
    assert again == first and len(first) == 3 * len(PERIODS)


def statement_rows(path) -> list[PairRow]:
    rows = []
    for line in read(path).decode().splitlines()[1:]:
        ins, trt, cnt, medfee, fund, acct, clr = line.split(",")
        f = clearing.money.parse_fen
        r = PairRow(ins, trt, int(cnt), f(medfee), f(fund), f(acct))
        assert r.clear_fen == f(clr)
        rows.append(r)
    return rows


def netting_rows(path) -> list[tuple[str, str, int]]:
    out = []
    for line in read(path).decode().splitlines()[1:]:
        a, b, amt = line.split(",")
        out.append((a, b, clearing.money.parse_fen(amt)))
    return out


@pytest.mark.parametrize("period", PERIODS)
def test_netting_conserves_money_on_the_vectors(period):
    """Each pair's net flow is the difference of its two statement directions; nothing else moves."""
    rows = statement_rows(os.path.join(CLEARING, f"statement-{period}.csv"))
    net = netting_rows(os.path.join(CLEARING, f"netting-{period}.csv"))
    owed = {(r.insured, r.treatment): r.clear_fen for r in rows}
    want = {}
    for a, b in {tuple(sorted(k)) for k in owed}:
        d = owed.get((a, b), 0) - owed.get((b, a), 0)
        if d:
            want[(a, b) if d > 0 else (b, a)] = abs(d)
    assert {(a, b): amt for a, b, amt in net} == want
    assert all(amt > 0 for _, _, amt in net)
    assert net == sorted(net)
    assert [(n.payer, n.payee, n.net_fen) for n in clearing.netting(rows)] == net


@given(st.lists(st.tuples(st.sampled_from(["110000", "120000", "430000", "440000", "650000"]),
                          st.sampled_from(["110000", "120000", "430000", "440000", "650000"]),
                          st.integers(-10**9, 10**9), st.integers(-10**9, 10**9)), max_size=30))
def test_netting_conserves_money_property(pairs):
    rows = {}
    for a, b, fund, acct in pairs:
        if a != b:
            rows.setdefault((a, b), PairRow(a, b)).add(1, fund + acct, fund, acct)
    rows = [rows[k] for k in sorted(rows)]
    net = clearing.netting(rows)
    assert all(n.net_fen > 0 and n.payer != n.payee for n in net)
    assert len({frozenset((n.payer, n.payee)) for n in net}) == len(net)
    for n in net:  # the net flow of a pair is the difference of its two directions
        owed = {(r.insured, r.treatment): r.clear_fen for r in rows}
        assert owed.get((n.payer, n.payee), 0) - owed.get((n.payee, n.payer), 0) == n.net_fen
    pos = clearing.positions(rows)
    flows: dict[str, int] = {}
    for n in net:
        flows[n.payee] = flows.get(n.payee, 0) + n.net_fen
        flows[n.payer] = flows.get(n.payer, 0) - n.net_fen
    assert {p: v for p, v in pos.items() if v} == {p: v for p, v in flows.items() if v}
    assert sum(flows.values()) == 0


def _settled(reqs, replies):
    """(request, reply) of every successful settlement, by setl_id."""
    return {r["output"]["setlinfo"]["setl_id"]: (q, r) for q, r in zip(reqs, replies)
            if q["infno"] in ("2207", "2304") and r["infcode"] == 0}


def _reversal_of(q: dict, reply: dict, msgid: str, inf_time: str) -> dict:
    s = reply["output"]["setlinfo"]
    return {
        "infno": "2208" if q["infno"] == "2207" else "2305", "msgid": msgid, "inf_time": inf_time,
        "mdtrtarea_admvs": q["mdtrtarea_admvs"], "insuplc_admdvs": q["insuplc_admdvs"],
        "fixmedins_code": q["fixmedins_code"],
        "input": {"data": {"setl_id": s["setl_id"], "mdtrt_id": s["mdtrt_id"], "psn_no": s["psn_no"]}},
    }


def test_a_reversal_after_its_period_closed_counts_where_it_is_made(vector_store, tmp_path):
    data = copy_store(vector_store[0], tmp_path / "data")
    reqs = [orjson.loads(x) for x in open(REQUESTS, "rb")]
    replies = vector_store[1]
    settled = _settled(reqs, replies)
    already = {q["input"]["data"]["setl_id"] for q, r in zip(reqs, replies)
               if q["infno"] in ("2208", "2305") and r["infcode"] == 0}
    # A cross-province settlement of 2026-03 with money, still in force.
    sid, (q, r) = next((k, v) for k, v in settled.items() if k not in already
                       and v[1]["output"]["setlinfo"]["setl_time"].startswith("2026-03")
                       and v[0]["insuplc_admdvs"][:2] != v[0]["mdtrtarea_admvs"][:2]
                       and v[1]["output"]["setlinfo"]["fund_pay_sumamt"] not in (0, "0.00"))
    for p in ("2025-12", "2026-03"):  # in order: an earlier period still open would refuse 2026-03
        yidi("clear", "--data", data, "--period", p, "--out", str(tmp_path / "a"))
    write_jsonl(tmp_path / "more.jsonl", [_reversal_of(q, r, "LATE-REV-1", "2026-12-05 10:00:00")])
    rev = replay(data, tmp_path / "more.jsonl", tmp_path / "more-replies.jsonl")[0]
    assert rev["infcode"] == 0, rev
    # 2026-03 stays as it was closed; the reversal is in 2026-12.
    yidi("clear", "--data", data, "--period", "2026-03", "--out", str(tmp_path / "b"))
    for kind in ("statement", "netting"):
        assert read(tmp_path / "b" / f"{kind}-2026-03.csv") == read(os.path.join(CLEARING, f"{kind}-2026-03.csv"))
    # 2026-06 to 2026-11 are still open, and 2026-12 may not have ended on this machine's clock.
    yidi("clear", "--data", data, "--period", "2026-12", "--out", str(tmp_path / "c"), "--force")
    ins, trt = q["insuplc_admdvs"][:2] + "0000", q["mdtrtarea_admvs"][:2] + "0000"
    s = r["output"]["setlinfo"]
    fund, acct = clearing.money.parse_fen(s["fund_pay_sumamt"]), clearing.money.parse_fen(s["acct_pay"])
    f = clearing.money.format_fen
    assert read(tmp_path / "c" / "statement-2026-12.csv").decode().splitlines() == [
        clearing.STATEMENT_HEADER,
        f"{ins},{trt},-1,{f(-clearing.money.parse_fen(s['medfee_sumamt']))},{f(-fund)},{f(-acct)},{f(-fund - acct)}",
    ]
    # The treatment province gives the money back.
    assert read(tmp_path / "c" / "netting-2026-12.csv").decode().splitlines() == [
        clearing.NETTING_HEADER, f"{trt},{ins},{f(fund + acct)}"]


def test_a_settlement_late_for_its_closed_month_counts_in_the_next_open_one(vector_store, tmp_path):
    """Only a clock that goes back makes one (a replay here): 2026-03 is closed, so it counts in 2026-04."""
    data = copy_store(vector_store[0], tmp_path / "data")
    reqs = [orjson.loads(x) for x in open(REQUESTS, "rb")]
    settled = _settled(reqs, vector_store[1])
    already = {q["input"]["data"]["setl_id"] for q, r in zip(reqs, vector_store[1])
               if q["infno"] in ("2208", "2305") and r["infcode"] == 0}
    sid, (q, r) = next((k, v) for k, v in settled.items() if k not in already
                       and v[1]["output"]["setlinfo"]["setl_time"].startswith("2026-03")
                       and v[0]["insuplc_admdvs"][:2] != v[0]["mdtrtarea_admvs"][:2])
    for p in ("2025-12", "2026-03", "2026-04"):
        yidi("clear", "--data", data, "--period", p, "--out", str(tmp_path / "a"))
    assert read(tmp_path / "a" / "statement-2026-04.csv").decode() == clearing.STATEMENT_HEADER + "\n"
    # Reverse it, then settle the same visit again with a new msgid, both "in March".
    again = dict(q, msgid=q["msgid"] + "-again", inf_time="2026-03-31 23:00:00")
    write_jsonl(tmp_path / "more.jsonl", [_reversal_of(q, r, "LATE-REV-2", "2026-03-31 22:00:00"), again])
    out = replay(data, tmp_path / "more.jsonl", tmp_path / "more-replies.jsonl")
    assert [x["infcode"] for x in out] == [0, 0], out
    # 2026-03 and 2026-04 were closed before both: they count in 2026-05, and cancel out there.
    yidi("clear", "--data", data, "--period", "2026-05", "--out", str(tmp_path / "b"))
    lines = read(tmp_path / "b" / "statement-2026-05.csv").decode().splitlines()
    ins, trt = q["insuplc_admdvs"][:2] + "0000", q["mdtrtarea_admvs"][:2] + "0000"
    assert lines == [clearing.STATEMENT_HEADER, f"{ins},{trt},0,0.00,0.00,0.00,0.00"]
    assert read(tmp_path / "b" / "netting-2026-05.csv").decode() == clearing.NETTING_HEADER + "\n"
    for p in ("2026-03", "2026-04"):
        yidi("clear", "--data", data, "--period", p, "--out", str(tmp_path / "c"))
        assert read(tmp_path / "c" / f"statement-{p}.csv") == read(tmp_path / "a" / f"statement-{p}.csv")


def _committed(reqs, replies) -> list[tuple[dict, dict, dict]]:
    """(request, reply, the settlement's request) of every committed settlement and reversal, once each
    (a retry answers the journaled reply again: it commits nothing)."""
    seen, by_setl, out = set(), {}, []
    for q, r in zip(reqs, replies):
        if r["infcode"] != 0 or q["infno"] not in ("2207", "2304", "2208", "2305"):
            continue
        s = r["output"]["setlinfo"]
        if s["setl_id"] in seen:
            continue
        seen.add(s["setl_id"])
        if q["infno"] in ("2207", "2304"):
            by_setl[s["setl_id"]] = q
            out.append((q, r, q))
        else:
            out.append((q, r, by_setl[q["input"]["data"]["setl_id"]]))
    return out


def _clear_amt_by_insured(reqs, replies) -> dict[str, int]:
    """What the replies say each insured province was charged across provinces (reversals subtracted)."""
    f = clearing.money.parse_fen
    used: dict[str, int] = {}
    for q, r, orig in _committed(reqs, replies):
        if orig["insuplc_admdvs"][:2] == orig["mdtrtarea_admvs"][:2]:
            continue
        s = r["output"]["setlinfo"]
        p = orig["insuplc_admdvs"][:2] + "0000"
        used[p] = used.get(p, 0) + f(s["fund_pay_sumamt"]) + f(s["acct_pay"])
    return used


def test_prepay_usage_since_the_last_closed_period(vector_store, tmp_path):
    data = copy_store(vector_store[0], tmp_path / "data")
    reqs = [orjson.loads(x) for x in open(REQUESTS, "rb")]
    used = _clear_amt_by_insured(reqs, vector_store[1])
    prepay = clearing.load_prepay(VECTOR_WORLD)
    got = clearing.prepay_usage(data, world_dir=VECTOR_WORLD, warn_bp=5000)
    assert {u.prov: u.used_fen for u in got if u.used_fen} == {p: v for p, v in used.items() if v}
    for u in got:
        assert u.prepay_fen == prepay.get(u.prov, 0)
        assert u.ratio_bp == u.used_fen * 10_000 // u.prepay_fen
        assert u.warning == (u.ratio_bp >= 5000)
    assert any(u.warning for u in got) and not all(u.warning for u in got)
    # The default threshold is 70 %; the store's own world is found without --world.
    assert [u.warning for u in clearing.prepay_usage(data)] == [u.ratio_bp >= 7000 for u in got]
    # A live monitor follows commits incrementally and closings by summing again.
    mon = clearing.PrepayMonitor(data, prepay, 5000)
    assert mon.refresh() == got
    for p in PERIODS[:-1]:
        yidi("clear", "--data", data, "--period", p, "--out", str(tmp_path / "out"))
    last = [x for x in statement_rows(os.path.join(CLEARING, f"statement-{PERIODS[-1]}.csv"))]
    want = {}
    for r in last:
        want[r.insured] = want.get(r.insured, 0) + r.clear_fen
    assert {u.prov: u.used_fen for u in mon.refresh() if u.used_fen} == {p: v for p, v in want.items() if v}
    # A new cross-province settlement after the last period: added to its insured province.
    settled = _settled(reqs, vector_store[1])
    sid, (q, r) = next((k, v) for k, v in settled.items() if v[0]["insuplc_admdvs"][:2] != v[0]["mdtrtarea_admvs"][:2]
                       and v[1]["output"]["setlinfo"]["fund_pay_sumamt"] not in (0, "0.00"))
    env = dict(q, msgid="NEW-1", inf_time="2026-12-01 09:00:00")
    env["input"] = json.loads(json.dumps(q["input"]))
    env["input"]["data"]["mdtrt_id"] = "NEW-VISIT-1"
    write_jsonl(tmp_path / "more.jsonl", [env])
    new = replay(data, tmp_path / "more.jsonl", tmp_path / "more-replies.jsonl")[0]
    assert new["infcode"] == 0, new
    s = new["output"]["setlinfo"]
    ins = q["insuplc_admdvs"][:2] + "0000"
    want[ins] = want.get(ins, 0) + clearing.money.parse_fen(s["fund_pay_sumamt"]) + clearing.money.parse_fen(s["acct_pay"])
    assert {u.prov: u.used_fen for u in mon.refresh() if u.used_fen} == {p: v for p, v in want.items() if v}
    yidi("clear", "--data", data, "--period", PERIODS[-1], "--out", str(tmp_path / "out"))
    assert {u.prov: u.used_fen for u in mon.refresh() if u.used_fen} == {ins: want[ins] - sum(
        r.clear_fen for r in last if r.insured == ins)}
    mon.close()


def test_prepay_gauges_in_metrics(vector_store, tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    data = copy_store(vector_store[0], tmp_path / "data")
    mon = clearing.PrepayMonitor(data, clearing.load_prepay(VECTOR_WORLD), clearing.parse_ratio_bp("5%"))
    reg = CollectorRegistry()
    reg.register(clearing.PrepayCollector(mon))
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(reg).decode()
    got = {(s.name, s.labels.get("insured_prov")): s.value
           for fam in text_string_to_metric_families(text) for s in fam.samples}
    rows = mon.refresh()
    assert rows and any(u.warning for u in rows)
    for u in rows:
        assert got[("yidi_prepay_used_fen", u.prov)] == u.used_fen  # integral fen: exact in a double
        assert got[("yidi_prepay_deposit_fen", u.prov)] == u.prepay_fen
        assert got[("yidi_prepay_warning", u.prov)] == (1 if u.warning else 0)
        assert got[("yidi_prepay_usage_ratio", u.prov)] == u.ratio_bp / 10_000
    assert got[("yidi_prepay_warning_threshold_ratio", None)] == 0.05
    mon.close()


def test_report_shows_matrix_flows_and_prepay_warnings(vector_store, tmp_path):
    data = copy_store(vector_store[0], tmp_path / "data")
    yidi("clear", "--data", data, "--period", "2026-06", "--out", str(tmp_path / "o"), "--prepay-warn", "0.02",
         "--force")  # 2025-12 and 2026-03 are still open
    page = read(tmp_path / "o" / "report-2026-06.html").decode()
    for r in statement_rows(os.path.join(CLEARING, "statement-2026-06.csv")):
        assert f">{clearing.money.format_fen(r.clear_fen)}</td>" in page
    for a, b, amt in netting_rows(os.path.join(CLEARING, "netting-2026-06.csv")):
        assert f"<td class=l>{prov_label(a)}</td><td class=l>{prov_label(b)}</td>" \
               f"<td>{clearing.money.format_fen(amt)}</td>" in page
    assert "Warning at 2 %" in page and 'class="warn"' in page and "pre-payment warning(s)." in page
    # The threshold belongs to the close: asking again with another changes nothing.
    yidi("clear", "--data", data, "--period", "2026-06", "--out", str(tmp_path / "p"), "--prepay-warn", "0.99")
    assert read(tmp_path / "p" / "report-2026-06.html").decode() == page


def test_clear_refuses_clearly(tmp_path):
    for args, msg in (
        (["--data", str(tmp_path), "--period", "2026-03"], "no store"),
        (["--data", str(tmp_path), "--period", "2026-3"], "YYYY-MM"),
    ):
        r = subprocess.run([sys.executable, "-m", "engine.cli", "clear", *args, "--out", str(tmp_path / "o")],
                           cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    with pytest.raises(clearing.ClearingError, match="YYYY-MM"):
        clearing.close(None, "2026-13")
    assert clearing.parse_ratio_bp("70%") == clearing.parse_ratio_bp("0.70") == 7000
    with pytest.raises(clearing.ClearingError):
        clearing.parse_ratio_bp("1.5")


# ---------------------------------------------------------------- closing safely


def yidi_refused(*args: str) -> str:
    """Run `yidi` expecting a refusal: exit 2 and one line on stderr, no traceback; that line."""
    r = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1 and not r.stdout, r.stderr
    return r.stderr.strip()


def _month(now: datetime.datetime, ahead: int) -> str:
    m = now.year * 12 + now.month - 1 + ahead
    return f"{m // 12:04d}-{m % 12 + 1:02d}"


def test_a_period_not_ended_on_the_clock_is_refused_unless_forced(vector_store, tmp_path):
    data = copy_store(vector_store[0], tmp_path / "data")
    for p in PERIODS:  # every period with rows closed, in order: only the clock can refuse now
        yidi("clear", "--data", data, "--period", p, "--out", str(tmp_path / "o"))
    before = store_state(data)
    now = datetime.datetime.now()
    for p in (_month(now, 0), _month(now, 1)):
        line = yidi_refused("clear", "--data", data, "--period", p, "--out", str(tmp_path / p))
        assert line.startswith(f"yidi: period {p} not closed: it has not ended on this machine's clock"), line
        assert "the journal's latest setl_time is 2026-11-20 12:00:00" in line and "--force" in line, line
        assert store_state(data) == before and not os.path.exists(tmp_path / p)
    # Forced: closed, and the close keeps what it overrode (its report says so, again and again).
    p = _month(now, 0)
    r = yidi("clear", "--data", data, "--period", p, "--out", str(tmp_path / "f1"), "--force")
    assert f"period {p} closed with --force, overriding: it has not ended" in r.stderr
    page = read(tmp_path / "f1" / f"report-{p}.html")
    assert b"Closed with --force, overriding: it has not ended" in page
    r = yidi("clear", "--data", data, "--period", p, "--out", str(tmp_path / "f2"))  # closed: never refused
    assert "already closed" in r.stderr and read(tmp_path / "f2" / f"report-{p}.html") == page


def test_the_clock_rule_at_a_month_boundary_and_a_journal_ahead_of_the_clock(vector_store, tmp_path):
    data = copy_store(vector_store[0], tmp_path / "data")
    out = str(tmp_path / "o")
    for p in PERIODS[:-1]:
        clearing.clear(data, p, out, now=datetime.datetime(2026, 12, 1))
    before = store_state(data)
    with pytest.raises(clearing.ClearingRefused, match=r"2026-11 not closed: it has not ended .*now 2026-11-30 23:59:59"):
        clearing.clear(data, "2026-11", out, now=datetime.datetime(2026, 11, 30, 23, 59, 59))
    # A clock behind the journal (a replay of times ahead of it, or a clock set back) is named.
    with pytest.raises(clearing.ClearingRefused, match="latest setl_time is 2026-11-20 12:00:00, ahead of this clock"):
        clearing.clear(data, "2026-11", out, now=datetime.datetime(2026, 10, 2))
    assert store_state(data) == before
    r = clearing.clear(data, "2026-11", out, now=datetime.datetime(2026, 12, 1))
    assert r.closing.new and not r.closing.forced and not r.refusal


def test_a_period_after_an_open_one_is_refused_and_names_it(vector_store, tmp_path):
    data = copy_store(vector_store[0], tmp_path / "data")
    before = store_state(data)
    line = yidi_refused("clear", "--data", data, "--period", "2026-06", "--out", str(tmp_path / "o"))
    assert line == ("yidi: period 2026-06 not closed: earlier periods still hold cross-province rows not cleared: "
                    "2025-12 (1 row), 2026-03 (30 rows); a row stays in its own period until that is closed, so "
                    "closing 2026-06 first clears none of them: close 2025-12 first; --force closes it anyway")
    assert store_state(data) == before
    # A late row (its month closed before it was committed) is activity of the period it counts in.
    for p in ("2025-12", "2026-03", "2026-04"):
        yidi("clear", "--data", data, "--period", p, "--out", str(tmp_path / "o"))
    reqs = [orjson.loads(x) for x in open(REQUESTS, "rb")]
    settled = _settled(reqs, vector_store[1])
    sid, (q, r) = next((k, v) for k, v in settled.items()
                       if v[1]["output"]["setlinfo"]["setl_time"].startswith("2026-03")
                       and v[0]["insuplc_admdvs"][:2] != v[0]["mdtrtarea_admvs"][:2])
    env = dict(q, msgid="LATE-1", inf_time="2026-03-30 09:00:00")
    env["input"] = json.loads(json.dumps(q["input"]))
    env["input"]["data"]["mdtrt_id"] = "LATE-VISIT-1"
    write_jsonl(tmp_path / "more.jsonl", [env])
    assert replay(data, tmp_path / "more.jsonl", tmp_path / "more-replies.jsonl")[0]["infcode"] == 0
    line = yidi_refused("clear", "--data", data, "--period", "2026-06", "--out", str(tmp_path / "o"))
    assert "not cleared: 2026-05 (1 row); " in line and "close 2026-05 first" in line, line
    yidi("clear", "--data", data, "--period", "2026-05", "--out", str(tmp_path / "o"))
    r = yidi("clear", "--data", data, "--period", "2026-06", "--out", str(tmp_path / "o"))
    assert "period 2026-06 closed:" in r.stderr
    assert read(tmp_path / "o" / "statement-2026-06.csv") == read(os.path.join(CLEARING, "statement-2026-06.csv"))


def test_a_dry_run_writes_nothing_to_the_store(vector_store, tmp_path):
    data = copy_store(vector_store[0], tmp_path / "data")
    before = store_state(data)
    r = yidi("clear", "--data", data, "--period", "2026-06", "--out", str(tmp_path / "d"), "--dry-run")
    assert store_state(data) == before
    assert "period 2026-06 not closed (dry run: nothing written to the store)" in r.stderr
    # It says what a close without it would say.
    assert "yidi: dry run; without it: period 2026-06 not closed: earlier periods" in r.stderr
    assert sorted(os.listdir(tmp_path / "d")) == [
        "netting-2026-06.dry-run.csv", "report-2026-06.dry-run.html", "statement-2026-06.dry-run.csv"]
    assert r.stdout.split() == [str(tmp_path / "d" / f) for f in (
        "statement-2026-06.dry-run.csv", "netting-2026-06.dry-run.csv", "report-2026-06.dry-run.html")]
    assert b"DRY RUN" in read(tmp_path / "d" / "report-2026-06.dry-run.html")
    for kind in ("statement", "netting"):  # what the close then writes
        assert read(tmp_path / "d" / f"{kind}-2026-06.dry-run.csv") == read(os.path.join(CLEARING,
                                                                                          f"{kind}-2026-06.csv"))
    # A dry run of a closed period: its files as closed, byte for byte, and still nothing written.
    for p in PERIODS[:3]:
        yidi("clear", "--data", data, "--period", p, "--out", str(tmp_path / "c"))
    closed = store_state(data)
    r = yidi("clear", "--data", data, "--period", "2026-06", "--out", str(tmp_path / "d2"), "--dry-run")
    assert "already closed" in r.stderr and store_state(data) == closed
    for kind, ext in (("statement", "csv"), ("netting", "csv"), ("report", "html")):
        assert read(tmp_path / "d2" / f"{kind}-2026-06.dry-run.{ext}") == read(tmp_path / "c" / f"{kind}-2026-06.{ext}")


def test_clear_refuses_a_bad_out_before_closing(vector_store, tmp_path):
    data = copy_store(vector_store[0], tmp_path / "data")
    before = store_state(data)
    (tmp_path / "a-file").write_bytes(b"")
    for out, what in ((tmp_path / "no" / "such" / "o", "its parent folder"), (tmp_path / "a-file", "not a folder")):
        line = yidi_refused("clear", "--data", data, "--period", "2025-12", "--out", str(out))
        assert what in line, line
    assert not os.path.exists(tmp_path / "no") and store_state(data) == before
    line = yidi_refused("clear", "--data", str(tmp_path / "a-file"), "--period", "2025-12", "--out", str(tmp_path / "o"))
    assert "a file, not a store's data folder" in line


def test_clear_on_a_synthetic_day(tmp_path):
    """engine.tools.synth day, small: the statement agrees with the replies, and netting with the statement."""
    from engine.tools.synth import gen_requests, gen_world, write_requests_jsonl

    world = tmp_path / "world"
    gen_world(str(world), seed=7, provinces=6, catalogue_per_province=2_000, persons=5_000)
    reqs = gen_requests(str(world), 3_000, seed=7, start="2026-11-30", days=2)
    write_requests_jsonl(str(tmp_path / "req.jsonl"), reqs)
    yidi("replay", "--world", str(world), "--in", str(tmp_path / "req.jsonl"), "--out", str(tmp_path / "rep.jsonl"),
         "--data", str(tmp_path / "data"))
    reqs = [orjson.loads(x) for x in open(tmp_path / "req.jsonl", "rb")]
    replies = [orjson.loads(x) for x in open(tmp_path / "rep.jsonl", "rb")]
    f = clearing.money.parse_fen
    for p in ("2026-11", "2026-12"):
        # --force: 2026-12 may not have ended on this machine's clock.
        yidi("clear", "--data", str(tmp_path / "data"), "--period", p, "--out", str(tmp_path / "o"),
             *(["--force"] if p == "2026-12" else []))
        want: dict = {}
        for q, r, orig in _committed(reqs, replies):
            s = r["output"]["setlinfo"]
            if not s["setl_time"].startswith(p) or orig["insuplc_admdvs"][:2] == orig["mdtrtarea_admvs"][:2]:
                continue
            k = (orig["insuplc_admdvs"][:2] + "0000", orig["mdtrtarea_admvs"][:2] + "0000")
            w = want.setdefault(k, [0, 0, 0, 0])
            w[0] += 1 if q["infno"] in ("2207", "2304") else -1
            for i, fld in enumerate(("medfee_sumamt", "fund_pay_sumamt", "acct_pay"), 1):
                w[i] += f(s[fld])
        got = {(r.insured, r.treatment): [r.setl_cnt, r.medfee_fen, r.fund_fen, r.acct_fen]
               for r in statement_rows(tmp_path / "o" / f"statement-{p}.csv")}
        assert got == want and got
        rows = statement_rows(tmp_path / "o" / f"statement-{p}.csv")
        assert [(n.payer, n.payee, n.net_fen) for n in clearing.netting(rows)] == netting_rows(
            tmp_path / "o" / f"netting-{p}.csv")
    digest = hashlib.sha256(read(tmp_path / "o" / "report-2026-11.html")).hexdigest()
    yidi("clear", "--data", str(tmp_path / "data"), "--period", "2026-11", "--out", str(tmp_path / "o"))
    assert hashlib.sha256(read(tmp_path / "o" / "report-2026-11.html")).hexdigest() == digest
