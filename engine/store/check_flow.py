"""`yidi check`, sections 10 and 11: who made each committed row, and the visits of the step-wise flow.

Both read the snapshot engine.store.check reads, and report through its report.
The visits are rebuilt here from the `step` table's effects with plain dicts
(not with the engine's VisitBook), then held against the settlement journal.
"""
from __future__ import annotations

import sqlite3

import msgspec
import numpy as np

from engine.core.filing import FILING_EFFECTS

FETCH_ROWS = 65_536
VOIDED_PER_QUERY = 400  # voided msgids looked for in one statement (SQLite allows 32,766 parameters)
_EFFECTS = msgspec.msgpack.Decoder(list)


def check_sign_ins(conn: sqlite3.Connection, rep) -> None:
    """Section 10: every row made under a credential (journal rows, step-wise transactions) names a sign-in of
    that credential and institution in force when it was committed (a 9002 in the same second counts as after)."""
    rows = ("SELECT 'journal row' AS what, seq, msgid, paasid, sign_no, setl_time AS t, fixmedins_code FROM journal"
            " WHERE paasid <> '' UNION ALL SELECT 'step row', seq, msgid, paasid, sign_no, time, fixmedins_code"
            " FROM step WHERE paasid <> '' AND msgid IS NOT NULL")
    bad = conn.execute(
        f"SELECT r.what, r.seq, r.msgid, r.paasid, r.sign_no, r.t, s.sign_time, s.ends, s.signed_out FROM ({rows}) r"
        " LEFT JOIN sign_in s ON s.sign_no = r.sign_no AND s.paasid = r.paasid AND s.fixmedins_code = r.fixmedins_code"
        " WHERE s.sign_no IS NULL OR r.t < s.sign_time OR r.t >= s.ends OR (s.signed_out <> '' AND r.t > s.signed_out)"
        " ORDER BY r.what, r.seq").fetchall()
    diffs = [f"{what} {seq} (msgid {msgid}, paasid {paasid}) at {t}: " + (
        f"sign_no {sign_no!r} is no sign-in of that credential and institution" if begin is None else
        f"sign_no {sign_no} in force from {begin} to {signed_out or ends}") for
        what, seq, msgid, paasid, sign_no, t, begin, ends, signed_out in bad]
    signed = conn.execute(f"SELECT COUNT(*) FROM ({rows}) r").fetchall()[0][0]
    unsigned = conn.execute("SELECT (SELECT COUNT(*) FROM journal WHERE paasid = '')"
                            " + (SELECT COUNT(*) FROM step WHERE paasid = '' AND msgid IS NOT NULL)").fetchall()[0][0]
    rep.result("sign-ins: each row made under a credential was made under a sign-in in force (section 10)", diffs,
               signed)
    if unsigned:
        rep.out(f"      {unsigned} row(s) made without a credential (replay, --no-auth, or before sign-ins were kept)")


class _Visit:
    __slots__ = ("lines", "sn", "settled")

    def __init__(self):
        self.lines: list[list] = []  # [batch, amount in fen, in force]
        self.sn: set[str] = set()
        self.settled: dict[str, str] = {}  # batch -> setl_id in force


