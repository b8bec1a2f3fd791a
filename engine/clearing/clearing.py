"""Monthly clearing (清算) and pre-payment (预付金) usage (docs/contract.md section 8).

`yidi clear --data DIR --period YYYY-MM --out DIR` closes a period and writes

  statement-YYYY-MM.csv  insured_prov,treatment_prov,setl_cnt,medfee_sumamt,fund_pay_sumamt,acct_pay,clear_amt
  netting-YYYY-MM.csv    payer_prov,payee_prov,net_amt
  report-YYYY-MM.html    the period for a reader: who owes whom (a matrix of provinces), the netted
                         flows, and the pre-payment usage of each insured province

The store is read with plain SQL on its `journal` (one row per committed
settlement or reversal, money in signed fen), and the close is one row in its
`closed_period` table: the period and `last_seq`, the last journal row that
existed when it was closed. A closed period's files depend only on the rows up
to its `last_seq`, so closing twice writes the same bytes and changes nothing.
`yidi clear` may run while a server writes: SQLite serialises the one short
write (the closed_period row) with the server's commits, and every read is a
snapshot.

Which period a journal row counts in. Section 8: the month of its `setl_time`
(a reversal's own time: it counts in the period it is made in). A row can only
come after its month was closed when clocks disagree (a replay whose inf_time
goes back, a server clock set back): such a late row counts in the first
period, from its month on, that was not yet closed when the row was committed.
That is fixed at commit time, so it never moves between two closings.

Closing safely (`clear`; `close` is the bare write). An operator closes the
month that has ended, after the months before it. `clear` refuses, with one
line and nothing written, to close a period that has not ended on this
machine's clock (rows of it may still come, and would then count in a later
period), or one while an earlier period still holds cross-province rows not
cleared: those rows stay in their own period until it is closed, so closing a
later one first clears none of them. `force` closes anyway, and the close
keeps what was overridden (the report shows it). A dry run computes the files
as a close now would, writes them under `.dry-run` names, and writes nothing to
the store. A period already closed is never refused: its files are written
again, unchanged.

Pre-payment. An insured province's usage is what its cross-province rows
charged (clear_amt, reversals subtracted) in periods not yet closed, over its
`prepay.csv` amount. At the threshold (default 70 %) it is a warning: in
/metrics (PrepayCollector), in the clearing report, and for `yidi demo`
(prepay_usage). The report of a period shows, as of its close, what the
period drew and what later periods had drawn already.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass

from engine.contract import money
from engine.contract.protocol import PROVINCE_NAMES_ZH
from engine.clearing.records import Closing, NetRow, PairRow
from engine.clearing.report import report_html
from engine.store.pg import is_store_url

PERIOD_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])\Z")
PREPAY_WARN_BP_DEFAULT = 7_000  # 70 %
PREPAY_WARN_ENV = "YIDI_PREPAY_WARN"  # a ratio such as 0.70, for the server's metrics
DB_NAME = "yidi.sqlite3"  # engine.store.DB_NAME; not imported so that clearing needs no engine
STORE_FORMAT = "yidi-store"
META_CLOSE_PREFIX = "clearing:"  # meta key of a closed period's pre-payment snapshot
BUSY_TIMEOUT_S = 30.0  # waiting for the server's commit to release the write lock
MONTHS_AHEAD_MAX = 1_200  # a late row's period is searched at most this many months on
OPEN_PERIODS_NAMED_MAX = 6  # earlier open periods a refusal names
DRY_RUN_INFIX = ".dry-run"  # statement-2026-11.dry-run.csv: a dry run's files, never the official names
METRICS_REFRESH_S_MIN = 1.0  # /metrics reads the journal at most once a second

STATEMENT_HEADER = "insured_prov,treatment_prov,setl_cnt,medfee_sumamt,fund_pay_sumamt,acct_pay,clear_amt"
NETTING_HEADER = "payer_prov,payee_prov,net_amt"

# SQL fragments over the journal: provinces, the cross-province filter, the signed count.
_INS = "substr(insuplc_admdvs, 1, 2) || '0000'"
_TRT = "substr(mdtrtarea_admvs, 1, 2) || '0000'"
_CROSS = "substr(insuplc_admdvs, 1, 2) <> substr(mdtrtarea_admvs, 1, 2)"
_MONTH = "substr(setl_time, 1, 7)"
_CNT = "CASE kind WHEN 'settle' THEN 1 ELSE -1 END"


class ClearingError(Exception):
    """The clearing cannot be done (no store, a bad period, an unreadable prepay.csv, a bad --out)."""


class ClearingRefused(ClearingError):
    """Closing the period now is what an operator would not mean (close_refusal); `force` overrides."""


def next_month(period: str) -> str:
    y, m = int(period[:4]), int(period[5:7])
    return f"{y + m // 12:04d}-{m % 12 + 1:02d}"


def parse_ratio_bp(text: str) -> int:
    """A threshold as a ratio ('0.70') or a percentage ('70%') to basis points, within (0, 1]."""
    t = text.strip()
    try:
        bp = money.parse_scaled(t[:-1], 2) if t.endswith("%") else money.parse_bp(t)
    except money.NumberError as e:
        raise ClearingError(f"threshold {text!r}: {e}") from None
    if not 0 < bp <= money.BP_ONE:
        raise ClearingError(f"threshold {text!r} must be within (0, 1]")
    return bp


def warn_bp_from_env() -> int:
    v = os.environ.get(PREPAY_WARN_ENV)
    return PREPAY_WARN_BP_DEFAULT if not v else parse_ratio_bp(v)


def load_prepay(world_dir: str) -> dict[str, int]:
    """prepay.csv of a world folder (section 2), validated as the world loader does: province -> fen."""
    from engine.world.loader import _Csv, WorldError  # the loader's own validators, not a second parser

    try:
        f = _Csv(world_dir, "prepay.csv")
        prov = f.province("prov_admdvs")
        f.unique(["prov_admdvs"], "duplicate province")
        amt = f.scaled("amount", 2)
    except WorldError as e:
        raise ClearingError(f"world refused: {e}") from None
    return dict(zip(prov.to_pylist(), (int(x) for x in amt)))


# ---------------------------------------------------------------- the store


def open_db(data_dir: str, write: bool = False) -> sqlite3.Connection:
    """A connection to the store of `data_dir` (read-only unless `write`), refused when it is not one.

    A `postgresql://` URL is a PostgreSQL store (engine.store.pg): the same statements run on it, and a close
    takes the store's lock, which every node's batch takes (so a close falls between two batches).
    """
    if is_store_url(data_dir):
        return _open_pg(data_dir)
    path = os.path.join(data_dir, DB_NAME)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ClearingError(f"{data_dir}: a file, not a store's data folder")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        raise ClearingError(f"{data_dir}: no store (run `yidi replay --data` or `yidi serve` first)")
    if write and not os.access(data_dir, os.W_OK):
        raise ClearingError(f"{data_dir}: the folder cannot be written, and closing a period writes to the store")
    uri = f"file:{path}?mode={'rw' if write else 'ro'}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                               check_same_thread=False)
        fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchall()
    except sqlite3.DatabaseError as e:
        # A reader of a WAL database makes its -shm file beside it: a folder that cannot be written refuses it.
        hint = "" if os.access(data_dir, os.W_OK) else (
            "; the folder cannot be written, and SQLite reads a store by making its -shm file there")
        raise ClearingError(f"{path}: not a readable yidi store ({e}{hint})") from None
    if fmt != [(STORE_FORMAT,)]:
        conn.close()
        raise ClearingError(f"{path}: an SQLite file, but not a yidi store")
    if not write:
        conn.execute("PRAGMA query_only = 1")
    return conn


def _open_pg(url: str):
    from engine.store.errors import StoreRefused
    from engine.store.pg.schema import PG_FORMAT
    from engine.store.pg.sql import connect, redact

    try:
        conn = connect(url, application="yidi-clear")
    except StoreRefused as e:
        raise ClearingError(str(e)) from None
    try:
        fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchall()
    except Exception as e:  # noqa: BLE001  (psycopg's errors: no meta table, no privilege)
        conn.close()
        raise ClearingError(f"{redact(url)}: not a readable yidi store ({str(e).strip()})") from None
    if fmt != [(PG_FORMAT,)]:
        conn.close()
        raise ClearingError(f"{redact(url)}: a database, but not a yidi store")
    return conn


def closed_periods(conn: sqlite3.Connection) -> dict[str, int]:
    """period -> last_seq of every closed period."""
    return dict(conn.execute("SELECT period, last_seq FROM closed_period").fetchall())


def assigned_period(month: str, seq: int, closed: dict[str, int]) -> str:
    """The period a journal row counts in (module docstring): its month, or the first later one
    that was not closed before the row was committed."""
    p = month
    for _ in range(MONTHS_AHEAD_MAX):
        last = closed.get(p)
        if last is None or seq <= last:
            return p
        p = next_month(p)
    raise AssertionError(f"no open period within {MONTHS_AHEAD_MAX} months of {month}")


def _late_rows(conn: sqlite3.Connection, last_seq: int, cols: str) -> list[tuple]:
    """Rows (seq <= last_seq, cross-province) committed after their month was closed: (month, seq, *cols)."""
    # CROSS JOIN keeps the journal the outer loop: one pass, closed_period probed by its key.
    return conn.execute(
        f"SELECT {_MONTH}, j.seq, {cols} FROM journal j CROSS JOIN closed_period c"
        f" WHERE j.seq <= ? AND c.period = {_MONTH} AND j.seq > c.last_seq AND {_CROSS}",
        (last_seq,),
    ).fetchall()


# ---------------------------------------------------------------- closing


def _last_world_dir(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT world_dir FROM world_load ORDER BY id DESC LIMIT 1").fetchall()
    if not row:
        raise ClearingError("the store names no world folder: pass --world")
    return row[0][0]


def closing_of(conn: sqlite3.Connection, period: str) -> Closing | None:
    """How `period` was closed, or None when it is open."""
    row = conn.execute("SELECT closed_at, last_seq FROM closed_period WHERE period = ?", (period,)).fetchall()
    if not row:
        return None
    snap = conn.execute("SELECT value FROM meta WHERE key = ?", (META_CLOSE_PREFIX + period,)).fetchall()
    s = json.loads(snap[0][0]) if snap else {"prepay_fen": {}, "warn_bp": PREPAY_WARN_BP_DEFAULT, "world_dir": ""}
    return Closing(period, row[0][0], row[0][1], {k: int(v) for k, v in s["prepay_fen"].items()},
                   int(s["warn_bp"]), s["world_dir"], False, s.get("forced", ""))


def close(conn: sqlite3.Connection, period: str, *, world_dir: str | None = None, warn_bp: int | None = None,
          now: str | None = None, forced: str = "", prepay_fen: dict[str, int] | None = None) -> Closing:
    """Close `period` (one short write transaction), or return how it was closed before.

    A period already closed keeps its last_seq, pre-payment snapshot and threshold:
    its files never change. The pre-payment amounts are read from `world_dir`, by
    default the world folder the store last started with (or are `prepay_fen`, read from
    it already). `forced`: the refusal
    (close_refusal) the operator overrode, kept with the close. No check here:
    `clear` is what an operator runs.
    """
    if not PERIOD_RE.match(period or ""):
        raise ClearingError(f"period {period!r} must be YYYY-MM")
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = closing_of(conn, period)
        if done is not None:
            conn.execute("COMMIT")
            return done
        wdir = world_dir or _last_world_dir(conn)
        prepay = load_prepay(wdir) if prepay_fen is None else prepay_fen
        bp = PREPAY_WARN_BP_DEFAULT if warn_bp is None else warn_bp
        last_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchall()[0][0]
        closed_at = now or _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        conn.execute("INSERT INTO closed_period (period, closed_at, last_seq) VALUES (?, ?, ?)",
                     (period, closed_at, last_seq))
        snap = {"prepay_fen": prepay, "warn_bp": bp, "world_dir": os.path.abspath(wdir)}
        if forced:  # absent otherwise: a close as before keeps the same snapshot bytes
            snap["forced"] = forced
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)",
                     (META_CLOSE_PREFIX + period, json.dumps(snap, sort_keys=True)))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return Closing(period, closed_at, last_seq, prepay, bp, snap["world_dir"], True, forced)


def preview(conn: sqlite3.Connection, period: str, *, world_dir: str | None = None, warn_bp: int | None = None,
            prepay_fen: dict[str, int] | None = None) -> Closing:
    """What closing the open `period` now would record, without writing it (a dry run)."""
    wdir = world_dir or _last_world_dir(conn)
    last_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchall()[0][0]
    bp = PREPAY_WARN_BP_DEFAULT if warn_bp is None else warn_bp
    prepay = load_prepay(wdir) if prepay_fen is None else prepay_fen
    return Closing(period, "", last_seq, prepay, bp, os.path.abspath(wdir), False, preview=True)


def open_activity(conn: sqlite3.Connection) -> tuple[dict[str, int], str | None]:
    """The cross-province rows that count in each open period (module docstring: late rows move on),
    and the journal's latest setl_time (None when it is empty). One snapshot, one pass over the journal."""
    conn.execute("BEGIN")
    try:
        closed = closed_periods(conn)
        count: dict[str, int] = {}
        latest = None
        for month, n, t in conn.execute(
            f"SELECT {_MONTH}, SUM(CASE WHEN {_CROSS} THEN 1 ELSE 0 END), MAX(setl_time) FROM journal GROUP BY 1"
        ):
            count[month] = n
            latest = t if latest is None or t > latest else latest
        for month, seq, _ in _late_rows(conn, 2**62, "1"):
            count[month] -= 1
            p = assigned_period(month, seq, closed)
            count[p] = count.get(p, 0) + 1
    finally:
        conn.execute("COMMIT")
    return {p: n for p, n in count.items() if n and p not in closed}, latest


