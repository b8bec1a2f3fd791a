"""The operator's status page (engine/hub/status.py, engine/hub/series.py, engine/hub/static/).

The page is driven in a real headless Chromium (tests/browser.py) against a real
`yidi serve` with a real store and a real keys file: the province platforms sign
in and send the conformance vectors' requests, signed, refusals included, and a
few requests with a bad signature are sent over HTTP. The test then asserts what
the page shows once its script has run (the DOM, not the JSON): the counts by
err_code equal the replies the test received, the pre-payment table equals
engine.clearing's own reading of the store, the sign-ins are the ones made, the
chart is drawn; and that the browser asked nothing of anyone but the admin
listener. The time series itself is tested apart, on made-up counters.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import orjson
import pytest

from browser import CHROMIUM, Browser
from conftest import ROOT, VECTOR_WORLD
from engine.clearing.clearing import parse_ratio_bp, prepay_usage
from engine.contract import money
from engine.contract.protocol import province
from engine.hub.admin import STATIC_FILES, STATUS_HEADERS
from engine.hub.auth import signed_headers, write_keys
from engine.hub.client import FramedClient
from engine.hub.series import CHART_STEP_S, SLOTS, LatencyHistogram, Series, quantile_s
from engine.hub.status import SIGNIN_INSTITUTIONS_MAX, StatusSources
from engine.tools.platforms import platform_credentials
from test_server import WAIT_S

SCREENSHOT_ENV = "YIDI_STATUS_SCREENSHOT"  # also save the screenshot there (the docs' picture)


# ---------------------------------------------------------------- the time series, on made-up counters

class Counters:
    def __init__(self):
        self.codes: dict[str, int] = {}
        self.settled = self.reversed = 0

    def read(self):
        return dict(self.codes), self.settled, self.reversed


def test_series_quantiles_are_within_the_bucket_error():
    rng = np.random.default_rng(7)
    lat_s = rng.lognormal(np.log(0.004), 0.8, 20_000)
    h = LatencyHistogram()
    for x in lat_s:
        h.observe(float(x))
    counts = np.array(h.counts)
    assert counts.sum() == len(lat_s)
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(lat_s, q, method="inverted_cdf"))
        got = quantile_s(counts, q)
        assert abs(got / exact - 1) < 0.045, (q, got, exact)
    assert quantile_s(np.zeros(LatencyHistogram.BUCKETS, np.int64), 0.5) is None
    h2 = LatencyHistogram()
    h2.observe(1e-6)  # below the first bound, above the last: kept, at the ends
    h2.observe(3600.0)
    assert h2.counts[0] == 1 and h2.counts[-1] == 1


def test_series_slots_rates_errors_and_the_ring_bound():
    c = Counters()
    s = Series(c.read, LatencyHistogram())
    t0 = s.started_mono
    base = Series.slot_of(t0)
    # 10 seconds of 20 replies a second, 8 of them settlements, 2 refused E_DATE, all at 3 ms.
    for k in range(1, 11):
        c.codes[""] = c.codes.get("", 0) + 18
        c.codes["E_DATE"] = c.codes.get("E_DATE", 0) + 2
        c.settled += 8
        for _ in range(20):
            s.latency.observe(0.003)
        s.sample(float(base + k - 1))  # the hub's first ten seconds
    v = s.view(float(base + 10) + 0.5, 1_000_000.0)
    recent = v["recent"]
    assert recent["replies"] == 200 and recent["settlements"] == 80 and recent["errors"] == {"E_DATE": 20}
    assert 2.8 < recent["p50_ms"] < 3.2 and 2.8 < recent["p99_ms"] < 3.2
    pts = [p for p in v["points"] if p["replies_per_s"]]
    assert pts and all(p["replies_per_s"] == 20 and p["settlements_per_s"] == 8 and p["errors_per_s"] == 2
                       for p in pts)
    assert len(v["points"]) == SLOTS // CHART_STEP_S
    assert [p["t"] for p in v["points"]] == sorted(p["t"] for p in v["points"])
    # Nothing before the hub started is drawn as a zero.
    assert v["points"][0]["replies_per_s"] is None
    # A stalled loop: slots skipped are empty, and the ring never holds more than SLOTS slots.
    c.codes[""] += 5
    s.sample(float(base + 10 + 3 * SLOTS))
    assert s.slot_no.max() == base + 10 + 3 * SLOTS and len(s.slot_no) == SLOTS
    v = s.view(float(base + 11 + 3 * SLOTS), 1_000_000.0)
    assert v["window"]["replies"] == 5 and v["window"]["errors"] == {}
    # One point holds the slot; its rate is over the seconds of it that have ended (the newest point's).
    n = base + 10 + 3 * SLOTS
    assert [p["replies_per_s"] for p in v["points"] if p["replies_per_s"]] == [round(5 / (n % CHART_STEP_S + 1), 2)]


# ---------------------------------------------------------------- the page in a real browser

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian's package; .ci/run installs it)")
PREPAY_WARN = "0.5"  # YIDI_PREPAY_WARN: some of the vectors' provinces use more than half of their deposit


class ServeProcess:
    """`yidi serve --keys` on the vectors' world, its output to files (never a pipe that could fill)."""

    def __init__(self, tmp_path, keys: str):
        self.out_path, self.err_path = tmp_path / "serve.out", tmp_path / "serve.err"
        self.data = str(tmp_path / "data")
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--world", VECTOR_WORLD, "--data", self.data,
               "--keys", keys, "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        env = {**os.environ, "PYTHONPATH": ROOT, "YIDI_PREPAY_WARN": PREPAY_WARN}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
        deadline = time.monotonic() + WAIT_S
        while "yidi: ready" not in self.out_path.read_text():
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"yidi serve did not start: {self.err_path.read_text()}")
            time.sleep(0.05)  # polling the process's output for its ready line, under the deadline
        self.addrs = {m.group(1): (m.group(2), int(m.group(3))) for m in re.finditer(
            r"yidi: (tcp|http|admin) listening on (.+):(\d+)", self.out_path.read_text())}
        self.admin = "http://%s:%d" % self.addrs["admin"]

    def get(self, path: str) -> tuple[int, dict, bytes]:
        with urllib.request.urlopen(self.admin + path, timeout=WAIT_S) as r:
            return r.status, dict(r.headers), r.read()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            self.p.wait(WAIT_S)


