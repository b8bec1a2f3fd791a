"""`yidi check --data DIR`: verify a store against its own journal (docs/contract.md section 8).

Reads one consistent snapshot (a read transaction; the server may keep writing)
and checks, printing each check and its result:
  - SQLite's quick_check, and the store's format;
  - every journal row's request and reply blob against its crc32;
  - every transfer: the postings of each journal row (the store's `posting`
    view) are exactly the legs that engine.core.ledger derives from its amounts, and
    a reversal negates its settlement;
  - every account's balance (as of the fold, plus the postings after it) equals
    the sum of its postings, and all balances sum to 0;
  - every person's accumulators and balance, and every chronic slot, equal the
    world's seed values with the journal's settlements and reversals applied in
    order (with the year roll-over of section 6);
  - the keyed tables (msgid index, reversals, open visits, reconciliation index)
    equal what the folded part of the journal implies;
  - every row made under a credential names a sign-in of that credential and
    institution in force when it was committed (section 10);
  - the visits of the step-wise flow (section 11): every settled batch's lines
    in force sum to its settlement, a batch has one settlement in force at most
    and its lines do not change while settled, every unsettled batch's
    settlement was reversed, and a voided msgid was never committed.
Exit status 0 when everything agrees, 1 on any difference, 2 when the store cannot be read.
"""
from __future__ import annotations

import os
import sqlite3
import sys
import zlib
from typing import Callable

import numpy as np

from engine.core import ledger
from engine.core.records import ACC_INPATIENT, ACC_OUTPATIENT, CHANGE_REVERSE, CHANGE_SETTLE
from engine.store.check_flow import check_sign_ins, check_visits
from engine.store.codec import CODECS, unpack_body
from engine.store.files import connect, db_path, unreadable_hint
from engine.store.pg import is_store_url
from engine.store.schema import AMOUNT_KEYS, KEYS_NAME, SCHEMA_VERSION, STORE_FORMAT

DIFFERENCES_SHOWN_MAX = 20
FETCH_ROWS = 65_536

_ACC = ("balc_fen", "acc_year", "hifp_ip_fen", "hifp_op_fen", "ded_op_fen", "burden2_fen", "second_paid_fen")


class _Report:
    def __init__(self, out: Callable[[str], None]):
        self.out = out
        self.failures = 0

    def result(self, what: str, diffs: list[str], count: int | None = None) -> None:
        if diffs:
            self.failures += 1
            self.out(f"FAIL  {what}: {len(diffs)} difference(s)")
            for d in diffs[:DIFFERENCES_SHOWN_MAX]:
                self.out(f"        {d}")
            if len(diffs) > DIFFERENCES_SHOWN_MAX:
                self.out(f"        ... and {len(diffs) - DIFFERENCES_SHOWN_MAX} more")
        else:
            self.out(f"ok    {what}" + ("" if count is None else f" ({count})"))


def _latest(conn: sqlite3.Connection, base_sql: str, log_sql: str) -> dict:
    """Rows of a folded table overlaid with its log (latest row per key wins)."""
    cur = {r[0]: r[1:] for r in conn.execute(base_sql)}
    for r in conn.execute(log_sql):
        cur[r[0]] = r[1:]
    return cur


def _identities(a: dict) -> str:
    """What does not add up in a settlement's own amounts (all >= 0), or ''."""
    out = []
    if min(a.values()) < 0:
        out.append("a negative amount")
    if a["medfee_sumamt"] != a["fulamt_ownpay_amt"] + a["overlmt_selfpay"] + a["preselfpay_amt"] + a["inscp_scp_amt"]:
        out.append("medfee_sumamt != fulamt_ownpay_amt + overlmt_selfpay + preselfpay_amt + inscp_scp_amt")
    if a["fund_pay_sumamt"] != a["hifp_pay"] + a["hifmi_pay"] + a["hifob_pay"]:
        out.append("fund_pay_sumamt != hifp_pay + hifmi_pay + hifob_pay")
    if a["psn_part_amt"] != a["medfee_sumamt"] - a["fund_pay_sumamt"]:
        out.append("psn_part_amt != medfee_sumamt - fund_pay_sumamt")
    if a["psn_cash_pay"] != a["psn_part_amt"] - a["acct_pay"]:
        out.append("psn_cash_pay != psn_part_amt - acct_pay")
    return "; ".join(out)


