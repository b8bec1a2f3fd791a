"""A day's requests sent to a hub as the province platforms would send them (contract section 10).

The demo (engine.tools.demo) and the load campaigns (bench/serve_load.py) both
drive a hub that runs with `--keys`: one platform credential per province
(`platform_credentials`; `XX0000` covers the province's institutions), a framed
connection per platform or more (`Lane`, `lanes_for`: a connection acts for one
credential), each opening with a signed 9001 and signing in once for every
institution it serves (`sign_in_lane`), then the requests, each with its
institution's `sign_no` (engine.hub.client.with_sign_no), sent in stream order
with a bounded number in flight in all (`replay_lanes`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
import ssl
import time
import zlib

import numpy as np

from engine.contract.credential import Credential
from engine.contract.protocol import province
from engine.hub.client import AsyncFramedClient, sign_in_envelope, sign_no_of

WRITE_BUFFER_BYTES_MAX = 1 << 20  # client side: drain the socket above this
SIGN_IN_WINDOW = 64  # 9001s a connection keeps unanswered while it signs in its institutions


def platform_credentials(provinces: list[str]) -> list[Credential]:
    """One platform credential per province (contract section 10: `XX0000` covers the province's
    institutions), each with a new random token, as `yidi keys add --admdvs` makes them."""
    return [Credential(f"plat-{p}", secrets.token_hex(32), "", p) for p in sorted(set(provinces))]


# A sign-in a lane makes: the institution, and the day it signs in at the start of (None: now, on
# the hub's wall clock). A hub on the replay clock keeps a sign-in in force for 24 h of inf_time.
SignInKey = tuple[str, "str | None"]


@dataclasses.dataclass
class Lane:
    """One framed connection of a province platform: the credential it acts for, the requests it
    carries (indexes, in stream order) and the sign-ins it makes (first seen first)."""

    cred: Credential
    idx: list[int] = dataclasses.field(default_factory=list)
    sign_ins: list[SignInKey] = dataclasses.field(default_factory=list)


def lanes_for(codes: list[str], areas: list[str], inst_admdvs: dict[str, str], creds: list[Credential],
              per_platform: int, days: list[str] | None = None) -> list[Lane]:
    """Each request (its `fixmedins_code` and `mdtrtarea_admvs`) on a connection of its institution's
    province platform; within a province, by institution (crc32 of fixmedins_code), so one hospital's
    requests keep their order. A request for an institution the world does not know goes by its
    `mdtrtarea_admvs` (and is refused E_FORBIDDEN: it is in no credential's scope). With `days` (each
    request's day, for a hub on the replay clock) an institution signs in for each day it works."""
    by_prov = {c.admdvs: c for c in creds}
    lanes: dict[tuple[str, int], Lane] = {}
    seen: set[tuple[str, int, SignInKey]] = set()
    for i, (code, area) in enumerate(zip(codes, areas)):
        admdvs = inst_admdvs.get(code)
        cred = by_prov.get(province(admdvs if admdvs is not None else area)) or creds[0]
        key = (cred.admdvs, zlib.crc32(code.encode()) % per_platform)
        lane = lanes.get(key)
        if lane is None:
            lane = lanes[key] = Lane(cred)
        lane.idx.append(i)
        sign_in = (code, None if days is None else days[i])
        if admdvs is not None and (*key, sign_in) not in seen:
            seen.add((*key, sign_in))
            lane.sign_ins.append(sign_in)
    first_of_prov: dict[str, str] = {}
    for code, admdvs in inst_admdvs.items():
        first_of_prov.setdefault(province(admdvs), code)
    for lane in lanes.values():
        if not lane.sign_ins:  # only requests for unknown institutions: the first frame still signs in
            lane.sign_ins.append((first_of_prov[lane.cred.admdvs], None if days is None else days[lane.idx[0]]))
    return [lanes[k] for k in sorted(lanes)]


async def sign_in_lane(address: tuple[str, int], lane: Lane, *, ssl_context: ssl.SSLContext | None = None,
                       opter_no: str = "platform") -> tuple[AsyncFramedClient, dict[SignInKey, str]]:
    """Connect and make the lane's sign-ins, the first 9001 being the connection's signed first frame
    (section 10); the client and {(fixmedins_code, day): sign_no}. A sign-in for a day is sent with
    the inf_time of that day's start (a hub on the replay clock signs in at that time)."""
    c = await AsyncFramedClient.connect(*address, ssl_context=ssl_context)
    sock = c.writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    envs = [sign_in_envelope(lane.cred.paasid, lane.cred.token, code, opter_no=opter_no, ip="127.0.0.1",
                             **({} if day is None else {"inf_time": f"{day} 00:00:00"}))
            for code, day in lane.sign_ins]
    try:
        replies = await c.pipeline(envs, SIGN_IN_WINDOW)
        return c, {key: sign_no_of(rep) for key, rep in zip(lane.sign_ins, replies)}
    except BaseException:
        await c.close()
        raise


async def replay_lanes(clients: list[AsyncFramedClient], lanes: list[Lane], frames: list[bytes], r, window: int,
                       done: list[int]) -> None:
    """Send the frames in stream order, each on its lane's client, with at most `window` unanswered in
    all; each lane's replies are read in its own order into `r` (`bodies`, `t_send_s`, `t_recv_s` by
    request index; `done[0]` counts them). With a window of 1 the hub sees the stream's order. The
    clients are closed at the end."""
    n = len(frames)
    lane_of = np.zeros(n, dtype=np.int32)
    for k, lane in enumerate(lanes):
        lane_of[lane.idx] = k
    slots = asyncio.Semaphore(window)
    failed: list[BaseException] = []
    clock = time.perf_counter

    async def receive(c: AsyncFramedClient, idx: list[int]) -> None:
        reader = c.reader
        try:
            for i in idx:
                head = await reader.readexactly(4)
                body = await reader.readexactly(int.from_bytes(head, "big"))
                r.t_recv_s[i] = clock()
                r.bodies[i] = body
                done[0] += 1
                slots.release()
        except BaseException as e:
            failed.append(e)
            for _ in range(window):  # a receiver that fails must not leave the sender waiting for a slot
                slots.release()
            raise

    loop = asyncio.get_running_loop()
    rx = [loop.create_task(receive(c, lane.idx)) for c, lane in zip(clients, lanes)]
    try:
        writers = [c.writer for c in clients]
        for i, k in enumerate(lane_of.tolist()):
            await slots.acquire()
            if failed:
                break  # a receiver failed: its exception is raised below
            w = writers[k]
            r.t_send_s[i] = clock()
            w.write(frames[i])
            if w.transport.get_write_buffer_size() > WRITE_BUFFER_BYTES_MAX:
                await w.drain()
        await asyncio.gather(*rx)
    finally:
        for t in rx:
            t.cancel()
        for c in clients:
            await c.close()
