"""The admin listener (docs/contract.md section 10): what an operator reads and does, apart from the gateway.

`/metrics` (Prometheus text), `/healthz` and `POST /admin/reload` are served here,
on their own address (`--admin`, by default 127.0.0.1:9100, reachable from the
hub's own machine only), never on the gateway's port: the metrics name every
insured province's pre-payment, which is no hospital's business, and a reload is
the operator's.
"""
from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.hub.hub import Hub
from engine.hub.reload import ReloadReport

ADMIN_DEFAULT = "127.0.0.1:9100"
RELOAD_PATH = "/admin/reload"
# A reload that refused a file answers this: the request was understood, the file in it could not be used.
RELOAD_REFUSED_STATUS = 422


class Admin:
    """The admin face of one hub; `app()` is its aiohttp application. `reload(trigger)` reloads what the
    hub reads from files (engine.hub.serve.Server.reload)."""

    def __init__(self, hub: Hub, reload: Callable[[str], Awaitable[ReloadReport]]):
        self.hub = hub
        self._reload = reload

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)  # it takes no bodies
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post(RELOAD_PATH, self.reload)
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
