"""The hub's log: one JSON line per request and per event, never holding the hub (engine.hub.logs).

Real `yidi serve` processes writing real files (`--log-file`), real signed requests
on both transports; the queue's bound against a real pipe that nobody reads. Waits
are on lines, replies and the writer's own progress, never on sleeps.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import orjson
import pytest

from engine.contract.wire import JSON
from engine.core.engine import Engine
from engine.hub.hub import Admitted
from engine.hub.logs import HubLog
from engine.hub.client import sign_in_envelope
from test_auth_server import FAR_CODE, HOSP, HOSP_CODE, PLATFORM, Serve, at, settlement, signed  # noqa: F401
from test_server import WAIT_S, FailingStore, ServerThread, clone_settlements

REQUEST_KEYS = {"time", "level", "event", "transport", "infno", "msgid", "institution", "paasid", "err_code", "ms"}


def read_log(path) -> list[dict]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


def requests_of(lines: list[dict]) -> dict[str, dict]:
    return {ln["msgid"]: ln for ln in lines if ln["event"] == "request" and ln["msgid"]}


def personal_values(env: dict) -> set[str]:
    """What the log must never hold of a settlement: the person's codes, and its amount (a request line has
    no field for any amount: REQUEST_KEYS)."""
    d = env["input"]["data"]
    return {v for v in (d["psn_no"], d.get("mdtrt_cert_no"), d["medfee_sumamt"]) if v}


def wait_for(cond, what: str):
    """Poll `cond` until it holds, within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not (value := cond()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)
    return value


@pytest.fixture
def keys(tmp_path) -> str:
    from engine.hub.auth import write_keys

    path = str(tmp_path / "keys.csv")
    write_keys(path, [HOSP, PLATFORM])
    return path


def test_every_request_is_one_line_of_codes_and_the_hubs_events_are_lines_too(tmp_path, keys, settlement):
    log = tmp_path / "yidi.jsonl"
    s = Serve(str(tmp_path / "data"), "--keys", keys, "--log-file", str(log))
    try:
        with s.client() as c:
            sign_no = c.sign_in(PLATFORM.paasid, PLATFORM.token, HOSP_CODE)
            good = at(settlement, HOSP_CODE, "LOG-OK", sign_no)
            assert c.call(good)["infcode"] == 0
            forbidden = at(settlement, FAR_CODE, "LOG-FAR", sign_no)  # outside the platform's province
            assert c.call(forbidden)["err_code"] == "E_FORBIDDEN"
            bad = at(settlement, HOSP_CODE, "LOG-BAD", sign_no)
            bad["input"]["data"]["psn_no"] = 7
            assert c.call(bad)["err_code"] == "E_SCHEMA"
        status, rep = s.post(at(settlement, HOSP_CODE, "LOG-HTTP", None), {})  # not signed
        assert status == 401 and rep["err_code"] == "E_AUTH"
        status, rep = s.post(sign_in_envelope(HOSP.paasid, HOSP.token, HOSP_CODE), signed(HOSP))
        assert status == 200 and rep["infcode"] == 0
        assert "yidi_log_dropped_total 0.0" in s.metrics()
        s.stop()
    finally:
        s.kill()
    lines = read_log(log)
    text = log.read_text()
    assert all(v not in text for v in personal_values(good)), "a person's data in the log"
    assert lines[0]["event"] != "request" and lines[-1]["event"] == "stop" and lines[-1]["exit_code"] == 0
    start = next(ln for ln in lines if ln["event"] == "start")
    assert start["auth"] == "keys" and start["request_log"] == "all" and set(start["listeners"]) == {
        "tcp", "http", "admin"} and start["pid"] == s.p.pid
    reqs = [ln for ln in lines if ln["event"] == "request"]
    assert all(set(ln) == REQUEST_KEYS for ln in reqs), reqs
    assert all(ln["ms"] >= 0 and ln["time"][:2] == "20" and ln["time"][-6] in "+-" for ln in reqs)
    by = requests_of(lines)
    assert {k: by["LOG-OK"][k] for k in ("transport", "infno", "institution", "paasid", "err_code", "level")} == {
        "transport": "tcp", "infno": "2207", "institution": HOSP_CODE, "paasid": PLATFORM.paasid, "err_code": "",
        "level": "info"}
    assert (by["LOG-FAR"]["err_code"], by["LOG-FAR"]["institution"], by["LOG-FAR"]["level"]) == (
        "E_FORBIDDEN", FAR_CODE, "warning")
    assert by["LOG-BAD"]["err_code"] == "E_SCHEMA"
    sign_ins = [ln for ln in reqs if ln["infno"] == "9001"]
    assert [(ln["transport"], ln["paasid"], ln["err_code"]) for ln in sign_ins] == [
        ("tcp", PLATFORM.paasid, ""), ("http", HOSP.paasid, "")]
    refused = [ln for ln in reqs if ln["err_code"] == "E_AUTH"]
    assert [(ln["transport"], ln["infno"], ln["paasid"]) for ln in refused] == [("http", "unread", "")]


