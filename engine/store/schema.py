"""The store's SQL: its two files' schemas, the statements a commit and a fold run, and their constants.

The main file (DB_NAME) holds the journal, its blobs and the accumulator logs a
commit appends (SCHEMA); the keyed file (KEYS_NAME, attached as `keys`) holds the
tables a fold brings up to date (KEYS_SCHEMA). docs/contract.md sections 7-9;
engine.store.store describes how they are used.
"""
from __future__ import annotations

from engine.contract import protocol
from engine.core.records import CHANGE_REVERSE, CHANGE_SETTLE

STORE_FORMAT = "yidi-store"
SCHEMA_VERSION = 4  # 2: postings a view of the journal; no account_log. 3: the keyed tables in KEYS_NAME.
# 4: sign-ins, who made each journal row, the step-wise flow (UPGRADES[3] brings a store of 3 up to it at open)
DB_NAME = "yidi.sqlite3"
KEYS_NAME = "yidi-keys.sqlite3"  # the folded, keyed tables (KEYS_SCHEMA), attached as `keys`
LOCK_NAME = "yidi.lock"

# The files' pages and the writers' connections.
PAGE_BYTES = 16_384  # SQLite page size: a journal row with its blob fits in one page
SQLITE_CACHE_KIB = 262_144  # page cache of a writer connection
WAL_FILE_KEEP_BYTES = 64 << 20  # journal_size_limit: a WAL file larger is cut back to this when it starts over
READ_CHUNK_ROWS = 65_536  # rows per fetch when a whole table is read (persons at start, filter keys)

# The setlinfo money fields of a settlement, in the engine's order (Settled.amounts).
AMOUNT_KEYS = (
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
    "act_pay_dedc", "hifp_pay", "hifmi_pay", "hifob_pay", "fund_pay_sumamt", "psn_part_amt",
    "acct_pay", "psn_cash_pay",
)
# The non-money setlinfo fields of a settlement, in the engine's order (Settled.info).
INFO_KEYS = ("pool_prop_selfpay", "filing_class", "mdtrt_id", "psn_no", "insutype", "med_type", "clr_type")
PERSON_ACC = ("balc", "acc_year", "hifp_ip", "hifp_op", "ded_op", "burden2", "second_paid")

def _fund_case(table: str) -> str:
    """SQL for the fund_pay_type of a journal row's insutype (protocol.FUND_BASIC or FUND_SECOND)."""
    funds = getattr(protocol, table)
    assert all(k.isdigit() and v.isdigit() for k, v in funds.items())
    return "CASE insutype " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in sorted(funds.items())) + " END"


# Section 10: who made a journal row ("" for rows made without a credential: replay, --no-auth,
# or rows written before schema 4), and the sign-ins (one row per 9001; a 9002 sets signed_out).
_JOURNAL_AUTH = ("paasid", "sign_no", "opter", "opter_name")
_JOURNAL_AUTH_COLS = ",\n    ".join(f"{c} TEXT NOT NULL DEFAULT ''" for c in _JOURNAL_AUTH)
_SIGN_IN_TABLE = """-- Sign-ins (section 10): in force while sign_time <= t < ends and signed_out is ''.
CREATE TABLE sign_in (
    sign_no TEXT PRIMARY KEY,
    paasid TEXT NOT NULL,
    fixmedins_code TEXT NOT NULL,
    opter_no TEXT NOT NULL,
    ip TEXT NOT NULL,
    sign_time TEXT NOT NULL,
    ends TEXT NOT NULL,
    signed_out TEXT NOT NULL
) WITHOUT ROWID"""
SIGN_IN_COLS = ("sign_no", "paasid", "fixmedins_code", "opter_no", "ip", "sign_time", "ends", "signed_out")
# Section 11 (engine.store.steps): every committed step-wise transaction and every visit effect of a
# settlement or reversal (msgid NULL: its transaction is in the journal), in commit order. body_lz4: the
# request's raw input and the reply; effects: engine.core.visits effects, MessagePack.
_STEP_TABLE = """-- The step-wise flow (section 11): transactions and visit effects in commit order.
CREATE TABLE step (
    seq INTEGER PRIMARY KEY,
    msgid TEXT,
    infno TEXT NOT NULL,
    fixmedins_code TEXT NOT NULL,
    mdtrt_id TEXT NOT NULL,
    time TEXT NOT NULL,
    paasid TEXT NOT NULL,
    sign_no TEXT NOT NULL,
    opter TEXT NOT NULL,
    opter_name TEXT NOT NULL,
    codec TEXT,
    body_lz4 BLOB,
    effects BLOB NOT NULL
)"""
# The step table's msgid index of the first stores of schema 4, dropped at open (engine.store.steps: the
# committed msgids are held in RAM instead).
SQL_DROP_STEP_MSGID_INDEX = "DROP INDEX IF EXISTS step_msgid"
STEP_COLS = ("seq", "msgid", "infno", "fixmedins_code", "mdtrt_id", "time", "paasid", "sign_no", "opter",
             "opter_name", "codec", "body_lz4", "effects")

