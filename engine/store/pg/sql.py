"""The PostgreSQL connection of the store: the URL, refusals in one line, and the store's SQL spoken to it.

The embedded store's SQL (engine.store.schema, the lookups, `yidi check`,
clearing) is written for SQLite: `?` and `:name` parameters, `BEGIN IMMEDIATE`.
PgConn runs the same text on PostgreSQL (docs/store.md, "PostgreSQL"): it turns
the parameters into psycopg's, and `BEGIN IMMEDIATE` (a writer that excludes
every other) into a transaction that takes the store's cluster-wide lock
(STORE_LOCK_KEY), which every node's batch takes too. Sums of bigint columns
come back as int (PostgreSQL's numeric), as SQLite gives them.
"""
from __future__ import annotations

import re
import urllib.parse

import psycopg
from psycopg.adapt import Loader

from engine.store.errors import StoreRefused
from engine.store.pg import is_store_url

# The advisory lock every batch of every node takes first, in its transaction (pg_advisory_xact_lock):
# batches of all nodes run one at a time, in one total order. "yidi" in ASCII.
STORE_LOCK_KEY = 0x79696469
CONNECT_TIMEOUT_S = 10
STATEMENT_CACHE_MAX = 512  # translated statements kept


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return "the --store URL"
    if p.password is None:
        return url
    netloc = p.netloc.replace(f":{p.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(p._replace(netloc=netloc))


class _IntNumeric(Loader):
    """numeric -> int when it has no fraction (SUM of bigint), else str of it: the store holds no fraction."""

    def load(self, data) -> int | str:
        text = bytes(data).decode("ascii")
        try:
            return int(text)
        except ValueError:
            return text


_PARAM = re.compile(r"'(?:[^']|'')*'|\?|(?<![:\w]):([A-Za-z_]\w*)|%")
_cache: dict[str, str] = {}
# The store's statements in SQLite's own words, and PostgreSQL's for them.
_SQLITE_ONLY = {
    "INSERT OR REPLACE INTO meta VALUES (?, ?)":
        "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
}


def translate(sql: str) -> str:
    """SQLite's parameters (`?`, `:name`) as psycopg's (`%s`, `%(name)s`); `%` doubled; literals untouched."""
    hit = _cache.get(sql)
    if hit is not None:
        return hit

    def sub(m: re.Match) -> str:
        t = m.group(0)
        if t.startswith("'"):
            return t.replace("%", "%%")  # psycopg reads % in literals too
        if t == "?":
            return "%s"
        if t == "%":
            return "%%"
        return f"%({m.group(1)})s"

    out = _SQLITE_ONLY.get(sql)
    if out is not None:
        return out
    out = _PARAM.sub(sub, sql)
    if out.lstrip().upper().startswith("BEGIN IMMEDIATE"):
        out = f"BEGIN; SELECT pg_advisory_xact_lock({STORE_LOCK_KEY})"
    if len(_cache) < STATEMENT_CACHE_MAX:
        _cache[sql] = out
    return out


class PgConn:
    """A psycopg connection in autocommit mode (transactions are explicit, as the store's SQLite ones)
    that runs the store's SQLite-flavoured statements (module docstring)."""

    def __init__(self, raw: psycopg.Connection, url: str):
        self.raw = raw
        self.url = url
        # The last error of the database met by a statement: a lookup made inside the engine's batch may be
        # answered as a refusal there, so the store looks here before it commits the batch.
        self.error: psycopg.Error | None = None

    def execute(self, sql: str, params=None):
        text = translate(sql)
        try:
            if text.startswith("BEGIN; "):  # two statements: psycopg takes them without parameters
                self.raw.execute("BEGIN")
                return self.raw.execute(text[len("BEGIN; "):])
            if not params:  # psycopg reads no placeholder then: the text as written
                return self.raw.execute(sql)
            return self.raw.execute(text, params)
        except psycopg.Error as e:
            self.error = e
            raise

    def executemany(self, sql: str, rows) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(translate(sql), rows)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


def connect(url: str, *, application: str = "yidi") -> PgConn:
    """A connection to the store's database, or StoreRefused naming why not (wrong URL, unreachable,
    refused, no such database), in one line."""
    if not is_store_url(url):
        raise StoreRefused(f"--store {redact(url)}: not a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE)")
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name=application)
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreRefused(f"--store {redact(url)}: cannot connect to PostgreSQL: {first}") from None
    except Exception as e:  # a malformed URL (psycopg's own parser)
        raise StoreRefused(f"--store {redact(url)}: not a usable PostgreSQL URL ({e})") from None
    raw.adapters.register_loader("numeric", _IntNumeric)
    return PgConn(raw, url)


def refuse_pg(url: str, e: BaseException, doing: str) -> StoreRefused:
    """The refusal for a PostgreSQL error met while opening the store, naming a missing privilege as such."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, psycopg.errors.InsufficientPrivilege):
        return StoreRefused(f"--store {redact(url)}: the database user lacks a privilege yidi needs while {doing}: "
                            f"{first} (README, \"Several nodes on PostgreSQL\": the privileges)")
    return StoreRefused(f"--store {redact(url)}: PostgreSQL error while {doing}: {first}")
