"""The hub: admission, micro-batching and durable commit order around one engine and its store.

docs/contract.md section 7, "Transports". Data flows one way:

    frames / HTTP bodies -> admission queue (bounded) -> batch (bounded count,
    short window) -> Engine.handle_batch -> store.prepare, store.write (one
    writer thread) -> replies released, in request order on each connection.

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

Backpressure, each with a named bound (engine.hub.limits.Limits):
- `queue_max`: requests admitted but not yet in a batch. A request that finds the
  queue full is answered `E_BUSY` at once and never reaches the engine.
- `queue_wait_ms_max`: admission is decided when a request is read. A request
  that finds the queue's head older than this gets `E_BUSY`. The hub is also
  `behind` when the oldest request of the last batch released was read longer
  ago than this (queue, compute and commit): then a TCP connection at its
  in-flight bound reads on, up to twice it, and refuses what it reads, instead
  of leaving its client's excess waiting unseen in TCP buffers. Replies keep request
  order on a connection (section 7), so a refusal could only leave after the
  replies of that connection's earlier requests; while the hub is behind, the
  connection therefore refuses its requests still waiting in the queue as well
  (`FramedConnection._shed`): nothing of them was started, and the refusal leaves
  as soon as the batch already at work on that connection is released. The
  batcher skips what was refused.
- `inflight_per_connection_max`: replies a TCP connection still owes. At the bound
  the server stops reading that socket (TCP flow control pushes back on the
  client); it resumes when replies go out.
- `write_buffer_bytes_max`: a client that does not read its replies fills the
  transport's buffer; above the bound the server stops reading that socket, so a
  slow reader holds at most its in-flight replies in memory.
- `reply_bytes_per_connection_max`: request bodies read and replies encoded that a
  TCP connection holds before its socket takes them; at the bound the server stops
  reading it, until it is below half.
- `frame_bytes_max`: a larger length gets `E_LIMIT` and the connection closes.
- `partial_frame_bytes_total_max`: bytes of frames and HTTP bodies not yet whole,
  over every connection (`Hub.partial_bytes`); see engine.hub.tcp.
- `idle_timeout_s`, `frame_deadline_s`, `http_body_deadline_s`,
  `tcp_connections_per_address_max`: what keeps a slot from being held forever;
  `Hub._sweep` checks the deadlines of every connection a few times a second.
- `connections_max`: a connection beyond it gets one `E_BUSY` frame and is closed.
- `http_requests_max`: HTTP requests in progress (their bodies are read before
  admission, so they need a bound of their own); beyond it, `E_BUSY` with 503.

Fail-stop: an exception from the engine or from the store means the in-memory
state may be ahead of the durable one. Nothing more is answered: every connection
is aborted without its pending replies and the process exits non-zero.

The transports (engine.hub.tcp, engine.hub.http) admit `Admitted` items with
`Hub.submit`; the hub answers them through `Admitted.conn` (TCP) or `Admitted.fut`
(HTTP).
"""
from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import logging
import time
from typing import Any, Callable, Protocol

import msgspec

from engine.contract.protocol import E_BUSY, ENVELOPE_DEPTH_MAX, ERR_MESSAGES, INFNOS
from engine.contract.wire import MSGPACK, Codec, Reply
from engine.core.collect import Collector
from engine.core import kernels
from engine.core.engine import Engine, Request, now_text
from engine.hub.framing import frame
from engine.hub.limits import Limits
from engine.hub.metrics import Metrics
from engine.hub.series import SLOT_S, LatencyHistogram, Series
from engine.store import StoreUnavailable, open_store

log = logging.getLogger("yidi.server")


# ---------------------------------------------------------------- what the hub needs of a store

class DurableStore(Protocol):
    """What the hub needs of a store: the engine it restored, a two-step commit, and what
    the metrics read. engine.store's SqliteStore is one; any store with these members works.

    `prepare` runs on the event-loop thread right after the batch (it may read the engine's
    state); `write` runs on the writer thread and returns once the batch is durable; `close`
    runs on the writer thread after the last write. What `prepare` returns may hold
    `replies_msgpack`, replies it encoded as MessagePack for its rows by their id: the framed
    transport sends those bytes rather than encode the replies again. They must be exactly
    `MSGPACK.encoder.encode(reply)`; a reply does not change once made. The bytes live until
    the batch is released.
    """

    engine: Engine
    data_dir: str | None  # the folder the pre-payment gauges read (engine.clearing); None: none
    fold_s_total: float  # seconds spent folding the journal since open

    def prepare(self, changes: list) -> Any: ...

    def write(self, prepared: Any) -> None: ...

    def close(self) -> None: ...

    def unfolded_rows(self) -> int: ...


