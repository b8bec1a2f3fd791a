"""The hub server: framed TCP and an HTTP gateway in front of one engine and its store.

SETTLEMENT.md section 7, "Transports". Data flows one way:

    frames / HTTP bodies -> admission queue (bounded) -> batch (bounded count,
    short window) -> Engine.handle_batch -> store.commit (one writer thread)
    -> replies released, in request order on each connection.

Durability before acknowledgement: a batch's replies leave the process only after
the store's write of that batch, and of every batch before it, has returned.
`store.prepare(changes)` reads the persons' accumulators from the engine, so it
runs on the event-loop thread right after `handle_batch`, before the next batch
can change them; `store.write(prepared)` runs on a single writer thread, in
batch order, while the loop reads, decodes and computes the next batch (at most
`commits_inflight_max` batches wait for the disk). A reply computed on state that
is not yet durable (a pre-settlement after an uncommitted settlement) waits the
same way, so no reply ever shows what a crash could take back. The engine is not
thread-safe: every engine call happens on the event-loop thread.

Backpressure, each with a named bound (Limits):
- `queue_max`: requests admitted but not yet in a batch. A request that finds the
  queue full is answered `E_BUSY` at once and never reaches the engine.
- `inflight_per_connection_max`: replies a TCP connection still owes. At the bound
  the server stops reading that socket (TCP flow control pushes back on the
  client); it resumes when replies go out.
- `write_buffer_bytes_max`: a client that does not read its replies fills the
  transport's buffer; above the bound the server stops reading that socket, so a
  slow reader holds at most its in-flight replies in memory.
- `frame_bytes_max`: a larger length gets `E_LIMIT` and the connection closes.
- `connections_max`: a connection beyond it gets one `E_BUSY` frame and is closed.
- `http_requests_max`: HTTP requests in progress (their bodies are read before
  admission, so they need a bound of their own); beyond it, `E_BUSY` with 503.

Fail-stop: an exception from the engine or from `store.commit` means the
in-memory state may be ahead of the durable one. Nothing more is answered: every
connection is aborted without its pending replies and the process exits non-zero.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import gc
import logging
import re
import signal
import sys
import time
from typing import Any, Callable

import msgspec

from engine.core.collect import Collector
from engine.core.engine import Request, now_text
from engine.contract.protocol import E_BUSY, E_LIMIT, ERR_MESSAGES, FRAME_BYTES_MAX, SETLINFO_MONEY
from engine.core.reconcile import REPLY_MONEY_KEYS
from engine.contract.wire import JSON, MSGPACK, Codec, Reply

log = logging.getLogger("yidi.server")

HTTP_PATH = "/fsi/api/rsfComIfsService/callService"
HEADER_BYTES = 4
EXIT_OK, EXIT_FAIL_STOP = 0, 3


@dataclasses.dataclass(frozen=True)
class Limits:
    """Every bound of the server, by name (STYLE.md: put a limit on everything)."""

    batch_max: int = 256  # requests in one engine batch and one store commit
    batch_window_ms: float = 1.0  # how long the first request of a burst waits for company
    queue_max: int = 4096  # admitted requests waiting for a batch; beyond: E_BUSY
    inflight_per_connection_max: int = 256  # replies one TCP connection may owe; beyond: stop reading
    frame_bytes_max: int = FRAME_BYTES_MAX  # TCP frame body; beyond: E_LIMIT and close
    http_body_bytes_max: int = FRAME_BYTES_MAX  # HTTP body; beyond: E_LIMIT (413)
    connections_max: int = 1024  # open TCP connections; beyond: E_BUSY and close
    http_requests_max: int = 1024  # HTTP requests being read or waiting for their reply; beyond: E_BUSY (503)
    write_buffer_bytes_max: int = 4 * 1024 * 1024  # unsent reply bytes per connection; beyond: stop reading
    commits_inflight_max: int = 2  # batches computed and waiting for their write (the next one overlaps)
    drain_timeout_s: float = 30.0  # at shutdown, how long to wait for clients to take their replies

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "batch_window_ms":
                if not 0 <= v <= 1000:
                    raise ValueError("batch_window_ms must be within 0..1000")
            elif f.name == "drain_timeout_s":
                if not 0 < v <= 3600:
                    raise ValueError("drain_timeout_s must be within (0, 3600]")
            elif not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{f.name} must be a positive integer")
        if self.frame_bytes_max > 2**32 - 1:
            raise ValueError("frame_bytes_max must fit the 4-byte length")


# ---------------------------------------------------------------- the store

def open_store(data_dir: str, world_dir: str, *, clock: str = "wall"):
    """The durable store (engine.store); the in-memory stand-in while it does not exist."""
    try:
        from engine.store import open_store as _open
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.store":
            raise
        log.warning("engine.store is not available: using the in-memory stand-in, NOTHING IS DURABLE")
        return MemoryStore.open(world_dir, clock=clock)
    return _open(data_dir, world_dir, clock=clock)


class MemoryStore:
    """An in-memory stand-in with the shape of engine.store: state lives and dies with the process."""

    def __init__(self, engine):
        self.engine = engine
        self.committed: list = []  # every change, in commit order (tests read it)

    @classmethod
    def open(cls, world_dir: str, *, clock: str = "wall") -> "MemoryStore":
        from engine.core.engine import Engine
        from engine.world.loader import load_world

        return cls(Engine(load_world(world_dir), clock=clock))

    def commit(self, changes: list) -> None:
        self.write(self.prepare(changes))

    def prepare(self, changes: list) -> list:
        return changes

    def write(self, prepared: list) -> None:
        self.committed.extend(prepared)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- replies made by the server

class _Peek(msgspec.Struct):
    """The two envelope fields the server reads itself (metrics, E_BUSY replies)."""

    infno: Any = None
    msgid: Any = None


_PEEK = {"msgpack": msgspec.msgpack.Decoder(_Peek), "json": msgspec.json.Decoder(_Peek, float_hook=str)}
_KNOWN_INFNOS = frozenset({"1101", "2206", "2207", "2208", "2303", "2304", "2305", "3201", "3202"})


def _peek(body: bytes, codec: Codec) -> tuple[str, str]:
    """(infno label, msgid) of a body, without judging it: the engine does that."""
    try:
        p = _PEEK[codec.fmt].decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "invalid", ""
    return _infno_label(p.infno if isinstance(p.infno, str) else ""), p.msgid if isinstance(p.msgid, str) else ""


def _infno_label(infno: str | None) -> str:
    """The metrics label of an envelope's infno: "" when it is not a string, None when the body did not decode."""
    if infno is None:
        return "invalid"
    return infno if infno in _KNOWN_INFNOS else "other"


