"""`yidi replay`: feed a request stream through the engine, one reply line each (section 9)."""
from __future__ import annotations

import gc
import time
from typing import Iterable, Iterator

import orjson

from engine.core.collect import Collector
from engine.core.engine import Engine, Request
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


def replay_compiled(world: World, in_path: str, out_path: str, batch_max: int = BATCH_MAX) -> int:
    """Replay through the compiled engine with its state in memory."""
    engine = Engine(world, clock="inf_time")
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


def replay_reference(world: World, in_path: str, out_path: str) -> int:
    from engine.reference.oracle import ReferenceEngine

    eng = ReferenceEngine(world)
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


def replay(world_dir: str, in_path: str, out_path: str, reference: bool = False, data_dir: str | None = None) -> dict:
    """Section 9. With `data_dir`, the store is kept there (seeded when new, continued when it exists)."""
    t0 = time.perf_counter()
    if data_dir is not None:
        from engine.store import open_store

        assert not reference, "the reference engine has no store"
        store = open_store(data_dir, world_dir, clock="inf_time")
        try:
            t1 = time.perf_counter()
            n = replay_store(store, in_path, out_path)
        finally:
            store.close()
    else:
        world = load_world(world_dir)
        t1 = time.perf_counter()
        n = replay_reference(world, in_path, out_path) if reference else replay_compiled(world, in_path, out_path)
    t2 = time.perf_counter()
    return {"requests": n, "load_s": t1 - t0, "replay_s": t2 - t1, "total_s": t2 - t0}
