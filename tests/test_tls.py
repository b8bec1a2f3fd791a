"""TLS on every listener of the hub (docs/contract.md section 10, "TLS"; docs/server.md, "TLS").

Real certificates, made at test time by trustme (a CA, a server certificate for
127.0.0.1 and localhost, client certificates from that CA and from another),
over real loopback sockets; the framed TCP tests run on uvloop and on asyncio.
The start-up refusals run `python -m engine.cli serve` as an operator would.
"""
from __future__ import annotations

import asyncio
import datetime
import http.client
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import types
import warnings

import orjson
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from conftest import ROOT, VECTOR_WORLD, differences
from engine.hub.client import AsyncFramedClient, FramedClient, encode_frame
from engine.hub.http import HTTP_PATH
from engine.hub.tls import TLS_VERSION_MIN, client_context, load_server_tls
from test_server import WAIT_S, ServerThread, memory_store, strip_times

FIRST_REQUESTS = 100  # of the conformance vectors, in order


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The files an operator and the hospital systems would hold."""
    d = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    files = {"dir": str(d)}

    def write(name: str, blob) -> str:
        path = str(d / name)
        blob.write_to_path(path)
        files[name.replace(".", "_").replace("-", "_")] = path
        return path

    write("ca.pem", ca.cert_pem)
    write("other-ca.pem", other_ca.cert_pem)
    for name, leaf in (("server", ca.issue_cert("127.0.0.1", "localhost")),
                       ("client", ca.issue_cert("his.example", common_name="a hospital system")),
                       ("stranger", other_ca.issue_cert("his.example")),
                       ("expired", ca.issue_cert("127.0.0.1", not_after=datetime.datetime(2020, 1, 1)))):
        write(f"{name}.pem", leaf.cert_chain_pems[0])
        write(f"{name}.key", leaf.private_key_pem)
    key = serialization.load_pem_private_key(open(files["server_key"], "rb").read(), None)
    with open(d / "encrypted.key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret")))
    files["encrypted_key"] = str(d / "encrypted.key")
    with open(d / "not-pem.txt", "w") as f:
        f.write("this is a certificate, honest\n")
    files["not_pem"] = str(d / "not-pem.txt")
    with open(d / "mangled.pem", "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END CERTIFICATE-----\n")
    files["mangled"] = str(d / "mangled.pem")
    return types.SimpleNamespace(**files)


class TLSServerThread(ServerThread):
    """A hub and its three listeners, on TLS with `tls`, on a thread and event loop of their own."""

    def __init__(self, store, tls, loop_kind: str = "uvloop"):
        super().__init__(store, loop_kind=loop_kind, tls=tls)

    def wait_for_no_connections(self) -> bool:
        """True once the hub holds no framed connection (within WAIT_S). The hub tells of no
        closed connection, so this asks its loop again each millisecond until then."""
        async def wait():
            deadline = time.monotonic() + WAIT_S
            while self.hub.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            return not self.hub.connections
        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result(WAIT_S + 1)

    def client(self, ctx: ssl.SSLContext | None) -> FramedClient:
        return FramedClient(*self.server.tcp_address, timeout_s=WAIT_S, ssl_context=ctx)

    def https(self, ctx: ssl.SSLContext, admin: bool = False) -> http.client.HTTPSConnection:
        host, port = self.server.admin_address if admin else self.server.http_address
        return http.client.HTTPSConnection(host, port, context=ctx, timeout=WAIT_S)


def https_call(conn: http.client.HTTPSConnection, method: str, path: str, body: bytes | None = None):
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def settlement(reqs, exp, tag: str | None = None) -> dict:
    """A successful settlement of the vectors; with `tag`, a new visit and msgid of it."""
    env = next(e for e, x in zip(reqs, exp) if e.get("infno") == "2207" and x.get("infcode") == 0)
    if tag is None:
        return env
    env = orjson.loads(orjson.dumps(env))
    env["msgid"] = tag
    env["input"]["data"]["mdtrt_id"] = "V" + tag
    return env


def read_to_eof(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def old_client_context(ca_file: str) -> ssl.SSLContext:
    """A client that offers TLS 1.1 at most (and, where this OpenSSL lets it, TLS 1.0 and 1.1 for real)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca_file)
    with warnings.catch_warnings():  # the old versions are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        except (ssl.SSLError, ValueError):
            pass
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


# ---------------------------------------------------------------- the listeners

