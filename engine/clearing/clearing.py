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

Pre-payment. An insured province's usage is what its cross-province rows
charged (clear_amt, reversals subtracted) in periods not yet closed, over its
`prepay.csv` amount. At the threshold (default 70 %) it is a warning: in
/metrics (PrepayCollector), in the clearing report, and for `yidi demo`
(prepay_usage). The report of a period shows, as of its close, what the
period drew and what later periods had drawn already.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass

from engine.contract import money
from engine.contract.protocol import PROVINCE_NAMES_ZH

PERIOD_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])\Z")
PREPAY_WARN_BP_DEFAULT = 7_000  # 70 %
PREPAY_WARN_ENV = "YIDI_PREPAY_WARN"  # a ratio such as 0.70, for the server's metrics
DB_NAME = "yidi.sqlite3"  # engine.store.DB_NAME; not imported so that clearing needs no engine
STORE_FORMAT = "yidi-store"
META_CLOSE_PREFIX = "clearing:"  # meta key of a closed period's pre-payment snapshot
BUSY_TIMEOUT_S = 30.0  # waiting for the server's commit to release the write lock
MONTHS_AHEAD_MAX = 1_200  # a late row's period is searched at most this many months on
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
    """The clearing cannot be done (no store, a bad period, an unreadable prepay.csv)."""


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
    """A connection to the store of `data_dir` (read-only unless `write`), refused when it is not one."""
    path = os.path.join(data_dir, DB_NAME)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        raise ClearingError(f"{data_dir}: no store (run `yidi replay --data` or `yidi serve` first)")
    uri = f"file:{path}?mode={'rw' if write else 'ro'}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                               check_same_thread=False)
        fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchall()
    except sqlite3.DatabaseError as e:
        raise ClearingError(f"{path}: not a readable yidi store ({e})") from None
    if fmt != [(STORE_FORMAT,)]:
        conn.close()
        raise ClearingError(f"{path}: an SQLite file, but not a yidi store")
    if not write:
        conn.execute("PRAGMA query_only = 1")
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


@dataclass(slots=True)
class Closing:
    """A closed period: what its files are computed from."""

    period: str
    closed_at: str
    last_seq: int
    prepay_fen: dict[str, int]  # as read at the first close
    warn_bp: int
    world_dir: str
    new: bool  # closed by this call (False: it was closed before and nothing changed)


@dataclass(slots=True)
class PairRow:
    """One statement row: what `insured` owes `treatment` for the period (fen, reversals subtracted)."""

    insured: str
    treatment: str
    setl_cnt: int = 0
    medfee_fen: int = 0
    fund_fen: int = 0
    acct_fen: int = 0

    @property
    def clear_fen(self) -> int:
        return self.fund_fen + self.acct_fen

    def add(self, cnt: int, medfee: int, fund: int, acct: int) -> None:
        self.setl_cnt += cnt
        self.medfee_fen += medfee
        self.fund_fen += fund
        self.acct_fen += acct


@dataclass(slots=True, frozen=True)
class NetRow:
    payer: str
    payee: str
    net_fen: int


def _last_world_dir(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT world_dir FROM world_load ORDER BY id DESC LIMIT 1").fetchall()
    if not row:
        raise ClearingError("the store names no world folder: pass --world")
    return row[0][0]


def close(conn: sqlite3.Connection, period: str, *, world_dir: str | None = None, warn_bp: int | None = None,
          now: str | None = None) -> Closing:
    """Close `period` (one short write transaction), or return how it was closed before.

    A period already closed keeps its last_seq, pre-payment snapshot and threshold:
    its files never change. The pre-payment amounts are read from `world_dir`, by
    default the world folder the store last started with.
    """
    if not PERIOD_RE.match(period or ""):
        raise ClearingError(f"period {period!r} must be YYYY-MM")
    key = META_CLOSE_PREFIX + period
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT closed_at, last_seq FROM closed_period WHERE period = ?", (period,)).fetchall()
        if row:
            conn.execute("COMMIT")
            snap = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchall()
            s = json.loads(snap[0][0]) if snap else {"prepay_fen": {}, "warn_bp": PREPAY_WARN_BP_DEFAULT,
                                                     "world_dir": ""}
            return Closing(period, row[0][0], row[0][1], {k: int(v) for k, v in s["prepay_fen"].items()},
                           int(s["warn_bp"]), s["world_dir"], False)
        wdir = world_dir or _last_world_dir(conn)
        prepay = load_prepay(wdir)
        bp = PREPAY_WARN_BP_DEFAULT if warn_bp is None else warn_bp
        last_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchall()[0][0]
        closed_at = now or _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        conn.execute("INSERT INTO closed_period (period, closed_at, last_seq) VALUES (?, ?, ?)",
                     (period, closed_at, last_seq))
        snap = {"prepay_fen": prepay, "warn_bp": bp, "world_dir": os.path.abspath(wdir)}
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(snap, sort_keys=True)))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return Closing(period, closed_at, last_seq, prepay, bp, snap["world_dir"], True)


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
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(slots=True)
class ClearResult:
    closing: Closing
    files: list[str]
    pairs: int
    rows_cleared: int  # settlements and reversals counted in the period
    seconds: float


