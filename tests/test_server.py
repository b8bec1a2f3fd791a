"""The hub server on real loopback sockets (docs/contract.md section 7, "Transports").

Every TCP test runs on uvloop and on the plain asyncio loop. In-process servers
run on a thread of their own; the tests talk to them through engine.hub.client as
any hospital system would. Synchronisation is on events and replies, never on
sleeps: where a test must know that the server has reached a state (a commit
has started, a request was refused), the store or the hub's observer tells it.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import types
import urllib.request
from decimal import Decimal

import msgspec
import orjson
import pytest

from conftest import ROOT, VECTOR_WORLD, VECTORS, differences
from pg_fixtures import store_flag
from engine.hub.client import ConnectionClosed, FramedClient, encode_frame
from engine.core.engine import Engine
from engine.contract.protocol import FRAME_BYTES_MAX, SETTLE_INFNOS, STEP_INFNOS
from engine.reference.oracle import ReferenceEngine
from engine.hub.http import HTTP_PATH
from engine.hub.hub import Hub
from engine.hub.limits import Limits
from engine.hub.serve import Server, new_event_loop_factory

TIME_FIELDS = ("refmsg_time", "respond_time", "setl_time")
WAIT_S = 30.0  # an upper bound on any wait for an event; reaching it is a failure


class ServerThread:
    """A hub and its listeners on a thread and event loop of their own.

    `keyring` (engine.hub.auth.Keyring) makes the transports verify every request
    (contract section 10); the tests of other features leave it None, which is the
    hub of `yidi serve --no-auth`. `reloadable` are the parts Server.reload reads again.
    """

    def __init__(self, store, limits: Limits = Limits(), loop_kind: str = "uvloop", *, http: bool = True,
                 observer=None, tls=None, keyring=None, reloadable=()):
        self.store, self.limits, self.loop_kind, self.http, self.observer = store, limits, loop_kind, http, observer
        self.tls = tls  # engine.hub.tls.ServerTLS: every listener on TLS
        self.keyring, self.reloadable = keyring, reloadable
        self.ready = threading.Event()
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main():
            self.loop = asyncio.get_running_loop()
            self.hub = Hub(self.store, self.limits, observer=self.observer)
            self.server = Server(self.hub, ("127.0.0.1", 0), ("127.0.0.1", 0) if self.http else None,
                                 ("127.0.0.1", 0) if self.http else None, self.tls, keyring=self.keyring,
                                 reloadable=self.reloadable)
            await self.server.start()
            self.ready.set()
            return await self.server.run()

        try:
            with asyncio.Runner(loop_factory=new_event_loop_factory(self.loop_kind)) as r:
                self.exit_code = r.run(main())
        except BaseException as e:  # surfaced by __exit__
            self.error = e
            self.ready.set()

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        assert self.ready.wait(WAIT_S)
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            try:
                self.loop.call_soon_threadsafe(self.server.stop)
            except RuntimeError:  # the loop closed in between: the server stopped by itself
                pass
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error

    @property
    def tcp(self) -> tuple[str, int]:
        return self.server.tcp_address

    def client(self, **kw) -> FramedClient:
        return FramedClient(*self.tcp, timeout_s=WAIT_S, **kw)

    def call_in_loop(self, fn):
        """Run fn() on the server's loop and return its result (to read server state safely)."""
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(WAIT_S)

    def http_call(self, body: bytes, path: str = HTTP_PATH, headers: dict | None = None) -> tuple[int, bytes]:
        c = http.client.HTTPConnection(*self.server.http_address, timeout=WAIT_S)
        try:
            c.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def http_get(self, path: str, admin: bool = True) -> tuple[int, bytes]:
        c = http.client.HTTPConnection(*(self.server.admin_address if admin else self.server.http_address),
                                       timeout=WAIT_S)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()


