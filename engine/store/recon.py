"""The store's reconciliation index for 3201/3202 (docs/contract.md section 8; engine.core.reconcile).

Rows up to the keyed file's folded_seq are read from `medins_time` joined to the
journal; RAM keeps only the rows numbered after it, which no fold has indexed
yet, and forgets them once a fold has. RAM stays bounded whatever the history.
"""
from __future__ import annotations

import collections
import sqlite3

from engine.core.reconcile import ReconIndex, Row, add_totals, keeps, listing_page, row_of_change
from engine.core.records import CHANGE_SETTLE
from engine.store.files import connect

PRUNE_EVERY_ROWS = 8_192  # rows added between two looks at the store's fold

_ROW_SQL_COLS = (
    "j.seq, j.setl_id, j.kind, j.reversed_setl_id, j.setl_time, j.insuplc_admdvs, j.insutype, j.clr_type,"
    " j.med_type, j.mdtrt_id, j.psn_no, j.medfee_sumamt_fen, j.fund_pay_sumamt_fen, j.acct_pay_fen,"
    " j.psn_cash_pay_fen"
)
_FROM_RANGE = (
    " FROM medins_time m JOIN journal j ON j.seq = m.seq"
    " WHERE m.fixmedins_code = ? AND m.setl_time >= ? AND m.setl_time < ? AND m.seq <= ?"
)


class StoredReconIndex(ReconIndex):
    """A ReconIndex over the store whose main file is db_path (module docstring).

    first_seq: the journal seq the next added row gets (the store numbers the
    engine's changes in the order the engine makes them).
    """

    def __init__(self, db_path: str, first_seq: int):
        super().__init__(first_seq)
        self.db_path = db_path
        self.order: collections.deque[tuple[int, str]] = collections.deque()  # (seq, fixmedins_code)
        self._conn: sqlite3.Connection | None = None
        self._since_prune = 0

    def add(self, change) -> None:
        """ReconIndex.add, and remember the row's place for the prune (written out: one call per change)."""
        row = row_of_change(change, self.next_seq)
        self.next_seq += 1
        rows = self.by_inst.get(change.fixmedins_code)
        if rows is None:
            rows = self.by_inst[change.fixmedins_code] = collections.deque()
        rows.append(row)
        self.order.append((row.seq, change.fixmedins_code))
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY_ROWS:
            self._prune(self._folded_seq())

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.db_path, read_only=True)  # the keyed file (medins_time, fold_state) attached
        return self._conn

    def _folded_seq(self) -> int:
        return int(self._db().execute("SELECT folded_seq FROM fold_state").fetchall()[0][0])

    def _prune(self, folded: int) -> None:
        """Forget the RAM rows that medins_time indexes now (seq <= folded)."""
        self._since_prune = 0
        last = None
        while self.order and self.order[0][0] <= folded:
            seq, code = self.order.popleft()
            rows = self.by_inst[code]
            last = rows.popleft()
            assert last.seq == seq
            if not rows:
                del self.by_inst[code]
        if last is not None:
            # Paired with the numbering in add(): the store gave this row the same seq.
            got = self._db().execute("SELECT setl_id FROM journal WHERE seq = ?", (last.seq,)).fetchall()
            assert got == [(last.setl_id,)], f"reconciliation index out of step with the journal at {last.seq}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def totals(self, code: str, t_lo: str, t_hi: str) -> dict[tuple[str, str], list[int]]:
        out: dict[tuple[str, str], list[int]] = {}
        db = self._db()
        db.execute("BEGIN")  # one snapshot: folded_seq and medins_time agree
        try:
            folded = int(db.execute("SELECT folded_seq FROM fold_state").fetchall()[0][0])
            for it, ct, *vals in db.execute(
                f"SELECT j.insutype, j.clr_type, SUM(CASE j.kind WHEN '{CHANGE_SETTLE}' THEN 1 ELSE -1 END),"
                " SUM(j.medfee_sumamt_fen), SUM(j.fund_pay_sumamt_fen), SUM(j.acct_pay_fen), COUNT(*)"
                + _FROM_RANGE + " GROUP BY j.insutype, j.clr_type",
                (code, t_lo, t_hi, folded),
            ).fetchall():
                out[(it, ct)] = list(vals)
        finally:
            db.execute("COMMIT")
        self._prune(folded)
        add_totals(out, self.ram_rows(code, t_lo, t_hi, folded))
        return out

    def listing(self, code: str, t_lo: str, t_hi: str, insutype: str | None, clr_type: str | None,
                offset: int, limit: int) -> tuple[int, list[Row]]:
        where, args = "", []
        if insutype is not None:
            where += " AND j.insutype = ?"
            args.append(insutype)
        if clr_type is not None:
            where += " AND j.clr_type = ?"
            args.append(clr_type)
        db = self._db()
        db.execute("BEGIN")
        try:
            folded = int(db.execute("SELECT folded_seq FROM fold_state").fetchall()[0][0])
            rng = (code, t_lo, t_hi, folded, *args)
            total = db.execute("SELECT COUNT(*)" + _FROM_RANGE + where, rng).fetchall()[0][0]
            # Only the first offset + limit rows can be on the page, whatever the RAM rows.
            top = [Row(*r) for r in db.execute(
                f"SELECT {_ROW_SQL_COLS}{_FROM_RANGE}{where} ORDER BY m.setl_time, j.setl_id LIMIT ?",
                (*rng, offset + limit),
            ).fetchall()]
        finally:
            db.execute("COMMIT")
        self._prune(folded)
        ram = [r for r in self.ram_rows(code, t_lo, t_hi, folded) if keeps(r, insutype, clr_type)]
        return total + len(ram), listing_page(top + ram, offset, limit)


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