def send_the_day(srv: ServeProcess, world, creds) -> tuple[collections.Counter, dict, set]:
    """The vectors' requests, each on its institution's province platform connection and signed in for
    it; returns the replies' err_codes, the sign-ins made (institution -> count) and the settlements'
    and reversals' setl_ids that succeeded."""
    with open(os.path.join(ROOT, "tests", "vectors", "requests.jsonl"), "rb") as f:
        reqs = [orjson.loads(line) for line in f if line.strip()]
    inst = dict(zip(world.inst_code, world.inst_admdvs))
    by_prov = {c.admdvs: c for c in creds}
    clients: dict[str, FramedClient] = {}
    sign_nos: dict[str, str] = {}
    codes: collections.Counter = collections.Counter()
    committed: set = set()
    try:
        for env in reqs:
            code = env.get("fixmedins_code")
            admdvs = inst.get(code) if isinstance(code, str) else None
            cred = by_prov.get(province(admdvs)) if admdvs else None
            cred = cred or creds[0]  # an institution of no province: refused E_FORBIDDEN by scope
            c = clients.get(cred.paasid)
            if c is None:
                # A connection opens with a signed 9001: for this institution, or one of the platform's.
                c = clients[cred.paasid] = FramedClient(*srv.addrs["tcp"], timeout_s=WAIT_S)
                first = code if admdvs else next(k for k, a in inst.items() if province(a) == cred.admdvs)
                sign_nos[first] = c.sign_in(cred.paasid, cred.token, first)
                codes[""] += 1
            if admdvs and code not in sign_nos:
                sign_nos[code] = c.sign_in(cred.paasid, cred.token, code)
                codes[""] += 1
            env = dict(env)
            if code in sign_nos:
                env["sign_no"] = sign_nos[code]
            rep = c.call(env)
            codes[rep.get("err_code") or ""] += 1
            if rep.get("infcode") == 0 and env.get("infno") in ("2207", "2304", "2208", "2305"):
                committed.add((env["infno"], rep["output"]["setlinfo"]["setl_id"]))
    finally:
        for c in clients.values():
            c.close()
    return codes, {k: 1 for k in sign_nos}, committed