def check_store(data_dir: str, out: Callable[[str], None] = print, err: Callable[[str], None] | None = None) -> int:
    """Run every check; returns the exit status (0 ok, 1 differences, 2 unreadable).

    out: each check's line; err: the one line saying why the store cannot be read (default `out`).
    """
    err = out if err is None else err
    if is_store_url(data_dir):
        return _check_pg(data_dir, out, err)
    path = db_path(data_dir)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        err(f"yidi check: {data_dir}: a file, not a store's data folder")
        return 2
    if not os.path.exists(path):
        err(f"yidi check: no store in {data_dir} ({path} does not exist)")
        return 2
    rep = _Report(out)
    try:
        conn = connect(path, read_only=True)
        conn.text_factory = lambda b: b.decode("utf-8", "replace")  # report a damaged text, do not stop on it
        conn.execute("BEGIN")  # one snapshot for every check
        _check(conn, path, rep)
        conn.execute("COMMIT")
        conn.close()
    except sqlite3.DatabaseError as e:
        err(f"yidi check: cannot read {path}: {e}{unreadable_hint(path)}")
        return 2
    return _verdict(rep, out)


def _check_pg(url: str, out: Callable[[str], None], err: Callable[[str], None]) -> int:
    """check_store of a PostgreSQL store: the same checks on one snapshot (REPEATABLE READ), its format in place
    of SQLite's (engine.store.pg.schema: no fold, the keyed tables are views of the journal)."""
    import psycopg

    from engine.store.errors import StoreRefused
    from engine.store.pg.sql import connect, redact

    rep = _Report(out)
    try:
        conn = connect(url, application="yidi-check")
    except StoreRefused as e:
        err(f"yidi check: {e}")
        return 2
    try:
        conn.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _check(conn, redact(url), rep, pg=True)
        conn.raw.execute("COMMIT")
    except psycopg.Error as e:
        err(f"yidi check: cannot read {redact(url)}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}")
        return 2
    finally:
        conn.close()
    return _verdict(rep, out)


def _verdict(rep: _Report, out: Callable[[str], None]) -> int:
    if rep.failures:
        out(f"check FAILED: {rep.failures} check(s) found differences")
        return 1
    out("check passed")
    return 0


def _format_of(conn, rep: _Report, fmt: str, version: int) -> dict | None:
    """The store's meta when its format and schema version are `fmt` and `version` (reported), else None."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    diffs = []
    if meta.get("format") != fmt or meta.get("schema_version") != str(version):
        diffs.append(f"format {meta.get('format')!r} schema {meta.get('schema_version')!r}")
    rep.result(f"store format {fmt} schema {version}", diffs)
    return None if diffs else meta


def _check_pg_format(conn, rep: _Report) -> tuple[int, int] | None:
    """The store's format and version, and its head row against the journal and step tables."""
    from engine.store.pg.schema import PG_FORMAT, PG_SCHEMA_VERSION

    if _format_of(conn, rep, PG_FORMAT, PG_SCHEMA_VERSION) is None:
        return None
    head = conn.execute("SELECT gseq, seq, step_seq FROM head").fetchall()
    tops = conn.execute("SELECT (SELECT COALESCE(MAX(seq), 0) FROM journal), (SELECT COALESCE(MAX(seq), 0) FROM step),"
                        " (SELECT COALESCE(MAX(gseq), 0) FROM journal), (SELECT COALESCE(MAX(gseq), 0) FROM step)"
                        ).fetchall()[0]
    head_diffs = []
    if len(head) != 1:
        head_diffs.append(f"{len(head)} head rows")
    elif (head[0][1], head[0][2]) != tops[:2] or max(tops[2:]) > head[0][0]:
        head_diffs.append(f"head (batch {head[0][0]}, journal row {head[0][1]}, step row {head[0][2]}) against the"
                          f" journal's last row {tops[0]}, the step table's {tops[1]}, batches up to {max(tops[2:])}")
    rep.result("head row: the last batch, journal row and step row", head_diffs, head[0][0] if head else 0)
    if head_diffs:
        return None
    return int(head[0][1]), 0