def close_refusal(conn: sqlite3.Connection, period: str, now: _dt.datetime) -> str:
    """Why closing the open `period` now would be a mistake, in one line; "" when it would not.

    Two mistakes (module docstring): the period has not ended on this machine's
    clock, or an earlier period still holds cross-province rows not cleared. The
    journal's latest setl_time is named: a replay of past data is the common
    legitimate close, and a journal ahead of the clock says the clock or the data
    is wrong.
    """
    open_rows, latest = open_activity(conn)
    this_month = now.strftime("%Y-%m")
    why = []
    if period >= this_month:
        seen = "the journal is empty" if latest is None else f"the journal's latest setl_time is {latest}"
        if latest is not None and latest[:7] > this_month:
            seen += ", ahead of this clock: a replay of future times, or a clock set back?"
        why.append(f"it has not ended on this machine's clock (now {now:%Y-%m-%d %H:%M:%S}; {seen}): its "
                   "settlements may still come, and would then count in a later period")
    before = sorted(p for p in open_rows if p < period)
    if before:
        named = ", ".join(f"{p} ({open_rows[p]} row{'s' if open_rows[p] != 1 else ''})"
                          for p in before[:OPEN_PERIODS_NAMED_MAX])
        more = f" and {len(before) - OPEN_PERIODS_NAMED_MAX} more" if len(before) > OPEN_PERIODS_NAMED_MAX else ""
        why.append(f"earlier periods still hold cross-province rows not cleared: {named}{more}; a row stays in its "
                   f"own period until that is closed, so closing {period} first clears none of them: close "
                   f"{before[0]} first")
    return "; and ".join(why)


