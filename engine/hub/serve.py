"""The hub behind its listeners, and `yidi serve` (docs/contract.md section 7; docs/server.md).

`Server` starts the framed TCP listener (engine.hub.tcp), the HTTP gateway
(engine.hub.http) and the admin listener (engine.hub.admin) around one Hub, each
on TLS when given a `ServerTLS` (engine.hub.tls), with the keyring the transports
verify requests against (engine.hub.auth; None: `--no-auth`), serves until asked
to stop, then drains: admitted requests are answered, new ones get E_BUSY, clients
get `drain_timeout_s` to take their replies. The exit code tells a clean stop from
a fail-stop. `Server.reload()` (SIGHUP, `POST /admin/reload`) reloads what the hub
reads from files (engine.hub.reload).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import sys
import time
from typing import Sequence

from aiohttp import web

from engine.hub.address import parse_address
from engine.hub.admin import RELOAD_PATH, Admin
from engine.core.engine import now_text
from engine.core.maintenance import Schedule
from engine.hub.auth import Keyring, KeysSource
from engine.hub.http import Gateway
from engine.hub.hub import Hub
from engine.hub.limits import Limits
from engine.hub.maintenance import MaintenanceSource
from engine.hub.logs import HubLog, event
from engine.hub.systemd import notify
from engine.hub.reload import PartReport, Reloadable, ReloadRefused, ReloadReport
from engine.hub.status import StatusSources
from engine.hub.tcp import FramedConnection
from engine.hub.tls import HANDSHAKE_TIMEOUT_S, ServerTLS
from engine.hub.world import WorldSource


EXIT_OK, EXIT_FAIL_STOP = 0, 3


class Server:
    """The hub behind its listeners. `await start()`, then `await run()` until `stop()`."""

    def __init__(self, hub: Hub, tcp: tuple[str, int] | None = None, http: tuple[str, int] | None = None,
                 admin: tuple[str, int] | None = None, tls: ServerTLS | None = None, *,
                 keyring: Keyring | None, reloadable: Sequence[Reloadable] = (),
                 status_sources: StatusSources | None = None):
        """`keyring` is required: the credentials the transports verify (contract section 10), or
        None for a hub that checks none (`--no-auth`), said out loud by the caller. `reloadable`:
        the parts `reload()` reads again (the keys file's engine.hub.auth.KeysSource). `status_sources`:
        what the status page shows of the parts that own it (engine.hub.status)."""
        if tcp is None and http is None:
            raise ValueError("at least one of tcp and http")
        self.hub = hub
        self.tcp, self.http, self.admin = tcp, http, admin
        self.tls = tls
        self.keyring = keyring
        self.reloadable = tuple(reloadable)
        self.status_sources = status_sources
        self._reloading = asyncio.Lock()  # one reload at a time (two SIGHUPs in a row: one after the other)
        hub.metrics.auth(keyring)
        self.tcp_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self.admin_address: tuple[str, int] | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._runners: list[web.AppRunner] = []
        self._stop: asyncio.Event | None = None
        hub.on_fail_stop = lambda exc: self.stop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.hub.start()
        tls = self.tls
        if self.tcp is not None:
            if tls is None:
                self._tcp_server = await loop.create_server(
                    lambda: FramedConnection(self.hub, self.keyring), self.tcp[0], self.tcp[1], reuse_address=True)
            else:
                self._tcp_server = await loop.create_server(
                    lambda: TLSFramedConnection(self.hub, self.keyring), self.tcp[0], self.tcp[1],
                    reuse_address=True, ssl=tls.context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
            self.tcp_address = self._tcp_server.sockets[0].getsockname()[:2]
        if self.http is not None:
            self.http_address = await self._site(Gateway(self.hub, self.keyring).app(), self.http,
                                                 None if tls is None else tls.context)
        if self.admin is not None:
            self.admin_address = await self._site(Admin(self.hub, self.reload, self.status_sources).app(), self.admin,
                                                  None if tls is None else tls.admin_context)

    async def _site(self, app: web.Application, address: tuple[str, int],
                    ssl_context: ssl.SSLContext | None) -> tuple[str, int]:
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=self.hub.limits.drain_timeout_s)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, address[0], address[1], reuse_address=True, ssl_context=ssl_context).start()
        return runner.addresses[0][:2]

    async def reload(self, trigger: str = "reload") -> ReloadReport:
        """Read every reloadable part again (engine.hub.reload): each part's file is read and checked on a
        worker thread and put in force on this loop in one step; a part whose file is refused keeps what
        was in force. Logged and counted (yidi_reloads_total); `trigger` says who asked."""
        loop = asyncio.get_running_loop()
        parts = []
        async with self._reloading:
            for part in self.reloadable:
                try:
                    loaded = await loop.run_in_executor(None, part.load)
                except ReloadRefused as e:
                    parts.append(PartReport(part.name, False, error=str(e)))
                else:
                    parts.append(PartReport(part.name, True, in_force=part.apply(loaded)))
                self.hub.metrics.reloads.labels(part.name, "ok" if parts[-1].ok else "refused").inc()
        report = ReloadReport(tuple(parts))
        event("reload", "reload (%s): %s", trigger, report.line(), level=logging.INFO if report.ok else logging.WARNING,
              trigger=trigger, ok=report.ok)
        return report

    def stop(self) -> None:
        """Ask for a graceful stop (from the loop thread: a signal handler or a test)."""
        if self._stop is not None:
            if not self._stop.is_set():
                notify("STOPPING=1")
            self._stop.set()

    async def run(self) -> int:
        """Serve until stop(); then drain and return the exit code."""
        await self._stop.wait()
        if self._tcp_server is not None:
            self._tcp_server.close()  # no new connections
        if self.hub.failed is None:
            await self._drain()
        for runner in self._runners:
            await runner.cleanup()
        await self.hub.close()
        return EXIT_OK if self.hub.failed is None else EXIT_FAIL_STOP

    async def _drain(self) -> None:
        """Answer the admitted requests (frames read from now on get E_BUSY), then give the
        clients drain_timeout_s to take their replies."""
        hub = self.hub
        hub.stopping = True
        for c in list(hub.connections):
            c.stop_admitting()
        await hub.drain()
        conns = list(hub.connections)
        for c in conns:
            c.finish()
        lost = [c.lost for c in conns if c.lost is not None]
        if lost:
            await asyncio.wait(lost, timeout=hub.limits.drain_timeout_s)
            for c in conns:
                if not c.closed:
                    c.abort()  # a client that would not take its replies in time


class TLSFramedConnection(FramedConnection):
    """A framed connection inside TLS. TLS has no half-close: once the client's side ends,
    asyncio's and uvloop's TLS transports close the connection whatever eof_received returns
    (and log a warning if it asks to stay open), so it does not ask. Replies still owed
    then drop, as for a client that disconnects; what was admitted is still committed."""

    def eof_received(self):
        super().eof_received()
        return False


def new_event_loop_factory(kind: str):
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if kind == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"loop {kind!r}: want uvloop or asyncio")


# The national platform's day is China's: a bill of today is "after the hub's clock
# day" (E_DATE, docs/contract.md section 7) when the hub's clock is behind it.
CHINA_UTC_OFFSET_S = 8 * 3600


def _clock_line() -> str:
    """The zone of the hub's clock (the machine's local time), and a warning when it is not China's."""
    offset = time.localtime().tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    zone = f"UTC{sign}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"
    if offset == CHINA_UTC_OFFSET_S:
        return f"yidi: clock: local time, {zone}"
    return (f"yidi: warning: the clock is local time, {zone}, not China's UTC+08:00: settlement days, periods "
            "and the future-date rule follow it (set TZ=Asia/Shanghai)")


