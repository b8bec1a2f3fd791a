"""How long a live world reload takes, and how long requests wait during it (docs/server.md, "Reload").

    python bench/reload_bench.py                      # the demo's world (31 provinces, 6.2 M catalogue rows, 1 M persons)
    python bench/reload_bench.py --persons 20000 --catalogue-per-province 2000 --seconds 6   # small, seconds

A world (engine.tools.demo's, cached in --cache) is copied into a folder of the run;
`yidi serve` (--no-auth, the real store in a fresh data folder) is started on it, and
one asyncio client offers settlements (engine.tools.synth, one-shot) on --connections
framed TCP connections at --rate requests/s, open loop: each request's latency is
counted from its intended send time, so a stall shows in full. Two windows side by
side in one run: --seconds with no reload, then one with `POST /admin/reload` after
--seconds/2 that lasts until 3 s after the reload answered (the folder first gets one
person and one filing more, so that the reload adds and records something). Printed: p50, p99 and the
longest latency of each window, the reload's round trip and its parts as the hub
reports them (load, build, record, apply), and a JSON line with every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.hub.client import AsyncFramedClient  # noqa: E402
from engine.tools.demo import WORLD_DEFAULTS, ensure_world  # noqa: E402
from engine.tools.synth import gen_requests  # noqa: E402
from serve_load import start_server  # noqa: E402

READY_S = 600.0  # a start of the demo's world seeds a million persons
TAIL_S = 3.0  # requests go on this long after the reload answered


def start_hub(world: str, data: str, log_file: str) -> tuple[subprocess.Popen, dict]:
    """`yidi serve --no-auth` on `data` as the load campaigns start it (serve_load.start_server), its log in
    `log_file`."""
    return start_server(world, data, ["--no-auth", "--log-file", log_file], None)


async def offer(address: str, envelopes: list[dict], rate: float, connections: int, window_s: float,
                at_s: float | None, admin: str) -> tuple[np.ndarray, dict]:
    """Send `envelopes` at `rate`/s spread over `connections` for `window_s`; the latency of each (s, from its
    intended time). With `at_s`: POST /admin/reload that many seconds in, and go on sending until TAIL_S after it
    answered (the window is as long as the reload needs); its round trip and report."""
    host, port = address.rsplit(":", 1)
    clients = [await AsyncFramedClient.connect(host, int(port)) for _ in range(connections)]
    lat = np.full(len(envelopes), np.nan)
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    reload_out: dict = {}
    busy = [0]

    done_at: list[float] = []  # when the reload answered (loop time)

    async def lane(k: int) -> None:
        """Send this lane's share on time; with a reload, go on until TAIL_S after it answered."""
        c = clients[k]
        pending: asyncio.Queue = asyncio.Queue()

        async def reader() -> None:
            while (item := await pending.get()) is not None:
                i, due = item
                reply = await c.recv()
                if reply.get("infcode") not in (0, -1):
                    raise SystemExit(f"unexpected reply {reply}")
                if reply.get("err_code") == "E_BUSY":  # the hub shed it: counted, and its latency kept
                    busy[0] += 1
                lat[i] = loop.time() - due
        task = asyncio.create_task(reader())
        for i in range(k, len(envelopes), connections):
            due = t0 + i / rate
            if at_s is None and due > t0 + window_s:
                break
            if at_s is not None and done_at and due > done_at[0] + TAIL_S:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await c.send(envelopes[i])
            pending.put_nowait((i, due))
        pending.put_nowait(None)
        await task

    async def reload_at() -> None:
        await asyncio.sleep(max(0.0, t0 + at_s - loop.time()))
        t = time.perf_counter()
        req = urllib.request.Request(f"http://{admin}/admin/reload", data=b"", method="POST")
        body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(req, timeout=READY_S).read())
        reload_out["round_trip_ms"] = (time.perf_counter() - t) * 1e3
        reload_out["report"] = json.loads(body)
        done_at.append(loop.time())

    jobs = [lane(k) for k in range(connections)] + ([reload_at()] if at_s is not None else [])
    await asyncio.gather(*jobs)
    for c in clients:
        await c.close()
    reload_out["busy"] = busy[0]
    if at_s is not None and not done_at:
        raise SystemExit("the reload outlasted the requests made for it: raise --spare-s")
    return lat[~np.isnan(lat)], reload_out


