"""`yidi backup`: a copy of both files of one moment, made while a store commits batches and folds."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading

import orjson
import pytest

from conftest import ROOT, VECTOR_WORLD, VECTORS
from engine.contract.wire import JSON
from engine.core.engine import Request
from engine.store import backup as backup_mod
from engine.store import open_store
from engine.store.backup import BackupError, backup_store
from engine.store.check import check_store
from engine.store.schema import DB_NAME, KEYS_NAME

BATCH = 8
FOLD_ROWS = 24  # small: the store folds in the background every few batches, while the backup runs
WAIT_S = 120.0  # a bound on every wait for the writer, never a sleep


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from engine.tools.synth import gen_requests, gen_world

    d = str(tmp_path_factory.mktemp("backup_world"))
    gen_world(d, seed=5, provinces=2, regions_per_province=2, catalogue_per_province=300, persons=400,
              institutions_per_region=1)
    return d, [orjson.dumps(e) for e in gen_requests(d, 4000, seed=6)]


class Writer(threading.Thread):
    """Commits batches of `bodies` to `store` until stopped or out of requests; each commit is announced."""

    def __init__(self, store, bodies: list[bytes]):
        super().__init__(name="test-writer", daemon=True)
        self.store, self.bodies = store, bodies
        self.batches: list[tuple[int, list[bytes], list[bytes]]] = []  # (last seq after it, bodies, replies)
        self.seq = 0
        self.error: BaseException | None = None
        self.done = False
        self.stop = threading.Event()
        self.cond = threading.Condition()

    def run(self) -> None:
        try:
            for i in range(0, len(self.bodies), BATCH):
                if self.stop.is_set():
                    break
                part = self.bodies[i:i + BATCH]
                replies = self.store.engine.handle_batch([Request(b) for b in part])
                changes = self.store.engine.take_changes()
                self.store.commit(changes)
                with self.cond:
                    self.seq += len(changes)
                    self.batches.append((self.seq, part, [JSON.encoder.encode(r) for r in replies]))
                    self.cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def wait_until(self, pred, what: str) -> None:
        """Wait, commit by commit, until pred() holds; the writer running out of requests is a failure."""
        with self.cond:
            ok = self.cond.wait_for(lambda: pred() or self.done, timeout=WAIT_S)
            assert ok and pred(), f"the writer stopped (error {self.error!r}) before {what}"


@contextlib.contextmanager
def writing(data: str, world: str, bodies: list[bytes], first_batches: int):
    """A store in `data` with a Writer committing to it, once `first_batches` are committed; stopped, joined
    and closed on the way out."""
    with open_store(data, world, clock="inf_time", fold_rows=FOLD_ROWS) as store:
        w = Writer(store, bodies)
        w.start()
        try:
            w.wait_until(lambda: len(w.batches) >= first_batches, f"{first_batches} batches")
            yield w
        finally:
            w.stop.set()
            w.join(WAIT_S)
        assert w.error is None, w.error


def folded_on_disk(data: str) -> int:
    conn = sqlite3.connect(f"file:{os.path.join(data, KEYS_NAME)}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT folded_seq FROM fold_state").fetchall()[0][0]
    finally:
        conn.close()


def journal_rows(data: str, upto: int) -> list[tuple]:
    conn = sqlite3.connect(f"file:{os.path.join(data, DB_NAME)}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT * FROM journal WHERE seq <= ? ORDER BY seq", (upto,)).fetchall()
    finally:
        conn.close()


def check_ok(data: str) -> None:
    lines: list[str] = []
    assert check_store(data, out=lines.append) == 0, "\n".join(lines)


def assert_copy_continues_like_the_original(copy: str, world: str, w: Writer, rows: int) -> None:
    """The copy is the store as it was at journal row `rows`: opened, it answers the batches committed after
    that moment exactly as the original did."""
    cut = next(k for k, (seq, _, _) in enumerate(w.batches) if seq > rows)
    assert cut == 0 or w.batches[cut - 1][0] == rows  # the snapshot falls between two commits
    with open_store(copy, world, clock="inf_time") as store:
        for seq, bodies, replies in w.batches[cut:]:
            got = store.engine.handle_batch([Request(b) for b in bodies])
            store.commit(store.engine.take_changes())
            assert [JSON.encoder.encode(r) for r in got] == replies
    check_ok(copy)


def test_backup_while_batches_commit_and_fold(tmp_path, synth):
    world, bodies = synth
    data, out = str(tmp_path / "data"), str(tmp_path / "backup")
    seen: dict = {}
    with writing(data, world, bodies, 10) as w:
        def during_copy(rows: int, folded: int) -> None:
            # The snapshot is taken: more batches commit, and a fold past it, before the pages are copied.
            seen.update(rows=rows, folded=folded, batches=len(w.batches))
            w.wait_until(lambda: len(w.batches) >= seen["batches"] + 10 and folded_on_disk(data) > rows,
                         "10 more batches and a fold past the snapshot")

        r = backup_store(data, out, on_snapshot=during_copy)
    assert r.journal_rows == seen["rows"] and r.folded_seq == seen["folded"] <= r.journal_rows
    assert w.seq > r.journal_rows and folded_on_disk(data) > r.journal_rows  # the original went on past it
    assert sorted(os.listdir(out)) == sorted([DB_NAME, KEYS_NAME])
    assert journal_rows(out, 2**62) == journal_rows(data, r.journal_rows)
    check_ok(out)
    assert_copy_continues_like_the_original(out, world, w, r.journal_rows)


def test_a_fold_between_the_two_reads_takes_the_snapshot_again(tmp_path, synth, monkeypatch):
    """The keyed file read after a fold that went past the main file's snapshot is not of its moment:
    without a second snapshot the copy would be refused at open."""
    world, bodies = synth
    data, out = str(tmp_path / "data"), str(tmp_path / "backup")
    real = backup_mod._keyed_state
    calls = []

    def keyed_state_after_a_fold(conn):
        calls.append(1)
        if len(calls) == 1:
            rows = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM main.journal").fetchall()[0][0]
            w.wait_until(lambda: folded_on_disk(data) > rows, "a fold past the main file's snapshot")
        return real(conn)

    monkeypatch.setattr(backup_mod, "_keyed_state", keyed_state_after_a_fold)
    with writing(data, world, bodies, 5) as w:
        r = backup_store(data, out)
    check_ok(out)
    assert_copy_continues_like_the_original(out, world, w, r.journal_rows)
    assert r.snapshot_attempts == 2 and len(calls) == 2


def yidi(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True)


def test_yidi_backup_beside_a_writer_then_check(tmp_path, synth):
    """The command an operator runs, in its own process, while this one commits."""
    world, bodies = synth
    data, out = str(tmp_path / "data"), str(tmp_path / "backup")
    with writing(data, world, bodies, 5) as w:
        r = yidi("backup", "--data", data, "--out", out)
        after = len(w.batches)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [os.path.join(out, DB_NAME), os.path.join(out, KEYS_NAME)]
    assert f"yidi: backed up {data} to {out}: journal rows up to" in r.stderr
    assert after > 5
    c = yidi("check", "--data", out)
    assert c.returncode == 0 and "check passed" in c.stdout, c.stdout + c.stderr
    with open_store(out, world, clock="inf_time"):
        pass


def test_backup_refuses_clearly_and_leaves_nothing(tmp_path):
    data = str(tmp_path / "data")
    replies = str(tmp_path / "replies.jsonl")
    assert yidi("replay", "--world", VECTOR_WORLD, "--in", os.path.join(VECTORS, "requests.jsonl"),
                "--out", replies, "--data", data).returncode == 0
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"")
    (tmp_path / "a-file").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "not-a-store").mkdir()
    cases = [
        (data, tmp_path / "full", "not empty"),
        (data, tmp_path / "a-file", "exists and is not a folder"),
        (data, tmp_path / "data" / "b", "inside --data"),
        (data, tmp_path / "data", "not empty"),
        (data, tmp_path / "no" / "such" / "b", "its parent folder"),
        (str(tmp_path / "a-file"), tmp_path / "b1", "a file, not a store's data folder"),
        (str(tmp_path / "nothing"), tmp_path / "b2", "no such folder"),
        (str(tmp_path / "not-a-store"), tmp_path / "b3", "no store in it"),
    ]
    for d, o, what in cases:
        r = yidi("backup", "--data", d, "--out", str(o))
        assert r.returncode == 2 and what in r.stderr, (d, o, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not any(os.path.exists(tmp_path / b) for b in ("b1", "b2", "b3", "no"))
    assert os.listdir(tmp_path / "full") == ["x"] and not os.path.exists(tmp_path / "data" / "b")
    # An SQLite file that is not a store is refused, and the empty --out is left as it was.
    sqlite3.connect(tmp_path / "not-a-store" / DB_NAME).execute("CREATE TABLE meta (key, value)")
    r = yidi("backup", "--data", str(tmp_path / "not-a-store"), "--out", str(tmp_path / "empty"))
    assert r.returncode == 2 and "not a yidi store" in r.stderr and os.listdir(tmp_path / "empty") == [], r.stderr
    # An empty folder is a good --out.
    r = yidi("backup", "--data", data, "--out", str(tmp_path / "empty"))
    assert r.returncode == 0, r.stderr
    check_ok(str(tmp_path / "empty"))


def test_backup_of_a_copy_missing_its_keyed_file_is_refused(tmp_path):
    data = str(tmp_path / "data")
    with open_store(data, VECTOR_WORLD, clock="inf_time"):
        pass
    os.remove(os.path.join(data, KEYS_NAME))
    with pytest.raises(BackupError, match="keyed tables' file of the store is missing"):
        backup_store(data, str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "b")
