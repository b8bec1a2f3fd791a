"""The durable store: SQLite in WAL mode with synchronous=FULL (issue 3, SETTLEMENT.md sections 7-9).

One data folder holds one store: `yidi.sqlite3` (the journal, its blobs and logs),
`yidi-keys.sqlite3` (the keyed tables a fold writes), each with its `-wal` and
`-shm`, and `yidi.lock`, an advisory lock held by the one process that writes.

    store = open_store(data_dir, world_dir, clock="wall")
    replies = store.engine.handle_batch(requests)
    store.commit(store.engine.take_changes())   # durable when it returns
    ...                                           # only now release the replies
    store.close()

Start and restart. A new (absent or empty) folder is seeded from the world:
persons with their accumulators and balances, chronic qualifications and
filings are copied into the store with their seed values, in one transaction.
An existing store is opened as it is: the dynamic state comes from the store;
the catalogue, policies, institutions and pre-payments are reloaded from the
world folder, and what changed since the last start is logged (logger
`yidi.store`) and kept in the `world_load` table. A damaged, truncated or
foreign file is refused with StoreRefused, never reset.

Commit: one transaction per batch, and only appends. A batch writes one
`journal` row per settlement or reversal (its clearing and reconciliation
columns, money in integer fen) and one `journal_blob` row (the request's raw
input and the reply, LZ4-compressed, with the reply's per-line `result` kept
as packed integers and rendered again on demand), and the accumulators after
the batch of every person and chronic slot it touched, read from
`engine.state` (`person_log`, `chronic_log`). The double-entry postings of
section 8 are the journal row's own columns, seen as rows through the
`posting` view (the legs engine.ledger derives; `yidi check` compares them):
writing them again as rows of their own cost a fifth of the commit. Every one
of these tables is keyed by the journal sequence number, so a commit writes pages at the end of each B-tree and nowhere else:
random updates of a million person rows or of a msgid index would each dirty a
page per settlement and cost more than the rest of the commit together. The
commit returns once SQLite has fsynced the WAL. A failing commit raises
StoreFailed and the store refuses every later commit: the engine in memory is
then ahead of the disk; the caller must stop and restart from the store.

Fold. The keyed views of the journal (`msgid_index`, `reversal`,
`open_visit`, `medins_time`) and the current rows (`person`, `chronic`,
`account`) are brought up to date from the journal and the logs by a fold: one
transaction of set-based, sorted statements that touches each page once. They
live in a file of their own, attached as `keys`, and a fold writes nothing else:
SQLite locks each file on its own, so the commits, which write only the main
file, go on while a fold runs. Once `fold_rows` journal rows are unfolded, the
writer seals them and a folder thread (its own connection, below the engine's
CPU priority) folds them in the background; the next generation waits for it
only if it fills before the fold ends. A fold also runs inline at open, at close
and by `fold()`. The logs a fold covered are deleted by the following commits,
a few thousand seqs each; a log row left at or below `folded_seq` (a crash
between) changes nothing, since logs hold absolute values. Until folded, the
unfolded rows are indexed in RAM (two generations at most). The keyed file is
seeded before the main one: a main file with tables means a whole seed, and the
two files carry the same `store_id`.

Memory. History is not kept in RAM. The engine's `journal` (msgid -> first
reply), `settled` (setl_id -> what a reversal needs) and `open_visits` are
replaced by maps that hold what the engine changed and the store has not yet
committed, plus the index of the unfolded tail (at most `fold_rows` entries);
anything older is read from SQLite on a miss, by indexed point queries on a
second, read-only connection: a few microseconds, against a few hundred for
handling a settlement. RAM is bounded by `fold_rows`, whatever the history.

Pipelining. `commit(changes)` is `write(prepare(changes))`. `prepare` reads
`engine.state`, so it must run on the engine's thread right after the batch,
before the next `handle_batch`; `write` may run on one writer thread while the
engine handles the next batch. Writes must come in the order of the batches.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import gc
import hashlib
import json
import logging
import os
import queue
import sqlite3
import struct
import threading
import types
import uuid
import zlib
from dataclasses import dataclass, replace

import lz4.block
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core_ext._bloom import Bloom
from core_ext import _sqlw
from core_ext._pack import LINE_RECORD_BYTES, Compression, pack_lines

from engine.core import kernels
from engine.contract import money
from engine.contract import protocol
from engine.core.engine import Change, Engine, ResultRows, Settled
from engine.contract.protocol import OUTPATIENT_INFNOS
from engine.contract.wire import JSON, MSGPACK, Reply
from engine.world.loader import DAY_OPEN, World, load_world

log = logging.getLogger("yidi.store")

STORE_FORMAT = "yidi-store"
SCHEMA_VERSION = 3  # 2: postings a view of the journal; no account_log. 3: the keyed tables in KEYS_NAME
DB_NAME = "yidi.sqlite3"
KEYS_NAME = "yidi-keys.sqlite3"  # the folded, keyed tables (KEYS_SCHEMA), attached as `keys`
LOCK_NAME = "yidi.lock"

# Limits (STYLE.md: a limit on everything).
COMMIT_CHANGES_MAX = 65_536  # settlements and reversals in one commit
FOLD_ROWS_DEFAULT = 262_144  # unfolded journal rows before a fold: bounds the RAM tail index
FOLD_ROWS_MAX = 4_194_304
READ_CHUNK_ROWS = 65_536  # rows per fetch when loading persons at start
PAGE_SIZE = 16_384  # bytes: a journal row with its blob fits in one page
SQLITE_CACHE_KIB = 262_144  # page cache of the writer connection
FILTER_KEYS_MIN = 4_194_304  # capacity of each lookup filter (16 bits a key: 8 MiB) at least
CHECKPOINT_INTERVAL_S = 1.0  # the checkpointer copies the WAL at most this often while it is short
WAL_CHASE_BYTES = 64 << 20  # a WAL this long is checkpointed after every commit until it starts over
WAL_FILE_KEEP_BYTES = 64 << 20  # journal_size_limit: a WAL file larger is cut back to this when it starts over
WAL_HEADER_BYTES = 32  # a WAL file no longer than its header holds no frames
CHECKPOINT_NICE = 19  # nice value of the checkpointer thread
FOLD_NICE = 5  # nice value of the folder thread: below the engine's, enough to keep up at saturation
FOLD_MAIN_CACHE_KIB = 16_384  # the folder's page cache of the main file
LOG_DELETE_SEQS = 4_096  # journal seqs whose folded person and chronic logs one commit deletes, at most
WAL_BYTES_MAX = 1 << 30  # WAL size at which the writer checkpoints itself, waiting
VERIFY_MODES = ("quick", "header")
COMPRESS_CHUNK = 32  # journal bodies a thread claims at a time from a batch's Compression

WORLD_FILES = (
    "institutions.csv", "catalogue.csv", "policies.json", "persons.csv",
    "chronic.csv", "filings.csv", "prepay.csv",
)
# The files that seed the store once; the others are reloaded at every start.
SEED_FILES = ("persons.csv", "chronic.csv", "filings.csv")

# The setlinfo money fields of a settlement, in the engine's order (Settled.amounts).
AMOUNT_KEYS = (
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
    "act_pay_dedc", "hifp_pay", "hifmi_pay", "hifob_pay", "fund_pay_sumamt", "psn_part_amt",
    "acct_pay", "psn_cash_pay",
)
# The non-money setlinfo fields of a settlement, in the engine's order (Settled.info).
INFO_KEYS = ("pool_prop_selfpay", "filing_class", "mdtrt_id", "psn_no", "insutype", "med_type", "clr_type")
PERSON_ACC = ("balc", "acc_year", "hifp_ip", "hifp_op", "ded_op", "burden2", "second_paid")
CODECS = {"json": JSON, "msgpack": MSGPACK}
KIND_SETTLE, KIND_REVERSE = "settle", "reverse"
_ROW_PSN, _ROW_CD_SLOT = 11, 19  # of a journal row (SqliteStore._rows_of), in the journal's column order
# Positions in AMOUNT_KEYS and INFO_KEYS (the rows are built from the dicts' values).
_A_HIFP, _A_HIFMI, _A_HIFOB, _A_FUND, _A_ACCT = (
    AMOUNT_KEYS.index(k) for k in ("hifp_pay", "hifmi_pay", "hifob_pay", "fund_pay_sumamt", "acct_pay"))
_I_POOL_PROP, _I_FILING_CLASS, _I_INSUTYPE, _I_MED_TYPE, _I_CLR_TYPE = (
    INFO_KEYS.index(k) for k in ("pool_prop_selfpay", "filing_class", "insutype", "med_type", "clr_type"))

# One `result` row as the journal keeps it (the catalogue entry the line matched,
# lv 0 for none, and the split); the line's amount, count and price are read
# again from the stored request.
LINE_DTYPE = np.dtype([
    ("cap_micro", "<i8"), ("fulamt_fen", "<i4"), ("overlmt_fen", "<i4"), ("preselfpay_fen", "<i4"),
    ("inscp_fen", "<i4"), ("selfpay_bp", "<i2"), ("lv", "i1"), ("memo", "i1"),
])
assert LINE_DTYPE.itemsize == LINE_RECORD_BYTES  # core_ext._pack.pack_lines writes them


def _fund_case(table: str) -> str:
    """SQL for the fund_pay_type of a journal row's insutype (protocol.FUND_BASIC or FUND_SECOND)."""
    funds = getattr(protocol, table)
    assert all(k.isdigit() and v.isdigit() for k, v in funds.items())
    return "CASE insutype " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in sorted(funds.items())) + " END"


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
    kind TEXT NOT NULL CHECK (kind IN ('{KIND_SETTLE}', '{KIND_REVERSE}')),
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
    second_fen INTEGER NOT NULL
);