def clear(data_dir: str, period: str, out_dir: str, *, world_dir: str | None = None,
          warn_bp: int | None = None) -> ClearResult:
    """`yidi clear`: close the period (or find it closed) and write its three files."""
    t0 = time.perf_counter()
    if not PERIOD_RE.match(period or ""):
        raise ClearingError(f"period {period!r} must be YYYY-MM")
    conn = open_db(data_dir, write=True)
    try:
        c = close(conn, period, world_dir=world_dir, warn_bp=warn_bp)
        rows, facts = statement(conn, c)
    finally:
        conn.close()
    net = netting(rows)
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for name, data in (
        (f"statement-{period}.csv", statement_csv(rows)),
        (f"netting-{period}.csv", netting_csv(net)),
        (f"report-{period}.html", report_html(c, rows, net, facts).encode()),
    ):
        path = os.path.join(out_dir, name)
        _write_atomic(path, data)
        files.append(path)
    return ClearResult(c, files, len(rows), facts["settlements"] + facts["reversals"], time.perf_counter() - t0)


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


# ---------------------------------------------------------------- the report


_CSS = """
body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:2em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.l,th.l{text-align:left}
td.z{color:#bbb}td.neg{color:#a00}tr.tot td{font-weight:bold;background:#fafafa}
.warn{background:#fde2e1;font-weight:bold}.ok{color:#2a7}
.note{color:#555;font-size:.85em;max-width:60em}
.bar{display:inline-block;height:.7em;background:#4a7bd0;vertical-align:middle}
"""


def _yuan(fen: int) -> str:
    return money.format_fen(fen)


def _prov_label(p: str) -> str:
    name = PROVINCE_NAMES_ZH.get(p)
    return f"{p} {name}" if name else p


def report_html(c: Closing, rows: list[PairRow], net: list[NetRow], facts: dict) -> str:
    """A self-contained HTML page of a closed period (deterministic: closing twice writes the same)."""
    provs = sorted({r.insured for r in rows} | {r.treatment for r in rows})
    owes = {p: sum(r.clear_fen for r in rows if r.insured == p) for p in provs}
    owed = {p: sum(r.clear_fen for r in rows if r.treatment == p) for p in provs}
    out = _report_head(c, rows, net, facts)
    out += _report_matrix(rows, provs, owes, owed)
    out += _report_netting(net)
    out += _report_prepay(c, owes, facts)
    out.append("</body></html>\n")
    return "\n".join(out)


def _report_head(c: Closing, rows: list[PairRow], net: list[NetRow], facts: dict) -> list[str]:
    """Title, what the period covers, and the totals before and after netting."""
    e = html.escape
    total = sum(r.clear_fen for r in rows)
    gross_abs = sum(abs(r.clear_fen) for r in rows)
    net_total = sum(n.net_fen for n in net)
    return [
        "<!doctype html>", '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>yidi clearing {e(c.period)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Cross-province clearing (清算), period {e(c.period)}</h1>",
        '<p class="note">',
        f"Closed {e(c.closed_at)}, covering the journal up to row {c.last_seq}. "
        f"{facts['settlements']} cross-province settlements and {facts['reversals']} reversals count in "
        f"this period ({len(rows)} ordered pairs of provinces)"
        + (f", {facts['late_rows']} of them committed after their own month was closed" if facts["late_rows"] else "")
        + ". Amounts in yuan. clear_amt = fund_pay_sumamt + acct_pay, owed by the insured province "
        "to the treatment province (docs/contract.md section 8).</p>",
        "<table><tr><th class=l>what</th><th>yuan</th></tr>",
        f"<tr><td class=l>clear_amt, all pairs</td><td>{_yuan(total)}</td></tr>",
        f"<tr><td class=l>netted flows (轧差) to transfer</td><td>{_yuan(net_total)}</td></tr>",
        f"<tr><td class=l>saved by netting</td><td>{_yuan(gross_abs - net_total)}</td></tr></table>",
    ]


