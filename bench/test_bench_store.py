"""Store benchmark: commit throughput with full durability, side by side with raw SQLite inserts of the same rows.

A synthetic world (1,000,000 persons at YIDI_BENCH_SCALE=1) and a synthetic
request stream go through the engine; the settlements and reversals of each
batch ("mixed": outpatient, inpatient, chronic, reversals, as engine.tools.synth
draws them) are committed by SqliteStore.commit (prepare: rows, LZ4, ledger;
write: one transaction, WAL fsync with synchronous=FULL). The peer inserts the
very rows that the store's prepare produced into plain tables of the same
shape (no keys but the rowid), one transaction per batch, same pragmas: the
ceiling for those bytes on this disk. Both are timed per commit; only commits
are timed, never the engine. Batches of 1, 64 and 1,024 settlements.

The store builds each change's journal row and body as the engine makes it
(Engine.on_change, while the change's objects are still in the CPU's caches),
inside handle_batch: that time is measured apart (time_rows) and added to the
commit's, counted as prepare.

The fold (the keyed tables brought up to date, SqliteStore.fold) is measured
apart, amortised per settlement.

Garbage collection as `yidi serve` and `yidi replay` run it (engine.core.collect):
the automatic collector off, the young generations collected between batches
at most once a second. The engine's garbage is collected before the commit, not
timed; the collections due after commits are timed with them, for both peers.
(With the automatic collector on, its full passes over the engine's objects
cost the store about 10 us per settlement at batch 1,024.)

    YIDI_BENCH_SCALE=1 pytest bench/test_bench_store.py --benchmark-enable -o addopts="" -s
"""
from __future__ import annotations

import datetime
import gc
import os
import sqlite3
import time

import orjson
import pytest

from engine.core.collect import Collector
from engine.core.engine import Request
from engine.store import open_store
from engine.store.schema import PAGE_BYTES, SCHEMA, schema_statements

SCALE = float(os.environ.get("YIDI_BENCH_SCALE", "0.02"))
PERSONS = max(2_000, int(1_000_000 * SCALE))
CATALOGUE_PER_PROVINCE = max(1_000, int(50_000 * SCALE))
# Commits timed per batch size: about 40,000 settlements at 1,024 at full scale.
ROUNDS = {1: max(20, int(2_000 * SCALE)), 64: max(3, int(300 * SCALE)), 1024: max(2, int(40 * SCALE))}
REQUESTS_CHUNK = 4_096
RESULTS: dict = {}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    from engine.tools.synth import gen_world

    d = str(tmp_path_factory.mktemp("bench_store_world"))
    gen_world(d, seed=21, provinces=4, catalogue_per_province=CATALOGUE_PER_PROVINCE, persons=PERSONS)
    return d


class Feed:
    """Requests from engine.tools.synth, handled by a store's engine until a batch holds `size` changes."""

    def __init__(self, store, world_dir: str, seed: int):
        self.store, self.world_dir, self.seed = store, world_dir, seed
        self.bodies: list[bytes] = []
        self.pos = 0
        self.chunks = 0

    def _more(self) -> None:
        from engine.tools.synth import gen_requests

        self.chunks += 1
        # Each chunk two days after the last: times keep rising, and msgids (which
        # carry the day) stay unique while the chunk's reversals still name its settlements.
        start = (datetime.date(2026, 1, 1) + datetime.timedelta(days=2 * self.chunks)).isoformat()
        assert start < "2026-12-01", "too many chunks for one year"
        envs = gen_requests(self.world_dir, REQUESTS_CHUNK, seed=self.seed * 1000 + self.chunks, start=start)
        self.bodies = [orjson.dumps(e) for e in envs]
        self.pos = 0
        gc.collect()

    def batch(self, size: int) -> list:
        eng = self.store.engine
        changes: list = []
        while len(changes) < size:
            if self.pos >= len(self.bodies):
                self._more()
            take = self.bodies[self.pos : self.pos + (size - len(changes))]
            self.pos += len(take)
            eng.handle_batch([Request(b) for b in take])
            changes += eng.take_changes()
        return changes


RAW_TABLES = ("journal", "journal_blob", "person_log", "chronic_log")