def test_framed_tcp_over_tls_gives_the_plain_tcp_replies(vector_world, vectors, pki, loop_kind, caplog):
    reqs, exp = vectors
    first = reqs[:FIRST_REQUESTS]
    with TLSServerThread(memory_store(vector_world), None, loop_kind) as plain, plain.client(None) as c:
        want = c.pipeline(first)
    tls = load_server_tls(pki.server_pem, pki.server_key)
    ctx = client_context(pki.ca_pem)
    with caplog.at_level(logging.WARNING), TLSServerThread(memory_store(vector_world), tls, loop_kind) as srv:
        with srv.client(ctx) as c:
            assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
            got = c.pipeline(first)
        # The asyncio client too, on a connection of its own (a query: it changes nothing).
        query = next(e for e in first if e.get("infno") == "1101")

        async def call_async():
            a = await AsyncFramedClient.connect(*srv.server.tcp_address, ssl_context=ctx)
            try:
                return await a.call(query)
            finally:
                await a.close()
        assert strip_times(asyncio.run(call_async())) == strip_times(want[first.index(query)])
        assert srv.wait_for_no_connections()  # both clients' ends have reached the server
    assert [strip_times(r) for r in got] == [strip_times(r) for r in want]
    for i, r in enumerate(got):
        assert not differences(exp[i], r), (i, differences(exp[i], r)[:5])
    # A TLS client's end closes the connection without a complaint in the log.
    assert "eof_received" not in caplog.text


def test_http_gateway_and_admin_over_tls(vector_world, vectors, pki):
    reqs, exp = vectors
    env = settlement(reqs, exp)
    want = exp[reqs.index(env)]
    tls = load_server_tls(pki.server_pem, pki.server_key)
    ctx = client_context(pki.ca_pem)
    with TLSServerThread(memory_store(vector_world), tls) as srv:
        status, body = https_call(srv.https(ctx), "POST", HTTP_PATH, orjson.dumps(env))
        assert status == 200 and not differences(want, orjson.loads(body))
        assert https_call(srv.https(ctx, admin=True), "GET", "/healthz") == (200, b"ok\n")
        status, text = https_call(srv.https(ctx, admin=True), "GET", "/metrics")
        assert status == 200 and b'yidi_committed_total{kind="settle"} 1.0' in text
        # Plain HTTP to either TLS listener gets no HTTP answer.
        for address in (srv.server.http_address, srv.server.admin_address):
            c = http.client.HTTPConnection(*address, timeout=WAIT_S)
            with pytest.raises((http.client.HTTPException, OSError)):
                c.request("GET", "/healthz")
                c.getresponse()
            c.close()
        assert len(srv.store.committed) == 1


def test_plain_tcp_to_a_tls_listener_gets_no_reply(vector_world, vectors, pki, loop_kind):
    reqs, exp = vectors
    env = settlement(reqs, exp)
    tls = load_server_tls(pki.server_pem, pki.server_key)
    with TLSServerThread(memory_store(vector_world), tls, loop_kind) as srv:
        with socket.create_connection(srv.server.tcp_address, timeout=WAIT_S) as s:
            s.sendall(encode_frame(env))
            data = read_to_eof(s)
        # At most a TLS alert record (content type 21), never a reply frame.
        assert not data or data[0] == 0x15, data[:16]
        assert srv.store.committed == []
        with srv.client(client_context(pki.ca_pem)) as c:  # and the listener still serves
            assert c.call(env)["infcode"] == 0
        assert [ch.msgid for ch in srv.store.committed] == [env["msgid"]]


def test_tls_below_1_2_is_refused_on_every_listener(vector_world, pki):
    tls = load_server_tls(pki.server_pem, pki.server_key, pki.ca_pem)
    assert TLS_VERSION_MIN == ssl.TLSVersion.TLSv1_2
    assert tls.context.minimum_version == tls.admin_context.minimum_version == ssl.TLSVersion.TLSv1_2
    old = old_client_context(pki.ca_pem)
    with TLSServerThread(memory_store(vector_world), tls) as srv:
        for address in (srv.server.tcp_address, srv.server.http_address, srv.server.admin_address):
            with socket.create_connection(address, timeout=WAIT_S) as raw:
                # Whether this OpenSSL offers TLS 1.1 and the hub refuses it, or cannot even
                # offer it: no handshake.
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    old.wrap_socket(raw, server_hostname="127.0.0.1")
        # TLS 1.2 exactly is served, on each listener.
        v12 = client_context(pki.ca_pem, pki.client_pem, pki.client_key)
        v12.maximum_version = ssl.TLSVersion.TLSv1_2
        with srv.client(v12) as c:
            assert c.sock.version() == "TLSv1.2"
            assert c.call({"infno": "9999", "msgid": "v12"})["err_code"] == "E_UNSUPPORTED"
        assert https_call(srv.https(v12, admin=True), "GET", "/healthz") == (200, b"ok\n")
        status, body = https_call(srv.https(v12), "POST", HTTP_PATH, b'{"infno": "9999", "msgid": "h12"}')
        assert status == 200 and orjson.loads(body)["err_code"] == "E_UNSUPPORTED"


