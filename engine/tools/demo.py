"""`yidi demo`: a national day of cross-region settlements, end to end.

One command that a newcomer runs first:

1. the default synthetic world (engine.tools.synth) is generated once and cached,
   keyed by the generator's parameters, its seed and the generator's own source;
2. a day of requests is drawn from it (in a child process, while the store is
   seeded: the two are the slow start-up steps and each wants a core);
3. the hub (engine.hub) starts in this process on a fresh embedded store,
   with the clock on each request's `inf_time`, so settlement times and the
   clearing period are those of the simulated day, and with a keys file of its
   own (contract section 10): one platform credential per province, whose
   region code `XX0000` covers the province's institutions;
4. each province's platform connects over the framed TCP protocol (one
   connection or more each, `--connections`), the first frame a signed 9001,
   and signs in once for every institution it serves, at the start of each
   simulated day it works; each request is sent with its institution's `sign_no`, on its
   province's connection, so a hospital's pre-settlement, settlement, retry and
   reversal stay in order on one connection, as they would in production. One
   sender walks the day in order with a bounded number of requests in flight in
   all (`--in-flight`), so every connection keeps its share of the traffic;
5. the replies are summed into a summary (printed, and written as JSON) and a
   report folder (engine.tools.report: an HTML page and PNG charts).

Every money total is summed in integer fen from the replies' decimal strings,
so the summary is what the hospitals saw. A retry returns the first reply
unchanged: totals count each `setl_id` once. The pre-payment usage is also
read from the store by engine.clearing, and the two must agree.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Iterator

import msgspec
import numpy as np

from engine.contract import money
from engine.clearing.clearing import PREPAY_WARN_BP_DEFAULT, prepay_usage
from engine.store.pg.sql import redact
from engine.contract.protocol import (
    COMMIT_INFNOS, FUND_ACCOUNT, FUND_BASIC, FUND_NAMES, FUND_NAMES_EN, FUND_SECOND, REVERSE_INFNOS, province,
)
from engine.contract.protocol import INFNO_UNDO
from engine.tools.report import province_name_en, write_report, yuan

# ---------------------------------------------------------------- defaults and bounds

SEED = 1
DAY = "2026-11-20"
# About the daily volume of cross-province direct settlements on the national
# platform in 2024 (some 230 million visits a year, most of them outpatient).
DAY_SETTLEMENTS = 130_000
WORLD_DEFAULTS = dict(provinces=31, catalogue_per_province=200_000, persons=1_000_000)
PERSONS_MAX = 10_000_000  # what engine.tools.synth is sized for
CATALOGUE_PER_PROVINCE_MAX = 1_000_000
SCALE_MAX = 100.0
CONNECTIONS_PER_PLATFORM = 1
# 8 per platform x 31 provinces = 248 connections from one address, under the hub's
# tcp_connections_per_address_max (256).
CONNECTIONS_PER_PLATFORM_MAX = 8
IN_FLIGHT = 256  # requests in flight in all: one full batch (Limits.batch_max)
# A connection holds at most this many unanswered (the hub stops reading it at
# Limits.inflight_per_connection_max); more in all than the hub's queue would be refused E_BUSY.
IN_FLIGHT_MAX = 4096
THROUGHPUT_BIN_S = 0.0  # 0: chosen from the replay's length (engine.tools.report)

# The stream's mix (gen_requests' defaults, spelled out here so that the number
# of requests for a given number of settlements is computed from known shares).
STREAM_SHARES = dict(query_share=0.03, presettle_share=0.05, reversal_share=0.01, retry_share=0.01,
                     malformed_share=0.002)
# How the day's visits are sent (engine.tools.synth.flows): "mixed", as hospitals do, by default.
FLOW = "mixed"
# Requests per first settlement of a step-wise and a mixed stream with STREAM_SHARES (measured on
# gen_requests' streams: registration, medical facts, uploads and settlement, plus the stream's
# queries, pre-settlements, reversals, cancellations, 2601, retries and malformed requests).
REQUESTS_PER_SETTLEMENT = {"stepwise": 5.47, "mixed": 3.30}
INFNO_NAMES_EN = {
    "1101": "person query", "2201": "outpatient registration", "2202": "registration cancelled",
    "2203": "visit information", "2204": "outpatient fee upload", "2205": "outpatient fees revoked",
    "2206": "outpatient pre-settlement", "2207": "outpatient settlement", "2208": "outpatient reversal",
    "2301": "inpatient fee upload", "2302": "inpatient fees revoked", "2303": "inpatient pre-settlement",
    "2304": "inpatient settlement", "2305": "inpatient reversal", "2401": "admission", "2402": "discharge",
    "2403": "admission changed", "2404": "admission cancelled", "2405": "discharge undone",
    "2601": "undo (冲正)", "3201": "reconciliation", "3202": "reconciliation listing",
}
MONEY_FIELDS = ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
                "hifp_pay", "hifmi_pay", "hifob_pay", "fund_pay_sumamt", "acct_pay", "psn_cash_pay")


def default_cache_dir() -> str:
    if os.environ.get("YIDI_CACHE"):
        return os.environ["YIDI_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "yidi")


@dataclasses.dataclass
class DemoOptions:
    scale: float = 1.0
    seed: int = SEED
    provinces: int = WORLD_DEFAULTS["provinces"]
    catalogue_per_province: int = WORLD_DEFAULTS["catalogue_per_province"]
    persons: int = WORLD_DEFAULTS["persons"]
    day: str = DAY
    cache_dir: str = dataclasses.field(default_factory=default_cache_dir)
    data_dir: str | None = None  # None: a temporary folder, removed at the end
    store: str | None = None  # a PostgreSQL URL (an empty database) in place of a data folder (engine.store.pg)
    report_dir: str = "yidi-report"
    connections: int = CONNECTIONS_PER_PLATFORM  # per province platform
    in_flight: int = IN_FLIGHT  # in all
    keep_replies: bool = False  # requests.jsonl and replies.jsonl in the report folder
    progress: bool | None = None  # None: a progress bar when stderr is a terminal
    loop: str = "uvloop"
    flow: str = FLOW

    def check(self) -> None:
        """Refuse options outside their bounds, with a message that names the option."""
        if not 0 < self.scale <= SCALE_MAX:
            raise ValueError(f"--scale must be within (0, {SCALE_MAX:g}]")
        if not 1 <= self.provinces <= 31:
            raise ValueError("--provinces must be within 1..31")
        if not 1 <= self.persons <= PERSONS_MAX:
            raise ValueError(f"--persons must be within 1..{PERSONS_MAX:,}")
        if not 1 <= self.catalogue_per_province <= CATALOGUE_PER_PROVINCE_MAX:
            raise ValueError(f"--catalogue must be within 1..{CATALOGUE_PER_PROVINCE_MAX:,}")
        if not 1 <= self.connections <= CONNECTIONS_PER_PLATFORM_MAX:
            raise ValueError(f"--connections (per province platform) must be within 1..{CONNECTIONS_PER_PLATFORM_MAX}")
        if not 1 <= self.in_flight <= IN_FLIGHT_MAX:
            raise ValueError(f"--in-flight must be within 1..{IN_FLIGHT_MAX}")
        from engine.tools.synth.flows import FLOWS

        if self.flow not in FLOWS:
            raise ValueError(f"--flow must be one of {', '.join(FLOWS)}")
        money.parse_day(self.day)
        if self.store is not None and self.data_dir is not None:
            raise ValueError("--data and --store exclude each other: give one")
        if self.data_dir is not None and os.path.isdir(self.data_dir) and os.listdir(self.data_dir):
            raise ValueError(f"--data {self.data_dir}: not empty; the demo wants a fresh store")

    @property
    def settlements_target(self) -> int:
        return max(1, round(DAY_SETTLEMENTS * self.scale))


def requests_for(settlements: int, flow: str = "oneshot") -> int:
    """Requests in a stream of `flow` that holds about `settlements` first settlements (the rest:
    the visits' other steps, queries, pre-settlements, reversals, retries and malformed requests)."""
    if flow == "oneshot":
        return max(50, math.ceil(settlements / (1.0 - sum(STREAM_SHARES.values()))))
    return max(50, math.ceil(settlements * REQUESTS_PER_SETTLEMENT[flow]))


# ---------------------------------------------------------------- stages, printed as they go

class Log:
    """Stage lines on stderr, each with the seconds it took; the timings are kept for the summary."""

    def __init__(self, out=sys.stderr):
        self.out = out
        self.timings_s: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def say(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {msg}", file=self.out, flush=True)

    @contextlib.contextmanager
    def stage(self, key: str, msg: str) -> Iterator[None]:
        self.say(msg + " ...")
        t = time.perf_counter()
        yield
        self.timings_s[key] = round(time.perf_counter() - t, 3)
        self.say(f"{msg}: done in {self.timings_s[key]:.1f} s")


# ---------------------------------------------------------------- the world, cached

def _generator_digest() -> str:
    """A digest of every module of engine.tools.synth: a changed generator must not reuse an old world."""
    from engine.tools import synth

    folder = os.path.dirname(synth.__file__)
    h = hashlib.sha256()
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".py")):
        h.update(name.encode() + b"\0")
        with open(os.path.join(folder, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def world_key(seed: int, provinces: int, catalogue_per_province: int, persons: int) -> str:
    return (f"world-s{seed}-p{provinces}-c{catalogue_per_province}-n{persons}"
            f"-g{_generator_digest()}")


def ensure_world(cache_dir: str, seed: int, provinces: int, catalogue_per_province: int,
                 persons: int) -> tuple[str, dict, bool]:
    """(world folder, gen_world's summary, True when it came from the cache).

    A world is generated into a temporary folder beside its final place and renamed
    into it when complete, so an interrupted run never leaves half a world that a
    later run would take for a whole one.
    """
    from engine.tools.synth import gen_world

    key = world_key(seed, provinces, catalogue_per_province, persons)
    folder = os.path.join(cache_dir, "worlds", key)
    done = os.path.join(folder, "world.json")
    if os.path.exists(done):
        with open(done) as f:
            summary = json.load(f)
        summary["out_dir"] = folder  # where it is now (a cache folder may have moved)
        return folder, summary, True
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=key + ".tmp-", dir=os.path.dirname(folder))
    try:
        summary = gen_world(tmp, seed=seed, provinces=provinces, catalogue_per_province=catalogue_per_province,
                            persons=persons)
        summary["out_dir"] = folder
        summary["generator"] = key
        with open(os.path.join(tmp, "world.json"), "w") as f:
            json.dump(summary, f, indent=1)
        try:
            os.rename(tmp, folder)
        except OSError:  # another run finished the same world first: keep theirs
            if not os.path.exists(done):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder, summary, False


# ---------------------------------------------------------------- the day's requests (child process)

META_FIELDS = ("infno", "msgid", "insuplc_admdvs", "mdtrtarea_admvs", "fixmedins_code", "inf_time")


def gen_frames(world_dir: str, n: int, seed: int, day: str, out_dir: str, jsonl: bool, flow: str = "oneshot") -> dict:
    """Draw the day's n envelopes and write them ready to send (runs in a child process).

    frames.bin: one wire frame after another (4-byte length, MessagePack body, money as
    decimal strings: docs/contract.md section 7); meta.msgpack: per request the fields the
    summary needs (META_FIELDS); requests.jsonl too when `jsonl`.
    """
    from engine.tools.synth import gen_requests, write_requests_jsonl

    t0 = time.perf_counter()
    envs = gen_requests(world_dir, n, seed=seed, start=day, days=1, flow=flow, **STREAM_SHARES)
    gen_s = time.perf_counter() - t0
    enc = msgspec.msgpack.Encoder()
    frames_bytes = 0
    with open(os.path.join(out_dir, "frames.bin"), "wb") as f:
        buf = bytearray()
        for env in envs:
            # Without the drawn sign_no: the hub's own is added to each frame once the
            # institution has signed in (engine.hub.client.with_sign_no).
            body = enc.encode({k: v for k, v in env.items() if k != "sign_no"})
            buf += len(body).to_bytes(4, "big")
            buf += body
            if len(buf) >= 1 << 22:
                f.write(buf)
                frames_bytes += len(buf)
                buf.clear()
        f.write(buf)
        frames_bytes += len(buf)
    meta = [[e[k] for k in META_FIELDS] for e in envs]
    with open(os.path.join(out_dir, "meta.msgpack"), "wb") as f:
        f.write(enc.encode(meta))
    if jsonl:
        write_requests_jsonl(os.path.join(out_dir, "requests.jsonl"), envs)
    return {"requests": len(envs), "frames_bytes": frames_bytes, "gen_s": round(gen_s, 3),
            "total_s": round(time.perf_counter() - t0, 3)}


def read_frames(path: str) -> list[bytes]:
    """The frames of frames.bin, each with its 4-byte header, ready to write to a socket."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    pos, end = 0, len(data)
    while pos < end:
        n = int.from_bytes(data[pos:pos + 4], "big")
        out.append(data[pos:pos + 4 + n])
        pos += 4 + n
    assert pos == end, "frames.bin ends inside a frame"
    return out


# ---------------------------------------------------------------- the replay over framed TCP

@dataclasses.dataclass(repr=False)
class Replayed:
    """What the replay saw. Its repr is short on purpose: asyncio.Runner formats the main
    task's result when it checks its SIGINT handler, and a dataclass repr of every reply
    body took half a minute on a full day."""

    bodies: list[bytes | None]  # each reply's MessagePack body, by request index
    t_send_s: np.ndarray  # perf_counter at send, by request index
    t_recv_s: np.ndarray  # perf_counter at the reply's last byte
    t_start_s: float
    t_end_s: float
    batches: int  # engine batches (and store commits) the hub made
    engine_s: float = 0.0  # hub: Engine.handle_batch time, summed over the batches
    commit_s: float = 0.0  # hub: store write time (on the writer thread), summed
    connections: int = 0  # framed connections, one or more per province platform
    sign_ins: int = 0  # 9001s answered, one per institution served and day (a connection's first frame among them)
    sign_in_s: float = 0.0  # from the first connect to the last sign-in answered

    def __repr__(self) -> str:
        return f"Replayed({len(self.bodies)} replies, {self.t_end_s - self.t_start_s:.3f} s)"


async def _ticker(total: int, done: list[int], enabled: bool | None) -> None:
    """The progress bar, refreshed a few times a second (not once per reply)."""
    from tqdm import tqdm

    # disable=None: tqdm shows the bar only when stderr is a terminal.
    with tqdm(total=total, unit="req", desc="replay", disable=None if enabled is None else not enabled,
              dynamic_ncols=True, smoothing=0.1) as bar:
        shown = 0
        try:
            while shown < total:
                await asyncio.sleep(0.2)
                bar.update(done[0] - shown)
                shown = done[0]
        finally:
            bar.update(done[0] - shown)


async def _serve_and_replay(o: DemoOptions, world_dir: str, data_dir: str, frames_future, work_dir: str,
                            log: Log) -> tuple[Replayed, list[list], dict, dict[str, int]]:
    """Open the store, start the hub with the demo's keys, sign in, replay the day, stop; the replies
    and what the world says."""
    from engine.hub.auth import KeysSource, write_keys
    from engine.hub.client import with_sign_no
    from engine.hub.framing import frame
    from engine.hub.hub import Hub
    from engine.hub.limits import Limits
    from engine.hub.serve import Server
    from engine.tools.platforms import lanes_for, platform_credentials, replay_lanes, sign_in_lane

    loop = asyncio.get_running_loop()
    with log.stage("store_open_s", f"opening a fresh store in {data_dir} (loads the world, seeds the persons)"):
        hub = await Hub.open(data_dir, world_dir, Limits(), clock="inf_time")
    world = hub.engine.world
    prepay_fen = dict(world.prepay_fen)
    inst_admdvs = dict(zip(world.inst_code, world.inst_admdvs))
    keys_path = os.path.join(work_dir, "keys.csv")
    write_keys(keys_path, platform_credentials([province(a) for a in world.inst_admdvs]))
    keys, _ = KeysSource.open(keys_path)  # what `yidi serve --keys` reads
    server = Server(hub, tcp=("127.0.0.1", 0), keyring=keys.keyring, reloadable=(keys,))
    await server.start()
    running = loop.create_task(server.run())
    log.say(f"hub listening on {server.tcp_address[0]}:{server.tcp_address[1]} (framed TCP), "
            f"{len(keys.keyring)} platform credentials in {keys_path}")
    try:
        if not frames_future.done():
            log.say("waiting for the request stream")
        gen = await asyncio.wrap_future(frames_future)
        log.say(f"request stream: {gen['requests']:,} requests, {gen['frames_bytes'] / 1e6:,.0f} MB of frames, "
                f"drawn in {gen['total_s']:.1f} s")
        frames = read_frames(os.path.join(work_dir, "frames.bin"))
        with open(os.path.join(work_dir, "meta.msgpack"), "rb") as f:
            meta = msgspec.msgpack.decode(f.read())
        n = len(frames)
        assert n == len(meta) == gen["requests"]
        r = Replayed([None] * n, np.zeros(n), np.zeros(n), 0.0, 0.0, 0)
        k_code, k_area = META_FIELDS.index("fixmedins_code"), META_FIELDS.index("mdtrtarea_admvs")
        # The hub's clock is the requests' inf_time: an institution signs in at the start of each day it
        # works (a retry late at night may fall on the next), and a sign-in is in force all that day.
        days = [m[META_FIELDS.index("inf_time")][:10] for m in meta]
        lanes = lanes_for([m[k_code] for m in meta], [m[k_area] for m in meta], inst_admdvs,
                          list(keys.keyring.by_paasid.values()), o.connections, days)
        t0 = time.perf_counter()
        signed = await asyncio.gather(*(sign_in_lane(server.tcp_address, lane, opter_no="demo") for lane in lanes))
        r.sign_in_s = time.perf_counter() - t0
        r.connections, r.sign_ins = len(lanes), sum(len(s) for _, s in signed)
        log.say(f"{r.connections} connections of {len(keys.keyring)} province platforms made {r.sign_ins:,} "
                f"sign-ins in {r.sign_in_s:.2f} s")
        for lane, (_, sign_nos) in zip(lanes, signed):
            for i in lane.idx:
                sign_no = sign_nos.get((meta[i][k_code], days[i]))
                if sign_no is not None:
                    frames[i] = frame(with_sign_no(frames[i][4:], sign_no))
        done = [0]
        log.say(f"replaying {n:,} requests over {r.connections} connections, {o.in_flight} in flight in all")
        batches0 = hub.batches
        ticker = loop.create_task(_ticker(n, done, o.progress))
        r.t_start_s = time.perf_counter()
        try:
            await replay_lanes([c for c, _ in signed], lanes, frames, r, o.in_flight, done)
        finally:
            r.t_end_s = time.perf_counter()
            await ticker
        r.batches = hub.batches - batches0
        reg = hub.metrics.registry
        r.engine_s = reg.get_sample_value("yidi_engine_batch_seconds_sum") or 0.0
        r.commit_s = reg.get_sample_value("yidi_commit_seconds_sum") or 0.0
        log.timings_s["replay_s"] = round(r.t_end_s - r.t_start_s, 3)
        log.say(f"replayed in {r.t_end_s - r.t_start_s:.1f} s")
    finally:
        with log.stage("store_close_s", "stopping the hub and closing the store"):
            server.stop()
            code = await running
    if code != 0:
        raise RuntimeError(f"the hub stopped with exit code {code}: {hub.failed!r}")
    return r, meta, gen, prepay_fen


# ---------------------------------------------------------------- the summary

class _SetlInfo(msgspec.Struct):
    """The setlinfo fields the summary reads; a reply without one of them is refused by the decoder."""

    insutype: str
    filing_class: str
    medfee_sumamt: str
    fulamt_ownpay_amt: str
    overlmt_selfpay: str
    preselfpay_amt: str
    inscp_scp_amt: str
    hifp_pay: str
    hifmi_pay: str
    hifob_pay: str
    fund_pay_sumamt: str
    acct_pay: str
    psn_cash_pay: str
    setl_id: str | None = None  # absent from a pre-settlement


class _Output(msgspec.Struct):
    setlinfo: _SetlInfo | None = None
    data: msgspec.Raw = msgspec.Raw(b"")  # read for 2601 alone (_Undo); other transactions' data differ in shape


class _Reply(msgspec.Struct):
    infcode: int
    err_code: str | None = None
    output: _Output | None = None


class _Undo(msgspec.Struct):
    """A 2601's output.data (docs/contract.md section 11)."""

    omsgid: str
    oinfno: str
    status: str


_undo_decoder = msgspec.msgpack.Decoder(_Undo)
_reply_decoder = msgspec.msgpack.Decoder(_Reply)


def decode_replies(bodies: list[bytes]) -> list[_Reply]:
    """Only the fields the summary reads (msgspec skips the per-line result rows)."""
    return [_reply_decoder.decode(b) for b in bodies]


def fund_amounts(insutype: str, amounts: dict[str, int]) -> dict[str, int]:
    """Fund code -> fen, as in setldetail (docs/contract.md section 6), also for a reversal,
    whose reply has the negated setlinfo and no setldetail."""
    second = amounts["hifmi_pay"] if insutype == "390" else amounts["hifob_pay"]
    out = {FUND_BASIC[insutype]: amounts["hifp_pay"], FUND_SECOND[insutype]: second}
    if insutype == "310":
        out[FUND_ACCOUNT] = amounts["acct_pay"]
    return out


def summarize(meta: list[list], replies: list[Any], prepay_fen: dict[str, int]) -> dict:
    """Totals of a replayed day, money in integer fen (net of reversals, each setl_id once).

    meta: per request META_FIELDS; replies: per request a decoded reply (a _Reply, or a
    dict as JSON gives it). Errors count every refused request, retries included. A 2601
    that undid a settlement (docs/contract.md section 11) counts as its reversal: the
    settlement's amounts, from its own reply, come off the totals.
    """
    k_infno, k_msgid = META_FIELDS.index("infno"), META_FIELDS.index("msgid")
    k_ins, k_trt = META_FIELDS.index("insuplc_admdvs"), META_FIELDS.index("mdtrtarea_admvs")
    requests_by_infno: collections.Counter = collections.Counter()
    refused_by_infno: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    seen: set[str] = set()
    settled: dict[str, tuple[dict, str, str]] = {}  # setl_id -> (setlinfo, insured and treatment province)
    undos_seen: set[str] = set()
    counts = {"settlements": 0, "reversals": 0, "undone": 0, "retries_answered": 0, "ok": 0, "refused": 0}
    t = _Totals()
    for m, rep in zip(meta, replies):
        infno = m[k_infno]
        requests_by_infno[infno] += 1
        infcode, err_code, setl, undo = _fields(rep, infno == INFNO_UNDO)
        if infcode != 0:
            counts["refused"] += 1
            refused_by_infno[infno] += 1
            errors[err_code or "?"] += 1
            continue
        counts["ok"] += 1
        if undo is not None:
            if m[k_msgid] in undos_seen:
                counts["retries_answered"] += 1
                continue
            undos_seen.add(m[k_msgid])
            undone = settled.pop("S" + undo["omsgid"], None) if undo["status"] == "UNDONE" else None
            if undone is not None and undo["oinfno"] in COMMIT_INFNOS:
                counts["undone"] += 1
                t.add(undone[0], -1, undone[1], undone[2], negate=True)
            continue
        if infno not in COMMIT_INFNOS and infno not in REVERSE_INFNOS:
            continue
        setl_id = setl["setl_id"]
        assert setl_id == "S" + m[k_msgid], (setl_id, m[k_msgid])
        if setl_id in seen:
            counts["retries_answered"] += 1
            continue
        seen.add(setl_id)
        sign = 1 if infno in COMMIT_INFNOS else -1
        counts["settlements" if sign > 0 else "reversals"] += 1
        provs = province(m[k_ins]), province(m[k_trt])
        if sign > 0:
            settled[setl_id] = (setl, *provs)
        t.add(setl, sign, *provs)
    return {
        "requests": len(meta),
        "requests_by_infno": dict(sorted(requests_by_infno.items())),
        "refused_by_infno": dict(sorted(refused_by_infno.items())),
        "counts": counts,
        "cross_province_settlements": t.cross_pairs,
        "totals_fen": t.totals,
        "by_fund_fen": dict(sorted(t.by_fund.items())),
        "by_class": dict(sorted(t.by_class.items())),
        "by_insured_province_fen": dict(sorted(t.by_prov.items())),
        "errors": dict(errors.most_common()),
        "prepay": _prepay_usage(prepay_fen, t.cross_fen),
    }


class _Totals:
    """The money of the committed settlements and reversals, net, in fen."""

    def __init__(self):
        self.totals = dict.fromkeys(MONEY_FIELDS, 0)
        self.by_fund: dict[str, int] = {}
        self.by_class: dict[str, dict[str, int]] = {}
        self.by_prov: dict[str, dict[str, int]] = {}  # insured province -> fund code -> fen
        self.cross_fen: dict[str, int] = {}  # insured province -> cross-province fund + account
        self.cross_pairs = 0

    def add(self, setl: dict, sign: int, ins_prov: str, trt_prov: str, negate: bool = False) -> None:
        """One settlement (sign 1) or reversal (sign -1), by its reply's setlinfo; with `negate`, a
        settlement undone by 2601, by the settlement's own setlinfo."""
        amounts = {f: (-1 if negate else 1) * _fen(setl[f]) for f in MONEY_FIELDS}
        # A reversal's reply carries the settlement's amounts negated (section 7).
        assert all((a >= 0) if sign > 0 else (a <= 0) for a in amounts.values()), (setl["setl_id"], amounts)
        for f, a in amounts.items():
            self.totals[f] += a
        funds = fund_amounts(setl["insutype"], amounts)
        pf = self.by_prov.setdefault(ins_prov, {})
        for code, a in funds.items():
            self.by_fund[code] = self.by_fund.get(code, 0) + a
            pf[code] = pf.get(code, 0) + a
        c = self.by_class.setdefault(setl["filing_class"], dict(count=0, medfee_sumamt=0, fund_pay_sumamt=0,
                                                                 acct_pay=0, psn_cash_pay=0))
        c["count"] += sign
        for f in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay"):
            c[f] += amounts[f]
        if ins_prov != trt_prov:
            self.cross_fen[ins_prov] = self.cross_fen.get(ins_prov, 0) + amounts["fund_pay_sumamt"] + amounts["acct_pay"]
            self.cross_pairs += sign


def _prepay_usage(prepay_fen: dict[str, int], cross_fen: dict[str, int]) -> dict[str, dict]:
    """Pre-payment usage by insured province: the same rule as engine.clearing's usage rows
    (run() checks the two against each other)."""
    prepay = {}
    for prov in sorted(set(prepay_fen) | set(cross_fen)):
        used, dep = cross_fen.get(prov, 0), prepay_fen.get(prov, 0)
        usage_bp = (used * 10000 // dep) if dep > 0 else None
        prepay[prov] = {"used_fen": used, "prepay_fen": dep, "usage_bp": usage_bp,
                        "warning": used > 0 if usage_bp is None else usage_bp >= PREPAY_WARN_BP_DEFAULT}
    return prepay


_FEN_TEXT = re.compile(r"-?[0-9]+\.[0-9]{2}")


def _fen(text: str) -> int:
    """money.parse_fen for the server's own two-decimal strings, five times faster (a day has
    1.5 million of them); anything else goes through money.parse_fen."""
    if _FEN_TEXT.fullmatch(text):
        return int(text[:-3] + text[-2:])
    return money.parse_fen(text)


def prepay_from_store(data_dir: str, prepay_fen: dict[str, int], from_replies: dict[str, dict]) -> dict[str, dict]:
    """Pre-payment usage as the clearing module reads it from the store (docs/contract.md section 8),
    after checking that it equals what the replies add up to: the hospitals and the ledger agree."""
    rows = prepay_usage(data_dir, prepay_fen=prepay_fen, warn_bp=PREPAY_WARN_BP_DEFAULT)
    store_used = {u.prov: u.used_fen for u in rows if u.used_fen}
    reply_used = {p: v["used_fen"] for p, v in from_replies.items() if v["used_fen"]}
    if store_used != reply_used:
        diff = sorted(p for p in set(store_used) | set(reply_used) if store_used.get(p) != reply_used.get(p))
        raise AssertionError(f"pre-payment usage: the store and the replies disagree for {diff}")
    return {u.prov: {"used_fen": u.used_fen, "prepay_fen": u.prepay_fen, "usage_bp": u.ratio_bp,
                     "warning": u.warning} for u in rows}


def _fields(rep: Any, undo: bool = False) -> tuple[int, str | None, dict | None, dict | None]:
    """(infcode, err_code, setlinfo as a dict of str, a 2601's output.data when `undo`) of a _Reply or
    of a reply dict."""
    if isinstance(rep, _Reply):
        out = rep.output
        s = out.setlinfo if out is not None else None
        u = _undo_decoder.decode(out.data) if undo and out is not None and len(out.data) else None
        return (rep.infcode, rep.err_code, msgspec.structs.asdict(s) if s is not None else None,
                msgspec.structs.asdict(u) if u is not None else None)
    out = rep.get("output") or {}
    return rep["infcode"], rep.get("err_code"), out.get("setlinfo"), out.get("data") if undo else None


def latency_stats(r: Replayed) -> dict:
    lat_ms = (r.t_recv_s - r.t_send_s) * 1000.0
    wall_s = max(r.t_end_s - r.t_start_s, 1e-9)
    return {
        "latency_ms_p50": round(float(np.percentile(lat_ms, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(lat_ms, 99)), 3),
        "latency_ms_max": round(float(lat_ms.max()), 3),
        "latency_ms_mean": round(float(lat_ms.mean()), 3),
        "replay_s": round(wall_s, 3),
    }


# ---------------------------------------------------------------- printing

def render_text(s: dict) -> str:
    c, lat = s["counts"], s["latency"]
    w = s["world"]
    lines = [
        f"yidi demo: a national day, {s['day']}, {s['flow']} flow",
        f"  world     {w['provinces']} provinces, {w['regions']} pooling regions, {w['institutions']:,} institutions,"
        f" {w['catalogue_rows']:,} catalogue rows, {w['persons']:,} persons"
        f" ({'cached' if s['world_cached'] else 'generated'}: {w['out_dir']})",
        f"  day       {s['requests']:,} requests: {c['settlements']:,} settlements and {c['reversals']:,} reversals"
        f" committed, {c['undone']:,} settlements undone by 2601, {c['retries_answered']:,} retries answered from the journal, {c['refused']:,} refused",
        f"  sign-in   {s['connections']} connections of the province platforms (each a signed 9001 first), "
        f"{s['sign_ins']:,} sign-ins (one per institution and day it works), in {s['sign_in_s']:.2f} s",
        f"  replay    {s['in_flight']} in flight over {s['connections']} connections, framed TCP, each request "
        f"under its institution's sign-in, {lat['replay_s']:.1f} s:"
        f" {s['settlements_per_s']:,.0f} settlements/s, {s['requests_per_s']:,.0f} requests/s,"
        f" {s['batches']:,} batches (mean {s['requests'] / max(s['batches'], 1):.0f} requests)",
        f"  latency   p50 {lat['latency_ms_p50']:.1f} ms, p99 {lat['latency_ms_p99']:.1f} ms,"
        f" max {lat['latency_ms_max']:.1f} ms (send to reply, closed loop)",
        "",
        f"Requests by infno  {'infno':<6} {'':<28} {'requests':>9} {'refused':>9}",
    ]
    for infno, n in s["requests_by_infno"].items():
        lines.append(f"  {'':<17}{infno:<6} {INFNO_NAMES_EN.get(infno, ''):<28} {n:>9,} "
                     f"{s['refused_by_infno'].get(infno, 0):>9,}")
    lines += ["", "Totals, net of reversals and 2601 undos (yuan)"]
    t = s["totals_fen"]
    for f in ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
              "fund_pay_sumamt", "acct_pay", "psn_cash_pay"):
        lines.append(f"  {f:<20} {yuan(t[f]):>20}")
    lines += ["", "By fund (yuan)"]
    for code, fen in s["by_fund_fen"].items():
        lines.append(f"  {code} {FUND_NAMES_EN.get(code, FUND_NAMES.get(code, '')):<36} {yuan(fen):>20}")
    lines += ["", "By filing class", f"  {'class':<10} {'settlements':>11} {'medfee_sumamt':>18} "
              f"{'fund_pay_sumamt':>18} {'acct_pay':>16} {'psn_cash_pay':>16}"]
    for cls, v in s["by_class"].items():
        lines.append(f"  {cls:<10} {v['count']:>11,} {yuan(v['medfee_sumamt']):>18} {yuan(v['fund_pay_sumamt']):>18}"
                     f" {yuan(v['acct_pay']):>16} {yuan(v['psn_cash_pay']):>16}")
    lines += ["", "Errors by code"]
    if not s["errors"]:
        lines.append("  none")
    for code, n in s["errors"].items():
        lines.append(f"  {code:<22} {n:>8,}")
    lines += ["", "Pre-payment usage by insured province (cross-province fund_pay_sumamt + acct_pay "
              "over prepay.csv)"]
    rows = sorted(s["prepay"].items(), key=lambda kv: -(kv[1]["usage_bp"] or 0))
    for prov, v in rows:
        bp = v["usage_bp"]
        pct = "n/a" if bp is None else f"{bp / 100:.2f} %"
        warn = f"  WARNING: over {PREPAY_WARN_BP_DEFAULT / 100:g} %" if v["warning"] else ""
        lines.append(f"  {prov} {province_name_en(prov):<15} {yuan(v['used_fen']):>16} of "
                     f"{yuan(v['prepay_fen']):>18}  {pct:>8}{warn}")
    lines += ["", "Timings (s): " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in s["timings_s"].items())]
    return "\n".join(lines)


# ---------------------------------------------------------------- the command

def run(o: DemoOptions, out=sys.stdout, err=sys.stderr) -> int:
    """`yidi demo`: returns the exit code; the summary goes to `out`, the stages to `err`."""
    from engine.hub.serve import new_event_loop_factory

    o.check()
    log = Log(err)
    t_all = time.perf_counter()
    with log.stage("world_s", f"world: {o.provinces} provinces, {o.catalogue_per_province:,} catalogue rows per "
                              f"province, {o.persons:,} persons, seed {o.seed} (cache {o.cache_dir})"):
        world_dir, world, cached = ensure_world(o.cache_dir, o.seed, o.provinces, o.catalogue_per_province,
                                                o.persons)
    log.say(f"world {'from the cache' if cached else 'generated'}: {world_dir}")
    n = requests_for(o.settlements_target, o.flow)
    own_data = o.data_dir is None and o.store is None
    if own_data:
        data_dir = tempfile.mkdtemp(prefix="yidi-demo-data-")
    elif o.store is not None:
        data_dir = o.store
    else:
        data_dir = o.data_dir
        os.makedirs(data_dir, exist_ok=True)
    os.makedirs(o.report_dir, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix="yidi-demo-frames-")
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx)
    try:
        log.say(f"drawing the day in a child process: {n:,} requests for ~{o.settlements_target:,} settlements, "
                f"{o.day}, seed {o.seed}")
        fut = pool.submit(gen_frames, world_dir, n, o.seed, o.day, work_dir, o.keep_replies, o.flow)
        with asyncio.Runner(loop_factory=new_event_loop_factory(o.loop)) as runner:
            r, meta, gen, prepay_fen = runner.run(_serve_and_replay(o, world_dir, data_dir, fut, work_dir, log))
        log.timings_s["requests_s"] = gen["total_s"]
        with log.stage("summary_s", "summing the replies"):
            replies = decode_replies(r.bodies)
            s = summarize(meta, replies, prepay_fen)
            lat = latency_stats(r)
            s.update(
                day=o.day, seed=o.seed, scale=o.scale, flow=o.flow, world=world, world_cached=cached,
                connections=r.connections, connections_per_platform=o.connections, in_flight=o.in_flight,
                sign_ins=r.sign_ins, sign_in_s=round(r.sign_in_s, 3), batches=r.batches, latency=lat,
                server_s={"engine_s": round(r.engine_s, 3), "commit_s": round(r.commit_s, 3)},
                settlements_per_s=round(s["counts"]["settlements"] / lat["replay_s"], 1),
                requests_per_s=round(s["requests"] / lat["replay_s"], 1),
                data_dir=None if own_data else redact(o.store) if o.store else os.path.abspath(data_dir),
            )
        with log.stage("prepay_s", "pre-payment usage from the store (engine.clearing), checked against the replies"):
            s["prepay"] = prepay_from_store(data_dir, prepay_fen, s["prepay"])
            if o.keep_replies:
                shutil.copyfile(os.path.join(work_dir, "requests.jsonl"),
                                os.path.join(o.report_dir, "requests.jsonl"))
                _write_replies_jsonl(os.path.join(o.report_dir, "replies.jsonl"), r.bodies)
        with log.stage("report_s", f"writing the report to {o.report_dir}"):
            s["timings_s"] = dict(log.timings_s)
            s["timings_s"]["total_s"] = round(time.perf_counter() - t_all, 3)
            write_report(o.report_dir, s, _series(r, meta))
        s["timings_s"]["total_s"] = round(time.perf_counter() - t_all, 3)
        with open(os.path.join(o.report_dir, "summary.json"), "w") as f:
            json.dump(s, f, indent=1, ensure_ascii=False)
        print(render_text(s), file=out)
        print(f"\nReport: {os.path.join(os.path.abspath(o.report_dir), 'index.html')}", file=out, flush=True)
        if o.store is not None:
            print(f"Store kept in {redact(o.store)} (yidi check --store URL)", file=out, flush=True)
        elif not own_data:
            print(f"Store kept in {data_dir} (yidi check --data {data_dir})", file=out, flush=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(work_dir, ignore_errors=True)
        if own_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def _write_replies_jsonl(path: str, bodies: list[bytes]) -> None:
    import orjson

    dec = msgspec.msgpack.Decoder()
    with open(path, "wb") as f:
        for b in bodies:
            f.write(orjson.dumps(dec.decode(b)) + b"\n")


def _series(r: Replayed, meta: list[list]) -> dict:
    """The raw series the charts draw: latencies, completion times, the day's clock."""
    k_time, k_infno = META_FIELDS.index("inf_time"), META_FIELDS.index("infno")
    return {
        "latency_ms": (r.t_recv_s - r.t_send_s) * 1000.0,
        "t_done_s": r.t_recv_s - r.t_start_s,
        "is_settlement": np.array([m[k_infno] in COMMIT_INFNOS for m in meta], dtype=bool),
        "hour_of_day": np.array([int(m[k_time][11:13]) for m in meta], dtype=np.int64),
        "bin_s": THROUGHPUT_BIN_S,
    }
