"""A small client for the framed TCP protocol (docs/contract.md section 7, "Transports").

Each message is a 4-byte big-endian length followed by a MessagePack envelope; the
server answers in request order on each connection, so a client may pipeline:
send many, then read as many replies. `FramedClient` uses a blocking socket (tests,
scripts, Locust under gevent); `AsyncFramedClient` uses asyncio streams. Either
speaks the frames inside TLS when given an `ssl.SSLContext`
(engine.hub.tls.client_context makes one for a hub on `--tls-cert`).

Signing in (contract section 10): on a hub with `--keys`, a connection's first frame
is a signed 9001 (`sign_in_envelope`; either client's `sign_in` sends it and returns
the `sign_no`), and every later envelope names that sign-in in its `sign_no`:
`with_sign_no` adds it to an envelope already encoded. Over HTTP each request
carries engine.hub.auth.signed_headers instead.
"""
from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import time
from typing import Any, Iterable

import msgspec

from engine.contract.protocol import FRAME_BYTES_MAX, FRAME_HEADER_BYTES, INFNO_SIGN_IN, INFNO_SIGN_OUT
from engine.hub.address import parse_address
from engine.hub.auth import signed_values
from engine.hub.framing import frame

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


class ConnectionClosed(ConnectionError):
    """The server closed the connection before a whole reply arrived."""


def encode_frame(envelope: Any) -> bytes:
    """One frame: an envelope (a dict, encoded here) or an already encoded MessagePack body."""
    body = envelope if isinstance(envelope, (bytes, bytearray, memoryview)) else _enc.encode(envelope)
    return frame(bytes(body))


def decode_reply(body: bytes) -> dict:
    return _dec.decode(body)


# ---------------------------------------------------------------- signing in (section 10)

class SignInRefused(Exception):
    """The hub answered a 9001 or 9002 with an error; `reply` is its reply."""

    def __init__(self, reply: dict):
        super().__init__(f"{reply.get('err_code')}: {reply.get('err_msg')}")
        self.reply = reply


def sign_in_envelope(paasid: str, token: str, fixmedins_code: str, *, opter_no: str = "0001",
                     ip: str = "127.0.0.1", mac: str = "", now_s: float | None = None, **fields: Any) -> dict:
    """A 9001 envelope signed now (the first frame of a connection on a hub with --keys; a later 9001 may
    carry the values too). `fields` are more envelope fields (msgid, inf_time, mdtrtarea_admvs, ...)."""
    env = {"infno": INFNO_SIGN_IN, "msgid": "SI" + secrets.token_hex(14), "fixmedins_code": fixmedins_code,
           "opter": opter_no, "input": {"signIn": {"opter_no": opter_no, "mac": mac, "ip": ip}},
           **signed_values(paasid, token, time.time() if now_s is None else now_s)}
    env.update(fields)
    return env


def sign_out_envelope(sign_no: str, fixmedins_code: str, *, opter_no: str = "0001", **fields: Any) -> dict:
    """A 9002 envelope: the sign-in `sign_no` ends."""
    env = {"infno": INFNO_SIGN_OUT, "msgid": "SO" + secrets.token_hex(14), "fixmedins_code": fixmedins_code,
           "opter": opter_no, "sign_no": sign_no, "input": {"signOut": {"sign_no": sign_no, "opter_no": opter_no}}}
    env.update(fields)
    return env


def sign_no_of(reply: dict) -> str:
    """The sign_no a 9001 reply gives; SignInRefused when the hub refused it."""
    out = reply.get("output")
    sign = out.get("signinoutb") if isinstance(out, dict) else None
    if reply.get("infcode") != 0 or not isinstance(sign, dict) or not isinstance(sign.get("sign_no"), str):
        raise SignInRefused(reply)
    return sign["sign_no"]


_SIGN_NO_KEY = _enc.encode("sign_no")
_FIXMAP, _FIXMAP_LAST, _MAP16 = 0x80, 0x8F, 0xDE


def with_sign_no(body: bytes, sign_no: str) -> bytes:
    """An encoded MessagePack envelope with `sign_no` set, cheaply enough for every frame of a load run:
    the pair is appended to the map and the map's count raised by one. A body that may name sign_no
    already, or a map too big for a 16-bit count, is decoded and encoded again instead."""
    pair = _SIGN_NO_KEY + _enc.encode(sign_no)
    head = body[0] if body else 0
    if _SIGN_NO_KEY not in body:
        if _FIXMAP <= head < _FIXMAP_LAST:
            return bytes((head + 1,)) + body[1:] + pair
        if head == _FIXMAP_LAST:  # 15 pairs: the 16th needs a map 16
            return bytes((_MAP16,)) + (16).to_bytes(2, "big") + body[1:] + pair
        if head == _MAP16 and body[1:3] != b"\xff\xff":
            return bytes((_MAP16,)) + (int.from_bytes(body[1:3], "big") + 1).to_bytes(2, "big") + body[3:] + pair
    env = _dec.decode(body)
    if not isinstance(env, dict):
        raise ValueError("not an envelope: the body is not a MessagePack map")
    env["sign_no"] = sign_no
    return _enc.encode(env)