def _check(conn, path: str, rep: _Report, pg: bool = False) -> None:
    positions = _check_pg_format(conn, rep) if pg else _check_format(conn, rep)
    if positions is None:
        return
    folded, logs_to = positions
    n_rows, n_rev = _check_rows(conn, path, rep, folded, logs_to)
    _check_blobs(conn, rep, n_rows)
    journal = _JournalReplay(conn, folded)
    journal.run(conn)
    rep.result("journal rows: the money of each settlement adds up (sections 3 and 6)", journal.sum_diffs, n_rows)
    rep.result("reversals: each names an earlier settlement, once, and negates it exactly", journal.pair_diffs,
               n_rev)
    rep.result("ledger: every transfer's postings are the legs of its journal row", journal.leg_diffs, n_rows)
    _check_accounts(conn, rep, folded)
    _check_persons(conn, rep, journal)
    _check_keyed(conn, rep, folded, journal.open_upto_folded)
    check_sign_ins(conn, rep)
    check_visits(conn, rep)


def _check_format(conn: sqlite3.Connection, rep: _Report) -> tuple[int, int] | None:
    """SQLite's quick_check, the store's format, and the keyed file's store_id.

    Returns (folded_seq, logs_deleted_to), or None when the other checks cannot run.
    """
    integrity = [r[0] for r in conn.execute("PRAGMA quick_check(20)")]
    rep.result("SQLite quick_check", [] if integrity == ["ok"] else integrity)
    if integrity != ["ok"]:
        return None
    meta = _format_of(conn, rep, STORE_FORMAT, SCHEMA_VERSION)
    if meta is None:
        return None
    state = conn.execute("SELECT folded_seq, store_id FROM fold_state").fetchall()
    ids = [r[1] for r in state]
    rep.result(f"keyed tables ({KEYS_NAME}) of this store", [] if ids == [meta.get("store_id")] else
               [f"store_id {ids} in the keyed file, {meta.get('store_id')!r} in the main one"])
    if ids != [meta.get("store_id")]:
        return None
    return int(state[0][0]), int(meta.get("logs_deleted_to", -1))


def _check_rows(conn: sqlite3.Connection, path: str, rep: _Report, folded: int, logs_to: int) -> tuple[int, int]:
    """The two files are of the same moment and the journal's rows are numbered 1..n; returns (rows, reversals)."""
    n_rows, n_settle, n_rev, max_seq = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN kind = '{CHANGE_SETTLE}' THEN 1 ELSE 0 END), 0),"
        f" COALESCE(SUM(CASE WHEN kind = '{CHANGE_REVERSE}' THEN 1 ELSE 0 END), 0),"
        " COALESCE(MAX(seq), 0) FROM journal"
    ).fetchone()
    rep.out(f"store {path}: {n_rows} journal rows ({n_settle} settlements, {n_rev} reversals),"
            f" folded up to {folded} of {max_seq}")
    rep.result("keyed file of the same moment (logs deleted <= folded <= journal rows)",
               [] if 0 <= logs_to <= folded <= max_seq else
               [f"logs deleted up to {logs_to}, folded up to {folded}, {max_seq} journal rows"])
    seq_diffs = [] if n_rows == max_seq else [f"journal seq runs to {max_seq} over {n_rows} rows"]
    rep.result("journal rows numbered 1..n without gaps", seq_diffs, n_rows)
    return n_rows, n_rev