class MemoryStore:
    """A test double of a DurableStore (engine.hub.hub): the changes live and die with the test."""

    data_dir = None  # no journal on disk: the hub registers no pre-payment gauges
    fold_s_total = 0.0

    def __init__(self, engine):
        self.engine = engine
        self.committed: list = []  # every change, in commit order

    def prepare(self, changes: list) -> list:
        return changes

    def write(self, prepared: list) -> None:
        self.committed.extend(prepared)

    def close(self) -> None:
        pass

    def unfolded_rows(self) -> int:
        return 0


class GatedStore(MemoryStore):
    """A store whose commits wait for the test to open a gate; it says when a commit has begun."""

    def __init__(self, engine):
        super().__init__(engine)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, prepared):
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        super().write(prepared)


def memory_store(world) -> MemoryStore:
    return MemoryStore(Engine(world))


def strip_times(reply: dict) -> dict:
    """A reply without its clock fields, which differ between runs by design."""
    out = {k: v for k, v in reply.items() if k not in TIME_FIELDS}
    o = out.get("output")
    if isinstance(o, dict) and isinstance(o.get("setlinfo"), dict):
        o = dict(o)
        o["setlinfo"] = {k: v for k, v in o["setlinfo"].items() if k not in TIME_FIELDS}
        out["output"] = o
    return out


def same_numbers(a, b, path="") -> list[str]:
    """Structural equality where decimal strings and JSON numbers compare by value."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}: keys {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
        for k in a.keys() & b.keys():
            out += same_numbers(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same_numbers(x, y, f"{path}[{i}]")]
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return [] if a == b else [f"{path}: {a!r} vs {b!r}"]
    try:
        ok = Decimal(str(a)) == Decimal(str(b))
    except ArithmeticError:
        ok = a == b
    return [] if ok else [f"{path}: {a!r} vs {b!r}"]


def clone_settlements(reqs, exp, n: int, tag: str) -> list[dict]:
    """n copies of one successful outpatient settlement of the vectors, each a new visit and msgid.

    The person pays from a personal account, so the balance, the deductible and the
    annual cap make every reply depend on the settlements before it.
    """
    best = None
    for env, want in zip(reqs, exp):
        if env.get("infno") == "2207" and want.get("infcode") == 0:
            s = want["output"]["setlinfo"]
            ratio = Decimal(s["balc"]) / Decimal(s["medfee_sumamt"])
            if Decimal(s["acct_pay"]) > 0 and (best is None or ratio > best[0]):
                best = (ratio, env)
    assert best is not None and best[0] > 5, "no outpatient settlement paid from a rich personal account"
    env = best[1]
    out = []
    for i in range(n):
        e = json.loads(json.dumps(env))
        e["msgid"] = f"{tag}{i:06d}"
        e["input"]["data"]["mdtrt_id"] = f"V{tag}{i:06d}"
        out.append(e)
    return out


# ---------------------------------------------------------------- framed TCP

def test_pipelined_replies_in_order(vector_world, vectors, loop_kind):
    reqs, exp = vectors
    with ServerThread(memory_store(vector_world), loop_kind=loop_kind, http=False) as srv, srv.client() as c:
        c.send_many(reqs)  # every request before the first reply is read
        got = [c.recv() for _ in reqs]
    for i, (env, want, reply) in enumerate(zip(reqs, exp, got)):
        assert reply["inf_refmsgid"] == (env["msgid"] if isinstance(env.get("msgid"), str) else ""), i
        assert not differences(want, reply), (i, differences(want, reply)[:5])


class MarkingStore(MemoryStore):
    """Hands the hub, with each batch, the MessagePack of each step-wise reply as the store would encode it for
    its `step` row (DurableStore: replies_msgpack), err_msg marked: what the client gets shows whose bytes
    the hub sent."""

    MARK = "encoded by the store"

    def __init__(self, engine, serial: bool):
        super().__init__(engine)
        self.serial = serial
        engine.step_changes = []  # this store takes them

    def prepare(self, changes):
        from engine.contract.wire import MSGPACK

        steps = self.engine.take_step_changes()
        encoded = {id(c.reply): MSGPACK.encoder.encode(msgspec.structs.replace(c.reply, err_msg=self.MARK))
                   for c in steps if c.reply is not None}
        return types.SimpleNamespace(changes=changes, replies_msgpack=encoded, steps=steps)

    def write(self, prepared) -> None:
        self.committed.extend(prepared.changes)


@pytest.mark.parametrize("serial", [False, True], ids=["batch-loop", "serial-store"])
def test_framed_replies_are_the_bytes_the_store_encoded_for_step_rows(vector_world, serial):
    """A step-wise transaction's reply goes out as the bytes its store encoded for the step row (rendered once);
    every other reply is encoded by the hub, on both the batch loop and a serial store's writer thread."""
    from conftest import vector_bodies

    bodies = vector_bodies(os.path.join(VECTORS, "stepwise"))[:300]
    envs = [orjson.loads(b) for b in bodies]
    store = MarkingStore(Engine(vector_world, clock="inf_time"), serial)
    with ServerThread(store, http=False) as srv, srv.client() as c:
        c.send_many(envs)
        got = [c.recv() for _ in envs]
    marked = [(e["infno"], r["infcode"]) for e, r in zip(envs, got) if r["err_msg"] == MarkingStore.MARK]
    assert len(marked) > 50 and {infno for infno, _ in marked} <= STEP_INFNOS, marked[:10]
    others = [e["infno"] for e, r in zip(envs, got) if r["err_msg"] != MarkingStore.MARK]
    assert any(infno in SETTLE_INFNOS for infno in others), "settlements are the hub's encoding"


