"""Section 10 on the wire: signatures on both transports, sign-in, scope, reload, and `yidi serve --keys`.

Real keys files (engine.hub.auth.write_keys), a real hub on loopback sockets
(tests/test_server.py's ServerThread, given the keyring that `yidi serve --keys`
builds), and real `yidi serve` processes for the command line, SIGHUP and a
restart. Every refusal is checked against a request that would otherwise have
been accepted: the same settlement, correctly signed and signed in, commits.
Synchronisation is on replies, log lines and the server's own state, never on
sleeps.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest

from conftest import ROOT, VECTOR_WORLD
from engine.contract.credential import Credential
from engine.hub.admin import RELOAD_PATH
from engine.hub.auth import (
    CLOCK_SKEW_S_MAX, KeysSource, revoke_key, signature, signed_headers, write_keys,
)
from engine.hub.client import (
    FramedClient, SignInRefused, encode_frame, sign_in_envelope, sign_out_envelope, with_sign_no,
)
from engine.hub.http import HTTP_PATH
from test_server import WAIT_S, ServerThread, clone_settlements, memory_store

# Institutions of the vectors' world: the settlement the tests clone is made at HOSP_CODE (region 530100).
HOSP_CODE, SIBLING_CODE, FAR_CODE = "H53010020000", "H53010020001", "H11010010000"
HOSP = Credential("his-1", "h" * 40, HOSP_CODE, "")
PLATFORM = Credential("plat-53", "p" * 40, "", "530000")  # covers every institution of province 53
OTHER = Credential("his-11", "o" * 40, FAR_CODE, "")  # a hospital system of province 11


@pytest.fixture
def keys(tmp_path) -> str:
    path = str(tmp_path / "keys.csv")
    write_keys(path, [HOSP, PLATFORM, OTHER])
    return path


def auth_server(vector_world, keys: str, **kw) -> ServerThread:
    """A hub over the vectors' world that verifies requests against the keys file, as `yidi serve --keys` does."""
    source, warnings = KeysSource.open(keys)
    assert warnings == []
    return ServerThread(memory_store(vector_world), keyring=source.keyring, reloadable=(source,), **kw)


@pytest.fixture(scope="module")
def settlement(vectors):
    """A successful outpatient settlement of the vectors, at HOSP_CODE: the shape every test clones."""
    reqs, exp = vectors
    env = clone_settlements(reqs, exp, 1, "T")[0]
    assert (env["fixmedins_code"], env["mdtrtarea_admvs"]) == (HOSP_CODE, "530100")
    return env


def at(env: dict, code: str, tag: str, sign_no: str | None) -> dict:
    """`env` as a new visit at institution `code` (its region too), under `sign_no`."""
    e = orjson.loads(orjson.dumps(env))
    e["msgid"], e["input"]["data"]["mdtrt_id"] = tag, "V" + tag
    if code != e["fixmedins_code"]:
        e["fixmedins_code"] = code
    if sign_no is not None:
        e["sign_no"] = sign_no
    else:
        e.pop("sign_no", None)
    return e


def http_post(srv: ServerThread, env: dict | bytes, headers: dict) -> tuple[int, dict, dict]:
    """(status, reply, response headers) of one POST to the gateway."""
    body = env if isinstance(env, bytes) else orjson.dumps(env)
    c = http.client.HTTPConnection(*srv.server.http_address, timeout=WAIT_S)
    try:
        c.request("POST", HTTP_PATH, body=body, headers={"Content-Type": "application/json", **headers})
        r = c.getresponse()
        return r.status, orjson.loads(r.read()), dict(r.getheaders())
    finally:
        c.close()


def signed(cred: Credential, **kw) -> dict:
    return signed_headers(cred.paasid, cred.token, kw.pop("now_s", time.time()), **kw)


def http_sign_in(srv: ServerThread, cred: Credential, code: str) -> str:
    status, rep, _ = http_post(srv, sign_in_envelope(cred.paasid, cred.token, code), signed(cred))
    assert status == 200 and rep["infcode"] == 0, rep
    return rep["output"]["signinoutb"]["sign_no"]


def committed(srv: ServerThread) -> list[str]:
    return [ch.msgid for ch in srv.store.committed]


def metric(srv: ServerThread, name: str, **labels) -> float:
    value = srv.call_in_loop(lambda: srv.hub.metrics.registry.get_sample_value(name, labels))
    return value or 0.0