def _check_blobs(conn: sqlite3.Connection, rep: _Report, n_rows: int) -> None:
    """Every request and reply blob against its crc32, and unpacked."""
    bad = []
    n_blobs = 0
    cur = conn.execute(f"SELECT b.seq, b.codec, b.body_lz4, b.crc32, j.kind = '{CHANGE_SETTLE}' AND j.chrg_bchno IS"
                       " NOT NULL FROM journal_blob b LEFT JOIN journal j USING (seq) ORDER BY b.seq")
    while rows := cur.fetchmany(FETCH_ROWS):
        for seq, codec, body, crc, stepwise in rows:
            n_blobs += 1
            if not isinstance(body, bytes):
                bad.append(f"journal row {seq}: request/reply is not a blob")
            elif zlib.crc32(body) != crc:
                bad.append(f"journal row {seq}: request/reply blob crc32 mismatch")
            elif codec not in CODECS:
                bad.append(f"journal row {seq}: unknown codec {codec!r}")
            else:
                try:
                    unpack_body(body, CODECS[codec], bool(stepwise))
                except Exception as e:  # a damaged body, whatever the error
                    bad.append(f"journal row {seq}: request/reply does not unpack ({e!r})")
    if n_blobs != n_rows:
        bad.append(f"{n_blobs} blobs for {n_rows} journal rows")
    rep.result("request and reply blobs (crc32, unpack)", bad, n_blobs)


class _Postings:
    """The `posting` view's rows in seq order, taken a journal row at a time."""

    def __init__(self, conn: sqlite3.Connection, diffs: list[str]):
        self.cur = conn.execute("SELECT seq, leg, account, amount_fen FROM posting ORDER BY seq, leg")
        self.diffs = diffs
        self.pending = None

    def of(self, seq: int) -> list:
        """The (account, amount_fen) of journal row seq; postings of rows before it are differences."""
        got = []
        while True:
            if self.pending is None:
                self.pending = self.cur.fetchone()
                if self.pending is None:
                    return got
            if self.pending[0] < seq:
                self.diffs.append(f"postings of seq {self.pending[0]} have no journal row")
                self.pending = None
                continue
            if self.pending[0] > seq:
                return got
            got.append((self.pending[2], self.pending[3]))
            self.pending = None


