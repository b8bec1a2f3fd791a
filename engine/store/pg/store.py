"""The store on PostgreSQL: several hub nodes, one database (docs/contract.md section 13; docs/store.md).

    store = open_store("postgresql://...", world_dir, clock="wall")
    replies = store.engine.handle_batch(requests)   # the batch's transaction begins here
    store.commit(store.engine.take_changes())       # ... and commits here: durable when it returns
    store.close()

One total order. A node's engine keeps state in RAM (accumulators, visits,
sign-ins, filters), which another node's commit would make wrong. So every
batch, on every node, is one transaction that first takes the store's
cluster-wide lock (pg_advisory_xact_lock of STORE_LOCK_KEY), then catches up on
every batch committed since this node last saw one (engine.store.pg.catchup),
then runs in the engine, writes its rows (one statement per table, the whole
batch in one pipeline: one round trip), numbers itself (`head.gseq`) and commits.
PostgreSQL releases the lock at COMMIT or ROLLBACK, and when a node dies its
transaction is aborted and the lock freed. Batches of all nodes are therefore
serial, each seeing every one before it: the outcome equals processing them in
commit order, which is the contract's rule. Decoding, checking signatures and
encoding replies run on each node beside the others' batches.

`engine.handle_batch` begins the transaction (BatchEngine); `prepare` builds the
rows; `write` sends them and commits, and only then may the caller release the
replies. The hub runs all three on its writer thread (`serial`).

A failing batch (the database gone, a lost connection, a COMMIT whose outcome is
unknown) leaves the engine in RAM possibly ahead of the database: the batch is
refused with StoreUnavailable (the hub answers E_BUSY, nothing was acknowledged),
the engine is marked stale, and the next batch first rebuilds it from the
database as an open does (StoreUnavailable again while the database is away).
A retried msgid then finds its stored reply if the unknown COMMIT did land.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import psycopg

from core_ext._pack import Compression

from engine.core.engine import Engine
from engine.core.records import CHANGE_SETTLE, Change
from engine.store.codec import ROW_CD_SLOT, ROW_PSN, JournalRows, check_reply_keys
from engine.store.errors import StoreFailed, StoreRefused, StoreUnavailable
from engine.store.lookups import JournalMap, OpenVisits, Reader, SettledMap, StoreHistory, Tail, build_filters, \
    filters_over_capacity
from engine.store.pg.catchup import apply_catch_up, send_catch_up
from engine.store.pg.schema import GSEQ_TABLES
from engine.store.pg.seed import prepare_database
from engine.store.pg.sql import STORE_LOCK_KEY, PgConn, connect, redact, refuse_pg
from engine.store.recon import StoredReconIndex
from engine.store.schema import AMOUNT_KEYS, INFO_KEYS, JOURNAL_COLS, STEP_COLS, SIGN_IN_COLS
from engine.store.seed import chronic_withdrawn, note_world_changes, restore_sign_ins, restore_world
from engine.store.steps import SQL_STEP_ENTRY, StepJournalMap, restore_effects, step_entry, step_rows
from engine.store.writer import COMPRESS_CHUNK_BODIES
from engine.world.loader import load_world

log = logging.getLogger("yidi.store")

COMMIT_CHANGES_MAX = 65_536  # settlements and reversals in one commit (as the embedded store)

_JOURNAL_TYPES = {c: ("bigint" if c in ("seq", "psn", "acc_kind", "cd_slot", "acc_year") or c.endswith("_fen")
                      else "text") for c in JOURNAL_COLS}
_STEP_TYPES = {c: ("bigint" if c == "seq" else "bytea" if c in ("body_lz4", "effects") else "text") for c in STEP_COLS}


def _unnest_insert(table: str, cols: tuple, types: dict, extra: str = "") -> str:
    """INSERT of a whole batch from one array per column (one statement, one round trip)."""
    arrays = ", ".join(f"%b::{types[c]}[]" for c in cols)  # binary: no text escaping of every value
    return f"INSERT INTO {table} ({', '.join(cols)}, gseq) SELECT *, %s FROM unnest({arrays}) {extra}"


SQL_JOURNAL = _unnest_insert("journal", JOURNAL_COLS, _JOURNAL_TYPES)
SQL_BLOB = "INSERT INTO journal_blob (seq, codec, body_lz4, crc32) SELECT * FROM unnest(%b::bigint[], %b::text[]," \
           " %b::bytea[], %b::bigint[])"
SQL_STEP = _unnest_insert("step", STEP_COLS, _STEP_TYPES)
SQL_SIGN_IN = _unnest_insert("sign_in", SIGN_IN_COLS, {c: "text" for c in SIGN_IN_COLS}) + \
    " ON CONFLICT (sign_no) DO UPDATE SET signed_out = excluded.signed_out, gseq = excluded.gseq"
SQL_PERSONS = (
    "UPDATE person SET balc_fen = u.balc, acc_year = u.acc_year, hifp_ip_fen = u.hifp_ip, hifp_op_fen = u.hifp_op,"
    " ded_op_fen = u.ded_op, burden2_fen = u.burden2, second_paid_fen = u.second_paid, gseq = %s"
    " FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[],"
    " %b::bigint[]) AS u(psn, balc, acc_year, hifp_ip, hifp_op, ded_op, burden2, second_paid) WHERE person.psn = u.psn")
SQL_CHRONIC = (
    "UPDATE chronic SET hifp_cd_fen = u.cd, cd_year = u.cd_year, gseq = %s"
    " FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[]) AS u(slot, cd, cd_year) WHERE chronic.slot = u.slot")
SQL_LOCK = "SELECT pg_advisory_xact_lock(%s)"
SQL_LEASE = "SELECT pg_advisory_lock(%s)"  # the same lock, held by the session over several batches
SQL_UNLEASE = "SELECT pg_advisory_unlock(%s)"
# The head moves from the batch number this node saw to the next; should it not be there (a bug: the lock is
# held), the division fails the statement, so the pipeline's COMMIT never runs.
SQL_HEAD = ("WITH h AS (UPDATE head SET gseq = %s, seq = %s, step_seq = %s WHERE gseq = %s RETURNING gseq)"
            " SELECT 1 / (SELECT count(*) FROM h)::int")



class PgStepJournalMap(StepJournalMap):
    """The step journal on PostgreSQL: a committed msgid is looked up in the `step` table by msgid (its index
    step_msgid), not in a map of this node's: another node may have committed it since (contract section 13)."""

    def _committed(self, msgid: str):
        r = self._reader
        f = r.msgids
        if f is not None and type(msgid) is str and not f.may_contain(msgid):
            return None  # certainly never committed
        row = r._one(SQL_STEP_ENTRY + "msgid = ?", (msgid,))
        return None if row is None else step_entry(row, msgid)

    def committed(self, steps, rows) -> None:
        for c in steps:
            if c.msgid:
                del self._pending[c.msgid]


