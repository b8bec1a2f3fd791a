"""The store's files: where they are, their locks, their connections, and refusing a damaged one.

One data folder holds one store: DB_NAME (the journal, its blobs and logs),
KEYS_NAME (the keyed tables a fold writes), each with its `-wal` and `-shm`, and
LOCK_NAME, an advisory lock held by the one process that writes. A damaged,
truncated, foreign or busy file is refused with StoreRefused, never reset.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3

from engine.store.errors import StoreRefused
from engine.store.schema import (
    DB_NAME, KEYS_NAME, LOCK_NAME, PAGE_BYTES, SCHEMA_VERSION, SQL_DROP_STEP_MSGID_INDEX, STORE_FORMAT, UPGRADES,
    WRITER_PRAGMAS,
)

log = logging.getLogger("yidi.store")

WAL_HEADER_BYTES = 32  # a WAL file no longer than its header holds no frames


def db_path(data_dir: str) -> str:
    """The main file of the store in data_dir."""
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


def writer_setup(conn: sqlite3.Connection, path: str, new: bool) -> None:
    """WAL and WRITER_PRAGMAS on both files of a read-write connection with the keyed file attached."""
    for schema in ("main", "keys"):
        if new:
            conn.execute(f"PRAGMA {schema}.page_size = {PAGE_BYTES}")
        mode = conn.execute(f"PRAGMA {schema}.journal_mode = WAL").fetchall()[0][0]
        if mode != "wal":
            raise StoreRefused(f"{path}: cannot switch {schema} to WAL mode (got {mode!r})")
        for sql in WRITER_PRAGMAS:
            conn.execute(sql.replace("PRAGMA ", f"PRAGMA {schema}.", 1))
        assert conn.execute(f"PRAGMA {schema}.synchronous").fetchall()[0][0] == 2  # FULL


# SQLite errors that say nothing about the file's content: the store is refused
# by its real cause, not called damaged.
_NOT_DAMAGE = {
    sqlite3.SQLITE_FULL: "no space left on the device that holds it; free some and start again (the store "
                         "itself is not damaged)",
    sqlite3.SQLITE_IOERR: "the device returned an I/O error",
    sqlite3.SQLITE_READONLY: "it cannot be written (a read-only file or file system)",
    sqlite3.SQLITE_PERM: "permission denied",
    sqlite3.SQLITE_CANTOPEN: "it cannot be opened (permissions, or a missing folder)",
}


def refuse_sqlite(path: str, e: Exception) -> StoreRefused:
    """The refusal for an SQLite error met while opening: its cause when the file is not at fault."""
    code = getattr(e, "sqlite_errorcode", None)
    cause = _NOT_DAMAGE.get(code & 0xFF) if isinstance(code, int) else None
    if cause is not None:
        return StoreRefused(f"{path}: {cause} ({e})")
    return StoreRefused(f"{path}: damaged or not a yidi store ({e}); refusing to open or reset it")


def unreadable_hint(path: str) -> str:
    """Why SQLite may not open the store file `path` read-only though it is there: a reader of a WAL
    database makes its -shm file beside it, which a folder that cannot be written refuses."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.access(folder, os.W_OK):
        return ""
    return f" (the folder {folder} cannot be written, and SQLite reads a store by making its -shm file there)"


