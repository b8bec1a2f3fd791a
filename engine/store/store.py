"""The durable store: SQLite in WAL mode with synchronous=FULL (docs/contract.md sections 7-9).

    store = open_store(data_dir, world_dir, clock="wall")
    replies = store.engine.handle_batch(requests)
    store.commit(store.engine.take_changes())   # durable when it returns
    ...                                           # only now release the replies
    store.close()

The store's parts, one concept a module: its files, locks and refusals
(files), the SQL (schema), seeding from and restoring the world (seed), the
journal rows and bodies (codec), the history lookups the engine is built with
(lookups, recon), the batch writer (writer), and the fold and checkpointer
threads (fold). This module ties them together.

Start and restart. A new (absent or empty) folder is seeded from the world; an
existing store is opened as it is, the dynamic state from the store and the
rest reloaded from the world folder (engine.store.seed), which must be the
store's own world or that world plus additions (applied as a running hub's
reload is, record_world): a folder that lacks persons or institutions the store
holds is refused unless the operator accepts the change. A damaged, truncated,
foreign or busy store is refused with StoreRefused, never reset; open_store
either returns a durable store or raises a StoreError naming the problem.

The engine. The store builds its Engine with its own history
(engine.core.history): lookups that read what the store committed, and a change
sink (codec.JournalRows) that numbers each change and builds its journal row as
the engine makes it. The engine never imports the store.

Commit: one transaction per batch, and only appends. A batch writes one
`journal` row per settlement or reversal (its clearing and reconciliation
columns, money in integer fen) and one `journal_blob` row (the request's raw
input and the reply, LZ4-compressed), and the accumulators after the batch of
every person and chronic slot it touched, read through the engine's
person_accumulators and chronic_accumulators (`person_log`, `chronic_log`). The
double-entry postings of section 8 are the journal row's own columns, seen as
rows through the `posting` view (the legs engine.core.ledger derives; `yidi
check` compares them): writing them again as rows of their own cost a fifth of
the commit. Every one of these tables is keyed by the journal sequence number,
so a commit writes pages at the end of each B-tree and nowhere else: random
updates of a million person rows or of a msgid index would each dirty a page
per settlement and cost more than the rest of the commit together. The commit
returns once SQLite has fsynced the WAL. A failing commit raises StoreFailed and
the store refuses every later commit: the engine in memory is then ahead of the
disk; the caller must stop and restart from the store.

Fold (engine.store.fold). Once `fold_rows` journal rows are unfolded, the writer
seals them and a folder thread (its own connection, below the engine's CPU
priority) folds them into the keyed file in the background; the next
generation waits for it only if it fills before the fold ends. A fold also runs
inline at open, at close and by `fold()`. The logs a fold covered are deleted
by the following commits, a few thousand seqs each; a log row left at or below
`folded_seq` (a crash between) changes nothing, since logs hold absolute
values. Until folded, the unfolded rows are indexed in RAM (two generations at
most: lookups.Tail). The keyed file is seeded before the main one: a main file
with tables means a whole seed, and the two files carry the same `store_id`.

Pipelining. `commit(changes)` is `write(prepare(changes))`. `prepare` reads the
engine's accumulators, so it must run on the engine's thread right after the
batch, before the next `handle_batch`; `write` may run on one writer thread
while the engine handles the next batch. Writes must come in the order of the
batches.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import os
import sqlite3
import threading
import time

import numpy as np

from core_ext._pack import Compression

from engine.core.engine import Engine
from engine.core.records import CHANGE_REVERSE, CHANGE_SETTLE, Change
from engine.store.codec import ROW_CD_SLOT, ROW_PSN, JournalRows, check_reply_keys
from engine.store.errors import StoreError, StoreFailed, StoreRefused
from engine.store.files import (
    check_opened, db_path, keys_path, lock_data_dir, open_files, refuse_sqlite, remove_made_folder,
)
from engine.store.fold import Checkpointer, Folder, fold_range
from engine.store.lookups import (
    JournalMap, OpenVisits, Reader, SettledMap, StoreHistory, Tail, build_filters, filters_over_capacity,
)
from engine.store.recon import StoredReconIndex
from engine.store.schema import AMOUNT_KEYS, INFO_KEYS, SQL_INSERTS, delete_logs
from engine.store.seed import (
    chronic_withdrawn, note_world_changes, record_reload, restore_sign_ins, restore_world, seed_store, undo_cut_reload,
    filing_rows, world_meta,
)
from engine.store.steps import StepJournalMap, restore_effects, step_rows
from engine.store.writer import COMPRESS_CHUNK_BODIES, Compressor, Prepared, batch_writer
from engine.world.loader import World, load_world
from engine.world.merge import MergeRefused, merge_world

log = logging.getLogger("yidi.store")

# Limits (STYLE.md: a limit on everything).
COMMIT_CHANGES_MAX = 65_536  # settlements and reversals in one commit
FOLD_ROWS_DEFAULT = 262_144  # unfolded journal rows before a fold: bounds the RAM tail index
FOLD_ROWS_MAX = 4_194_304
LOG_DELETE_SEQS = 4_096  # journal seqs whose folded person and chronic logs one commit deletes, at most
WAL_BYTES_MAX = 1 << 30  # WAL size at which the writer checkpoints itself, waiting
VERIFY_MODES = ("quick", "header")


class SqliteStore:
    """The embedded store on SQLite; see the module docstring. Use open_store()."""

    def __init__(self, data_dir: str, world_dir: str, *, clock: str = "wall", verify: str = "quick",
                 fold_rows: int = FOLD_ROWS_DEFAULT, accept_world_change: bool = False):
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}")
        if not 1 <= fold_rows <= FOLD_ROWS_MAX:
            raise ValueError(f"fold_rows must be within [1, {FOLD_ROWS_MAX}]")
        self.data_dir = data_dir
        self.path = db_path(data_dir)
        self.fold_rows = fold_rows
        self.failed = False
        self.fold_s_total = 0.0  # seconds spent folding since open (metrics)
        self._write_lock = threading.Lock()
        self._lock_fd = -1
        self._w: sqlite3.Connection | None = None
        self._bw = None  # the batch writer (writer.batch_writer): every commit goes through it
        self._stmts: tuple = ()
        self._reader: Reader | None = None
        self._history: StoreHistory | None = None
        self._rows: JournalRows | None = None
        self._checkpointer: Checkpointer | None = None
        self._folder: Folder | None = None
        self._tail = Tail()
        self._folded_seq = 0  # the keyed tables hold the journal up to here (set by the folds)
        self._logs_deleted = 0  # the logs up to here are deleted
        # A second core compresses journal bodies while the writer inserts the rest.
        self._compressor = Compressor() if len(os.sched_getaffinity(0)) > 1 else None
        try:
            self._open(world_dir, clock, verify, accept_world_change)
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------ open

    def _open(self, world_dir: str, clock: str, verify: str, accept_world_change: bool) -> None:
        made = not os.path.isdir(self.data_dir)
        self._lock_fd = lock_data_dir(self.data_dir)
        try:
            world = load_world(world_dir)  # before the files: a bad world leaves no half-made store behind
        except BaseException:
            if made:
                remove_made_folder(self.data_dir)
            raise
        self._w, seeded_now, meta = open_files(self.path)
        reload_due = None  # the institution codes of the last start, when the folder's additions are to be applied
        if seeded_now:
            log.info("seeding a new store in %s from the world %s", self.data_dir, world_dir)
            seed_store(self._w, world, world_dir)
        else:
            check_opened(self._w, self.path, meta, verify)
            undo_cut_reload(self._w, self.data_dir)
            reload_due = note_world_changes(self._w, self.data_dir, world, world_dir, accept=accept_world_change)
        self._reader = Reader(self.path, self._tail)
        self._checkpointer = Checkpointer(self.path)
        try:
            self._bw = batch_writer(self.path)
            self._stmts = tuple(self._bw.prepare(sql) for sql in SQL_INSERTS)
        except sqlite3.DatabaseError as e:
            raise refuse_sqlite(self.path, e) from None
        try:
            self._read_positions()
            self._fold_inline()
            build_filters(self._w, self._tail, self._reader)
            self._folder = Folder(self.path, self._fold_range)
            # Just seeded, the store holds exactly the world's persons: no need to read them back.
            cd_years = None
            if reload_due is not None:
                self._reload_at_open(world, world_dir, reload_due)
            if not seeded_now:
                world, cd_years = restore_world(self._w, world)
            self.engine = self._engine(world, clock, cd_years, chronic_withdrawn(self._w))
            self.engine.signins.restore(restore_sign_ins(self._w, clock))
            self.engine.signins.events = []  # this store takes them (prepare)
            self._history.step_journal.restore(restore_effects(self._w, self.engine.apply_effect))
            self.engine.step_changes = []  # this store takes them (prepare)
        except sqlite3.DatabaseError as e:
            raise refuse_sqlite(self.path, e) from None
        # The world and the engine live as long as the process: keep the collector
        # from scanning them again and again (the commit path allocates many tuples).
        gc.collect()
        gc.freeze()

    def _reload_at_open(self, folder: World, world_dir: str, inst_before: frozenset) -> None:
        """The store's world plus the folder's additions (note_world_changes): merged and recorded as a running
        hub's reload is (engine.world.merge, record_world), so that the store is then as after a start with its
        own world and a reload of this folder. `inst_before`: the institution codes of the last start."""
        held, _ = restore_world(self._w, folder)
        try:
            merge = merge_world(held, folder, chronic_withdrawn(self._w))
        except MergeRefused as e:
            raise StoreRefused(f"{self.data_dir}: the world {world_dir}: {e}") from None
        # `held` has the folder's institutions (restore_world): the ones added are counted against the last start's.
        added = len(set(folder.inst_code) - inst_before)
        self.record_world(dataclasses.replace(merge, counts={**merge.counts, "institutions_added": added}), world_dir)

    def _read_positions(self) -> None:
        """The journal's last row, how far it is folded and how far its logs are deleted; refused unless
        logs deleted <= folded <= journal rows (the two files of the same moment)."""
        w = self._w
        self._written_seq = w.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchall()[0][0]
        self._next_step_seq = w.execute("SELECT COALESCE(MAX(seq), 0) FROM step").fetchall()[0][0] + 1
        self._next_seq = self._written_seq + 1
        self._folded_seq = w.execute("SELECT folded_seq FROM fold_state").fetchall()[0][0]
        self._logs_deleted = int(w.execute("SELECT value FROM meta WHERE key = 'logs_deleted_to'").fetchall()[0][0])
        if not self._logs_deleted <= self._folded_seq <= self._written_seq:
            raise StoreRefused(
                f"{keys_path(self.path)}: folded up to journal row {self._folded_seq}, but the journal has"
                f" {self._written_seq} rows and its logs are deleted up to {self._logs_deleted}: the two files"
                " are not of the same moment (a copy of one of them?); refusing to open the store")

    def _engine(self, world: World, clock: str, cd_years: list | None, withdrawn: frozenset) -> Engine:
        """An engine over `world` built with the store's history (engine.core.history).

        The changes it makes are numbered from _next_seq on, in the order it makes
        them: by the change sink (JournalRows) and by the reconciliation index,
        which keeps in RAM only the rows a fold has not yet put in medins_time.
        """
        r = self._reader
        self._rows = JournalRows(self._next_seq)
        self._history = StoreHistory(JournalMap(r), SettledMap(r), OpenVisits(r),
                                     StoredReconIndex(self.path, first_seq=self._next_seq), self._rows.encode,
                                     StepJournalMap(r))
        return Engine(world, clock=clock, history=self._history, chronic_years=cd_years, chronic_withdrawn=withdrawn)

    # ------------------------------------------------------------ commit

    def commit(self, changes: list[Change]) -> None:
        """Write one batch's changes in one transaction; returns once durable. See the module docstring."""
        self.write(self.prepare(changes))

    def prepare(self, changes: list[Change]) -> Prepared:
        """The rows of a batch, from its changes and the engine's accumulators; on the engine's thread,
        before the next batch."""
        if self.failed:
            raise StoreFailed("an earlier commit failed: the store refuses further commits; restart")
        assert len(changes) <= COMMIT_CHANGES_MAX, f"more than {COMMIT_CHANGES_MAX} changes in one commit"
        self._history.settled.drop_untouched()
        if changes:
            # The engine builds every amounts, info and reply dict of a kind the same way
            # (dict displays): check the keys' order on the first of each kind (below).
            assert tuple(changes[0].settled.amounts) == AMOUNT_KEYS and tuple(changes[0].settled.info) == INFO_KEYS
        checked = {CHANGE_SETTLE: False, CHANGE_REVERSE: False}
        journal: list[tuple] = []
        bodies: list[bytes] = []
        fmts: list[str] = []
        psns: dict[int, None] = {}
        slots: dict[int, None] = {}
        tail: list[tuple] = []
        seq = self._next_seq
        for c in changes:
            if c.seq != seq:
                raise AssertionError(
                    f"change {c.msgid!r} is numbered {c.seq}, not {seq}: changes are committed in the order the"
                    " engine made them, none left out")
            rec = c.settled
            row = c.row
            # A step-wise settlement's batch is a visit of section 11 (engine.core.visits), not an open visit.
            visit = (rec.fixmedins_code, rec.mdtrt_id) if rec.batch is None else None
            if not checked[c.kind]:
                check_reply_keys(c.reply)
                checked[c.kind] = True
            if c.kind == CHANGE_SETTLE:
                tail.append((c.msgid, seq, visit, rec.setl_id, None))
            else:
                tail.append((c.msgid, seq, visit, None, rec.setl_id))
            journal.append(row)
            bodies.append(c.body)
            fmts.append(c.codec.fmt)
            psns[row[ROW_PSN]] = None
            if row[ROW_CD_SLOT] >= 0:
                slots[row[ROW_CD_SLOT]] = None
            seq += 1
        last = seq - 1
        # The bodies are compressed without the GIL by the compressor thread (when
        # this process may run on more than one core) from now on, while the writer
        # inserts the journal rows; then by the writer too (Prepared.blob_rows).
        compression = Compression(bodies, self._next_seq, fmts, COMPRESS_CHUNK_BODIES)
        if self._compressor is not None:
            self._compressor.submit(compression)
        idx = np.fromiter(psns, dtype=np.int64, count=len(psns))
        persons = list(zip([last] * len(idx), idx.tolist(), *self.engine.person_accumulators(idx)))
        sidx = np.fromiter(slots, dtype=np.int64, count=len(slots))
        chronic = list(zip([last] * len(sidx), sidx.tolist(), *self.engine.chronic_accumulators(sidx)))
        self._next_seq = last + 1
        signs = [(s.sign_no, s.paasid, s.fixmedins_code, s.opter_no, s.ip, s.sign_time, s.ends, s.signed_out)
                 for s in self.engine.signins.take_events()]
        steps = self.engine.take_step_changes()
        rows, replies_msgpack = step_rows(steps, self._next_step_seq)
        self._next_step_seq += len(rows)
        return Prepared(changes, journal, compression, persons, chronic, tail, last, signs, steps, rows,
                        replies_msgpack)

    def write(self, p: Prepared) -> None:
        """One transaction for a prepared batch; returns when SQLite has fsynced it (WAL, synchronous=FULL)."""
        with self._write_lock:
            if self.failed:
                raise StoreFailed("an earlier commit failed: the store refuses further commits; restart")
            if not p.changes and not p.signs and not p.steps:
                return
            f = self._folder
            if f is not None and f.error is not None:
                self._fail(f.error)
                raise StoreFailed(f"a fold failed ({f.error!r}); the process must stop") from f.error
            # The logs the last fold covered go a few thousand seqs at a time, in the commits.
            logs_to = min(self._folded_seq, self._logs_deleted + LOG_DELETE_SEQS)
            self._write_rows(p, logs_to)
            self._written_seq = p.last_seq
            self._index_committed(p)
            self._logs_deleted = max(self._logs_deleted, logs_to)
            self._after_commit()
            if len(self._tail.msgid) >= self.fold_rows:
                try:
                    self._start_fold()
                except BaseException as e:
                    self._fail(e)
                    raise StoreFailed(f"fold failed ({e!r}); the process must stop") from e

    def _write_rows(self, p: Prepared, logs_to: int) -> None:
        """The batch's one transaction on the batch writer, and the logs up to logs_to deleted in it."""
        w = self._bw
        journal, blob, person, chronic, sign_in, step = self._stmts
        try:
            w.execute("BEGIN IMMEDIATE")
            if p.changes:
                w.executemany(journal, p.journal)  # while the compressor works (prepare)
                w.executemany(blob, p.blob_rows())
                w.executemany(person, p.persons)
            if p.chronic:
                w.executemany(chronic, p.chronic)
            if p.signs:
                w.executemany(sign_in, p.signs)
            if p.step_rows:
                w.executemany(step, p.step_rows)
            if logs_to > self._logs_deleted:
                delete_logs(w, logs_to)
            w.execute("COMMIT")
        except BaseException as e:
            self._fail(e)
            raise StoreFailed(f"commit of {len(p.changes)} changes failed ({e!r}); the process must stop") from e

    def _index_committed(self, p: Prepared) -> None:
        """Durable: index the rows in the tail first, then let the history's maps forget them (a lookup in
        between finds them in one place or the other)."""
        t = self._tail
        r = self._reader
        msgids = [e[0] for e in p.tail]
        r.msgids.add_all(msgids)
        r.visits.add_all_pairs([e[2] for e in p.tail if e[3] is not None and e[2] is not None])
        t.msgid.update(zip(msgids, [e[1] for e in p.tail]))
        for _, seq, visit, setl_id, reversed_id in p.tail:
            if visit is not None:
                t.visits[visit] = setl_id
            if reversed_id is not None:
                t.reversed[reversed_id] = seq
        self._history.committed(p.changes)
        self._history.step_journal.committed(p.steps, p.step_rows)

    def _after_commit(self) -> None:
        try:
            wal_bytes = os.path.getsize(self.path + "-wal")
        except OSError:
            return
        if wal_bytes >= WAL_BYTES_MAX:
            # The checkpointer fell far behind: wait for a full checkpoint here.
            self._w.execute("PRAGMA main.wal_checkpoint(RESTART)").fetchall()
        else:
            self._checkpointer.wake.set()

    def _fail(self, e: BaseException) -> None:
        self.failed = True
        log.error("store failed, refusing further commits: %r", e)
        for w in (self._bw, self._w):
            try:
                if w is not None and w.in_transaction:
                    w.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    # ------------------------------------------------------------ reload

    def record_world(self, merge, world_dir: str) -> float:
        """Make a reloaded world (engine.world.merge.WorldMerge) the store's, durably, before the engine takes it
        (engine.hub.world): its new persons and chronic slots get their rows before any commit can name them.
        From any thread: it waits for the commit in progress and for a background fold (the keyed file has one
        writer at a time). A failure once the keyed file is written fails the store, as a failed commit does.
        Returns the seconds it held the write lock (commits waited that long)."""
        # Made before the commits wait: the fingerprints read every file of the folder.
        meta = world_meta(merge.world, world_dir)
        filings = filing_rows(merge.world, max(0, merge.filings_kept))
        with self._write_lock:
            t0 = time.perf_counter()
            if self.failed:
                raise StoreFailed("an earlier commit failed: the store refuses further writes; restart")
            if self._folder is not None:
                self._folder.wait()
            try:
                record_reload(self._w, merge, world_dir, meta, filings, merge.filings_kept)
            except BaseException as e:
                self._fail(e)
                raise StoreFailed(f"recording the reloaded world failed ({e!r}); the process must stop") from e
            return time.perf_counter() - t0

    # ------------------------------------------------------------ fold

    def unfolded_rows(self) -> int:
        """Committed journal rows the keyed tables do not hold yet (metrics)."""
        return len(self._tail)

    def fold(self) -> int:
        """Fold the journal tail into the keyed tables now (a quiet moment); returns the rows folded."""
        with self._write_lock:
            if self.failed:
                raise StoreFailed("an earlier commit failed: the store refuses further writes; restart")
            try:
                return self._fold_inline()
            except BaseException as e:
                self._fail(e)
                raise StoreFailed(f"fold failed ({e!r}); the process must stop") from e

    def _start_fold(self) -> None:
        """On the writer's thread, the live generation full: seal it and fold it in the background (Folder)."""
        f = self._folder
        f.wait()  # the generation sealed before: at most two in RAM
        self._rebuild_full_filters()
        self._tail.seal()
        f.start(self._folded_seq, self._written_seq)

    def _fold_inline(self) -> int:
        """Fold every committed row on this thread (at open, at close, by fold()), then delete the logs it covered.

        With the write lock held, or during open.
        """
        if self._folder is not None:
            self._folder.wait()
        m, h = self._folded_seq, self._written_seq
        assert m <= h
        if m < h:
            self._tail.seal()
            self._fold_range(self._w, m, h)
            self._rebuild_full_filters()
        w = self._w
        if self._logs_deleted < h:
            w.execute("BEGIN IMMEDIATE")
            try:
                delete_logs(w, h)
                w.execute("COMMIT")
            except BaseException:
                if w.in_transaction:
                    w.execute("ROLLBACK")
                raise
            self._logs_deleted = h
        return h - m

    def _fold_range(self, conn: sqlite3.Connection, m: int, h: int) -> None:
        """fold.fold_range of the journal rows m < seq <= h on conn (this thread's or the Folder's); then the
        sealed generation of the tail, which held those rows, is dropped."""
        t0 = time.perf_counter()
        fold_range(conn, m, h)
        # Committed: lookups find these rows in the keyed tables from now on.
        self._folded_seq = h
        self._tail.sealed = None
        dt = time.perf_counter() - t0
        self.fold_s_total += dt
        log.info("folded journal rows %d..%d (%d) in %.2f s", m + 1, h, h - m, dt)

    def _rebuild_full_filters(self) -> None:
        if filters_over_capacity(self._reader):
            build_filters(self._w, self._tail, self._reader)  # false positives would grow; twice the size

    # ------------------------------------------------------------ close

    def close(self) -> None:
        """Fold, checkpoint the WAL into the database file, and release the folder."""
        if self._w is not None and not self.failed and self._history is not None:
            pending = self._history.journal.pending()
            if pending:
                log.warning("closing with %d settlements handled but never committed: they are lost", pending)
            try:
                with self._write_lock:
                    self._fold_inline()
                self._w.execute("PRAGMA main.wal_checkpoint(TRUNCATE)")
                self._w.execute("PRAGMA keys.wal_checkpoint(TRUNCATE)")
            except (sqlite3.Error, StoreFailed) as e:
                log.warning("fold or checkpoint at close failed: %s", e)
        self._release()

    def _release(self) -> None:
        if self._history is not None:
            self._history.recon.close()  # its read-only connection
        for part in ("_folder", "_checkpointer", "_compressor"):
            thread_owner = getattr(self, part)
            if thread_owner is not None:
                thread_owner.stop()
                setattr(self, part, None)
        for part in ("_reader", "_bw", "_w"):
            conn_owner = getattr(self, part)
            if conn_owner is not None:
                conn_owner.close()
                setattr(self, part, None)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def __enter__(self) -> "SqliteStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(data_dir: str, world_dir: str, *, clock: str = "wall", verify: str = "quick",
               fold_rows: int = FOLD_ROWS_DEFAULT, accept_world_change: bool = False) -> SqliteStore:
    """Open the store in `data_dir`, seeding it from `world_dir` when the folder holds none.

    verify: "quick" runs SQLite's quick_check at open (reads the whole file);
    "header" checks only the file header and the ledger's balance (very large stores).
    fold_rows: unfolded journal rows that trigger a fold (bounds the RAM tail index).
    accept_world_change: open an existing store with a world that lacks persons or
    institutions it holds (engine.store.seed.world_differences), which is otherwise
    refused; that world is the store's from then on. A world that only adds to the
    store's is applied as a reload is, without it.
    Returns a durable store or raises: StoreError when no data folder is given,
    StoreRefused for a damaged, truncated, foreign or busy store, a folder that
    cannot be created or locked, or another world's folder, and
    engine.world.WorldError for a bad world folder.
    """
    if not isinstance(data_dir, (str, os.PathLike)) or not os.fspath(data_dir):
        raise StoreError(f"no data folder given for the store ({data_dir!r}); nothing would be durable")
    return SqliteStore(os.fspath(data_dir), world_dir, clock=clock, verify=verify, fold_rows=fold_rows,
                       accept_world_change=accept_world_change)


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