def _raw_db(path: str) -> sqlite3.Connection:
    """Plain tables with the store's columns: rowid only, no other key, no index."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {PAGE_BYTES}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for stmt in schema_statements(SCHEMA):
        stmt = stmt.strip()
        name = stmt.split("(")[0].split()[-1] if stmt.startswith("CREATE TABLE") else None
        if name in RAW_TABLES:
            cols = [c.strip().split()[0] for c in stmt[stmt.index("(") + 1 : stmt.rindex(")")].split(",\n")
                    if c.strip() and not c.strip().startswith(("PRIMARY", "UNIQUE"))]
            conn.execute(f"CREATE TABLE {name} ({', '.join(cols)})")
    return conn


def _raw_insert(conn: sqlite3.Connection, p) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for name, rows in (("journal", p.journal), ("journal_blob", p.blob_rows()), ("person_log", p.persons),
                       ("chronic_log", p.chronic)):
        if rows:
            conn.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    conn.execute("COMMIT")


def _report(key: str, n: int, seconds: float, benchmark) -> None:
    rate = n / seconds
    RESULTS[key] = rate
    benchmark.extra_info["settlements"] = n
    benchmark.extra_info["settlements_per_s"] = round(rate)
    print(f"\n{key}: {n} settlements in {seconds:.3f} s of commits: {rate:,.0f} settlements/s")


def time_rows(store) -> list:
    """Time the store's row building, which runs as the engine makes each change (Engine.on_change).

    It is part of a commit's cost even though it runs inside handle_batch: the
    returned box accumulates its seconds, and the benchmarks add them to the
    commits they time.
    """
    hook = store.engine.on_change
    box = [0.0]
    clock = time.perf_counter

    def timed(change) -> None:
        t0 = clock()
        hook(change)
        box[0] += clock() - t0

    store.engine.on_change = timed
    return box


@pytest.mark.parametrize("size", [1, 64, 1024])
@pytest.mark.parametrize("peer", ["store", "raw_sqlite"])
def test_commit_throughput(benchmark, tmp_path, world_dir, peer, size):
    store = open_store(str(tmp_path / "data"), world_dir, clock="inf_time", verify="header",
                       fold_rows=4_194_304)
    feed = Feed(store, world_dir, seed=size)
    raw = _raw_db(str(tmp_path / "raw.sqlite3")) if peer == "raw_sqlite" else None
    timed = [0, 0.0, 0.0]  # settlements, seconds, of which in prepare (row building included)
    collector = Collector()
    rows_s = time_rows(store)

    def setup():
        rows_s[0] = 0.0
        changes = feed.batch(size)
        if raw is None:
            gc.collect(1)  # the engine's garbage, not timed
            timed[1] += rows_s[0]  # the rows of these changes, built as the engine made them
            timed[2] += rows_s[0]
            return (changes,), {}
        prepared = store.prepare(changes)
        store.write(prepared)  # keeps the feeding store consistent; not timed
        gc.collect(1)
        return (prepared,), {}

    def target(arg):
        t0 = time.perf_counter()
        if raw is None:
            prepared = store.prepare(arg)  # store.commit(arg), timed in its two halves
            timed[2] += time.perf_counter() - t0
            store.write(prepared)
        else:
            _raw_insert(raw, arg)
        collector.after_batch()  # as the server collects between batches (engine.core.collect)
        timed[1] += time.perf_counter() - t0
        timed[0] += len(arg) if raw is None else len(arg.changes)

    gc.collect()
    gc.disable()
    try:
        benchmark.pedantic(target, setup=setup, rounds=ROUNDS[size], iterations=1, warmup_rounds=0)
        _report(f"{peer} batch {size}", timed[0], timed[1], benchmark)
        if raw is None:
            us = timed[2] / timed[0] * 1e6
            benchmark.extra_info["prepare_us_per_settlement"] = round(us, 1)
            print(f"  of which prepare {us:.1f} us and write {(timed[1] - timed[2]) / timed[0] * 1e6:.1f} us"
                  " per settlement")
    finally:
        gc.enable()
        if raw is not None:
            raw.close()
        store.close()


def test_fold_cost(benchmark, tmp_path, world_dir):
    """The fold of ROUNDS[1024] batches of 1,024, per settlement, and commit throughput with it included."""
    store = open_store(str(tmp_path / "data"), world_dir, clock="inf_time", verify="header",
                       fold_rows=4_194_304)
    feed = Feed(store, world_dir, seed=77)
    commit_s = 0.0
    n = 0
    collector = Collector()
    rows_s = time_rows(store)
    gc.collect()
    gc.disable()
    try:
        for _ in range(ROUNDS[1024]):
            rows_s[0] = 0.0
            changes = feed.batch(1024)
            gc.collect(1)
            t0 = time.perf_counter()
            store.commit(changes)
            collector.after_batch()
            commit_s += time.perf_counter() - t0 + rows_s[0]
            n += len(changes)
        t0 = time.perf_counter()
        folded = benchmark.pedantic(store.fold, rounds=1, iterations=1)
        fold_s = time.perf_counter() - t0
        assert folded == n
        benchmark.extra_info["fold_us_per_settlement"] = round(fold_s / n * 1e6, 1)
        rate = n / (commit_s + fold_s)
        benchmark.extra_info["settlements_per_s_with_fold"] = round(rate)
        print(f"\nfold: {n} settlements folded in {fold_s:.3f} s ({fold_s / n * 1e6:.1f} us each);"
              f" batch 1024 with the fold included: {rate:,.0f} settlements/s")
    finally:
        gc.enable()
        store.close()
