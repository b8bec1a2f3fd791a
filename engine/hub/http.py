"""The hub's HTTP gateway (docs/contract.md section 7, "Transports"): POST HTTP_PATH, and nothing else.

A JSON body is admitted to the hub like a TCP frame; its reply goes back as JSON with
money as JSON numbers (section 7), rendered here from the reply's decimal strings,
never through a float. `/metrics` and `/healthz` are the admin listener's
(engine.hub.admin), not the gateway's.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import msgspec
from aiohttp import web

from engine.contract.protocol import E_BUSY, E_LIMIT, SETLINFO_MONEY
from engine.contract.wire import JSON, Codec, Reply
from engine.core.reconcile import REPLY_MONEY_KEYS
from engine.hub.hub import Admitted, FailStop, Hub, server_reply

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


def _json(reply: Reply, status: int, headers: dict | None = None) -> web.Response:
    return web.Response(body=encode_http(reply), status=status, content_type="application/json",
                        headers=headers)


# ---------------------------------------------------------------- the gateway

class Gateway:
    """The HTTP face of one hub; `app()` is its aiohttp application."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.in_progress = 0  # requests being read or waiting for their reply (bounded: http_requests_max)

    def app(self) -> web.Application:
        # aiohttp refuses bodies above client_max_size with HTTPRequestEntityTooLarge on read().
        app = web.Application(client_max_size=self.hub.limits.http_body_bytes_max)
        app.router.add_post(HTTP_PATH, self.call_service)
        return app

    async def call_service(self, request: web.Request) -> web.Response:
        hub = self.hub
        if self.in_progress >= hub.limits.http_requests_max:
            hub.metrics.busy.labels("http").inc()
            hub.metrics.requests.labels("http", "unread", E_BUSY).inc()
            return _json(server_reply(E_BUSY, "", "too many HTTP requests in progress"), 503, {"Retry-After": "1"})
        self.in_progress += 1
        try:
            return await self._call(request)
        finally:
            self.in_progress -= 1

    async def _call(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        hub = self.hub
        limit = hub.limits.http_body_bytes_max
        if request.content_length is not None and request.content_length > limit:
            return _json(server_reply(E_LIMIT, "", f"body of {request.content_length} bytes, more than {limit}"),
                         413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(server_reply(E_LIMIT, "", f"body of more than {limit} bytes"), 413)
        fut = asyncio.get_running_loop().create_future()
        item = Admitted(body, JSON, None, fut, t0)
        if not hub.submit(item):
            return _json(hub.busy_reply(item), 503, {"Retry-After": "1"})
        try:
            reply = await asyncio.shield(fut)
        except FailStop:
            raise web.HTTPServiceUnavailable(text="fail-stop")
        return _json(reply, 200)