SCHEMA = f"""
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE filing (
    id INTEGER PRIMARY KEY,
    psn INTEGER NOT NULL,
    filing_type TEXT NOT NULL,
    dest_admdvs TEXT NOT NULL,
    begndate TEXT NOT NULL,
    enddate TEXT,
    status TEXT NOT NULL
);

-- The settlement journal, one row per committed settlement or reversal in commit
-- order (seq). Money in integer fen and signed: a reversal row holds its
-- settlement's amounts negated. For a reversal, fixmedins_code, mdtrtarea_admvs,
-- mdtrt_id, psn and the accumulator columns (acc_kind 0 inpatient, 1 outpatient,
-- 2 chronic; cd_slot; acc_year) are those of the settlement it reverses.
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    msgid TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('{CHANGE_SETTLE}', '{CHANGE_REVERSE}')),
    infno TEXT NOT NULL,
    setl_id TEXT NOT NULL,
    reversed_setl_id TEXT,
    setl_time TEXT NOT NULL,
    insuplc_admdvs TEXT NOT NULL,
    mdtrtarea_admvs TEXT NOT NULL,
    fixmedins_code TEXT NOT NULL,
    mdtrt_id TEXT NOT NULL,
    psn INTEGER NOT NULL,
    psn_no TEXT NOT NULL,
    insutype TEXT NOT NULL,
    med_type TEXT NOT NULL,
    clr_type TEXT NOT NULL,
    filing_class TEXT NOT NULL,
    pool_prop_selfpay TEXT NOT NULL,
    acc_kind INTEGER NOT NULL,
    cd_slot INTEGER NOT NULL,
    acc_year INTEGER NOT NULL,
    medfee_sumamt_fen INTEGER NOT NULL,
    fulamt_ownpay_amt_fen INTEGER NOT NULL,
    overlmt_selfpay_fen INTEGER NOT NULL,
    preselfpay_amt_fen INTEGER NOT NULL,
    inscp_scp_amt_fen INTEGER NOT NULL,
    act_pay_dedc_fen INTEGER NOT NULL,
    hifp_pay_fen INTEGER NOT NULL,
    hifmi_pay_fen INTEGER NOT NULL,
    hifob_pay_fen INTEGER NOT NULL,
    fund_pay_sumamt_fen INTEGER NOT NULL,
    psn_part_amt_fen INTEGER NOT NULL,
    acct_pay_fen INTEGER NOT NULL,
    psn_cash_pay_fen INTEGER NOT NULL,
    burden_fen INTEGER NOT NULL,
    second_fen INTEGER NOT NULL,
    {_JOURNAL_AUTH_COLS},
    chrg_bchno TEXT
);

{_SIGN_IN_TABLE};

{_STEP_TABLE};

-- The request and the reply of a journal row, as one LZ4 block (engine.store.codec.body_of):
-- the request's raw `input` in its codec ('json' or 'msgpack'), the reply as
-- MessagePack without its `result` (setlinfo and setldetail as their values in
-- the order of SETLINFO_KEYS and SETLDETAIL_KEYS), and the `result` rows packed as integers
-- (none for a reversal); crc32 of the block.
CREATE TABLE journal_blob (
    seq INTEGER PRIMARY KEY,
    codec TEXT NOT NULL,
    body_lz4 BLOB NOT NULL,
    crc32 INTEGER NOT NULL
);

-- Written by every commit, for the rows it touched (values after the batch);
-- folded into person and chronic, then deleted by the next commits (SQL_DELETE_LOGS).
-- seq is the last journal row of the batch.
CREATE TABLE person_log (
    seq INTEGER NOT NULL,
    psn INTEGER NOT NULL,
    balc_fen INTEGER NOT NULL,
    acc_year INTEGER NOT NULL,
    hifp_ip_fen INTEGER NOT NULL,
    hifp_op_fen INTEGER NOT NULL,
    ded_op_fen INTEGER NOT NULL,
    burden2_fen INTEGER NOT NULL,
    second_paid_fen INTEGER NOT NULL,
    PRIMARY KEY (seq, psn)
) WITHOUT ROWID;
CREATE TABLE chronic_log (
    seq INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    hifp_cd_fen INTEGER NOT NULL,
    cd_year INTEGER NOT NULL,
    PRIMARY KEY (seq, slot)
) WITHOUT ROWID;
-- The ledger (section 8), a view of the journal: each row's legs are columns of
-- it (engine.core.ledger.postings says the same in Python; `yidi check` compares the
-- two). amount_fen > 0 debits the account, < 0 credits it; a reversal row's
-- amounts are negated, so its legs are the exact opposite. leg: 0 basic fund,
-- 1 second layer, 2 personal account, 3 institution; legs of 0.00 are absent.
CREATE VIEW posting (seq, leg, account, amount_fen) AS
    SELECT seq, 0, 'fund/' || insuplc_admdvs || '/' || {_fund_case("FUND_BASIC")}, hifp_pay_fen
        FROM journal WHERE hifp_pay_fen <> 0
    UNION ALL SELECT seq, 1, 'fund/' || insuplc_admdvs || '/' || {_fund_case("FUND_SECOND")},
        hifmi_pay_fen + hifob_pay_fen FROM journal WHERE hifmi_pay_fen + hifob_pay_fen <> 0
    UNION ALL SELECT seq, 2, 'psnacct/' || psn_no, acct_pay_fen FROM journal WHERE acct_pay_fen <> 0
    UNION ALL SELECT seq, 3, 'medins/' || fixmedins_code, -(fund_pay_sumamt_fen + acct_pay_fen)
        FROM journal WHERE fund_pay_sumamt_fen + acct_pay_fen <> 0;

-- Monthly clearing (section 8): a closed period and the last journal row it covers.
CREATE TABLE closed_period (
    period TEXT PRIMARY KEY,
    closed_at TEXT NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;

-- Every start: the world folder loaded and what changed in it.
CREATE TABLE world_load (
    id INTEGER PRIMARY KEY,
    loaded_at TEXT NOT NULL,
    world_dir TEXT NOT NULL,
    changes TEXT NOT NULL
);
"""