# ---------------------------------------------------------------- HTTP

def _drop(h: dict, name: str) -> dict:
    return {k: v for k, v in h.items() if k != name}


HTTP_REFUSALS = {
    # name: (headers made from good ones, the reason label, what err_msg says)
    "no paasid": (lambda h: _drop(h, "x-tif-paasid"), "missing", "paasid missing"),
    "no timestamp": (lambda h: _drop(h, "x-tif-timestamp"), "missing", "timestamp missing"),
    "no nonce": (lambda h: _drop(h, "x-tif-nonce"), "missing", "nonce missing"),
    "no signature": (lambda h: _drop(h, "x-tif-signature"), "missing", "signature missing"),
    "unknown paasid": (lambda h: {**h, "x-tif-paasid": "nobody"}, "unknown_paasid", "unknown paasid"),
    "wrong signature": (lambda h: {**h, "x-tif-signature": signature(h["x-tif-timestamp"], "x" * 40,
                                                                     h["x-tif-nonce"])}, "signature",
                        "wrong signature"),
    "301 s early": (lambda h: signed(HOSP, now_s=time.time() - CLOCK_SKEW_S_MAX - 1), "timestamp", "300 s"),
    "301 s late": (lambda h: signed(HOSP, now_s=time.time() + CLOCK_SKEW_S_MAX + 1), "timestamp", "300 s"),
    "bad nonce": (lambda h: signed(HOSP, nonce="not-a-nonce"), "nonce", "8-64"),
}


@pytest.mark.parametrize("case", list(HTTP_REFUSALS))
def test_http_refuses_a_request_not_signed_by_a_credential_and_changes_nothing(vector_world, keys, settlement,
                                                                                case):
    make, reason, why = HTTP_REFUSALS[case]
    with auth_server(vector_world, keys) as srv:
        sign_no = http_sign_in(srv, HOSP, HOSP_CODE)
        env = at(settlement, HOSP_CODE, "H1", sign_no)
        status, rep, headers = http_post(srv, env, make(signed(HOSP)))
        assert status == 401, rep
        assert rep["infcode"] == -1 and rep["err_code"] == "E_AUTH" and why in rep["err_msg"], rep
        assert rep["inf_refmsgid"] == "" and rep["output"] == {}  # the body was not read
        assert HOSP.token not in json.dumps(rep) and "WWW-Authenticate" in headers
        assert committed(srv) == []
        assert metric(srv, "yidi_auth_refused_total", transport="http", reason=reason) == 1
        # The same request, signed, commits: the refusal was the signature's.
        status, rep, _ = http_post(srv, env, signed(HOSP))
        assert status == 200 and rep["infcode"] == 0, rep
        assert committed(srv) == ["H1"]


def test_http_a_replayed_request_is_refused(vector_world, keys, settlement):
    with auth_server(vector_world, keys) as srv:
        sign_no = http_sign_in(srv, HOSP, HOSP_CODE)
        headers = signed(HOSP)
        first = at(settlement, HOSP_CODE, "R1", sign_no)
        assert http_post(srv, first, headers)[1]["infcode"] == 0
        # The same headers again, on another body: the nonce is spent.
        status, rep, _ = http_post(srv, at(settlement, HOSP_CODE, "R2", sign_no), headers)
        assert status == 401 and rep["err_code"] == "E_AUTH" and "replayed" in rep["err_msg"], rep
        assert committed(srv) == ["R1"]
        assert metric(srv, "yidi_auth_refused_total", transport="http", reason="replay") == 1


def test_http_nothing_of_the_body_is_looked_at_before_the_signature(vector_world, keys):
    limit = 64 * 1024
    from engine.hub.limits import Limits

    source, _ = KeysSource.open(keys)
    with ServerThread(memory_store(vector_world), Limits(http_body_bytes_max=limit), keyring=source.keyring) as srv:
        # Unsigned: an undecodable body and an oversize one are both E_AUTH, never E_SCHEMA or E_LIMIT.
        for body in (b"{not json", b"[" + b"1," * limit + b"1]"):
            status, rep, _ = http_post(srv, body, {})
            assert (status, rep["err_code"]) == (401, "E_AUTH"), rep
        # Signed, they are judged as before.
        status, rep, _ = http_post(srv, b"{not json", signed(HOSP))
        assert (status, rep["err_code"]) == (200, "E_SCHEMA")
        status, rep, _ = http_post(srv, b"[" + b"1," * limit + b"1]", signed(HOSP))
        assert (status, rep["err_code"]) == (413, "E_LIMIT")