def bad_signatures(srv: ServeProcess, cred, n: int) -> int:
    """`n` requests over HTTP signed with a wrong token: each is E_AUTH, 401."""
    import http.client

    from engine.hub.http import HTTP_PATH

    for i in range(n):
        c = http.client.HTTPConnection(*srv.addrs["http"], timeout=WAIT_S)
        try:
            c.request("POST", HTTP_PATH, body=b'{"infno":"1101","msgid":"x"}',
                      headers={"Content-Type": "application/json",
                               **signed_headers(cred.paasid, "w" * 40, time.time())})
            r = c.getresponse()
            assert r.status == 401 and orjson.loads(r.read())["err_code"] == "E_AUTH"
        finally:
            c.close()
    return n


TABLE_JS = """Array.from(document.querySelectorAll(%r)).map(tr => ({
  key: tr.dataset.code || tr.dataset.prov, cls: tr.className,
  cells: Array.from(tr.cells).map(td => td.textContent)}))"""
SERIES_JS = """Array.from(document.querySelectorAll('#%s [data-series=%s]')).flatMap(e =>
  e.tagName === 'circle' ? [[+e.getAttribute('cx'), +e.getAttribute('cy')]]
  : e.getAttribute('points').split(' ').map(p => p.split(',').map(Number)))"""
CHART_BASELINE_Y = 198  # the charts' zero line: viewBox height 220, margins 10 above and 22 below