# The keyed tables, in their own file (KEYS_NAME, attached as `keys`): a fold writes only
# them, so commits (which write only the main file) go on while it runs (engine.store.fold).
KEYS_SCHEMA = """
-- Persons as of the last fold (section 2). psn is the engine's row. The seed_
-- columns are the world's values when the store was seeded, for `yidi check`.
CREATE TABLE person (
    psn INTEGER PRIMARY KEY,
    psn_no TEXT NOT NULL,
    certno TEXT NOT NULL,
    psn_name TEXT NOT NULL,
    insuplc_admdvs TEXT NOT NULL,
    insutype TEXT NOT NULL,
    psn_type TEXT NOT NULL,
    balc_fen INTEGER NOT NULL,
    acc_year INTEGER NOT NULL,
    hifp_ip_fen INTEGER NOT NULL,
    hifp_op_fen INTEGER NOT NULL,
    ded_op_fen INTEGER NOT NULL,
    burden2_fen INTEGER NOT NULL,
    second_paid_fen INTEGER NOT NULL,
    seed_balc_fen INTEGER NOT NULL,
    seed_acc_year INTEGER NOT NULL,
    seed_hifp_ip_fen INTEGER NOT NULL,
    seed_hifp_op_fen INTEGER NOT NULL,
    seed_ded_op_fen INTEGER NOT NULL,
    seed_burden2_fen INTEGER NOT NULL,
    seed_second_paid_fen INTEGER NOT NULL
);

-- Chronic qualifications as of the last fold: slot is the engine's chronic slot;
-- hifp_cd_fen counts in the year cd_year only (a later acc_year makes it 0).
CREATE TABLE chronic (
    slot INTEGER PRIMARY KEY,
    psn INTEGER NOT NULL,
    dise_codg TEXT NOT NULL,
    hifp_cd_fen INTEGER NOT NULL,
    cd_year INTEGER NOT NULL,
    seed_hifp_cd_fen INTEGER NOT NULL,
    seed_cd_year INTEGER NOT NULL,
    UNIQUE (psn, dise_codg)
);

-- Account balances as of the last fold: the fold adds the postings of the rows it folds.
CREATE TABLE account (
    account TEXT PRIMARY KEY,
    balance_fen INTEGER NOT NULL,
    postings INTEGER NOT NULL
) WITHOUT ROWID;

-- Keyed views of the journal rows up to the last fold (fold_state.folded_seq):
-- the msgid index (section 7 idempotency), the reversal of each reversed
-- settlement, and the visits with a settlement in force (E_DUPLICATE_VISIT).
CREATE TABLE msgid_index (
    msgid TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE reversal (
    setl_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE open_visit (
    fixmedins_code TEXT NOT NULL,
    mdtrt_id TEXT NOT NULL,
    setl_id TEXT NOT NULL,
    PRIMARY KEY (fixmedins_code, mdtrt_id)
) WITHOUT ROWID;
-- Daily reconciliation (3201/3202) reads an institution's rows over a time range.
CREATE TABLE medins_time (
    fixmedins_code TEXT NOT NULL,
    setl_time TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (fixmedins_code, setl_time, seq)
) WITHOUT ROWID;

-- How far the keyed tables are folded, and the store they belong to (meta store_id).
CREATE TABLE fold_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    folded_seq INTEGER NOT NULL,
    store_id TEXT NOT NULL
);
"""