class FramedClient:
    """A blocking framed-protocol client over one TCP connection, inside TLS with `ssl_context`
    (the handshake happens here; `server_hostname` defaults to `host`)."""

    def __init__(self, host: str, port: int, *, timeout_s: float | None = 30.0,
                 frame_bytes_max: int = FRAME_BYTES_MAX, ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None):
        sock = socket.create_connection((host, port), timeout=timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.frame_bytes_max = frame_bytes_max
        self._buf = bytearray()

    @classmethod
    def connect(cls, address: str | tuple[str, int], **kw) -> "FramedClient":
        host, port = parse_address(address, "127.0.0.1") if isinstance(address, str) else address
        return cls(host, port, **kw)

    def __enter__(self) -> "FramedClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, envelope: Any) -> None:
        self.sock.sendall(encode_frame(envelope))

    def send_many(self, envelopes: Iterable[Any]) -> None:
        self.sock.sendall(b"".join(encode_frame(e) for e in envelopes))

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are: a test's malformed or partial frame."""
        self.sock.sendall(data)

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionClosed(f"closed with {len(self._buf)} of {n} bytes")
            self._buf += chunk

    def recv_body(self) -> bytes:
        """The next reply's MessagePack body."""
        self._fill(FRAME_HEADER_BYTES)
        n = int.from_bytes(self._buf[:FRAME_HEADER_BYTES], "big")
        if n > self.frame_bytes_max:
            raise ConnectionError(f"reply frame of {n} bytes, more than {self.frame_bytes_max}")
        self._fill(FRAME_HEADER_BYTES + n)
        body = bytes(self._buf[FRAME_HEADER_BYTES:FRAME_HEADER_BYTES + n])
        del self._buf[:FRAME_HEADER_BYTES + n]
        return body

    def recv(self) -> dict:
        return decode_reply(self.recv_body())

    def at_eof(self) -> bool:
        """True when the server has closed and no byte is left (blocks until one or the other)."""
        if self._buf:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        self._buf += chunk
        return not chunk

    def call(self, envelope: Any) -> dict:
        self.send(envelope)
        return self.recv()

    def sign_in(self, paasid: str, token: str, fixmedins_code: str, **kw: Any) -> str:
        """Send a signed 9001 (sign_in_envelope's options) and return its sign_no; SignInRefused else."""
        return sign_no_of(self.call(sign_in_envelope(paasid, token, fixmedins_code, **kw)))

    def pipeline(self, envelopes: Iterable[Any], window: int = 64) -> list[dict]:
        """Send every envelope with up to `window` unanswered; the replies, in order.

        A bounded window, not "send all then read all": a server that stops reading
        at its in-flight bound would otherwise wait for us while we wait for it.
        """
        out: list[dict] = []
        sent = 0
        for env in envelopes:
            if sent - len(out) >= window:
                out.append(self.recv())
            self.send(env)
            sent += 1
        while len(out) < sent:
            out.append(self.recv())
        return out


class AsyncFramedClient:
    """An asyncio framed-protocol client over one TCP connection (inside TLS with `ssl_context`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 frame_bytes_max: int = FRAME_BYTES_MAX):
        self.reader, self.writer = reader, writer
        self.frame_bytes_max = frame_bytes_max

    @classmethod
    async def connect(cls, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                      server_hostname: str | None = None, **kw) -> "AsyncFramedClient":
        tls = {} if ssl_context is None else {"ssl": ssl_context, "server_hostname": server_hostname or host}
        reader, writer = await asyncio.open_connection(host, port, limit=2**20, **tls)
        return cls(reader, writer, **kw)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass

    async def send(self, envelope: Any) -> None:
        self.writer.write(encode_frame(envelope))
        await self.writer.drain()

    async def recv_body(self) -> bytes:
        try:
            head = await self.reader.readexactly(FRAME_HEADER_BYTES)
            n = int.from_bytes(head, "big")
            if n > self.frame_bytes_max:
                raise ConnectionError(f"reply frame of {n} bytes, more than {self.frame_bytes_max}")
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as e:
            raise ConnectionClosed(str(e)) from None

    async def recv(self) -> dict:
        return decode_reply(await self.recv_body())

    async def call(self, envelope: Any) -> dict:
        await self.send(envelope)
        return await self.recv()

    async def sign_in(self, paasid: str, token: str, fixmedins_code: str, **kw: Any) -> str:
        """Send a signed 9001 (sign_in_envelope's options) and return its sign_no; SignInRefused else."""
        return sign_no_of(await self.call(sign_in_envelope(paasid, token, fixmedins_code, **kw)))

    async def pipeline(self, envelopes: Iterable[Any], window: int = 64) -> list[dict]:
        """FramedClient.pipeline on asyncio: at most `window` unanswered; the replies, in order."""
        out: list[dict] = []
        sent = 0
        for env in envelopes:
            if sent - len(out) >= window:
                out.append(await self.recv())
            self.writer.write(encode_frame(env))
            sent += 1
            if sent - len(out) >= window:
                await self.writer.drain()
        await self.writer.drain()
        while len(out) < sent:
            out.append(await self.recv())
        return out