-- The request and the reply of a journal row, as one LZ4 block (engine.store.body_of):
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
-- it (engine.ledger.postings says the same in Python; `yidi check` compares the
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
# them, so commits (which write only the main file) go on while it runs (_Folder).
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
    *(k + "_fen" for k in AMOUNT_KEYS), "burden_fen", "second_fen",
)
SQL_INSERT_JOURNAL = f"INSERT INTO journal ({', '.join(JOURNAL_COLS)}) VALUES ({', '.join('?' * len(JOURNAL_COLS))})"
SQL_INSERT_BLOB = "INSERT INTO journal_blob (seq, codec, body_lz4, crc32) VALUES (?, ?, ?, ?)"
SQL_INSERT_PERSON_LOG = "INSERT INTO person_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
SQL_INSERT_CHRONIC_LOG = "INSERT INTO chronic_log VALUES (?, ?, ?, ?)"
SQL_INSERTS = (SQL_INSERT_JOURNAL, SQL_INSERT_BLOB, SQL_INSERT_PERSON_LOG, SQL_INSERT_CHRONIC_LOG)

# Every connection that writes (the store's and the batch writer's; pragmas are per connection).
WRITER_PRAGMAS = (
    "PRAGMA synchronous = FULL",
    f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}",
    # Checkpoints run on a thread of their own (_Checkpointer), not in the commit.
    "PRAGMA wal_autocheckpoint = 0",
    # When a commit starts the WAL over (after a complete checkpoint), a file
    # grown past this is cut back: the WAL_BYTES_MAX check sees it fall.
    f"PRAGMA journal_size_limit = {WAL_FILE_KEEP_BYTES}",
)