def check_visits(conn: sqlite3.Connection, rep) -> None:
    """Section 11: the visits the step table's effects build agree with the settlement journal."""
    settle = {setl_id: (fen, batch, code, mdtrt_id) for setl_id, fen, batch, code, mdtrt_id in conn.execute(
        "SELECT setl_id, medfee_sumamt_fen, chrg_bchno, fixmedins_code, mdtrt_id FROM journal"
        " WHERE kind = 'settle' AND chrg_bchno IS NOT NULL")}
    reversed_ids = {r[0] for r in conn.execute(
        "SELECT reversed_setl_id FROM journal WHERE kind = 'reverse' AND chrg_bchno IS NOT NULL")}
    visits: dict[str, _Visit] = {}
    seen_settled: set[str] = set()
    voided: list[str] = []
    diffs: list[str] = []
    n_rows = 0
    cur = conn.execute("SELECT seq, effects FROM step ORDER BY seq")
    while rows := cur.fetchmany(FETCH_ROWS):
        n_rows += len(rows)
        for seq, blob in rows:
            for e in _EFFECTS.decode(blob):
                err = _apply(visits, e, settle, reversed_ids, seen_settled, voided)
                if err:
                    diffs.append(f"step row {seq} ({e[0]} {e[1]}): {err}")
    missing = sorted(set(settle) - seen_settled)
    diffs += [f"settlement {s} of batch {settle[s][1]!r} of {settle[s][3]} has no settle effect" for s in missing]
    hits: dict[str, int] = {}
    for k in range(0, len(voided), VOIDED_PER_QUERY):  # one pass over each table per chunk, no index needed
        chunk = voided[k:k + VOIDED_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        for (msgid,) in conn.execute(f"SELECT msgid FROM journal WHERE msgid IN ({marks}) UNION ALL"
                                     f" SELECT msgid FROM step WHERE msgid IN ({marks})", chunk + chunk):
            hits[msgid] = hits.get(msgid, 0) + 1
    for msgid in voided:
        if hits.get(msgid):
            diffs.append(f"msgid {msgid} was voided by a 2601 but has {hits[msgid]} committed row(s)")
    rep.result("visits: settled batches sum to their settlements, one in force a batch, unchanged while settled;"
               " voided msgids never committed (section 11)", diffs, n_rows)


def _apply(visits: dict, e: list, settle: dict, reversed_ids: set, seen_settled: set, voided: list) -> str:
    """Apply one effect to the plain visits; what is wrong with it, or ""."""
    kind = e[0]
    if kind in FILING_EFFECTS:  # a filing made online (engine.core.filing), no visit's
        return ""
    if kind == "void":
        voided.append(e[1])
        return ""
    if kind == "open":
        if e[1] in visits:
            return "opened twice"
        visits[e[1]] = _Visit()
        return ""
    if kind == "unsettle":
        for v in visits.values():
            for batch, setl_id in v.settled.items():
                if setl_id == e[1]:
                    del v.settled[batch]
                    return "" if e[1] in reversed_ids else "unsettled, but the journal has no reversal of it"
        return "unsettles a settlement no batch holds"
    v = visits.get(e[1])
    if v is None:
        return "names no visit opened before"
    if kind == "upload":
        batch, sns, amts = e[2], e[5], e[6]
        if type(amts) is bytes:  # the column's little-endian int64 (engine.core.visits)
            amts = np.frombuffer(amts, dtype="<i8").tolist()
        if batch in v.settled:
            return f"uploads into batch {batch!r}, settled by {v.settled[batch]}"
        if v.sn & set(sns) or len(set(sns)) != len(sns):
            return "a feedetl_sn uploaded twice"
        v.sn.update(sns)
        v.lines += [[batch, a, True] for a in amts]
    elif kind in ("revoke", "cancel"):
        pos = e[2] if kind == "revoke" else [i for i, ln in enumerate(v.lines) if ln[2]]
        for i in pos:
            ln = v.lines[i]
            if not ln[2] or ln[0] in v.settled:
                return f"revokes line {i}, {'settled' if ln[2] else 'not in force'}"
            ln[2] = False
    elif kind == "settle":
        batch, setl_id = e[2], e[3]
        if batch in v.settled:
            return f"settles batch {batch!r} while {v.settled[batch]} is in force"
        row = settle.get(setl_id)
        if row is None or row[1] != batch or row[3] != e[1]:
            return f"{setl_id} is no settlement of this batch in the journal"
        total = sum(ln[1] for ln in v.lines if ln[2] and ln[0] == batch)
        if total != row[0]:
            return f"its lines in force sum to {total} fen, the settlement {setl_id} to {row[0]}"
        v.settled[batch] = setl_id
        seen_settled.add(setl_id)
    return ""