def refused(period: str, refusal: str) -> str:
    """The line `yidi clear` refuses with."""
    return f"period {period} not closed: {refusal}; --force closes it anyway"


def statement(conn: sqlite3.Connection, c: Closing) -> tuple[list[PairRow], dict]:
    """The statement rows of a closed period, sorted; and facts for the report.

    Rows up to c.last_seq whose period is c.period; only cross-province ones.
    """
    pairs: dict[tuple[str, str], PairRow] = {}
    facts = {"settlements": 0, "reversals": 0, "late_rows": 0, "open_after_fen": {}}
    conn.execute("BEGIN")  # one snapshot for all the reads
    try:
        # One pass: the period's own rows by pair, and what later periods had drawn by insured province.
        for after, ins, trt, kind_settle, n, cnt, medfee, fund, acct in conn.execute(
            f"SELECT {_MONTH} > :p, {_INS}, {_TRT}, kind = 'settle', COUNT(*), SUM({_CNT}),"
            " SUM(medfee_sumamt_fen), SUM(fund_pay_sumamt_fen), SUM(acct_pay_fen)"
            f" FROM journal WHERE seq <= :last AND {_MONTH} >= :p AND {_CROSS} GROUP BY 1, 2, 3, 4",
            {"p": c.period, "last": c.last_seq},
        ):
            if after:
                o = facts["open_after_fen"]
                o[ins] = o.get(ins, 0) + fund + acct
                continue
            pr = pairs.get((ins, trt)) or pairs.setdefault((ins, trt), PairRow(ins, trt))
            pr.add(cnt, medfee, fund, acct)
            facts["settlements" if kind_settle else "reversals"] += n
        closed = closed_periods(conn)
        for month, seq, ins, trt, kind, medfee, fund, acct in _late_rows(
            conn, c.last_seq,
            f"{_INS}, {_TRT}, kind, medfee_sumamt_fen, fund_pay_sumamt_fen, acct_pay_fen",
        ):
            if month >= c.period or assigned_period(month, seq, closed) != c.period:
                continue  # a month from c.period on was counted above
            pr = pairs.get((ins, trt)) or pairs.setdefault((ins, trt), PairRow(ins, trt))
            pr.add(1 if kind == "settle" else -1, medfee, fund, acct)
            facts["settlements" if kind == "settle" else "reversals"] += 1
            facts["late_rows"] += 1
    finally:
        conn.execute("COMMIT")
    return [pairs[k] for k in sorted(pairs)], facts


