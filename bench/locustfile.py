"""Locust load for the framed TCP protocol (docs/contract.md section 7).

Locust's gevent cannot drive asyncio clients, so each User holds one plain
(gevent-patched) socket and pipelines on it: a sender keeps up to `--in-flight`
requests unanswered, a receiver greenlet reads the replies (in request order, as
the protocol promises) and fires one Locust request event each.

Two ways to offer load:
- closed loop (`--rate 0`): each User keeps `--in-flight` requests outstanding,
  as fast as the server answers (saturation);
- open loop (`--rate R`): the Users together send R requests/s on a fixed
  schedule, whatever the replies do. Latency counts from the scheduled send
  time, so a stall is not hidden by the sender waiting for it (no coordinated
  omission).

The requests come from a frames file written by bench/serve_load.py: one
length-prefixed MessagePack envelope after another, each person's requests on
one User so that their order holds (pre-settlement, settlement, reversal).

With `--lanes FILE` (also written by bench/serve_load.py) each frame belongs to a
lane: the connection of one province platform (contract section 10: a
connection acts for one credential). The lanes are shared out among the Users,
balanced by their frames; each User opens one connection per lane it holds, sends
the lane's first frame (a signed 9001, when the hub runs with --keys) and reads its
reply before any request's clock starts, then sends its frames in stream order,
each on its lane, with `--in-flight` unanswered in all.

The lanes file also names each frame's visit (its `mdtrt_id`; a 2601 goes with the visit
of the message it undoes), as a hospital system sends a visit's requests: one at a
time, each only after the previous one's reply (registration, uploads, discharge,
settlement, or a pre-settlement and its settlement). The sender walks the frames in
order; a frame whose visit has a request unanswered is set aside (at most
WAITING_PER_USER_MAX of them; the sender stops when they are that many) and sent when
that reply arrives, under the same `--in-flight` bound, its latency counted from
then. Many visits interleave, so the window stays full.

Events are named by infno, and by infno and err_code for refusals ("2207
E_DUPLICATE_VISIT"); only E_BUSY and transport errors count as failures. With
`--tls-ca FILE` each connection speaks the frames inside TLS, trusting that CA
(a hub on `yidi serve --tls-cert`). At the
end the run fails (exit code 1) when the p99 latency exceeds `--p99-budget-ms`
or any request failed; `--summary-json` writes exact percentiles for the driver.

    locust -f bench/locustfile.py --headless -u 8 -r 8 -t 30s --host tcp://127.0.0.1:7000 \\
        --frames /tmp/yidi-bench/frames-....bin --in-flight 32 --rate 0 --p99-budget-ms 200
"""
from __future__ import annotations

import array
import base64
import itertools
import json
import socket
import ssl
import time
import zlib
from collections import deque
from typing import Any

import gevent
import gevent.event
import msgspec
from gevent.lock import Semaphore
from locust import User, events, task

# engine.contract.protocol.FRAME_HEADER_BYTES and FRAME_BYTES_MAX, repeated: Locust runs this file under
# gevent, in a process of its own that imports nothing of the engine.
FRAME_HEADER_BYTES = 4
REPLY_BYTES_MAX = 16 * 1024 * 1024
WAITING_PER_USER_MAX = 1024  # frames set aside until their visit's previous request is answered


class _Peek(msgspec.Struct):
    infno: Any = None
    infcode: Any = None
    err_code: Any = None
    input: Any = None


_peek = msgspec.msgpack.Decoder(_Peek)


@events.init_command_line_parser.add_listener
def _options(parser):
    g = parser.add_argument_group("yidi framed protocol")
    g.add_argument("--frames", default="", help="frames file written by bench/serve_load.py")
    g.add_argument("--in-flight", type=int, default=32, help="requests outstanding per User at most")
    g.add_argument("--rate", type=float, default=0.0, help="requests/s offered by all Users together; 0: closed loop")
    g.add_argument("--p99-budget-ms", type=float, default=0.0, help="fail the run when p99 exceeds it; 0: no budget")
    g.add_argument("--summary-json", default="", help="write exact latency percentiles and counts here")
    g.add_argument("--tls-ca", default="", help="speak TLS, trusting this CA (PEM); empty: plain TCP")
    g.add_argument("--lanes", default="", help="the lanes file of bench/serve_load.py: a connection per lane")


@events.init.add_listener
def _load_frames(environment, **_kw) -> None:
    """The frames read and shared out before the run starts: reading a large file in the Users' on_start
    would eat into `-t` on a busy machine (and once left no time at all)."""
    opts = environment.parsed_options
    if opts is not None and opts.frames:
        _Shared.load(opts)