def lock_data_dir(data_dir: str) -> int:
    """Create data_dir if absent and take its advisory lock; the descriptor holds it until closed."""
    try:
        os.makedirs(data_dir, exist_ok=True)
        fd = os.open(os.path.join(data_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreRefused(f"{data_dir}: cannot create or lock the store's folder ({e})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreRefused(f"{data_dir}: the store is in use by another process") from None
    return fd


def remove_made_folder(data_dir: str) -> None:
    """Remove the folder lock_data_dir made for a store that was then not opened (its lock held: nothing else
    is in it)."""
    try:
        os.remove(os.path.join(data_dir, LOCK_NAME))
        os.rmdir(data_dir)
    except OSError as e:
        log.warning("could not remove %s, made for a store that did not open: %s", data_dir, e)


def open_files(path: str) -> tuple[sqlite3.Connection, bool, dict]:
    """The store's main file `path` with its keyed file attached, both in WAL mode (writer_setup).

    Returns (connection, new, meta): new when the main file holds no tables (a new
    store, or a seed cut short: the keyed file is seeded first, so one left beside an
    empty main file is removed), meta the main file's meta table (read_meta). An
    existing store whose keyed file is missing, or either file damaged, is refused.
    """
    kpath = keys_path(path)
    exists = os.path.exists(path) and os.path.getsize(path) > 0
    if not exists and os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 0:
        raise StoreRefused(f"{path}: the database is missing but its WAL is there; refusing to reset")
    if exists:
        check_header(path)
    conn = None
    try:
        try:
            conn = connect(path, keys=False)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            meta = read_meta(conn, path, tables) if tables else {}
        except sqlite3.DatabaseError as e:
            raise refuse_sqlite(path, e) from None
        if not tables:
            for f in (kpath, kpath + "-wal", kpath + "-shm"):
                if os.path.exists(f):
                    log.warning("removing %s, left by a seed that did not finish", f)
                    os.remove(f)
        elif not (os.path.exists(kpath) and os.path.getsize(kpath) > 0):
            raise StoreRefused(f"{kpath}: the keyed tables' file of the store is missing; refusing to open it")
        else:
            check_header(kpath)
        try:
            conn.execute("ATTACH DATABASE ? AS keys", (kpath,))
            writer_setup(conn, path, new=not tables)
            if tables:
                upgrade_schema(conn, path, meta)
                conn.execute(SQL_DROP_STEP_MSGID_INDEX)
        except sqlite3.DatabaseError as e:
            raise refuse_sqlite(kpath, e) from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn, not tables, meta


def read_meta(conn: sqlite3.Connection, path: str, tables: set) -> dict:
    """The main file's meta table, once its format and schema version are this build's."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
    if meta.get("format") != STORE_FORMAT:
        raise StoreRefused(f"{path}: an SQLite file, but not a yidi store; refusing to touch it")
    version = meta.get("schema_version")
    if version != str(SCHEMA_VERSION) and not (version and version.isdigit() and int(version) in UPGRADES):
        raise StoreRefused(f"{path}: store schema {version}, this build reads {SCHEMA_VERSION}")
    return meta


def upgrade_schema(conn: sqlite3.Connection, path: str, meta: dict) -> None:
    """Bring a store of an earlier schema (read_meta let it through) up to SCHEMA_VERSION, in one
    transaction of the main file, under the folder's lock."""
    version = int(meta["schema_version"])
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        while version < SCHEMA_VERSION:
            for sql in UPGRADES[version]:
                conn.execute(sql)
            version += 1
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.warning("%s: store schema upgraded from %s to %s", path, meta["schema_version"], version)
    meta["schema_version"] = str(version)


def check_opened(conn: sqlite3.Connection, path: str, meta: dict, verify: str) -> None:
    """The keyed file is this store's and undamaged; the ledger balances (meta: checked by read_meta).

    verify "quick" runs SQLite's quick_check (reads the whole file); "header" does not.
    """
    try:
        kpath = keys_path(path)
        keyed = {r[0] for r in conn.execute("SELECT name FROM keys.sqlite_master WHERE type = 'table'")}
        state = conn.execute("SELECT store_id FROM fold_state").fetchall() if "fold_state" in keyed else []
        if [r[0] for r in state] != [meta.get("store_id")]:
            raise StoreRefused(f"{kpath}: not the keyed tables of the store {path}; refusing to open it")
        if verify == "quick":
            res = [r[0] for r in conn.execute("PRAGMA quick_check(20)").fetchall()]
            if res != ["ok"]:
                raise StoreRefused(f"{path}: damaged: quick_check says {'; '.join(res)}")
        # Postings since the fold are legs of journal rows, balanced by construction.
        total, n = conn.execute("SELECT COALESCE(SUM(balance_fen), 0), COUNT(*) FROM account").fetchall()[0]
        if total != 0:
            raise StoreRefused(f"{path}: damaged: the {n} ledger balances sum to {total} fen, not 0")
    except sqlite3.DatabaseError as e:
        raise refuse_sqlite(path, e) from None
