"""The operator's status page (contract sections 8, 10, 12; docs/server.md, "Status page").

`GET /` of the admin listener is a page (engine/hub/static/) whose own script reads
`GET /status.json` every few seconds and draws it; nothing is loaded from anywhere
else. The document is made here, at most once per `STATUS_CACHE_S` whoever asks:

- `hub`: up, draining or stopped by a fail-stop; since when; queue, connections, auth.
- `traffic`: replies and settlements a second, p50/p99 latency, in points of a few
  seconds over the last 15 minutes and summed over the last minute
  (engine.hub.series).
- `errors`: replies by err_code: the last minute, the last 15 minutes, since start.
- `store`: journal rows, batches, the fold, the WAL files' sizes, the disk's free space.
- `prepay`: each insured province's pre-payment usage and its warning (section 8),
  the monitor behind `/metrics` (engine.clearing.PrepayMonitor).
- `signins`: sign-ins in force by institution (section 10).
- `maintenance`, `world`: from `StatusSources`, filled by the parts of the hub that
  own them; a part that is absent is said so plainly.

Money is text with two decimals (yuan), as on the wire; counts are integers.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import sqlite3
import threading
import time
from typing import Any, Callable

from engine.clearing.clearing import METRICS_REFRESH_S_MIN, ClearingError, open_db
from engine.contract import money
from engine.contract.protocol import ERR_MESSAGES, PROVINCE_NAMES_EN, PROVINCE_NAMES_ZH
from engine.core.engine import now_text
from engine.store.files import db_path, keys_path

STATUS_CACHE_S = 1.0  # the document is made at most once a second, however many pages are open
SIGNIN_INSTITUTIONS_MAX = 100  # rows of the sign-in table (the most sign-ins first); the rest are counted
WORLD_LOADS_MAX = 5  # earlier world loads listed under the one in force
WINDOWS_MAX = 20  # maintenance windows listed, in force and next each

Window = dict[str, str]  # {"admdvs", "begin", "end", "reason"}, times YYYY-MM-DD HH:MM:SS on the hub's clock


@dataclasses.dataclass
class StatusSources:
    """What the parts of the hub that own them tell the status page. Each is called on the event loop
    for every document (at most once a second), so it must be quick and must not block; None: that part
    is absent, and the page says so.

    - `maintenance() -> {"in_force": [Window], "next": [Window]}`: the windows of contract section 12
      in force now and those to come, each {admdvs, begin, end, reason}.
    - `world() -> {"loaded_at", "version", "changes"}`: the world in force, when it was loaded, and
      what changed at that load (text). Without it, the page shows what the store recorded of the
      world it was opened with (`world_of_store`).
    """

    maintenance: Callable[[], dict[str, list[Window]]] | None = None
    world: Callable[[], dict[str, Any]] | None = None


def world_of_store(conn: sqlite3.Connection) -> dict[str, Any]:
    """The world a store was last opened with, as its `world_load` and `meta` tables recorded it: when,
    from which folder, what changed then, and a version (the first 12 hex digits of a SHA-256 over the
    world files' own SHA-256)."""
    loads = conn.execute("SELECT loaded_at, world_dir, changes FROM world_load ORDER BY id DESC LIMIT ?",
                         (WORLD_LOADS_MAX + 1,)).fetchall()
    digests = conn.execute("SELECT key, value FROM meta WHERE key LIKE 'sha256:%' ORDER BY key").fetchall()
    version = hashlib.sha256("".join(f"{k}={v};" for k, v in digests).encode()).hexdigest()[:12]
    if not loads:
        return {"version": version, "loaded_at": None, "folder": None, "changes": None, "earlier": []}
    (at, folder, changes), earlier = loads[0], loads[1:]
    return {"version": version, "loaded_at": at, "folder": folder, "changes": changes,
            "earlier": [{"loaded_at": a, "folder": f, "changes": c} for a, f, c in earlier]}


def _file_bytes(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:  # absent (no WAL between checkpoints) or unreadable: shown as "–"
        return None


class Status:
    """The status document of one hub (`document()`); `close()` when the admin listener stops."""

    def __init__(self, hub, sources: StatusSources | None = None):
        self.hub = hub
        self.sources = sources or StatusSources()
        self.started_at = now_text()
        self._cached: dict | None = None
        self._cached_mono = -1e9
        self._making = asyncio.Lock()
        self._db: sqlite3.Connection | None = None  # read-only, used on one worker thread at a time
        self._db_lock = threading.Lock()
        self._names: tuple[int, dict[str, tuple[str, str]]] = (0, {})  # (id of the world, code -> name, admdvs)

    async def document(self) -> dict:
        async with self._making:
            if time.monotonic() - self._cached_mono >= STATUS_CACHE_S:
                self._cached = await self._make()
                self._cached_mono = time.monotonic()
            return self._cached

    async def _make(self) -> dict:
        hub = self.hub
        loop = asyncio.get_running_loop()
        # What reads files or SQLite runs on a worker thread; what reads the hub's memory runs here.
        from_disk = loop.run_in_executor(None, self._from_disk)
        now_mono, now_wall = time.monotonic(), time.time()
        traffic = hub.series.view(now_mono, now_wall)
        codes, settled, reversed_ = hub.metrics.totals()
        doc = {
            "now": now_text(), "now_unix": round(now_wall, 3),
            "hub": self._hub(codes),
            "traffic": traffic,
            "errors": self._errors(traffic, codes),
            "signins": self._signins(),
            "maintenance": self._source("maintenance", "no maintenance file (yidi serve --maintenance FILE)"),
        }
        disk = await from_disk
        doc["store"] = {**disk["store"], "batches": hub.batches, "settlements": settled, "reversals": reversed_,
                        "unfolded_rows": hub.store.unfolded_rows(), "fold_s": round(hub.store.fold_s_total, 3)}
        doc["prepay"] = disk["prepay"]
        if self.sources.world is not None:
            doc["world"] = {"from": "hub", **self._source("world", "")}
        else:
            doc["world"] = {"from": "store", **disk["world"]}
        return doc

    def _hub(self, codes: dict[str, int]) -> dict:
        hub = self.hub
        state = "fail-stop" if hub.failed is not None else "draining" if hub.stopping else "up"
        gauge = hub.metrics.registry.get_sample_value
        return {"state": state, "failed": None if hub.failed is None else repr(hub.failed)[:300],
                "started_at": self.started_at, "queue_depth": len(hub.queue), "queue_max": hub.limits.queue_max,
                "connections": len(hub.connections), "batches_inflight": hub.batches_inflight,
                "replies": sum(codes.values()), "auth_disabled": bool(gauge("yidi_auth_disabled")),
                "credentials": int(gauge("yidi_auth_credentials") or 0)}

    @staticmethod
    def _errors(traffic: dict, codes: dict[str, int]) -> list[dict]:
        recent, window = traffic["recent"]["errors"], traffic["window"]["errors"]
        rows = [{"code": c, "message": ERR_MESSAGES.get(c, ""), "last_minute": recent.get(c, 0),
                 "last_15_minutes": window.get(c, 0), "since_start": n} for c, n in codes.items() if c and n]
        rows.sort(key=lambda r: (-r["last_15_minutes"], -r["since_start"], r["code"]))
        return rows

    def _source(self, name: str, absent: str) -> dict:
        fn = getattr(self.sources, name)
        if fn is None:
            return {"present": False, "note": absent}
        try:
            return {"present": True, **fn()}
        except Exception as e:  # a source's bug must not take the page down: it says so instead
            return {"present": False, "note": f"{name}: {type(e).__name__}: {e}"[:300]}

    # ------------------------------------------------------------ sign-ins (section 10)

    def _institutions(self) -> dict[str, tuple[str, str]]:
        world = self.hub.engine.world
        if self._names[0] != id(world):
            self._names = (id(world), {c: (n, a) for c, n, a in zip(world.inst_code, world.inst_name,
                                                                    world.inst_admdvs)})
        return self._names[1]

    def _signins(self) -> dict:
        """Sign-ins in force now, by institution: the most first, at most SIGNIN_INSTITUTIONS_MAX rows."""
        now = now_text()
        by_inst: dict[str, list] = {}  # code -> [count, latest sign_time, set of paasids]
        # A copy taken at once: a store that runs whole batches on the writer thread (PostgreSQL) changes the
        # sign-ins there while this runs on the event loop.
        for s in list(self.hub.engine.signins.by_no.values()):
            if s.sign_time <= now < s.ends:
                row = by_inst.get(s.fixmedins_code)
                if row is None:
                    row = by_inst[s.fixmedins_code] = [0, "", set()]
                row[0] += 1
                row[1] = max(row[1], s.sign_time)
                row[2].add(s.paasid)
        names = self._institutions()
        top = sorted(by_inst.items(), key=lambda kv: (-kv[1][0], kv[0]))[:SIGNIN_INSTITUTIONS_MAX]
        return {"institutions": len(by_inst), "sign_ins": sum(r[0] for r in by_inst.values()),
                "rows": [{"fixmedins_code": code, "name": names.get(code, ("", ""))[0],
                          "admdvs": names.get(code, ("", ""))[1], "sign_ins": n, "latest": latest,
                          "credentials": sorted(p or "(no credential)" for p in paasids)[:5]}
                         for code, (n, latest, paasids) in top]}

    # ------------------------------------------------------------ files and SQLite (a worker thread)

    def _from_disk(self) -> dict:
        store = self.hub.store
        data_dir = getattr(store, "data_dir", None)
        out: dict[str, Any] = {"store": {"data_dir": data_dir},
                               "world": {"present": False, "note": "the store records no world"},
                               "prepay": {"present": False, "note": "no store on disk: no journal to read"}}
        if data_dir is None:
            return out
        path = db_path(data_dir)
        out["store"].update(wal_bytes=_file_bytes(path + "-wal"), keys_wal_bytes=_file_bytes(keys_path(path) + "-wal"),
                            db_bytes=_file_bytes(path), keys_db_bytes=_file_bytes(keys_path(path)))
        try:
            du = shutil.disk_usage(data_dir)
            out["store"].update(disk_free_bytes=du.free, disk_total_bytes=du.total)
        except OSError as e:
            out["store"]["error"] = f"disk usage: {e}"[:300]
        with self._db_lock:
            try:
                if self._db is None:
                    self._db = open_db(data_dir)
                db = self._db
                db.execute("BEGIN")
                try:
                    out["store"]["journal_rows"] = db.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchall()[0][0]
                    last = db.execute("SELECT period, closed_at FROM closed_period ORDER BY period DESC LIMIT 1").fetchall()
                    out["store"]["last_closed"] = {"period": last[0][0], "closed_at": last[0][1]} if last else None
                    out["world"] = {"present": True, **world_of_store(db)}
                finally:
                    db.execute("COMMIT")
            except (ClearingError, sqlite3.Error) as e:
                out["store"]["error"] = str(e)[:300]
        prepay = self.hub.metrics.prepay
        if prepay is not None:
            out["prepay"] = self._prepay(prepay.monitor)
        return out

    @staticmethod
    def _prepay(monitor) -> dict:
        """Pre-payment usage by insured province (section 8), the warnings first."""
        try:
            rows = monitor.refresh(METRICS_REFRESH_S_MIN)
        except (ClearingError, sqlite3.Error) as e:
            return {"present": False, "note": f"pre-payment: {e}"[:300]}
        out = [{"prov": u.prov, "name": PROVINCE_NAMES_ZH.get(u.prov, ""), "name_en": PROVINCE_NAMES_EN.get(u.prov, ""),
                "deposit": money.format_fen(u.prepay_fen), "used": money.format_fen(u.used_fen),
                "usage_pct": None if u.ratio_bp is None else round(u.ratio_bp / 100, 2), "warning": u.warning}
               for u in rows]
        out.sort(key=lambda r: (not r["warning"], -(r["usage_pct"] or 0), r["prov"]))
        return {"present": True, "threshold_pct": monitor.warn_bp / 100, "rows": out,
                "warnings": sum(1 for r in out if r["warning"])}

    def close(self) -> None:
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None
