"""The framed TCP transport of the hub (docs/contract.md section 7, "Transports").

One `FramedConnection` per client: frames are cut from the byte stream, admitted to
the hub one by one, and their replies written back in request order once the hub
releases them. Flow control is TCP's own: at `inflight_per_connection_max` owed
replies, or when the client does not read its replies, the connection stops reading.
"""
from __future__ import annotations

import asyncio
import collections
import time

from engine.contract.protocol import E_BUSY, E_LIMIT, FRAME_HEADER_BYTES
from engine.contract.wire import MSGPACK
from engine.hub.framing import frame
from engine.hub.hub import Admitted, Hub, server_reply


class FramedConnection(asyncio.Protocol):
    """One framed TCP connection: 4-byte big-endian length + MessagePack envelope (section 7)."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.limits = hub.limits
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.pending: collections.deque[Admitted] = collections.deque()  # replies owed, in request order
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
        """Admit every whole frame in the buffer, up to the in-flight bound."""
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
            if size_buf - off < FRAME_HEADER_BYTES:
                break
            n = int.from_bytes(buf[off:off + FRAME_HEADER_BYTES], "big")
            if n > limits.frame_bytes_max:
                self._refuse(E_LIMIT, f"frame of {n} bytes, more than {limits.frame_bytes_max}")
                return
            end = off + FRAME_HEADER_BYTES + n
            if end > size_buf:
                break  # a partial frame: the buffer holds at most frame_bytes_max + 4 of it
            item = Admitted(bytes(buf[off + FRAME_HEADER_BYTES:end]), MSGPACK, self, None, t0)
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
        it = Admitted(b"", MSGPACK, self, None, time.perf_counter())
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

    # shutdown

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