def netting(rows: list[PairRow]) -> list[NetRow]:
    """One row per unordered pair with a non-zero net (轧差): the payer owes the payee net_fen > 0."""
    owed: dict[tuple[str, str], int] = {(r.insured, r.treatment): r.clear_fen for r in rows}
    out = []
    for a, b in sorted({tuple(sorted(k)) for k in owed}):
        net = owed.get((a, b), 0) - owed.get((b, a), 0)  # what a owes b
        if net > 0:
            out.append(NetRow(a, b, net))
        elif net < 0:
            out.append(NetRow(b, a, -net))
    out.sort(key=lambda n: (n.payer, n.payee))
    # Paired with the statement: netting keeps every province's net position.
    before = {p: v for p, v in positions(rows).items() if v}
    assert before == {p: v for p, v in _positions((n.payee, n.payer, n.net_fen) for n in out).items() if v}
    return out


def positions(rows: list[PairRow]) -> dict[str, int]:
    """Province -> what it is owed minus what it owes, from the statement."""
    return _positions((r.treatment, r.insured, r.clear_fen) for r in rows)


def _positions(flows) -> dict[str, int]:
    """Province -> what it is owed minus what it owes, from (creditor, debtor, fen) flows."""
    pos: dict[str, int] = {}
    for creditor, debtor, fen in flows:
        pos[creditor] = pos.get(creditor, 0) + fen
        pos[debtor] = pos.get(debtor, 0) - fen
    return pos