# ---------------------------------------------------------------- framed TCP

def test_tcp_sign_in_then_transactions(vector_world, keys, settlement, loop_kind):
    with auth_server(vector_world, keys, loop_kind=loop_kind, http=False) as srv, srv.client() as c:
        sign_no = c.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE, opter_no="op-7", ip="10.1.2.3")
        assert re.fullmatch(r"[0-9a-f]{30}", sign_no)
        rep = c.call(at(settlement, HOSP_CODE, "T1", sign_no))
        assert rep["infcode"] == 0, rep
        # Without a sign_no, or with another's, the engine refuses: the connection stays.
        assert c.call(at(settlement, HOSP_CODE, "T2", None))["err_code"] == "E_SIGN_IN"
        assert c.call(at(settlement, HOSP_CODE, "T3", "f" * 30))["err_code"] == "E_SIGN_IN"
        assert c.call(at(settlement, HOSP_CODE, "T4", sign_no))["infcode"] == 0
        assert committed(srv) == ["T1", "T4"]


FIRST_FRAME_REFUSALS = {
    "a settlement first": (lambda s: s, "first_frame"),
    "a 9001 without its signature": (lambda s: {k: v for k, v in sign_in_envelope(
        HOSP.paasid, HOSP.token, HOSP_CODE).items() if k not in ("nonce", "signature")}, "missing"),
    "a 9001 badly signed": (lambda s: {**sign_in_envelope(HOSP.paasid, HOSP.token, HOSP_CODE),
                                       "signature": "0" * 64}, "signature"),
    "a 9001 of nobody": (lambda s: {**sign_in_envelope(HOSP.paasid, HOSP.token, HOSP_CODE), "paasid": "nobody"},
                         "unknown_paasid"),
    "a 9001 of long ago": (lambda s: sign_in_envelope(HOSP.paasid, HOSP.token, HOSP_CODE,
                                                      now_s=time.time() - CLOCK_SKEW_S_MAX - 1), "timestamp"),
    "not MessagePack": (lambda s: b"\xc1", "first_frame"),
}


@pytest.mark.parametrize("case", list(FIRST_FRAME_REFUSALS))
def test_tcp_a_connection_must_begin_with_a_signed_9001(vector_world, keys, settlement, loop_kind, case):
    make, reason = FIRST_FRAME_REFUSALS[case]
    with auth_server(vector_world, keys, loop_kind=loop_kind, http=False) as srv:
        with srv.client() as good:
            sign_no = good.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE)
        with srv.client() as c:
            first = make(at(settlement, HOSP_CODE, "F1", sign_no))
            # A settlement the engine would accept pipelined behind it: never reaches the hub.
            c.send_raw(encode_frame(first) + encode_frame(at(settlement, HOSP_CODE, "F2", sign_no)))
            rep = c.recv()
            assert rep["infcode"] == -1 and rep["err_code"] == "E_AUTH" and HOSP.token not in rep["err_msg"], rep
            assert c.at_eof()
        assert committed(srv) == []
        assert metric(srv, "yidi_auth_refused_total", transport="tcp", reason=reason) == 1
        with srv.client() as c:  # and a well-signed connection settles the same request
            c.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE)
            assert c.call(at(settlement, HOSP_CODE, "F2", sign_no))["infcode"] == 0
        assert committed(srv) == ["F2"]


def test_tcp_a_timestamp_may_be_a_messagepack_integer(vector_world, keys, loop_kind):
    with auth_server(vector_world, keys, loop_kind=loop_kind, http=False) as srv, srv.client() as c:
        env = sign_in_envelope(HOSP.paasid, HOSP.token, HOSP_CODE)
        env["timestamp"] = int(env["timestamp"])
        assert c.call(env)["infcode"] == 0


