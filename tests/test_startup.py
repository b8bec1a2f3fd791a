"""Starting against the wrong thing: one line on stderr, a non-zero exit, no traceback, nothing changed.

Each operator mistake, for each command that can meet it (`serve`, `replay`, `check`, `clear`,
`backup`), run as the operator runs it: the CLI in a process of its own. And a world belongs to
its store: a data folder started with another world's folder is refused unless the operator
accepts the change.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys

import pytest

from conftest import ROOT, VECTOR_WORLD, VECTORS
from engine.store import StoreRefused, open_store
from engine.store.schema import DB_NAME

REQUESTS = os.path.join(VECTORS, "requests.jsonl")
START_S = 60.0  # a bound on a server's start, never a sleep


def yidi(*args: str, timeout_s: float = START_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONPATH": ROOT})


def refused(*args: str) -> str:
    """Run `yidi`, expecting a refusal: a non-zero exit and one `yidi` line on stderr (a server's start-up
    log lines may come before it), no traceback. Returns that line."""
    r = yidi(*args)
    assert r.returncode != 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("yidi")]
    assert len(lines) == 1 and r.stderr.rstrip().endswith(lines[0]), r.stderr
    return lines[0]


def store_rows(data: str) -> list:
    """What a refused start must not change: meta, the starts kept, the journal's length."""
    conn = sqlite3.connect(f"file:{os.path.join(data, DB_NAME)}?mode=ro", uri=True)
    try:
        return [conn.execute("SELECT * FROM meta ORDER BY key").fetchall(),
                conn.execute("SELECT * FROM world_load ORDER BY id").fetchall(),
                conn.execute("SELECT COUNT(*) FROM journal").fetchall()]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def vector_store(tmp_path_factory):
    """The public requests replayed into a kept, closed store (each test copies it)."""
    d = tmp_path_factory.mktemp("startup")
    r = yidi("replay", "--world", VECTOR_WORLD, "--in", REQUESTS, "--out", str(d / "replies.jsonl"),
             "--data", str(d / "data"))
    assert r.returncode == 0, r.stderr
    return str(d / "data")