def statement_csv(rows: list[PairRow]) -> bytes:
    f = money.format_fen
    lines = [STATEMENT_HEADER] + [
        f"{r.insured},{r.treatment},{r.setl_cnt},{f(r.medfee_fen)},{f(r.fund_fen)},{f(r.acct_fen)},{f(r.clear_fen)}"
        for r in rows
    ]
    return ("\n".join(lines) + "\n").encode()


def netting_csv(rows: list[NetRow]) -> bytes:
    lines = [NETTING_HEADER] + [f"{n.payer},{n.payee},{money.format_fen(n.net_fen)}" for n in rows]
    return ("\n".join(lines) + "\n").encode()


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ClearingError(f"cannot write {path}: {e.strerror or e}") from None


def _check_out(out_dir: str) -> None:
    """--out is a folder, or can be made in a folder that exists: a missing parent (a typo, a share not
    mounted) is refused rather than made."""
    if os.path.isdir(out_dir):
        return
    if os.path.exists(out_dir):
        raise ClearingError(f"--out {out_dir}: exists and is not a folder")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise ClearingError(f"--out {out_dir}: its parent folder {parent} does not exist (not created: a typo, "
                            "or a share not mounted?)")


def _make_out(out_dir: str) -> None:
    """Create --out when absent and prove it writable, before anything is closed."""
    probe = os.path.join(out_dir, f".yidi-probe-{os.getpid()}")
    try:
        if not os.path.isdir(out_dir):
            os.mkdir(out_dir)
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ClearingError(f"--out {out_dir}: cannot write in it ({e.strerror or e})") from None