def _report_matrix(rows: list[PairRow], provs: list[str], owes: dict[str, int], owed: dict[str, int]) -> list[str]:
    """What each insured province owes each treatment province, with the totals and net positions."""
    e = html.escape
    out = ["<h2>What each insured province owes each treatment province (clear_amt)</h2>"]
    if not rows:
        return out + ["<p>No cross-province settlement or reversal counts in this period.</p>"]
    cell = {(r.insured, r.treatment): r for r in rows}
    total = sum(r.clear_fen for r in rows)
    out.append('<table><tr><th class=l>insured \\ treatment</th>'
               + "".join(f"<th>{e(_prov_label(p))}</th>" for p in provs) + "<th>owes</th></tr>")
    for a in provs:
        tds = []
        for b in provs:
            r = cell.get((a, b))
            if r is None:
                tds.append('<td class="z">·</td>')
            else:
                cls = ' class="neg"' if r.clear_fen < 0 else ""
                tip = (f"{r.setl_cnt} settlements net, medfee_sumamt {_yuan(r.medfee_fen)}, "
                       f"fund_pay_sumamt {_yuan(r.fund_fen)}, acct_pay {_yuan(r.acct_fen)}")
                tds.append(f'<td{cls} title="{e(tip)}">{_yuan(r.clear_fen)}</td>')
        out.append(f"<tr><th class=l>{e(_prov_label(a))}</th>{''.join(tds)}<td>{_yuan(owes[a])}</td></tr>")
    out.append('<tr class="tot"><td class=l>is owed</td>'
               + "".join(f"<td>{_yuan(owed[p])}</td>" for p in provs) + f"<td>{_yuan(total)}</td></tr>")
    out.append('<tr class="tot"><td class=l>net position</td>'
               + "".join(f'<td{" class=neg" if owed[p] - owes[p] < 0 else ""}>{_yuan(owed[p] - owes[p])}</td>'
                         for p in provs) + "<td></td></tr></table>")
    out.append('<p class="note">Net position = is owed - owes: positive, the province receives; '
               "negative, it pays. Netting keeps every position.</p>")
    return out


def _report_netting(net: list[NetRow]) -> list[str]:
    """The netted flows, one transfer per pair of provinces, with a bar each."""
    e = html.escape
    out = ["<h2>Netted flows (轧差): one transfer per pair of provinces</h2>"]
    if not net:
        return out + ["<p>Nothing to transfer.</p>"]
    top = max(n.net_fen for n in net)
    out.append("<table><tr><th class=l>payer</th><th class=l>payee</th><th>net_amt</th><th></th></tr>")
    for n in net:
        w = max(1, (n.net_fen * 200) // top)
        out.append(f"<tr><td class=l>{e(_prov_label(n.payer))}</td><td class=l>{e(_prov_label(n.payee))}</td>"
                   f'<td>{_yuan(n.net_fen)}</td><td class=l><span class="bar" style="width:{w}px"></span></td></tr>')
    net_total = sum(n.net_fen for n in net)
    out.append(f'<tr class="tot"><td class=l colspan=2>total</td><td>{_yuan(net_total)}</td><td></td></tr></table>')
    return out


def _report_prepay(c: Closing, owes: dict[str, int], facts: dict) -> list[str]:
    """Each insured province's deposit, what the period drew on it and what later periods had."""
    e = html.escape
    drawn = {p: v for p, v in owes.items() if v}
    after = {p: v for p, v in facts["open_after_fen"].items() if v}
    out = ["<h2>Pre-payment (预付金) of the insured provinces</h2>"]
    out.append(f'<p class="note">Warning at {c.warn_bp / 100:g} % of the deposit (prepay.csv of {e(c.world_dir)}, '
               "as read when the period was closed). <i>Drawn in the period</i> is what this clearing "
               "settles; <i>drawn after it</i> is what later periods had already charged when it was "
               "closed: the usage since the last closed period.</p>")
    out.append("<table><tr><th class=l>insured province</th><th>deposit</th><th>drawn in the period</th>"
               "<th>%</th><th>drawn after it</th><th>%</th></tr>")
    n_warn = 0
    for p in sorted(set(drawn) | set(after) | set(c.prepay_fen)):
        d = c.prepay_fen.get(p, 0)
        tds = []
        for v in (drawn.get(p, 0), after.get(p, 0)):
            if d > 0:
                bp = (v * money.BP_ONE) // d
                warn = bp >= c.warn_bp
                pct = f"{bp / 100:.1f}"
            else:
                warn, pct = v > 0, ("no deposit" if v > 0 else "")
            n_warn += warn
            cls = ' class="warn"' if warn else ""
            tds.append(f"<td{cls}>{_yuan(v)}</td><td{cls}>{pct}</td>")
        out.append(f"<tr><td class=l>{e(_prov_label(p))}</td><td>{_yuan(d)}</td>{''.join(tds)}</tr>")
    out.append("</table>")
    out.append(f'<p class="{"warn" if n_warn else "ok"}">'
               + (f"{n_warn} pre-payment warning(s)." if n_warn else "No pre-payment warning.") + "</p>")
    return out


__all__ = [
    "ClearingError", "Closing", "PairRow", "NetRow", "PrepayUsage", "PrepayMonitor", "PrepayCollector",
    "clear", "close", "statement", "netting", "statement_csv", "netting_csv", "report_html", "prepay_usage",
    "format_usage", "prepay_collector", "load_prepay", "parse_ratio_bp", "warn_bp_from_env",
    "assigned_period", "positions",
]