@needs_chromium
def test_status_page_in_a_real_browser_shows_the_hubs_day(tmp_path, vector_world):
    provinces = sorted({province(a) for a in vector_world.inst_admdvs})
    creds = platform_credentials(provinces)
    keys = str(tmp_path / "keys.csv")
    write_keys(keys, creds)
    srv = ServeProcess(tmp_path, keys)
    try:
        codes, signed_in, committed = send_the_day(srv, vector_world, creds)
        codes["E_AUTH"] += bad_signatures(srv, creds[0], 3)
        total = sum(codes.values())
        settlements = sum(1 for infno, _ in committed if infno in ("2207", "2304"))
        assert settlements > 100 and len(committed) > settlements  # reversals too
        assert len([c for c in codes if c]) >= 8  # a good spread of refusals

        # The hub's series takes a slot once it has ended: wait for the JSON to hold every reply.
        deadline = time.monotonic() + WAIT_S
        while True:
            doc = json.loads(srv.get("/status.json")[2])
            if doc["traffic"]["window"]["replies"] == total or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # polling the hub's own document, under the deadline
        assert doc["traffic"]["window"]["replies"] == total, (doc["traffic"]["window"], total)

        # The files are the package's, with a policy that forbids loading anything from elsewhere.
        for path in STATIC_FILES:
            status, headers, body = srv.get(path)
            assert status == 200 and body and headers["Content-Security-Policy"] == STATUS_HEADERS[
                "Content-Security-Policy"]
        status, _, html = srv.get("/")
        assert not re.search(rb"""(src|href)=["']?(https?:)?//""", html)

        shown = asyncio.run(_drive(tmp_path, srv))
    finally:
        srv.stop()

    # Only the admin listener was asked for anything, and the page's own four paths were.
    assert shown["requests"] and all(u.startswith(srv.admin + "/") for u in shown["requests"]), shown["requests"]
    assert {u[len(srv.admin):] for u in shown["requests"]} >= {"/", "/status.css", "/status.js", "/status.json"}
    assert not [m for m in shown["console"] if "exception" in m], shown["console"]

    assert shown["state"] == "up"
    assert shown["banner"].startswith("The hub does not answer") and "last answer at 20" in shown["banner"]
    # Errors by err_code: every code the test was answered, with its count since start.
    errors = {r["key"]: r["cells"] for r in shown["errors"]}
    assert set(errors) == {c for c in codes if c}
    for code, n in codes.items():
        if code:
            assert errors[code][4] == f"{n:,}" and errors[code][3] == f"{n:,}", (code, errors[code], n)
    assert all(cells[1] for cells in errors.values())  # each with its meaning

    # Store and batches: the settlements and reversals the test saw committed.
    store = dict(zip(shown["store_dt"], shown["store_dd"]))
    assert store["journal rows"] == f"{len(committed):,}"
    assert f"{settlements:,} settlements, {len(committed) - settlements:,} reversals" in store["since start"]
    assert re.search(r"[0-9.]+ (B|KiB|MiB) journal", store["WAL"])
    assert re.search(r"GiB|TiB|MiB", store["disk free"])

    # Pre-payment: the page's table is engine.clearing's reading of the same store, warnings included.
    want = {u.prov: u for u in prepay_usage(os.path.join(tmp_path, "data"), world_dir=VECTOR_WORLD,
                                            warn_bp=parse_ratio_bp(PREPAY_WARN))}
    prepay = {r["key"]: r for r in shown["prepay"]}
    assert set(prepay) == set(want) and any(u.warning for u in want.values()) and not all(
        u.warning for u in want.values())
    for prov, u in want.items():
        row = prepay[prov]
        assert row["cells"][0].startswith(prov) and row["cells"][1] == money.format_fen(u.prepay_fen)
        assert row["cells"][2] == money.format_fen(u.used_fen)
        assert row["cells"][3] == ("no deposit" if u.ratio_bp is None else f"{u.ratio_bp / 100:.1f} %")
        assert ("warning" in row["cls"]) == u.warning and ("warning" in row["cells"][4]) == u.warning
    assert shown["prepay_tile"] == str(sum(u.warning for u in want.values()))

    # Sign-ins: one in force at each institution the platforms signed in for.
    signins = {r["key"]: r["cells"] for r in shown["signins"]}
    n = len(signed_in)
    assert shown["signin_total"].startswith(f"{n:,} at {n:,} institutions")
    assert set(signins) <= set(signed_in) and len(signins) == min(n, SIGNIN_INSTITUTIONS_MAX)
    assert all(cells[3] == "1" for cells in signins.values())
    assert all(cells[5].startswith("plat-") for cells in signins.values())

    # The chart: settlements drawn above the zero line; latency drawn.
    assert shown["settlements"] and min(y for _, y in shown["settlements"]) < CHART_BASELINE_Y
    assert shown["p99"] and shown["p50"]
    # Maintenance has no source in this hub: the page says so; the world is the store's.
    assert "no maintenance file" in shown["maintenance"]
    world = dict(zip(shown["world_dt"], shown["world_dd"]))
    assert re.fullmatch(r"[0-9a-f]{12}", world["version"]) and world["what changed"] == "seeded"