def server_reply(code: str, msgid: str = "", detail: str = "") -> Reply:
    """A refusal made by the server itself (E_BUSY, E_LIMIT), shaped like the engine's."""
    now = now_text()
    return Reply(-1, msgid, now, now, detail or ERR_MESSAGES[code], code, {})


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


# HTTP replies carry money as JSON numbers (section 7). The kernel renders the
# `result` rows that way already (Codec money_numbers); the rest of a reply holds
# decimal strings, turned here into raw JSON number literals: never a float.
_HTTP = Codec("json", money_numbers=True)
_DECIMAL = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?")
_SETLINFO_NUMERIC = frozenset(SETLINFO_MONEY) | {"pool_prop_selfpay"}
_ROW_NUMERIC = frozenset({
    "det_item_fee_sumamt", "cnt", "pric", "pric_uplmt_amt", "selfpay_prop", "fulamt_ownpay_amt",
    "overlmt_amt", "preselfpay_amt", "inscp_scp_amt",
})


def _numbers(obj: dict, keys: frozenset) -> dict:
    out = {}
    for k, v in obj.items():
        if k in keys and isinstance(v, str):
            b = v.encode()
            if _DECIMAL.fullmatch(b):
                v = msgspec.Raw(b)
        out[k] = v
    return out


def _numbers_in_rows(rows: Any, keys: frozenset) -> Any:
    if isinstance(rows, list):
        return [_numbers(r, keys) if isinstance(r, dict) else r for r in rows]
    return rows


