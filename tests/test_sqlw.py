"""core_ext._sqlw: the store's batch writer, against the sqlite3 module on real files."""
from __future__ import annotations

import sqlite3
import sys
import threading
import time

import pytest

from core_ext import _sqlw
from engine.store import files as store_files
from engine.core.engine import Request
from engine.store import open_store

TABLE = "CREATE TABLE t (k INTEGER PRIMARY KEY, i INTEGER, s TEXT, b BLOB, n)"
INSERT = "INSERT INTO t VALUES (?, ?, ?, ?, ?)"


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "w.sqlite3")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(TABLE)
    w = _sqlw.Writer(path)
    yield path, conn, w
    w.close()
    conn.close()


def test_the_module_sqlite_is_used():
    # Resolved from the library the sqlite3 module loaded, so they share their locks.
    assert _sqlw.available(), _sqlw.UNAVAILABLE


def test_values_read_back_exactly(db):
    path, conn, w = db
    k = w.prepare(INSERT)
    rows = [
        (1, 0, "", b"", None),
        (2, -(2**63), "医保 結算 ✓", b"\x00\x01\xff" * 100, None),
        (3, 2**63 - 1, "P42110000338466", bytes(range(256)), 7),
        (4, None, "a\x00b", None, "x"),
    ]
    w.execute("BEGIN IMMEDIATE")
    assert w.in_transaction
    assert w.executemany(k, rows) == 4
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0  # not committed: not visible
    w.execute("COMMIT")
    assert not w.in_transaction
    assert conn.execute("SELECT * FROM t ORDER BY k").fetchall() == rows
    assert conn.execute("SELECT typeof(i), typeof(s), typeof(b) FROM t WHERE k = 3").fetchone() == (
        "integer", "text", "blob")


def test_bad_values_refused_before_anything_is_inserted(db):
    path, conn, w = db
    k = w.prepare(INSERT)
    good = (1, 1, "a", b"b", None)
    w.execute("BEGIN IMMEDIATE")
    with pytest.raises(TypeError, match="row 1, value 2: float"):
        w.executemany(k, [good, (2, 1.5, "a", b"b", None)])
    with pytest.raises(TypeError, match="row 0: a tuple of 5 values"):
        w.executemany(k, [(1, 2, 3)])
    with pytest.raises(TypeError, match="row 1: a tuple of 5"):
        w.executemany(k, [good, [2, 1, "a", b"b", None]])
    with pytest.raises(OverflowError):
        w.executemany(k, [good, (2, 2**63, "a", b"b", None)])
    w.execute("COMMIT")
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


def test_constraint_error_names_the_row_and_rolls_back(db):
    path, conn, w = db
    k = w.prepare(INSERT)
    w.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.IntegrityError, match="row 2: UNIQUE constraint failed"):
        w.executemany(k, [(1, 1, "a", None, None), (2, 1, "a", None, None), (1, 9, "b", None, None)])
    assert w.in_transaction
    w.execute("ROLLBACK")
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    # The statement is usable again after the failure.
    w.execute("BEGIN IMMEDIATE")
    w.executemany(k, [(5, 5, "e", None, None)])
    w.execute("COMMIT")
    assert conn.execute("SELECT k FROM t").fetchall() == [(5,)]


def test_errors_and_closed_writer(db):
    path, conn, w = db
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        w.prepare("INSERT INTO nowhere VALUES (?)")
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        w.execute("COMMIT TO NOWHERE")
    with pytest.raises(IndexError):
        w.executemany(3, [(1,)])
    assert w.query_int("PRAGMA page_size") == conn.execute("PRAGMA page_size").fetchone()[0]
    w.close()
    with pytest.raises(sqlite3.ProgrammingError):
        w.execute("BEGIN")
    with pytest.raises(sqlite3.OperationalError):
        _sqlw.Writer(str(db[0]) + ".missing/x")


def test_writer_and_module_connection_share_the_write_lock(db):
    path, conn, w = db
    k = w.prepare(INSERT)
    conn.execute("BEGIN IMMEDIATE")  # the sqlite3 module's connection holds the write lock
    w2 = _sqlw.Writer(path, busy_timeout_ms=50)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        w2.execute("BEGIN IMMEDIATE")
    conn.execute("ROLLBACK")
    w2.close()
    # And the other way round, while this writer's transaction is open.
    w.execute("BEGIN IMMEDIATE")
    w.executemany(k, [(1, 1, "a", None, None)])
    other = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")
    w.execute("COMMIT")
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()


def test_executemany_releases_the_gil(db):
    """Another thread runs Python while executemany steps its rows.

    Only the thread holding the GIL reads the clock here, so a reading of the other
    thread's between this thread's readings just before and just after the call
    shows the call released the GIL (the order of two events, not a duration).
    """
    path, conn, w = db
    k = w.prepare(INSERT)
    rows = [(i, i, "x" * 200, b"y" * 200, None) for i in range(1, 50_001)]
    clock = time.perf_counter_ns
    started, done = threading.Event(), threading.Event()
    stamps: list[int] = []

    def other():
        started.set()
        while not done.is_set():
            stamps.append(clock())

    def stamps_within(func, *args) -> int:
        started.clear()
        t = threading.Thread(target=other)
        t.start()
        started.wait()
        # Taken back from the other thread just now, the GIL stays here until this
        # thread releases it or the switch interval has passed (far longer than this).
        t0 = clock()
        func(*args)
        t1 = clock()
        done.set()
        t.join()
        done.clear()
        n = sum(t0 < x < t1 for x in stamps)
        stamps.clear()
        return n

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.2)
    try:
        w.execute("BEGIN IMMEDIATE")
        assert stamps_within(w.executemany, k, rows) > 0
        w.execute("COMMIT")
        # The check itself: a C call that keeps the GIL lets no reading in.
        assert stamps_within(sorted, range(100_000)) == 0
    finally:
        sys.setswitchinterval(interval)
    assert conn.execute("SELECT COUNT(*), SUM(i) FROM t").fetchone() == (50_000, 50_000 * 50_001 // 2)


def _rows(data: str, tables: tuple) -> list:
    conn = store_files.connect(store_files.db_path(data))
    try:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables]
    finally:
        conn.close()


def test_store_writes_the_same_rows_through_the_sqlite3_module(tmp_path, monkeypatch):
    """The fallback (a Python whose _sqlite3 hides SQLite) commits exactly the same rows."""
    import orjson

    from engine.tools.synth import gen_requests, gen_world

    world_dir = str(tmp_path / "world")
    gen_world(world_dir, seed=5, provinces=2, catalogue_per_province=400, persons=300)
    bodies = [orjson.dumps(e) for e in gen_requests(world_dir, 600, seed=6)]
    logs, folded = [], []
    for fast in (True, False):
        monkeypatch.setattr(_sqlw, "available", lambda fast=fast: fast)
        data = str(tmp_path / f"data_{fast}")
        with open_store(data, world_dir, clock="inf_time", fold_rows=1_000_000) as st:
            assert isinstance(st._bw, _sqlw.Writer) == fast
            for i in range(0, len(bodies), 50):
                st.engine.handle_batch([Request(b) for b in bodies[i:i + 50]])
                st.commit(st.engine.take_changes())
            logs.append(_rows(data, ("journal", "journal_blob", "person_log", "chronic_log")))
        folded.append(_rows(data, ("person", "chronic", "account", "msgid_index", "open_visit")))
    assert len(logs[0][0]) > 300 and logs[0][2] and logs[0][3]
    assert logs[0] == logs[1]
    assert folded[0] == folded[1]