@dataclass(slots=True)
class ClearResult:
    closing: Closing
    files: list[str]
    pairs: int
    rows_cleared: int  # settlements and reversals counted in the period
    seconds: float
    refusal: str = ""  # why a close without force is refused now ("" when it is not); see close_refusal


def clear(data_dir: str, period: str, out_dir: str, *, world_dir: str | None = None, warn_bp: int | None = None,
          force: bool = False, dry_run: bool = False, now: _dt.datetime | None = None) -> ClearResult:
    """`yidi clear`: close the period (or find it closed) and write its three files (module docstring).

    An open period is refused (ClearingRefused, nothing written) when close_refusal
    says why, unless `force`. `dry_run`: nothing is written to the store; the files
    a close now would write (the closed ones, for a closed period) go to `out_dir`
    under DRY_RUN_INFIX names. `now`: this machine's clock unless given (tests).
    """
    t0 = time.perf_counter()
    if not PERIOD_RE.match(period or ""):
        raise ClearingError(f"period {period!r} must be YYYY-MM")
    _check_out(out_dir)
    conn = open_db(data_dir, write=not dry_run)
    try:
        c = closing_of(conn, period)
        refusal = ""
        prepay = None
        if c is None:
            refusal = close_refusal(conn, period, now or _dt.datetime.now())
            if refusal and not (force or dry_run):
                raise ClearingRefused(refused(period, refusal))
            world_dir = world_dir or _last_world_dir(conn)
            prepay = load_prepay(world_dir)  # a bad prepay.csv is refused before --out is made
        _make_out(out_dir)
        if dry_run:
            c = c or preview(conn, period, world_dir=world_dir, warn_bp=warn_bp, prepay_fen=prepay)
        else:
            c = close(conn, period, world_dir=world_dir, warn_bp=warn_bp, forced=refusal, prepay_fen=prepay)
        rows, facts = statement(conn, c)
    finally:
        conn.close()
    net = netting(rows)
    infix = DRY_RUN_INFIX if dry_run else ""
    files = []
    for name, data in (
        (f"statement-{period}{infix}.csv", statement_csv(rows)),
        (f"netting-{period}{infix}.csv", netting_csv(net)),
        (f"report-{period}{infix}.html", report_html(c, rows, net, facts).encode()),
    ):
        path = os.path.join(out_dir, name)
        _write_atomic(path, data)
        files.append(path)
    return ClearResult(c, files, len(rows), facts["settlements"] + facts["reversals"], time.perf_counter() - t0,
                       refusal)


# ---------------------------------------------------------------- pre-payment


@dataclass(slots=True, frozen=True)
class PrepayUsage:
    """One insured province's use of its pre-payment (fen); ratio_bp None when it deposited nothing."""

    prov: str
    prepay_fen: int
    used_fen: int
    ratio_bp: int | None
    warning: bool


