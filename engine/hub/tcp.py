"""The framed TCP transport of the hub (docs/contract.md section 7, "Transports").

One `FramedConnection` per client: frames are cut from the byte stream, admitted to
the hub one by one, and their replies written back in request order once the hub
releases them. What a connection may take of the hub is bounded (engine.hub.limits;
docs/server.md, "Bounds and what a misbehaving client gets"):

- Flow control is TCP's own: the connection stops reading at
  `inflight_per_connection_max` owed replies, when the bodies and replies it holds
  reach `reply_bytes_per_connection_max` (until they are below half), or when its
  client does not take its replies (`write_buffer_bytes_max`). A client that never
  reads therefore holds a bounded amount, and the others are not slowed.
- Bytes of frames not yet whole count in `Hub.partial_bytes`, over every connection;
  when the sum passes `partial_frame_bytes_total_max`, a connection holding more than
  PARTIAL_FREE_BYTES of it is refused (E_BUSY, then closed): refusing frees its
  memory at once, where pausing it would keep it held.
- Slots: `connections_max` in all, `tcp_connections_per_address_max` per client
  address (E_BUSY, then closed); a frame must arrive whole within `frame_deadline_s`
  of its first byte (E_LIMIT, then closed); a connection with nothing owed and
  nothing read for `idle_timeout_s` is closed, and so is one whose unread replies
  make no progress for as long ("stalled").
- Admission is decided when a frame is read (engine.hub.hub, `queue_wait_ms_max`).
  A refused request's E_BUSY keeps its place in the order of replies; while the
  hub is behind, the connection's requests still waiting in the queue are refused
  with it (`_shed`), so the refusal waits only for the batch already at work on
  this connection, and a connection at its in-flight bound reads on (up to twice
  it) to refuse what it reads, rather than leave its client waiting on TCP.

With a keyring (`yidi serve --keys`, contract section 10), the first frame of a
connection must be a 9001 envelope carrying the signed values as fields `paasid`,
`timestamp`, `nonce` and `signature` (engine.hub.auth). They are read with a small
Struct, before the engine sees anything; a frame that is not such an envelope, or
whose values do not verify, gets one E_AUTH frame and the connection is closed. A
good one makes the connection act for that credential: the 9001 itself and every
frame after it (pipelined behind it too) go to the hub with the credential, and
the engine checks scope and sign-in. Each frame checks, by identity, that the
credential is still the one in force; after a reload that revoked or changed it,
the next frame gets E_AUTH and the connection is closed once the replies it is
owed are out.
"""
from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import msgspec

from engine.contract.credential import Credential
from engine.contract.protocol import E_AUTH, E_BUSY, E_LIMIT, ERR_MESSAGES, FRAME_HEADER_BYTES, INFNO_SIGN_IN
from engine.contract.wire import MSGPACK
from engine.hub.auth import REFUSED_FIRST_FRAME, REFUSED_REVOKED, AuthRefused, Keyring
from engine.hub.framing import frame
from engine.hub.hub import Admitted, Hub, infno_label, peek_decoders, peek_fields, server_reply
from engine.hub.limits import PARTIAL_FREE_BYTES


class _SignedFrame(msgspec.Struct):
    """What the transport reads of a connection's first frame (section 10): the rest is the engine's."""

    infno: Any = None
    msgid: Any = None
    paasid: Any = None
    timestamp: Any = None
    nonce: Any = None
    signature: Any = None


_SIGNED = peek_decoders(_SignedFrame)