async def _drive(tmp_path, srv: ServeProcess) -> dict:
    async with Browser(str(tmp_path / "chromium")) as b:
        await b.open(srv.admin + "/")
        await b.until("document.body !== null && Number(document.body.dataset.loaded || 0) >= 1")
        shot = str(tmp_path / "status-page.png")
        png = await b.screenshot(shot)
        assert png.startswith(b"\x89PNG")
        if os.environ.get(SCREENSHOT_ENV):
            with open(os.environ[SCREENSHOT_ENV], "wb") as f:
                f.write(png)
        shown = {
            "requests": list(b.requests), "console": list(b.console),
            "state": await b.eval("document.getElementById('state').textContent"),
            "errors": await b.eval(TABLE_JS % "#errors tbody tr"),
            "prepay": await b.eval(TABLE_JS % "#prepay tbody tr"),
            "signins": await b.eval(TABLE_JS % "#signins tbody tr"),
            "signin_total": await b.eval("document.getElementById('signin-total').textContent"),
            "prepay_tile": await b.eval("document.getElementById('t-prepay').textContent"),
            "store_dt": await b.eval("Array.from(document.querySelectorAll('#store dt')).map(e => e.textContent)"),
            "store_dd": await b.eval("Array.from(document.querySelectorAll('#store dd')).map(e => e.textContent)"),
            "world_dt": await b.eval("Array.from(document.querySelectorAll('#world dt')).map(e => e.textContent)"),
            "world_dd": await b.eval("Array.from(document.querySelectorAll('#world dd')).map(e => e.textContent)"),
            "maintenance": await b.eval("document.getElementById('maintenance').textContent"),
            "settlements": await b.eval(SERIES_JS % ("chart-rate", "settlements")),
            "p50": await b.eval(SERIES_JS % ("chart-latency", "p50")),
            "p99": await b.eval(SERIES_JS % ("chart-latency", "p99")),
        }
        # It refreshes by itself; when the hub is gone it says so, with the time of its last answer.
        await b.until("Number(document.body.dataset.loaded) >= 2")
        srv.stop()
        await b.until("document.getElementById('state').textContent === 'unreachable'")
        shown["banner"] = await b.eval("document.getElementById('banner').textContent")
        return shown


def test_status_sources_fill_the_maintenance_and_world_sections():
    """A hub whose maintenance and world parts give the page their state: shown as given; a source that
    raises is named on the page instead of taking it down."""
    from engine.hub.status import Status

    class FakeHub:  # only what Status reads for these two sections
        pass

    windows = {"in_force": [{"admdvs": "430000", "begin": "2026-12-05 00:00:00", "end": "2026-12-05 06:00:00",
                             "reason": "upgrade"}], "next": []}
    st = Status(FakeHub(), StatusSources(maintenance=lambda: windows, world=lambda: 1 / 0))
    assert st._source("maintenance", "absent") == {"present": True, **windows}
    broken = st._source("world", "absent")
    assert broken["present"] is False and "ZeroDivisionError" in broken["note"]
    assert Status(FakeHub())._source("maintenance", "no maintenance file")["note"] == "no maintenance file"


def test_the_pages_files_are_package_data():
    """A pip install carries the page: every file the admin listener serves matches pyproject's package-data."""
    import fnmatch
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    globs = data["engine.hub"]
    static = os.path.join(ROOT, "engine", "hub", "static")
    served = {name for name, _ in STATIC_FILES.values()}
    assert served == set(os.listdir(static))
    assert all(any(fnmatch.fnmatch(f"static/{name}", g) for g in globs) for name in served)


def test_status_json_of_a_hub_without_a_store_on_disk(vector_world, vectors):
    """A hub whose store has no data folder (a test double here; a database store likewise) still has its
    page: the traffic and errors from the hub, the store's files and pre-payment said to be absent."""
    from test_server import ServerThread, clone_settlements, memory_store

    reqs, exp = vectors
    with ServerThread(memory_store(vector_world)) as srv:
        envs = clone_settlements(reqs, exp, 3, "P")
        with srv.client() as c:
            replies = c.pipeline(envs + [envs[0] | {"input": {}}])
        assert [r["infcode"] for r in replies] == [0, 0, 0, -1]
        deadline = time.monotonic() + WAIT_S
        while True:
            status, body = srv.http_get("/status.json")
            doc = json.loads(body)
            if doc["traffic"]["window"]["replies"] == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # polling the hub's own document, under the deadline
        assert status == 200 and doc["traffic"]["window"]["replies"] == 4
        assert doc["traffic"]["window"]["settlements"] == 3 and doc["store"]["settlements"] == 3
        assert [e["code"] for e in doc["errors"]] == [replies[3]["err_code"]]
        assert doc["store"]["data_dir"] is None and "wal_bytes" not in doc["store"]
        assert doc["prepay"]["present"] is False and doc["world"]["present"] is False
        assert doc["maintenance"] == {"present": False, "note": "no maintenance file (yidi serve --maintenance FILE)"}
        assert srv.http_get("/")[0] == 200