# The fold: each statement set-based and in key order (see the module docstring).
# A fold of the journal rows m < seq <= h (SqliteStore._fold_range): it reads the main file (the
# journal and the logs, which later commits may have grown past h) and writes only the keyed file.
_TAIL = "seq > :m AND seq <= :h"
SQL_FOLD = (
    f"INSERT INTO msgid_index (msgid, seq) SELECT msgid, seq FROM journal WHERE {_TAIL} ORDER BY msgid",
    f"INSERT INTO reversal (setl_id, seq) SELECT reversed_setl_id, seq FROM journal"
    f" WHERE {_TAIL} AND kind = '{KIND_REVERSE}' ORDER BY reversed_setl_id",
    # Visits: close what the tail reversed, then open the tail's settlements it did not reverse.
    # A plain INSERT: a visit with two settlements in force fails the fold (an invariant).
    f"DELETE FROM open_visit WHERE (fixmedins_code, mdtrt_id, setl_id) IN (SELECT fixmedins_code, mdtrt_id,"
    f" reversed_setl_id FROM journal WHERE {_TAIL} AND kind = '{KIND_REVERSE}')",
    f"INSERT INTO open_visit (fixmedins_code, mdtrt_id, setl_id) SELECT fixmedins_code, mdtrt_id, setl_id"
    f" FROM journal WHERE {_TAIL} AND kind = '{KIND_SETTLE}' AND setl_id NOT IN (SELECT reversed_setl_id"
    f" FROM journal WHERE {_TAIL} AND kind = '{KIND_REVERSE}') ORDER BY fixmedins_code, mdtrt_id",
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


class StoreError(Exception):
    """Base of the store's errors."""


class StoreRefused(StoreError):
    """The data folder cannot be opened as a store: damaged, truncated, foreign, or in use."""


class StoreFailed(StoreError):
    """A commit did not reach the disk: the engine in memory is ahead of it. Stop the process."""


# ---------------------------------------------------------------- files


def db_path(data_dir: str) -> str:
    return os.path.join(data_dir, DB_NAME)


def check_header(path: str) -> None:
    """Refuse a file that is not a whole SQLite database (https://sqlite.org/fileformat.html).

    A truncated file is caught here, before SQLite reads it: the header's page
    count (valid when its version-valid-for field equals the change counter) must
    fit in the file, and the file must be a whole number of pages. The page count
    is not compared while the WAL holds frames: a checkpoint cut short (the process
    killed) may have written page 1 with the new count before the pages after the
    file's end, and SQLite redoes it from the WAL; the quick_check at open
    (verify="quick") then reads every page.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or head[:16] != b"SQLite format 3\x00":
        raise StoreRefused(f"{path}: not an SQLite database (bad header); refusing to open or reset it")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise StoreRefused(f"{path}: damaged header (page size {page_size}); refusing to open it")
    if size % page_size:
        raise StoreRefused(
            f"{path}: truncated or damaged: {size} bytes is not a whole number of {page_size}-byte pages"
        )
    change_counter = int.from_bytes(head[24:28], "big")
    pages = int.from_bytes(head[28:32], "big")
    valid_for = int.from_bytes(head[92:96], "big")
    wal = path + "-wal"
    wal_frames = os.path.exists(wal) and os.path.getsize(wal) > WAL_HEADER_BYTES
    if pages and change_counter == valid_for and size < pages * page_size and not wal_frames:
        raise StoreRefused(
            f"{path}: truncated: the header counts {pages} pages of {page_size} bytes "
            f"({pages * page_size} bytes) but the file has {size}"
        )


def _sha256(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return ""


def _now_text() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def keys_path(path: str) -> str:
    """The keyed tables' file of the store whose main file is `path`."""
    return os.path.join(os.path.dirname(path), KEYS_NAME)


def connect(path: str, read_only: bool = False, keys: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any one thread at a time.

    keys: attach the keyed tables' file as `keys` (their names need no prefix: each table is in one
    file only). A transaction writes the files it writes to: a commit (journal, blobs, logs) locks the
    main file only, a fold the keyed file only.
    """
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        if keys:
            conn.execute("ATTACH DATABASE ? AS keys", (f"file:{keys_path(path)}?mode=ro",))
        conn.execute("PRAGMA query_only = 1")
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if keys:
            conn.execute("ATTACH DATABASE ? AS keys", (keys_path(path),))
    return conn


def _writer_setup(conn: sqlite3.Connection, path: str, new: bool) -> None:
    """WAL and WRITER_PRAGMAS on both files of a read-write connection with the keyed file attached."""
    for schema in ("main", "keys"):
        if new:
            conn.execute(f"PRAGMA {schema}.page_size = {PAGE_SIZE}")
        mode = conn.execute(f"PRAGMA {schema}.journal_mode = WAL").fetchall()[0][0]
        if mode != "wal":
            raise StoreRefused(f"{path}: cannot switch {schema} to WAL mode (got {mode!r})")
        for sql in WRITER_PRAGMAS:
            conn.execute(sql.replace("PRAGMA ", f"PRAGMA {schema}.", 1))
        assert conn.execute(f"PRAGMA {schema}.synchronous").fetchall()[0][0] == 2  # FULL


def schema_statements(schema: str) -> list[str]:
    """The statements of SCHEMA or KEYS_SCHEMA, comments left out."""
    sql = "\n".join(ln for ln in schema.splitlines() if not ln.lstrip().startswith("--"))
    return [stmt for stmt in sql.split(";") if stmt.strip()]


def _delete_logs(conn, k: int) -> None:
    """SQL_DELETE_LOGS up to seq k, in the caller's transaction (a batch writer's or a connection's)."""
    for sql in SQL_DELETE_LOGS:
        conn.execute(sql.format(k=int(k)))


def _refuse_sqlite(path: str, e: Exception) -> StoreRefused:
    return StoreRefused(f"{path}: damaged or not a yidi store ({e}); refusing to open or reset it")


# ---------------------------------------------------------------- replies in the journal


def pack_result_rows(rr: ResultRows, cache: dict) -> bytes:
    """The `result` rows of a settlement reply as LINE_DTYPE records.

    The rows of one round are packed once (`cache` by round) and sliced per settlement.
    """
    r = rr.r
    packed = cache.get(id(r))
    if packed is None:
        # Only settled rounds are packed, whose lines passed the section 1 limits
        # (pack_lines raises ValueError on an amount outside int32).
        packed = (r, pack_lines(r.split, r.cat))  # keeps r alive so that id(r) stays its own
        cache[id(r)] = packed
    size = LINE_DTYPE.itemsize
    return packed[1][rr.lo * size : rr.hi * size]


class StoredRows:
    """The `result` of a reply read back from the journal; renders exactly like ResultRows."""

    __slots__ = ("codec", "input_raw", "packed")

    def __init__(self, codec, input_raw: bytes, packed: bytes):
        self.codec, self.input_raw, self.packed = codec, input_raw, packed

    def to_raw(self, fmt: int) -> msgspec.Raw:
        lines = self.codec.settle.decode(self.input_raw).feedetail
        a = np.frombuffer(self.packed, LINE_DTYPE)
        m = len(a)
        assert len(lines) == m
        ns = types.SimpleNamespace
        gathered = kernels.gather_lines(lines)
        row = np.where(a["lv"] > 0, np.arange(m, dtype=np.int32), np.int32(-1)).astype(np.int32)
        arrays = ns(
            lines=gathered, row=row,
            cat=kernels.CatalogueArrays(lv=np.ascontiguousarray(a["lv"], np.int8),
                                        selfpay_bp=np.ascontiguousarray(a["selfpay_bp"], np.int32),
                                        cap_micro=np.ascontiguousarray(a["cap_micro"], np.int64),
                                        lmt=np.zeros(m, np.int8)),
            split=kernels.stored_split(gathered, row, memo=a["memo"], fulamt_fen=a["fulamt_fen"],
                                       overlmt_fen=a["overlmt_fen"], presel_fen=a["preselfpay_fen"],
                                       inscp_fen=a["inscp_fen"]),
        )
        return ResultRows(0, m, arrays).to_raw(fmt)


_msgpack_encode = msgspec.msgpack.Encoder().encode
_msgpack_decode = msgspec.msgpack.Decoder().decode
_BODY_HEAD = struct.Struct("<II")  # bytes of the input, bytes of the reply
# The keys of a journaled reply's output: a settlement's and a reversal's (section 7).
_SETTLE_OUTPUT = ("setlinfo", "setldetail", "result")
_REVERSE_OUTPUT = ("setlinfo",)
# The keys of setlinfo and of a setldetail entry, in the engine's order, settlement
# and reversal alike: the journal keeps the values only.
SETLINFO_KEYS = (*AMOUNT_KEYS, "balc", "cvlserv_pay", "hifes_pay", "maf_pay", "oth_pay", "hosp_part_amt",
                 *INFO_KEYS, "setl_time", "setl_id")
SETLDETAIL_KEYS = ("fund_pay_type", "fund_pay_type_name", "fund_payamt")


def body_of(input_raw: bytes, reply: Reply, lines: bytes | None) -> bytes:
    """A journal row's request and reply, uncompressed (prepare compresses it: see the journal_blob table)."""
    out = reply.output
    setlinfo = out["setlinfo"]
    # The keys' order: checked on the first settlement and reversal of each batch (check_reply_keys).
    assert len(setlinfo) == len(SETLINFO_KEYS)
    if lines is not None:
        assert len(out) == len(_SETTLE_OUTPUT)
        detail = [list(d.values()) for d in out["setldetail"]]
    else:
        assert len(out) == len(_REVERSE_OUTPUT)
        detail = None
    packed = _msgpack_encode((reply.infcode, reply.inf_refmsgid, reply.refmsg_time, reply.respond_time,
                              reply.err_msg, reply.err_code, list(setlinfo.values()), detail))
    return b"".join((_BODY_HEAD.pack(len(input_raw), len(packed)), input_raw, packed, lines or b""))


def check_reply_keys(reply: Reply) -> None:
    """The keys of a journaled reply are exactly those body_of leaves out, in their order."""
    out = reply.output
    assert tuple(out) in (_SETTLE_OUTPUT, _REVERSE_OUTPUT), f"reply output keys {tuple(out)}"
    assert tuple(out["setlinfo"]) == SETLINFO_KEYS, "setlinfo keys differ from SETLINFO_KEYS"
    for d in out.get("setldetail", ()):
        assert tuple(d) == SETLDETAIL_KEYS, "setldetail keys differ from SETLDETAIL_KEYS"


def unpack_body(body_lz4: bytes, codec) -> tuple[bytes, Reply]:
    """The raw input and the reply (its `result` rendered again on demand) of a journal row."""
    body = lz4.block.decompress(body_lz4)
    n_in, n_reply = _BODY_HEAD.unpack_from(body)
    at = _BODY_HEAD.size
    input_raw = body[at : at + n_in]
    at += n_in
    infcode, refmsgid, refmsg_time, respond_time, err_msg, err_code, setlinfo, detail = _msgpack_decode(
        body[at : at + n_reply])
    at += n_reply
    if len(setlinfo) != len(SETLINFO_KEYS):
        raise ValueError(f"setlinfo of {len(setlinfo)} values, not {len(SETLINFO_KEYS)}")
    output: dict = {"setlinfo": dict(zip(SETLINFO_KEYS, setlinfo))}
    if detail is not None:
        if any(len(d) != len(SETLDETAIL_KEYS) for d in detail):
            raise ValueError("a setldetail entry of the wrong length")
        output["setldetail"] = [dict(zip(SETLDETAIL_KEYS, d)) for d in detail]
        output["result"] = StoredRows(codec, input_raw, body[at:])
    else:
        assert at == len(body)
    return input_raw, Reply(infcode, refmsgid, refmsg_time, respond_time, err_msg, err_code, output)


# ---------------------------------------------------------------- the engine's maps


class _Tail:
    """The journal rows committed since the last fold, indexed in RAM: at most two generations of
    fold_rows rows, the live one commits add to and the sealed one a fold is writing (_Folder).

    Lookups (the engine's thread) read the live generation, then the sealed one, then SQLite.
    The writer seals by setting `sealed` before it replaces the live maps, and the folder drops
    `sealed` only once its fold is committed, so a row is always in one place or the next.
    """

    def __init__(self):
        self.msgid: dict[str, int] = {}  # msgid -> seq
        self.visits: dict[tuple[str, str], str | None] = {}  # visit -> setl_id in force, None closed
        self.reversed: dict[str, int] = {}  # setl_id -> seq of its reversal
        self.sealed: _Tail | None = None

    def seal(self) -> None:
        old = _Tail()
        old.msgid, old.visits, old.reversed = self.msgid, self.visits, self.reversed
        self.sealed = old
        self.msgid, self.visits, self.reversed = {}, {}, {}

    def __len__(self) -> int:
        return len(self.msgid) + (len(self.sealed.msgid) if self.sealed is not None else 0)


class _Reader:
    """Point queries on the committed store, on a read-only connection of its own."""

    def __init__(self, path: str, tail: _Tail):
        self.conn = connect(path, read_only=True)
        self.lock = threading.Lock()
        self.tail = tail
        # Every msgid in the store and every visit a settlement ever opened (SqliteStore._build_filters;
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
            "SELECT j.msgid, j.infno, b.codec, b.body_lz4, b.crc32"
            " FROM journal j JOIN journal_blob b USING (seq) WHERE seq = ?", (seq,),
        )
        assert row is not None and row[0] == msgid, f"msgid index points to a missing row: {msgid}"
        _, infno, codec_name, body, crc = row
        if zlib.crc32(body) != crc:
            raise StoreFailed(f"journal row {seq} (msgid {msgid!r}) is damaged: crc32 mismatch")
        codec = CODECS[codec_name]
        inp, reply = unpack_body(body, codec)
        return (infno, codec, inp, reply)

    def settled(self, setl_id: str) -> Settled | None:
        if not setl_id.startswith("S"):
            return None
        seq = self.seq_of(setl_id[1:])
        if seq is None:
            return None
        row = self._one(f"SELECT {', '.join(_SETTLED_COLS)} FROM journal WHERE seq = ?", (seq,))
        r = dict(zip(_SETTLED_COLS, row))
        if r["kind"] != KIND_SETTLE:
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
            info={k: r[k] for k in INFO_KEYS}, reversed=rev is not None,
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
    *(k for k in INFO_KEYS if k not in ("mdtrt_id", "psn_no")),
)