def test_a_client_ca_requires_good_client_certificates(vector_world, vectors, pki, loop_kind):
    reqs, exp = vectors
    a, b = settlement(reqs, exp, "TLS-A"), settlement(reqs, exp, "TLS-B")
    tls = load_server_tls(pki.server_pem, pki.server_key, pki.ca_pem)
    no_cert = client_context(pki.ca_pem)
    stranger = client_context(pki.ca_pem, pki.stranger_pem, pki.stranger_key)
    good = client_context(pki.ca_pem, pki.client_pem, pki.client_key)
    with TLSServerThread(memory_store(vector_world), tls, loop_kind) as srv:
        for ctx in (no_cert, stranger):
            # TLS 1.3 finishes the client's side of the handshake before the hub checks the
            # certificate: the refusal arrives as an alert or a close, in place of the reply.
            with pytest.raises((ssl.SSLError, ConnectionError)):
                with srv.client(ctx) as c:
                    c.call(a)
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                https_call(srv.https(ctx), "POST", HTTP_PATH, orjson.dumps(a))
        assert srv.store.committed == []
        with srv.client(good) as c:
            assert c.call(a)["infcode"] == 0
        status, body = https_call(srv.https(good), "POST", HTTP_PATH, orjson.dumps(b))
        assert status == 200 and orjson.loads(body)["infcode"] == 0
        assert [ch.msgid for ch in srv.store.committed] == ["TLS-A", "TLS-B"]
        # The admin listener asks for no client certificate (docs/server.md, "TLS").
        assert https_call(srv.https(no_cert, admin=True), "GET", "/healthz") == (200, b"ok\n")


# ---------------------------------------------------------------- the files, checked at start

def test_validity_is_read_from_the_certificates(pki):
    tls = load_server_tls(pki.server_pem, pki.server_key, pki.ca_pem)
    for path, v in ((pki.server_pem, tls.validity), (pki.ca_pem, tls.client_ca_validity[0]),
                    (pki.expired_pem, load_server_tls(pki.expired_pem, pki.expired_key).validity)):
        seen = ssl._ssl._test_decode_cert(path)  # OpenSSL's reading, as the oracle
        assert v.not_before.timestamp() == ssl.cert_time_to_seconds(seen["notBefore"])
        assert v.not_after.timestamp() == ssl.cert_time_to_seconds(seen["notAfter"])
    utc = datetime.timezone.utc
    assert tls.warnings(datetime.datetime(2026, 1, 1, tzinfo=utc)) == []
    assert tls.warnings(datetime.datetime(1999, 1, 1, tzinfo=utc)) == [
        f"--tls-cert {pki.server_pem}: not valid before 2000-01-01 00:00 UTC: clients will refuse the handshake",
        f"--tls-client-ca {pki.ca_pem}: certificate 1: not valid before 2000-01-01 00:00 UTC: "
        f"client certificates it signed will be refused"]
    late = tls.warnings(datetime.datetime(3001, 1, 1, tzinfo=utc))
    assert [w.split(": ")[1] for w in late] == ["expired on 3000-01-01 00:00 UTC", "certificate 1"]


def refusals(p) -> dict[str, tuple[list[str], str]]:
    """Each bad start: its options, and the one line that must refuse it."""
    cert, key = ["--tls-cert", p.server_pem], ["--tls-key", p.server_key]
    return {
        "cert alone": (cert, r"--tls-cert needs --tls-key \(the certificate's private key\)"),
        "key alone": (key, r"--tls-key needs --tls-cert \(the certificate of that key\)"),
        "client CA alone": (["--tls-client-ca", p.ca_pem], r"--tls-client-ca needs --tls-cert and --tls-key .*"),
        "no such cert": (["--tls-cert", p.dir + "/nope.pem", *key],
                         rf"--tls-cert {re.escape(p.dir)}/nope.pem: cannot read it: No such file or directory"),
        "key is a folder": ([*cert, "--tls-key", p.dir],
                            rf"--tls-key {re.escape(p.dir)}: cannot read it: Is a directory"),
        "cert not PEM": (["--tls-cert", p.not_pem, *key],
                         rf"--tls-cert {re.escape(p.not_pem)}: not a PEM certificate .*"),
        "cert mangled": (["--tls-cert", p.mangled, *key],
                         rf"--tls-cert {re.escape(p.mangled)}: certificate 1 is not a valid X\.509 certificate in PEM"),
        "key not PEM": ([*cert, "--tls-key", p.not_pem],
                        rf"--tls-key {re.escape(p.not_pem)}: not a PEM private key .*"),
        "key encrypted": ([*cert, "--tls-key", p.encrypted_key],
                          rf"--tls-key {re.escape(p.encrypted_key)}: an encrypted private key: .*"),
        "key of another certificate": ([*cert, "--tls-key", p.client_key],
                                       rf"--tls-key {re.escape(p.client_key)}: does not match the certificate in "
                                       rf"--tls-cert {re.escape(p.server_pem)}"),
        "client CA not PEM": ([*cert, *key, "--tls-client-ca", p.not_pem],
                              rf"--tls-client-ca {re.escape(p.not_pem)}: not a PEM certificate .*"),
    }


