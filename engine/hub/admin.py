"""The admin listener (docs/contract.md section 10): what an operator reads, apart from the gateway.

`/metrics` (Prometheus text) and `/healthz` are served here, on their own
address (`--admin`, by default 127.0.0.1:9100, reachable from the hub's own
machine only), never on the gateway's port: the metrics name every insured
province's pre-payment, which is no hospital's business.
"""
from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.hub.hub import Hub

ADMIN_DEFAULT = "127.0.0.1:9100"


class Admin:
    """The admin face of one hub; `app()` is its aiohttp application."""

    def __init__(self, hub: Hub):
        self.hub = hub

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)  # it takes no bodies
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.hub.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        if self.hub.failed is not None:
            return web.Response(status=503, text="fail-stop\n")
        if self.hub.stopping:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ok\n")