class JournalMap:
    """Engine.journal backed by the store: msgid -> (infno, codec, raw input, reply).

    RAM holds the entries not yet committed; the rest is read from the store on a miss.
    """

    def __init__(self, reader: _Reader):
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

    def _committed(self, changes: list[Change]) -> None:
        for c in changes:
            del self._pending[c.msgid]


class SettledMap:
    """Engine.settled backed by the store: setl_id -> Settled, for reversals.

    New settlements stay in RAM until committed. A settlement read from the
    store stays while the engine may mark it reversed: it is dropped at the next
    prepare if nothing reversed it, or once its reversal is committed.
    """

    def __init__(self, reader: _Reader):
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

    def _drop_untouched(self) -> None:
        """On the engine's thread, between batches: forget loaded records that nothing reversed."""
        with self._lock:
            for k in [k for k in self._loaded if not self._live[k].reversed]:
                del self._live[k]
                self._loaded.discard(k)

    def _committed(self, changes: list[Change]) -> None:
        with self._lock:
            for c in changes:
                k = c.settled.setl_id
                rec = self._live.get(k)
                assert rec is not None, f"settlement {k} left RAM before its change was committed"
                # A settlement reversed by a batch not yet committed stays until that one is.
                if c.kind == KIND_REVERSE or not rec.reversed:
                    del self._live[k]
                    self._loaded.discard(k)


class OpenVisits:
    """Engine.open_visits backed by the store: the (fixmedins_code, mdtrt_id) with a settlement in force.

    RAM holds the visits that uncommitted changes opened or closed, with the
    number of such changes, so that committing one batch while a later one is
    in flight does not forget the later one's effect.
    """

    def __init__(self, reader: _Reader):
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

    def _committed(self, changes: list[Change]) -> None:
        with self._lock:
            for c in changes:
                visit = (c.settled.fixmedins_code, c.settled.mdtrt_id)
                hit = self._pending[visit]
                hit[1] -= 1
                assert hit[1] >= 0
                if hit[1] == 0:
                    del self._pending[visit]


def _lower_priority(nice: int, who: str) -> None:
    """This thread's nice value (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as e:
        log.info("%s keeps the normal priority (%s)", who, e)


class _Checkpointer:
    """Copies the WAL into the database file on its own thread and connection (PASSIVE checkpoints).

    A commit then only appends to the WAL and fsyncs it; the checkpoint's writes
    and fsync of the database file overlap the next commits. Every commit wakes
    it; while the WAL is shorter than WAL_CHASE_BYTES it rests
    CHECKPOINT_INTERVAL_S between passes, once longer it makes a pass per commit
    until one catches up and the WAL starts over. It runs at the lowest CPU
    priority. (By the WAL file's size instead: the file keeps its high-water mark
    when the WAL starts over, and woke it after nearly every commit.) The writer
    checkpoints itself, waiting, should the WAL file ever pass WAL_BYTES_MAX.
    """

    def __init__(self, path: str):
        self.conn = connect(path, keys=False)  # the main file; the folder checkpoints the keyed one
        self.conn.execute("PRAGMA synchronous = FULL")
        self.page_size = self.conn.execute("PRAGMA page_size").fetchall()[0][0]
        self.wake = threading.Event()
        self._stopped = threading.Event()
        self.stopping = False
        self.checkpoints = 0
        self.thread = threading.Thread(target=self._run, name="yidi-checkpoint", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # Lowest CPU priority: copying pages must not take the core from the engine when they share one.
        _lower_priority(CHECKPOINT_NICE, "checkpointer")
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.stopping:
                return
            rest = False
            try:
                _, frames, _ = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
                self.checkpoints += 1
                # frames: the WAL's length when this pass began. The WAL starts over
                # only at a commit that finds every frame copied, which a pass while
                # commits keep coming rarely leaves: once it is long, chase (a pass
                # per commit, each copying what the last commits added) until it
                # starts over; while it is short, rest between passes.
                rest = 0 <= frames * self.page_size < WAL_CHASE_BYTES
            except sqlite3.Error as e:  # harmless: the WAL keeps everything; the writer's limit still holds
                log.warning("background checkpoint failed: %s", e)
            if rest and self._stopped.wait(CHECKPOINT_INTERVAL_S):  # a rate limit; stop() ends it at once
                return

    def stop(self) -> None:
        self.stopping = True
        self._stopped.set()
        self.wake.set()
        self.thread.join()
        self.conn.close()


# ---------------------------------------------------------------- batch writers


class _Compressor:
    """A thread that compresses journal bodies beside the writer (core_ext._pack.Compression).

    It needs the GIL only to be handed a batch: the chunks it claims are compressed
    without it, so it never waits for the engine's thread between chunks.
    """

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="yidi-compress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.work()

    def submit(self, job: Compression) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)
        self.thread.join()


class _Folder:
    """Folds a sealed generation of the journal tail on its own thread and connection (SqliteStore._fold_range).

    A fold writes only the keyed file, so the commits, which write only the main
    file, go on meanwhile; the fold reads the journal and the logs on a snapshot.
    It runs below the engine's CPU priority. The writer starts one fold at a time
    (start) and waits for the last one (wait) before it seals the next generation:
    RAM holds at most two generations. A failed fold fails the store.
    """

    def __init__(self, store: "SqliteStore"):
        self.store = store
        self.conn = connect(store.path)
        _writer_setup(self.conn, store.path, new=False)
        self.conn.execute(f"PRAGMA main.cache_size = -{FOLD_MAIN_CACHE_KIB}")  # it reads each journal row once
        self.error: BaseException | None = None
        self.folds = 0
        self._job: tuple[int, int] | None = None
        self._stopping = False
        self._cv = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="yidi-fold", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        _lower_priority(FOLD_NICE, "folder")
        while True:
            with self._cv:
                while self._job is None and not self._stopping:
                    self._cv.wait()
                if self._job is None:
                    return
                m, h = self._job
            try:
                self.store._fold_range(self.conn, m, h)
                self.folds += 1
                try:
                    self.conn.execute("PRAGMA keys.wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:  # harmless: the next fold's pass copies it
                    log.warning("checkpoint of the keyed file failed: %s", e)
            except BaseException as e:
                log.error("fold of journal rows %d..%d failed: %r", m + 1, h, e)
                self.error = e
            with self._cv:
                self._job = None
                self._cv.notify_all()

    def start(self, m: int, h: int) -> None:
        with self._cv:
            assert self._job is None and not self._stopping
            self._job = (m, h)
            self._cv.notify_all()

    def wait(self) -> None:
        """Until the fold started last has ended; StoreFailed if it failed."""
        with self._cv:
            while self._job is not None:
                self._cv.wait()
        if self.error is not None:
            raise StoreFailed(f"a fold failed ({self.error!r}); the process must stop") from self.error

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self.thread.join()
        self.conn.close()


class _ModuleWriter:
    """The batch writer's interface on a sqlite3 module connection (when core_ext._sqlw is unavailable)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn  # of the main file only, like _sqlw.Writer's: a commit never locks the keyed file

    def prepare(self, sql: str) -> str:
        return sql

    def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    def executemany(self, sql: str, rows: list) -> None:
        self.conn.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def close(self) -> None:
        self.conn.close()


