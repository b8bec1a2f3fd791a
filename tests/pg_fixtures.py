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


def _pg_bin() -> str:
    """PostgreSQL's programs: YIDI_PG_BIN, else the newest Debian install (/usr/lib/postgresql/N/bin)."""
    if os.environ.get("YIDI_PG_BIN"):
        return os.environ["YIDI_PG_BIN"]
    root = "/usr/lib/postgresql"
    versions = sorted((v for v in os.listdir(root) if v.isdigit()), key=int) if os.path.isdir(root) else []
    return os.path.join(root, versions[-1], "bin") if versions else os.path.join(root, "15", "bin")


PG_BIN = _pg_bin()


class PrivateCluster:
    """A PostgreSQL cluster of one test's own, in a temporary folder, which the test may stop and start (the
    database going away under load). Run as the `postgres` user when the tests run as root (PostgreSQL
    refuses root)."""

    def __init__(self, folder: str):
        import pwd
        import shutil
        import socket

        self.folder = folder
        self.data = os.path.join(folder, "data")
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(folder, pwd.getpwnam("postgres").pw_uid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        subprocess.run([*self.as_user, os.path.join(PG_BIN, tool), *args], check=True, capture_output=True,
                       cwd=self.folder)

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.folder, "log"), "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        """Stop at once (its connections are cut, transactions in flight aborted)."""
        self._run("pg_ctl", "-D", self.data, "-w", "-m", "immediate", "stop")


@pytest.fixture
def private_pg():
    """A PrivateCluster, started; skipped, saying why, where PostgreSQL's programs are not installed."""
    import shutil
    import tempfile

    if not os.path.exists(os.path.join(PG_BIN, "pg_ctl")):
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL programs in {PG_BIN}: CI must provide them (.ci/run installs them)")
        pytest.skip(f"no PostgreSQL programs in {PG_BIN} (YIDI_PG_BIN)")
    folder = tempfile.mkdtemp(prefix="yidi-pg-")
    c = PrivateCluster(folder)
    c.start()
    try:
        yield c
    finally:
        try:
            c.stop()
        except Exception:  # noqa: BLE001  (already stopped by the test)
            pass
        shutil.rmtree(folder, ignore_errors=True)
