"""`yidi replay`: feed a request stream through the engine, one reply line each (section 9)."""
from __future__ import annotations

import gc
import os
import time
from typing import Iterable, Iterator

import orjson

from engine.core.collect import Collector
from engine.core.engine import Engine, Request
from engine.core.maintenance import Schedule, read_schedule
from engine.contract.wire import JSON
from engine.world.loader import World, load_world

BATCH_MAX = 1024  # requests per engine batch in replay


def _lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line:
                yield line


def _batches(it: Iterable[bytes], n: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for x in it:
        batch.append(x)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def replay_compiled(world: World, in_path: str, out_path: str, batch_max: int = BATCH_MAX,
                    maintenance: Schedule | None = None) -> int:
    """Replay through the compiled engine with its state in memory."""
    engine = Engine(world, clock="inf_time")
    engine.maintenance = maintenance
    # The world's millions of long-lived objects need no more collection passes.
    gc.collect()
    gc.freeze()
    return _replay_batches(engine, lambda changes: None, in_path, out_path, batch_max)


def _replay_batches(engine: Engine, commit, in_path: str, out_path: str, batch_max: int) -> int:
    """Each batch through the engine; its changes go to `commit` before its replies are written."""
    enc = JSON.encoder
    n = 0
    # A batch's objects form trees; the automatic collector would walk the growing
    # journal again and again (a fifth of a run): engine.core.collect instead.
    collector = Collector()
    was = gc.isenabled()
    gc.disable()
    try:
        with open(out_path, "wb") as out:
            for batch in _batches(_lines(in_path), batch_max):
                replies = engine.handle_batch([Request(b) for b in batch])
                commit(engine.take_changes())
                buf = bytearray()
                for r in replies:
                    enc.encode_into(r, buf, -1)  # appended in place: no bytes object per reply
                    buf += b"\n"
                out.write(buf)
                n += len(replies)
                collector.after_batch()
    finally:
        if was:
            gc.enable()
    return n


def replay_reference(world: World, in_path: str, out_path: str, maintenance: Schedule | None = None) -> int:
    from engine.reference.oracle import ReferenceEngine

    eng = ReferenceEngine(world)
    eng.maintenance = [] if maintenance is None else maintenance.as_listed()
    n = 0
    with open(out_path, "wb") as out:
        for line in _lines(in_path):
            reply = eng.handle_body(line)
            out.write(orjson.dumps(reply) + b"\n")
            n += 1
    return n


def replay_store(store, in_path: str, out_path: str, batch_max: int = BATCH_MAX) -> int:
    """Replay through a durable store (engine.store): each batch is committed before its replies are written."""
    return _replay_batches(store.engine, store.commit, in_path, out_path, batch_max)


class ReplayError(Exception):
    """--in cannot be read or --out cannot be written: found before the world or the store is opened."""


def check_paths(in_path: str, out_path: str) -> None:
    """Refuse, in one line, an --in that cannot be read and an --out that cannot be written (its folder
    missing, a folder, no permission), before a store is seeded or a world loaded for nothing."""
    try:
        with open(in_path, "rb"):
            pass
    except OSError as e:
        raise ReplayError(f"--in {in_path}: cannot be read ({e.strerror or e})") from None
    parent = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(parent):
        raise ReplayError(f"--out {out_path}: its folder {parent} does not exist")
    if os.path.isdir(out_path):
        raise ReplayError(f"--out {out_path}: a folder, not a file")
    try:
        with open(out_path, "ab"):  # made if absent; written from the start by the replay
            pass
    except OSError as e:
        raise ReplayError(f"--out {out_path}: cannot be written ({e.strerror or e})") from None


def replay(world_dir: str, in_path: str, out_path: str, reference: bool = False, data_dir: str | None = None,
           accept_world_change: bool = False, maintenance_path: str | None = None) -> dict:
    """Section 9. With `data_dir`, the store is kept there (seeded when new, continued when it exists;
    `accept_world_change`: see engine.store.open_store). `maintenance_path`: a maintenance file (section
    12), its windows on the replay clock (each request's inf_time); MaintenanceError when it cannot be used."""
    t0 = time.perf_counter()
    check_paths(in_path, out_path)
    maintenance = None if maintenance_path is None else read_schedule(maintenance_path)
    if data_dir is not None:
        from engine.store import open_store

        assert not reference, "the reference engine has no store"
        store = open_store(data_dir, world_dir, clock="inf_time", accept_world_change=accept_world_change)
        try:
            t1 = time.perf_counter()
            store.engine.maintenance = maintenance
            n = replay_store(store, in_path, out_path)
        finally:
            store.close()
    else:
        world = load_world(world_dir)
        t1 = time.perf_counter()
        n = (replay_reference(world, in_path, out_path, maintenance) if reference
             else replay_compiled(world, in_path, out_path, maintenance=maintenance))
    t2 = time.perf_counter()
    return {"requests": n, "load_s": t1 - t0, "replay_s": t2 - t1, "total_s": t2 - t0}