def _batch_writer(path: str):
    """A connection of its own to the main file for the commits, through core_ext._sqlw if it can."""
    if not _sqlw.available():
        log.warning("commits go through the sqlite3 module (slower): %s", _sqlw.UNAVAILABLE)
        conn = connect(path, keys=False)
        for sql in WRITER_PRAGMAS:
            conn.execute(sql)
        return _ModuleWriter(conn)
    w = _sqlw.Writer(path)
    try:
        for sql in WRITER_PRAGMAS:
            w.execute(sql)
        if w.query_int("PRAGMA synchronous") != 2 or w.query_int("PRAGMA wal_autocheckpoint") != 0:
            raise StoreFailed("the batch writer's connection did not take synchronous = FULL"
                              " and wal_autocheckpoint = 0")
    except BaseException:
        w.close()
        raise
    return w


# ---------------------------------------------------------------- the store


@dataclass(slots=True)
class Prepared:
    """The rows of one batch, ready to write (SqliteStore.prepare)."""

    changes: list
    journal: list
    compression: Compression  # of the journal bodies; blob_rows() has the journal_blob rows
    persons: list
    chronic: list
    tail: list  # (msgid, seq, visit, setl_id in force or None, reversed setl_id or None)
    last_seq: int

    def blob_rows(self) -> list:
        """The journal_blob rows (seq, codec, LZ4 block, crc32 of the block), in seq order.

        This thread compresses the chunks the compressor thread has not claimed, then
        waits for the ones it is compressing.
        """
        rows = self.compression.rows()
        assert len(rows) == len(self.changes) and (
            not rows or (rows[0][0], rows[-1][0]) == (self.last_seq + 1 - len(rows), self.last_seq))
        return rows


