"""`yidi check --data DIR`: verify a store against its own journal (issue 3, SETTLEMENT.md section 8).

Reads one consistent snapshot (a read transaction; the server may keep writing)
and checks, printing each check and its result:
  - SQLite's quick_check, and the store's format;
  - every journal row's request and reply blob against its crc32;
  - every transfer: the postings of each journal row (the store's `posting`
    view) are exactly the legs that engine.ledger derives from its amounts, and
    a reversal negates its settlement;
  - every account's balance (as of the fold, plus the postings after it) equals
    the sum of its postings, and all balances sum to 0;
  - every person's accumulators and balance, and every chronic slot, equal the
    world's seed values with the journal's settlements and reversals applied in
    order (with the year roll-over of section 6);
  - the keyed tables (msgid index, reversals, open visits, reconciliation index)
    equal what the folded part of the journal implies.
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
from engine.store.sqlite import (
    AMOUNT_KEYS, CODECS, KIND_REVERSE, KIND_SETTLE, SCHEMA_VERSION, STORE_FORMAT, connect, db_path, unpack_body,
)

KIND_INPATIENT, KIND_OUTPATIENT, KIND_CHRONIC = 0, 1, 2
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


def check_store(data_dir: str, out: Callable[[str], None] = print) -> int:
    """Run every check; returns the exit status (0 ok, 1 differences, 2 unreadable)."""
    path = db_path(data_dir)
    if not os.path.exists(path):
        out(f"yidi check: no store in {data_dir} ({path} does not exist)")
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
        out(f"yidi check: cannot read {path}: {e}")
        return 2
    if rep.failures:
        out(f"check FAILED: {rep.failures} check(s) found differences")
        return 1
    out("check passed")
    return 0


def _check(conn: sqlite3.Connection, path: str, rep: _Report) -> None:
    integrity = [r[0] for r in conn.execute("PRAGMA quick_check(20)")]
    rep.result("SQLite quick_check", [] if integrity == ["ok"] else integrity)
    if integrity != ["ok"]:
        return
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    fmt_diffs = []
    if meta.get("format") != STORE_FORMAT or meta.get("schema_version") != str(SCHEMA_VERSION):
        fmt_diffs.append(f"format {meta.get('format')!r} schema {meta.get('schema_version')!r}")
    rep.result(f"store format {STORE_FORMAT} schema {SCHEMA_VERSION}", fmt_diffs)
    if fmt_diffs:
        return
    state = conn.execute("SELECT folded_seq, store_id FROM fold_state").fetchall()
    ids = [r[1] for r in state]
    rep.result("keyed tables (yidi-keys.sqlite3) of this store", [] if ids == [meta.get("store_id")] else
               [f"store_id {ids} in the keyed file, {meta.get('store_id')!r} in the main one"])
    if ids != [meta.get("store_id")]:
        return
    folded = int(state[0][0])
    n_rows, n_settle, n_rev, max_seq = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(kind = '{KIND_SETTLE}'), 0), COALESCE(SUM(kind = '{KIND_REVERSE}'), 0),"
        " COALESCE(MAX(seq), 0) FROM journal"
    ).fetchone()
    rep.out(f"store {path}: {n_rows} journal rows ({n_settle} settlements, {n_rev} reversals),"
            f" folded up to {folded} of {max_seq}")
    logs_to = int(meta.get("logs_deleted_to", -1))
    rep.result("keyed file of the same moment (logs deleted <= folded <= journal rows)",
               [] if 0 <= logs_to <= folded <= max_seq else
               [f"logs deleted up to {logs_to}, folded up to {folded}, {max_seq} journal rows"])
    seq_diffs = [] if n_rows == max_seq else [f"journal seq runs to {max_seq} over {n_rows} rows"]
    rep.result("journal rows numbered 1..n without gaps", seq_diffs, n_rows)

    # Blobs.
    bad = []
    n_blobs = 0
    cur = conn.execute("SELECT seq, codec, body_lz4, crc32 FROM journal_blob ORDER BY seq")
    while rows := cur.fetchmany(FETCH_ROWS):
        for seq, codec, body, crc in rows:
            n_blobs += 1
            if not isinstance(body, bytes):
                bad.append(f"journal row {seq}: request/reply is not a blob")
            elif zlib.crc32(body) != crc:
                bad.append(f"journal row {seq}: request/reply blob crc32 mismatch")
            elif codec not in CODECS:
                bad.append(f"journal row {seq}: unknown codec {codec!r}")
            else:
                try:
                    unpack_body(body, CODECS[codec])
                except Exception as e:  # a damaged body, whatever the error
                    bad.append(f"journal row {seq}: request/reply does not unpack ({e!r})")
    if n_blobs != n_rows:
        bad.append(f"{n_blobs} blobs for {n_rows} journal rows")
    rep.result("request and reply blobs (crc32, unpack)", bad, n_blobs)

    # Persons and chronic slots: seeds, then the journal in order.
    seeds = conn.execute(
        "SELECT psn, seed_balc_fen, seed_acc_year, seed_hifp_ip_fen, seed_hifp_op_fen, seed_ded_op_fen,"
        " seed_burden2_fen, seed_second_paid_fen FROM person ORDER BY psn"
    ).fetchall()
    n_psn = len(seeds)
    st = np.array([s[1:] for s in seeds], dtype=np.int64).reshape(n_psn, 7)
    balc, year, hip, hop, ded, b2, sp = (st[:, k].copy() for k in range(7))
    chr_seed = conn.execute("SELECT slot, psn, seed_hifp_cd_fen, seed_cd_year FROM chronic ORDER BY slot").fetchall()
    cd_val = np.array([r[2] for r in chr_seed], dtype=np.int64)
    cd_year = np.array([r[3] for r in chr_seed], dtype=np.int64)

    # Journal pass: transfers, reversal pairs, accumulators, open visits.
    leg_diffs: list[str] = []
    sum_diffs: list[str] = []
    pair_diffs: list[str] = []
    postings = conn.execute("SELECT seq, leg, account, amount_fen FROM posting ORDER BY seq, leg")
    pend_post = None

    def postings_of(seq: int) -> list:
        nonlocal pend_post
        got = []
        while True:
            if pend_post is None:
                pend_post = postings.fetchone()
                if pend_post is None:
                    return got
            if pend_post[0] < seq:
                leg_diffs.append(f"postings of seq {pend_post[0]} have no journal row")
                pend_post = None
                continue
            if pend_post[0] > seq:
                return got
            got.append((pend_post[2], pend_post[3]))
            pend_post = None

    settlements: dict[str, tuple] = {}  # setl_id -> (seq, psn, acc_kind, cd_slot, acc_year, amounts, visit)
    reversed_at: dict[str, int] = {}
    open_upto_folded: dict[tuple, str] = {}
    open_all: dict[tuple, str] = {}
    amount_cols = ", ".join(k + "_fen" for k in AMOUNT_KEYS)
    cur = conn.execute(
        "SELECT seq, msgid, kind, setl_id, reversed_setl_id, insuplc_admdvs, fixmedins_code, mdtrt_id, psn,"
        f" psn_no, insutype, acc_kind, cd_slot, acc_year, burden_fen, second_fen, {amount_cols}"
        " FROM journal ORDER BY seq"
    )
    n_amt = len(AMOUNT_KEYS)
    while rows := cur.fetchmany(FETCH_ROWS):
        for r in rows:
            (seq, msgid, kind, setl_id, rev_id, insuplc, medins, mdtrt_id, psn, psn_no, insutype, acc_kind,
             cd_slot, acc_year, burden, second) = r[:16]
            amounts = dict(zip(AMOUNT_KEYS, r[16 : 16 + n_amt]))
            visit = (medins, mdtrt_id)
            if setl_id != "S" + msgid:
                pair_diffs.append(f"seq {seq}: setl_id {setl_id} is not 'S' + msgid {msgid}")
            if kind == KIND_SETTLE:
                sign, own = 1, amounts
                settlements[setl_id] = (seq, psn, acc_kind, cd_slot, acc_year, amounts, visit, burden, second)
                if visit in open_all:
                    pair_diffs.append(f"seq {seq}: visit {visit} settled while {open_all[visit]} is in force")
                open_all[visit] = setl_id
                if seq <= folded:
                    open_upto_folded[visit] = setl_id
                # Section 6: bring the year forward, then add what the settlement took.
                if acc_year > year[psn]:
                    year[psn] = acc_year
                    hip[psn] = hop[psn] = ded[psn] = b2[psn] = sp[psn] = 0
                elif acc_year < year[psn]:
                    pair_diffs.append(f"seq {seq}: settles year {acc_year} after the person reached {year[psn]}")
                if acc_kind == KIND_INPATIENT:
                    hip[psn] += amounts["hifp_pay"]
                    b2[psn] += burden
                    sp[psn] += second
                elif acc_kind == KIND_OUTPATIENT:
                    ded[psn] += amounts["act_pay_dedc"]
                    hop[psn] += amounts["hifp_pay"]
                else:
                    if cd_year[cd_slot] != acc_year:
                        cd_val[cd_slot] = 0
                        cd_year[cd_slot] = acc_year
                    cd_val[cd_slot] += amounts["hifp_pay"]
                balc[psn] -= amounts["acct_pay"]
            else:
                sign = -1
                own = {k: -v for k, v in amounts.items()}
                s = settlements.get(rev_id)
                if s is None:
                    pair_diffs.append(f"seq {seq}: reverses {rev_id}, not an earlier settlement")
                    continue
                if rev_id in reversed_at:
                    pair_diffs.append(f"seq {seq}: reverses {rev_id} again (first at {reversed_at[rev_id]})")
                reversed_at[rev_id] = seq
                if (psn, acc_kind, cd_slot, acc_year, visit) != (s[1], s[2], s[3], s[4], s[6]) or own != s[5] \
                        or (-burden, -second) != (s[7], s[8]):
                    pair_diffs.append(f"seq {seq}: reversal of {rev_id} does not negate it exactly")
                if open_all.get(visit) == rev_id:
                    del open_all[visit]
                if seq <= folded and open_upto_folded.get(visit) == rev_id:
                    del open_upto_folded[visit]
                # Section 7: the balance comes back; the accumulators only within the same year.
                balc[psn] += own["acct_pay"]
                if year[psn] == acc_year:
                    if acc_kind == KIND_INPATIENT:
                        hip[psn] -= own["hifp_pay"]
                        b2[psn] -= s[7]
                        sp[psn] -= s[8]
                    elif acc_kind == KIND_OUTPATIENT:
                        ded[psn] -= own["act_pay_dedc"]
                        hop[psn] -= own["hifp_pay"]
                    else:
                        cd_val[cd_slot] -= own["hifp_pay"]
            bad_sums = _identities(own)
            if bad_sums:
                sum_diffs.append(f"seq {seq} ({kind} {setl_id}): {bad_sums}")
            got = postings_of(seq)
            try:
                want = ledger.postings(sign, insuplc, insutype, psn_no, medins, own)
            except (AssertionError, KeyError) as e:
                leg_diffs.append(f"seq {seq} ({kind} {setl_id}): no valid legs for its amounts ({e!r})")
                continue
            if got != want:
                leg_diffs.append(f"seq {seq} ({kind} {setl_id}): postings {got} != {want}")
    postings_of(2**62)
    rep.result("journal rows: the money of each settlement adds up (sections 3 and 6)", sum_diffs, n_rows)
    rep.result("reversals: each names an earlier settlement, once, and negates it exactly", pair_diffs, n_rev)
    rep.result("ledger: every transfer's postings are the legs of its journal row", leg_diffs, n_rows)

    # Accounts.
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

    # Persons and chronic slots.
    cur_psn = _latest(
        conn, f"SELECT psn, {', '.join(_ACC)} FROM person",
        f"SELECT psn, {', '.join(_ACC)} FROM person_log ORDER BY seq",
    )
    psn_diffs = []
    for i in range(n_psn):
        want = (int(balc[i]), int(year[i]), int(hip[i]), int(hop[i]), int(ded[i]), int(b2[i]), int(sp[i]))
        have = tuple(cur_psn[i])
        if want != have:
            psn_diffs.append(f"person {i}: store {dict(zip(_ACC, have))} journal implies {dict(zip(_ACC, want))}")
    rep.result("persons: balance and accumulators equal seed + journal", psn_diffs, n_psn)
    cur_chr = _latest(
        conn, "SELECT slot, hifp_cd_fen, cd_year FROM chronic",
        "SELECT slot, hifp_cd_fen, cd_year FROM chronic_log ORDER BY seq",
    )
    chr_diffs = []
    for k in range(len(chr_seed)):
        want, have = (int(cd_val[k]), int(cd_year[k])), tuple(cur_chr[k])
        if want != have:
            chr_diffs.append(f"chronic slot {k}: store (hifp_cd, year) {have}, journal implies {want}")
    rep.result("chronic qualifications: hifp_cd equals seed + journal", chr_diffs, len(chr_seed))

    # Keyed tables, as of the fold.
    kd = []
    n_idx, n_idx_ok = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(j.msgid IS NOT NULL), 0) FROM msgid_index i"
        " LEFT JOIN journal j ON j.seq = i.seq AND j.msgid = i.msgid"
    ).fetchone()
    n_folded = conn.execute("SELECT COUNT(*) FROM journal WHERE seq <= ?", (folded,)).fetchone()[0]
    if n_idx != n_folded or n_idx_ok != n_idx:
        kd.append(f"msgid index: {n_idx} entries, {n_idx_ok} point to their row, {n_folded} rows folded")
    n_rv, n_rv_ok = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(j.seq IS NOT NULL), 0) FROM reversal r"
        f" LEFT JOIN journal j ON j.seq = r.seq AND j.kind = '{KIND_REVERSE}' AND j.reversed_setl_id = r.setl_id"
    ).fetchone()
    n_rv_want = conn.execute(f"SELECT COUNT(*) FROM journal WHERE seq <= ? AND kind = '{KIND_REVERSE}'",
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