def serve_command(data_dir: str, *extra: str) -> list[str]:
    """`yidi serve` with `extra` options; with --no-auth unless they give --keys (these tests are about TLS)."""
    auth = [] if "--keys" in extra else ["--no-auth"]
    return [sys.executable, "-m", "engine.cli", "serve", "--world", VECTOR_WORLD, "--data", data_dir,
            "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", *auth, *extra]


def test_yidi_serve_refuses_bad_tls_options_in_one_line(tmp_path, pki):
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = {}
    for name, (options, _) in refusals(pki).items():  # all at once: each is a Python start-up
        data = str(tmp_path / re.sub(r"\W", "-", name))
        procs[name] = (data, subprocess.Popen(serve_command(data, *options), cwd=ROOT, env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for name, (_, line) in refusals(pki).items():
        data, p = procs[name]
        out, err = p.communicate(timeout=WAIT_S * 2)
        assert p.returncode == 2, (name, p.returncode, err)
        assert "Traceback" not in err and out == "", (name, out, err)
        assert len(err.splitlines()) == 1 and re.fullmatch("yidi: " + line + "\n", err), (name, err)
        assert not os.path.exists(data), name  # refused before the store was opened


def start_serve(data_dir: str, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    p = subprocess.Popen(serve_command(data_dir, *extra), cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("yidi: ready"):
            return p, lines
    p.wait(WAIT_S)
    raise AssertionError(f"yidi serve did not start: {p.stderr.read()}")


def stop(p: subprocess.Popen) -> str:
    p.terminate()
    _, err = p.communicate(timeout=WAIT_S)
    assert p.returncode == 0, err
    return err


def test_yidi_serve_on_tls_says_so_and_serves(tmp_path, vectors, pki):
    reqs, exp = vectors
    p, lines = start_serve(str(tmp_path / "data"), "--tls-cert", pki.server_pem, "--tls-key", pki.server_key,
                           "--tls-client-ca", pki.ca_pem)
    try:
        addrs = {}
        for line in lines:
            m = re.fullmatch(r"yidi: (tcp|http|admin) listening on 127\.0\.0\.1:(\d+) \(tls\)", line)
            if m:
                addrs[m.group(1)] = ("127.0.0.1", int(m.group(2)))
        assert sorted(addrs) == ["admin", "http", "tcp"], lines
        assert (f"yidi: tls: certificate {pki.server_pem} valid until 3000-01-01 00:00 UTC; client certificates "
                f"signed by {pki.ca_pem} required on tcp and http, not on admin") in lines
        with FramedClient(*addrs["tcp"], timeout_s=WAIT_S,
                          ssl_context=client_context(pki.ca_pem, pki.client_pem, pki.client_key)) as c:
            assert not differences(exp[0], c.call(reqs[0]))
        conn = http.client.HTTPSConnection(*addrs["admin"], context=client_context(pki.ca_pem), timeout=WAIT_S)
        assert https_call(conn, "GET", "/healthz") == (200, b"ok\n")
    finally:
        err = stop(p)
    assert [line for line in err.splitlines() if "warning" in line and "--no-auth" not in line] == [], err


def test_yidi_serve_warns_of_an_expired_certificate_and_starts(tmp_path, pki):
    p, lines = start_serve(str(tmp_path / "data"), "--tls-cert", pki.expired_pem, "--tls-key", pki.expired_key)
    err = stop(p)
    assert f"yidi: warning: --tls-cert {pki.expired_pem}: expired on 2020-01-01 00:00 UTC: clients will refuse " \
           f"the handshake\n" in err
    assert any(line.endswith(" (tls)") and "tcp listening" in line for line in lines)
