"""A real headless Chromium driven over the DevTools protocol, for tests of pages the hub serves.

Debian's `chromium` (installed by .ci/run), started with its own empty profile and
the flags that keep it from calling home; the protocol is spoken over a websocket
with aiohttp (a dependency already), so no driver package is needed. `Browser`
records every request a page makes (Network.requestWillBeSent), evaluates
JavaScript in it, and takes screenshots.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
START_S_MAX = 30.0  # for Chromium to open its DevTools port
CALL_S_MAX = 30.0  # for one protocol call's answer
# No network of its own (updates, sync, safe browsing, field trials): the requests a page makes are
# then the only ones it makes; without these, Chromium tries Google's hosts at every start.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--metrics-recording-only", "--mute-audio",
         "--disable-features=Translate,OptimizationHints,MediaRouter", "--hide-scrollbars")


class Browser:
    """`async with Browser(profile_dir, width, height) as b:` then `await b.open(url)`, `await b.eval(js)`,
    `await b.until(js)`, `await b.screenshot(path)`; `b.requests` lists every URL the page asked for."""

    def __init__(self, profile_dir: str, width: int = 1280, height: int = 1500):
        self.profile_dir, self.width, self.height = profile_dir, width, height
        self.requests: list[str] = []
        self.console: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}

    async def __aenter__(self) -> "Browser":
        os.makedirs(self.profile_dir, exist_ok=True)
        self._log = open(os.path.join(self.profile_dir, "chromium.log"), "wb")
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile_dir}",
                                      "--remote-debugging-port=0", f"--window-size={self.width},{self.height}",
                                      "about:blank"], stdout=self._log, stderr=subprocess.STDOUT)
        port = await self._devtools_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=CALL_S_MAX) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.call("Network.enable")
        await self.call("Page.enable")
        await self.call("Runtime.enable")
        await self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                        deviceScaleFactor=1, mobile=False)
        return self

    async def _devtools_port(self) -> int:
        """Chromium writes the port it took to DevToolsActivePort in its profile once it listens."""
        path = os.path.join(self.profile_dir, "DevToolsActivePort")
        deadline = time.monotonic() + START_S_MAX
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}: see {self._log.name}")
            try:
                with open(path) as f:
                    first = f.readline().strip()
                if first:
                    return int(first)
            except FileNotFoundError:
                pass
            await asyncio.sleep(0.05)  # polling a file Chromium writes, under the deadline above
        raise AssertionError(f"chromium did not open its DevTools port within {START_S_MAX} s")

    async def __aexit__(self, *exc) -> None:
        try:
            self._reader.cancel()
            await self._ws.close()
            await self._http.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(CALL_S_MAX)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()

    async def _read(self) -> None:
        async for msg in self._ws:
            m = json.loads(msg.data)
            if "id" in m:
                fut = self._pending.pop(m["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(m)
            elif m.get("method") == "Network.requestWillBeSent":
                self.requests.append(m["params"]["request"]["url"])
            elif m.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                             for a in m["params"]["args"]))
            elif m.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(m["params"]["exceptionDetails"])[:500])

    async def call(self, method: str, **params) -> dict:
        i = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        await self._ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        m = await asyncio.wait_for(fut, CALL_S_MAX)
        if "error" in m:
            raise AssertionError(f"{method}: {m['error']}")
        return m["result"]

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def eval(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-able)."""
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def until(self, expression: str, deadline_s: float = CALL_S_MAX):
        """Evaluate `expression` until it is truthy (returned), or fail at the deadline."""
        deadline = time.monotonic() + deadline_s
        while True:
            v = await self.eval(expression)
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression!r} still false after {deadline_s} s; console: {self.console}")
            await asyncio.sleep(0.1)  # polling the page's state, under the deadline above

    async def screenshot(self, path: str) -> bytes:
        r = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        png = base64.b64decode(r["data"])
        with open(path, "wb") as f:
            f.write(png)
        return png
