"""The commit path's writers: the batch writer's connection, the rows of a prepared batch, the compressor.

A commit is one transaction of the main file on a connection of its own
(core_ext._sqlw.Writer, or the sqlite3 module when that is unavailable); the
journal bodies of a batch are LZ4-compressed beside it by a Compressor thread.
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass

from core_ext import _sqlw
from core_ext._pack import Compression

from engine.store.errors import StoreFailed
from engine.store.files import connect
from engine.store.schema import WRITER_PRAGMAS

log = logging.getLogger("yidi.store")

COMPRESS_CHUNK_BODIES = 32  # journal bodies a thread claims at a time from a batch's Compression


class Compressor:
    """A thread that compresses journal bodies beside the writer (core_ext._pack.Compression).

    It needs the GIL only to be handed a batch: the chunks it claims are compressed
    without it, so it never waits for the engine's thread between chunks.
    """

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="yidi-compress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.work()

    def submit(self, job: Compression) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)
        self.thread.join()


class ModuleWriter:
    """The batch writer's interface on a sqlite3 module connection (when core_ext._sqlw is unavailable)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn  # of the main file only, like _sqlw.Writer's: a commit never locks the keyed file

    def prepare(self, sql: str) -> str:
        return sql

    def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    def executemany(self, sql: str, rows: list) -> None:
        self.conn.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def query_int(self, sql: str) -> int:
        return int(self.conn.execute(sql).fetchall()[0][0])

    def close(self) -> None:
        self.conn.close()


def batch_writer(path: str):
    """A connection of its own to the main file for the commits, through core_ext._sqlw if it can.

    Either way durable: a connection that does not take synchronous = FULL is refused (StoreFailed).
    """
    if _sqlw.available():
        w = _sqlw.Writer(path)
    else:
        log.warning("commits go through the sqlite3 module (slower): %s", _sqlw.UNAVAILABLE)
        w = ModuleWriter(connect(path, keys=False))
    try:
        for sql in WRITER_PRAGMAS:
            w.execute(sql)
        if w.query_int("PRAGMA synchronous") != 2 or w.query_int("PRAGMA wal_autocheckpoint") != 0:
            raise StoreFailed("the batch writer's connection did not take synchronous = FULL"
                              " and wal_autocheckpoint = 0")
    except BaseException:
        w.close()
        raise
    return w


@dataclass(slots=True)
class Prepared:
    """The rows of one batch, ready to write (SqliteStore.prepare)."""

    changes: list
    journal: list
    compression: Compression  # of the journal bodies; blob_rows() has the journal_blob rows
    persons: list
    chronic: list
    tail: list  # (msgid, seq, visit, setl_id in force or None, reversed setl_id or None)
    last_seq: int
    signs: list  # sign_in rows made or ended by the batch (engine.core.signin), in SIGN_IN_COLS order
    steps: list  # the batch's StepChanges (engine.core.records) and their `step` rows (engine.store.steps)
    step_rows: list
    replies_msgpack: dict  # id of a step reply -> its MessagePack bytes (engine.store.steps.step_rows)

    def blob_rows(self) -> list:
        """The journal_blob rows (seq, codec, LZ4 block, crc32 of the block), in seq order.

        This thread compresses the chunks the compressor thread has not claimed, then
        waits for the ones it is compressing.
        """
        rows = self.compression.rows()
        assert len(rows) == len(self.changes) and (
            not rows or (rows[0][0], rows[-1][0]) == (self.last_seq + 1 - len(rows), self.last_seq))
        return rows


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