def test_tcp_frames_pipelined_behind_the_sign_in(vector_world, keys, settlement, loop_kind):
    """A sign-in belongs to the credential and institution, not to a connection: a client that signed in
    before sends its first frame and the day's work in one write."""
    with auth_server(vector_world, keys, loop_kind=loop_kind, http=False) as srv:
        with srv.client() as c:
            sign_no = c.sign_in(PLATFORM.paasid, PLATFORM.token, HOSP_CODE)
        envs = [at(settlement, HOSP_CODE, f"P{i}", sign_no) for i in range(5)]
        with srv.client() as c:
            c.send_raw(b"".join(encode_frame(e) for e in [sign_in_envelope(PLATFORM.paasid, PLATFORM.token,
                                                                             HOSP_CODE), *envs]))
            got = [c.recv() for _ in range(6)]
        assert got[0]["infcode"] == 0 and got[0]["output"]["signinoutb"]["sign_no"] != sign_no
        assert [r["inf_refmsgid"] for r in got[1:]] == [e["msgid"] for e in envs]
        assert all(r["infcode"] == 0 for r in got[1:]), got[1:]
        assert committed(srv) == [e["msgid"] for e in envs]


def test_tcp_scope_and_sign_in_order(vector_world, keys, settlement, loop_kind):
    """Section 10's order after E_AUTH: E_FORBIDDEN (scope), then E_SIGN_IN, then section 7."""
    with auth_server(vector_world, keys, loop_kind=loop_kind, http=False) as srv, srv.client() as c:
        sign_no = c.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE)
        # Another institution of the same region: outside a hospital system's credential, even signed in.
        for code in (SIBLING_CODE, FAR_CODE, "H-unknown"):
            rep = c.call(at(settlement, code, "S" + code, sign_no))
            assert rep["err_code"] == "E_FORBIDDEN", rep
            with pytest.raises(SignInRefused) as e:
                c.sign_in(HOSP.paasid, HOSP.token, code)
            assert e.value.reply["err_code"] == "E_FORBIDDEN"
        # In scope, without a sign-in: E_SIGN_IN before any check of section 7 (an unknown person here).
        bad = at(settlement, HOSP_CODE, "S1", None)
        bad["input"]["data"]["psn_no"] = "nobody"
        assert c.call(bad)["err_code"] == "E_SIGN_IN"
        bad["sign_no"] = sign_no
        assert c.call(bad)["err_code"] == "E_UNKNOWN_PERSON"
        # A person query (1101) needs a sign-in too.
        query = {"infno": "1101", "msgid": "Q1", "fixmedins_code": HOSP_CODE, "mdtrtarea_admvs": "110100",
                 "insuplc_admdvs": settlement["insuplc_admdvs"],
                 "input": {"data": {"mdtrt_cert_type": "01", "mdtrt_cert_no": settlement["input"]["data"]["psn_no"]}}}
        assert c.call(query)["err_code"] == "E_SIGN_IN"
        assert c.call({**query, "sign_no": sign_no})["infcode"] == 0
        assert committed(srv) == []


def test_tcp_a_platform_acts_for_its_province_and_a_sign_out_ends_the_sign_in(vector_world, keys, settlement,
                                                                             loop_kind):
    with auth_server(vector_world, keys, loop_kind=loop_kind, http=False) as srv, srv.client() as c:
        a = c.sign_in(PLATFORM.paasid, PLATFORM.token, HOSP_CODE)
        b = c.sign_in(PLATFORM.paasid, PLATFORM.token, SIBLING_CODE)
        assert c.call(at(settlement, HOSP_CODE, "PL1", a))["infcode"] == 0
        # A sign-in is for one institution: b does not cover HOSP_CODE.
        assert c.call(at(settlement, HOSP_CODE, "PL2", b))["err_code"] == "E_SIGN_IN"
        with pytest.raises(SignInRefused):  # province 11 is not the platform's
            c.sign_in(PLATFORM.paasid, PLATFORM.token, FAR_CODE)
        out = c.call(sign_out_envelope(a, HOSP_CODE))
        assert out["infcode"] == 0 and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
                                                   out["output"]["signoutoutb"]["sign_time"])
        assert c.call(at(settlement, HOSP_CODE, "PL3", a))["err_code"] == "E_SIGN_IN"
        assert committed(srv) == ["PL1"]