JOURNAL_COLS = (
    "seq", "msgid", "kind", "infno", "setl_id", "reversed_setl_id", "setl_time", "insuplc_admdvs",
    "mdtrtarea_admvs", "fixmedins_code", "mdtrt_id", "psn", "psn_no", "insutype", "med_type", "clr_type",
    "filing_class", "pool_prop_selfpay", "acc_kind", "cd_slot", "acc_year",
    *(k + "_fen" for k in AMOUNT_KEYS), "burden_fen", "second_fen", *_JOURNAL_AUTH, "chrg_bchno",
)
SQL_INSERT_JOURNAL = f"INSERT INTO journal ({', '.join(JOURNAL_COLS)}) VALUES ({', '.join('?' * len(JOURNAL_COLS))})"
SQL_INSERT_BLOB = "INSERT INTO journal_blob (seq, codec, body_lz4, crc32) VALUES (?, ?, ?, ?)"
SQL_INSERT_PERSON_LOG = "INSERT INTO person_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
SQL_INSERT_CHRONIC_LOG = "INSERT INTO chronic_log VALUES (?, ?, ?, ?)"
# A sign-in made, or ended by a 9002 (the same row again, signed_out set).
SQL_UPSERT_SIGN_IN = (f"INSERT INTO sign_in ({', '.join(SIGN_IN_COLS)}) VALUES ({', '.join('?' * len(SIGN_IN_COLS))})"
                      " ON CONFLICT (sign_no) DO UPDATE SET signed_out = excluded.signed_out")
SQL_INSERT_STEP = f"INSERT INTO step ({', '.join(STEP_COLS)}) VALUES ({', '.join('?' * len(STEP_COLS))})"
SQL_INSERTS = (SQL_INSERT_JOURNAL, SQL_INSERT_BLOB, SQL_INSERT_PERSON_LOG, SQL_INSERT_CHRONIC_LOG, SQL_UPSERT_SIGN_IN,
               SQL_INSERT_STEP)

# What brings a store of an earlier schema version up to this one, at open, in one transaction.
UPGRADES = {
    3: [*(f"ALTER TABLE journal ADD COLUMN {c} TEXT NOT NULL DEFAULT ''" for c in _JOURNAL_AUTH),
        "ALTER TABLE journal ADD COLUMN chrg_bchno TEXT", _SIGN_IN_TABLE,
        _STEP_TABLE],
}

# Every connection that writes (the store's and the batch writer's; pragmas are per connection).
WRITER_PRAGMAS = (
    "PRAGMA synchronous = FULL",
    f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}",
    # Checkpoints run on a thread of their own (engine.store.fold.Checkpointer), not in the commit.
    "PRAGMA wal_autocheckpoint = 0",
    # When a commit starts the WAL over (after a complete checkpoint), a file
    # grown past this is cut back: the store's WAL_BYTES_MAX check sees it fall.
    f"PRAGMA journal_size_limit = {WAL_FILE_KEEP_BYTES}",
)