def usage_rows(used: dict[str, int], prepay: dict[str, int], warn_bp: int) -> list[PrepayUsage]:
    """Every province with a deposit or a use, sorted; a use without a deposit is a warning."""
    out = []
    for p in sorted(set(used) | set(prepay)):
        u, d = used.get(p, 0), prepay.get(p, 0)
        ratio = (u * money.BP_ONE) // d if d > 0 else None
        out.append(PrepayUsage(p, d, u, ratio, (u > 0) if ratio is None else ratio >= warn_bp))
    return out


class PrepayMonitor:
    """Live pre-payment usage over a store: cross-province charges of periods not yet closed.

    refresh() reads only the journal rows committed since the last call, unless a
    period was closed meanwhile (then it sums the journal again, once a month).
    Thread-safe; the connection is read-only.
    """

    def __init__(self, data_dir: str, prepay_fen: dict[str, int], warn_bp: int = PREPAY_WARN_BP_DEFAULT):
        self.data_dir = data_dir
        self.prepay_fen = dict(prepay_fen)
        self.warn_bp = warn_bp
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed: dict[str, int] | None = None
        self._sums: dict[tuple[str, str], int] = {}  # (period, insured province) -> clear_amt fen
        self._seen_seq = 0
        self._t_refresh = -1e9
        self._rows: list[PrepayUsage] = []

    def set_deposits(self, prepay_fen: dict[str, int]) -> None:
        """The deposits of a reloaded world's prepay.csv: the next refresh reports usage against them."""
        with self._lock:
            self.prepay_fen = dict(prepay_fen)
            self._t_refresh = -1e9

    def refresh(self, min_interval_s: float = 0.0) -> list[PrepayUsage]:
        with self._lock:
            if time.monotonic() - self._t_refresh >= min_interval_s:
                self._refresh()
                self._t_refresh = time.monotonic()
            return self._rows

    def _refresh(self) -> None:
        if self._conn is None:
            self._conn = open_db(self.data_dir)
        db = self._conn
        db.execute("BEGIN")
        try:
            closed = closed_periods(db)
            if closed != self._closed:
                self._sums, self._seen_seq = {}, 0
                self._closed = closed
                # On-time rows summed by month in SQL; late ones (rare) moved to their period here.
                for month, ins, fen, hi in db.execute(
                    f"SELECT {_MONTH}, {_INS}, SUM(fund_pay_sumamt_fen + acct_pay_fen), MAX(seq)"
                    f" FROM journal WHERE {_CROSS} GROUP BY 1, 2"
                ):
                    self._sums[(month, ins)] = self._sums.get((month, ins), 0) + fen
                    self._seen_seq = max(self._seen_seq, hi)
                for month, seq, ins, fen in _late_rows(db, 2**62, f"{_INS}, fund_pay_sumamt_fen + acct_pay_fen"):
                    self._sums[(month, ins)] -= fen
                    p = assigned_period(month, seq, closed)
                    self._sums[(p, ins)] = self._sums.get((p, ins), 0) + fen
                top = db.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchall()[0][0]
                self._seen_seq = max(self._seen_seq, top)
            else:
                for seq, month, ins, fen in db.execute(
                    f"SELECT seq, {_MONTH}, {_INS}, fund_pay_sumamt_fen + acct_pay_fen FROM journal"
                    f" WHERE seq > ? AND {_CROSS} ORDER BY seq", (self._seen_seq,)
                ):
                    p = assigned_period(month, seq, closed)
                    self._sums[(p, ins)] = self._sums.get((p, ins), 0) + fen
                top = db.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchall()[0][0]
                self._seen_seq = max(self._seen_seq, top)
        finally:
            db.execute("COMMIT")
        used: dict[str, int] = {}
        for (p, ins), fen in self._sums.items():
            if p not in closed:
                used[ins] = used.get(ins, 0) + fen
        self._rows = usage_rows(used, self.prepay_fen, self.warn_bp)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def prepay_usage(data_dir: str, *, world_dir: str | None = None, prepay_fen: dict[str, int] | None = None,
                 warn_bp: int = PREPAY_WARN_BP_DEFAULT) -> list[PrepayUsage]:
    """Pre-payment usage now, for `yidi demo` and scripts: one read of the store.

    The amounts come from `prepay_fen`, else from `world_dir`'s prepay.csv, else
    from the world folder the store last started with.
    """
    if prepay_fen is None:
        if world_dir is None:
            conn = open_db(data_dir)
            try:
                world_dir = _last_world_dir(conn)
            finally:
                conn.close()
        prepay_fen = load_prepay(world_dir)
    mon = PrepayMonitor(data_dir, prepay_fen, warn_bp)
    try:
        return mon.refresh()
    finally:
        mon.close()