def http_output(output: Any) -> Any:
    """A copy of a reply's output with its decimal strings as JSON numbers (the reply is not touched:
    the engine's journal holds it and answers retries on either transport)."""
    if not isinstance(output, dict) or not output:
        return output
    out = dict(output)
    if isinstance(out.get("setlinfo"), dict):
        out["setlinfo"] = _numbers(out["setlinfo"], _SETLINFO_NUMERIC)
    if "setldetail" in out:
        out["setldetail"] = _numbers_in_rows(out["setldetail"], frozenset({"fund_payamt"}))
    if "result" in out:
        out["result"] = _numbers_in_rows(out["result"], _ROW_NUMERIC)
    if "insuinfo" in out:
        out["insuinfo"] = _numbers_in_rows(out["insuinfo"], frozenset({"balc"}))
    for k in ("stmttotal", "stmtdiff", "stmtdetail"):  # 3201/3202 (engine.reconcile)
        if k in out:
            out[k] = _numbers_in_rows(out[k], REPLY_MONEY_KEYS)
    return out


def encode_http(reply: Reply) -> bytes:
    return _HTTP.encoder.encode(msgspec.structs.replace(reply, output=http_output(reply.output)))


# ---------------------------------------------------------------- metrics

class Metrics:
    """Prometheus metrics of one hub, in a registry of its own (several hubs may share a process)."""

    LATENCY_BUCKETS_S = (.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .2, .5, 1, 2, 5)
    BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

    def __init__(self, hub: "Hub"):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("yidi_requests", "Requests answered, by transport, infno and err_code "
                                "(err_code empty on success)", ["transport", "infno", "err_code"], registry=r)
        self.latency = Histogram("yidi_request_latency_seconds", "From a request's last byte read to its "
                                 "reply released", ["transport"], buckets=self.LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram("yidi_batch_size", "Requests per engine batch and store commit",
                                    buckets=self.BATCH_BUCKETS, registry=r)
        self.engine_s = Histogram("yidi_engine_batch_seconds", "Engine.handle_batch time per batch",
                                  buckets=self.LATENCY_BUCKETS_S, registry=r)
        self.commit_s = Histogram("yidi_commit_seconds", "store.commit time per batch",
                                  buckets=self.LATENCY_BUCKETS_S, registry=r)
        self.changes = Counter("yidi_committed", "Settlements and reversals made durable", ["kind"], registry=r)
        self.busy = Counter("yidi_busy", "Requests refused with E_BUSY before reaching the engine",
                            ["transport"], registry=r)
        self.queue_depth = Gauge("yidi_queue_depth", "Requests admitted, waiting for a batch", registry=r)
        self.queue_depth.set_function(lambda: len(hub.queue))
        self.connections = Gauge("yidi_tcp_connections", "Open framed TCP connections", registry=r)
        self.connections.set_function(lambda: len(hub.connections))
        up = Gauge("yidi_up", "1 while the hub answers, 0 after a fail-stop or while draining", registry=r)
        up.set_function(lambda: 0 if (hub.failed is not None or hub.stopping) else 1)
        store = hub.store
        if hasattr(store, "unfolded_rows"):  # engine.store (the in-memory stand-in never folds)
            Gauge("yidi_fold_seconds", "Seconds spent folding the journal into the keyed tables since start "
                  "(in the background, beside the commits)", registry=r).set_function(lambda: store.fold_s_total)
            Gauge("yidi_unfolded_rows", "Committed journal rows not folded yet, indexed in RAM "
                  "(at most two generations of fold_rows)", registry=r).set_function(store.unfolded_rows)
        # Pre-payment usage by insured province (issue 6, engine.clearing), read from the store's
        # journal when scraped; threshold from YIDI_PREPAY_WARN (default 0.70).
        from engine.clearing.clearing import collector_for_store

        prepay = collector_for_store(hub.store)
        if prepay is not None:
            r.register(prepay)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# ---------------------------------------------------------------- the hub

class _Item:
    """One admitted request: its body, where its reply goes, and the reply once released."""

    __slots__ = ("body", "codec", "conn", "fut", "t0", "frame", "encoded", "infno")

    def __init__(self, body: bytes, codec: Codec, conn: "FramedConnection | None", fut, t0: float):
        self.body, self.codec, self.conn, self.fut, self.t0 = body, codec, conn, fut, t0
        # The encoded reply of a TCP connection: `encoded` as soon as the engine has
        # answered (encoding overlaps the batch's write), `frame` only once the reply
        # may go out (its batch is durable). A connection sends the frames at its head.
        self.encoded: bytes | None = None
        self.frame: bytes | None = None
        self.infno = ""


class FailStop(Exception):
    """The engine or the store failed: nothing more may be answered."""


class Hub:
    """Admission queue, batcher and writer thread around one store (module docstring)."""

    def __init__(self, store, limits: Limits, *, observer: Callable[[str, int], None] | None = None,
                 writer: concurrent.futures.ThreadPoolExecutor | None = None):
        """`observer(event, n)`, when given, is told of "busy" (n: busy replies so far) and "batch"
        (n: its size) on the event-loop thread: logging and tests hook in there. `writer` is the
        one-thread executor every store call runs on (the one that opened the store, if any)."""
        self.store = store
        self.engine = store.engine
        self.limits = limits
        self.observer = observer
        self.queue: collections.deque[_Item] = collections.deque()
        self.connections: set[FramedConnection] = set()
        self.stopping = False
        self.failed: BaseException | None = None
        self.busy_count = 0
        self.batches = 0
        self.metrics = Metrics(self)
        self._writer = writer or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="yidi-commit")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._window_s = limits.batch_window_ms / 1000.0
        self._inf_time = getattr(self.engine, "clock_inf_time", False)
        # A store that splits commit into prepare (engine thread: reads engine.state)
        # and write (writer thread) lets batch N+1 be computed while batch N is
        # written; one with only commit() reads the engine while it writes, so its
        # batches go one at a time.
        self._split_commit = hasattr(store, "prepare") and hasattr(store, "write")
        # Garbage collection between batches (engine.collect), when serve() turns
        # the automatic collector off.
        self.manual_gc = False
        self._collector = Collector()
        self._slots = asyncio.Semaphore(limits.commits_inflight_max if self._split_commit else 1)
        self.on_fail_stop: Callable[[BaseException], None] | None = None

    @classmethod
    async def open(cls, data_dir: str, world_dir: str, limits: Limits, **kw) -> "Hub":
        """Open the store on the writer thread (where every later store call runs) and build a hub."""
        ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="yidi-commit")
        store = await asyncio.get_running_loop().run_in_executor(ex, lambda: open_store(data_dir, world_dir))
        return cls(store, limits, writer=ex, **kw)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="yidi-batcher")

    # ------------------------------------------------------------ admission

    def submit(self, item: _Item) -> bool:
        """Queue a request; False when it must be answered E_BUSY (full, draining or failed)."""
        if len(self.queue) >= self.limits.queue_max or self.stopping or self.failed is not None:
            self.busy_count += 1
            self.metrics.busy.labels("tcp" if item.conn is not None else "http").inc()
            if self.observer is not None:
                self.observer("busy", self.busy_count)
            return False
        self.queue.append(item)
        if len(self.queue) == 1 or len(self.queue) >= self.limits.batch_max:
            self._wake.set()
        return True

    def busy_reply(self, item: _Item) -> Reply:
        """The E_BUSY reply of a request submit() refused; counted like any other reply."""
        infno, msgid = _peek(item.body, item.codec)
        transport = "tcp" if item.conn is not None else "http"
        self.metrics.requests.labels(transport, infno, E_BUSY).inc()
        return server_reply(E_BUSY, msgid, "shutting down: nothing was done, retry later" if self.stopping else "")

    # ------------------------------------------------------------ the batch loop

    async def _run(self) -> None:
        """Gather, compute, prepare and hand to the writer; a batch's replies wait for its write."""
        limits = self.limits
        prev: asyncio.Task | None = None
        try:
            while self.failed is None:
                if not self.queue:
                    if self.stopping:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    # The first request of a burst waits up to the window for company,
                    # unless a full batch is already there. Requests that queued while
                    # the engine was busy never wait: they have waited already.
                    if self._window_s and len(self.queue) < limits.batch_max and not self.stopping:
                        self._wake.clear()
                        try:
                            await asyncio.wait_for(self._wake.wait(), self._window_s)
                        except TimeoutError:
                            pass
                    continue
                await self._slots.acquire()  # at most commits_inflight_max batches ahead of the disk
                if self.failed is not None:
                    break
                n = min(len(self.queue), limits.batch_max)
                items = [self.queue.popleft() for _ in range(n)]
                prev = self._batch(items, prev)
        finally:
            if prev is not None:
                await prev

    def _batch(self, items: list[_Item], prev: asyncio.Task | None) -> asyncio.Task | None:
        """Compute one batch on this (the engine's) thread and start its write; returns its release task."""
        loop = asyncio.get_running_loop()
        clock = None if self._inf_time else now_text()
        reqs = [Request(it.body, it.codec, clock) for it in items]
        t0 = time.perf_counter()
        try:
            replies = self.engine.handle_batch(reqs)
            assert len(replies) == len(items)
            changes = self.engine.take_changes()
            prepared = self._prepare(changes)
        except BaseException as e:  # a bug, or the store refuses: the engine may be half way through
            self._fail_stop(e, items)
            return prev
        engine_s = time.perf_counter() - t0
        write = loop.run_in_executor(self._writer, self._write, prepared)
        # Encode while the writer thread waits on the disk.
        counts: collections.Counter = collections.Counter()
        for it, rep, req in zip(items, replies, reqs):
            infno = _infno_label(req.infno)  # read by the engine: no second decode
            counts[("tcp" if it.conn is not None else "http", infno, rep.err_code or "")] += 1
            if it.conn is not None:
                # Not it.frame yet: another batch's release flushes this connection,
                # and must not send a reply whose batch is still being written.
                it.encoded = frame(MSGPACK.encoder.encode(rep))
        task = loop.create_task(self._finish(prev, write, items, replies, changes, counts, engine_s))
        if self.manual_gc:
            t1 = time.perf_counter()
            if self._collector.after_batch() == "full":
                log.info("full garbage collection in %.1f ms", (time.perf_counter() - t1) * 1e3)
        return task

    async def _finish(self, prev, write, items, replies, changes, counts, engine_s) -> None:
        """Release a batch's replies once it is durable and every earlier batch has been released."""
        try:
            if prev is not None:
                await prev
            try:
                commit_s = await write
            except BaseException as e:
                if self.failed is None:
                    self._fail_stop(e, items)
                self._abandon(items)
                return
            if self.failed is not None:
                self._abandon(items)  # an earlier batch failed: this one's state was built on it
                return
            m = self.metrics
            self.batches += 1
            m.batch_size.observe(len(items))
            m.engine_s.observe(engine_s)
            m.commit_s.observe(commit_s)
            for kind in ("settle", "reverse"):
                k = sum(1 for c in changes if c.kind == kind)
                if k:
                    m.changes.labels(kind).inc(k)
            for labels, k in counts.items():
                m.requests.labels(*labels).inc(k)
            self._release(items, replies)
            if self.observer is not None:
                self.observer("batch", len(items))
        finally:
            self._slots.release()

    def _prepare(self, changes: list):
        """The store's rows of a batch, read from the engine now, before the next batch changes it."""
        if self._split_commit:
            return self.store.prepare(changes)
        return changes

    def _write(self, prepared) -> float:
        """On the writer thread: make a batch durable; returns the seconds it took."""
        t0 = time.perf_counter()
        if self._split_commit:
            self.store.write(prepared)
        elif prepared:
            self.store.commit(prepared)
        return time.perf_counter() - t0

    def _release(self, items: list[_Item], replies: list[Reply]) -> None:
        now = time.perf_counter()
        lat_tcp = self.metrics.latency.labels("tcp")
        lat_http = self.metrics.latency.labels("http")
        conns = {}
        for it, rep in zip(items, replies):
            if it.conn is not None:
                it.frame = it.encoded
                lat_tcp.observe(now - it.t0)
                conns[id(it.conn)] = it.conn
            else:
                lat_http.observe(now - it.t0)
                if not it.fut.done():
                    it.fut.set_result(rep)
        for c in conns.values():
            c.flush()

    def _fail_stop(self, exc: BaseException, items: list[_Item]) -> None:
        log.critical("fail-stop: %s: %r; no further reply will be sent", type(exc).__name__, exc,
                     exc_info=exc)
        self.failed = exc
        for c in list(self.connections):
            c.abort()
        self._abandon(list(items) + list(self.queue))
        self.queue.clear()
        if self.on_fail_stop is not None:
            self.on_fail_stop(exc)

    def _abandon(self, items: list[_Item]) -> None:
        """After a fail-stop: HTTP requests get an error, never a reply (TCP connections are aborted)."""
        for it in items:
            if it.fut is not None and not it.fut.done():
                it.fut.set_exception(FailStop(repr(self.failed)))

    # ------------------------------------------------------------ shutdown

    async def drain(self) -> None:
        """Refuse new requests (E_BUSY), answer every admitted one, then stop the batch loop."""
        self.stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task

    async def close(self) -> None:
        """Close the store on the writer thread, after every commit."""
        if self.failed is None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self.store.close)
        self._writer.shutdown(wait=self.failed is None)