def _listening(kind: str, address: tuple[str, int], tls: bool) -> str:
    host, port = address
    every = " (every address of this machine)" if host in ("0.0.0.0", "::", "") else ""
    return f"yidi: {kind} listening on {host}:{port}{every}{' (tls)' if tls else ''}"


def _auth_line(keys: KeysSource | None) -> str:
    if keys is None:
        return "yidi: auth: none (--no-auth): no credential, signature, scope or sign-in is checked"
    creds = keys.keyring.by_paasid.values()
    hospitals = sum(1 for c in creds if c.fixmedins_code)
    return (f"yidi: auth: {len(keys.keyring)} credentials from {keys.path} (hospital systems {hospitals}, "
            f"platforms {len(keys.keyring) - hospitals}); reload: SIGHUP or POST {RELOAD_PATH} on the admin listener")


def _maintenance_line(source: MaintenanceSource, schedule: Schedule) -> str:
    return (f"yidi: maintenance: {len(schedule)} windows from {source.path} "
            f"({len(schedule.in_force(now_text()))} in force now); reload: SIGHUP or POST {RELOAD_PATH} on the "
            "admin listener")


def serve(world_dir: str, data_dir: str, tcp: str | None, http: str | None, limits: Limits,
          loop: str = "uvloop", out=sys.stdout, admin: str | None = None, tls: ServerTLS | None = None, *,
          keys: KeysSource | None, warnings: Sequence[str] = (),
          maintenance: tuple[str, Schedule] | None = None, log: HubLog | None = None) -> int:
    """`yidi serve`: open the store, listen (on TLS with `tls`: engine.hub.tls.load_server_tls checks
    the operator's files before this is called), serve until SIGTERM/SIGINT, drain, exit. `keys` is
    the keys file read at start (engine.hub.auth.KeysSource.open), reloaded on SIGHUP; None: --no-auth.
    `maintenance` is the maintenance file's path and its schedule read at start (section 12), reloaded
    on SIGHUP too. `warnings` are said on stderr once the hub listens (a start refused later is one line).
    `log`, the hub's log (engine.hub.logs, started by the caller), is told of every request and reopened
    on SIGHUP."""

    async def main() -> int:
        t0 = time.perf_counter()
        hub = await Hub.open(data_dir, world_dir, limits)
        gc.disable()  # see Hub.manual_gc
        hub.manual_gc = True
        # What a reload reads again: the world folder (engine.hub.world), the keys file, the log file and the
        # maintenance file. The status page reads the world in force from the store, which a reload updates.
        parts: list[Reloadable] = [WorldSource(hub, world_dir), *([] if keys is None else [keys]),
                                   *([] if log is None else [log])]
        if log is not None:
            hub.request_log = None if log.requests == "off" else log
            hub.metrics.registry.register(log.collector())
        windows = None
        if maintenance is not None:
            windows = MaintenanceSource(maintenance[0], hub.engine)
            windows.apply(maintenance[1])
            parts.append(windows)
        server = Server(hub, parse_address(tcp) if tcp else None, parse_address(http) if http else None,
                        parse_address(admin, "127.0.0.1") if admin else None, tls,
                        keyring=None if keys is None else keys.keyring, reloadable=parts,
                        status_sources=StatusSources(maintenance=None if windows is None else windows.status))
        await server.start()
        lp = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            lp.add_signal_handler(sig, server.stop)
        reloads: set[asyncio.Task] = set()  # held until done (the loop keeps only weak references)

        def on_sighup() -> None:
            task = lp.create_task(server.reload("SIGHUP"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)
        lp.add_signal_handler(signal.SIGHUP, on_sighup)
        for kind, address in (("tcp", server.tcp_address), ("http", server.http_address),
                              ("admin", server.admin_address)):
            if address:
                print(_listening(kind, address, tls is not None), file=out)
        if tls is not None:
            print(f"yidi: tls: {tls.describe()}", file=out)
        print(_auth_line(keys), file=out)
        if windows is not None:
            print(_maintenance_line(windows, maintenance[1]), file=out)
        for warning in warnings:
            print(f"yidi: warning: {warning}", file=sys.stderr, flush=True)
        print(_clock_line(), file=out)
        ready_s = time.perf_counter() - t0
        listeners = {kind: f"{a[0]}:{a[1]}" for kind, a in (("tcp", server.tcp_address), ("http", server.http_address),
                                                           ("admin", server.admin_address)) if a}
        print(f"yidi: ready in {ready_s:.2f} s ({type(lp).__module__} loop, {limits})", file=out, flush=True)
        event("start", "ready in %.2f s", ready_s, pid=os.getpid(), world=world_dir, data=data_dir,
              listeners=listeners, tls=tls is not None, auth="keys" if keys is not None else "none",
              request_log=log.requests if log is not None else "off")
        notify("READY=1", "STATUS=serving " + ", ".join(f"{k} {v}" for k, v in listeners.items()))
        code = await server.run()
        if code == EXIT_OK:
            print(f"yidi: drained and stopped after {hub.batches} batches", file=out, flush=True)
            event("stop", "drained and stopped after %d batches", hub.batches, exit_code=code)
        else:
            print(f"yidi: fail-stop: {hub.failed!r}", file=out, flush=True)
            event("stop", "stopped by a fail-stop: %r", hub.failed, level=logging.CRITICAL, exit_code=code)
        return code

    with asyncio.Runner(loop_factory=new_event_loop_factory(loop)) as runner:
        return runner.run(main())