def test_tls_framed_connection_with_auth(vector_world, keys, settlement, loop_kind, tmp_path):
    trustme = pytest.importorskip("trustme")
    from engine.hub.tls import client_context, load_server_tls

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    paths = {n: str(tmp_path / n) for n in ("ca.pem", "server.pem", "server.key")}
    ca.cert_pem.write_to_path(paths["ca.pem"])
    leaf.cert_chain_pems[0].write_to_path(paths["server.pem"])
    leaf.private_key_pem.write_to_path(paths["server.key"])
    tls = load_server_tls(paths["server.pem"], paths["server.key"])
    ctx = client_context(paths["ca.pem"])
    with auth_server(vector_world, keys, loop_kind=loop_kind, http=False, tls=tls) as srv:
        with srv.client(ssl_context=ctx) as c:
            c.send(at(settlement, HOSP_CODE, "TL0", "0" * 30))
            assert c.recv()["err_code"] == "E_AUTH"
            assert c.at_eof()
        with srv.client(ssl_context=ctx) as c:
            sign_no = c.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE)
            assert c.call(at(settlement, HOSP_CODE, "TL1", sign_no))["infcode"] == 0
        assert committed(srv) == ["TL1"]


def test_with_sign_no_adds_the_field_to_an_encoded_envelope(settlement):
    import msgspec

    env = at(settlement, HOSP_CODE, "W1", None)
    for e in (env, {"infno": "1101"}, {f"k{i}": i for i in range(15)}, {**env, "sign_no": "old"}):
        got = msgspec.msgpack.decode(with_sign_no(msgspec.msgpack.encode(e), "n" * 30))
        assert got == {**e, "sign_no": "n" * 30}
    with pytest.raises(ValueError):
        with_sign_no(msgspec.msgpack.encode([1, 2]), "n" * 30)


# ---------------------------------------------------------------- reload

def admin_post(srv: ServerThread, path: str = RELOAD_PATH) -> tuple[int, dict]:
    c = http.client.HTTPConnection(*srv.server.admin_address, timeout=WAIT_S)
    try:
        c.request("POST", path)
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def test_reload_revokes_and_changes_credentials_and_a_bad_file_keeps_them(vector_world, keys, settlement):
    with auth_server(vector_world, keys) as srv:
        hosp, plat, other = srv.client(), srv.client(), srv.client()
        try:
            h = hosp.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE)
            p = plat.sign_in(PLATFORM.paasid, PLATFORM.token, HOSP_CODE)
            other.sign_in(OTHER.paasid, OTHER.token, OTHER.fixmedins_code)
            # HOSP revoked, OTHER's token changed, PLATFORM untouched.
            new_other = Credential(OTHER.paasid, "n" * 40, OTHER.fixmedins_code, "")
            write_keys(keys, [PLATFORM, new_other])
            status, report = admin_post(srv)
            assert status == 200 and report == {"ok": True, "parts": {"keys": {"ok": True, "credentials": 2,
                                                                              "file": keys}}}, report
            assert metric(srv, "yidi_reloads_total", part="keys", outcome="ok") == 1
            assert metric(srv, "yidi_auth_credentials") == 2
            # The revoked and the changed credential's connections: E_AUTH at their next frame, then closed.
            for c, sign_no in ((hosp, h), (other, "0" * 30)):
                rep = c.call(at(settlement, HOSP_CODE, "RV" + sign_no[:4], sign_no))
                assert rep["err_code"] == "E_AUTH" and "revoked or changed" in rep["err_msg"], rep
                assert c.at_eof()
            assert metric(srv, "yidi_auth_refused_total", transport="tcp", reason="revoked") == 2
            # The credential kept serves on, on its connection as on a new request over HTTP.
            assert plat.call(at(settlement, HOSP_CODE, "RK1", p))["infcode"] == 0
            status, rep, _ = http_post(srv, at(settlement, HOSP_CODE, "RK2", h), signed(HOSP))
            assert status == 401 and "unknown paasid" in rep["err_msg"]
            assert http_post(srv, sign_in_envelope(new_other.paasid, new_other.token, OTHER.fixmedins_code),
                             signed(new_other))[1]["infcode"] == 0
            # A bad file: refused by line and field, and what was in force stays.
            with open(keys, "a") as f:
                f.write("bad,short,H1,\n")
            status, report = admin_post(srv)
            assert status == 422 and not report["ok"], report
            assert report["parts"]["keys"]["error"] == f"{keys}:4: token: must be 16-128 printable ASCII " \
                                                       "characters without spaces"
            assert metric(srv, "yidi_reloads_total", part="keys", outcome="refused") == 1
            assert plat.call(at(settlement, HOSP_CODE, "RK3", p))["infcode"] == 0
            assert http_post(srv, at(settlement, HOSP_CODE, "RK4", p), signed(PLATFORM))[1]["infcode"] == 0
            assert committed(srv) == ["RK1", "RK3", "RK4"]
        finally:
            for c in (hosp, plat, other):
                c.close()