_STORE_MEMBERS = tuple(DurableStore.__annotations__) + tuple(
    name for name, member in vars(DurableStore).items() if callable(member) and not name.startswith("_"))


def _replies_msgpack(prepared: Any) -> dict[int, bytes] | None:
    """The replies a store's `prepare` encoded as MessagePack, by id (DurableStore); None: none."""
    return getattr(prepared, "replies_msgpack", None)


def _check_store(store: object) -> None:
    """Refuse, naming what is missing, a store that is not a DurableStore."""
    missing = [name for name in _STORE_MEMBERS if not hasattr(store, name)]
    if missing:
        raise TypeError(f"{type(store).__name__} is not a DurableStore: it lacks {', '.join(missing)}")


class Connection(Protocol):
    """What the hub needs of a transport connection (engine.hub.tcp.FramedConnection is one)."""

    held_bytes: int  # request bodies and encoded replies held for it (reply_bytes_per_connection_max)

    def flush(self) -> None:
        """Send the replies released so far, in request order."""

    def abort(self) -> None:
        """After a fail-stop: close at once, without the replies owed."""

    def sweep(self, now_s: float) -> None:
        """A few times a second: close the connection if one of its deadlines has passed."""


# ---------------------------------------------------------------- admitted requests and server replies

class Admitted:
    """One admitted request: its body, where its reply goes, and the reply once released."""

    __slots__ = ("body", "codec", "conn", "fut", "t0", "cred", "frame", "encoded", "infno")

    def __init__(self, body: bytes, codec: Codec, conn: Connection | None, fut, t0: float, cred=None):
        self.body, self.codec, self.conn, self.fut, self.t0 = body, codec, conn, fut, t0
        # The credential the transport verified (engine.contract.credential.Credential), handed
        # to the engine with the request; None: nothing of section 10 is checked (--no-auth).
        self.cred = cred
        # The encoded reply of a TCP connection: `encoded` as soon as the engine has
        # answered (encoding overlaps the batch's write), `frame` only once the reply
        # may go out (its batch is durable). A connection sends the frames at its head.
        self.encoded: bytes | None = None
        self.frame: bytes | None = None
        self.infno = ""


class FailStop(Exception):
    """The engine or the store failed: nothing more may be answered."""


class _Peek(msgspec.Struct):
    """The envelope fields the server reads itself (metrics, E_BUSY replies, the request log)."""

    infno: Any = None
    msgid: Any = None
    fixmedins_code: Any = None


def peek_decoders(struct: type) -> dict[str, Any]:
    """The decoders peek_fields takes, by codec format, for a Struct of envelope fields."""
    return {"msgpack": msgspec.msgpack.Decoder(struct), "json": msgspec.json.Decoder(struct, float_hook=str)}


def peek_fields(body: bytes, codec: Codec, decoders: dict[str, Any]) -> Any:
    """The fields of a body that a transport reads itself, or None when it does not decode.

    A body nested past the envelope's bound is not decoded here either: the decoder
    would recurse into it (section 7, v2).
    """
    if kernels.nesting_depth(body, codec.is_json, ENVELOPE_DEPTH_MAX) > ENVELOPE_DEPTH_MAX:
        return None
    try:
        return decoders[codec.fmt].decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


_PEEK = peek_decoders(_Peek)


def _peek(body: bytes, codec: Codec) -> tuple[str, str, str]:
    """(infno label, msgid, fixmedins_code) of a body, without judging it: the engine does that."""
    p = peek_fields(body, codec, _PEEK)
    if p is None:
        return "invalid", "", ""
    return (infno_label(p.infno if isinstance(p.infno, str) else ""), p.msgid if isinstance(p.msgid, str) else "",
            p.fixmedins_code if isinstance(p.fixmedins_code, str) else "")


