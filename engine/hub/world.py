"""The world folder as a reloadable part of a running hub (engine.hub.reload; docs/server.md, "Reload").

On SIGHUP or `POST /admin/reload` the folder is read and validated again, merged
into the world in force (engine.world.merge: persons keep their rows and
accumulators, new ones are added, filings and chronic qualifications are the
file's), and the engine's parts for it are built, all on a worker thread while the
hub serves. The store then records it (its new persons' rows first, durably, so
that no commit can name a person the store lacks), and the engine takes it between
two batches, in one step on the event loop: a request sees the old world or the
new one, never a mixture. A folder that fails validation, or that drops a person
or an institution, is refused and the world in force is kept.
"""
from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from typing import Any

from engine.core.engine import world_parts
from engine.hub.reload import ReloadRefused
from engine.world.loader import WorldError, load_world
from engine.world.merge import MergeRefused, WorldMerge, merge_world, world_version

log = logging.getLogger("yidi.server")


def _now_text() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _let_go(parts: list) -> None:
    while parts:
        parts.pop()


class WorldSource:
    """The world folder behind a hub's engine and store (engine.hub.reload.Reloadable)."""

    name = "world"

    def __init__(self, hub, world_dir: str):
        self.hub = hub
        self.world_dir = world_dir
        self.loaded_at = _now_text()
        self.version = world_version(world_dir)
        self.changes: dict[str, int] = {}

    def status(self) -> dict[str, Any]:
        """The world in force, for the status page: when it was loaded, its version (a short hash of its files)
        and what its last reload changed (counts; empty for the world the hub started with)."""
        return {"loaded_at": self.loaded_at, "version": self.version, "changes": dict(self.changes)}

    def load(self) -> tuple:
        """On a worker thread: read, validate and merge the folder, build the engine's parts for it, and have the
        store record it (durable when this returns). ReloadRefused names what is wrong; nothing changed then."""
        t0 = time.perf_counter()
        engine, store = self.hub.engine, self.hub.store
        record = getattr(store, "record_world", None)
        if record is None:
            raise ReloadRefused(f"the world {self.world_dir}: this store cannot take a reloaded world; restart")
        version = world_version(self.world_dir)
        try:
            new = load_world(self.world_dir)
        except WorldError as e:
            raise ReloadRefused(f"the world {self.world_dir}: {e}") from None
        t_load = time.perf_counter()
        try:
            merge: WorldMerge = merge_world(engine.world, new, engine.chronic_withdrawn)
        except MergeRefused as e:
            raise ReloadRefused(f"the world {self.world_dir}: {e}") from None
        parts = world_parts(merge.world, merge.chronic_withdrawn)
        t_build = time.perf_counter()
        locked_s = record(merge, self.world_dir)
        t_record = time.perf_counter()
        timings = {"load_ms": round((t_load - t0) * 1e3, 1), "build_ms": round((t_build - t_load) * 1e3, 1),
                   "record_ms": round((t_record - t_build) * 1e3, 1),
                   "commits_waited_ms": round((locked_s or 0.0) * 1e3, 1)}
        return merge, parts, version, timings

    def apply(self, loaded: tuple) -> dict[str, Any]:
        """On the event loop, between batches: the engine takes the new world in one step."""
        merge, parts, version, timings = loaded
        t0 = time.perf_counter()
        replaced = self.hub.engine.apply_world(parts, merge.chronic_withdrawn)
        if self.hub.metrics.prepay is not None:  # /metrics and the status page: the new deposits
            self.hub.metrics.prepay.monitor.set_deposits(merge.world.prepay_fen)
        timings["apply_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        # The old world is freed on a thread of its own, a part at a time: the loop goes on serving.
        threading.Thread(target=_let_go, args=(replaced,), name="yidi-old-world", daemon=True).start()
        self.loaded_at, self.version, self.changes = _now_text(), version, dict(merge.counts)
        return {"version": version, "folder": self.world_dir, **merge.counts, **timings}
