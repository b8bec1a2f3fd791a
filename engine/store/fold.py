"""Folding the journal tail into the keyed tables, and checkpointing the WAL, each on a thread of its own.

The keyed views of the journal (`msgid_index`, `reversal`, `open_visit`,
`medins_time`) and the current rows (`person`, `chronic`, `account`) are brought
up to date from the journal and the logs by a fold (fold_range): one transaction
of set-based, sorted statements (schema.SQL_FOLD) that touches each page once.
They live in the keyed file, and a fold writes nothing else: SQLite locks each
file on its own, so the commits, which write only the main file, go on while a
fold runs. The Folder runs the folds the writer starts; the Checkpointer copies
the main file's WAL into the database file beside the commits.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from typing import Callable

from engine.store.errors import StoreFailed
from engine.store.files import connect, writer_setup
from engine.store.schema import SQL_FOLD

log = logging.getLogger("yidi.store")

CHECKPOINT_INTERVAL_S = 1.0  # the checkpointer copies the WAL at most this often while it is short
WAL_CHASE_BYTES = 64 << 20  # a WAL this long is checkpointed after every commit until it starts over
CHECKPOINT_NICE = 19  # nice value of the checkpointer thread
FOLD_NICE = 5  # nice value of the folder thread: below the engine's, enough to keep up at saturation
FOLD_MAIN_CACHE_KIB = 16_384  # the folder's page cache of the main file


def fold_range(conn: sqlite3.Connection, m: int, h: int) -> None:
    """The journal rows m < seq <= h into the keyed tables, in one transaction of the keyed file.

    It reads the main file, which the commits may grow meanwhile, and never writes
    it; the keyed tables must be folded up to m exactly (fold_state), else StoreFailed.
    """
    conn.execute("BEGIN")  # deferred: only the keyed file's write lock is taken (by the first INSERT)
    try:
        for sql in SQL_FOLD:
            conn.execute(sql, {"m": m, "h": h})
        if conn.execute("SELECT changes()").fetchall()[0][0] != 1:
            raise StoreFailed(f"fold {m}..{h}: the keyed tables are not folded up to {m}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def lower_priority(nice: int, who: str) -> None:
    """This thread's nice value (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as e:
        log.info("%s keeps the normal priority (%s)", who, e)


class Checkpointer:
    """Copies the WAL into the database file on its own thread and connection (PASSIVE checkpoints).

    A commit then only appends to the WAL and fsyncs it; the checkpoint's writes
    and fsync of the database file overlap the next commits. Every commit wakes
    it; while the WAL is shorter than WAL_CHASE_BYTES it rests
    CHECKPOINT_INTERVAL_S between passes, once longer it makes a pass per commit
    until one catches up and the WAL starts over. It runs at the lowest CPU
    priority. (By the WAL file's size instead: the file keeps its high-water mark
    when the WAL starts over, and woke it after nearly every commit.) The writer
    checkpoints itself, waiting, should the WAL file ever pass WAL_BYTES_MAX.
    """

    def __init__(self, path: str):
        self.conn = connect(path, keys=False)  # the main file; the folder checkpoints the keyed one
        self.conn.execute("PRAGMA synchronous = FULL")
        self.page_size = self.conn.execute("PRAGMA page_size").fetchall()[0][0]
        self.wake = threading.Event()
        self._stopped = threading.Event()
        self.stopping = False
        self.checkpoints = 0
        self.thread = threading.Thread(target=self._run, name="yidi-checkpoint", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # Lowest CPU priority: copying pages must not take the core from the engine when they share one.
        lower_priority(CHECKPOINT_NICE, "checkpointer")
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.stopping:
                return
            rest = False
            try:
                _, frames, _ = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
                self.checkpoints += 1
                # frames: the WAL's length when this pass began. The WAL starts over
                # only at a commit that finds every frame copied, which a pass while
                # commits keep coming rarely leaves: once it is long, chase (a pass
                # per commit, each copying what the last commits added) until it
                # starts over; while it is short, rest between passes.
                rest = 0 <= frames * self.page_size < WAL_CHASE_BYTES
            except sqlite3.Error as e:  # harmless: the WAL keeps everything; the writer's limit still holds
                log.warning("background checkpoint failed: %s", e)
            if rest and self._stopped.wait(CHECKPOINT_INTERVAL_S):  # a rate limit; stop() ends it at once
                return

    def stop(self) -> None:
        self.stopping = True
        self._stopped.set()
        self.wake.set()
        self.thread.join()
        self.conn.close()


class Folder:
    """Folds a sealed generation of the journal tail on its own thread and connection (`fold`: the store's,
    which runs fold_range and then forgets the generation).

    A fold writes only the keyed file, so the commits, which write only the main
    file, go on meanwhile; the fold reads the journal and the logs on a snapshot.
    It runs below the engine's CPU priority. The writer starts one fold at a time
    (start) and waits for the last one (wait) before it seals the next generation:
    RAM holds at most two generations. A failed fold fails the store.
    """

    def __init__(self, path: str, fold: Callable[[sqlite3.Connection, int, int], None]):
        self.fold = fold
        self.conn = connect(path)
        writer_setup(self.conn, path, new=False)
        self.conn.execute(f"PRAGMA main.cache_size = -{FOLD_MAIN_CACHE_KIB}")  # it reads each journal row once
        self.error: BaseException | None = None
        self.folds = 0
        self._job: tuple[int, int] | None = None
        self._stopping = False
        self._cv = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="yidi-fold", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        lower_priority(FOLD_NICE, "folder")
        while True:
            with self._cv:
                while self._job is None and not self._stopping:
                    self._cv.wait()
                if self._job is None:
                    return
                m, h = self._job
            try:
                self.fold(self.conn, m, h)
                self.folds += 1
                try:
                    self.conn.execute("PRAGMA keys.wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:  # harmless: the next fold's pass copies it
                    log.warning("checkpoint of the keyed file failed: %s", e)
            except BaseException as e:
                log.error("fold of journal rows %d..%d failed: %r", m + 1, h, e)
                self.error = e
            with self._cv:
                self._job = None
                self._cv.notify_all()

    def start(self, m: int, h: int) -> None:
        with self._cv:
            assert self._job is None and not self._stopping
            self._job = (m, h)
            self._cv.notify_all()

    def wait(self) -> None:
        """Until the fold started last has ended; StoreFailed if it failed."""
        with self._cv:
            while self._job is not None:
                self._cv.wait()
        if self.error is not None:
            raise StoreFailed(f"a fold failed ({self.error!r}); the process must stop") from self.error

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self.thread.join()
        self.conn.close()


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