# The fold: each statement set-based and in key order (see the module docstring).
# A fold of the journal rows m < seq <= h (engine.store.fold.fold_range): it reads the main file (the
# journal and the logs, which later commits may have grown past h) and writes only the keyed file.
_TAIL = "seq > :m AND seq <= :h"
SQL_FOLD = (
    f"INSERT INTO msgid_index (msgid, seq) SELECT msgid, seq FROM journal WHERE {_TAIL} ORDER BY msgid",
    f"INSERT INTO reversal (setl_id, seq) SELECT reversed_setl_id, seq FROM journal"
    f" WHERE {_TAIL} AND kind = '{CHANGE_REVERSE}' ORDER BY reversed_setl_id",
    # Visits: close what the tail reversed, then open the tail's settlements it did not reverse.
    # A plain INSERT: a visit with two settlements in force fails the fold (an invariant).
    f"DELETE FROM open_visit WHERE (fixmedins_code, mdtrt_id, setl_id) IN (SELECT fixmedins_code, mdtrt_id,"
    f" reversed_setl_id FROM journal WHERE {_TAIL} AND kind = '{CHANGE_REVERSE}')",
    f"INSERT INTO open_visit (fixmedins_code, mdtrt_id, setl_id) SELECT fixmedins_code, mdtrt_id, setl_id"
    f" FROM journal WHERE {_TAIL} AND kind = '{CHANGE_SETTLE}' AND chrg_bchno IS NULL AND setl_id NOT IN (SELECT reversed_setl_id"
    f" FROM journal WHERE {_TAIL} AND kind = '{CHANGE_REVERSE}') ORDER BY fixmedins_code, mdtrt_id",
    f"INSERT INTO medins_time (fixmedins_code, setl_time, seq) SELECT fixmedins_code, setl_time, seq"
    f" FROM journal WHERE {_TAIL} ORDER BY fixmedins_code, setl_time, seq",
    # The logs hold the accumulators after each batch (absolute values): the last one of each key wins.
    "UPDATE person SET balc_fen = l.balc_fen, acc_year = l.acc_year, hifp_ip_fen = l.hifp_ip_fen,"
    " hifp_op_fen = l.hifp_op_fen, ded_op_fen = l.ded_op_fen, burden2_fen = l.burden2_fen,"
    " second_paid_fen = l.second_paid_fen FROM (SELECT p.* FROM person_log p JOIN"
    f" (SELECT psn, MAX(seq) AS seq FROM person_log WHERE {_TAIL} GROUP BY psn) last USING (psn, seq)"
    " ORDER BY psn) AS l WHERE person.psn = l.psn",
    "UPDATE chronic SET hifp_cd_fen = l.hifp_cd_fen, cd_year = l.cd_year FROM (SELECT c.* FROM chronic_log c"
    f" JOIN (SELECT slot, MAX(seq) AS seq FROM chronic_log WHERE {_TAIL} GROUP BY slot) last USING (slot, seq)"
    " ORDER BY slot) AS l WHERE chronic.slot = l.slot",
    "INSERT INTO account (account, balance_fen, postings) SELECT account, SUM(amount_fen), COUNT(*)"
    f" FROM posting WHERE {_TAIL} GROUP BY account ORDER BY account"
    " ON CONFLICT (account) DO UPDATE SET balance_fen = balance_fen + excluded.balance_fen,"
    " postings = postings + excluded.postings",
    "UPDATE fold_state SET folded_seq = :h WHERE folded_seq = :m",
)
# The logs a fold has covered, deleted from the main file by later commits (a few thousand
# seqs each: SqliteStore.write) and at open and close; a log row at or below folded_seq that
# is still there changes nothing (its values are older than or equal to the folded row's).
# meta logs_deleted_to remembers how far: a keyed file folded less far than that (an older copy) is refused.
SQL_DELETE_LOGS = ("DELETE FROM person_log WHERE seq <= {k}", "DELETE FROM chronic_log WHERE seq <= {k}",
                   "UPDATE meta SET value = '{k}' WHERE key = 'logs_deleted_to'")


def schema_statements(schema: str) -> list[str]:
    """The statements of SCHEMA or KEYS_SCHEMA, comments left out."""
    sql = "\n".join(ln for ln in schema.splitlines() if not ln.lstrip().startswith("--"))
    return [stmt for stmt in sql.split(";") if stmt.strip()]


def delete_logs(conn, k: int) -> None:
    """SQL_DELETE_LOGS up to seq k, in the caller's transaction (a batch writer's or a connection's)."""
    for sql in SQL_DELETE_LOGS:
        conn.execute(sql.format(k=int(k)))
