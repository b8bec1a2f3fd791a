"""`yidi demo` end to end, its summary against its replies, and the generator pieces it adds."""
from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import orjson
import pytest

from conftest import ROOT, differences
from engine.tools import demo
from engine.contract import money
from engine.contract.protocol import province
from engine.store.files import connect, db_path
from engine.tools.synth import gen_requests, gen_world

# Small enough for CI (a few seconds), big enough that every filing class, most
# refusals, reversals and retries happen: 31 provinces, 2,000 catalogue rows each.
WORLD_ARGS = ["--provinces", "31", "--catalogue", "2000", "--persons", "20000"]
PNGS = ("latency.png", "throughput.png", "funds_by_province.png", "prepay.png", "day_profile.png")


def _yidi(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONPATH": ROOT})


def _jsonl(path: str) -> list[dict]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


FLOWS = ("oneshot", "stepwise", "mixed")
_DAYS: dict[str, tuple] = {}


def _demo_day(tmp_path_factory, flow: str) -> tuple:
    """One `yidi demo --scale 0.01 --flow FLOW` run (once per module): its folders, stdout and summary."""
    if flow not in _DAYS:
        d = tmp_path_factory.mktemp("demo-" + flow)
        p = _yidi("demo", "--scale", "0.01", *WORLD_ARGS, "--cache", str(d / "cache"), "--report", str(d / "report"),
                  "--data", str(d / "data"), "--keep-replies", "--no-progress", "--flow", flow)
        assert p.returncode == 0, p.stderr[-4000:]
        with open(d / "report" / "summary.json") as f:
            _DAYS[flow] = d, p, json.load(f)
    return _DAYS[flow]


@pytest.fixture(scope="module", params=FLOWS)
def day(request, tmp_path_factory):
    return _demo_day(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def mixed_day(tmp_path_factory):
    return _demo_day(tmp_path_factory, "mixed")


def test_demo_prints_a_summary_and_writes_a_report(day):
    d, p, s = day
    for title in ("yidi demo: a national day", "settlements/s", "latency   p50", "Requests by infno", "By fund",
                  "By filing class", "Errors by code", "Pre-payment usage", "Report:"):
        assert title in p.stdout, title
    assert f"{s['flow']} flow" in p.stdout
    assert s["requests"] == demo.requests_for(1300, s["flow"])
    assert s["counts"]["settlements"] > 1000 and s["counts"]["reversals"] > 0
    assert s["counts"]["retries_answered"] > 0 and s["errors"]
    assert not s["world_cached"]
    with open(d / "report" / "index.html", encoding="utf-8") as f:
        page = f.read()
    for name in PNGS:
        with open(d / "report" / name, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n", name
        assert os.path.getsize(d / "report" / name) > 10_000, name
        assert f'src="{name}"' in page
    lat = s["latency"]
    assert 0 < lat["latency_ms_p50"] <= lat["latency_ms_p99"] <= lat["latency_ms_max"]


def test_summary_totals_equal_the_sum_of_the_replies(day):
    """Recomputed here from requests.jsonl and replies.jsonl, independently of engine.tools.demo."""
    d, _, s = day
    reqs, reps = _jsonl(str(d / "report" / "requests.jsonl")), _jsonl(str(d / "report" / "replies.jsonl"))
    assert len(reqs) == len(reps) == s["requests"]
    errors: collections.Counter = collections.Counter()
    totals: collections.Counter = collections.Counter()
    funds: collections.Counter = collections.Counter()
    classes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    cross: collections.Counter = collections.Counter()
    seen = set()
    settled: dict[str, tuple[dict, dict]] = {}  # setl_id -> (its request, its reply)
    undone = 0
    for q, r in zip(reqs, reps):
        assert r["inf_refmsgid"] == q["msgid"]  # replies are in request order per index
        if r["infcode"] != 0:
            errors[r["err_code"]] += 1
            continue
        if q["infno"] == "2601":  # an undo of a settlement counts as its reversal, once
            u = r["output"]["data"]
            if u["status"] != "UNDONE" or u["oinfno"] not in ("2207", "2304") or "S" + u["omsgid"] not in settled:
                continue
            q, r = settled.pop("S" + u["omsgid"])
            si = r["output"]["setlinfo"]
            fen = {k: -money.parse_fen(v) for k, v in si.items() if k in demo.MONEY_FIELDS}
            undone += 1
            sign = -1
        elif q["infno"] not in ("2207", "2304", "2208", "2305"):
            continue
        else:
            si = r["output"]["setlinfo"]
            if si["setl_id"] in seen:  # a retry: the first reply again, counted once
                continue
            seen.add(si["setl_id"])
            sign = 1 if q["infno"] in ("2207", "2304") else -1
            if sign > 0:
                settled[si["setl_id"]] = q, r
            fen = {k: money.parse_fen(v) for k, v in si.items() if k in demo.MONEY_FIELDS}
        totals.update(fen)
        classes[si["filing_class"]]["count"] += sign
        for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay"):
            classes[si["filing_class"]][k] += fen[k]
        if sign > 0 and q["infno"] in ("2207", "2304"):  # a settlement lists its funds in setldetail
            for row in r["output"]["setldetail"]:
                funds[row["fund_pay_type"]] += money.parse_fen(row["fund_payamt"])
        else:  # a reversal has none: its setlinfo is the settlement's, negated
            basic = {"310": "310100", "390": "390100"}[si["insutype"]]
            funds[basic] += fen["hifp_pay"]
            if si["insutype"] == "310":
                funds["330100"] += fen["hifob_pay"]
                funds["310200"] += fen["acct_pay"]
            else:
                funds["390200"] += fen["hifmi_pay"]
        if province(q["insuplc_admdvs"]) != province(q["mdtrtarea_admvs"]):
            cross[province(q["insuplc_admdvs"])] += fen["fund_pay_sumamt"] + fen["acct_pay"]
    assert s["totals_fen"] == {k: totals[k] for k in demo.MONEY_FIELDS}
    assert {k: v for k, v in s["by_fund_fen"].items() if v} == {k: v for k, v in funds.items() if v}
    assert s["by_class"] == {k: {f: v[f] for f in ("count", "medfee_sumamt", "fund_pay_sumamt", "acct_pay",
                                                   "psn_cash_pay")} for k, v in classes.items()}
    assert s["errors"] == dict(errors)
    assert {p: v["used_fen"] for p, v in s["prepay"].items() if v["used_fen"]} == {
        p: v for p, v in cross.items() if v}
    assert sum(s["by_fund_fen"].values()) == s["totals_fen"]["fund_pay_sumamt"] + s["totals_fen"]["acct_pay"]
    assert s["counts"]["undone"] == undone
    assert (s["counts"]["settlements"] - s["counts"]["reversals"] - s["counts"]["undone"]
            == sum(v["count"] for v in s["by_class"].values()))


def test_counts_by_infno_are_the_generated_streams(day):
    """The summary's requests and refusals by infno are those of the stream the generator draws for the day
    (drawn again here from the same seed), and each request got the outcome the generator meant it to get
    (engine.tools.synth.flows.Note): registrations, uploads and settlements succeed, the requests wrong on
    purpose are refused."""
    from engine.tools.synth import gen_stream
    from engine.tools.synth.flows import REFUSED, UNCERTAIN

    d, _, s = day
    reqs, reps = _jsonl(str(d / "report" / "requests.jsonl")), _jsonl(str(d / "report" / "replies.jsonl"))
    st = gen_stream(s["world"]["out_dir"], s["requests"], seed=s["seed"], start=s["day"], days=1, flow=s["flow"],
                    **demo.STREAM_SHARES)
    assert [orjson.loads(orjson.dumps(e)) for e in st.envelopes] == reqs
    assert s["requests_by_infno"] == dict(collections.Counter(q["infno"] for q in reqs))
    refused = collections.Counter(q["infno"] for q, r in zip(reqs, reps) if r["infcode"] != 0)
    assert s["refused_by_infno"] == dict(refused)
    if s["flow"] == "oneshot":
        assert st.notes is None and set(s["requests_by_infno"]) <= {"1101", "2206", "2207", "2208", "2209", "2303",
                                                                   "2304", "2305", "2306"}
        return
    for infno in ("2201", "2203", "2204", "2207", "2401", "2301", "2402", "2304", "2601"):
        assert s["requests_by_infno"].get(infno, 0) > 0, infno
    wrong = []
    for k, (q, nt, r) in enumerate(zip(reqs, st.notes, reps)):
        code = r.get("err_code")
        if nt.step == "retry" or nt.expect == UNCERTAIN:
            continue
        if nt.expect == "E_UNKNOWN_INSTITUTION" and code == "E_FORBIDDEN":
            continue  # section 10 answers first: an institution the world does not know is in no platform's scope
        ok = code is None if nt.expect is None else code is not None if nt.expect == REFUSED else code == nt.expect
        if not ok:
            wrong.append((k, q["infno"], nt.step, nt.expect, code))
    assert not wrong, f"{len(wrong)} requests got another outcome, first: {wrong[:5]}"
    meant = collections.Counter(q["infno"] for q, nt in zip(reqs, st.notes)
                                if nt.step != "retry" and nt.expect not in (None, UNCERTAIN))
    assert all(refused[infno] >= n for infno, n in meant.items()), (meant, refused)


def test_the_store_holds_what_the_replies_said(day):
    """The durable ledger (docs/contract.md section 8) debited the funds and accounts the replies name."""
    d, _, s = day
    p = _yidi("check", "--data", str(d / "data"))
    assert p.returncode == 0, p.stdout + p.stderr
    db = connect(db_path(str(d / "data")), read_only=True)  # the keyed file attached: `account` is there
    try:
        rows = db.execute("SELECT account, balance_fen FROM account").fetchall()
        settled = db.execute("SELECT count(*) FROM journal WHERE kind = 'settle'").fetchone()[0]
    finally:
        db.close()
    by_fund: collections.Counter = collections.Counter()
    for account, balance_fen in rows:
        kind, _, rest = account.partition("/")
        if kind == "fund":
            by_fund[rest.rpartition("/")[2]] += balance_fen
        elif kind == "psnacct":
            by_fund["310200"] += balance_fen
    assert settled == s["counts"]["settlements"]
    assert sum(b for _, b in rows) == 0
    # Debits carry one sign: compare magnitudes, fund by fund.
    assert {k: abs(v) for k, v in by_fund.items() if v} == {k: v for k, v in s["by_fund_fen"].items() if v}


def test_one_request_in_flight_gives_the_replies_of_yidi_replay(day, tmp_path):
    """With one request in flight the hub sees the day in stream order, over whichever province's
    connection, so its replies over framed TCP (money as strings) equal `yidi replay`'s (money as
    JSON numbers), but where section 10 answers first: a request for an institution the world does not
    know is in no credential's scope (E_FORBIDDEN), where replay, which checks nothing of section 10,
    says E_UNKNOWN_INSTITUTION. The world comes from the cache the first run filled."""
    d, _, first = day
    report = tmp_path / "report"
    p = _yidi("demo", "--scale", "0.01", *WORLD_ARGS, "--cache", str(d / "cache"), "--report", str(report),
              "--in-flight", "1", "--keep-replies", "--no-progress", "--flow", first["flow"])
    assert p.returncode == 0, p.stderr[-4000:]
    with open(report / "summary.json") as f:
        s = json.load(f)
    assert s["world_cached"]
    with open(report / "requests.jsonl", "rb") as a, open(d / "report" / "requests.jsonl", "rb") as b:
        assert a.read() == b.read()  # the same day, drawn again from the same seed
    out = tmp_path / "replay.jsonl"
    p = _yidi("replay", "--world", s["world"]["out_dir"], "--in", str(report / "requests.jsonl"), "--out", str(out))
    assert p.returncode == 0, p.stderr[-4000:]
    want, got = _jsonl(str(out)), _jsonl(str(report / "replies.jsonl"))
    assert len(want) == len(got)
    scoped = 0
    for i, (w, g) in enumerate(zip(want, got)):
        w.pop("err_msg", None), g.pop("err_msg", None)
        if w.get("err_code") == "E_UNKNOWN_INSTITUTION" and g.get("err_code") == "E_FORBIDDEN":
            scoped += 1
            w["err_code"] = "E_FORBIDDEN"
        assert differences(w, g) == [] and set(w) == set(g), (i, differences(w, g))
    assert s["sign_ins"] > 0 and s["errors"].get("E_SIGN_IN", 0) == 0 and "E_AUTH" not in s["errors"]


def test_world_cache_key_and_reuse(tmp_path):
    a = demo.world_key(1, 4, 500, 3000)
    assert a != demo.world_key(2, 4, 500, 3000) != demo.world_key(1, 4, 500, 3001)
    assert a != demo.world_key(1, 5, 500, 3000) != demo.world_key(1, 4, 501, 3000)
    folder, summary, cached = demo.ensure_world(str(tmp_path), 1, 4, 500, 3000)
    assert not cached and os.path.basename(folder) == a and summary["persons"] == 3000
    again, summary2, cached2 = demo.ensure_world(str(tmp_path), 1, 4, 500, 3000)
    assert cached2 and again == folder and summary2 == summary
    assert [n for n in os.listdir(tmp_path / "worlds") if ".tmp-" in n] == []


@pytest.mark.parametrize("flow", FLOWS)
def test_requests_for_gives_about_the_asked_settlements(tmp_path, flow):
    world = str(tmp_path / "w")
    gen_world(world, seed=3, provinces=4, catalogue_per_province=500, persons=3000)
    for target in (1300, 5000):
        envs = gen_requests(world, demo.requests_for(target, flow), seed=3, flow=flow, **demo.STREAM_SHARES)
        first = {e["msgid"] for e in envs if e["infno"] in ("2207", "2304")}
        # One-shot streams are sized exactly by their shares; step-wise ones by a measured ratio.
        assert abs(len(first) - target) <= (0.01 if flow == "oneshot" else 0.08) * target


def test_gen_world_command_writes_the_same_bytes_as_gen_world(tmp_path):
    p = _yidi("gen-world", "--out", str(tmp_path / "cli"), "--seed", "5", "--provinces", "3", "--catalogue", "300",
              "--persons", "2000")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["persons"] == 2000
    gen_world(str(tmp_path / "api"), seed=5, provinces=3, catalogue_per_province=300, persons=2000)
    for name in sorted(os.listdir(tmp_path / "api")):
        with open(tmp_path / "cli" / name, "rb") as a, open(tmp_path / "api" / name, "rb") as b:
            assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest(), name
    q = _yidi("gen-requests", "--world", str(tmp_path / "cli"), "--n", "300", "--out", str(tmp_path / "r.jsonl"))
    assert q.returncode == 0, q.stderr
    assert len(_jsonl(str(tmp_path / "r.jsonl"))) == 300


def test_the_day_has_a_morning_and_an_afternoon_peak(tmp_path):
    """The national day profile: most requests in office hours, a dip at lunch, quiet nights."""
    world = str(tmp_path / "w")
    gen_world(world, seed=4, provinces=4, catalogue_per_province=500, persons=3000)
    envs = gen_requests(world, 6000, seed=4)
    hours = np.bincount([int(e["inf_time"][11:13]) for e in envs], minlength=24)
    morning, lunch, afternoon = hours[8:11].max(), hours[12], hours[14:17].max()
    night = hours[0:6].sum() + hours[20:24].sum()
    assert morning > afternoon > lunch
    assert hours[8:18].sum() > 0.8 * len(envs) and night < 0.1 * len(envs)


def test_options_are_bounded():
    for bad in (dict(scale=0), dict(scale=1000), dict(persons=20_000_000), dict(connections=0),
                dict(in_flight=100_000), dict(provinces=32), dict(day="2026-13-01"), dict(flow="batch")):
        with pytest.raises(ValueError):
            demo.DemoOptions(**bad).check()
    p = _yidi("demo", "--scale", "0")
    assert p.returncode == 2 and "--scale" in p.stderr
    p = _yidi("demo", "--data", ROOT)
    assert p.returncode == 2 and "not empty" in p.stderr


def test_bench_runner_regenerates_the_table(mixed_day, tmp_path):
    """bench/run_all.py: one suite run small, the demo's summary as saved JSON, the table between the markers."""
    d, _, s = mixed_day
    results = tmp_path / "results"
    results.mkdir()
    with open(results / "demo.json", "w") as f:
        json.dump({"suite": "demo", "scale": 1.0, "command": "yidi demo", "exit_code": 0,
                   "started": "2026-11-20T00:00:00", "seconds": 1,
                   "machine": {"cpu": "", "cores": 2, "python": "3.11", "commit": "x"}, "data": s}, f)
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n<!-- perf-table:begin -->\nold\n<!-- perf-table:end -->\n\nkept\n")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run_all.py"), "--only", "kernel", "--scale",
                        "0.02", "--results", str(results), "--readme", str(readme)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 0, p.stderr[-3000:]
    text = readme.read_text()
    assert "old" not in text and text.endswith("kept\n")
    assert "| kernel: match + split, 20,000 lines vs a 4,000-entry catalogue" in text and "compiled" in text
    assert "| `yidi demo`:" in text and f"{s['settlements_per_s']:,.0f} settlements/s" in text
    assert "| store: not measured yet |" in text
    assert (results / "kernel.json").exists() and (results / "kernel.png").exists()
