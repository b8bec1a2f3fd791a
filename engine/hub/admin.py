"""The admin listener (docs/contract.md section 10): what an operator reads and does, apart from the gateway.

The status page (`/`, its script and style, and `/status.json`: engine.hub.status),
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
from importlib import resources
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.contract.credential import OPERATOR
from engine.contract.protocol import INFNO_LONG_FILING
from engine.contract.wire import JSON
from engine.hub.hub import Admitted, FailStop, Hub
from engine.hub.reload import ReloadReport
from engine.hub.status import Status, StatusSources

ADMIN_DEFAULT = "127.0.0.1:9100"
RELOAD_PATH = "/admin/reload"
# A reload that refused a file answers this: the request was understood, the file in it could not be used.
RELOAD_REFUSED_STATUS = 422
FILINGS_PATH = "/admin/filings"
ADMIN_BODY_BYTES_MAX = 16_384  # a filing's JSON; the other routes take no body
STATUS_JSON_PATH = "/status.json"
# The page's files (package data, engine/hub/static), by the path they are served at.
STATIC_FILES = {"/": ("status.html", "text/html"), "/status.js": ("status.js", "application/javascript"),
                "/status.css": ("status.css", "text/css")}
# The browser may load nothing but this listener's own files and JSON: no CDN, no font, no frame.
STATUS_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                             "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                                             "form-action 'none'; frame-ancestors 'none'",
                  "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("engine.hub").joinpath("static")
    return {path: (folder.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in STATIC_FILES.items()}


class Admin:
    """The admin face of one hub; `app()` is its aiohttp application. `reload(trigger)` reloads what the
    hub reads from files (engine.hub.serve.Server.reload); `sources` feed the status page."""

    def __init__(self, hub: Hub, reload: Callable[[str], Awaitable[ReloadReport]],
                 sources: StatusSources | None = None):
        self.hub = hub
        self._reload = reload
        self.status = Status(hub, sources)
        self._static = _static()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=ADMIN_BODY_BYTES_MAX)
        for path in STATIC_FILES:
            app.router.add_get(path, self.static)
        app.router.add_get(STATUS_JSON_PATH, self.status_json)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post(RELOAD_PATH, self.reload)
        app.router.add_post(FILINGS_PATH, self.filing)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        self.status.close()

    async def static(self, request: web.Request) -> web.Response:
        body, ctype = self._static[request.path]
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=STATUS_HEADERS)

    async def status_json(self, request: web.Request) -> web.Response:
        """The status page's data (engine.hub.status), made at most once a second."""
        return web.json_response(await self.status.document(), headers=STATUS_HEADERS)

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