def test_reload_without_keys_reloads_nothing(vector_world):
    with ServerThread(memory_store(vector_world)) as srv:
        assert admin_post(srv) == (200, {"ok": True, "parts": {}})
        status, text = srv.http_get("/metrics")
        assert "\nyidi_auth_disabled 1.0\n" in text.decode()


# ---------------------------------------------------------------- yidi serve

def serve_cmd(data: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "serve", "--world", VECTOR_WORLD, "--data", data,
            "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", *extra]


def test_yidi_serve_refuses_to_start_without_a_choice_about_keys(tmp_path, keys):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"paasid,token,fixmedins_code,admdvs\nok,{'k' * 16},H1,\nx,{'k' * 16},H2,4300\n")
    cases = {
        "neither": ([], r"yidi: serve needs --keys FILE .*--no-auth.*"),
        "both": (["--keys", keys, "--no-auth"], r"yidi: --keys and --no-auth exclude each other: give one"),
        "bad line": (["--keys", str(bad)], rf"yidi: --keys {re.escape(str(bad))}:3: fixmedins_code: exactly one "
                                           r"of fixmedins_code and admdvs must be set"),
        "missing file": (["--keys", str(tmp_path / "nope.csv")],
                         rf"yidi: --keys {re.escape(str(tmp_path))}/nope.csv: No such file or directory"),
    }
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = {name: subprocess.Popen(serve_cmd(str(tmp_path / f"data-{i}"), *opts), cwd=ROOT, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, (name, (opts, _)) in enumerate(cases.items())}
    for i, (name, (_, line)) in enumerate(cases.items()):
        out, err = procs[name].communicate(timeout=WAIT_S * 2)
        assert procs[name].returncode == 2, (name, err)
        assert "Traceback" not in err and out == "" and len(err.splitlines()) == 1, (name, err)
        assert re.fullmatch(line + "\n", err), (name, err)
        assert not os.path.exists(tmp_path / f"data-{i}"), name  # refused before the store was opened


class Serve:
    """A `yidi serve` process; its stderr is read line by line (the reload's log lines)."""

    def __init__(self, data: str, *extra: str):
        self.p = subprocess.Popen(serve_cmd(data, *extra), cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.addrs: dict[str, tuple[str, int]] = {}
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.match(r"yidi: (tcp|http|admin) listening on (.+):(\d+)", line)
            if m:
                self.addrs[m.group(1)] = (m.group(2), int(m.group(3)))
            if line.startswith("yidi: ready"):
                return
        self.p.wait(WAIT_S)
        raise AssertionError(f"yidi serve did not start: {self.p.stderr.read()}")

    def stderr_until(self, pattern: str) -> str:
        """Read stderr up to the first line matching `pattern` (each line is read once)."""
        for line in self.p.stderr:
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}: yidi serve ended")

    def metrics(self) -> str:
        host, port = self.addrs["admin"]
        return urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=WAIT_S).read().decode()

    def status(self) -> dict:
        """The status page's document (GET /status.json on the admin listener)."""
        host, port = self.addrs["admin"]
        return json.loads(urllib.request.urlopen(f"http://{host}:{port}/status.json", timeout=WAIT_S).read())

    def client(self) -> FramedClient:
        return FramedClient(*self.addrs["tcp"], timeout_s=WAIT_S)

    def post(self, env: dict, headers: dict) -> tuple[int, dict]:
        c = http.client.HTTPConnection(*self.addrs["http"], timeout=WAIT_S)
        try:
            c.request("POST", HTTP_PATH, body=orjson.dumps(env), headers=headers)
            r = c.getresponse()
            return r.status, orjson.loads(r.read())
        finally:
            c.close()

    def stop(self) -> str:
        self.p.terminate()
        _, err = self.p.communicate(timeout=WAIT_S)
        assert self.p.returncode == 0, err
        return err

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(WAIT_S)