@pytest.fixture
def unwritable(tmp_path, vector_store):
    """(an empty folder, a folder holding a closed store), neither writable by this process: mode 0555, or
    for root (whom modes do not stop) a read-only tmpfs."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = False
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(ro)],
                          capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here")
        mounted = True
    try:
        (ro / "empty").mkdir()
        shutil.copytree(vector_store, ro / "store")
        if mounted:
            assert subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True).returncode == 0
        else:
            for d in (ro / "empty", ro / "store", ro):
                d.chmod(0o555)
        assert not os.access(ro / "store", os.W_OK)
        yield str(ro / "empty"), str(ro / "store")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(ro)], capture_output=True)
        else:
            for d in (ro, ro / "empty", ro / "store"):
                d.chmod(0o755)


def serve_args(data: str, world: str = VECTOR_WORLD, *more: str) -> list[str]:
    """`yidi serve` as these tests start it: about the store and the listeners, so with --no-auth."""
    return ["serve", "--world", world, "--data", data, "--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--no-auth",
            *more]


def replay_args(data: str, world: str = VECTOR_WORLD, *more: str, out: str | None = None) -> list[str]:
    return ["replay", "--world", world, "--in", REQUESTS, "--out", out or os.path.join(os.path.dirname(data),
                                                                                      "r.jsonl"),
            "--data", data, *more]


def starts(args: list[str]) -> str:
    """Start `yidi serve`, wait for its ready line, stop it with SIGTERM; its output up to ready."""
    p = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        seen = []
        for line in p.stdout:  # ends when the process does
            seen.append(line)
            if line.startswith("yidi: ready"):
                break
        assert seen and seen[-1].startswith("yidi: ready"), "".join(seen) + p.stderr.read()
        p.send_signal(signal.SIGTERM)
        assert p.wait(START_S) == 0
        return "".join(seen)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(START_S)


# ---------------------------------------------------------------- the data folder


def test_a_data_folder_in_use(tmp_path, vector_store):
    data = str(tmp_path / "data")
    shutil.copytree(vector_store, data)
    with open_store(data, VECTOR_WORLD, clock="inf_time"):  # this process holds it, as a running hub does
        for args in (serve_args(data), replay_args(data)):
            assert "the store is in use by another process" in refused(*args)
        # These read a snapshot beside the writer: not a mistake.
        assert yidi("check", "--data", data).returncode == 0
        r = yidi("clear", "--data", data, "--period", "2025-12", "--out", str(tmp_path / "o"))
        assert r.returncode == 0, r.stderr
        r = yidi("backup", "--data", data, "--out", str(tmp_path / "b"))
        assert r.returncode == 0, r.stderr


def test_a_data_folder_that_is_a_file(tmp_path):
    f = str(tmp_path / "a-file")
    open(f, "wb").close()
    out = str(tmp_path / "o")
    for args, what in (
        (serve_args(f), "cannot create or lock the store's folder"),
        (replay_args(f), "cannot create or lock the store's folder"),
        (["check", "--data", f], "a file, not a store's data folder"),
        (["clear", "--data", f, "--period", "2025-12", "--out", out], "a file, not a store's data folder"),
        (["backup", "--data", f, "--out", out], "a file, not a store's data folder"),
    ):
        assert what in refused(*args), args
    assert os.path.getsize(f) == 0 and not os.path.exists(out)


def test_an_unwritable_folder(tmp_path, vector_store, unwritable):
    empty, store = unwritable
    for args, what in (
        (serve_args(os.path.join(empty, "data")), "cannot create or lock the store's folder"),
        (serve_args(store), "cannot create or lock the store's folder"),
        (replay_args(os.path.join(empty, "data"), out=str(tmp_path / "r.jsonl")), "cannot create or lock"),
        (replay_args(store, out=str(tmp_path / "r.jsonl")), "cannot create or lock"),
        (["check", "--data", store], "cannot be written, and SQLite reads a store by making its -shm file there"),
        (["clear", "--data", store, "--period", "2025-12", "--out", str(tmp_path / "o")],
         "the folder cannot be written, and closing a period writes to the store"),
        (["backup", "--data", store, "--out", str(tmp_path / "b")], "cannot be written"),
        (["backup", "--data", vector_store, "--out", os.path.join(empty, "b")], "the copy failed"),
        (["clear", "--data", shutil.copytree(vector_store, tmp_path / "data"), "--period", "2025-12", "--out",
          os.path.join(empty, "o")], "cannot write in it"),
        (replay_args(str(tmp_path / "d2"), out=os.path.join(empty, "r.jsonl")), "cannot be written"),
    ):
        assert what in refused(*args), args
    assert not os.path.exists(tmp_path / "o") and not os.path.exists(tmp_path / "b")
    assert not os.path.exists(tmp_path / "d2")  # refused before a store was seeded for nothing
    assert store_rows(str(tmp_path / "data")) == store_rows(vector_store)  # not closed: its files had nowhere to go


# ---------------------------------------------------------------- the world folder


def test_a_bad_world_folder(tmp_path, vector_store):
    bad = tmp_path / "world"
    shutil.copytree(VECTOR_WORLD, bad)
    os.remove(bad / "institutions.csv")
    data = str(tmp_path / "data")
    shutil.copytree(vector_store, data)
    before = store_rows(data)
    for args in (serve_args(data, str(bad)), replay_args(data, str(bad)), serve_args(str(tmp_path / "new"), str(bad)),
                 replay_args(str(tmp_path / "new2"), str(bad))):
        assert "world refused: institutions.csv: cannot read" in refused(*args), args
    assert not os.path.exists(tmp_path / "new") and not os.path.exists(tmp_path / "new2")  # no half-made store
    # Clearing reads only the world's prepay.csv.
    prepay = (bad / "prepay.csv").read_text().splitlines()
    (bad / "prepay.csv").write_text("\n".join(prepay[:1] + [prepay[1].split(",")[0] + ",12.345"] + prepay[2:]) + "\n")
    line = refused("clear", "--data", data, "--period", "2025-12", "--out", str(tmp_path / "o"), "--world", str(bad))
    assert line.startswith("yidi: world refused: prepay.csv:2: amount:"), line
    assert store_rows(data) == before and not os.path.exists(tmp_path / "o")


def _other_world(tmp_path) -> str:
    from engine.tools.synth import gen_world

    d = str(tmp_path / "other-world")
    gen_world(d, seed=9, provinces=2, regions_per_province=1, catalogue_per_province=100, persons=50,
              institutions_per_region=1)
    return d


def test_another_worlds_folder_is_refused_unless_accepted(tmp_path, vector_store):
    data = str(tmp_path / "data")
    shutil.copytree(vector_store, data)
    other = _other_world(tmp_path)
    before = store_rows(data)
    with pytest.raises(StoreRefused, match=r"is not this store's \(seeded from .*\): persons.csv names \d+ persons "
                                           r"this store does not hold \(P.*\) and lacks \d+ of its 160 \(P.*\); "
                                           r"institutions.csv adds \d+ institutions .*and drops \d+ \(H"):
        open_store(data, other, clock="inf_time")
    for args in (serve_args(data, other), replay_args(data, other)):
        line = refused(*args)
        assert line.startswith(f"yidi: store: {data}: the world {other} is not this store's"), line
        assert "pass --accept-world-change" in line
    assert store_rows(data) == before  # nothing written
    # The operator means it: the store goes on with the other world, and keeps it as its own.
    out = starts(serve_args(data, other, "--accept-world-change"))
    assert "yidi: ready" in out
    loads = store_rows(data)[1]
    assert "world change accepted (--accept-world-change): persons.csv names" in loads[-2][3]
    assert starts(serve_args(data, other))  # accepted once
    assert yidi(*replay_args(data, other)).returncode == 0
    # Back to the store's own folder: the store's persons, and the accepted world's institutions plus others
    # (the other world's are a part of this one's): additions, no other world.
    r = yidi(*replay_args(data, VECTOR_WORLD))
    assert r.returncode == 0, r.stderr
    assert "institutions.csv adds 48 institutions" in store_rows(data)[1][-1][3]
    assert yidi("check", "--data", data).returncode == 0


def _own_world_store(tmp_path) -> tuple:
    """A copy of the vector world, and a store seeded from it."""
    world = tmp_path / "world"
    shutil.copytree(VECTOR_WORLD, world)
    data = str(tmp_path / "data")
    open_store(data, str(world), clock="inf_time").close()
    return world, data


def test_institutions_are_the_stores_their_names_and_the_catalogue_may_change(tmp_path, caplog):
    world, data = _own_world_store(tmp_path)
    inst = (world / "institutions.csv").read_text().splitlines()
    code, name, rest = inst[1].split(",", 2)
    (world / "institutions.csv").write_text("\n".join([inst[0], f"{code},{name} renamed,{rest}"] + inst[2:]) + "\n")
    cat = (world / "catalogue.csv").read_text().splitlines()
    (world / "catalogue.csv").write_text("\n".join(cat[:-1]) + "\n")
    with caplog.at_level(logging.INFO, logger="yidi.store"):
        open_store(data, str(world), clock="inf_time").close()
    assert "institutions.csv changed" in caplog.text and "catalogue.csv changed" in caplog.text
    new_code = code[:-4] + "9999"
    (world / "institutions.csv").write_text((world / "institutions.csv").read_text() + f"{new_code},New,{rest}\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yidi.store"):  # an institution added: a daily update
        open_store(data, str(world), clock="inf_time").close()
    assert f"the world adds to the store's: institutions.csv adds 1 institutions ({new_code}) and drops 0" in caplog.text
    (world / "institutions.csv").write_text("\n".join([inst[0]] + inst[2:]) + "\n")  # two dropped
    with pytest.raises(StoreRefused, match=rf"institutions.csv adds 0 institutions and drops 2 \({code}, {new_code}\);"):
        open_store(data, str(world), clock="inf_time")
    open_store(data, str(world), clock="inf_time", accept_world_change=True).close()
    open_store(data, str(world), clock="inf_time").close()


def test_new_values_for_the_same_persons_are_not_another_world(tmp_path, caplog):
    world, data = _own_world_store(tmp_path)
    persons = (world / "persons.csv").read_text().splitlines()
    (world / "persons.csv").write_text("\n".join([persons[0]] + list(reversed(persons[1:]))) + "\n")
    with caplog.at_level(logging.INFO, logger="yidi.store"):
        open_store(data, str(world), clock="inf_time").close()
    # Applied as a reload applies it: the same persons keep their rows, nothing else changes.
    assert "persons.csv changed; applied as a reload applies it" in caplog.text
    assert "persons_added 0, persons_changed 0" in caplog.text
    # A store that kept no institution codes (made before they were kept) keeps them from its next start.
    conn = sqlite3.connect(os.path.join(data, DB_NAME))
    conn.execute("DELETE FROM meta WHERE key = 'institution_codes'")
    conn.commit()
    conn.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yidi.store"):
        open_store(data, str(world), clock="inf_time").close()
    assert "institution codes kept from now on" in caplog.text
    codes = dict(store_rows(data)[0])["institution_codes"]
    assert json.loads(codes) == sorted(ln.split(",")[0] for ln in
                                       (world / "institutions.csv").read_text().splitlines()[1:])


# ---------------------------------------------------------------- listeners and output folders


@pytest.mark.parametrize("flag", ["--tcp", "--http", "--admin"])
def test_a_port_in_use(tmp_path, flag):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = f"127.0.0.1:{s.getsockname()[1]}"
        listeners = {"--tcp": "127.0.0.1:0", "--admin": "127.0.0.1:0", flag: taken}
        args = ["serve", "--world", VECTOR_WORLD, "--data", str(tmp_path / "data"), "--no-auth",
                *(x for pair in listeners.items() for x in pair)]
        line = refused(*args)
    assert line == f"yidi: {flag} {taken}: cannot listen there (Address already in use)", line
    assert not os.path.exists(tmp_path / "data")  # found before the store was made


def test_one_port_asked_twice(tmp_path):
    line = refused("serve", "--world", VECTOR_WORLD, "--data", str(tmp_path / "data"), "--no-auth",
                   "--tcp", "127.0.0.1:47999", "--http", "127.0.0.1:47999", "--admin", "127.0.0.1:0")
    assert line == "yidi: --http 127.0.0.1:47999: the same address as --tcp"


def test_a_missing_out_parent_or_input(tmp_path, vector_store):
    data = str(tmp_path / "data")
    shutil.copytree(vector_store, data)
    before = store_rows(data)
    nowhere = str(tmp_path / "no" / "such")
    for args, what in (
        (replay_args(data, out=os.path.join(nowhere, "r.jsonl")), "its folder"),
        (replay_args(str(tmp_path / "new"), out=os.path.join(nowhere, "r.jsonl")), "its folder"),
        (["replay", "--world", VECTOR_WORLD, "--in", os.path.join(nowhere, "q.jsonl"), "--out",
          str(tmp_path / "r.jsonl"), "--data", data], "--in"),
        (["clear", "--data", data, "--period", "2025-12", "--out", os.path.join(nowhere, "o")], "its parent folder"),
        (["backup", "--data", data, "--out", os.path.join(nowhere, "b")], "its parent folder"),
    ):
        assert what in refused(*args), args
    assert store_rows(data) == before
    assert not os.path.exists(tmp_path / "no") and not os.path.exists(tmp_path / "new")


# ---------------------------------------------------------------- the flags' files and values


@pytest.mark.parametrize("extra, line", [
    (["--tcp", "127.0.0.1:70000"], "yidi: --tcp: address '127.0.0.1:70000': want HOST:PORT"),
    (["--http", "127.0.0.1:http"], "yidi: --http: address '127.0.0.1:http': want HOST:PORT"),
    (["--http", "nohost.invalid:8080"], "yidi: --http nohost.invalid:8080: cannot listen there (Name or service "
                                        "not known)"),
    (["--keys", "{tmp}"], "yidi: --keys {tmp}: not a regular file"),
    (["--tls-cert", "{tmp}", "--tls-key", "{tmp}"], "yidi: --tls-cert {tmp}: cannot read it: Is a directory"),
    (["--log-file", "{tmp}/no/such/yidi.jsonl"], "yidi: --log-file {tmp}/no/such/yidi.jsonl: cannot be opened for "
                                                 "writing (No such file or directory)"),
    (["--log-file", "{tmp}"], "yidi: --log-file {tmp}: cannot be opened for writing (Is a directory)"),
    (["--config", "{tmp}/yidi.toml"], "yidi: --config {tmp}/yidi.toml: No such file or directory"),
    (["--request-log", "some"], None),  # argparse's own refusal: its usage, then one line
])
def test_a_bad_flag_value_or_file_is_refused_before_the_store(tmp_path, extra, line):
    """Each in one line naming the flag and the file, exit code 2, and no store made."""
    data = str(tmp_path / "data")
    extra = [x.format(tmp=tmp_path) for x in extra]
    auth = [] if "--keys" in extra else ["--no-auth"]
    args = ["serve", "--world", VECTOR_WORLD, "--data", data, "--admin", "127.0.0.1:0", *auth, *extra]
    if "--tcp" not in extra:
        args += ["--tcp", "127.0.0.1:0"]
    if line is None:
        r = yidi(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.splitlines()[-1].startswith("yidi serve: error: argument --request-log: invalid choice")
    else:
        assert refused(*args) == line.format(tmp=tmp_path)
    assert not os.path.exists(data)