class SqliteStore:
    """The embedded store on SQLite; see the module docstring. Use open_store()."""

    def __init__(self, data_dir: str, world_dir: str, *, clock: str = "wall", verify: str = "quick",
                 fold_rows: int = FOLD_ROWS_DEFAULT):
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
        self._bw = None  # the batch writer (_batch_writer): every commit goes through it
        self._stmts: tuple = ()
        self._reader: _Reader | None = None
        self._checkpointer: _Checkpointer | None = None
        self._folder: _Folder | None = None
        self._tail = _Tail()
        self._folded_seq = 0  # the keyed tables hold the journal up to here (set by the folds)
        self._logs_deleted = 0  # the logs up to here are deleted
        # A second core compresses journal bodies while the writer inserts the rest.
        self._compressor = _Compressor() if len(os.sched_getaffinity(0)) > 1 else None
        try:
            self._open(world_dir, clock, verify)
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------ open

    def _open(self, world_dir: str, clock: str, verify: str) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.data_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreRefused(f"{self.data_dir}: the store is in use by another process") from None

        exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        kpath = keys_path(self.path)
        if not exists and os.path.exists(self.path + "-wal") and os.path.getsize(self.path + "-wal") > 0:
            raise StoreRefused(f"{self.path}: the database is missing but its WAL is there; refusing to reset")
        if exists:
            check_header(self.path)
        try:
            w = self._w = connect(self.path, keys=False)
            tables = {r[0] for r in w.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            meta = self._meta(tables) if tables else {}
        except sqlite3.DatabaseError as e:
            raise _refuse_sqlite(self.path, e) from None
        if not tables:
            # A new store, or a seed cut short (the keyed file is seeded first): nothing in a
            # keyed file here can be needed, and it is seeded again from the world.
            for f in (kpath, kpath + "-wal", kpath + "-shm"):
                if os.path.exists(f):
                    log.warning("removing %s, left by a seed that did not finish", f)
                    os.remove(f)
        elif not (os.path.exists(kpath) and os.path.getsize(kpath) > 0):
            raise StoreRefused(f"{kpath}: the keyed tables' file of the store is missing; refusing to open it")
        else:
            check_header(kpath)
        try:
            w.execute("ATTACH DATABASE ? AS keys", (kpath,))
            _writer_setup(w, self.path, new=not tables)
        except sqlite3.DatabaseError as e:
            raise _refuse_sqlite(kpath, e) from None

        world = load_world(world_dir)
        seeded_now = not tables
        if seeded_now:
            log.info("seeding a new store in %s from the world %s", self.data_dir, world_dir)
            self._seed(world, world_dir)
        else:
            self._check_opened(meta, verify)
            self._note_world_changes(world, world_dir)
        self._reader = _Reader(self.path, self._tail)
        self._checkpointer = _Checkpointer(self.path)
        try:
            self._bw = _batch_writer(self.path)
            self._stmts = tuple(self._bw.prepare(sql) for sql in SQL_INSERTS)
        except sqlite3.DatabaseError as e:
            raise _refuse_sqlite(self.path, e) from None
        try:
            self._written_seq = self._w.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchall()[0][0]
            self._next_seq = self._written_seq + 1
            self._folded_seq = self._w.execute("SELECT folded_seq FROM fold_state").fetchall()[0][0]
            self._logs_deleted = int(self._w.execute(
                "SELECT value FROM meta WHERE key = 'logs_deleted_to'").fetchall()[0][0])
            if not self._logs_deleted <= self._folded_seq <= self._written_seq:
                raise StoreRefused(
                    f"{keys_path(self.path)}: folded up to journal row {self._folded_seq}, but the journal has"
                    f" {self._written_seq} rows and its logs are deleted up to {self._logs_deleted}: the two files"
                    " are not of the same moment (a copy of one of them?); refusing to open the store")
            self._fold_inline()
            self._build_filters()
            self._folder = _Folder(self)
            # Just seeded, the store holds exactly the world's persons: no need to read them back.
            self.engine = self._engine(world, clock, None) if seeded_now else self._restore(world, clock)
        except sqlite3.DatabaseError as e:
            raise _refuse_sqlite(self.path, e) from None
        # The world and the engine live as long as the process: keep the collector
        # from scanning them again and again (the commit path allocates many tuples).
        gc.collect()
        gc.freeze()

    def _meta(self, tables: set) -> dict:
        """The main file's meta table, once its format and schema version are this build's."""
        meta = dict(self._w.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
        if meta.get("format") != STORE_FORMAT:
            raise StoreRefused(f"{self.path}: an SQLite file, but not a yidi store; refusing to touch it")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise StoreRefused(
                f"{self.path}: store schema {meta.get('schema_version')}, this build reads {SCHEMA_VERSION}"
            )
        return meta

    def _check_opened(self, meta: dict, verify: str) -> None:
        """The keyed file is this store's and undamaged; the ledger balances (meta: checked by _meta)."""
        w = self._w
        try:
            kpath = keys_path(self.path)
            keyed = {r[0] for r in w.execute("SELECT name FROM keys.sqlite_master WHERE type = 'table'")}
            state = w.execute("SELECT store_id FROM fold_state").fetchall() if "fold_state" in keyed else []
            if [r[0] for r in state] != [meta.get("store_id")]:
                raise StoreRefused(f"{kpath}: not the keyed tables of the store {self.path}; refusing to open it")
            if verify == "quick":
                res = [r[0] for r in w.execute("PRAGMA quick_check(20)").fetchall()]
                if res != ["ok"]:
                    raise StoreRefused(f"{self.path}: damaged: quick_check says {'; '.join(res)}")
            # Postings since the fold are legs of journal rows, balanced by construction.
            total, n = w.execute("SELECT COALESCE(SUM(balance_fen), 0), COUNT(*) FROM account").fetchall()[0]
            if total != 0:
                raise StoreRefused(f"{self.path}: damaged: the {n} ledger balances sum to {total} fen, not 0")
        except sqlite3.DatabaseError as e:
            raise _refuse_sqlite(self.path, e) from None

    def _seed(self, world: World, world_dir: str) -> None:
        """Create the schema and copy the world's dynamic part, in one transaction."""
        w = self._w
        n = world.n_persons
        acc = [world.psn_balc, world.psn_acc_year, world.psn_hifp_ip, world.psn_hifp_op,
               world.psn_ded_op, world.psn_burden2, world.psn_second_paid]
        acc_lists = [a.tolist() for a in acc]
        strs = [world.psn_no.to_pylist(), world.psn_certno.to_pylist(), world.psn_name.to_pylist(),
                world.psn_insuplc.to_pylist(), world.psn_insutype.to_pylist(), world.psn_type.to_pylist()]
        year = acc_lists[1]
        store_id = uuid.uuid4().hex
        # The keyed file first, then the main one, each in one transaction: a main file with
        # tables means a whole seed (a keyed file left alone is removed at the next open).
        w.execute("BEGIN IMMEDIATE")
        try:
            # Statement by statement: executescript would commit the open transaction.
            for stmt in schema_statements(KEYS_SCHEMA):
                w.execute(stmt.replace("CREATE TABLE ", "CREATE TABLE keys.", 1))
            w.executemany(
                "INSERT INTO person VALUES (" + ", ".join("?" * 21) + ")",
                ((i, *(s[i] for s in strs), *(a[i] for a in acc_lists), *(a[i] for a in acc_lists))
                 for i in range(n)),
            )
            cd = world.chr_hifp_cd.tolist()
            w.executemany(
                "INSERT INTO chronic VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((k, p, d, cd[k], year[p], cd[k], year[p])
                 for k, (p, d) in enumerate(zip(world.chr_psn.tolist(), world.chr_dise))),
            )
            w.execute("INSERT INTO fold_state VALUES (1, 0, ?)", (store_id,))
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise
        w.execute("BEGIN IMMEDIATE")
        try:
            for stmt in schema_statements(SCHEMA):
                w.execute(stmt)
            begn, end = world.fil_begn.tolist(), world.fil_end.tolist()
            w.executemany(
                "INSERT INTO filing VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((i, p, world.fil_type[i], world.fil_dest[i], money.format_day(begn[i]),
                  None if end[i] == DAY_OPEN else money.format_day(end[i]), world.fil_status[i])
                 for i, p in enumerate(world.fil_psn.tolist())),
            )
            meta = {"format": STORE_FORMAT, "schema_version": str(SCHEMA_VERSION), "created_at": _now_text(),
                    "seeded_from": os.path.abspath(world_dir), "store_id": store_id, "logs_deleted_to": "0"}
            meta.update(self._world_meta(world, world_dir))
            w.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            w.execute("INSERT INTO world_load (loaded_at, world_dir, changes) VALUES (?, ?, ?)",
                      (_now_text(), os.path.abspath(world_dir), "seeded"))
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise
        log.info("seeded %d persons, %d chronic qualifications, %d filings",
                 n, len(world.chr_dise), len(world.fil_type))

    @staticmethod
    def _world_meta(world: World, world_dir: str) -> dict:
        meta = {f"sha256:{f}": _sha256(os.path.join(world_dir, f)) for f in WORLD_FILES}
        with open(os.path.join(world_dir, "policies.json"), "rb") as f:
            meta["policies_json"] = f.read().decode("utf-8")
        meta["catalogue_rows"] = str(len(world.cat_code))
        meta["institutions_rows"] = str(len(world.inst_code))
        return meta

    def _note_world_changes(self, world: World, world_dir: str) -> None:
        """Log what changed in the world since the last start; the reloaded files are in force."""
        w = self._w
        old = dict(w.execute("SELECT key, value FROM meta").fetchall())
        new = self._world_meta(world, world_dir)
        notes: list[str] = []
        for f in WORLD_FILES:
            if old.get(f"sha256:{f}") == new[f"sha256:{f}"]:
                continue
            if f == "catalogue.csv":
                notes.append(f"catalogue.csv changed: {old.get('catalogue_rows')} -> {new['catalogue_rows']} "
                             "rows; the new catalogue is in force")
            elif f == "policies.json":
                notes.append("policies.json changed: " + _policy_diff(old.get("policies_json", "[]"),
                                                                      new["policies_json"])
                             + "; the new policies are in force")
            elif f == "institutions.csv":
                notes.append(f"institutions.csv changed: {old.get('institutions_rows')} -> "
                             f"{new['institutions_rows']} rows; in force")
            elif f == "prepay.csv":
                notes.append("prepay.csv changed; in force")
            else:
                notes.append(f"{f} differs from the one this store was seeded from; not applied: persons, "
                             "chronic qualifications and filings come from the store")
        for note in notes:
            (log.warning if "not applied" in note else log.info)("%s: %s", self.data_dir, note)
        if not notes:
            log.info("%s: the world %s is unchanged since the last start", self.data_dir, world_dir)
        # The seed files keep the fingerprint of the seed: a warning at each start until they match again.
        for f in SEED_FILES:
            new[f"sha256:{f}"] = old.get(f"sha256:{f}", "")
        w.execute("BEGIN IMMEDIATE")
        try:
            w.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", new.items())
            w.execute("INSERT INTO world_load (loaded_at, world_dir, changes) VALUES (?, ?, ?)",
                      (_now_text(), os.path.abspath(world_dir), "; ".join(notes) or "unchanged"))
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise

    def _restore(self, world: World, clock: str) -> Engine:
        """The engine over the world's catalogue and policies, with the store's persons and state (folded)."""
        w = self._w
        n = w.execute("SELECT COUNT(*) FROM person").fetchall()[0][0]
        strs: list[list] = [[] for _ in range(6)]
        nums = [np.empty(n, np.int64) for _ in PERSON_ACC]
        cur = w.execute(
            "SELECT psn, psn_no, certno, psn_name, insuplc_admdvs, insutype, psn_type, balc_fen, acc_year,"
            " hifp_ip_fen, hifp_op_fen, ded_op_fen, burden2_fen, second_paid_fen FROM person ORDER BY psn"
        )
        i = 0
        while True:
            rows = cur.fetchmany(READ_CHUNK_ROWS)
            if not rows:
                break
            cols = list(zip(*rows))
            m = len(rows)
            assert cols[0][0] == i and cols[0][-1] == i + m - 1, "person rows must be 0..n-1"
            for k in range(6):
                strs[k].extend(cols[1 + k])
            for k in range(len(PERSON_ACC)):
                nums[k][i : i + m] = cols[7 + k]
            i += m
        assert i == n
        chr_rows = w.execute("SELECT slot, psn, dise_codg, hifp_cd_fen, cd_year FROM chronic ORDER BY slot").fetchall()
        assert all(r[0] == k for k, r in enumerate(chr_rows)), "chronic slots must be 0..n-1"
        fil_rows = w.execute(
            "SELECT psn, filing_type, dest_admdvs, begndate, enddate, status FROM filing ORDER BY id"
        ).fetchall()
        psn_no = pa.array(strs[0], pa.string())
        assert len(pc.unique(psn_no)) == n, "psn_no must be unique in the person table"
        balc, acc_year, hifp_ip, hifp_op, ded_op, burden2, second_paid = nums
        restored = replace(
            world,
            psn_no=psn_no, psn_certno=pa.array(strs[1], pa.string()),
            psn_name=pa.array(strs[2], pa.string()), psn_insuplc=pa.array(strs[3], pa.string()),
            psn_insutype=pa.array(strs[4], pa.string()), psn_type=pa.array(strs[5], pa.string()),
            psn_balc=balc, psn_acc_year=acc_year.astype(np.int32), psn_hifp_ip=hifp_ip, psn_hifp_op=hifp_op,
            psn_ded_op=ded_op, psn_burden2=burden2, psn_second_paid=second_paid,
            chr_psn=np.array([r[1] for r in chr_rows], np.int32), chr_dise=[r[2] for r in chr_rows],
            chr_hifp_cd=np.array([r[3] for r in chr_rows], np.int64),
            fil_psn=np.array([r[0] for r in fil_rows], np.int32), fil_type=[r[1] for r in fil_rows],
            fil_dest=[r[2] for r in fil_rows],
            fil_begn=np.array([money.parse_day(r[3]) for r in fil_rows], np.int32),
            fil_end=np.array([DAY_OPEN if r[4] is None else money.parse_day(r[4]) for r in fil_rows], np.int32),
            fil_status=[r[5] for r in fil_rows],
        )
        return self._engine(restored, clock, [r[4] for r in chr_rows])

    def _engine(self, world: World, clock: str, cd_years: list | None) -> Engine:
        """An engine over `world` whose history lookups go to the store."""
        engine = Engine(world, clock=clock)
        if cd_years is not None:
            # The engine derives each slot's year from its person; the store knows it exactly.
            engine.state.cd_year[: len(cd_years)] = cd_years
        engine.journal = JournalMap(self._reader)
        engine.settled = SettledMap(self._reader)
        engine.open_visits = OpenVisits(self._reader)
        # 3201/3202 (issue 6, engine.reconcile): rows up to folded_seq are read from medins_time;
        # the index keeps in RAM only the changes numbered from _next_seq on, until a fold covers them.
        from engine.core.reconcile import ReconIndex

        engine.recon = ReconIndex(self.path, first_seq=self._next_seq)
        # Each change's journal row and body are built as the engine makes it
        # (_rows_of), numbered from _next_seq on in the order it makes them.
        self._numbered_seq = self._next_seq
        self._packed_rounds: dict = {}
        engine.on_change = self._rows_of
        return engine

    # ------------------------------------------------------------ commit

    def _rows_of(self, c: Change) -> None:
        """Engine.on_change: number a change and build its journal row and body, while it is fresh.

        Run as the engine makes each change, when its records are still in the CPU's
        caches (prepare, a batch later, would fetch them from memory again).
        """
        rec = c.settled
        # In the order of AMOUNT_KEYS and INFO_KEYS (prepare checks the keys of each batch's first change).
        a = list(rec.amounts.values())
        info = list(rec.info.values())
        assert len(a) == len(AMOUNT_KEYS) and len(info) == len(INFO_KEYS)
        # The ledger's legs are columns of the journal row (the `posting` view):
        # the identities they rest on (engine.ledger.postings asserts the same).
        hifp, hifmi, hifob, acct = a[_A_HIFP], a[_A_HIFMI], a[_A_HIFOB], a[_A_ACCT]
        assert hifp + hifmi + hifob == a[_A_FUND] and hifp >= 0 and hifmi >= 0 and hifob >= 0 and acct >= 0
        assert c.fixmedins_code == rec.fixmedins_code
        seq = self._numbered_seq
        self._numbered_seq = seq + 1
        if c.kind == KIND_SETTLE:
            sign, reversed_id = 1, None
            assert c.setl_id == rec.setl_id == "S" + c.msgid
            rr = c.reply.output["result"]
            if id(rr.r) not in self._packed_rounds:
                self._packed_rounds.clear()  # a round's settlements come one after another
            rows = pack_result_rows(rr, self._packed_rounds)
        else:
            assert c.kind == KIND_REVERSE and rec.reversed and c.setl_id == "S" + c.msgid
            sign, reversed_id, rows = -1, rec.setl_id, None
        c.seq = seq
        c.row = (
            seq, c.msgid, c.kind, c.infno, c.setl_id, reversed_id, c.setl_time, rec.insuplc_admdvs,
            rec.mdtrtarea_admvs, rec.fixmedins_code, rec.mdtrt_id, rec.psn, rec.psn_no, info[_I_INSUTYPE],
            info[_I_MED_TYPE], info[_I_CLR_TYPE], info[_I_FILING_CLASS], info[_I_POOL_PROP],
            rec.kind, rec.cd_slot, rec.year, *(a if sign == 1 else [-v for v in a]),
            sign * rec.burden, sign * rec.second,
        )
        c.body = body_of(c.input_raw, c.reply, rows)

    def commit(self, changes: list[Change]) -> None:
        """Write one batch's changes in one transaction; returns once durable. See the module docstring."""
        self.write(self.prepare(changes))

    def prepare(self, changes: list[Change]) -> Prepared:
        """The rows of a batch, from its changes and engine.state; on the engine's thread, before the next batch."""
        if self.failed:
            raise StoreFailed("an earlier commit failed: the store refuses further commits; restart")
        assert len(changes) <= COMMIT_CHANGES_MAX, f"more than {COMMIT_CHANGES_MAX} changes in one commit"
        self.engine.settled._drop_untouched()
        if changes:
            # The engine builds every amounts, info and reply dict of a kind the same way
            # (dict displays): check the keys' order on the first of each kind (below).
            assert tuple(changes[0].settled.amounts) == AMOUNT_KEYS and tuple(changes[0].settled.info) == INFO_KEYS
        checked = {KIND_SETTLE: False, KIND_REVERSE: False}
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
            visit = (rec.fixmedins_code, rec.mdtrt_id)
            if not checked[c.kind]:
                check_reply_keys(c.reply)
                checked[c.kind] = True
            if c.kind == KIND_SETTLE:
                tail.append((c.msgid, seq, visit, rec.setl_id, None))
            else:
                tail.append((c.msgid, seq, visit, None, rec.setl_id))
            journal.append(row)
            bodies.append(c.body)
            fmts.append(c.codec.fmt)
            psns[row[_ROW_PSN]] = None
            if row[_ROW_CD_SLOT] >= 0:
                slots[row[_ROW_CD_SLOT]] = None
            seq += 1
        last = seq - 1
        # The bodies are compressed without the GIL by the compressor thread (when
        # this process may run on more than one core) from now on, while the writer
        # inserts the journal rows; then by the writer too (Prepared.blob_rows).
        compression = Compression(bodies, self._next_seq, fmts, COMPRESS_CHUNK)
        if self._compressor is not None:
            self._compressor.submit(compression)
        st = self.engine.state
        idx = np.fromiter(psns, dtype=np.int64, count=len(psns))
        persons = list(zip(
            [last] * len(idx), idx.tolist(), st.balc_fen[idx].tolist(), st.acc_year[idx].tolist(),
            st.hifp_ip_fen[idx].tolist(), st.hifp_op_fen[idx].tolist(), st.ded_op_fen[idx].tolist(),
            st.burden2_fen[idx].tolist(), st.second_paid_fen[idx].tolist(),
        ))
        sidx = np.fromiter(slots, dtype=np.int64, count=len(slots))
        chronic = list(zip([last] * len(sidx), sidx.tolist(), st.cd_val_fen[sidx].tolist(), st.cd_year[sidx].tolist()))
        self._next_seq = last + 1
        return Prepared(changes, journal, compression, persons, chronic, tail, last)

    def write(self, p: Prepared) -> None:
        """One transaction for a prepared batch; returns when SQLite has fsynced it (WAL, synchronous=FULL)."""
        with self._write_lock:
            if self.failed:
                raise StoreFailed("an earlier commit failed: the store refuses further commits; restart")
            if not p.changes:
                return
            f = self._folder
            if f is not None and f.error is not None:
                self._fail(f.error)
                raise StoreFailed(f"a fold failed ({f.error!r}); the process must stop") from f.error
            w = self._bw
            journal, blob, person, chronic = self._stmts
            # The logs the last fold covered go a few thousand seqs at a time, in the commits.
            logs_to = min(self._folded_seq, self._logs_deleted + LOG_DELETE_SEQS)
            try:
                w.execute("BEGIN IMMEDIATE")
                w.executemany(journal, p.journal)  # while the compressor works (prepare)
                w.executemany(blob, p.blob_rows())
                w.executemany(person, p.persons)
                if p.chronic:
                    w.executemany(chronic, p.chronic)
                if logs_to > self._logs_deleted:
                    _delete_logs(w, logs_to)
                w.execute("COMMIT")
            except BaseException as e:
                self._fail(e)
                raise StoreFailed(f"commit of {len(p.changes)} changes failed ({e!r}); the process must stop") from e
            self._written_seq = p.last_seq
            # Durable. Index the rows in the tail first, then let the maps forget them:
            # a lookup in between finds them in one place or the other.
            t = self._tail
            r = self._reader
            msgids = [e[0] for e in p.tail]
            r.msgids.add_all(msgids)
            r.visits.add_all_pairs([e[2] for e in p.tail if e[3] is not None])
            t.msgid.update(zip(msgids, [e[1] for e in p.tail]))
            for _, seq, visit, setl_id, reversed_id in p.tail:
                t.visits[visit] = setl_id
                if reversed_id is not None:
                    t.reversed[reversed_id] = seq
            eng = self.engine
            eng.journal._committed(p.changes)
            eng.settled._committed(p.changes)
            eng.open_visits._committed(p.changes)
            self._logs_deleted = max(self._logs_deleted, logs_to)
            self._after_commit()
            if len(t.msgid) >= self.fold_rows:
                try:
                    self._start_fold()
                except BaseException as e:
                    self._fail(e)
                    raise StoreFailed(f"fold failed ({e!r}); the process must stop") from e

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

    def _build_filters(self) -> None:
        """The reader's msgid and visit filters: the keyed tables' keys and the tail's (on the writer's thread,
        no fold running: nothing is added meanwhile)."""
        import time

        t0 = time.perf_counter()
        w = self._w
        gens = [g for g in (self._tail, self._tail.sealed) if g is not None]
        n_msg = w.execute("SELECT COUNT(*) FROM msgid_index").fetchall()[0][0] + sum(len(g.msgid) for g in gens)
        n_vis = w.execute("SELECT COUNT(*) FROM open_visit").fetchall()[0][0] + sum(len(g.visits) for g in gens)
        msgids, visits = Bloom(max(FILTER_KEYS_MIN, 2 * n_msg)), Bloom(max(FILTER_KEYS_MIN, 2 * n_vis))
        cur = w.execute("SELECT msgid FROM msgid_index")
        while rows := cur.fetchmany(READ_CHUNK_ROWS):
            msgids.add_all([r[0] for r in rows])
        cur = w.execute("SELECT fixmedins_code, mdtrt_id FROM open_visit")
        while rows := cur.fetchmany(READ_CHUNK_ROWS):
            visits.add_all_pairs(rows)
        for g in gens:
            msgids.add_all(list(g.msgid))
            visits.add_all_pairs(list(g.visits))
        self._reader.msgids, self._reader.visits = msgids, visits
        log.info("lookup filters: %d msgids, %d open visits (%.0f MiB) in %.2f s", n_msg, n_vis,
                 (msgids.nbytes + visits.nbytes) / 2**20, time.perf_counter() - t0)

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
        """On the writer's thread, the live generation full: seal it and fold it in the background (_Folder)."""
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
                _delete_logs(w, h)
                w.execute("COMMIT")
            except BaseException:
                if w.in_transaction:
                    w.execute("ROLLBACK")
                raise
            self._logs_deleted = h
        return h - m

    def _fold_range(self, conn: sqlite3.Connection, m: int, h: int) -> None:
        """See the module docstring: the journal rows m < seq <= h into the keyed tables, in one transaction
        of the keyed file (it reads the main file, which the commits may grow meanwhile, and never writes it).
        Then the sealed generation of the tail, which held those rows, is dropped."""
        import time

        t0 = time.perf_counter()
        conn.execute("BEGIN")  # deferred: only the keyed file's write lock is taken (by the first INSERT)
        try:
            for sql in SQL_FOLD:
                conn.execute(sql, {"m": m, "h": h})
            if conn.execute("SELECT changes()").fetchall()[0][0] != 1:
                raise StoreFailed(f"fold {m}..{h}: the keyed tables are not folded up to {m}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        # Committed: lookups find these rows in the keyed tables from now on.
        self._folded_seq = h
        self._tail.sealed = None
        dt = time.perf_counter() - t0
        self.fold_s_total += dt
        log.info("folded journal rows %d..%d (%d) in %.2f s", m + 1, h, h - m, dt)

    def _rebuild_full_filters(self) -> None:
        r = self._reader
        if r is not None and r.msgids is not None and (
                r.msgids.added > r.msgids.capacity or r.visits.added > r.visits.capacity):
            self._build_filters()  # over capacity: false positives would grow; twice the size

    # ------------------------------------------------------------ close

    def close(self) -> None:
        """Fold, checkpoint the WAL into the database file, and release the folder."""
        if self._w is not None and not self.failed and hasattr(self, "engine"):
            pending = self.engine.journal.pending()
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
        recon = getattr(getattr(self, "engine", None), "recon", None)
        if recon is not None:
            recon.close()  # its read-only connection (issue 6)
        if self._folder is not None:
            self._folder.stop()
            self._folder = None
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._compressor is not None:
            self._compressor.stop()
            self._compressor = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._bw is not None:
            self._bw.close()
            self._bw = None
        if self._w is not None:
            self._w.close()
            self._w = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def __enter__(self) -> "SqliteStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _policy_diff(old_text: str, new_text: str) -> str:
    def by_key(text: str) -> dict:
        try:
            items = json.loads(text)
        except ValueError:
            return {}
        return {f"{p.get('insuplc_admdvs')}/{p.get('insutype')}": json.dumps(p, sort_keys=True)
                for p in items if isinstance(p, dict)}

    old, new = by_key(old_text), by_key(new_text)
    changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())

    def part(what: str, keys: list) -> str:
        shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
        return f"{len(keys)} {what}" + (f" ({shown})" if keys else "")

    return ", ".join((part("changed", changed), part("added", added), part("removed", removed)))


def open_store(data_dir: str, world_dir: str, *, clock: str = "wall", verify: str = "quick",
               fold_rows: int = FOLD_ROWS_DEFAULT) -> SqliteStore:
    """Open the store in `data_dir`, seeding it from `world_dir` when the folder holds none.

    verify: "quick" runs SQLite's quick_check at open (reads the whole file);
    "header" checks only the file header and the ledger's balance (very large stores).
    fold_rows: unfolded journal rows that trigger a fold (bounds the RAM tail index).
    Raises StoreRefused for a damaged, truncated, foreign or busy store, and
    engine.world.WorldError for a bad world folder.
    """
    return SqliteStore(data_dir, world_dir, clock=clock, verify=verify, fold_rows=fold_rows)


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