class PgReader(Reader):
    """The embedded store's lookups (engine.store.lookups.Reader) on a connection of their own to the database:
    the keyed tables they read are views of the journal here (engine.store.pg.schema)."""

    def __init__(self, conn: PgConn):
        self.conn = conn
        self.lock = threading.Lock()
        self.tail = Tail()  # always empty: every committed row is in the database's indexes
        self.msgids = None
        self.visits = None


class PgReconIndex(StoredReconIndex):
    """3201/3202 over the journal in the database (its medins_time view), the uncommitted rows in RAM."""

    def __init__(self, conn: PgConn, first_seq: int):
        super().__init__("", first_seq)
        self._conn = conn

    def _db(self):
        return self._conn


class BatchEngine:
    """The store's engine as its callers hold it: handle_batch begins the batch's transaction (lock and catch-up)
    first; everything else is the engine's. The engine behind it is replaced when the store rebuilds it."""

    def __init__(self, store: "PgStore"):
        self._store = store

    def handle_batch(self, reqs: list) -> list:
        self._store.begin_batch()
        return self._store.current.handle_batch(reqs)

    def __getattr__(self, name: str):
        return getattr(self._store.current, name)


class PgPrepared:
    __slots__ = ("changes", "journal", "blobs", "persons", "chronic", "signs", "steps", "step_rows",
                 "replies_msgpack", "last_seq", "last_step_seq", "msgids", "visits")