# ---------------------------------------------------------------- framed TCP

class FramedConnection(asyncio.Protocol):
    """One framed TCP connection: 4-byte big-endian length + MessagePack envelope (section 7)."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.limits = hub.limits
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.pending: collections.deque[_Item] = collections.deque()  # replies owed, in request order
        self.read_paused = False
        self.write_paused = False
        self.closing = False  # no more frames are read; close once the owed replies are out
        self.closed = False
        self.lost: asyncio.Future | None = None

    # asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()
        transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes_max)
        self.hub.connections.add(self)
        if len(self.hub.connections) > self.limits.connections_max or self.hub.stopping:
            self.hub.metrics.busy.labels("tcp").inc()
            self._refuse(E_BUSY, "too many connections" if not self.hub.stopping else "shutting down")

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf += data
        self._parse()

    def eof_received(self):
        # The client is done sending; its owed replies still go out, then we close.
        self.closing = True
        self.buf.clear()
        self.flush()
        return True  # keep the transport open for writing

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pending.clear()  # items still in a batch are computed and committed; their replies drop
        self.buf.clear()
        self.hub.connections.discard(self)
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._maybe_resume()

    # frames

    def _parse(self) -> None:
        buf = self.buf
        size_buf = len(buf)
        off = 0
        limits = self.limits
        hub = self.hub
        t0 = time.perf_counter()
        while not self.closing:
            if len(self.pending) >= limits.inflight_per_connection_max:
                self._pause_reading()
                break
            if size_buf - off < HEADER_BYTES:
                break
            n = int.from_bytes(buf[off:off + HEADER_BYTES], "big")
            if n > limits.frame_bytes_max:
                self._refuse(E_LIMIT, f"frame of {n} bytes, more than {limits.frame_bytes_max}")
                return
            end = off + HEADER_BYTES + n
            if end > size_buf:
                break  # a partial frame: the buffer holds at most frame_bytes_max + 4 of it
            item = _Item(bytes(buf[off + HEADER_BYTES:end]), MSGPACK, self, None, t0)
            off = end
            self.pending.append(item)
            if not hub.submit(item):
                item.frame = frame(MSGPACK.encoder.encode(hub.busy_reply(item)))
                self.flush()
        if off:
            del buf[:off]

    def _refuse(self, code: str, detail: str) -> None:
        """Answer `code` after the replies owed, then close (section 7: oversize length)."""
        self.closing = True
        self.buf.clear()
        self._pause_reading()
        it = _Item(b"", MSGPACK, self, None, time.perf_counter())
        it.frame = frame(MSGPACK.encoder.encode(server_reply(code, "", detail)))
        self.pending.append(it)
        self.flush()

    def flush(self) -> None:
        """Write the replies that are ready, in request order; resume reading when there is room."""
        if self.closed:
            self.pending.clear()
            return
        p = self.pending
        if p and p[0].frame is not None:
            out = []
            while p and p[0].frame is not None:
                out.append(p.popleft().frame)
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.closing:
            if not p:
                self.transport.close()
            return
        self._maybe_resume()

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        if (self.read_paused and not self.write_paused and not self.closing
                and len(self.pending) < self.limits.inflight_per_connection_max):
            self.read_paused = False
            self.transport.resume_reading()
            if self.buf:
                self._parse()  # frames that arrived before the pause

    def stop_admitting(self) -> None:
        """At shutdown: frames already buffered are answered E_BUSY by the hub; read on so they are."""
        if self.buf and not self.closing:
            self._parse()

    def finish(self) -> None:
        """At shutdown, after the drain: close once the owed replies are out."""
        self.closing = True
        self.buf.clear()
        self.flush()

    def abort(self) -> None:
        self.closed = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.abort()


# ---------------------------------------------------------------- HTTP gateway

def build_http_app(hub: Hub):
    """The aiohttp application: POST HTTP_PATH, GET /metrics, GET /healthz."""
    from aiohttp import web

    in_progress = 0

    async def call_service(request: web.Request) -> web.Response:
        nonlocal in_progress
        if in_progress >= hub.limits.http_requests_max:
            hub.metrics.busy.labels("http").inc()
            hub.metrics.requests.labels("http", "unread", E_BUSY).inc()
            return _json(server_reply(E_BUSY, "", "too many HTTP requests in progress"), 503, {"Retry-After": "1"})
        in_progress += 1
        try:
            return await _call(request)
        finally:
            in_progress -= 1

    async def _call(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        limit = hub.limits.http_body_bytes_max
        if request.content_length is not None and request.content_length > limit:
            return _json(server_reply(E_LIMIT, "", f"body of {request.content_length} bytes, more than {limit}"),
                         413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(server_reply(E_LIMIT, "", f"body of more than {limit} bytes"), 413)
        fut = asyncio.get_running_loop().create_future()
        item = _Item(body, JSON, None, fut, t0)
        if not hub.submit(item):
            return _json(hub.busy_reply(item), 503, {"Retry-After": "1"})
        try:
            reply = await asyncio.shield(fut)
        except FailStop:
            raise web.HTTPServiceUnavailable(text="fail-stop")
        return _json(reply, 200)

    def _json(reply: Reply, status: int, headers: dict | None = None) -> web.Response:
        return web.Response(body=encode_http(reply), status=status, content_type="application/json",
                            headers=headers)

    async def metrics(request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(body=hub.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        if hub.failed is not None:
            return web.Response(status=503, text="fail-stop\n")
        if hub.stopping:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ok\n")

    # aiohttp refuses bodies above client_max_size with HTTPRequestEntityTooLarge on read().
    app = web.Application(client_max_size=hub.limits.http_body_bytes_max)
    app.router.add_post(HTTP_PATH, call_service)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


# ---------------------------------------------------------------- the server

def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' (port 0: any free port; '[::1]:80' for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {text!r}: want HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class Server:
    """The hub behind its listeners. `await start()`, then `await run()` until `stop()`."""

    def __init__(self, hub: Hub, tcp: tuple[str, int] | None = None, http: tuple[str, int] | None = None):
        if tcp is None and http is None:
            raise ValueError("at least one of tcp and http")
        self.hub = hub
        self.tcp, self.http = tcp, http
        self.tcp_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._runner = None
        self._stop: asyncio.Event | None = None
        hub.on_fail_stop = lambda exc: self.stop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.hub.start()
        if self.tcp is not None:
            self._tcp_server = await loop.create_server(
                lambda: FramedConnection(self.hub), self.tcp[0], self.tcp[1], reuse_address=True)
            self.tcp_address = self._tcp_server.sockets[0].getsockname()[:2]
        if self.http is not None:
            from aiohttp import web

            self._runner = web.AppRunner(build_http_app(self.hub), access_log=None, handle_signals=False,
                                         shutdown_timeout=self.hub.limits.drain_timeout_s)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.http[0], self.http[1], reuse_address=True)
            await site.start()
            self.http_address = self._runner.addresses[0][:2]

    def stop(self) -> None:
        """Ask for a graceful stop (from the loop thread: a signal handler or a test)."""
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> int:
        """Serve until stop(); then drain and return the exit code."""
        await self._stop.wait()
        hub = self.hub
        if self._tcp_server is not None:
            self._tcp_server.close()  # no new connections
        if hub.failed is None:
            # Admitted requests are answered; frames read from now on get E_BUSY.
            hub.stopping = True
            for c in list(hub.connections):
                c.stop_admitting()
            await hub.drain()
            conns = list(hub.connections)
            for c in conns:
                c.finish()
            lost = [c.lost for c in conns if c.lost is not None]
            if lost:
                done, _ = await asyncio.wait(lost, timeout=hub.limits.drain_timeout_s)
                for c in conns:
                    if not c.closed:
                        c.abort()  # a client that would not take its replies in time
        if self._runner is not None:
            await self._runner.cleanup()
        await hub.close()
        return EXIT_OK if hub.failed is None else EXIT_FAIL_STOP


def new_event_loop_factory(kind: str):
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if kind == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"loop {kind!r}: want uvloop or asyncio")


def serve(world_dir: str, data_dir: str, tcp: str | None, http: str | None, limits: Limits,
          loop: str = "uvloop", out=sys.stdout) -> int:
    """`yidi serve`: open the store, listen, serve until SIGTERM/SIGINT, drain, exit."""

    async def main() -> int:
        t0 = time.perf_counter()
        hub = await Hub.open(data_dir, world_dir, limits)
        gc.disable()  # see Hub.manual_gc
        hub.manual_gc = True
        server = Server(hub, parse_address(tcp) if tcp else None, parse_address(http) if http else None)
        await server.start()
        lp = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            lp.add_signal_handler(sig, server.stop)
        if server.tcp_address:
            print(f"yidi: tcp listening on {server.tcp_address[0]}:{server.tcp_address[1]}", file=out)
        if server.http_address:
            print(f"yidi: http listening on {server.http_address[0]}:{server.http_address[1]}", file=out)
        print(f"yidi: ready in {time.perf_counter() - t0:.2f} s ({type(lp).__module__} loop, {limits})",
              file=out, flush=True)
        code = await server.run()
        if code == EXIT_OK:
            print(f"yidi: drained and stopped after {hub.batches} batches", file=out, flush=True)
        else:
            print(f"yidi: fail-stop: {hub.failed!r}", file=out, flush=True)
        return code

    with asyncio.Runner(loop_factory=new_event_loop_factory(loop)) as runner:
        return runner.run(main())