def test_concurrent_connections_same_person_equal_a_serial_order(vector_world, vectors, loop_kind):
    reqs, exp = vectors
    n_conn, per_conn = 6, 25
    envs = clone_settlements(reqs, exp, n_conn * per_conn, "C")
    store = memory_store(vector_world)
    replies: dict[str, dict] = {}
    errors = []
    start = threading.Barrier(n_conn)
    with ServerThread(store, Limits(batch_max=8), loop_kind=loop_kind, http=False) as srv:
        def run(k: int):
            try:
                mine = envs[k::n_conn]
                with srv.client() as c:
                    start.wait(WAIT_S)
                    for env, r in zip(mine, c.pipeline(mine, window=4)):
                        replies[env["msgid"]] = r
            except BaseException as e:
                errors.append(e)
        threads = [threading.Thread(target=run, args=(k,)) for k in range(n_conn)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
    assert not errors, errors
    order = [ch.msgid for ch in store.committed]
    assert sorted(order) == sorted(e["msgid"] for e in envs)  # each committed exactly once
    pos = {m: i for i, m in enumerate(order)}
    for k in range(n_conn):  # a connection's requests keep their order
        mine = [pos[e["msgid"]] for e in envs[k::n_conn]]
        assert mine == sorted(mine)
    by_msgid = {e["msgid"]: e for e in envs}
    ref = ReferenceEngine(vector_world)
    balances = set()
    for m in order:  # the serial order the server chose, replayed by the reference
        want = strip_times(ref.handle(by_msgid[m]))
        got = strip_times(replies[m])
        assert got["infcode"] == 0, got
        assert not same_numbers(want["output"]["setlinfo"], got["output"]["setlinfo"]), m
        assert not differences(want, got), (m, differences(want, got)[:5])
        balances.add(got["output"]["setlinfo"]["balc"])
    assert len(balances) > 1  # the replies did depend on the order


def test_undecodable_body_gets_e_schema_and_the_connection_stays(vector_world, vectors, loop_kind):
    reqs, exp = vectors
    ok = next(i for i, e in enumerate(exp) if e.get("infcode") == 0)
    bodies = [b"\xc1", b"", msgspec.msgpack.encode([1, 2, 3]), msgspec.msgpack.encode({"infno": 2207}),
              b"\x81\xa5infno",  # invalid byte, empty, not a map, a bad field, truncated map
              # unhashable infnos: the server's own bookkeeping (metrics labels) must not trip on them
              msgspec.msgpack.encode({"infno": [2207], "msgid": "L"}),
              msgspec.msgpack.encode({"infno": {"a": 1}, "msgid": "M"})]
    with ServerThread(memory_store(vector_world), loop_kind=loop_kind, http=False) as srv, srv.client() as c:
        for b in bodies:
            r = c.call(b)
            assert r["infcode"] == -1 and r["err_code"] == "E_SCHEMA", (b, r)
        r = c.call(reqs[ok])
        assert not differences(exp[ok], r)


def test_oversize_length_gets_e_limit_then_close(vector_world, vectors, loop_kind):
    reqs, exp = vectors
    ok = next(i for i, e in enumerate(exp) if e.get("infcode") == 0)
    with ServerThread(memory_store(vector_world), loop_kind=loop_kind, http=False) as srv:
        with srv.client() as c:
            # An owed reply first, then the oversize length: the reply still comes, in order.
            c.send_raw(encode_frame(reqs[ok]) + (FRAME_BYTES_MAX + 1).to_bytes(4, "big") + b"x" * 1000)
            assert not differences(exp[ok], c.recv())
            r = c.recv()
            assert r["err_code"] == "E_LIMIT" and r["infcode"] == -1
            assert c.at_eof()
        with srv.client() as c:  # exactly at the limit is not oversize: the server waits for the body
            c.send_raw(FRAME_BYTES_MAX.to_bytes(4, "big"))
            c.send_raw(b"\x00" * 4096)
        with srv.client() as c:  # and the server still serves
            assert c.call({"infno": "9999", "msgid": "x"})["err_code"] == "E_UNSUPPORTED"


def test_client_disconnecting_mid_frame(vector_world, vectors, loop_kind):
    reqs, exp = vectors
    env = clone_settlements(reqs, exp, 1, "D")[0]
    store = memory_store(vector_world)
    with ServerThread(store, loop_kind=loop_kind, http=False) as srv:
        with srv.client() as c:  # a header alone
            c.send_raw(b"\x00\x00")
        with srv.client() as c:  # a whole request, then half of the next frame
            f = encode_frame(env)
            c.send_raw(f + f[: len(f) // 2])
        with srv.client() as c:  # the retry finds the settlement once, never twice
            first = c.call(env)
            again = c.call(env)
        assert first["infcode"] == 0 and strip_times(first) == strip_times(again)
        assert [ch.msgid for ch in store.committed].count(env["msgid"]) == 1


def test_slow_reader_is_bounded(vector_world, vectors, loop_kind):
    """A client that sends without reading: the server stops reading it, and others are still served."""
    reqs, exp = vectors
    limits = Limits(inflight_per_connection_max=8, write_buffer_bytes_max=64 * 1024)
    pre = next(e for e, x in zip(reqs, exp) if e.get("infno") == "2206" and x.get("infcode") == 0)
    frames = encode_frame(pre) * (64 * 2**20 // len(encode_frame(pre)))  # 64 MiB: more than any socket buffers
    with ServerThread(memory_store(vector_world), limits, loop_kind=loop_kind, http=False) as srv:
        s = socket.create_connection(srv.tcp)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.setblocking(False)
        sent = 0
        while sent < len(frames):
            _, w, _ = select.select([], [s], [], 2.0)
            if not w:
                break  # the server has stopped reading us
            try:
                sent += s.send(frames[sent:sent + 65536])
            except BlockingIOError:
                pass
        assert sent < len(frames), f"the server read {sent} bytes from a client that never reads"

        def state():
            (conn,) = [c for c in srv.hub.connections]
            return len(conn.pending), conn.transport.get_write_buffer_size(), len(conn.buf), conn.read_paused
        pending, wbuf, rbuf, paused = srv.call_in_loop(state)
        assert paused and pending <= limits.inflight_per_connection_max
        assert wbuf <= limits.write_buffer_bytes_max + limits.batch_max * 16 * 1024
        assert rbuf <= 4 * 1024 * 1024
        with srv.client() as c:
            assert c.call({"infno": "9999", "msgid": "y"})["err_code"] == "E_UNSUPPORTED"
        s.close()


class SteppedStore(MemoryStore):
    """Each commit waits for a gate of its own; says when each batch has been prepared."""

    def __init__(self, engine, batches: int):
        super().__init__(engine)
        self.gates = [threading.Event() for _ in range(batches)]
        self.prepared = [threading.Event() for _ in range(batches)]
        self._n_prepared = 0
        self._n_written = 0

    def prepare(self, changes):
        self.prepared[self._n_prepared].set()
        self._n_prepared += 1
        return changes

    def write(self, prepared):
        k = self._n_written
        self._n_written += 1
        assert self.gates[k].wait(WAIT_S), "the test never opened the gate"
        super().write(prepared)


def test_no_reply_leaves_before_its_batch_is_durable(vector_world, vectors, loop_kind):
    """Batch 2 is computed (and encoded) while batch 1 is written; releasing batch 1
    flushes the connection, which must not carry batch 2's reply before its write."""
    reqs, exp = vectors
    a, b = clone_settlements(reqs, exp, 2, "D")
    store = SteppedStore(Engine(vector_world), 2)
    limits = Limits(batch_max=1, batch_window_ms=0, commits_inflight_max=2)
    with ServerThread(store, limits, loop_kind=loop_kind) as srv, srv.client() as c:
        c.send(a)
        assert store.prepared[0].wait(WAIT_S)
        c.send(b)
        assert store.prepared[1].wait(WAIT_S)  # batch 2 computed while batch 1 waits for its write
        store.gates[0].set()
        assert c.recv()["inf_refmsgid"] == a["msgid"]
        # Released with batch 1's flush, b's frame would already be here: the same
        # send() on loopback. Neither buffered nor readable means it was held back.
        assert not c._buf
        assert select.select([c.sock], [], [], 0)[0] == []
        assert [ch.msgid for ch in store.committed] == [a["msgid"]]
        store.gates[1].set()
        rb = c.recv()
        assert rb["inf_refmsgid"] == b["msgid"] and rb["infcode"] == 0
        assert [ch.msgid for ch in store.committed] == [a["msgid"], b["msgid"]]


def test_e_busy_under_overload_loses_nothing(vector_world, vectors, loop_kind):
    reqs, exp = vectors
    envs = clone_settlements(reqs, exp, 10, "B")
    store = GatedStore(Engine(vector_world))
    busy = threading.Event()
    limits = Limits(batch_max=2, queue_max=4, batch_window_ms=0, commits_inflight_max=1)

    def observer(event, n):
        if event == "busy" and n >= 5:
            busy.set()
    with ServerThread(store, limits, loop_kind=loop_kind, observer=observer) as srv, srv.client() as c:
        c.send(envs[0])
        assert store.entered.wait(WAIT_S)  # batch [0] is committing: the engine waits
        c.send_many(envs[1:])  # 4 fit the queue, 5 do not
        assert busy.wait(WAIT_S)
        status, body = srv.http_call(orjson.dumps(envs[0]))  # the queue is still full: refused at once
        assert status == 503 and orjson.loads(body)["err_code"] == "E_BUSY"
        store.gate.set()
        got = [c.recv() for _ in envs]
        assert [r["inf_refmsgid"] for r in got] == [e["msgid"] for e in envs]
        assert [r["infcode"] for r in got[:5]] == [0] * 5
        assert all(r["err_code"] == "E_BUSY" and r["output"] == {} for r in got[5:])
        # Nothing refused was done: the store holds exactly the five, and the
        # refused ones settle normally when retried.
        assert [ch.msgid for ch in store.committed] == [e["msgid"] for e in envs[:5]]
        retried = c.pipeline(envs[5:], window=limits.queue_max)
        assert all(r["infcode"] == 0 for r in retried), [(r["inf_refmsgid"], r.get("err_code"), r["err_msg"]) for r in retried]
        final = got[:5] + retried
    ref = ReferenceEngine(vector_world)
    for env, r in zip(envs, final):
        want = strip_times(ref.handle(env))
        assert not differences(want, strip_times(r)), differences(want, strip_times(r))[:5]


class FailingStore(MemoryStore):
    """A store whose second write fails, as a full disk would."""

    def write(self, prepared):
        if self.committed:
            raise OSError("disk full")
        super().write(prepared)


def test_a_store_without_the_hubs_interface_is_refused_by_name(vector_world):
    class NoWrite:
        engine, data_dir, fold_s_total = Engine(vector_world), None, 0.0

        def prepare(self, changes):
            return changes

        def close(self):
            pass

    with pytest.raises(TypeError, match=r"NoWrite is not a DurableStore: it lacks write, unfolded_rows"):
        Hub(NoWrite(), Limits())


def test_a_failed_commit_stops_everything(vector_world, vectors, loop_kind):
    reqs, exp = vectors
    envs = clone_settlements(reqs, exp, 2, "F")
    srv = ServerThread(FailingStore(Engine(vector_world)), loop_kind=loop_kind, http=False)
    with srv, srv.client() as c:
        assert c.call(envs[0])["infcode"] == 0
        c.send(envs[1])
        with pytest.raises((ConnectionClosed, ConnectionResetError)):
            c.recv()  # never a reply that the disk does not hold
        srv.thread.join(WAIT_S)  # the server stops by itself
        assert not srv.thread.is_alive()
    assert srv.exit_code == 3 and isinstance(srv.hub.failed, OSError)
    assert [ch.msgid for ch in srv.store.committed] == [envs[0]["msgid"]]


# ---------------------------------------------------------------- HTTP

MONEY_NUMBER = re.compile(rb'"(?:medfee_sumamt|hifp_pay|balc|fund_payamt|inscp_scp_amt|det_item_fee_sumamt)":'
                          rb'(-?[0-9]+\.[0-9]+|"[^"]*")')


def test_http_and_tcp_give_the_same_replies(vector_world, vectors, loop_kind):
    reqs, exp = vectors
    with ServerThread(memory_store(vector_world), loop_kind=loop_kind) as a, \
            ServerThread(memory_store(vector_world), loop_kind=loop_kind) as b, a.client() as c:
        tcp = c.pipeline(reqs)
        conn = http.client.HTTPConnection(*b.server.http_address, timeout=WAIT_S)  # one keep-alive connection
        n_money = 0
        for i, env in enumerate(reqs):
            conn.request("POST", HTTP_PATH, body=orjson.dumps(env), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            for m in MONEY_NUMBER.finditer(body):  # money is a JSON number with two decimals
                assert re.fullmatch(rb"-?[0-9]+\.[0-9]{2}", m.group(1)), (i, m.group(0))
                n_money += 1
            h = json.loads(body, parse_float=Decimal)
            diff = same_numbers(strip_times(tcp[i]), strip_times(h))
            assert not diff, (i, diff[:5])
            assert not differences(exp[i], h), (i, differences(exp[i], h)[:5])
        conn.close()
        assert n_money > 1000
        # A retry over HTTP of what TCP committed: the journaled reply, not E_MSGID_REUSED.
        k = next(i for i, e in enumerate(reqs) if e.get("infno") == "2207" and exp[i]["infcode"] == 0)
        status, body = a.http_call(orjson.dumps(reqs[k]))
        assert status == 200 and not same_numbers(strip_times(json.loads(body)), strip_times(tcp[k]))


def test_http_limits_errors_health_and_metrics(vector_world, vectors):
    reqs, exp = vectors
    limits = Limits(http_body_bytes_max=64 * 1024)
    with ServerThread(memory_store(vector_world), limits) as srv:
        assert srv.http_get("/healthz") == (200, b"ok\n")
        # The gateway serves the gateway only: metrics and health are the admin listener's.
        assert srv.http_get("/metrics", admin=False)[0] == 404
        assert srv.http_get("/healthz", admin=False)[0] == 404
        status, body = srv.http_call(b"{not json")
        assert status == 200 and orjson.loads(body)["err_code"] == "E_SCHEMA"
        status, body = srv.http_call(b"[" + b"1," * 40000 + b"1]")
        assert status == 413 and orjson.loads(body)["err_code"] == "E_LIMIT"
        srv.http_call(orjson.dumps(reqs[0]))
        with srv.client() as c:
            c.call(reqs[0])
        status, text = srv.http_get("/metrics")
        assert status == 200
        text = text.decode()
        for want in ('yidi_requests_total{err_code="",infno="2304",transport="http"} 1.0',
                     'yidi_requests_total{err_code="",infno="2304",transport="tcp"} 1.0',
                     'yidi_requests_total{err_code="E_SCHEMA",infno="invalid",transport="http"} 1.0',
                     "yidi_batch_size_count", "yidi_commit_seconds_bucket", "yidi_queue_depth 0.0",
                     'yidi_request_latency_seconds_count{transport="tcp"} 1.0', 'yidi_committed_total{kind="settle"} 1.0'):
            assert want in text, want


# ---------------------------------------------------------------- the process: yidi serve

def start_serve(data_dir: str, loop: str, *extra: str) -> tuple[subprocess.Popen, dict]:
    """`yidi serve` on the vectors' world, its store in `data_dir` (a folder, or a PostgreSQL URL: pg_fixtures);
    `extra` options (the tests of section 10 give --keys, the others --no-auth)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--world", VECTOR_WORLD, *store_flag(data_dir),
         "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--loop", loop, *extra],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    addrs = {}
    for line in p.stdout:
        line = line.decode()
        m = re.match(r"yidi: (tcp|http|admin) listening on (.+):(\d+)", line)
        if m:
            addrs[m.group(1)] = (m.group(2), int(m.group(3)))
        if line.startswith("yidi: ready"):
            return p, addrs
    raise AssertionError(f"yidi serve did not start: {p.stderr.read().decode()}")


def test_sigterm_drains_and_exits_cleanly(tmp_path, vectors, loop_kind):
    reqs, exp = vectors
    p, addrs = start_serve(str(tmp_path / "data"), loop_kind, "--no-auth")
    try:
        with FramedClient(*addrs["tcp"], timeout_s=WAIT_S) as c:
            batch = reqs[:150]
            c.send_many(batch)
            first = c.recv()  # the server is at work on them
            p.send_signal(signal.SIGTERM)
            got = [first]
            while True:
                try:
                    got.append(c.recv())
                except (ConnectionClosed, ConnectionResetError):
                    break
        out, err = p.communicate(timeout=WAIT_S)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err.decode()
    assert b"drained and stopped" in out
    # Replies come for a prefix of the requests, in order: the admitted ones answered
    # in full, then E_BUSY for anything read after the signal.
    assert [r["inf_refmsgid"] for r in got] == [e["msgid"] if isinstance(e.get("msgid"), str) else ""
                                               for e in batch[: len(got)]]
    codes = [r.get("err_code") == "E_BUSY" for r in got]
    assert codes == sorted(codes)
    for i, r in enumerate(got):
        if r.get("err_code") != "E_BUSY":
            assert not differences(exp[i], r), (i, differences(exp[i], r)[:5])


def test_restart_after_sigkill_answers_retries_from_the_store(tmp_path, vector_world, vectors, loop_kind):
    pytest.importorskip("engine.store", reason="engine.store has not landed yet")
    reqs, exp = vectors
    data = str(tmp_path / "data")
    commits = [i for i, e in enumerate(reqs) if e.get("infno") in ("2207", "2304", "2208", "2305")]
    clones = clone_settlements(reqs, exp, 40, "K")
    p, addrs = start_serve(data, loop_kind, "--no-auth")
    try:
        with FramedClient(*addrs["tcp"], timeout_s=WAIT_S) as c:
            first = c.pipeline(reqs)
            c.send_many(clones)  # new settlements: 10 acknowledged, the rest in flight at the kill
            acked = [c.recv() for _ in range(10)]
            p.send_signal(signal.SIGKILL)
            p.wait(WAIT_S)
        p, addrs = start_serve(data, loop_kind, "--no-auth")
        with FramedClient(*addrs["tcp"], timeout_s=WAIT_S) as c:
            again = c.pipeline([reqs[i] for i in commits])
            retried = c.pipeline(clones)
        host, port = addrs["admin"]
        metrics = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=WAIT_S).read().decode()
    finally:
        p.kill()
        p.wait(WAIT_S)
    # Folded at the restart: what was committed since is in the RAM tail, not folded yet.
    unfolded = re.findall(r"^yidi_unfolded_rows (\S+)$", metrics, re.M)
    committed = re.findall(r"^yidi_committed_total\{kind=\"\w+\"\} (\S+)$", metrics, re.M)
    assert committed and [float(x) for x in unfolded] == [sum(float(x) for x in committed)], metrics
    assert re.search(r"^yidi_fold_seconds \S+$", metrics, re.M)
    for i, r in zip(commits, again):
        # Committed before the kill: the very same reply, times included, read back
        # from the store. A refused one was never committed and is judged afresh.
        if first[i]["infcode"] == 0:
            assert r == first[i], i
    assert retried[:10] == acked
    # Each clone charged exactly once, in order, whether it was committed before
    # the kill or only on its retry: the reference, fed the same stream, agrees.
    ref = ReferenceEngine(vector_world)
    for env in reqs:
        ref.handle(env)
    for env, r in zip(clones, retried):
        want = strip_times(ref.handle(env))
        assert r["infcode"] == 0 and not differences(want, strip_times(r)), differences(want, strip_times(r))[:5]


def test_serve_announces_its_listeners_and_an_every_address_gateway(tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--world", VECTOR_WORLD, "--data", str(tmp_path / "data"),
         "--tcp", "127.0.0.1:0", "--http", ":0", "--admin", "127.0.0.1:0", "--no-auth"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in p.stdout:
            lines.append(line)
            if line.startswith("yidi: ready"):
                break
        text = "".join(lines)
        assert re.search(r"^yidi: http listening on 0\.0\.0\.0:\d+ \(every address of this machine\)$", text, re.M)
        m = re.search(r"^yidi: admin listening on 127\.0\.0\.1:(\d+)$", text, re.M)
        assert m and re.search(r"^yidi: tcp listening on 127\.0\.0\.1:\d+$", text, re.M), text
        health = urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/healthz", timeout=WAIT_S).read()
        assert health == b"ok\n"
    finally:
        p.terminate()
        p.wait(WAIT_S)


@pytest.mark.parametrize("tz,warned", [("Asia/Shanghai", False), ("UTC", True)])
def test_serve_names_its_clock_zone_and_warns_when_it_is_not_chinas(tz, warned):
    code = "from engine.hub.serve import _clock_line; print(_clock_line())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": ROOT, "TZ": tz}).stdout
    assert ("warning" in out) == warned and ("UTC+08:00" in out), out