def summary(lat: np.ndarray) -> dict:
    ms = lat * 1e3
    return {"n": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.path.join(ROOT, "out", "cache"))
    ap.add_argument("--provinces", type=int, default=WORLD_DEFAULTS["provinces"])
    ap.add_argument("--catalogue-per-province", type=int, default=WORLD_DEFAULTS["catalogue_per_province"])
    ap.add_argument("--persons", type=int, default=WORLD_DEFAULTS["persons"])
    ap.add_argument("--rate", type=float, default=500.0, help="requests/s offered")
    ap.add_argument("--seconds", type=float, default=20.0, help="each window")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--spare-s", type=float, default=120.0, help="requests made for the reload's window beyond"
                    " --seconds (the reload of the demo's world takes tens of seconds on a busy machine)")
    a = ap.parse_args()
    world_src, _, _ = ensure_world(a.cache, 1, a.provinces, a.catalogue_per_province, a.persons)
    n = int(a.rate * a.seconds)
    envelopes = gen_requests(world_src, 2 * n + int(a.rate * a.spare_s), seed=3, start="2026-11-20")
    tmp = tempfile.mkdtemp(prefix="yidi-reload-")
    world = os.path.join(tmp, "world")
    shutil.copytree(world_src, world, ignore=shutil.ignore_patterns("world.json"))
    p, addr = start_hub(world, os.path.join(tmp, "data"), os.path.join(tmp, "yidi.jsonl"))
    try:
        # The day's change the reload takes in: one person more, one filing more.
        with open(os.path.join(world, "persons.csv"), "a") as f:
            f.write("PRELOAD0000001,110100199901010001,Reload Person,110100,310,1101,1.00,2026,0,0,0,0,0\n")
        with open(os.path.join(world, "filings.csv"), "a") as f:
            f.write("PRELOAD0000001,LONG_RESIDENT,440000,2026-01-01,,1\n")
        calm, quiet = asyncio.run(offer(addr["tcp"], envelopes[:n], a.rate, a.connections, a.seconds, None,
                                        addr["admin"]))
        busy, rel = asyncio.run(offer(addr["tcp"], envelopes[n:], a.rate, a.connections, a.seconds, a.seconds / 2,
                                      addr["admin"]))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(READY_S)
        shutil.rmtree(tmp, ignore_errors=True)
    part = rel["report"]["parts"]["world"]
    out = {"world": {"provinces": a.provinces, "catalogue_rows": part.get("catalogue_rows"),
                     "persons": a.persons}, "rate": a.rate, "seconds": a.seconds,
           "without_reload": {**summary(calm), "e_busy": quiet["busy"]},
           "with_reload": {**summary(busy), "e_busy": rel["busy"]},
           "reload_round_trip_ms": round(rel["round_trip_ms"], 1),
           "reload_parts_ms": {k: part.get(k) for k in ("load_ms", "build_ms", "record_ms", "commits_waited_ms", "apply_ms")}}
    w, r = out["without_reload"], out["with_reload"]
    print(f"world: {a.provinces} provinces, {part.get('catalogue_rows'):,} catalogue rows, {a.persons:,} persons;"
          f" {a.rate:.0f} requests/s for {a.seconds:.0f} s a window")
    print(f"without a reload: p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, max {w['max_ms']} ms, E_BUSY {w['e_busy']}")
    print(f"with a reload:    p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, E_BUSY {r['e_busy']}"
          f"  (p99 ratio {r['p99_ms'] / w['p99_ms']:.2f})")
    print(f"the reload: {out['reload_round_trip_ms']} ms round trip; parts {out['reload_parts_ms']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