def test_yidi_serve_no_auth_says_so_at_start_and_on_metrics(tmp_path):
    s = Serve(str(tmp_path / "data"), "--no-auth")
    try:
        assert "yidi: auth: none (--no-auth): no credential, signature, scope or sign-in is checked" in s.lines
        assert re.search(r"^yidi_auth_disabled 1\.0$", s.metrics(), re.M)
        line = s.stderr_until(r"warning")
        assert line.startswith("yidi: warning: --no-auth: ") and "any institution" in line
    finally:
        s.kill()


def test_yidi_serve_with_keys_reloads_on_sighup(tmp_path, keys, settlement):
    os.chmod(keys, 0o644)  # readable by others: warned of, not refused
    s = Serve(str(tmp_path / "data"), "--keys", keys)
    try:
        assert f"yidi: auth: 3 credentials from {keys} (hospital systems 2, platforms 1); reload: SIGHUP or POST " \
               f"{RELOAD_PATH} on the admin listener" in s.lines
        assert "can be read or written by other users" in s.stderr_until(r"warning: --keys")
        metrics = s.metrics()
        assert re.search(r"^yidi_auth_disabled 0\.0$", metrics, re.M)
        assert re.search(r"^yidi_auth_credentials 3\.0$", metrics, re.M)
        with s.client() as c:
            sign_no = c.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE)
            assert c.call(at(settlement, HOSP_CODE, "SH1", sign_no))["infcode"] == 0
            revoke_key(keys, HOSP.paasid)
            s.p.send_signal(signal.SIGHUP)
            assert "keys: credentials 2" in s.stderr_until(r"reload \(SIGHUP\)")
            rep = c.call(at(settlement, HOSP_CODE, "SH2", sign_no))
            assert rep["err_code"] == "E_AUTH" and "revoked" in rep["err_msg"]
            assert c.at_eof()
        status, rep = s.post(at(settlement, HOSP_CODE, "SH3", sign_no), signed(HOSP))
        assert status == 401 and rep["err_code"] == "E_AUTH"
        # A bad file on SIGHUP: said in the log, the credentials in force kept.
        with open(keys, "w") as f:
            f.write("paasid,token\n")
        s.p.send_signal(signal.SIGHUP)
        line = s.stderr_until(r"reload \(SIGHUP\)")
        assert f"refused, the state in force kept: {keys}:1: header" in line, line
        with s.client() as c:
            assert c.sign_in(PLATFORM.paasid, PLATFORM.token, HOSP_CODE)
        assert re.search(r'^yidi_reloads_total\{outcome="refused",part="keys"\} 1\.0$', s.metrics(), re.M)
        s.stop()
    finally:
        s.kill()


def test_a_sign_in_survives_a_restart_of_the_hub(tmp_path, keys, settlement):
    data = str(tmp_path / "data")
    s = Serve(data, "--keys", keys)
    try:
        with s.client() as c:
            sign_no = c.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE)
            first = c.call(at(settlement, HOSP_CODE, "RS1", sign_no))
            assert first["infcode"] == 0
        s.stop()
        s = Serve(data, "--keys", keys)
        with s.client() as c:
            c.sign_in(PLATFORM.paasid, PLATFORM.token, HOSP_CODE)  # the connection's own first frame
            # The sign-in made before the restart is in force for its own credential only.
            assert c.call(at(settlement, HOSP_CODE, "RS2", sign_no))["err_code"] == "E_SIGN_IN"
        with s.client() as c:
            c.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE)
            again = c.call(at(settlement, HOSP_CODE, "RS1", sign_no))  # a retry: the journaled reply
            assert again == first
            assert c.call(at(settlement, HOSP_CODE, "RS3", sign_no))["infcode"] == 0
            c.call(sign_out_envelope(sign_no, HOSP_CODE))
        s.stop()
        s = Serve(data, "--keys", keys)
        with s.client() as c:  # signed out before the restart: still signed out after it
            c.sign_in(HOSP.paasid, HOSP.token, HOSP_CODE)
            assert c.call(at(settlement, HOSP_CODE, "RS4", sign_no))["err_code"] == "E_SIGN_IN"
        s.stop()
    finally:
        s.kill()
    check = subprocess.run([sys.executable, "-m", "engine.cli", "check", "--data", data], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert check.returncode == 0, check.stdout + check.stderr