def read_frames(path: str, first: int = 0) -> list[tuple[bytes, str, str]]:
    """(frame, infno, person key) of each request in a frames file, from frame `first` on."""

    with open(path, "rb") as f:
        data = f.read()
    out = []
    off = 0
    for _ in range(first):
        off += FRAME_HEADER_BYTES + int.from_bytes(data[off:off + FRAME_HEADER_BYTES], "big")
    while off < len(data):
        n = int.from_bytes(data[off:off + FRAME_HEADER_BYTES], "big")
        body = data[off + FRAME_HEADER_BYTES:off + FRAME_HEADER_BYTES + n]
        p = _peek.decode(body)
        key = ""
        if isinstance(p.input, dict) and isinstance(p.input.get("data"), dict):
            d = p.input["data"]
            key = str(d.get("psn_no") or d.get("mdtrt_cert_no") or "")
        out.append((data[off:off + FRAME_HEADER_BYTES + n], str(p.infno), key))
        off += FRAME_HEADER_BYTES + n
    return out


class _Shared:
    """What the Users of one process share: the partitioned frames and the exact latencies."""

    frames: list | None = None
    parts: list[list] = []  # per User: (frame, infno, lane, visit) in stream order; visit -1: none
    lanes_of_user: list[list[int]] = []
    first_frames: list[bytes | None] = []  # per lane: what its connection sends first
    next_user = itertools.count()
    latencies_s: list[float] = []
    outcomes: dict[str, int] = {}
    failures = 0
    t_first: float | None = None
    t_last = 0.0
    epoch: float | None = None  # the open loop's clock: User k sends at epoch + (k / n + j) * interval
    cpu0: tuple[float, float] | None = None  # (wall, CPU) seconds when the first User began to send
    cpu1: tuple[float, float] | None = None  # the same at a recent reply (every 256th)

    @classmethod
    def first_tick(cls, index: int, interval_s: float, n_users: int) -> float:
        """A User's first send time in the open loop, on a grid shared by the Users: their sends are evenly
        spaced (one every interval / n), whenever each User started and however long its start took, so
        that two runs offer the same arrivals. A User that starts late joins at its next tick."""
        now = time.perf_counter()
        if cls.epoch is None:
            cls.epoch = now
            cls.cpu0 = (now, time.process_time())
        if not interval_s:
            return now
        offset = cls.epoch + (index % n_users) * interval_s / n_users
        return offset + max(0, -(-(now - offset) // interval_s)) * interval_s

    @classmethod
    def load(cls, opts) -> None:
        if cls.frames is not None:
            return
        spec = {}
        if opts.lanes:
            with open(opts.lanes) as f:
                spec = json.load(f)
        cls.frames = read_frames(opts.frames, spec.get("first_frame", 0))  # the warm-up's frames were sent
        n = max(1, opts.num_users)
        cls.parts = [[] for _ in range(n)]
        if not opts.lanes:
            cls.lanes_of_user = [[0] for _ in range(n)]
            cls.first_frames = [None]
            for fr, infno, key in cls.frames:  # one person, one User: that person's requests keep their order
                cls.parts[zlib.crc32(key.encode()) % n].append((fr, infno, 0, -1))
            return
        lane_of = base64.b64decode(spec["lane_of_frame"])
        assert len(lane_of) == len(cls.frames), "the lanes file is not this frames file's"
        visit_of = array.array("i", base64.b64decode(spec["visit_of_frame"])) if spec.get("visit_of_frame") \
            else array.array("i", [-1]) * len(lane_of)
        assert len(visit_of) == len(cls.frames), "the lanes file is not this frames file's"
        cls.first_frames = [base64.b64decode(x) if x else None for x in spec["first_frames"]]
        # Lanes to Users, the busiest lane first to the least loaded User: the Users' shares come out
        # about equal, so they run out of frames (and start again) at about the same time.
        counts = [0] * len(cls.first_frames)
        for k in lane_of:
            counts[k] += 1
        load, user_of = [0] * n, [0] * len(counts)
        cls.lanes_of_user = [[] for _ in range(n)]
        for k in sorted(range(len(counts)), key=lambda k: -counts[k]):
            u = min(range(n), key=lambda u: load[u])
            user_of[k], load[u] = u, load[u] + counts[k]
            cls.lanes_of_user[u].append(k)
        for (fr, infno, _), k, v in zip(cls.frames, lane_of, visit_of):
            cls.parts[user_of[k]].append((fr, infno, k, v))


class FramedUser(User):
    """Its lanes' connections, pipelined: one sender greenlet, a receiver greenlet per connection.

    Only the sender writes to the sockets. In the closed loop it queues frames on their lanes until it
    would wait (the window is full, or too many frames are set aside) and then sends each lane's queue
    in one write: one system call for many frames, so that the load core's time goes to requests rather
    than to send calls. The hub then reads bursts of frames, as it does from many busy connections. In
    the open loop each tick's frame is written at once, and a frame made ready by a reply at the next
    flush. A request's clock starts when it is queued, a few microseconds before its write, so latency
    is never understated.
    """

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        _Shared.load(opts)
        self.index = next(_Shared.next_user)
        self.mine = _Shared.parts[self.index % len(_Shared.parts)]
        host = self.environment.host or "tcp://127.0.0.1:7000"
        # Several nodes (tcp://A:P,B:Q): lane k connects to node k mod their number, as a load balancer would.
        nodes = [a.rpartition(":") for a in host.split("://", 1)[-1].split(",")]
        self.socks: dict[int, socket.socket] = {}
        self.sent: dict[int, deque] = {}  # per lane: (t0, infno, frame length, visit) of each unanswered request
        self.outbox: dict[int, list] = {}  # per lane: frames queued by the sender, written at its next flush
        # Visits with a request unanswered -> the frames of that visit waiting for its reply, in order.
        self.waiting: dict[int, deque] = {}
        # Frames whose visit's previous request is answered: the sender sends them first. At most one per
        # reply since the sender last ran, so at most --in-flight (and the one being sent).
        self.ready: deque = deque()
        for k in _Shared.lanes_of_user[self.index % len(_Shared.parts)]:
            h, _, p = nodes[k % len(nodes)]
            sock = socket.create_connection((h, int(p)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if opts.tls_ca:  # the handshake here, before the first request's clock starts
                sock = ssl.create_default_context(cafile=opts.tls_ca).wrap_socket(sock, server_hostname=h)
            first = _Shared.first_frames[k]
            if first is not None:  # the sign-in, answered before the load starts
                sock.sendall(first)
                buf = bytearray()
                n = _whole_frame(sock, buf)
                r = _peek.decode(memoryview(buf)[FRAME_HEADER_BYTES:]) if n is not None else None
                if r is None or r.infcode != 0 or len(buf) != FRAME_HEADER_BYTES + n:
                    raise RuntimeError(f"lane {k}: the first frame was refused: {r and r.err_code}")
            self.socks[k], self.sent[k], self.outbox[k] = sock, deque(), []
        self.window = Semaphore(opts.in_flight)
        self.waiting_slots = Semaphore(WAITING_PER_USER_MAX)
        self.wake = gevent.event.Event()  # set by a receiver when a frame is ready: the open loop's sleep ends
        n_users = max(1, opts.num_users)
        self.interval_s = n_users / opts.rate if opts.rate > 0 else 0.0
        self.receivers = [gevent.spawn(self._receive, k) for k in self.socks]

    def on_stop(self) -> None:
        for g in self.receivers:
            g.kill(block=False)
        for sock in self.socks.values():
            sock.close()

    @task
    def send_all(self) -> None:
        """Send this User's requests in order, forever (a stream that runs out starts again)."""
        sched = _Shared.first_tick(self.index, self.interval_s, max(1, self.environment.parsed_options.num_users))
        waiting, ready = self.waiting, self.ready
        while not self.mine:  # more Users than lanes: this one has nothing to send (a task that returned
            gevent.sleep(1.0)  # at once would be run again and again, spinning on the load core)
        stream = itertools.cycle(self.mine)
        while True:
            while ready:  # a visit's next request, its previous one answered: counted from now
                lane, fr, infno, visit = ready.popleft()
                self._take(self.window)
                self._queue(lane, fr, infno, visit, time.perf_counter())
            if self.interval_s:
                now = time.perf_counter()
                if sched > now:  # the next tick is ahead: send what is queued, sleep until then or a ready frame
                    self._flush()
                    self.wake.clear()
                    if not ready:
                        self.wake.wait(sched - now)
                    continue
                t0 = sched  # the intended time: a late send counts against the server's latency
                sched += self.interval_s
            else:
                t0 = 0.0
            fr, infno, lane, visit = next(stream)
            if visit >= 0:
                if visit in waiting:  # its visit waits for a reply: sent when that reply comes
                    self._take(self.waiting_slots)
                    waiting[visit].append((lane, fr, infno))
                    continue
                waiting[visit] = deque()
            self._take(self.window)
            self._queue(lane, fr, infno, visit, t0 or time.perf_counter())
            if self.interval_s:
                self._flush()

    def _take(self, sem: Semaphore) -> None:
        """Acquire `sem`, sending what is queued first when that has to wait (the replies that free it
        answer those frames)."""
        if sem.locked():
            self._flush()
        sem.acquire()

    def _queue(self, lane: int, fr: bytes, infno: str, visit: int, t0: float) -> None:
        self.sent[lane].append((t0, infno, len(fr), visit))
        self.outbox[lane].append(fr)

    def _flush(self) -> None:
        for lane, frames in self.outbox.items():
            if frames:
                data = b"".join(frames)
                frames.clear()
                self.socks[lane].sendall(data)

    def _receive(self, lane: int) -> None:
        buf = bytearray()
        fire = self.environment.events.request.fire
        sock, sent = self.socks[lane], self.sent[lane]
        while True:
            try:
                n = _whole_frame(sock, buf)
            except ValueError as e:
                return self._lost(str(e))
            if n is None:
                return self._lost("closed by the server")
            t1 = time.perf_counter()
            r = _peek.decode(memoryview(buf)[FRAME_HEADER_BYTES:FRAME_HEADER_BYTES + n])
            del buf[:FRAME_HEADER_BYTES + n]
            t0, infno, size, visit = sent.popleft()
            self.window.release()
            if visit >= 0:
                queue = self.waiting[visit]
                if queue:  # the visit's next request, now that this one is answered: the sender sends it
                    lane2, fr2, infno2 = queue.popleft()
                    self.waiting_slots.release()
                    self.ready.append((lane2, fr2, infno2, visit))
                    self.wake.set()
                else:
                    del self.waiting[visit]
            latency_s = t1 - t0
            name = infno if r.infcode == 0 else f"{infno} {r.err_code}"
            exc = RuntimeError(r.err_code) if r.err_code == "E_BUSY" else None
            _Shared.latencies_s.append(latency_s)
            _Shared.outcomes[name] = _Shared.outcomes.get(name, 0) + 1
            if _Shared.t_first is None:
                _Shared.t_first = t1
            _Shared.t_last = t1
            if not len(_Shared.latencies_s) & 255:
                _Shared.cpu1 = (t1, time.process_time())
            if exc is not None:
                _Shared.failures += 1
            fire(request_type="framed", name=name, response_time=latency_s * 1000.0, response_length=n,
                 exception=exc, context={})

    def _lost(self, why: str) -> None:
        _Shared.failures += 1
        self.environment.events.request.fire(request_type="framed", name="connection", response_time=0.0,
                                             response_length=0, exception=ConnectionError(why), context={})


def _whole_frame(sock: socket.socket, buf: bytearray) -> int | None:
    """Read from `sock` until `buf` starts with a whole frame; its body's length, None when the server closed."""
    while len(buf) < FRAME_HEADER_BYTES:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return None
        buf += chunk
    n = int.from_bytes(buf[:FRAME_HEADER_BYTES], "big")
    if n > REPLY_BYTES_MAX:
        raise ValueError(f"reply of {n} bytes")
    while len(buf) < FRAME_HEADER_BYTES + n:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return None
        buf += chunk
    return n


def summary() -> dict:
    import numpy as np

    lat = np.array(_Shared.latencies_s) * 1000.0
    span_s = (_Shared.t_last - _Shared.t_first) if _Shared.t_first is not None else 0.0
    pct = {f"p{p}": round(float(np.percentile(lat, p)), 3) for p in (50, 90, 99, 99.9)} if len(lat) else {}
    # This process's CPU while its Users ran, not while it read the frames file before (seconds of work).
    cpu = {}
    if _Shared.cpu0 is not None and _Shared.cpu1 is not None and _Shared.cpu1[0] > _Shared.cpu0[0]:
        wall, cpu_s = _Shared.cpu1[0] - _Shared.cpu0[0], _Shared.cpu1[1] - _Shared.cpu0[1]
        cpu = {"cpu_s": round(cpu_s, 3), "cpu_wall_s": round(wall, 3), "cpu_share_pct": round(100 * cpu_s / wall, 1)}
    return {"replies": int(len(lat)), "failures": _Shared.failures, "span_s": round(span_s, 3), **cpu,
            "replies_per_s": round(len(lat) / span_s, 1) if span_s > 0 else 0.0,
            "latency_ms": {**pct, "max": round(float(lat.max()), 3) if len(lat) else None},
            "outcomes": dict(sorted(_Shared.outcomes.items()))}


@events.quitting.add_listener
def _judge(environment, **_kw) -> None:
    opts = environment.parsed_options
    s = summary()
    if opts.summary_json:
        with open(opts.summary_json, "w") as f:
            json.dump(s, f, indent=1)
    p99 = s["latency_ms"].get("p99")
    verdict = []
    if not s["replies"]:
        verdict.append("no reply at all")
    if s["failures"]:
        verdict.append(f"{s['failures']} failures (E_BUSY or connection)")
    if opts.p99_budget_ms and p99 is not None and p99 > opts.p99_budget_ms:
        verdict.append(f"p99 {p99} ms over the budget of {opts.p99_budget_ms} ms")
    print(f"yidi framed: {s['replies']} replies in {s['span_s']} s = {s['replies_per_s']}/s, "
          f"latency ms {s['latency_ms']}" + (f"; FAILED: {'; '.join(verdict)}" if verdict else "; ok"))
    if verdict:
        environment.process_exit_code = 1
