"""A real PostgreSQL database per test, for the PostgreSQL store (engine.store.pg).

The server is the one at YIDI_TEST_PG (default: the machine's, 127.0.0.1:5432, user postgres, trust; `.ci/run`
starts one where none runs). Each test gets a database of its own, CREATE DATABASE with a random name, dropped
after it. Where no server answers the tests are skipped, saying so, except under CI, where one must answer.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import urllib.parse

import pytest

ADMIN_URL = os.environ.get("YIDI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


def server_answers() -> str:
    """"" when the server answers, else why not."""
    try:
        with _admin() as c:
            c.execute("SELECT 1")
        return ""
    except Exception as e:  # noqa: BLE001  (any failure to reach it: no psycopg, no server, refused)
        return f"no PostgreSQL server answers at {ADMIN_URL} ({str(e).strip().splitlines()[0] if str(e) else e!r})"


def url_of(name: str) -> str:
    p = urllib.parse.urlsplit(ADMIN_URL)
    return urllib.parse.urlunsplit(p._replace(path="/" + name))


def create_database() -> tuple[str, str]:
    name = "yidi_test_" + secrets.token_hex(6)
    with _admin() as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return name, url_of(name)


def drop_database(name: str) -> None:
    with _admin() as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def require_server() -> None:
    why = server_answers()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why + ": CI must provide one (.ci/run starts it)")
        pytest.skip(why)




STORES = ["sqlite", "postgresql"]


@contextlib.contextmanager
def store_at(kind: str, tmp_path):
    """Where a store of `kind` lives for one test: a data folder (the embedded store) or a new PostgreSQL
    database (dropped after)."""
    if kind == "sqlite":
        yield str(tmp_path / "data")
        return
    require_server()
    name, url = create_database()
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture(params=STORES)
def store_where(request, tmp_path):
    """Where a store lives, each way (store_at)."""
    with store_at(request.param, tmp_path) as where:
        yield where


def store_flag(where: str) -> list[str]:
    """The CLI's flag for a store: --data DIR or --store URL."""
    return ["--store", where] if where.startswith("postgresql://") else ["--data", where]


@pytest.fixture
def pg_url(tmp_path):
    """The URL of a new, empty database (dropped after the test)."""
    with store_at("postgresql", tmp_path) as url:
        yield url