def test_errors_only_or_no_request_lines(tmp_path, vectors):
    reqs, exp = vectors
    good, other = clone_settlements(reqs, exp, 2, "LV")
    bad = json.loads(json.dumps(other))
    bad["input"]["data"]["psn_no"] = 7
    for mode, want in (("errors", {bad["msgid"], ""}), ("off", set())):
        log = tmp_path / f"{mode}.jsonl"
        s = Serve(str(tmp_path / mode), "--no-auth", "--log-file", str(log), "--request-log", mode,
                  "--http-body-bytes-max", "4096")
        try:
            with s.client() as c:
                assert c.call(good)["infcode"] == 0
                assert c.call(bad)["err_code"] == "E_SCHEMA"
            status, rep = s.post({**good, "pad": "x" * 5000}, {})  # refused by the gateway before the hub
            assert status == 413 and rep["err_code"] == "E_LIMIT"
            s.stop()
        finally:
            s.kill()
        lines = read_log(log)
        assert {ln["msgid"] for ln in lines if ln["event"] == "request"} == want, mode
        if mode == "errors":
            assert [(ln["transport"], ln["err_code"]) for ln in lines if ln.get("msgid") == ""] == [
                ("http", "E_LIMIT")]
        assert [ln["event"] for ln in lines if ln["event"] in ("start", "stop")] == ["start", "stop"]


def test_sighup_reopens_the_log_file_after_a_rotation(tmp_path, vectors):
    reqs, exp = vectors
    first, second = clone_settlements(reqs, exp, 2, "ROT")
    log = tmp_path / "yidi.jsonl"
    s = Serve(str(tmp_path / "data"), "--no-auth", "--log-file", str(log))
    try:
        with s.client() as c:
            assert c.call(first)["infcode"] == 0
            os.rename(log, tmp_path / "yidi.jsonl.1")  # what logrotate does
            s.p.send_signal(signal.SIGHUP)
            wait_for(lambda: log.exists() and b'"event":"reload"' in log.read_bytes(), "the reload in a new file")
            assert c.call(second)["infcode"] == 0
        s.stop()
    finally:
        s.kill()
    old, new = read_log(tmp_path / "yidi.jsonl.1"), read_log(log)
    # The first request's line may still have been queued at the rotation: then it is in the new file.
    assert (first["msgid"] in requests_of(old)) != (first["msgid"] in requests_of(new))
    assert second["msgid"] in requests_of(new) and second["msgid"] not in requests_of(old)
    reload = next(ln for ln in new if ln["event"] == "reload")
    assert reload["trigger"] == "SIGHUP" and reload["ok"] and f"log: file {log}" in reload["msg"]
    assert new[-1]["event"] == "stop"