def format_usage(rows: list[PrepayUsage], warn_bp: int = PREPAY_WARN_BP_DEFAULT) -> list[str]:
    """Text lines for a summary: one per province that used its pre-payment, warnings marked."""
    out = []
    for u in rows:
        if not u.used_fen and not u.warning:
            continue
        ratio = "no deposit" if u.ratio_bp is None else f"{u.ratio_bp / 100:.1f} %"
        flag = f"  WARNING (>= {warn_bp / 100:g} %)" if u.warning else ""
        out.append(f"{u.prov} {PROVINCE_NAMES_ZH.get(u.prov, '')}: used {money.format_fen(u.used_fen)} of "
                   f"{money.format_fen(u.prepay_fen)} yuan, {ratio}{flag}")
    return out


class PrepayCollector:
    """A prometheus_client collector of pre-payment gauges (register it in a server's registry).

    yidi_prepay_deposit_fen, yidi_prepay_used_fen, yidi_prepay_usage_ratio and
    yidi_prepay_warning (1 at or above the threshold), labelled by insured province,
    and yidi_prepay_warning_threshold_ratio.
    """

    def __init__(self, monitor: PrepayMonitor):
        self.monitor = monitor

    def describe(self):
        return []  # registered without a first collect(): the store may be large

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        rows = self.monitor.refresh(METRICS_REFRESH_S_MIN)
        dep = GaugeMetricFamily("yidi_prepay_deposit_fen", "Pre-payment deposited by an insured province "
                                "(prepay.csv), fen", labels=["insured_prov"])
        used = GaugeMetricFamily("yidi_prepay_used_fen", "Cross-province clear_amt charged to an insured "
                                 "province in periods not yet closed, fen", labels=["insured_prov"])
        ratio = GaugeMetricFamily("yidi_prepay_usage_ratio", "used / deposit (absent without a deposit)",
                                  labels=["insured_prov"])
        warn = GaugeMetricFamily("yidi_prepay_warning", "1 when the usage is at or above the threshold",
                                 labels=["insured_prov"])
        for u in rows:
            dep.add_metric([u.prov], u.prepay_fen)
            used.add_metric([u.prov], u.used_fen)
            if u.ratio_bp is not None:
                ratio.add_metric([u.prov], u.ratio_bp / money.BP_ONE)
            warn.add_metric([u.prov], 1 if u.warning else 0)
        thr = GaugeMetricFamily("yidi_prepay_warning_threshold_ratio", "Pre-payment warning threshold",
                                value=self.monitor.warn_bp / money.BP_ONE)
        return [dep, used, ratio, warn, thr]


def prepay_collector(data_dir: str, prepay_fen: dict[str, int], warn_bp: int | None = None) -> PrepayCollector:
    """The pre-payment collector of the store in `data_dir` (threshold from YIDI_PREPAY_WARN unless given)."""
    bp = warn_bp_from_env() if warn_bp is None else warn_bp
    return PrepayCollector(PrepayMonitor(data_dir, prepay_fen, bp))


__all__ = [
    "ClearingError", "ClearingRefused", "Closing", "PairRow", "NetRow", "PrepayUsage", "PrepayMonitor", "PrepayCollector",
    "clear", "close", "statement", "netting", "statement_csv", "netting_csv", "report_html", "prepay_usage",
    "format_usage", "prepay_collector", "load_prepay", "parse_ratio_bp", "warn_bp_from_env",
    "assigned_period", "positions", "close_refusal", "closing_of", "open_activity", "preview",
]