class _JournalReplay:
    """The persons' and chronic slots' seeds with the journal applied in order (sections 6 and 7), and what
    the journal's rows get wrong on the way: sums, reversal pairs, postings."""

    def __init__(self, conn: sqlite3.Connection, folded: int):
        self.folded = folded
        seeds = conn.execute(
            "SELECT psn, seed_balc_fen, seed_acc_year, seed_hifp_ip_fen, seed_hifp_op_fen, seed_ded_op_fen,"
            " seed_burden2_fen, seed_second_paid_fen FROM person ORDER BY psn"
        ).fetchall()
        self.n_psn = len(seeds)
        st = np.array([s[1:] for s in seeds], dtype=np.int64).reshape(self.n_psn, 7)
        self.balc, self.year, self.hip, self.hop, self.ded, self.b2, self.sp = (st[:, k].copy() for k in range(7))
        chr_seed = conn.execute("SELECT slot, psn, seed_hifp_cd_fen, seed_cd_year FROM chronic ORDER BY slot").fetchall()
        self.n_slots = len(chr_seed)
        self.cd_val = np.array([r[2] for r in chr_seed], dtype=np.int64)
        self.cd_year = np.array([r[3] for r in chr_seed], dtype=np.int64)
        self.leg_diffs: list[str] = []
        self.sum_diffs: list[str] = []
        self.pair_diffs: list[str] = []
        self.settlements: dict[str, tuple] = {}  # setl_id -> (seq, psn, acc_kind, cd_slot, acc_year, amounts, visit,
        #                                            burden, second)
        self.reversed_at: dict[str, int] = {}
        self.open_upto_folded: dict[tuple, str] = {}
        self.open_all: dict[tuple, str] = {}

    def run(self, conn: sqlite3.Connection) -> None:
        postings = _Postings(conn, self.leg_diffs)
        amount_cols = ", ".join(k + "_fen" for k in AMOUNT_KEYS)
        cur = conn.execute(
            "SELECT seq, msgid, kind, setl_id, reversed_setl_id, insuplc_admdvs, fixmedins_code, mdtrt_id, psn,"
            f" psn_no, insutype, acc_kind, cd_slot, acc_year, burden_fen, second_fen, {amount_cols}, chrg_bchno"
            " FROM journal ORDER BY seq"
        )
        while rows := cur.fetchmany(FETCH_ROWS):
            for r in rows:
                self._row(r, postings)
        postings.of(2**62)

    def _row(self, r: tuple, postings: _Postings) -> None:
        (seq, msgid, kind, setl_id, rev_id, insuplc, medins, mdtrt_id, psn, psn_no, insutype, acc_kind,
         cd_slot, acc_year, burden, second) = r[:16]
        amounts = dict(zip(AMOUNT_KEYS, r[16 : 16 + len(AMOUNT_KEYS)]))
        batch = r[16 + len(AMOUNT_KEYS)]
        # A step-wise settlement settles one batch of its visit (section 11): one in force per batch.
        visit = (medins, mdtrt_id) if batch is None else (medins, mdtrt_id, batch)
        if setl_id != "S" + msgid:
            self.pair_diffs.append(f"seq {seq}: setl_id {setl_id} is not 'S' + msgid {msgid}")
        if kind == CHANGE_SETTLE:
            sign, own = 1, amounts
            self.settlements[setl_id] = (seq, psn, acc_kind, cd_slot, acc_year, amounts, visit, burden, second)
            self._settle(seq, setl_id, psn, acc_kind, cd_slot, acc_year, amounts, visit, burden, second)
        else:
            sign = -1
            own = {k: -v for k, v in amounts.items()}
            if not self._reverse(seq, rev_id, psn, acc_kind, cd_slot, acc_year, own, visit, burden, second):
                return
        bad_sums = _identities(own)
        if bad_sums:
            self.sum_diffs.append(f"seq {seq} ({kind} {setl_id}): {bad_sums}")
        got = postings.of(seq)
        try:
            want = ledger.postings(sign, insuplc, insutype, psn_no, medins, own)
        except (AssertionError, KeyError) as e:
            self.leg_diffs.append(f"seq {seq} ({kind} {setl_id}): no valid legs for its amounts ({e!r})")
            return
        if got != want:
            self.leg_diffs.append(f"seq {seq} ({kind} {setl_id}): postings {got} != {want}")

    def _settle(self, seq, setl_id, psn, acc_kind, cd_slot, acc_year, amounts, visit, burden, second) -> None:
        if visit in self.open_all:
            self.pair_diffs.append(f"seq {seq}: visit {visit} settled while {self.open_all[visit]} is in force")
        self.open_all[visit] = setl_id
        if seq <= self.folded and len(visit) == 2:  # the open_visit table holds one-shot visits only
            self.open_upto_folded[visit] = setl_id
        # Section 6: bring the year forward, then add what the settlement took.
        year = self.year
        if acc_year > year[psn]:
            year[psn] = acc_year
            self.hip[psn] = self.hop[psn] = self.ded[psn] = self.b2[psn] = self.sp[psn] = 0
        elif acc_year < year[psn]:
            self.pair_diffs.append(f"seq {seq}: settles year {acc_year} after the person reached {year[psn]}")
        if acc_kind == ACC_INPATIENT:
            self.hip[psn] += amounts["hifp_pay"]
            self.b2[psn] += burden
            self.sp[psn] += second
        elif acc_kind == ACC_OUTPATIENT:
            self.ded[psn] += amounts["act_pay_dedc"]
            self.hop[psn] += amounts["hifp_pay"]
        else:
            if self.cd_year[cd_slot] != acc_year:
                self.cd_val[cd_slot] = 0
                self.cd_year[cd_slot] = acc_year
            self.cd_val[cd_slot] += amounts["hifp_pay"]
        self.balc[psn] -= amounts["acct_pay"]

    def _reverse(self, seq, rev_id, psn, acc_kind, cd_slot, acc_year, own, visit, burden, second) -> bool:
        """Apply a reversal; False when it names no earlier settlement (nothing more to check of it)."""
        s = self.settlements.get(rev_id)
        if s is None:
            self.pair_diffs.append(f"seq {seq}: reverses {rev_id}, not an earlier settlement")
            return False
        if rev_id in self.reversed_at:
            self.pair_diffs.append(f"seq {seq}: reverses {rev_id} again (first at {self.reversed_at[rev_id]})")
        self.reversed_at[rev_id] = seq
        if (psn, acc_kind, cd_slot, acc_year, visit) != (s[1], s[2], s[3], s[4], s[6]) or own != s[5] \
                or (-burden, -second) != (s[7], s[8]):
            self.pair_diffs.append(f"seq {seq}: reversal of {rev_id} does not negate it exactly")
        if self.open_all.get(visit) == rev_id:
            del self.open_all[visit]
        if seq <= self.folded and self.open_upto_folded.get(visit) == rev_id:
            del self.open_upto_folded[visit]
        # Section 7: the balance comes back; the accumulators only within the same year.
        self.balc[psn] += own["acct_pay"]
        if self.year[psn] == acc_year:
            if acc_kind == ACC_INPATIENT:
                self.hip[psn] -= own["hifp_pay"]
                self.b2[psn] -= s[7]
                self.sp[psn] -= s[8]
            elif acc_kind == ACC_OUTPATIENT:
                self.ded[psn] -= own["act_pay_dedc"]
                self.hop[psn] -= own["hifp_pay"]
            else:
                self.cd_val[cd_slot] -= own["hifp_pay"]
        return True