class FramedConnection(asyncio.Protocol):
    """One framed TCP connection: 4-byte big-endian length + MessagePack envelope (section 7)."""

    def __init__(self, hub: Hub, keyring: Keyring | None):
        """`keyring`: the credentials a first frame is verified against; None: none (--no-auth)."""
        self.hub = hub
        self.keyring = keyring
        self.cred: Credential | None = None  # the credential the connection acts for, once its first frame verified
        self.limits = hub.limits
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.pending: collections.deque[Admitted] = collections.deque()  # replies owed, in request order
        # Request bodies read and encoded replies not yet handed to the socket (Hub._batch swaps
        # a body for its reply): bounded by reply_bytes_per_connection_max.
        self.held_bytes = 0
        self.counted_bytes = 0  # len(buf) as counted in hub.partial_bytes
        self.address = ""  # the client's address, as counted in hub.per_address
        self.last_read_s = time.monotonic()
        self.partial_since_s = self.last_read_s  # when the first byte of the frame in buf came
        self.stall_wbuf = 0  # the socket's unsent bytes at the last sweep that saw them change
        self.stall_since_s = self.last_read_s
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
        hub = self.hub
        hub.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        hub.per_address[self.address] += 1
        if hub.stopping:
            hub.metrics.busy.labels("tcp").inc()
            self._refuse(E_BUSY, "shutting down", "stopping")
        elif len(hub.connections) > self.limits.connections_max:
            hub.metrics.busy.labels("tcp").inc()
            self._refuse(E_BUSY, "too many connections", "connections_max")
        elif hub.per_address[self.address] > self.limits.tcp_connections_per_address_max:
            hub.metrics.busy.labels("tcp").inc()
            self._refuse(E_BUSY, "too many connections from this address", "per_address")

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_read_s = now_s = time.monotonic()
        if not self.buf:
            self.partial_since_s = now_s
        self.buf += data
        self._parse()

    def eof_received(self):
        # The client is done sending; its owed replies still go out, then we close.
        self.closing = True
        self._drop_buf()
        self.flush()
        return True  # keep the transport open for writing

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pending.clear()  # items still in a batch are computed and committed; their replies drop
        self.held_bytes = 0
        self._drop_buf()
        hub = self.hub
        if self in hub.connections:
            hub.connections.discard(self)
            hub.per_address[self.address] -= 1
            if hub.per_address[self.address] <= 0:
                del hub.per_address[self.address]
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading("write_buffer")

    def resume_writing(self) -> None:
        self.write_paused = False
        self._maybe_resume()

    # frames

    def _parse(self) -> None:
        """Admit every whole frame in the buffer, up to the in-flight and held-bytes bounds."""
        buf = self.buf
        size_buf = len(buf)
        off = 0
        limits = self.limits
        hub = self.hub
        pending = self.pending
        t0 = time.perf_counter()
        while not self.closing:
            over_bound = len(pending) >= limits.inflight_per_connection_max
            if over_bound and (not (hub.behind and hub.batches_inflight)
                               or len(pending) >= 2 * limits.inflight_per_connection_max):
                # While the hub is behind, read on past the bound (up to twice it) and refuse
                # what is read at once, rather than leave the client waiting on TCP's backpressure.
                self._pause_reading("inflight")
                break
            if self.held_bytes >= limits.reply_bytes_per_connection_max:
                self._pause_reading("reply_bytes")
                break
            if size_buf - off < FRAME_HEADER_BYTES:
                break
            n = int.from_bytes(buf[off:off + FRAME_HEADER_BYTES], "big")
            if n > limits.frame_bytes_max:
                self._refuse(E_LIMIT, f"frame of {n} bytes, more than {limits.frame_bytes_max}", "frame_bytes")
                return
            end = off + FRAME_HEADER_BYTES + n
            if end > size_buf:
                break  # a partial frame: the buffer holds at most frame_bytes_max + 4 of it
            body = bytes(buf[off + FRAME_HEADER_BYTES:end])
            cred = None
            if self.keyring is not None:
                cred = self.cred
                try:
                    if cred is None:
                        cred = self.cred = self._authenticate(body)
                    elif self.keyring.by_paasid.get(cred.paasid) is not cred:
                        raise AuthRefused(f"the credential {cred.paasid} was revoked or changed by a reload of the "
                                          "keys: connect and sign in again", REFUSED_REVOKED)
                except AuthRefused as e:
                    self._auth_refused(body, e)
                    return
            item = Admitted(body, MSGPACK, self, None, t0, cred)
            off = end
            pending.append(item)
            self.held_bytes += n
            if not hub.submit(item, over_bound):
                self._shed(queued_too=hub.behind and not hub.stopping)
        if off:
            del buf[:off]
            self.partial_since_s = self.last_read_s  # what is left began in the last read
        self._account()

    def _authenticate(self, body: bytes) -> Credential:
        """The credential that signed a connection's first frame; AuthRefused when it is not a signed 9001."""
        p = peek_fields(body, MSGPACK, _SIGNED)
        if p is None or p.infno != INFNO_SIGN_IN:
            raise AuthRefused("the first frame of a connection must be a 9001 sign-in carrying paasid, timestamp, "
                              "nonce and signature", REFUSED_FIRST_FRAME)
        timestamp = p.timestamp
        if type(timestamp) is int:  # MessagePack has integers: Unix seconds as one are the same text
            timestamp = str(timestamp)
        return self.keyring.verify(p.paasid, timestamp, p.nonce, p.signature, time.time())

    def _auth_refused(self, body: bytes, e: AuthRefused) -> None:
        """E_AUTH after the replies owed, then close (section 10); the frame is not admitted."""
        p = peek_fields(body, MSGPACK, _SIGNED)
        metrics = self.hub.metrics
        metrics.auth_refused.labels("tcp", e.reason).inc()
        infno = None if p is None else (p.infno if isinstance(p.infno, str) else "")
        metrics.requests.labels("tcp", infno_label(infno), E_AUTH).inc()
        msgid = p.msgid if p is not None and isinstance(p.msgid, str) else ""
        self._refuse(E_AUTH, f"{ERR_MESSAGES[E_AUTH]}: {e}", "auth", msgid, infno_label(infno))

    def _shed(self, queued_too: bool) -> None:
        """E_BUSY for the request just refused and, when the hub is behind (`queued_too`), for this
        connection's requests still in the queue: replies keep request order, so the refusal leaves
        once the batch already at work on this connection is released, not after every queued one
        (engine.hub.hub). A refusal because the queue is full but young (a burst), or at shutdown,
        refuses the new request only: what was admitted then is answered soon, or still answered."""
        hub = self.hub
        encode = MSGPACK.encoder.encode
        first = True
        for it in reversed(self.pending):
            if it.frame is not None or it.encoded is not None:
                break  # answered, or in a batch: everything before it is too
            if not first:  # hub.submit counted the refused one; these were admitted, now refused
                hub.busy_count += 1
                hub.metrics.busy.labels("tcp").inc()
            first = False
            f = frame(encode(hub.busy_reply(it)))
            self.held_bytes += len(f) - len(it.body)
            it.body = b""
            it.frame = f  # the batcher skips it
            if not queued_too:
                break
        self.flush()

    def _account(self) -> None:
        """Count the buffer in hub.partial_bytes; refuse this connection if the hub's budget is spent."""
        n = len(self.buf)
        hub = self.hub
        if n != self.counted_bytes:
            hub.partial_bytes += n - self.counted_bytes
            self.counted_bytes = n
        if (n > PARTIAL_FREE_BYTES and hub.partial_bytes > self.limits.partial_frame_bytes_total_max
                and not self.read_paused and not self.closing):
            hub.metrics.busy.labels("tcp").inc()
            self._refuse(E_BUSY, "the hub holds too many partial frames: retry later", "partial_frame_bytes")

    def _drop_buf(self) -> None:
        self.buf.clear()
        self._account()

    def _refuse(self, code: str, detail: str, reason: str, msgid: str = "", infno: str = "unread") -> None:
        """Answer `code` after the replies owed, then close (section 7: oversize length; section 10: E_AUTH)."""
        self.hub.metrics.closed.labels("tcp", reason).inc()
        self.hub.log_refusal("tcp", infno, msgid, "", self.cred, code, time.perf_counter())
        self.closing = True
        self._drop_buf()
        self._pause_reading()
        it = Admitted(b"", MSGPACK, self, None, time.perf_counter())
        it.frame = frame(MSGPACK.encoder.encode(server_reply(code, msgid, detail)))
        it.encoded = b""  # made here, not by the hub: not an E_BUSY of admission (flush)
        self.held_bytes += len(it.frame)
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
            busy_t0 = []
            while p and p[0].frame is not None:
                it = p.popleft()
                out.append(it.frame)
                if it.encoded is None:  # an E_BUSY of admission (_shed)
                    busy_t0.append(it.t0)
            data = out[0] if len(out) == 1 else b"".join(out)
            self.held_bytes -= len(data)
            self.transport.write(data)
            if busy_t0:
                now = time.perf_counter()
                h = self.hub.metrics.busy_reply_s
                for t0 in busy_t0:
                    h.observe(now - t0)
        if self.closing:
            if not p:
                self.transport.close()
            return
        self._maybe_resume()

    def _pause_reading(self, reason: str = "") -> None:
        """Stop reading; `reason`, the bound that stopped it, is counted (yidi_reads_paused_total)."""
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()
            if reason:
                self.hub.metrics.paused.labels(reason).inc()

    def _maybe_resume(self) -> None:
        if (self.read_paused and not self.write_paused and not self.closing
                and len(self.pending) < self.limits.inflight_per_connection_max
                and self.held_bytes < self.limits.reply_bytes_per_connection_max // 2):
            self.read_paused = False
            self.transport.resume_reading()
            if self.buf:
                self._parse()  # frames that arrived before the pause

    # deadlines (Hub._sweep)

    def sweep(self, now_s: float) -> None:
        """Close the connection if its frame is late, it is idle, or its client stopped taking replies."""
        if self.closed or self.transport is None:
            return
        limits = self.limits
        if self.buf and not self.read_paused and not self.closing \
                and now_s - self.partial_since_s > limits.frame_deadline_s:
            self._refuse(E_LIMIT, f"a frame not whole within {limits.frame_deadline_s:g} s of its first byte",
                         "frame_deadline")
            return
        wbuf = self.transport.get_write_buffer_size()
        quiet_s = now_s - self.last_read_s
        if not wbuf:
            self.stall_wbuf = 0
            if not self.pending and not self.buf and not self.closing and quiet_s > limits.idle_timeout_s:
                self.hub.metrics.closed.labels("tcp", "idle").inc()
                self.closing = True
                self._pause_reading()
                self.transport.close()
            return
        if wbuf != self.stall_wbuf:
            self.stall_wbuf, self.stall_since_s = wbuf, now_s  # the client took some, or more was written
        elif min(quiet_s, now_s - self.stall_since_s) > limits.idle_timeout_s:
            self.hub.metrics.closed.labels("tcp", "stalled").inc()
            self.abort()

    # shutdown

    def stop_admitting(self) -> None:
        """At shutdown: frames already buffered are answered E_BUSY by the hub; read on so they are."""
        if self.buf and not self.closing:
            self._parse()

    def finish(self) -> None:
        """At shutdown, after the drain: close once the owed replies are out."""
        self.closing = True
        self._drop_buf()
        self.flush()

    def abort(self) -> None:
        self.closed = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.abort()
