"""Load campaigns against `yidi serve` with Locust.

    python bench/serve_load.py --campaign all          # saturation + latency, the asked figures
    python bench/serve_load.py --campaign smoke        # seconds; what CI runs (bench/test_bench_serve.py)
    python bench/serve_load.py --campaign sustained    # 60 s and 330 s: each holds one background fold
    python bench/serve_load.py --campaign all --tls    # the same, with the hub and Locust on TLS
    python bench/serve_load.py --campaign all --no-auth   # the same, the hub checking no credential
    python bench/serve_load.py --campaign auth-ab      # signed and --no-auth side by side, alternating
    python bench/serve_load.py --campaign all --flow mixed    # a day sent as hospitals send it (section 11)
    python bench/serve_load.py --campaign stepwise-ab  # the mixed step-wise day and the one-shot day side by side
    python bench/serve_load.py --campaign stepwise-ab --flow stepwise  # the step-wise day (~5 requests a
                                                       # settlement) and the one-shot day side by side
    python bench/serve_load.py --campaign log-ab       # the request log on (all) and off, alternating
    python bench/serve_load.py --campaign all --store postgresql://postgres@127.0.0.1/postgres --nodes 2
                                                       # each campaign on the embedded store, then on two
                                                       # nodes of a fresh PostgreSQL database

For each campaign: a synthetic world and request stream (engine.tools.synth, cached in
--cache), a fresh data folder, `yidi serve` pinned to core 0 on the real store,
and one Locust process pinned to core 1 (bench/locustfile.py) offering the load.
Before and after, /metrics is read so that the figures come from both sides:
what Locust saw (replies, latency percentiles from the intended send time) and
what the server made durable (yidi_committed_total, batch sizes, commit time).
With `--tls` the hub serves on TLS (`--tls-cert`, a certificate made for the run
by trustme) and Locust speaks the frames inside TLS.

Campaigns run signed (contract section 10), as hospital systems and platforms
would: the hub starts with `--keys`, a file made for the run with one platform
credential per province (engine.tools.platforms); every
institution is signed in before the load starts, and each frame carries its
institution's `sign_no`. Locust's connections are lanes, one per province
platform (a connection acts for one credential), shared out among its Users
(bench/locustfile.py); each opens with a signed 9001. With `--no-auth` the hub
checks nothing of section 10 and the frames carry no sign_no, over the same
lanes. `--campaign auth-ab` runs the saturation and the latency campaigns in
both modes, alternating (signed first, then unsigned first, `--rounds` times),
and prints signed / unsigned: durable settlements/s, the hub's CPU per reply
(user and system time of the `yidi serve` process over the run: steadier than a
rate on a machine shared with other work) and the latency percentiles, each the
median of the rounds; it fails when a ratio is worse than `--ab-tolerance` (5 %).
`--campaign log-ab` does the same for the hub's request log: a line for every
request (`--request-log all`) against none (`--request-log off`), signed.

The hub writes its log (engine.hub.logs) to a file in the run's folder
(`--log-file`), with `--request-log` as the run asks (default all), as a hub in
production does; the lines written and dropped are in the results.

`--flow` says how the day's visits are sent (engine.tools.synth.flows): `oneshot`
(the default: each bill one settlement, section 7), `stepwise` or `mixed` (half of
the visits registered, uploaded, discharged and settled, section 11: about 3.3
requests a settlement). Locust sends each visit's requests in order, each only after
the previous one's reply, many visits interleaved (bench/locustfile.py).
`--campaign stepwise-ab` runs the mixed day (or, with `--flow stepwise`, the
step-wise day: every visit step-wise, about 5 requests a settlement) and the one-shot
day side by side, alternating which goes first, `--rounds` times: saturation
(requests/s, durable settlements/s, the hub's CPU per reply) and latency at 3,000
requests/s offered; the step-wise side fails its campaign under STEPWISE_TARGETS
(15,000 requests/s and 3,000 durable settlements/s at saturation, p99 at most 20 ms
at 3,000 requests/s).

With `--store URL` each campaign runs twice in the same run: on the embedded store
as above, then on `--nodes` `yidi serve` processes (not pinned) sharing a fresh
database of that server, Locust's lanes spread over them as a load balancer
would. Beside the figures: the share of the machine's CPU each node, Locust and
the database's server processes took, and the round trips and statements per
settlement (the nodes' own counters on /metrics: yidi_store_*).

A campaign fails (exit code 1) when its budget is missed: the saturation one
under `--settlements-min` durable settlements/s, the latency one over
`--p99-budget-ms`, either with any E_BUSY or transport failure.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import types
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# name: (users, in flight per user, offered req/s (0: closed loop), seconds, p99 budget ms, settlements/s floor)
CAMPAIGNS = {
    "saturation": dict(users=8, in_flight=32, rate=0, duration_s=30, p99_budget_ms=0, settlements_min=5000),
    "latency": dict(users=8, in_flight=32, rate=1000, duration_s=30, p99_budget_ms=20, settlements_min=0),
    "latency-3k": dict(users=8, in_flight=32, rate=3000, duration_s=30, p99_budget_ms=20, settlements_min=0),
    "smoke": dict(users=2, in_flight=8, rate=200, duration_s=3, p99_budget_ms=500, settlements_min=0),
    # Long enough for the store's first background fold (262,144 journal rows: about 33 s at
    # saturation, 5 minutes at 1,000 req/s): the sustained figures (`--campaign sustained`).
    "saturation-fold": dict(users=8, in_flight=32, rate=0, duration_s=60, p99_budget_ms=0, settlements_min=5000),
    "latency-fold": dict(users=8, in_flight=32, rate=1000, duration_s=330, p99_budget_ms=20, settlements_min=0),
}
# What a step-wise or mixed day must reach (docs: README, "Performance"): requests/s and durable
# settlements/s at saturation; the latency-3k campaign's p99 budget is its own.
STEPWISE_TARGETS = dict(requests_min=15_000, settlements_min=3_000)
# What two nodes on PostgreSQL must reach (README, "Several nodes on PostgreSQL"): durable settlements/s at
# saturation, and the p99 budget of a latency campaign.
NODES_TARGETS = dict(settlements_min=3_000, p99_budget_ms=30)
FLOWS = ("oneshot", "stepwise", "mixed")
STREAM_START = "2026-11-20"  # the first day of the generated streams (gen_requests' start)
STEPWISE_AB_CAMPAIGNS = ("saturation", "latency-3k")
STEPWISE_AB_SIDES = ("mixed", "stepwise")  # the step-wise side of stepwise-ab (--flow), against oneshot
WORLDS = {  # world size per campaign kind: the load ones realistic, the smoke one tiny
    "full": dict(provinces=31, catalogue_per_province=50_000, persons=300_000),
    "small": dict(provinces=4, catalogue_per_province=2_000, persons=5_000),
}


def log(msg: str) -> None:
    print(f"[serve_load] {msg}", file=sys.stderr, flush=True)


def world_and_frames(cache: str, size: str, n_requests: int, seed: int, flow: str = "oneshot") -> tuple[str, str]:
    """A cached world folder and frames file of `flow` (length-prefixed MessagePack envelopes, without the
    drawn sign_no: a signed run adds the hub's own to each frame)."""
    import msgspec

    from engine.tools.synth import gen_requests, gen_world

    os.makedirs(cache, exist_ok=True)
    w = WORLDS[size]
    world = os.path.join(cache, f"world-{size}-s{seed}")
    if not os.path.exists(os.path.join(world, "prepay.csv")):
        log(f"generating world {world} {w}")
        gen_world(world, seed=seed, **w)
    tag = "" if flow == "oneshot" else f"-{flow}"
    frames = os.path.join(cache, f"frames-{size}-s{seed}-n{n_requests}{tag}-unsigned.bin")
    if not os.path.exists(frames):
        log(f"generating {n_requests} requests into {frames}")
        enc = msgspec.msgpack.Encoder()
        tmp = frames + ".tmp"
        with open(tmp, "wb") as f:
            for env in gen_requests(world, n_requests, seed=seed + 1, start=STREAM_START,
                                    days=max(1, n_requests // 200_000), flow=flow):
                body = enc.encode({k: v for k, v in env.items() if k != "sign_no"})
                f.write(len(body).to_bytes(4, "big") + body)
        os.replace(tmp, frames)
    return world, frames


def pinned(core: int | None) -> list[str]:
    if core is None or core < 0 or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(core)]


def start_server(world: str, data: str, server_args: list[str], core: int | None):
    """`yidi serve` on the store `data`: a folder, or a PostgreSQL URL (--store)."""
    where = ["--store", data] if data.startswith("postgresql://") else ["--data", data]
    cmd = pinned(core) + [sys.executable, "-m", "engine.cli", "serve", "--world", world, *where,
                          "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", *server_args]
    log(" ".join(cmd))
    p = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    addrs = {}
    for line in p.stdout:
        m = re.match(r"yidi: (tcp|http|admin) listening on (.+):(\d+)", line)
        if m:
            addrs[m.group(1)] = f"{m.group(2)}:{m.group(3)}"
        if line.startswith("yidi: ready"):
            log(line.strip())
            return p, addrs
    raise SystemExit(f"yidi serve did not start: {p.stderr.read()}")


def tls_files(folder: str) -> tuple[str, str, str]:
    """A test CA and a certificate for 127.0.0.1 made by it: (ca.pem, server.pem, server.key)."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    paths = tuple(os.path.join(folder, n) for n in ("ca.pem", "server.pem", "server.key"))
    for blob, path in zip((ca.cert_pem, leaf.cert_chain_pems[0], leaf.private_key_pem), paths):
        blob.write_to_path(path)
    return paths


def scrape(http: str, ca_file: str | None = None) -> dict[str, float]:
    """The metrics that matter here, summed over their labels where it makes sense."""
    if ca_file is None:
        text = urllib.request.urlopen(f"http://{http}/metrics", timeout=30).read().decode()
    else:
        ctx = ssl.create_default_context(cafile=ca_file)
        text = urllib.request.urlopen(f"https://{http}/metrics", timeout=30, context=ctx).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        key = name
        if name in ("yidi_committed_total", "yidi_request_latency_seconds_count",
                    "yidi_request_latency_seconds_bucket", "yidi_commit_seconds_bucket",
                    "yidi_engine_batch_seconds_bucket"):
            key = name_labels
        out[key] = out.get(key, 0.0) + float(value)
    return out


def cpu_s(pid: int) -> float:
    """User and system CPU seconds a process (every thread of it) has used so far; 0 where /proc is not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def histogram_percentiles(d: dict[str, float], name: str, labels: str = "") -> dict[str, str]:
    """Percentiles of a server histogram over the campaign, as the bucket bound that holds them."""
    buckets = []
    for k, v in d.items():
        m = re.match(name + r'_bucket\{le="([^"]+)"' + (("," + re.escape(labels)) if labels else "") + r"\}$", k)
        if m:
            buckets.append((float(m.group(1)), v))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out = {}
    for p in (50, 99, 99.9):
        for le, n in buckets:
            if total and n >= total * p / 100:
                out[f"p{p}"] = f"<= {le * 1000:g} ms" if le != float("inf") else "> 5 s"
                break
    return out


def read_bodies(frames: str) -> list[bytes]:
    """The MessagePack bodies of a frames file."""
    with open(frames, "rb") as f:
        data = f.read()
    out, off = [], 0
    while off < len(data):
        n = int.from_bytes(data[off:off + 4], "big")
        out.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return out


def institutions(world: str) -> dict[str, str]:
    """fixmedins_code -> admdvs of the world's institutions.csv."""
    import csv

    with open(os.path.join(world, "institutions.csv"), encoding="utf-8", newline="") as f:
        return {r["fixmedins_code"]: r["admdvs"] for r in csv.DictReader(f)}


VISIT_OPENING_INFNOS = ("2201", "2401")  # their visit's mdtrt_id is "M" + their msgid (section 11)


def visits_of(bodies: list[bytes]) -> list[int]:
    """Each frame's visit as a small integer (-1: none), for bench/locustfile.py to send a visit's requests
    one at a time: the mdtrt_id the request names (in `data`, `mdtrtinfo`, `adminfo`, `dscginfo`, or its
    first fee line), "M" + msgid for a registration or an admission, and for a 2601 the visit of the
    message it undoes."""
    import msgspec

    class Env(msgspec.Struct):
        infno: object = None
        msgid: object = None
        input: object = None

    dec = msgspec.msgpack.Decoder(Env)
    keys: list[object] = []
    of_msgid: dict[str, str] = {}
    for b in bodies:
        try:
            e = dec.decode(b)
        except msgspec.DecodeError:
            keys.append(None)
            continue
        key: object = None
        inp = e.input if isinstance(e.input, dict) else {}
        if e.infno in VISIT_OPENING_INFNOS and isinstance(e.msgid, str):
            key = "M" + e.msgid
        elif e.infno == "2601":
            d = inp.get("data")
            key = ("undo", d.get("omsgid")) if isinstance(d, dict) else None
        else:
            for part in ("data", "mdtrtinfo", "adminfo", "dscginfo", "feedetail"):
                d = inp.get(part)
                if isinstance(d, list) and d:
                    d = d[0]
                if isinstance(d, dict) and isinstance(d.get("mdtrt_id"), str):
                    key = d["mdtrt_id"]
                    break
        if isinstance(key, str) and isinstance(e.msgid, str):
            of_msgid.setdefault(e.msgid, key)
        keys.append(key)
    ids: dict[str, int] = {}
    out = []
    for key in keys:
        if isinstance(key, tuple):  # a 2601: its original's visit (sent before or after it)
            key = of_msgid.get(key[1]) if isinstance(key[1], str) else None
        out.append(-1 if key is None else ids.setdefault(key, len(ids)))
    return out


def make_lanes(world: str, bodies: list[bytes], folder: str):
    """The run's credentials (one platform per province, in a keys file), the lanes of the frames (the
    connection of each request's province platform: engine.tools.platforms) and each frame's
    fixmedins_code."""
    import msgspec

    from engine.contract.protocol import province
    from engine.hub.auth import write_keys
    from engine.tools.platforms import lanes_for, platform_credentials

    class Fields(msgspec.Struct):
        mdtrtarea_admvs: object = None
        fixmedins_code: object = None

    inst = institutions(world)
    creds = platform_credentials([province(a) for a in inst.values()])
    keys = os.path.join(folder, "keys.csv")
    write_keys(keys, creds)
    dec = msgspec.msgpack.Decoder(Fields)
    codes, areas = [], []
    for b in bodies:
        m = dec.decode(b)
        codes.append(m.fixmedins_code if isinstance(m.fixmedins_code, str) else "")
        areas.append(m.mdtrtarea_admvs if isinstance(m.mdtrtarea_admvs, str) else "")
    return keys, lanes_for(codes, areas, inst, creds, 1), codes


def sign_in_lanes(tcp: str, lanes, bodies: list[bytes], codes: list[str], folder: str,
                  ca_file: str | None) -> tuple[str, dict]:
    """Sign every lane's institutions in (before the load: their sign_nos go into the frames) and write
    the signed frames. The frames file and what the run says of its sign-ins."""
    import asyncio

    from engine.hub.client import with_sign_no
    from engine.hub.framing import frame
    from engine.hub.tls import client_context
    from engine.tools.platforms import sign_in_lane

    host, port = tcp.rsplit(":", 1)
    ctx = client_context(ca_file) if ca_file else None

    async def sign_in_all() -> dict[str, str]:
        done = await asyncio.gather(*(sign_in_lane((host, int(port)), lane, ssl_context=ctx, opter_no="load")
                                      for lane in lanes))
        for c, _ in done:
            await c.close()
        return {code: sn for _, sign_nos in done for (code, _), sn in sign_nos.items()}

    t0 = time.perf_counter()
    sign_no = asyncio.run(sign_in_all())
    sign_in_s = time.perf_counter() - t0
    path = os.path.join(folder, "frames-signed.bin")
    with open(path, "wb") as f:
        for b, code in zip(bodies, codes):
            sn = sign_no.get(code)
            f.write(frame(with_sign_no(b, sn) if sn is not None else b))
        # On the disk before the load starts: left to the kernel, the writeback of these 1.5 GB would
        # share the disk with the hub's fsyncs during the run, and only the signed runs would pay for it.
        f.flush()
        os.fsync(f.fileno())
    return path, {"sign_ins": len(sign_no), "sign_in_s": round(sign_in_s, 3)}


def write_lanes(path: str, lanes, n: int, signed: bool, visits: list[int] | None = None, first: int = 0) -> None:
    """bench/locustfile.py's --lanes: each frame's lane and visit from frame `first` on (the frames before
    it were sent as the warm-up), and each lane's first frame (a 9001 signed now)."""
    import array

    from engine.hub.client import encode_frame, sign_in_envelope

    lane_of = bytearray(n)
    assert len(lanes) < 256
    for k, lane in enumerate(lanes):
        for i in lane.idx:
            lane_of[i] = k
    first_frames = [base64.b64encode(encode_frame(sign_in_envelope(lane.cred.paasid, lane.cred.token,
                                                                   lane.sign_ins[0][0], opter_no="load"))).decode()
                    if signed else None for lane in lanes]
    spec = {"first_frame": first, "lane_of_frame": base64.b64encode(bytes(lane_of[first:])).decode(),
            "first_frames": first_frames}
    if visits is not None:
        assert len(visits) == n
        spec["visit_of_frame"] = base64.b64encode(array.array("i", visits[first:]).tobytes()).decode()
    with open(path, "w") as f:
        json.dump(spec, f)


def warm_up_count(bodies: list[bytes], start: str) -> int:
    """Frames before the day `start`: a step-wise stream begins with the stays admitted days before it
    (engine.tools.synth.flows), which the hub holds open when the measured day begins."""
    import msgspec

    class Time(msgspec.Struct):
        inf_time: object = None

    dec = msgspec.msgpack.Decoder(Time)
    for k, b in enumerate(bodies):
        t = dec.decode(b).inf_time
        if isinstance(t, str) and t[:10] >= start:
            return k
    return len(bodies)


def warm_up(tcp: str, lanes, frames: str, k: int, auth: bool, ca_file: str | None) -> dict:
    """Send the first k frames (in stream order, each lane on a connection of its own, 256 in flight in
    all) before the load starts: the open stays of the days before the measured one. Not measured."""
    import asyncio

    import msgspec
    import numpy as np

    from engine.hub.client import AsyncFramedClient
    from engine.hub.tls import client_context
    from engine.tools.platforms import Lane, replay_lanes, sign_in_lane

    host, port = tcp.rsplit(":", 1)
    ctx = client_context(ca_file) if ca_file else None
    out = []
    with open(frames, "rb") as f:
        while len(out) < k:
            head = f.read(4)
            out.append(head + f.read(int.from_bytes(head, "big")))
    sub = [Lane(lane.cred, [i for i in lane.idx if i < k], lane.sign_ins[:1]) for lane in lanes]
    sub = [lane for lane in sub if lane.idx]

    got = types.SimpleNamespace(bodies=[None] * k, t_send_s=np.zeros(k), t_recv_s=np.zeros(k))

    async def run() -> None:
        if auth:
            clients = [c for c, _ in await asyncio.gather(*(sign_in_lane((host, int(port)), lane, ssl_context=ctx,
                                                                            opter_no="load") for lane in sub))]
        else:
            clients = [await AsyncFramedClient.connect(host, int(port), ssl_context=ctx) for _ in sub]
        await replay_lanes(clients, sub, out, got, 256, [0])

    t0 = time.perf_counter()
    if k:
        asyncio.run(run())
    refused: dict[str, int] = {}
    for b in got.bodies:
        r = msgspec.msgpack.decode(b)
        if r.get("infcode") != 0:
            refused[r.get("err_code")] = refused.get(r.get("err_code"), 0) + 1
    return {"warm_up_requests": k, "warm_up_s": round(time.perf_counter() - t0, 2), "warm_up_refused": refused}


def pg_database(admin_url: str, name: str, drop: bool = False) -> str:
    """A new database `name` on the server of `admin_url` (dropped first if there), or dropped; its URL."""
    import urllib.parse

    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            conn.execute(f'CREATE DATABASE "{name}"')
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(admin_url)._replace(path="/" + name))


def pg_backends(admin_url: str, db: str) -> dict[int, float]:
    """pid -> CPU seconds so far of the server processes serving database `db` (the nodes' connections)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (db,))]
    return {pid: cpu_s(pid) for pid in pids}


def pg_commits(url: str) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return float(conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                                  ).fetchone()[0])


def run_campaign(name: str, c: dict, world: str, frames: str, a, auth: bool = True, request_log: str = "all",
                 flow: str = "oneshot", nodes: int = 0) -> dict:
    """One campaign against a fresh hub: signed (`auth`) or --no-auth, over the same lanes, with its request log
    (`request_log`: all, errors or off) written to a file in the run's folder; the day sent as `flow` says.
    `nodes` > 0: that many `yidi serve` processes on a fresh database of the --store server, Locust's lanes
    spread over them."""
    if nodes:  # several nodes on PostgreSQL are asked figures of their own
        c = dict(c, p99_budget_ms=max(c["p99_budget_ms"], NODES_TARGETS["p99_budget_ms"]) if c["p99_budget_ms"] else 0,
                 settlements_min=NODES_TARGETS["settlements_min"] if c["settlements_min"] else 0)
    run = tempfile.mkdtemp(prefix=f"yidi-{name}-", dir=a.data_root)  # the run's files; the store in run/data
    data = os.path.join(run, "data")
    db = f"yidi_bench_{os.getpid()}_{name.replace('-', '_')}"
    if nodes:
        data = pg_database(a.store, db)
    server_args, locust_args, ca_file = list(a.server_args), [], None
    log_files = [os.path.join(run, f"yidi-{k}.jsonl") for k in range(max(1, nodes))]  # one a node
    server_args += ["--request-log", request_log]
    if a.tls:
        pki = tempfile.mkdtemp(prefix=f"yidi-{name}-tls-", dir=a.data_root)
        ca_file, cert, key = tls_files(pki)
        server_args += ["--tls-cert", cert, "--tls-key", key]
        locust_args = ["--tls-ca", ca_file]
    bodies = read_bodies(frames)
    keys, lanes, codes = make_lanes(world, bodies, run)
    visits = visits_of(bodies)
    server_args += ["--keys", keys] if auth else ["--no-auth"]
    servers = []
    for k in range(max(1, nodes)):  # the nodes of a --store run are not pinned: they share both cores with it
        servers.append(start_server(world, data, [*server_args, "--log-file", log_files[k]],
                                    None if nodes else a.server_core))
    server, addrs = servers[0]
    try:
        signing = {"sign_ins": 0, "sign_in_s": 0.0}
        if auth:
            frames, signing = sign_in_lanes(addrs["tcp"], lanes, bodies, codes, run, ca_file)
            log(f"{len(lanes)} lanes signed in for {signing['sign_ins']} institutions in {signing['sign_in_s']} s")
        # A step-wise day begins with the stays admitted before it: sent first, not measured.
        first = warm_up_count(bodies, STREAM_START) if flow != "oneshot" else 0
        del bodies, codes
        warmed = warm_up(addrs["tcp"], lanes, frames, first, auth, ca_file)
        if first:
            log(f"warm-up: {first} requests of the days before in {warmed['warm_up_s']} s, refused "
                f"{warmed['warm_up_refused']}")
        lanes_path = os.path.join(run, "lanes.json")
        write_lanes(lanes_path, lanes, sum(len(lane.idx) for lane in lanes), auth, visits, first)
        del visits
        before = [scrape(ad["admin"], ca_file) for _, ad in servers]
        cpu0 = [cpu_s(p.pid) for p, _ in servers]
        pg0 = pg_backends(a.store, db) if nodes else {}
        commits0 = pg_commits(data) if nodes else 0.0
        children0 = os.times()
        summary_path = os.path.join(run, "locust-summary.json")
        cmd = pinned(a.load_core) + [
            sys.executable, "-m", "locust", "-f", os.path.join(ROOT, "bench", "locustfile.py"), "--headless",
            "-u", str(c["users"]), "-r", str(c["users"]), "-t", f"{c['duration_s']}s", "--stop-timeout", "5",
            "--host", "tcp://" + ",".join(ad["tcp"] for _, ad in servers), "--frames", frames, "--lanes", lanes_path,
            "--in-flight", str(c["in_flight"]),
            "--rate", str(c["rate"]), "--p99-budget-ms", str(c["p99_budget_ms"]),
            "--summary-json", summary_path, "--only-summary", "--loglevel", "WARNING", *locust_args,
        ]
        log(" ".join(cmd))
        lp = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        node_cpu_s = [cpu_s(p.pid) - c0 for (p, _), c0 in zip(servers, cpu0)]
        server_cpu_s = sum(node_cpu_s)
        children = os.times()
        locust_cpu_s = (children.children_user + children.children_system
                        - children0.children_user - children0.children_system)
        pg_cpu_s = sum(cpu_s(pid) - t for pid, t in pg0.items()) if nodes else 0.0
        commits = pg_commits(data) - commits0 if nodes else 0.0
        after_each = [scrape(ad["admin"], ca_file) for _, ad in servers]
    finally:
        errs = []
        for p, _ in servers:
            p.send_signal(signal.SIGTERM)
        for p, _ in servers:
            try:
                _, e = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                _, e = p.communicate()
            errs.append(e or "")
        err = "".join(errs)
        if nodes:
            pg_database(a.store, db, drop=True)
    before = {k: sum(b.get(k, 0.0) for b in before) for k in set().union(*before)}
    after = {k: sum(x.get(k, 0.0) for x in after_each) for k in set().union(*after_each)}
    if not os.path.exists(summary_path):
        raise SystemExit(f"locust wrote no summary:\n{lp.stdout}\n{lp.stderr}")
    with open(summary_path) as f:
        s = json.load(f)
    log_lines = []
    for path in log_files:  # the hubs' logs: their request lines and events (the folds)
        with open(path, "rb") as f:
            log_lines += f.read().splitlines()
    request_lines = sum(1 for ln in log_lines if b'"event":"request"' in ln)
    events = "\n".join(ln.decode() for ln in log_lines if b'"event":"request"' not in ln)
    del log_lines
    shutil.rmtree(run, ignore_errors=True)
    if a.tls:
        shutil.rmtree(pki, ignore_errors=True)
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    # How Locust's share is counted: from its first send to a recent reply (its own figure), or, when it had
    # too few replies to say, its whole run with the reading of the frames file.
    if "cpu_share_pct" in s:
        locust_share = s["cpu_share_pct"]
        locust_counted = {"counted": "while sending", "cpu_s": s["cpu_s"], "wall_s": s["cpu_wall_s"]}
    else:
        locust_share = round(100 * locust_cpu_s / (s["span_s"] or 1.0), 1)
        locust_counted = {"counted": "whole run", "cpu_s": round(locust_cpu_s, 3)}
    oc = s["outcomes"]
    settled = oc.get("2207", 0) + oc.get("2304", 0)
    span = s["span_s"] or 1.0
    batches = d.get("yidi_batch_size_count", 0.0)
    result = {
        "campaign": name, **c, "flow": flow, **warmed, "tls": a.tls, "auth": auth, "connections": len(lanes), **signing,
        "auth_refusals": {k: v for k, v in s["outcomes"].items() if k.split(" ")[-1] in ("E_AUTH", "E_SIGN_IN")},
        "replies": s["replies"], "replies_per_s": s["replies_per_s"], "failures": s["failures"],
        "settlements_acknowledged": settled, "settlements_per_s": round(settled / span, 1),
        # The hub's CPU (every thread) per reply over the run: what a request costs the server, steadier
        # than a rate on a machine shared with other work.
        "server_cpu_us_per_reply": round(1e6 * server_cpu_s / s["replies"], 1) if s["replies"] else 0.0,
        "committed_settle": d.get('yidi_committed_total{kind="settle"}', 0.0),
        "committed_reverse": d.get('yidi_committed_total{kind="reverse"}', 0.0),
        "latency_ms": s["latency_ms"],
        "server_latency": histogram_percentiles(d, "yidi_request_latency_seconds", 'transport="tcp"'),
        "engine_batch_time": histogram_percentiles(d, "yidi_engine_batch_seconds"),
        "commit_time": histogram_percentiles(d, "yidi_commit_seconds"),
        "batches": batches,
        "batch_size_mean": round(d.get("yidi_batch_size_sum", 0.0) / batches, 1) if batches else 0.0,
        "engine_ms_per_batch": round(1000 * d.get("yidi_engine_batch_seconds_sum", 0.0) / batches, 2) if batches else 0,
        "commit_ms_per_batch": round(1000 * d.get("yidi_commit_seconds_sum", 0.0) / batches, 2) if batches else 0,
        # Folds in the background (engine.store): seconds spent, and what the server's log says of each.
        "fold_s": round(d.get("yidi_fold_seconds", 0.0), 2),
        "folds": re.findall(r"folded journal rows \d+\.\.\d+ \(\d+\) in [0-9.]+ s", events),
        "request_log": request_log, "request_log_lines": request_lines,
        "request_log_dropped": d.get("yidi_log_dropped_total", 0.0),
        "outcomes": oc, "locust_exit_code": lp.returncode,
        "server_exit_code": max((p.returncode for p, _ in servers), key=abs),
        "store": "postgresql" if nodes else "embedded", "nodes": max(1, nodes),
        # The share of the machine's CPU each process took over the run (2 cores: 200 % in all). Locust's
        # own figure is its CPU while its Users sent (bench/locustfile.py), without the seconds it spends
        # reading the frames file before: counted over the run, they made it look busier than it was.
        "cpu_share_pct": {**{f"node{k}": round(100 * t / span, 1) for k, t in enumerate(node_cpu_s)},
                          "locust": locust_share,
                          **({"postgresql": round(100 * pg_cpu_s / span, 1)} if nodes else {})},
        "locust_cpu": locust_counted,
    }
    if nodes:
        settled_all = result["committed_settle"] + result["committed_reverse"]
        result["pg"] = {
            "transactions": commits,
            "round_trips_per_settlement": round((d.get("yidi_store_round_trips_total", 0.0)
                                                 + d.get("yidi_store_catch_ups_total", 0.0)) / settled_all, 3)
            if settled_all else 0.0,
            "statements_per_settlement": round(d.get("yidi_store_statements_total", 0.0) / settled_all, 3)
            if settled_all else 0.0,
            "catch_ups_per_batch": round(d.get("yidi_store_catch_ups_total", 0.0) / batches, 3) if batches else 0.0,
            "busy_batches": d.get("yidi_store_busy_batches_total", 0.0),
        }
    verdict = []
    if lp.returncode != 0:
        verdict.append(f"locust exit code {lp.returncode}: {lp.stdout.strip().splitlines()[-1:] if lp.stdout else ''}")
    settlements_min = c["settlements_min"]
    if flow != "oneshot" and c["rate"] == 0 and settlements_min:  # a saturation campaign of a step-wise day
        settlements_min = STEPWISE_TARGETS["settlements_min"]
        if result["replies_per_s"] < STEPWISE_TARGETS["requests_min"]:
            verdict.append(f"{result['replies_per_s']} requests/s, under {STEPWISE_TARGETS['requests_min']}")
    if settlements_min and result["settlements_per_s"] < settlements_min:
        verdict.append(f"{result['settlements_per_s']} durable settlements/s, under {settlements_min}")
    if result["server_exit_code"] != 0:
        verdict.append(f"server exit code {result['server_exit_code']}: {err[-2000:]}")
    result["verdict"] = "; ".join(verdict) or "ok"
    return result


AB_CAMPAIGNS = ("saturation", "latency")


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    k = len(xs) // 2
    return xs[k] if len(xs) % 2 else (xs[k - 1] + xs[k]) / 2


def _of(r: dict, key: str) -> float:
    return r["latency_ms"].get(key) or 0.0 if key in ("p50", "p99") else r[key]


AB = {  # campaign: (the result's key, its value in the mode measured, in the mode compared with, their names)
    "auth-ab": ("auth", True, False, "signed", "no_auth"),
    "log-ab": ("request_log", "all", "off", "log_all", "log_off"),
}


def ab_ratios(results: list[dict], tolerance: float, ab: str = "auth-ab") -> dict:
    """Per campaign, the mode measured over the mode compared with (signed / --no-auth; request log all / off),
    from the medians of the rounds: durable settlements/s (higher is better), the hub's CPU per reply and
    Locust's latency percentiles (lower is better); a verdict against `tolerance`."""
    key, on, off, on_name, off_name = AB[ab]
    out = {}
    for name in sorted({r["campaign"] for r in results}):
        by = {mode: [r for r in results if r["campaign"] == name and r[key] == mode] for mode in (on, off)}
        med = {mode: {"settlements_per_s": _median([r["settlements_per_s"] for r in rs]),
                      "server_cpu_us_per_reply": _median([r["server_cpu_us_per_reply"] for r in rs]),
                      **{p: _median([r["latency_ms"].get(p) or 0.0 for r in rs]) for p in ("p50", "p99")}}
               for mode, rs in by.items()}
        ratio = {k: round(med[on][k] / med[off][k], 4) if med[off][k] else None for k in med[on]}
        # Paired: each round's run in one mode over its run in the other (they ran back to back), the median.
        pairs = list(zip(by[on], by[off]))
        paired = {k: round(_median([_of(a, k) / _of(b, k) for a, b in pairs if _of(b, k)]), 4) for k in med[on]}
        worse = []
        if ratio["settlements_per_s"] is not None and ratio["settlements_per_s"] < 1 - tolerance and \
                CAMPAIGNS[name]["rate"] == 0:
            worse.append(f"settlements/s x{ratio['settlements_per_s']}")
        for p in ("server_cpu_us_per_reply", "p50", "p99"):
            if ratio[p] is not None and ratio[p] > 1 + tolerance:
                worse.append(f"{p} x{ratio[p]}")
        out[name] = {on_name: med[on], off_name: med[off], f"{on_name}_over_{off_name}": ratio, "paired": paired,
                     "rounds": len(by[on]), "verdict": "; ".join(worse) or "ok"}
    return out


FLOW_FIGURES = ("replies_per_s", "settlements_per_s", "server_cpu_us_per_reply", "p50", "p99")


def flow_ratios(results: list[dict], side: str) -> dict:
    """stepwise-ab: per campaign, the medians of the rounds for the step-wise side (`side`: mixed or stepwise)
    and the one-shot day, and side / one-shot of each."""
    out = {}
    for name in sorted({r["campaign"] for r in results}):
        med = {flow: {k: _median([_of(r, k) for r in results if r["campaign"] == name and r["flow"] == flow])
                      for k in FLOW_FIGURES} for flow in (side, "oneshot")}
        out[name] = {**med, "side": side,
                     "rounds": sum(1 for r in results if r["campaign"] == name and r["flow"] == side),
                     f"{side}_over_oneshot": {k: round(med[side][k] / med["oneshot"][k], 4) if med["oneshot"][k]
                                              else None for k in FLOW_FIGURES}}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--campaign", choices=[*CAMPAIGNS, "all", "sustained", *AB, "stepwise-ab"], default="all")
    p.add_argument("--flow", choices=FLOWS, default="oneshot",
                   help="how the day's visits are sent (default oneshot); stepwise-ab runs this one (mixed when "
                        "oneshot) beside oneshot")
    p.add_argument("--duration-s", type=int, help="override every campaign's duration")
    p.add_argument("--requests", type=int, help="requests in the stream (default: enough for the campaign)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "yidi-bench"))
    p.add_argument("--data-root", default=None, help="where the fresh data folders go (default: the temp dir)")
    p.add_argument("--server-core", type=int, default=0, help="-1: not pinned")
    p.add_argument("--load-core", type=int, default=1, help="-1: not pinned")
    p.add_argument("--tls", action="store_true",
                   help="the hub on TLS (a certificate made for the run by trustme), Locust inside TLS")
    p.add_argument("--no-auth", action="store_true",
                   help="the hub with --no-auth and frames without sign_no (default: signed, with --keys)")
    p.add_argument("--rounds", type=int, default=2,
                   help="auth-ab, log-ab: rounds of each campaign in each mode, alternating which goes first "
                        "(default 2)")
    p.add_argument("--ab-tolerance", type=float, default=0.05,
                   help="auth-ab, log-ab: how much worse signed may be than --no-auth, or the request log on than "
                        "off (default 0.05: 5 %%)")
    p.add_argument("--request-log", choices=("all", "errors", "off"), default="all",
                   help="the hub's --request-log (default all; its log goes to a file in the run's folder)")
    p.add_argument("--world-size", choices=sorted(WORLDS), help="override the world of every campaign")
    p.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="passed to yidi serve (limits)")
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--store", metavar="URL",
                   help="also run each campaign on PostgreSQL: a fresh database on this URL's server per campaign "
                        "(the URL names a database to connect to for that, e.g. postgresql://postgres@127.0.0.1/postgres)")
    p.add_argument("--nodes", type=int, default=2, help="yidi serve processes on the --store database (default 2)")
    p.add_argument("--nodes-only", action="store_true",
                   help="with --store: the nodes alone, without the embedded store's run beside them")
    a = p.parse_args(argv)
    if a.nodes_only and not a.store:
        p.error("--nodes-only needs --store postgresql://...")
    if a.campaign == "auth-ab" and a.no_auth:
        p.error("--campaign auth-ab runs both modes: drop --no-auth")
    if "--log-file" in a.server_args or "--request-log" in a.server_args:
        p.error("the hub's log is the run's: --request-log, not --server-args")
    if not 1 <= a.rounds <= 20:
        p.error("--rounds must be within 1..20")
    side = a.flow if a.flow in STEPWISE_AB_SIDES else "mixed"  # stepwise-ab's step-wise side
    if a.campaign in AB:
        # The two modes one after the other; the order flips every round so that a machine
        # getting faster or slower over the run weighs on both modes alike.
        modes = {"auth-ab": [(True, a.request_log), (False, a.request_log)],
                 "log-ab": [(not a.no_auth, "all"), (not a.no_auth, "off")]}[a.campaign]
        plan = [(name, *mode, a.flow) for k in range(a.rounds) for name in AB_CAMPAIGNS
                for mode in (modes if k % 2 == 0 else modes[::-1])]
    elif a.campaign == "stepwise-ab":
        # The step-wise side (mixed or stepwise) and the one-shot day, one after the other, the order flipping
        # every round.
        flows = (side, "oneshot")
        plan = [(name, not a.no_auth, a.request_log, flow) for k in range(a.rounds) for name in STEPWISE_AB_CAMPAIGNS
                for flow in (flows if k % 2 == 0 else flows[::-1])]
    else:
        names = {"all": ["saturation", "latency"], "sustained": ["saturation-fold", "latency-fold"]}.get(
            a.campaign, [a.campaign])
        plan = [(name, not a.no_auth, a.request_log, a.flow) for name in names]
    results = []
    for name, auth, request_log, flow in plan:
        c = dict(CAMPAIGNS[name])
        if a.duration_s:
            c["duration_s"] = a.duration_s
        size = a.world_size or ("small" if name == "smoke" else "full")
        # Enough requests that the stream does not start again within the run (a second pass would be
        # retries, answered from the journal): a step-wise day is asked for more requests per second.
        ceiling = 9000 if flow == "oneshot" else 2 * STEPWISE_TARGETS["requests_min"]
        want = a.requests or int(max(c["rate"] or ceiling, 1000) * c["duration_s"] * 1.3)
        world, frames = world_and_frames(a.cache, size, want, a.seed, flow)
        for nodes in ([a.nodes] if a.nodes_only else [0, a.nodes] if a.store else [0]):  # embedded beside
            r = run_campaign(name, c, world, frames, a, auth, request_log, flow, nodes)
            results.append(r)
            print(json.dumps(r, indent=1), flush=True)
    ab = ab_ratios(results, a.ab_tolerance, a.campaign) if a.campaign in AB else None
    flows_ab = flow_ratios(results, side) if a.campaign == "stepwise-ab" else None
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results if ab is None and flows_ab is None else
                      {"runs": results, **({a.campaign.replace("-", "_"): ab} if ab else {}),
                       **({"stepwise_ab": flows_ab} if flows_ab else {})}, f, indent=1)
    failed = [r for r in results if r["verdict"] != "ok"] + [v for v in (ab or {}).values() if v["verdict"] != "ok"]
    for r in results:
        log(f"{r['campaign']} ({r['flow']}, {'signed' if r['auth'] else '--no-auth'}, {r['store']} x{r['nodes']}, "
            f"request log {r['request_log']}: {r['request_log_lines']} lines, {r['request_log_dropped']:g} dropped): "
            f"{r['replies_per_s']} replies/s, {r['settlements_per_s']} durable settlements/s, "
            f"{r['server_cpu_us_per_reply']} us of hub CPU per reply, "
            f"p50 {r['latency_ms'].get('p50')} ms, p99 {r['latency_ms'].get('p99')} ms "
            f"(server side: {r['server_latency']}), "
            f"batch {r['batch_size_mean']}, engine {r['engine_ms_per_batch']} ms/batch, "
            f"commit {r['commit_ms_per_batch']} ms/batch, CPU {r['cpu_share_pct']}"
            + (f", {r['pg']}" if "pg" in r else "") + f": {r['verdict']}")
    for name, v in (ab or {}).items():
        _, _, _, on, off = AB[a.campaign]
        s, u, q = v[on], v[off], v[f"{on}_over_{off}"]
        log(f"{a.campaign} {name}, medians of {v['rounds']} rounds: {on} {s['settlements_per_s']} settlements/s, "
            f"{s['server_cpu_us_per_reply']} us of hub CPU per reply, p50 {s['p50']} ms, p99 {s['p99']} ms; "
            f"{off} {u['settlements_per_s']} settlements/s, {u['server_cpu_us_per_reply']} us, p50 {u['p50']} ms, "
            f"p99 {u['p99']} ms; {on} / {off}: settlements/s {q['settlements_per_s']}, hub CPU per reply "
            f"{q['server_cpu_us_per_reply']}, p50 {q['p50']}, p99 {q['p99']} (paired, the median of the rounds' "
            f"ratios: {v['paired']}): {v['verdict']}")
    for name, v in (flows_ab or {}).items():
        m, o, q = v[side], v["oneshot"], v[f"{side}_over_oneshot"]
        log(f"stepwise-ab {name}, medians of {v['rounds']} rounds: {side} {m['replies_per_s']} requests/s, "
            f"{m['settlements_per_s']} settlements/s, {m['server_cpu_us_per_reply']} us of hub CPU per reply, "
            f"p50 {m['p50']} ms, p99 {m['p99']} ms; oneshot {o['replies_per_s']} requests/s, "
            f"{o['settlements_per_s']} settlements/s, {o['server_cpu_us_per_reply']} us, p50 {o['p50']} ms, "
            f"p99 {o['p99']} ms; {side} / oneshot: {q}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