def _check_accounts(conn: sqlite3.Connection, rep: _Report, folded: int) -> None:
    """Every account's balance (as of the fold, plus the postings after it) is the sum of its postings."""
    sums = {a: (s, n) for a, s, n in conn.execute(
        "SELECT account, SUM(amount_fen), COUNT(*) FROM posting GROUP BY account")}
    # The account table is as of the fold; the rows after it are added here.
    bal = {a: [b, n] for a, b, n in conn.execute("SELECT account, balance_fen, postings FROM account")}
    for a, b, n in conn.execute(
            "SELECT account, SUM(amount_fen), COUNT(*) FROM posting WHERE seq > ? GROUP BY account", (folded,)):
        have = bal.setdefault(a, [0, 0])
        have[0] += b
        have[1] += n
    acc_diffs = []
    for a in sorted(sums.keys() | bal.keys()):
        want = sums.get(a, (0, 0))
        have = bal.get(a, (0, 0))
        if tuple(want) != tuple(have):
            acc_diffs.append(f"{a}: balance {have[0]} fen over {have[1]} postings, postings sum to "
                             f"{want[0]} fen over {want[1]}")
    rep.result("ledger: every account's balance equals the sum of its postings", acc_diffs, len(bal))
    total = sum(b[0] for b in bal.values())
    rep.result("ledger: all balances sum to 0.00", [] if total == 0 else [f"they sum to {total} fen"], len(bal))