class PgStore:
    """The store on PostgreSQL; see the module docstring. Use engine.store.open_store with a URL."""

    serial = True  # the hub runs handle_batch, prepare and write of a batch together on its writer thread
    # The lease (set by the hub): keep the store's lock over consecutive batches for up to lease_s while
    # more_work() says more are waiting on this node; 0: take and release it with each batch's transaction.
    lease_s = 0.0
    more_work = staticmethod(lambda: False)
    data_dir = None  # no folder: the pre-payment gauges read a folder's store (engine.clearing)
    fold_s_total = 0.0  # no fold

    def __init__(self, url: str, world_dir: str, *, clock: str = "wall", accept_world_change: bool = False):
        self.url = url
        self.clock = clock
        self.failed = False
        self.stale = False
        self.batches = 0
        self.caught_up_rows = 0  # rows of other nodes' batches applied (metrics, tests)
        self.round_trips = 0  # to the database by the batches (not counting the catch-up's, counted apart)
        self.statements = 0  # the rows' statements of the batches' writes
        self.catch_ups = 0
        self.busy_batches = 0  # batches refused StoreUnavailable
        self.current: Engine | None = None
        self.engine = BatchEngine(self)
        self._conn = self._reader = self._recon = None
        self._in_batch = False
        self._leased_at: float | None = None  # when this session took the store's lock for a lease; None: not held
        self._lazy_begin = False  # the batch's BEGIN goes with its rows (under a lease)
        try:
            self._conn = connect(url)
            self._world = load_world(world_dir)
            prepare_database(self._conn, self._world, world_dir)
            try:
                note_world_changes(self._conn, redact(url), self._world, world_dir, accept=accept_world_change)
            except psycopg.Error as e:
                raise refuse_pg(url, e, "checking the world against the store") from None
            self._build()
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------ the engine from the database

    def _build(self) -> None:
        """An engine with the database's state, read in one snapshot (as of one head.gseq)."""
        t0 = time.perf_counter()
        for part in ("_reader", "_recon"):
            c = getattr(self, part)
            if c is not None:
                c.close()
                setattr(self, part, None)
        raw = self._conn.raw
        try:
            raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self.gseq, seq, step_seq = raw.execute("SELECT gseq, seq, step_seq FROM head").fetchone()
            world, cd_years = restore_world(self._conn, self._world)
            signs = restore_sign_ins(self._conn, self.clock)
            reader = PgReader(connect(self.url, application="yidi-lookups"))
            self._reader = reader
            build_filters(self._conn, Tail(), reader)
            self._recon = PgReconIndex(connect(self.url, application="yidi-recon"), seq + 1)
            self._rows = JournalRows(seq + 1)
            self._history = StoreHistory(JournalMap(reader), SettledMap(reader), OpenVisits(reader), self._recon,
                                         self._rows.encode, PgStepJournalMap(reader))
            engine = Engine(world, clock=self.clock, history=self._history, chronic_years=cd_years,
                            chronic_withdrawn=chronic_withdrawn(self._conn))
            engine.signins.restore(signs)
            engine.signins.events = []
            restore_effects(self._conn, engine.apply_effect)
            engine.step_changes = []
            raw.execute("COMMIT")
        except psycopg.Error:
            self._rollback()
            raise
        self.current = engine
        self._seq, self._step_seq = seq, step_seq
        self.stale = False
        log.info("engine built from %s as of batch %d (journal row %d) in %.2f s", redact(self.url), self.gseq, seq,
                 time.perf_counter() - t0)

    def _rollback(self) -> None:
        """Roll back the batch's transaction, and give up a lease (a session's lock outlives its transactions)."""
        lease, self._leased_at, self._lazy_begin = self._leased_at, None, False
        try:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.raw.execute("ROLLBACK")
            if lease is not None and self._conn is not None and not self._conn.raw.broken:
                self._conn.raw.execute(SQL_UNLEASE, (STORE_LOCK_KEY,))
        except psycopg.Error:
            pass

    # ------------------------------------------------------------ a batch

    def begin_batch(self) -> None:
        """Take the lock, catch up on other nodes' batches; the engine then sees every committed batch."""
        if self.failed:
            raise StoreFailed("an earlier batch failed inside the engine: the store refuses further batches; restart")
        if self._in_batch:
            raise StoreFailed("a batch began before the last one was written")
        try:
            if self.stale:
                try:
                    self._reconnect()
                    self._build()
                except StoreRefused as e:  # the database still away: its connection refused
                    raise psycopg.OperationalError(str(e)) from None
            raw = self._conn.raw
            if self._leased_at is not None:
                # Held since this node's last batch: no other node has committed, nothing to catch up on, and
                # the transaction's BEGIN goes with the rows (no round trip before computing).
                self._lazy_begin = True
                self._rows.next_seq = self._recon.next_seq = self._seq + 1
                self._in_batch = True
                return
            # One round trip: the lock, then the head and the catch-up's reads, on a snapshot taken once the
            # lock is held (READ COMMITTED), with every batch committed before it; the catch-up's find nothing
            # when no other node committed since this one's last batch.
            with raw.pipeline():
                raw.execute("BEGIN")
                if self.lease_s > 0:
                    raw.execute(SQL_LEASE, (STORE_LOCK_KEY,), prepare=True)
                    self._leased_at = time.monotonic()
                else:
                    raw.execute(SQL_LOCK, (STORE_LOCK_KEY,), prepare=True)
                head = raw.execute("SELECT gseq, seq, step_seq FROM head", prepare=True)
                news = send_catch_up(raw, self.gseq)
            gseq, seq, step_seq = head.fetchone()
            self.round_trips += 1
            got = apply_catch_up(news, self.current, self._reader)
            if gseq != self.gseq:
                self.caught_up_rows += sum(got.values())
                self.catch_ups += 1
                self.gseq = gseq
            else:
                assert not any(got.values()), "rows of a batch the head does not count"
            if filters_over_capacity(self._reader):
                build_filters(self._conn, Tail(), self._reader)
        except psycopg.Error as e:
            self._unavailable(e, "beginning a batch")
        except BaseException:
            self._fail()
            raise
        self._seq, self._step_seq = seq, step_seq
        self._rows.next_seq = seq + 1
        self._recon.next_seq = seq + 1
        self._in_batch = True

    def commit(self, changes: list[Change]) -> None:
        """Write a batch's changes and commit its transaction; returns once durable."""
        self.write(self.prepare(changes))

    def prepare(self, changes: list[Change]) -> PgPrepared:
        """The rows of a batch, from its changes and the engine's accumulators (on the engine's thread)."""
        if not self._in_batch:
            raise StoreFailed("prepare without a batch begun (engine.handle_batch begins it)")
        assert len(changes) <= COMMIT_CHANGES_MAX, f"more than {COMMIT_CHANGES_MAX} changes in one commit"
        for side in (self._reader.conn, self._recon._db()):
            if side.error is not None:  # a lookup of the batch failed: its answer may be a refusal it is not
                self._unavailable(side.error, "looking up earlier requests for a batch")
        e = self.current
        self._history.settled.drop_untouched()
        p = PgPrepared()
        p.changes = changes
        if changes:
            assert tuple(changes[0].settled.amounts) == AMOUNT_KEYS and tuple(changes[0].settled.info) == INFO_KEYS
        seq = self._seq + 1
        checked = set()
        psns: dict[int, None] = {}
        slots: dict[int, None] = {}
        p.msgids, p.visits = [], []
        for c in changes:
            if c.seq != seq:
                raise AssertionError(f"change {c.msgid!r} is numbered {c.seq}, not {seq}")
            if c.kind not in checked:
                check_reply_keys(c.reply)
                checked.add(c.kind)
            p.msgids.append(c.msgid)
            if c.kind == CHANGE_SETTLE and c.settled.batch is None:
                p.visits.append((c.settled.fixmedins_code, c.settled.mdtrt_id))
            psns[c.row[ROW_PSN]] = None
            if c.row[ROW_CD_SLOT] >= 0:
                slots[c.row[ROW_CD_SLOT]] = None
            seq += 1
        p.last_seq = seq - 1
        p.journal = [c.row for c in changes]
        p.blobs = Compression([c.body for c in changes], self._seq + 1, [c.codec.fmt for c in changes],
                              COMPRESS_CHUNK_BODIES) if changes else None
        idx = np.fromiter(psns, dtype=np.int64, count=len(psns))
        p.persons = [idx.tolist(), *e.person_accumulators(idx)]
        sidx = np.fromiter(slots, dtype=np.int64, count=len(slots))
        p.chronic = [sidx.tolist(), *e.chronic_accumulators(sidx)]
        p.signs = [(s.sign_no, s.paasid, s.fixmedins_code, s.opter_no, s.ip, s.sign_time, s.ends, s.signed_out)
                   for s in e.signins.take_events()]
        p.steps = e.take_step_changes()
        p.step_rows, p.replies_msgpack = step_rows(p.steps, self._step_seq + 1)
        p.last_step_seq = self._step_seq + len(p.step_rows)
        p.msgids.extend(c.msgid for c in p.steps if c.msgid)
        return p

    def write(self, p: PgPrepared) -> None:
        """The batch's rows in one pipeline, then COMMIT; returns once PostgreSQL has made it durable."""
        if not self._in_batch:
            raise StoreFailed("write without a batch begun")
        raw = self._conn.raw
        wrote = bool(p.changes or p.signs or p.steps)
        gseq = self.gseq + 1 if wrote else self.gseq
        lazy, self._lazy_begin = self._lazy_begin, False
        held = self._leased_at
        release = held is not None and (time.monotonic() - held >= self.lease_s or not self.more_work())
        try:
            if wrote or release:
                with raw.cursor() as cur:
                    with raw.pipeline():
                        if lazy:
                            cur.execute("BEGIN")
                        if not wrote:
                            pass
                        elif p.changes:
                            cur.execute(SQL_JOURNAL, [gseq, *map(list, zip(*p.journal))], prepare=True)
                            cur.execute(SQL_BLOB, [list(col) for col in zip(*p.blobs.rows())], prepare=True)
                            cur.execute(SQL_PERSONS, [gseq, *p.persons], prepare=True)
                        if wrote and p.chronic[0]:
                            cur.execute(SQL_CHRONIC, [gseq, *p.chronic], prepare=True)
                        if wrote and p.signs:
                            cur.execute(SQL_SIGN_IN, [gseq, *map(list, zip(*p.signs))], prepare=True)
                        if wrote and p.step_rows:
                            cur.execute(SQL_STEP, [gseq, *map(list, zip(*p.step_rows))], prepare=True)
                        if wrote:
                            cur.execute(SQL_HEAD, (gseq, p.last_seq, p.last_step_seq, self.gseq), prepare=True)
                        cur.execute("COMMIT")  # in the same round trip: a failed statement fails the pipeline
                        if release:  # after the COMMIT: the next holder sees this batch
                            cur.execute(SQL_UNLEASE, (STORE_LOCK_KEY,), prepare=True)
                    if wrote:
                        self.statements += (1 + bool(p.changes) * 3 + bool(p.chronic[0]) + bool(p.signs)
                                            + bool(p.step_rows))
                if release:
                    self._leased_at = None
            elif not lazy:
                raw.execute("COMMIT")
            else:  # a lease's batch that wrote nothing: no transaction was begun, no round trip
                self.round_trips -= 1
            self.round_trips += 1
        except psycopg.Error as e:
            self._unavailable(e, f"committing a batch of {len(p.changes)} changes")
        except BaseException:
            self._fail()  # a bug, not the database: never hold the store's lock past it
            raise
        self._in_batch = False
        self.gseq = gseq
        self._seq, self._step_seq = p.last_seq, p.last_step_seq
        self.batches += 1
        r = self._reader
        r.msgids.add_all(p.msgids)
        r.visits.add_all_pairs(p.visits)
        self._history.committed(p.changes)
        self._history.step_journal.committed(p.steps, ())

    def abort_batch(self) -> None:
        """A batch that will not be written (the engine failed on it): roll back; the engine is stale."""
        self._in_batch = False
        self.stale = True
        self._rollback()

    def _fail(self) -> None:
        """Something other than the database failed in a batch: roll it back (the lock goes with it) and refuse
        every later batch; the process must stop (the hub fails stop)."""
        self._in_batch = False
        self.failed = True
        self._rollback()

    def _unavailable(self, e: BaseException, doing: str):
        """The batch is lost and the engine may be ahead of the database: stale until rebuilt."""
        self._in_batch = False
        self.stale = True
        self._rollback()
        self.busy_batches += 1
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.error("store %s unavailable while %s (%s): answering E_BUSY until the engine is rebuilt from it",
                  redact(self.url), doing, first)
        raise StoreUnavailable(f"the database is unavailable ({first}): nothing was done, retry later") from None

    def _reconnect(self) -> None:
        if self._conn is not None and not self._conn.raw.closed and not self._conn.raw.broken:
            return
        try:
            self._conn.close()
        except psycopg.Error:
            pass
        self._conn = connect(self.url)

    # ------------------------------------------------------------ what the hub's metrics read

    def unfolded_rows(self) -> int:
        return 0

    # ------------------------------------------------------------ close

    def close(self) -> None:
        if self._in_batch:
            log.warning("closing with a batch handled but never committed: it is rolled back")
            self.abort_batch()
        elif self._leased_at is not None:
            self._rollback()  # gives the lease up
        self._release()

    def _release(self) -> None:
        for part in ("_reader", "_recon", "_conn"):
            c = getattr(self, part, None)
            if c is not None:
                try:
                    c.close()
                except Exception:  # noqa: BLE001  (closing what may be broken)
                    pass
                setattr(self, part, None)

    def __enter__(self) -> "PgStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


assert "gseq" not in JOURNAL_COLS and set(GSEQ_TABLES) >= {"journal", "step", "sign_in", "person", "chronic"}
