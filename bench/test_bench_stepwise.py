"""Step-wise flow benchmarks (docs/contract.md section 11).

1. A stay of 2,000 fee lines, uploaded in 40 requests of 50 and discharged, then
   pre-settled step-wise (2303 naming the stay) beside the one-shot pre-settlement
   of the very same 2,000 lines (2303 with `feedetail`), alternately in one run on
   one engine. A pre-settlement computes exactly what the settlement does and
   changes nothing, so both can be timed again and again; their replies must be
   equal field by field. The ratio step-wise / one-shot is what the flow costs.

2. Memory: open visits holding uploaded lines (100,000 visits of 30 lines, 3
   million lines, at YIDI_BENCH_SCALE=1), committed to a real store in a child
   process as `yidi serve` would hold them; the child reports its resident memory
   (VmRSS, VmHWM) before and after, and the time a restart takes to bring the
   visits back.

    YIDI_BENCH_SCALE=1 pytest bench/test_bench_stepwise.py --benchmark-enable -o addopts="" -s
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from engine.contract.wire import JSON
from engine.core.engine import Engine, Request
from engine.world.loader import load_world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD = os.path.join(ROOT, "tests", "vectors", "world")
SCALE = float(os.environ.get("YIDI_BENCH_SCALE", "0.02"))
STAY_LINES, UPLOADS = 2_000, 40
ROUNDS = max(5, int(200 * SCALE))
OPEN_VISITS = max(500, int(100_000 * SCALE))
LINES_PER_VISIT = 30
RESULTS: dict = {}

# A stay of the vectors' world: an institution in 120100 (Tianjin), a person insured in 430200.
INST, ADMVS, PSN, INSUPLC, INSUTYPE = "H12010010000", "120100", "P43020000000137", "430200", "310"
DAY = "2026-06-30"


def _env(infno: str, msgid: str, inp: dict) -> dict:
    return {"infno": infno, "msgid": msgid, "mdtrtarea_admvs": ADMVS, "insuplc_admdvs": INSUPLC,
            "fixmedins_code": INST, "inf_time": f"{DAY} 20:00:00", "sign_no": "1", "input": inp}


def _catalogue_codes(prov: str, n: int) -> list[str]:
    with open(os.path.join(WORLD, "catalogue.csv"), encoding="utf-8") as f:
        codes = [row.split(",")[1] for row in f.read().splitlines()[1:] if row.startswith(prov)]
    return [codes[i % len(codes)] for i in range(n)]


def _lines(n: int, mdtrt_id: str, first_sn: int = 1) -> list[dict]:
    codes = _catalogue_codes(ADMVS[:2], n)
    out = []
    for k in range(n):
        cents = 100 + (k * 37) % 9_900
        amt = f"{cents // 100}.{cents % 100:02d}"
        out.append({"feedetl_sn": f"{first_sn + k:05d}", "mdtrt_id": mdtrt_id, "psn_no": PSN, "med_list_codg": codes[k],
                    "medins_list_codg": f"L{k}", "det_item_fee_sumamt": amt, "cnt": "1", "pric": amt,
                    "fee_ocur_time": f"{DAY} 09:00:00"})
    return out


def _stay(engine: Engine) -> tuple[dict, dict]:
    """Admit, upload 2,000 lines in 40 requests, discharge: the step-wise 2303 of the stay and its one-shot twin."""
    def one(env):
        r = json.loads(JSON.encoder.encode(engine.handle_batch([Request(json.dumps(env).encode())])[0]))
        assert r["infcode"] == 0, r
        return r
    mdtrt_id = one(_env("2401", "ADM1", {"mdtrtinfo": {"psn_no": PSN, "insutype": INSUTYPE, "begntime": f"{DAY} 08:00:00",
                                                       "med_type": "21", "ipt_no": "I1"}}))["output"]["result"]["mdtrt_id"]
    lines = _lines(STAY_LINES, mdtrt_id)
    per = STAY_LINES // UPLOADS
    for k in range(UPLOADS):
        one(_env("2301", f"UP{k}", {"feedetail": lines[k * per:(k + 1) * per]}))
    one(_env("2402", "DSC1", {"dscginfo": {"mdtrt_id": mdtrt_id, "psn_no": PSN, "insutype": INSUTYPE,
                                            "endtime": f"{DAY} 16:00:00"}}))
    total = sum(int(ln["det_item_fee_sumamt"].replace(".", "")) for ln in lines)
    medfee = f"{total // 100}.{total % 100:02d}"
    data = {"psn_no": PSN, "mdtrt_id": mdtrt_id, "insutype": INSUTYPE, "medfee_sumamt": medfee, "acct_used_flag": "0"}
    step = _env("2303", "PRE-STEP", {"data": data})
    oneshot = _env("2303", "PRE-ONE", {"data": {**data, "mdtrt_id": "ONE-SHOT", "med_type": "21",
                                                "begntime": f"{DAY} 08:00:00", "endtime": f"{DAY} 16:00:00"},
                                       "feedetail": [{k: v for k, v in ln.items() if k not in ("mdtrt_id", "psn_no")}
                                                     for ln in lines]})
    return step, oneshot


def test_stay_settlement_stepwise_vs_oneshot(benchmark):
    engine = Engine(load_world(WORLD), clock="inf_time")
    step, oneshot = _stay(engine)
    bodies = {"stepwise": json.dumps(step).encode(), "oneshot": json.dumps(oneshot).encode()}
    replies = {}
    for kind, body in bodies.items():
        r = json.loads(JSON.encoder.encode(engine.handle_batch([Request(body)])[0]))
        assert r["infcode"] == 0, r
        replies[kind] = r["output"]
    for k in ("setlinfo", "setldetail", "result"):
        a, b = replies["stepwise"][k], replies["oneshot"][k]
        if k == "setlinfo":
            a, b = {**a, "mdtrt_id": ""}, {**b, "mdtrt_id": ""}
        assert a == b, f"{k} differs between the step-wise and the one-shot pre-settlement"
    times = {"stepwise": [], "oneshot": []}
    for _ in range(ROUNDS):
        for kind in ("stepwise", "oneshot"):
            req = [Request(bodies[kind])]
            t0 = time.perf_counter()
            engine.handle_batch(req)
            times[kind].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    RESULTS["stay_2000"] = {k: round(v * 1e3, 3) for k, v in best.items()}
    RESULTS["stay_2000"]["ratio_stepwise_over_oneshot"] = round(best["stepwise"] / best["oneshot"], 3)
    print(f"\n2,000-line stay, best of {ROUNDS}: step-wise {best['stepwise'] * 1e3:.2f} ms, one-shot"
          f" {best['oneshot'] * 1e3:.2f} ms, ratio {best['stepwise'] / best['oneshot']:.2f}")
    benchmark.pedantic(engine.handle_batch, args=([Request(bodies["stepwise"])],), rounds=3, iterations=1)


MEMORY_CHILD = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from engine.core.engine import Request
from engine.store import open_store
sys.path.insert(0, os.path.join(sys.argv[1], "bench"))
from test_bench_stepwise import INST, ADMVS, PSN, INSUPLC, INSUTYPE, DAY, _catalogue_codes

def rss():
    f = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    return int(f["VmRSS"].split()[0]) * 1024, int(f["VmHWM"].split()[0]) * 1024

data, world, visits, per = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
codes = _catalogue_codes(ADMVS[:2], 997)
st = open_store(data, world, clock="inf_time")
base = rss()[0]
t0 = time.perf_counter()
BATCH = 256
def env(infno, msgid, inp):
    return json.dumps({"infno": infno, "msgid": msgid, "mdtrtarea_admvs": ADMVS, "insuplc_admdvs": INSUPLC,
                       "fixmedins_code": INST, "inf_time": DAY + " 20:00:00", "input": inp}).encode()
for lo in range(0, visits, BATCH):
    ks = range(lo, min(visits, lo + BATCH))
    reqs = [Request(env("2201", f"R{k}", {"data": {"psn_no": PSN, "insutype": INSUTYPE, "begntime": DAY + " 08:00:00",
                                                     "ipt_otp_no": f"O{k}"}})) for k in ks]
    reqs += [Request(env("2204", f"U{k}", {"feedetail": [
        {"feedetl_sn": str(j), "mdtrt_id": f"MR{k}", "psn_no": PSN, "chrg_bchno": "1", "med_list_codg": codes[(k + j) % 997],
         "det_item_fee_sumamt": "12.34", "cnt": "1", "pric": "12.34", "fee_ocur_time": DAY + " 09:00:00"}
        for j in range(per)]})) for k in ks]
    replies = st.engine.handle_batch(reqs)
    assert all(r.infcode == 0 for r in replies), [r for r in replies if r.infcode][:1]
    st.commit(st.engine.take_changes())
load_s = time.perf_counter() - t0
after, peak = rss()
st.close()
print(json.dumps({"visits": visits, "lines": visits * per, "rss_base": base, "rss_after": after, "rss_peak": peak,
                  "load_s": round(load_s, 2)}))
'''

RESTART_CHILD = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
from engine.store import open_store
t0 = time.perf_counter()
st = open_store(sys.argv[2], sys.argv[3], clock="inf_time")
dt = time.perf_counter() - t0
f = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
n = len(st.engine.visits.visits)
st.close()
print(json.dumps({"open_s": round(dt, 2), "visits": n, "rss": int(f["VmRSS"].split()[0]) * 1024}))
'''


def test_open_visits_memory(tmp_path):
    data = str(tmp_path / "data")
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, ROOT, data, WORLD, str(OPEN_VISITS),
                          str(LINES_PER_VISIT)], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    back = subprocess.run([sys.executable, "-c", RESTART_CHILD, ROOT, data, WORLD], capture_output=True, text=True,
                          check=True)
    r = json.loads(back.stdout.strip().splitlines()[-1])
    assert r["visits"] == OPEN_VISITS
    mib = 2**20
    RESULTS["open_visits"] = {**m, "restart": r}
    print(f"\n{m['visits']:,} open visits, {m['lines']:,} lines: RSS {m['rss_base'] / mib:.0f} MiB after open,"
          f" {m['rss_after'] / mib:.0f} MiB with the visits (peak {m['rss_peak'] / mib:.0f} MiB),"
          f" {(m['rss_after'] - m['rss_base']) / m['lines']:.0f} bytes a line; loaded in {m['load_s']} s;"
          f" restart {r['open_s']} s to {r['rss'] / mib:.0f} MiB")


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    if RESULTS and SCALE >= 1:
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        with open(os.path.join(ROOT, "bench", "results", "stepwise.json"), "w") as f:
            json.dump(RESULTS, f, indent=1)
