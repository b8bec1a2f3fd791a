"""The hub's HTTP gateway (docs/contract.md section 7, "Transports"): POST HTTP_PATH, and nothing else.

With a keyring (`yidi serve --keys`), every request's signature headers are
verified first (section 10): a refusal is HTTP 401 with an E_AUTH reply, made
before the body is read, and changes nothing. A JSON body is then admitted to the
hub like a TCP frame, with the credential that signed it; its reply goes back as
JSON with money as JSON numbers (section 7), rendered here from the reply's
decimal strings, never through a float. `/metrics` and `/healthz` are the admin
listener's (engine.hub.admin), not the gateway's.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import msgspec
from aiohttp import web

from engine.contract.protocol import E_AUTH, E_BUSY, E_LIMIT, ERR_MESSAGES, SETLINFO_MONEY
from engine.contract.wire import JSON, Codec, Reply
from engine.core.reconcile import REPLY_MONEY_KEYS
from engine.hub.auth import HEADER_NONCE, HEADER_PAASID, HEADER_SIGNATURE, HEADER_TIMESTAMP, AuthRefused, Keyring
from engine.hub.hub import Admitted, FailStop, Hub, server_reply
from engine.hub.limits import PARTIAL_FREE_BYTES


HTTP_PATH = "/fsi/api/rsfComIfsService/callService"


# ---------------------------------------------------------------- money as JSON numbers

# The kernel renders the `result` rows with numbers already (Codec money_numbers);
# the rest of a reply holds decimal strings, turned here into raw JSON number literals.
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
    for k in ("stmttotal", "stmtdiff", "stmtdetail"):  # 3201/3202 (engine.core.reconcile)
        if k in out:
            out[k] = _numbers_in_rows(out[k], REPLY_MONEY_KEYS)
    return out


def encode_http(reply: Reply) -> bytes:
    return _HTTP.encoder.encode(msgspec.structs.replace(reply, output=http_output(reply.output)))


# A response's err_code, kept in aiohttp's per-response storage for the request log (a typed key
# from aiohttp 3.12 on).
ERR_CODE_KEY = web.ResponseKey("err_code", str) if hasattr(web, "ResponseKey") else "err_code"


def _json(reply: Reply, status: int, headers: dict | None = None) -> web.Response:
    resp = web.Response(body=encode_http(reply), status=status, content_type="application/json", headers=headers)
    resp[ERR_CODE_KEY] = reply.err_code or ""
    return resp


# ---------------------------------------------------------------- the gateway

class Gateway:
    """The HTTP face of one hub; `app()` is its aiohttp application.

    A body is read first, in chunks, under `http_body_deadline_s` (beyond it: 408, E_LIMIT,
    and the connection closes) and counted in the hub's `partial_bytes` while it is read
    (`partial_frame_bytes_total_max`: a request holding more than PARTIAL_FREE_BYTES when the
    sum passes it gets 503 E_BUSY and its connection closes). Only then does it take one of
    the `http_requests_max` slots, so slow bodies never keep fast requests out.
    """

    def __init__(self, hub: Hub, keyring: Keyring | None):
        """`keyring`: the credentials requests are verified against; None: none (--no-auth)."""
        self.hub = hub
        self.keyring = keyring
        self.in_progress = 0  # requests whose body is read, waiting for their reply (bounded: http_requests_max)

    def app(self) -> web.Application:
        # The body is read by _read_body, which enforces http_body_bytes_max itself; aiohttp's
        # own client_max_size applies to read()/post(), which the gateway does not use.
        app = web.Application(client_max_size=self.hub.limits.http_body_bytes_max)
        app.router.add_post(HTTP_PATH, self.call_service)
        return app

    async def call_service(self, request: web.Request) -> web.Response:
        hub = self.hub
        cred = None
        if self.keyring is not None:
            h = request.headers
            try:  # section 10: before anything else of the request is looked at
                cred = self.keyring.verify(h.get(HEADER_PAASID), h.get(HEADER_TIMESTAMP), h.get(HEADER_NONCE),
                                           h.get(HEADER_SIGNATURE), time.time())
            except AuthRefused as e:
                hub.metrics.auth_refused.labels("http", e.reason).inc()
                hub.metrics.requests.labels("http", "unread", E_AUTH).inc()
                hub.log_refusal("http", "unread", "", "", None, E_AUTH, time.perf_counter())
                # The body is not read: the connection closes after the reply (_closing).
                return _closing(_json(server_reply(E_AUTH, "", f"{ERR_MESSAGES[E_AUTH]}: {e}"), 401,
                                      {"WWW-Authenticate": 'x-tif-signature realm="yidi"'}))
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            hub.log_refusal("http", "unread", "", "", cred, body.get(ERR_CODE_KEY, ""), time.perf_counter())
            return body
        t0 = time.perf_counter()  # the last byte read (yidi_request_latency_seconds; queue_wait_ms_max)
        if self.in_progress >= hub.limits.http_requests_max:
            hub.metrics.busy.labels("http").inc()
            hub.metrics.requests.labels("http", "unread", E_BUSY).inc()
            hub.log_refusal("http", "unread", "", "", cred, E_BUSY, t0)
            return _json(server_reply(E_BUSY, "", "too many HTTP requests in progress"), 503, {"Retry-After": "1"})
        self.in_progress += 1
        try:
            fut = asyncio.get_running_loop().create_future()
            item = Admitted(body, JSON, None, fut, t0, cred)
            if not hub.submit(item):
                return _json(hub.busy_reply(item), 503, {"Retry-After": "1"})
            try:
                reply = await asyncio.shield(fut)
            except FailStop:
                raise web.HTTPServiceUnavailable(text="fail-stop")
            return _json(reply, 200)
        finally:
            self.in_progress -= 1

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        """The whole body, or the refusal to answer with (413, 408, 503); a refusal closes the connection
        when the body was not read to its end."""
        hub = self.hub
        limits = hub.limits
        limit = limits.http_body_bytes_max
        if request.content_length is not None and request.content_length > limit:
            return _closing(_json(server_reply(E_LIMIT, "", f"body of {request.content_length} bytes, "
                                              f"more than {limit}"), 413))
        chunks: list[bytes] = []
        n = 0
        try:
            async with asyncio.timeout(limits.http_body_deadline_s):
                content = request.content
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    n += len(chunk)
                    if n > limit:
                        return _closing(_json(server_reply(E_LIMIT, "", f"body of more than {limit} bytes"), 413))
                    chunks.append(chunk)
                    hub.partial_bytes += len(chunk)
                    if n > PARTIAL_FREE_BYTES and hub.partial_bytes > limits.partial_frame_bytes_total_max:
                        hub.metrics.busy.labels("http").inc()
                        hub.metrics.closed.labels("http", "partial_frame_bytes").inc()
                        return await _close_now(request, _json(server_reply(
                            E_BUSY, "", "the hub holds too many partial bodies: retry later"), 503, {"Retry-After": "1"}))
        except TimeoutError:
            hub.metrics.closed.labels("http", "body_deadline").inc()
            return await _close_now(request, _json(server_reply(
                E_LIMIT, "", f"a body not whole within {limits.http_body_deadline_s:g} s"), 408))
        finally:
            hub.partial_bytes -= sum(len(c) for c in chunks)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _close_now(request: web.Request, resp: web.Response) -> web.Response:
    """Answer, then close the connection at once: the client is slow or holds too much, so the
    rest of its body is not waited for (aiohttp would read it for up to its lingering time)."""
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()  # closes the transport once what was written has been sent
    return resp


def _closing(resp: web.Response) -> web.Response:
    """A response after which the connection closes. aiohttp first reads and discards what is left of
    the body for at most its lingering time (10 s), holding nothing of it, so that closing with
    unread bytes does not reset the connection before the client has read the response."""
    resp.force_close()
    return resp
