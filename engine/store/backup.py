"""`yidi backup --data DIR --out DIR`: a copy of a store, of one moment, while the hub writes to it.

A store is two SQLite files that belong together (engine.store.files): the
main file (journal, blobs, logs, meta) and the keyed file (the tables a fold
writes, holding the journal up to `fold_state.folded_seq`). open_store refuses
a pair that is not of one moment, so the two copies must be.

How. One read-only connection opens the main file, attaches the keyed file and
begins one read transaction. In WAL mode a reader sees a snapshot of each file,
fixed by its first read in the transaction, and never blocks the writer (nor a
fold). The main file is read first, then the keyed file; a fold that commits
between the two reads could leave the keyed file ahead of the journal, so the
pair is checked as open_store checks it (logs deleted <= folded <= journal
rows) and, should it not hold, the snapshots are taken again (at most
SNAPSHOT_ATTEMPTS_MAX times). SQLite's online backup API (sqlite3_backup_step,
`Connection.backup`) then copies each file's pages: it reads inside the
transaction already open, so from those very snapshots. The copies are written
under PARTIAL_SUFFIX names, fsynced, renamed and the folder synced: an
interrupted backup never leaves a file named like a store's.

The cost to the running hub: none to its commits or folds; the checkpointer
cannot recycle the WAL past the backup's snapshot while the copy runs, so the
main file's WAL grows by what is committed meanwhile (docs/store.md, "Backup").
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable

from engine.store.errors import StoreError
from engine.store.files import connect, db_path, keys_path, unreadable_hint
from engine.store.schema import DB_NAME, KEYS_NAME, STORE_FORMAT

SNAPSHOT_ATTEMPTS_MAX = 16  # read transactions tried before giving up on a pair of one moment
PARTIAL_SUFFIX = ".partial"  # a copy being written; renamed once whole and on disk


class BackupError(StoreError):
    """The backup cannot be made: a bad --data or --out, or the copy failed (nothing is left behind)."""


@dataclass(slots=True, frozen=True)
class BackupResult:
    out_dir: str
    files: tuple[str, ...]
    journal_rows: int  # the copy's journal ends at this seq
    folded_seq: int  # its keyed tables hold the journal up to here
    copied_bytes: int
    snapshot_attempts: int
    seconds: float


def check_paths(data_dir: str, out_dir: str) -> None:
    """Refuse, before anything is read or made: a --data that holds no store, an --out that exists and is
    not an empty folder, an --out inside --data, an --out whose parent folder does not exist."""
    if not os.path.isdir(data_dir):
        what = "a file, not a store's data folder" if os.path.exists(data_dir) else "no such folder"
        raise BackupError(f"--data {data_dir}: {what}")
    if not os.path.isfile(db_path(data_dir)):
        raise BackupError(f"--data {data_dir}: no store in it ({DB_NAME} is missing)")
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise BackupError(f"--out {out_dir}: exists and is not a folder")
        if os.listdir(out_dir):
            raise BackupError(f"--out {out_dir}: not empty; a backup goes into a new or empty folder")
    else:
        parent = os.path.dirname(os.path.abspath(out_dir))
        if not os.path.isdir(parent):
            raise BackupError(f"--out {out_dir}: its parent folder {parent} does not exist (not created: a typo, "
                              "or a share not mounted?)")
    data_real = os.path.realpath(data_dir)
    out_real = os.path.realpath(out_dir)
    if out_real == data_real or out_real.startswith(data_real.rstrip(os.sep) + os.sep):
        raise BackupError(f"--out {out_dir}: inside --data {data_dir}; a backup goes outside the store's folder")


def _snapshot(conn: sqlite3.Connection, path: str) -> tuple[int, int, int]:
    """Begin the read transaction that the copies are made in, on a pair of one moment.

    Returns (journal rows, folded_seq, attempts). The transaction stays open.
    """
    for attempt in range(1, SNAPSHOT_ATTEMPTS_MAX + 1):
        conn.execute("BEGIN")
        # The main file first (this fixes its snapshot), then the keyed file.
        meta = dict(conn.execute(
            "SELECT key, value FROM main.meta WHERE key IN ('store_id', 'logs_deleted_to')").fetchall())
        rows = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM main.journal").fetchall()[0][0]
        state = _keyed_state(conn)
        if [r[1] for r in state] != [meta.get("store_id")]:
            raise BackupError(f"{keys_path(path)}: not the keyed tables of the store {path}")
        folded = state[0][0]
        if int(meta.get("logs_deleted_to", 0)) <= folded <= rows:
            return rows, folded, attempt
        conn.execute("COMMIT")  # a fold committed between the two reads: take both again
    raise BackupError(f"{path}: no snapshot of both files of one moment in {SNAPSHOT_ATTEMPTS_MAX} attempts")


def _open_source(path: str) -> sqlite3.Connection:
    """A read-only connection to the store's main file, its keyed file attached once the main file is known
    to be a yidi store's."""
    conn = connect(path, read_only=True, keys=False)
    try:
        try:
            fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchall()
        except sqlite3.DatabaseError as e:
            if (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_CANTOPEN:
                raise BackupError(f"{path}: cannot be opened ({e}){unreadable_hint(path)}") from None
            raise BackupError(f"{path}: not a yidi store ({e})") from None
        if fmt != [(STORE_FORMAT,)]:
            raise BackupError(f"{path}: an SQLite file, but not a yidi store")
        kpath = keys_path(path)
        if not os.path.isfile(kpath):
            raise BackupError(f"{kpath}: the keyed tables' file of the store is missing")
        conn.execute("ATTACH DATABASE ? AS keys", (f"file:{kpath}?mode=ro",))
    except BaseException:
        conn.close()
        raise
    return conn


def _keyed_state(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """fold_state of the keyed file: this read fixes its snapshot (a function of its own: the tests put a
    fold between the two reads)."""
    return conn.execute("SELECT folded_seq, store_id FROM keys.fold_state").fetchall()


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_store(data_dir: str, out_dir: str, *, on_snapshot: Callable[[int, int], None] | None = None
                 ) -> BackupResult:
    """Copy the store in `data_dir` into `out_dir` (new, or empty), both files of one moment (module docstring).

    Runs beside a hub writing to the store; takes no lock. Raises BackupError, leaving no file behind.
    on_snapshot(journal_rows, folded_seq) is called once the snapshot is taken, before the copy (tests).
    """
    t0 = time.perf_counter()
    check_paths(data_dir, out_dir)
    path = db_path(data_dir)
    made_out = not os.path.exists(out_dir)
    names = ((DB_NAME, "main"), (KEYS_NAME, "keys"))
    partials = [os.path.join(out_dir, n + PARTIAL_SUFFIX) for n, _ in names]
    finals = [os.path.join(out_dir, n) for n, _ in names]
    conn = None
    try:
        try:
            conn = _open_source(path)
            rows, folded, attempts = _snapshot(conn, path)
            if on_snapshot is not None:
                on_snapshot(rows, folded)
        except sqlite3.DatabaseError as e:
            raise BackupError(f"{path}: cannot be read as a store ({e}){unreadable_hint(path)}") from None
        try:
            if made_out:
                os.mkdir(out_dir)
            for part, (_, schema) in zip(partials, names):
                dst = sqlite3.connect(part, isolation_level=None)
                try:
                    conn.backup(dst, name=schema)
                finally:
                    dst.close()
            conn.execute("COMMIT")
            left = sorted(set(os.listdir(out_dir)) - {os.path.basename(p) for p in partials})
            if left:  # a copy's journal or WAL left over would mean it is not whole
                raise BackupError(f"--out {out_dir}: unexpected files after the copy: {', '.join(left)}")
            for part, final in zip(partials, finals):
                _fsync(part)
                os.rename(part, final)
            _fsync(out_dir)
            if made_out:
                _fsync(os.path.dirname(os.path.abspath(out_dir)))
        except (OSError, sqlite3.Error) as e:
            raise BackupError(f"--out {out_dir}: the copy failed ({getattr(e, 'strerror', None) or e}); "
                              "nothing is left there") from None
    except BaseException:
        _remove_partial(out_dir, partials + finals, made_out)
        raise
    finally:
        if conn is not None:
            conn.close()
    size = sum(os.path.getsize(f) for f in finals)
    return BackupResult(out_dir, tuple(finals), rows, folded, size, attempts, time.perf_counter() - t0)


def _remove_partial(out_dir: str, files: list[str], made_out: bool) -> None:
    """What a failed backup wrote, and the folder if it made it."""
    for f in files:
        for g in (f, f + "-journal", f + "-wal", f + "-shm"):
            try:
                os.remove(g)
            except OSError:
                pass
    if made_out:
        try:
            os.rmdir(out_dir)
        except OSError:
            pass
