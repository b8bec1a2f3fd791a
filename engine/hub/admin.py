"""The admin listener (docs/contract.md section 10): what an operator reads and does, apart from the gateway.

`/metrics` (Prometheus text), `/healthz`, `POST /admin/reload` and `POST /admin/filings` (an operator's
long-term filing, docs/contract.md "Filings online") are served here,
on their own address (`--admin`, by default 127.0.0.1:9100, reachable from the
hub's own machine only), never on the gateway's port: the metrics name every
insured province's pre-payment, which is no hospital's business, and a reload is
the operator's.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import time
import uuid
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.contract.credential import OPERATOR
from engine.contract.protocol import INFNO_LONG_FILING
from engine.contract.wire import JSON
from engine.hub.hub import Admitted, FailStop, Hub
from engine.hub.reload import ReloadReport

ADMIN_DEFAULT = "127.0.0.1:9100"
RELOAD_PATH = "/admin/reload"
# A reload that refused a file answers this: the request was understood, the file in it could not be used.
RELOAD_REFUSED_STATUS = 422
FILINGS_PATH = "/admin/filings"
ADMIN_BODY_BYTES_MAX = 16_384  # a filing's JSON; the other routes take no body


class Admin:
    """The admin face of one hub; `app()` is its aiohttp application. `reload(trigger)` reloads what the
    hub reads from files (engine.hub.serve.Server.reload)."""

    def __init__(self, hub: Hub, reload: Callable[[str], Awaitable[ReloadReport]]):
        self.hub = hub
        self._reload = reload

    def app(self) -> web.Application:
        app = web.Application(client_max_size=ADMIN_BODY_BYTES_MAX)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post(RELOAD_PATH, self.reload)
        app.router.add_post(FILINGS_PATH, self.filing)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.hub.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        if self.hub.failed is not None:
            return web.Response(status=503, text="fail-stop\n")
        if self.hub.stopping:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ok\n")

    async def reload(self, request: web.Request) -> web.Response:
        """200 with what is in force now; 422 naming the file, line and field of a file refused (what was
        in force is kept)."""
        report = await self._reload(RELOAD_PATH)
        return web.json_response(report.as_json(), status=200 if report.ok else RELOAD_REFUSED_STATUS)

    async def filing(self, request: web.Request) -> web.Response:
        """An operator's long-term filing (异地长期居住, approved at once): a JSON object {psn_no, insutype,
        filing_type (LONG_RESETTLED, LONG_RESIDENT, LONG_STATIONED), dest_admdvs, begndate, enddate (absent: open),
        status (2, the default: 个人承诺, in force six months at most; 1: materials complete), msgid (absent: one
        is made; send one to retry safely)}. It goes through the hub like any request and is committed before
        the reply: 200 with its trt_dcla_detl_sn, 422 with the err_code of a refusal, 503 when busy."""
        try:
            d = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        if not isinstance(d, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        msgid = d.pop("msgid", None) or "LT" + uuid.uuid4().hex
        body = JSON.encoder.encode({
            "infno": INFNO_LONG_FILING, "msgid": msgid, "fixmedins_code": "", "mdtrtarea_admvs": "",
            "insuplc_admdvs": "", "opter": "operator", "opter_name": "admin listener",
            "inf_time": _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "input": {"data": d}})
        fut = asyncio.get_running_loop().create_future()
        item = Admitted(body, JSON, None, fut, time.perf_counter(), OPERATOR)
        if not self.hub.submit(item):
            reply = self.hub.busy_reply(item)
            return web.Response(body=JSON.encoder.encode(reply), status=503, content_type="application/json")
        try:
            reply = await asyncio.shield(fut)
        except FailStop:
            raise web.HTTPServiceUnavailable(text="fail-stop")
        return web.Response(body=JSON.encoder.encode(reply), status=200 if reply.infcode == 0 else 422,
                            content_type="application/json")
