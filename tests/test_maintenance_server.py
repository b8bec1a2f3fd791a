"""Section 12 on the wire: a hub with a maintenance file, on real sockets, reloaded; `yidi serve --maintenance`.

The hub's clock is the wall clock, so the windows are written around the time the
test runs. A request the window refuses is checked against the same request
once the window is gone: it commits, under the msgid that was refused.
Synchronisation is on replies, log lines and the server's own state, never on
sleeps.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import time

import orjson
import pytest

from conftest import ROOT
from engine.core.maintenance import read_schedule
from engine.hub.admin import RELOAD_PATH
from engine.hub.http import HTTP_PATH
from engine.hub.maintenance import MaintenanceSource
from test_auth_server import Serve, admin_post, serve_cmd
from test_server import WAIT_S, ServerThread, clone_settlements, memory_store

HEADER = "admdvs,begin,end,reason\n"


def hub_time(hours: float) -> str:
    """The hub's clock `hours` from now (local time, as the hub reads it)."""
    return (dt.datetime.now() + dt.timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(scope="module")
def settlement(vectors):
    reqs, exp = vectors
    return clone_settlements(reqs, exp, 1, "M")[0]


def write(path, *rows: tuple[str, str, str, str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER + "".join(",".join(r) + "\n" for r in rows))


def as_new(env: dict, msgid: str) -> dict:
    e = orjson.loads(orjson.dumps(env))
    e["msgid"], e["input"]["data"]["mdtrt_id"] = msgid, "V" + msgid
    return e


def metric(srv: ServerThread, name: str, **labels) -> float:
    return srv.call_in_loop(lambda: srv.hub.metrics.registry.get_sample_value(name, labels)) or 0.0


def test_a_window_refuses_on_both_transports_and_a_reload_changes_it(vector_world, settlement, tmp_path):
    region = settlement["insuplc_admdvs"]
    province = region[:2] + "0000"
    end = hub_time(1)
    path = str(tmp_path / "maintenance.csv")
    write(path, (province, hub_time(-1), end, "省平台升级"), ("110000", hub_time(2), hub_time(3), "北京升级"))
    store = memory_store(vector_world)
    source = MaintenanceSource(path, store.engine)
    source.apply(read_schedule(path))
    with ServerThread(store, reloadable=(source,)) as srv, srv.client() as c:
        want = f"the platform of insured region {province} is down for maintenance until {end}: 省平台升级"
        rep = c.call(as_new(settlement, "W1"))
        assert (rep["infcode"], rep["err_code"], rep["err_msg"], rep["output"]) == (-1, "E_MAINTENANCE", want, {})
        status, body = srv.http_call(orjson.dumps(as_new(settlement, "W2")), HTTP_PATH)
        assert status == 200 and orjson.loads(body)["err_code"] == "E_MAINTENANCE"
        assert metric(srv, "yidi_maintenance_refused_total", admdvs=province) == 2
        assert metric(srv, "yidi_maintenance_windows_in_force") == 1
        assert srv.call_in_loop(lambda: store.engine.maintenance.status(hub_time(0)))["next"][0]["admdvs"] == "110000"

        # A broken file: refused naming line and field; the windows in force are kept.
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{province},{hub_time(-1)},yesterday,x\n")
        status, report = admin_post(srv)
        assert status == 422 and report["parts"]["maintenance"] == {
            "ok": False, "error": f"{path}:4: end: 'yesterday' is not a time YYYY-MM-DD HH:MM:SS",
            "kept": "the state in force"}, report
        assert c.call(as_new(settlement, "W1"))["err_code"] == "E_MAINTENANCE"
        assert metric(srv, "yidi_reloads_total", part="maintenance", outcome="refused") == 1

        # The window moved to tomorrow: the refused msgid settles now, as if never sent.
        write(path, (province, hub_time(24), hub_time(26), "改期"))
        status, report = admin_post(srv)
        assert (status, report) == (200, {"ok": True, "parts": {"maintenance": {
            "ok": True, "windows": 1, "in_force": 0, "file": path}}})
        assert c.call(as_new(settlement, "W1"))["infcode"] == 0
        status, body = srv.http_call(orjson.dumps(as_new(settlement, "W2")), HTTP_PATH)
        assert orjson.loads(body)["infcode"] == 0
        assert [ch.msgid for ch in store.committed] == ["W1", "W2"]
        assert metric(srv, "yidi_maintenance_windows_in_force") == 0
        assert metric(srv, "yidi_reloads_total", part="maintenance", outcome="ok") == 1


def test_yidi_serve_refuses_a_bad_maintenance_file_in_one_line(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text(HEADER + "43000,2026-12-05 08:00:00,2026-12-05 09:00:00,x\n", encoding="utf-8")
    missing = tmp_path / "nope.csv"
    for path, line in ((bad, f"yidi: --maintenance {bad}:2: admdvs: '43000' is not a 6-digit region code\n"),
                       (missing, f"yidi: --maintenance {missing}: No such file or directory\n")):
        p = subprocess.run(serve_cmd(str(tmp_path / "data"), "--no-auth", "--maintenance", str(path)), cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=WAIT_S * 2)
        assert (p.returncode, p.stdout, p.stderr) == (2, "", line)
        assert not os.path.exists(tmp_path / "data")  # refused before the store was opened


def test_yidi_serve_with_maintenance_reloads_on_sighup(tmp_path, settlement):
    path = str(tmp_path / "m.csv")
    region = settlement["insuplc_admdvs"]
    write(path, (region, hub_time(-1), hub_time(1), "维护"), ("110000", hub_time(2), hub_time(3), "later"))
    s = Serve(str(tmp_path / "data"), "--no-auth", "--maintenance", path)
    try:
        assert f"yidi: maintenance: 2 windows from {path} (1 in force now); reload: SIGHUP or POST {RELOAD_PATH} " \
               "on the admin listener" in s.lines
        assert re.search(r"^yidi_maintenance_windows_in_force 1\.0$", s.metrics(), re.M)
        shown = s.status()["maintenance"]
        assert (shown["present"], [w["reason"] for w in shown["in_force"]], [w["reason"] for w in shown["next"]]) \
            == (True, ["维护"], ["later"])
        with s.client() as c:
            assert c.call(as_new(settlement, "S1"))["err_code"] == "E_MAINTENANCE"
            assert re.search(rf'^yidi_maintenance_refused_total\{{admdvs="{region}"\}} 1\.0$', s.metrics(), re.M)
            write(path)  # every window withdrawn
            s.p.send_signal(signal.SIGHUP)
            assert "maintenance: windows 0, in_force 0" in s.stderr_until(r"reload \(SIGHUP\)")
            assert c.call(as_new(settlement, "S1"))["infcode"] == 0
        assert re.search(r"^yidi_maintenance_windows_in_force 0\.0$", s.metrics(), re.M)
        # The page's document is made at most once a second: polled until it shows the reload.
        want, deadline = {"present": True, "in_force": [], "next": [], "file": path}, time.monotonic() + WAIT_S
        while s.status()["maintenance"] != want:
            assert time.monotonic() < deadline, s.status()["maintenance"]
        s.stop()
    finally:
        s.kill()