def infno_label(infno: str | None) -> str:
    """The metrics label of an envelope's infno: "" when it is not a string, None when the body did not decode."""
    if infno is None:
        return "invalid"
    return infno if infno in INFNOS else "other"


def server_reply(code: str, msgid: str = "", detail: str = "") -> Reply:
    """A refusal made by the server itself (E_BUSY, E_LIMIT), shaped like the engine's."""
    now = now_text()
    return Reply(-1, msgid, now, now, detail or ERR_MESSAGES[code], code, {})


# ---------------------------------------------------------------- the hub

class Hub:
    """Admission queue, batcher and writer thread around one store (module docstring)."""

    def __init__(self, store: DurableStore, limits: Limits, *, observer: Callable[[str, int], None] | None = None,
                 writer: concurrent.futures.ThreadPoolExecutor | None = None):
        """`observer(event, n)`, when given, is told of "busy" (n: busy replies so far) and "batch"
        (n: its size) on the event-loop thread: logging and tests hook in there. `writer` is the
        one-thread executor every store call runs on (the one that opened the store, if any)."""
        _check_store(store)
        self.store = store
        self.engine = store.engine
        self.limits = limits
        self.observer = observer
        self.queue: collections.deque[Admitted] = collections.deque()
        self.connections: set[Connection] = set()
        self.stopping = False
        self.failed: BaseException | None = None
        self.busy_count = 0
        self.batches = 0
        # Bytes read and not yet whole frames or bodies, over every connection (partial_frame_bytes_total_max).
        self.partial_bytes = 0
        self.per_address: collections.Counter[str] = collections.Counter()  # open TCP connections by client address
        self.metrics = Metrics(store, queue_depth=lambda: len(self.queue),
                               connections=lambda: len(self.connections),
                               up=lambda: 0 if (self.failed is not None or self.stopping) else 1,
                               partial_bytes=lambda: self.partial_bytes,
                               held_bytes=lambda: sum(getattr(c, "held_bytes", 0) for c in self.connections))
        # The last minutes, second by second, for the status page (engine.hub.series).
        self.series = Series(self.metrics.totals, LatencyHistogram())
        self._sampler: asyncio.Task | None = None
        self._wait_s = limits.queue_wait_ms_max / 1000.0
        # The hub is behind: the last batch released held a request read more than
        # queue_wait_ms_max before, or the queue's head has waited that long. Set at each release
        # and at admission. While behind, a TCP connection at its in-flight bound reads on and
        # what it reads is refused (engine.hub.tcp); the queue's own age refuses every request.
        self.behind = False
        self.batches_inflight = 0  # computed, not yet released
        self._sweeper: asyncio.Task | None = None
        self._writer = writer or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="yidi-commit")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._window_s = limits.batch_window_ms / 1000.0
        self._inf_time = self.engine.clock_inf_time
        # Garbage collection between batches (engine.core.collect), when serve() turns
        # the automatic collector off.
        self.manual_gc = False
        self._collector = Collector()
        self._slots = asyncio.Semaphore(limits.commits_inflight_max)
        # A store whose batch must run whole on the writer thread (PgStore: one transaction from its lock to
        # its commit); batches still go in order, and the loop reads and encodes beside them.
        self._serial = bool(getattr(store, "serial", False))
        self._serial_submitted = 0  # serial batches handed to the writer thread (the event loop counts)
        self._serial_begun = 0  # ... and begun there (the writer thread counts)
        if self._serial and hasattr(store, "lease_s") and limits.store_lease_ms > 0:
            # Keep the store's lock over this hub's consecutive batches while more wait (another node waits at
            # most that long): one round trip a batch instead of two, and no lock hand-over between them.
            store.lease_s = limits.store_lease_ms / 1000.0
            # Only a batch handed to the writer thread and not yet begun there counts: it will run, and its write
            # decides again. (Not batches_inflight: it counts batches already written whose release is still to
            # come, and holding the lock for them would hold it for nothing. Not the queue: a queued request may
            # yet be refused before it joins a batch.) Each counter is written by one thread only.
            store.more_work = lambda: self._serial_submitted > self._serial_begun
        self.on_fail_stop: Callable[[BaseException], None] | None = None
        # The request log (engine.hub.logs.HubLog), told of every reply; None: no request is logged.
        self.request_log = None

    @classmethod
    async def open(cls, data_dir: str, world_dir: str, limits: Limits, *, clock: str = "wall", **kw) -> "Hub":
        """Open the store on the writer thread (where every later store call runs) and build a hub."""
        ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="yidi-commit")
        store = await asyncio.get_running_loop().run_in_executor(
            ex, lambda: open_store(data_dir, world_dir, clock=clock))
        return cls(store, limits, writer=ex, **kw)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="yidi-batcher")
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="yidi-sweeper")
        self._sampler = asyncio.get_running_loop().create_task(self._sample(), name="yidi-series")

    async def _sample(self) -> None:
        """Once a slot, just after it ends: what the counters gained goes into it (engine.hub.series)."""
        while True:
            now = time.monotonic()
            await asyncio.sleep(SLOT_S - now % SLOT_S + 0.01)
            self.series.sample(time.monotonic() - 0.02)  # the slot that has just ended

    async def _sweep(self) -> None:
        """Check every connection's deadlines (idle, frame) a few times within the shortest of them:
        per connection and per tick, never per request."""
        limits = self.limits
        interval_s = min(1.0, max(0.05, min(limits.idle_timeout_s, limits.frame_deadline_s) / 4))
        while True:
            await asyncio.sleep(interval_s)
            now_s = time.monotonic()
            for c in list(self.connections):
                c.sweep(now_s)

    # ------------------------------------------------------------ admission

    def submit(self, item: Admitted, over_bound: bool = False) -> bool:
        """Queue a request; False when it must be answered E_BUSY: the queue full, its head older
        than queue_wait_ms_max, draining or failed; or, for a request read beyond its connection's
        in-flight bound (`over_bound`), the hub behind. `item.t0` is when it was read."""
        q = self.queue
        if q and item.t0 - q[0].t0 > self._wait_s:
            self.behind = True
            over_bound = True
        if (len(q) >= self.limits.queue_max or (over_bound and self.behind) or self.stopping
                or self.failed is not None):
            self.busy_count += 1
            self.metrics.busy.labels("tcp" if item.conn is not None else "http").inc()
            if self.observer is not None:
                self.observer("busy", self.busy_count)
            return False
        self.queue.append(item)
        if len(self.queue) == 1 or len(self.queue) >= self.limits.batch_max:
            self._wake.set()
        return True

    def busy_reply(self, item: Admitted) -> Reply:
        """The E_BUSY reply of a request submit() refused; counted like any other reply."""
        infno, msgid, fixmedins_code = _peek(item.body, item.codec)
        transport = "tcp" if item.conn is not None else "http"
        self.metrics.requests.labels(transport, infno, E_BUSY).inc()
        self.log_refusal(transport, infno, msgid, fixmedins_code, item.cred, E_BUSY, item.t0)
        return server_reply(E_BUSY, msgid, "shutting down: nothing was done, retry later" if self.stopping else "")

    def log_refusal(self, transport: str, infno: str, msgid: str, fixmedins_code: str, cred, err_code: str,
                    t0: float) -> None:
        """Tell the request log of a request a transport answered itself (E_BUSY, E_AUTH, E_LIMIT)."""
        if self.request_log is not None:
            self.request_log.refusal(transport, infno, msgid, fixmedins_code, cred, err_code, t0)

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
                    await self._gather()
                    continue
                await self._slots.acquire()  # at most commits_inflight_max batches ahead of the disk
                # Let the releases whose writes have returned run before the next batch holds the
                # loop: their replies (and the E_BUSY refusals queued behind them) leave now.
                await asyncio.sleep(0)
                if self.failed is not None:
                    break
                items = []
                q = self.queue
                while q and len(items) < limits.batch_max:
                    it = q.popleft()
                    if it.frame is None:  # else refused while it waited (FramedConnection._shed)
                        items.append(it)
                if not items:
                    self._slots.release()
                    continue
                prev = self._batch(items, prev)
        finally:
            if prev is not None:
                await prev

    async def _gather(self) -> None:
        """Wait for a request; then let the first of a burst wait up to the window for company."""
        self._wake.clear()
        await self._wake.wait()
        # Unless a full batch is already there. Requests that queued while the engine
        # was busy never wait here: they have waited already.
        if self._window_s and len(self.queue) < self.limits.batch_max and not self.stopping:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._window_s)
            except TimeoutError:
                pass

    def _batch(self, items: list[Admitted], prev: asyncio.Task | None) -> asyncio.Task | None:
        """Compute one batch on this (the engine's) thread and start its write; returns its release task."""
        loop = asyncio.get_running_loop()
        clock = None if self._inf_time else now_text()
        reqs = [Request(it.body, it.codec, clock, it.cred) for it in items]
        if self._serial:
            self.batches_inflight += 1
            self._serial_submitted += 1
            work = loop.run_in_executor(self._writer, self._serial_batch, reqs)
            return loop.create_task(self._finish_serial(prev, work, items, reqs))
        t0 = time.perf_counter()
        try:
            replies, changes, prepared = self._compute(reqs)
        except BaseException as e:  # a bug, or the store refuses: the engine may be half way through
            self._fail_stop(e, items)
            return prev
        engine_s = time.perf_counter() - t0
        write = loop.run_in_executor(self._writer, self._write, prepared)
        logged = None if self.request_log is None else self.request_log.capture(items, reqs, replies)
        # Encode while the writer thread waits on the disk.
        counts = self._encode(items, replies, reqs, _replies_msgpack(prepared))
        self.batches_inflight += 1
        task = loop.create_task(self._finish(prev, write, items, replies, changes, counts, engine_s, logged))
        if self.manual_gc:
            t1 = time.perf_counter()
            if self._collector.after_batch() == "full":
                log.info("full garbage collection in %.1f ms", (time.perf_counter() - t1) * 1e3)
        return task

    def _compute(self, reqs: list[Request]) -> tuple[list, list, Any]:
        """The engine's batch: its replies, its changes, and the store's rows of them, read from the engine now,
        before the next batch changes it."""
        replies = self.engine.handle_batch(reqs)
        assert len(replies) == len(reqs)
        changes = self.engine.take_changes()
        return replies, changes, self.store.prepare(changes)

    def _encode(self, items: list[Admitted], replies: list, reqs: list[Request],
                encoded: dict[int, bytes] | None) -> collections.Counter:
        """Encode the framed replies (they leave at release) and count the batch's replies by transport,
        infno and code. `encoded`: replies the store encoded already, by id (_replies_msgpack)."""
        counts: collections.Counter = collections.Counter()
        encode = MSGPACK.encoder.encode
        for i, (it, rep, req) in enumerate(zip(items, replies, reqs)):
            infno = infno_label(req.infno)  # read by the engine: no second decode
            c = it.conn
            counts[("tcp" if c is not None else "http", infno, rep.err_code or "")] += 1
            if c is not None:
                # Not it.frame yet: another batch's release flushes this connection,
                # and must not send a reply whose batch is still being written.
                b = encoded.get(id(rep)) if encoded else None
                it.encoded = enc = frame(encode(rep) if b is None else b)
                # The connection now holds the reply instead of the body
                # (reply_bytes_per_connection_max); the reply's objects go now, not at release.
                c.held_bytes += len(enc) - len(it.body)
                it.body = b""
                replies[i] = None
        return counts

    # ------------------------------------------------------------ a store that runs whole batches (serial)

    def _serial_batch(self, reqs: list[Request]):
        """On the writer thread, for a store whose batch is one transaction from its first read to its commit
        (engine.store.pg: its lock, catch-up, compute, write, commit): (replies, changes, engine_s, commit_s,
        the replies the store encoded), or None when the store is unavailable (nothing of the batch was done:
        E_BUSY)."""
        self._serial_begun += 1
        t0 = time.perf_counter()
        try:
            replies, changes, prepared = self._compute(reqs)
            t1 = time.perf_counter()
            self.store.write(prepared)
        except StoreUnavailable:
            return None
        return replies, changes, t1 - t0, time.perf_counter() - t1, _replies_msgpack(prepared)

    async def _finish_serial(self, prev, work, items: list[Admitted], reqs: list[Request]) -> None:
        """Release a batch run whole on the writer thread, in batch order; E_BUSY for every request of a batch
        the store could not take."""
        try:
            ok, done = await self._awaited(prev, work, items)
            if not ok:
                return
            if done is None:  # counted by the store (yidi_store_busy_batches_total)
                replies = [server_reply(E_BUSY, _peek(it.body, it.codec)[1],
                                        "the database is unavailable: nothing was done, retry later") for it in items]
                changes, engine_s, commit_s, encoded = [], 0.0, 0.0, None
                for it, req in zip(items, reqs):
                    req.infno = _peek(it.body, it.codec)[0]
            else:
                replies, changes, engine_s, commit_s, encoded = done
            logged = None if self.request_log is None else self.request_log.capture(items, reqs, replies)
            counts = self._encode(items, replies, reqs, encoded)
            self._durable(items, replies, changes, counts, engine_s, commit_s, logged)
            if self.manual_gc:
                self._collector.after_batch()
        finally:
            self.batches_inflight -= 1
            self._slots.release()

    async def _finish(self, prev, write, items, replies, changes, counts, engine_s, logged) -> None:
        """Release a batch's replies once it is durable and every earlier batch has been released."""
        try:
            ok, commit_s = await self._awaited(prev, write, items)
            if ok:
                self._durable(items, replies, changes, counts, engine_s, commit_s, logged)
        finally:
            self.batches_inflight -= 1
            self._slots.release()

    async def _awaited(self, prev, fut, items: list[Admitted]) -> tuple[bool, Any]:
        """The earlier batches released, then `fut` (this batch's work on the writer thread): (True, its result),
        or (False, None) when the batch is not to be answered (a fail-stop, now or before)."""
        if prev is not None:
            await prev
        try:
            value = await fut
        except BaseException as e:
            if self.failed is None:
                self._fail_stop(e, items)
            self._abandon(items)
            return False, None
        if self.failed is not None:
            self._abandon(items)  # an earlier batch failed: this one's state was built on it
            return False, None
        return True, value

    def _durable(self, items, replies, changes, counts, engine_s: float, commit_s: float, logged) -> None:
        """A batch is durable and every batch before it released: count it, release its replies, log them."""
        self.batches += 1
        self.behind = time.perf_counter() - items[0].t0 > self._wait_s  # the batch's oldest, read to release
        self.metrics.observe_batch(len(items), engine_s, commit_s, changes, counts)
        self._release(items, replies)
        if logged is not None:
            self.request_log.released(logged)
        if self.observer is not None:
            self.observer("batch", len(items))

    def _write(self, prepared) -> float:
        """On the writer thread: make a batch durable; returns the seconds it took."""
        t0 = time.perf_counter()
        self.store.write(prepared)
        return time.perf_counter() - t0

    def _release(self, items: list[Admitted], replies: list[Reply]) -> None:
        now = time.perf_counter()
        lat_tcp = self.metrics.latency.labels("tcp")
        lat_http = self.metrics.latency.labels("http")
        # The status page's finer histogram (engine.hub.series.LatencyHistogram.observe, inlined).
        lat_counts, lat_bounds = self.series.latency.counts, LatencyHistogram.BOUNDS_S
        conns = {}
        for it, rep in zip(items, replies):
            dt = now - it.t0
            lat_counts[bisect.bisect_right(lat_bounds, dt)] += 1
            if it.conn is not None:
                it.frame = it.encoded
                lat_tcp.observe(dt)
                conns[id(it.conn)] = it.conn
            else:
                lat_http.observe(dt)
                if not it.fut.done():
                    it.fut.set_result(rep)
        for c in conns.values():
            c.flush()

    def _fail_stop(self, exc: BaseException, items: list[Admitted]) -> None:
        log.critical("fail-stop: %s: %r; no further reply will be sent", type(exc).__name__, exc,
                     exc_info=exc, extra={"event": "fail-stop"})
        self.failed = exc
        for c in list(self.connections):
            c.abort()
        self._abandon(list(items) + list(self.queue))
        self.queue.clear()
        if self.on_fail_stop is not None:
            self.on_fail_stop(exc)

    def _abandon(self, items: list[Admitted]) -> None:
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
        for task in (self._sweeper, self._sampler):
            if task is not None:
                task.cancel()
        if self.failed is None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self.store.close)
        self._writer.shutdown(wait=self.failed is None)