class _Pipe:
    """A pipe the log writes to and nobody reads until `drain()`: the writer thread blocks on it."""

    def __init__(self):
        self.r, self.w = os.pipe()
        os.set_blocking(self.w, True)
        self.data = bytearray()
        self.reader: threading.Thread | None = None

    @property
    def path(self) -> str:
        return f"/dev/fd/{self.w}"

    def drain(self) -> None:
        def read():
            while chunk := os.read(self.r, 1 << 16):
                self.data += chunk
        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()


def _batch(log: HubLog, n: int, tag: str):
    """A batch's lines as the hub captures them, n requests."""
    from engine.contract.wire import Reply
    from engine.core.records import Request

    items = [Admitted(b"{}", JSON, None, None, 0.0) for _ in range(n)]
    reqs = [Request(b"{}") for _ in range(n)]
    for r in reqs:
        r.infno, r.fixmedins_code = "1101", "H1"
    replies = [Reply(0, f"{tag}-{i}", "", "", "") for i in range(n)]
    return log.capture(items, reqs, replies)


def test_a_full_queue_drops_and_counts_and_never_waits():
    pipe = _Pipe()
    log = HubLog(pipe.path, entries_max=4).start()
    try:
        # The writer blocks on the full pipe; the queue fills behind it; from then on every batch is
        # dropped and counted, at once (a released() that waited would hang this test).
        sent = 0
        while log.dropped == 0:
            log.released(_batch(log, 64, f"b{sent}"))
            sent += 1
            assert sent < 100_000, "the queue never filled"
        for i in range(100):
            log.released(_batch(log, 64, f"x{i}"))
        dropped = log.dropped
        assert dropped >= 101 * 64 and dropped % 64 == 0
        pipe.drain()  # the disk comes back
    finally:
        log.stop()
    os.close(pipe.w)  # the writer closed its own: the reader sees the end
    pipe.reader.join(WAIT_S)
    lines = [orjson.loads(ln) for ln in bytes(pipe.data).splitlines()]
    said = [ln for ln in lines if ln["event"] == "log-dropped"]
    assert sum(ln["lines"] for ln in said) == dropped
    written = [ln for ln in lines if ln["event"] == "request"]
    assert len(written) + dropped == sent * 64 + 100 * 64  # every line either written or counted
    os.close(pipe.r)


def test_a_fail_stop_is_a_line_of_the_log(tmp_path, vector_world, vectors):
    reqs, exp = vectors
    envs = clone_settlements(reqs, exp, 2, "FS")
    path = tmp_path / "yidi.jsonl"
    log = HubLog(str(path)).start()
    try:
        srv = ServerThread(FailingStore(Engine(vector_world)), http=False)
        with srv:
            srv.call_in_loop(lambda: setattr(srv.hub, "request_log", log))
            with srv.client() as c:
                assert c.call(envs[0])["infcode"] == 0
                c.send(envs[1])
                srv.thread.join(WAIT_S)
    finally:
        log.stop()
    lines = read_log(path)
    assert envs[0]["msgid"] in requests_of(lines) and envs[1]["msgid"] not in requests_of(lines)
    fail = next(ln for ln in lines if ln["event"] == "fail-stop")
    assert fail["level"] == "critical" and "disk full" in fail["msg"] and "OSError: disk full" in fail["exc"]


def test_a_line_that_orjson_cannot_encode_is_written_mended(tmp_path):
    """A JSON client may send a lone surrogate in its msgid (valid JSON, not valid UTF-8): the line is written,
    the character replaced, and the writer thread goes on."""
    path = tmp_path / "yidi.jsonl"
    log = HubLog(str(path)).start()
    try:
        lines = _batch(log, 2, "ok")
        lines.rows[0] = lines.rows[0][:3] + ("bad\ud800msgid",) + lines.rows[0][4:]
        log.released(lines)
        log.released(_batch(log, 1, "after"))
    finally:
        log.stop()
    assert [ln["msgid"] for ln in read_log(path)] == ["bad?msgid", "ok-1", "after-0"]
    assert log.dropped == 0
