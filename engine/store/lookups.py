"""The store's history lookups (engine.core.history): what the engine asks of earlier requests.

History is not kept in RAM. JournalMap (msgid -> first reply), SettledMap
(setl_id -> what a reversal needs) and OpenVisits hold what the engine changed
and the store has not yet committed; the Tail indexes the committed rows no fold
has covered yet (at most two generations of fold_rows rows); anything older is
read from SQLite on a miss by the Reader, with indexed point queries on a
read-only connection of its own: a few microseconds, against a few hundred for
handling a settlement. Two Bloom filters answer most misses without a query.
RAM is bounded by fold_rows, whatever the history.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
import zlib

from core_ext._bloom import Bloom

from engine.contract.protocol import OUTPATIENT_INFNOS
from engine.core.reconcile import ReconIndex
from engine.core.records import CHANGE_REVERSE, CHANGE_SETTLE, Change, Settled
from engine.store.codec import CODECS, unpack_body
from engine.store.errors import StoreFailed
from engine.store.files import connect
from engine.store.schema import AMOUNT_KEYS, INFO_KEYS, READ_CHUNK_ROWS

log = logging.getLogger("yidi.store")

FILTER_KEYS_MIN = 4_194_304  # capacity of each lookup filter (16 bits a key: 8 MiB) at least


class Tail:
    """The journal rows committed since the last fold, indexed in RAM: at most two generations of
    fold_rows rows, the live one commits add to and the sealed one a fold is writing (fold.Folder).

    Lookups (the engine's thread) read the live generation, then the sealed one, then SQLite.
    The writer seals by setting `sealed` before it replaces the live maps, and the folder drops
    `sealed` only once its fold is committed, so a row is always in one place or the next.
    """

    def __init__(self):
        self.msgid: dict[str, int] = {}  # msgid -> seq
        self.visits: dict[tuple[str, str], str | None] = {}  # visit -> setl_id in force, None closed
        self.reversed: dict[str, int] = {}  # setl_id -> seq of its reversal
        self.sealed: Tail | None = None

    def seal(self) -> None:
        old = Tail()
        old.msgid, old.visits, old.reversed = self.msgid, self.visits, self.reversed
        self.sealed = old
        self.msgid, self.visits, self.reversed = {}, {}, {}

    def __len__(self) -> int:
        return len(self.msgid) + (len(self.sealed.msgid) if self.sealed is not None else 0)


class Reader:
    """Point queries on the committed store, on a read-only connection of its own."""

    def __init__(self, path: str, tail: Tail):
        self.conn = connect(path, read_only=True)
        self.lock = threading.Lock()
        self.tail = tail
        # Every msgid in the store and every visit a settlement ever opened (build_filters;
        # write adds what it commits): a key they do not hold is not in the store, no query needed.
        self.msgids: Bloom | None = None
        self.visits: Bloom | None = None

    def _one(self, sql: str, args: tuple):
        # fetchall steps the statement to its end, so that SQLite resets it and
        # no read transaction stays open on an old snapshot. (Misses rarely get
        # here: the filters answer them.)
        with self.lock:
            rows = self.conn.execute(sql, args).fetchall()
        assert len(rows) <= 1
        return rows[0] if rows else None

    def seq_of(self, msgid: str) -> int | None:
        t = self.tail
        seq = t.msgid.get(msgid)
        if seq is None and (old := t.sealed) is not None:
            seq = old.msgid.get(msgid)
        if seq is None:
            f = self.msgids
            if f is not None and type(msgid) is str and not f.may_contain(msgid):
                return None  # certainly never committed
            row = self._one("SELECT seq FROM msgid_index WHERE msgid = ?", (msgid,))
            seq = None if row is None else row[0]
        return seq

    def journal_entry(self, msgid: str):
        seq = self.seq_of(msgid)
        if seq is None:
            return None
        row = self._one(
            "SELECT j.msgid, j.infno, b.codec, b.body_lz4, b.crc32, j.fixmedins_code,"
            f" j.kind = '{CHANGE_SETTLE}' AND j.chrg_bchno IS NOT NULL"
            " FROM journal j JOIN journal_blob b USING (seq) WHERE seq = ?", (seq,),
        )
        assert row is not None and row[0] == msgid, f"msgid index points to a missing row: {msgid}"
        _, infno, codec_name, body, crc, fixmedins_code, stepwise = row
        if zlib.crc32(body) != crc:
            raise StoreFailed(f"journal row {seq} (msgid {msgid!r}) is damaged: crc32 mismatch")
        codec = CODECS[codec_name]
        inp, reply = unpack_body(body, codec, bool(stepwise))
        return (infno, codec, inp, reply, fixmedins_code)

    def settled(self, setl_id: str) -> Settled | None:
        if not setl_id.startswith("S"):
            return None
        seq = self.seq_of(setl_id[1:])
        if seq is None:
            return None
        row = self._one(f"SELECT {', '.join(_SETTLED_COLS)} FROM journal WHERE seq = ?", (seq,))
        r = dict(zip(_SETTLED_COLS, row))
        if r["kind"] != CHANGE_SETTLE:
            return None
        assert r["setl_id"] == setl_id
        t = self.tail
        rev = t.reversed.get(setl_id)
        if rev is None and (old := t.sealed) is not None:
            rev = old.reversed.get(setl_id)
        if rev is None:
            rev = self._one("SELECT seq FROM reversal WHERE setl_id = ?", (setl_id,))
        return Settled(
            setl_id=setl_id, outpatient=r["infno"] in OUTPATIENT_INFNOS, fixmedins_code=r["fixmedins_code"],
            mdtrtarea_admvs=r["mdtrtarea_admvs"], insuplc_admdvs=r["insuplc_admdvs"], mdtrt_id=r["mdtrt_id"],
            psn=r["psn"], psn_no=r["psn_no"], kind=r["acc_kind"], cd_slot=r["cd_slot"], year=r["acc_year"],
            amounts={k: r[k + "_fen"] for k in AMOUNT_KEYS}, burden=r["burden_fen"], second=r["second_fen"],
            info={k: r[k] for k in INFO_KEYS}, reversed=rev is not None, batch=r["chrg_bchno"],
        )

    def visit_open(self, visit: tuple[str, str]) -> bool:
        t = self.tail
        hit = t.visits.get(visit, 0)
        if hit == 0 and (old := t.sealed) is not None:
            hit = old.visits.get(visit, 0)
        if hit != 0:
            return hit is not None
        f = self.visits
        if f is not None and type(visit[0]) is str and type(visit[1]) is str and not f.may_contain(*visit):
            return False  # no settlement ever opened it
        return self._one("SELECT 1 FROM open_visit WHERE fixmedins_code = ? AND mdtrt_id = ?", visit) is not None

    def close(self) -> None:
        self.conn.close()


_SETTLED_COLS = (
    "kind", "setl_id", "infno", "fixmedins_code", "mdtrtarea_admvs", "insuplc_admdvs", "mdtrt_id", "psn",
    "psn_no", "acc_kind", "cd_slot", "acc_year", "burden_fen", "second_fen", *(k + "_fen" for k in AMOUNT_KEYS),
    *(k for k in INFO_KEYS if k not in ("mdtrt_id", "psn_no")), "chrg_bchno",
)


class JournalMap:
    """The history's journal lookup backed by the store: msgid -> (infno, codec, raw input, reply, fixmedins_code).

    RAM holds the entries not yet committed; the rest is read from the store on a miss.
    """

    def __init__(self, reader: Reader):
        self._reader = reader
        self._pending: dict[str, tuple] = {}

    def get(self, msgid: str, default=None):
        hit = self._pending.get(msgid)
        if hit is None:
            hit = self._reader.journal_entry(msgid)
        return default if hit is None else hit

    def __getitem__(self, msgid: str):
        hit = self.get(msgid)
        if hit is None:
            raise KeyError(msgid)
        return hit

    def __contains__(self, msgid: str) -> bool:
        return self.get(msgid) is not None

    def __setitem__(self, msgid: str, entry: tuple) -> None:
        assert msgid not in self._pending
        self._pending[msgid] = entry

    def pending(self) -> int:
        return len(self._pending)

    def committed(self, changes: list[Change]) -> None:
        for c in changes:
            del self._pending[c.msgid]


class SettledMap:
    """The history's settled lookup backed by the store: setl_id -> Settled, for reversals.

    New settlements stay in RAM until committed. A settlement read from the
    store stays while the engine may mark it reversed: it is dropped at the next
    prepare if nothing reversed it, or once its reversal is committed.
    """

    def __init__(self, reader: Reader):
        self._reader = reader
        self._live: dict[str, Settled] = {}
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    def get(self, setl_id: str, default=None):
        with self._lock:
            rec = self._live.get(setl_id)
        if rec is None:
            rec = self._reader.settled(setl_id) if isinstance(setl_id, str) else None
            if rec is None:
                return default
            with self._lock:
                rec = self._live.setdefault(setl_id, rec)
                self._loaded.add(setl_id)
        return rec

    def __getitem__(self, setl_id: str) -> Settled:
        rec = self.get(setl_id)
        if rec is None:
            raise KeyError(setl_id)
        return rec

    def __contains__(self, setl_id: str) -> bool:
        return self.get(setl_id) is not None

    def __setitem__(self, setl_id: str, rec: Settled) -> None:
        with self._lock:
            assert setl_id not in self._live
            self._live[setl_id] = rec

    def pending(self) -> int:
        return len(self._live)

    def drop_untouched(self) -> None:
        """On the engine's thread, between batches: forget loaded records that nothing reversed."""
        with self._lock:
            for k in [k for k in self._loaded if not self._live[k].reversed]:
                del self._live[k]
                self._loaded.discard(k)

    def committed(self, changes: list[Change]) -> None:
        with self._lock:
            for c in changes:
                k = c.settled.setl_id
                rec = self._live.get(k)
                assert rec is not None, f"settlement {k} left RAM before its change was committed"
                # A settlement reversed by a batch not yet committed stays until that one is.
                if c.kind == CHANGE_REVERSE or not rec.reversed:
                    del self._live[k]
                    self._loaded.discard(k)


class OpenVisits:
    """The history's open visits backed by the store: the (fixmedins_code, mdtrt_id) with a settlement in force.

    RAM holds the visits that uncommitted changes opened or closed, with the
    number of such changes, so that committing one batch while a later one is
    in flight does not forget the later one's effect.
    """

    def __init__(self, reader: Reader):
        self._reader = reader
        self._pending: dict[tuple[str, str], list] = {}  # visit -> [open?, uncommitted changes]
        self._lock = threading.Lock()

    def __contains__(self, visit: tuple[str, str]) -> bool:
        with self._lock:
            hit = self._pending.get(visit)
        if hit is not None:
            return hit[0]
        return self._reader.visit_open(visit)

    def _touch(self, visit: tuple[str, str], is_open: bool) -> None:
        with self._lock:
            hit = self._pending.get(visit)
            if hit is None:
                self._pending[visit] = [is_open, 1]
            else:
                hit[0] = is_open
                hit[1] += 1

    def add(self, visit: tuple[str, str]) -> None:
        self._touch(visit, True)

    def discard(self, visit: tuple[str, str]) -> None:
        self._touch(visit, False)

    def pending(self) -> int:
        return len(self._pending)

    def committed(self, changes: list[Change]) -> None:
        with self._lock:
            for c in changes:
                if c.settled.batch is not None:
                    continue  # a step-wise settlement: never an open visit
                visit = (c.settled.fixmedins_code, c.settled.mdtrt_id)
                hit = self._pending[visit]
                hit[1] -= 1
                assert hit[1] >= 0
                if hit[1] == 0:
                    del self._pending[visit]


class StoreHistory:
    """The history (engine.core.history.History) a store builds its engine with."""

    def __init__(self, journal: JournalMap, settled: SettledMap, open_visits: OpenVisits, recon: ReconIndex,
                 on_change, step_journal):
        self.journal = journal
        self.step_journal = step_journal  # engine.store.steps.StepJournalMap
        self.settled = settled
        self.open_visits = open_visits
        self.recon = recon
        self.on_change = on_change

    def committed(self, changes: list[Change]) -> None:
        """The changes are durable and indexed in the tail: the maps forget them."""
        self.journal.committed(changes)
        self.settled.committed(changes)
        self.open_visits.committed(changes)


def build_filters(conn: sqlite3.Connection, tail: Tail, reader: Reader) -> None:
    """The reader's msgid and visit filters: the keyed tables' keys and the tail's (on the writer's thread,
    no fold running: nothing is added meanwhile)."""
    t0 = time.perf_counter()
    gens = [g for g in (tail, tail.sealed) if g is not None]
    n_msg = conn.execute("SELECT COUNT(*) FROM msgid_index").fetchall()[0][0] + sum(len(g.msgid) for g in gens)
    n_vis = conn.execute("SELECT COUNT(*) FROM open_visit").fetchall()[0][0] + sum(len(g.visits) for g in gens)
    msgids, visits = Bloom(max(FILTER_KEYS_MIN, 2 * n_msg)), Bloom(max(FILTER_KEYS_MIN, 2 * n_vis))
    cur = conn.execute("SELECT msgid FROM msgid_index")
    while rows := cur.fetchmany(READ_CHUNK_ROWS):
        msgids.add_all([r[0] for r in rows])
    cur = conn.execute("SELECT fixmedins_code, mdtrt_id FROM open_visit")
    while rows := cur.fetchmany(READ_CHUNK_ROWS):
        visits.add_all_pairs(rows)
    for g in gens:
        msgids.add_all(list(g.msgid))
        visits.add_all_pairs(list(g.visits))
    reader.msgids, reader.visits = msgids, visits
    log.info("lookup filters: %d msgids, %d open visits (%.0f MiB) in %.2f s", n_msg, n_vis,
             (msgids.nbytes + visits.nbytes) / 2**20, time.perf_counter() - t0)


def filters_over_capacity(reader: Reader | None) -> bool:
    """The filters hold more keys than they were made for: false positives would grow."""
    return reader is not None and reader.msgids is not None and (
        reader.msgids.added > reader.msgids.capacity or reader.visits.added > reader.visits.capacity)


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