def _check_persons(conn: sqlite3.Connection, rep: _Report, j: _JournalReplay) -> None:
    """Every person's and chronic slot's current values (folded rows with the logs after) equal the replay's."""
    cur_psn = _latest(
        conn, f"SELECT psn, {', '.join(_ACC)} FROM person",
        f"SELECT psn, {', '.join(_ACC)} FROM person_log ORDER BY seq",
    )
    psn_diffs = []
    for i in range(j.n_psn):
        want = (int(j.balc[i]), int(j.year[i]), int(j.hip[i]), int(j.hop[i]), int(j.ded[i]), int(j.b2[i]),
                int(j.sp[i]))
        have = tuple(cur_psn[i])
        if want != have:
            psn_diffs.append(f"person {i}: store {dict(zip(_ACC, have))} journal implies {dict(zip(_ACC, want))}")
    rep.result("persons: balance and accumulators equal seed + journal", psn_diffs, j.n_psn)
    cur_chr = _latest(
        conn, "SELECT slot, hifp_cd_fen, cd_year FROM chronic",
        "SELECT slot, hifp_cd_fen, cd_year FROM chronic_log ORDER BY seq",
    )
    chr_diffs = []
    for k in range(j.n_slots):
        want, have = (int(j.cd_val[k]), int(j.cd_year[k])), tuple(cur_chr[k])
        if want != have:
            chr_diffs.append(f"chronic slot {k}: store (hifp_cd, year) {have}, journal implies {want}")
    rep.result("chronic qualifications: hifp_cd equals seed + journal", chr_diffs, j.n_slots)


def _check_keyed(conn: sqlite3.Connection, rep: _Report, folded: int, open_upto_folded: dict) -> None:
    """The keyed tables equal what the journal implies up to the fold."""
    kd = []
    n_idx, n_idx_ok = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN j.msgid IS NOT NULL THEN 1 ELSE 0 END), 0) FROM msgid_index i"
        " LEFT JOIN journal j ON j.seq = i.seq AND j.msgid = i.msgid"
    ).fetchone()
    n_folded = conn.execute("SELECT COUNT(*) FROM journal WHERE seq <= ?", (folded,)).fetchone()[0]
    if n_idx != n_folded or n_idx_ok != n_idx:
        kd.append(f"msgid index: {n_idx} entries, {n_idx_ok} point to their row, {n_folded} rows folded")
    n_rv, n_rv_ok = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN j.seq IS NOT NULL THEN 1 ELSE 0 END), 0) FROM reversal r"
        f" LEFT JOIN journal j ON j.seq = r.seq AND j.kind = '{CHANGE_REVERSE}' AND j.reversed_setl_id = r.setl_id"
    ).fetchone()
    n_rv_want = conn.execute(f"SELECT COUNT(*) FROM journal WHERE seq <= ? AND kind = '{CHANGE_REVERSE}'",
                             (folded,)).fetchone()[0]
    if n_rv != n_rv_want or n_rv_ok != n_rv:
        kd.append(f"reversal index: {n_rv} entries, {n_rv_ok} point to their row, {n_rv_want} reversals folded")
    have_open = {(a, b): c for a, b, c in conn.execute("SELECT fixmedins_code, mdtrt_id, setl_id FROM open_visit")}
    if have_open != open_upto_folded:
        missing = open_upto_folded.keys() - have_open.keys()
        extra = have_open.keys() - open_upto_folded.keys()
        kd.append(f"open visits: {len(have_open)} in the table, the journal implies {len(open_upto_folded)}"
                  f" ({len(missing)} missing, {len(extra)} extra)")
    n_mt = conn.execute("SELECT COUNT(*) FROM medins_time m JOIN journal j ON j.seq = m.seq"
                        " AND j.fixmedins_code = m.fixmedins_code AND j.setl_time = m.setl_time").fetchone()[0]
    n_mt_all = conn.execute("SELECT COUNT(*) FROM medins_time").fetchone()[0]
    if n_mt != n_mt_all or n_mt_all != n_folded:
        kd.append(f"reconciliation index: {n_mt_all} entries, {n_mt} match, {n_folded} rows folded")
    rep.result("msgid index, reversal index, open visits and reconciliation index equal the folded journal",
               kd, n_folded)


def main(data_dir: str) -> int:
    return check_store(data_dir, out=lambda s: print(s, flush=True))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
