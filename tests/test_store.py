"""The durable store: restart, retries, ledger, check, damaged files, world changes."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import orjson
import pytest

from conftest import VECTOR_WORLD, VECTORS, differences
from engine.store.check import check_store
from engine.core.engine import Engine, Request
from engine.contract.protocol import COMMIT_INFNOS, REVERSE_INFNOS
from engine.reference.oracle import ReferenceEngine
from engine.store import StoreError, StoreFailed, StoreRefused, open_store
from engine.store.files import connect, db_path
from engine.store.schema import DB_NAME, KEYS_NAME
from engine.contract.wire import JSON, RAW_JSON, RAW_JSON_NUMBERS, RAW_MSGPACK
from engine.world.loader import load_world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOURNALED = COMMIT_INFNOS | REVERSE_INFNOS
BATCH = 64


def _lines(path: str) -> list[bytes]:
    return [ln for ln in open(path, "rb").read().splitlines() if ln.strip()]


def _enc(replies) -> list[bytes]:
    return [JSON.encoder.encode(r) for r in replies]


def _run(store, bodies: list[bytes], batch: int = BATCH) -> list[bytes]:
    out = []
    for i in range(0, len(bodies), batch):
        replies = store.engine.handle_batch([Request(b) for b in bodies[i:i + batch]])
        store.commit(store.engine.take_changes())
        out += _enc(replies)
    return out


def _oracle(world, bodies: list[bytes]) -> tuple[Engine, list[bytes]]:
    eng = Engine(world, clock="inf_time")
    out = []
    for i in range(0, len(bodies), BATCH):
        out += _enc(eng.handle_batch([Request(b) for b in bodies[i:i + BATCH]]))
        eng.take_changes()
    return eng, out


def _check_ok(data: str) -> list[str]:
    lines: list[str] = []
    rc = check_store(data, out=lines.append)
    assert rc == 0, "\n".join(lines)
    return lines


def _assert_persons_equal_reference(store_engine: Engine, world, bodies: list[bytes]) -> None:
    ref = ReferenceEngine(world)
    for b in bodies:
        env = orjson.loads(b)
        ref.handle(env, clock=env.get("inf_time"))
    st = store_engine.state
    psn_no = world.psn_no.to_pylist()
    for i, no in enumerate(psn_no):
        p = ref.persons[no]
        got = (int(st.balc_fen[i]), int(st.acc_year[i]), int(st.hifp_ip_fen[i]), int(st.hifp_op_fen[i]), int(st.ded_op_fen[i]),
               int(st.burden2_fen[i]), int(st.second_paid_fen[i]))
        assert got == (p.balc, p.acc_year, p.hifp_ip, p.hifp_op, p.ded_op, p.burden2, p.second_paid), no
        for dise, (val, year) in p.chronic.items():
            slot = store_engine.cd_slots[(i, dise)]
            mine = int(st.cd_val_fen[slot]) if int(st.cd_year[slot]) == int(st.acc_year[i]) else 0
            theirs = val if year == p.acc_year else 0
            assert mine == theirs, (no, dise)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from engine.tools.synth import gen_requests, gen_world

    d = str(tmp_path_factory.mktemp("store_world"))
    gen_world(d, seed=3, provinces=2, regions_per_province=2, catalogue_per_province=400, persons=500,
              institutions_per_region=1)
    world = load_world(d)
    bodies = [orjson.dumps(e) for e in gen_requests(world, 1500, seed=4)]
    return d, world, bodies


# ---------------------------------------------------------------- restart and retries


@pytest.mark.parametrize("fold_rows", [7, 262_144])
def test_restart_keeps_state(tmp_path, synth, fold_rows):
    """Four runs of one stream with a stop and start between them answer exactly like one run."""
    world_dir, world, bodies = synth
    _, want = _oracle(world, bodies)
    data = str(tmp_path / "data")
    got: list[bytes] = []
    cuts = [0, 200, 611, 1100, len(bodies)]
    for a, b in zip(cuts, cuts[1:]):
        with open_store(data, world_dir, clock="inf_time", fold_rows=fold_rows) as store:
            got += _run(store, bodies[a:b])
        _check_ok(data)
    assert len(got) == len(want)
    for i, (x, y) in enumerate(zip(got, want)):
        assert x == y, f"reply {i} differs after restarts"
    with open_store(data, world_dir, clock="inf_time") as store:
        _assert_persons_equal_reference(store.engine, world, bodies)
        assert store.engine.journal.pending() == store.engine.settled.pending() == 0


def test_settle_stop_start_reverse(tmp_path, synth):
    """Settle, stop, start, reverse every one of them: the accumulators come back exactly."""
    world_dir, world, bodies = synth
    envs = [orjson.loads(b) for b in bodies]
    settles = list({e["msgid"]: e for e in envs if e["infno"] in COMMIT_INFNOS}.values())[:150]
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time") as store:
        first = [orjson.loads(r) for r in _run(store, [orjson.dumps(e) for e in settles])]
    ok = [(e, r) for e, r in zip(settles, first) if r["infcode"] == 0]
    assert len(ok) > 50
    reversals = []
    for k, (e, r) in enumerate(ok):
        setl = r["output"]["setlinfo"]
        reversals.append({
            **{f: e[f] for f in ("mdtrtarea_admvs", "insuplc_admdvs", "fixmedins_code", "fixmedins_name")},
            "infno": "2208" if e["infno"] == "2207" else "2305", "msgid": f"REV{k:08d}",
            "inf_time": "2026-12-30 10:00:00",
            "input": {"data": {"setl_id": setl["setl_id"], "mdtrt_id": setl["mdtrt_id"], "psn_no": setl["psn_no"]}},
        })
    rev_bodies = [orjson.dumps(e) for e in reversals]
    with open_store(data, world_dir, clock="inf_time") as store:
        replies = [orjson.loads(r) for r in _run(store, rev_bodies)]
        assert all(r["infcode"] == 0 for r in replies), [r for r in replies if r["infcode"]][:3]
        for (e, r1), r2 in zip(ok, replies):
            s1, s2 = r1["output"]["setlinfo"], r2["output"]["setlinfo"]
            assert s2["hifp_pay"] == "-" + s1["hifp_pay"] or s1["hifp_pay"] == s2["hifp_pay"] == "0.00"
        _assert_persons_equal_reference(store.engine, world, [orjson.dumps(e) for e in settles] + rev_bodies)
        # A second reversal of each is refused, and retrying a reversal answers the first reply.
        again = [orjson.dumps({**e, "msgid": "X" + e["msgid"]}) for e in reversals]
        for r in store.engine.handle_batch([Request(b) for b in again]):
            assert r.err_code == "E_ALREADY_REVERSED"
        retry = _enc(store.engine.handle_batch([Request(b) for b in rev_bodies]))
        assert [orjson.loads(x) for x in retry] == replies
        assert store.engine.take_changes() == []
    _check_ok(data)


def test_replay_with_data_then_retries_answer_the_same(tmp_path):
    """Section 9 with --data: the vectors' answers, a store `yidi check` accepts, and the same answers to retries."""
    data, out = str(tmp_path / "data"), str(tmp_path / "out.jsonl")
    req = os.path.join(VECTORS, "requests.jsonl")
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-m", "engine.cli", "replay", "--world", VECTOR_WORLD, "--in", req,
                    "--out", out, "--data", data], check=True, capture_output=True, env=env, cwd=ROOT)
    got = _lines(out)
    expected = [json.loads(x) for x in open(os.path.join(VECTORS, "expected.jsonl"))]
    assert len(got) == len(expected) == 442
    assert not [i for i, (e, g) in enumerate(zip(expected, got)) if differences(e, json.loads(g))]
    r = subprocess.run([sys.executable, "-m", "engine.cli", "check", "--data", data],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check passed" in r.stdout and "all balances sum to 0.00" in r.stdout
    bodies = _lines(req)
    committed = {
        orjson.loads(b)["msgid"]: g for b, g in zip(bodies, got)
        if orjson.loads(b)["infno"] in JOURNALED and orjson.loads(g)["infcode"] == 0
    }
    assert len(committed) > 200
    with open_store(data, VECTOR_WORLD, clock="inf_time") as store:
        again = _enc(store.engine.handle_batch([Request(b) for b in bodies]))
        changes = store.engine.take_changes()
        assert not [c for c in changes if c.msgid in committed], "a retry was charged again"
        for i, (b, g) in enumerate(zip(bodies, again)):
            if orjson.loads(b)["infno"] in JOURNALED and orjson.loads(got[i])["infcode"] == 0:
                assert g == got[i], f"request {i}: the retry's answer differs from the first"


def test_pipelined_prepare_and_write(tmp_path, synth):
    """The server's way: batch N+1 is computed and prepared before batch N is written, with folds between."""
    world_dir, world, bodies = synth
    _, want = _oracle(world, bodies)
    data = str(tmp_path / "data")
    got: list[bytes] = []
    with open_store(data, world_dir, clock="inf_time", fold_rows=5) as store:
        waiting = []
        for i in range(0, len(bodies), 32):
            got += _enc(store.engine.handle_batch([Request(b) for b in bodies[i:i + 32]]))
            waiting.append(store.prepare(store.engine.take_changes()))
            if len(waiting) == 3:
                store.write(waiting.pop(0))
        for p in waiting:
            store.write(p)
    assert got == want
    _check_ok(data)


class _HeldFold:
    """The folder's connection, stopped inside a fold's transaction once it holds the keyed file's write lock."""

    def __init__(self, conn):
        self.conn = conn
        self.holding = threading.Event()  # the fold is in its transaction, the keyed file locked
        self.release = threading.Event()

    def execute(self, sql, *args):
        cur = self.conn.execute(sql, *args)
        if sql.startswith("INSERT INTO msgid_index") and not self.release.is_set():
            self.holding.set()
            self.release.wait()
        return cur

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_commits_and_lookups_go_on_while_a_fold_runs(tmp_path, synth):
    """A fold writes only the keyed file: while one holds its write lock, batches commit, and retries of
    the rows it is folding (in RAM, sealed) answer as the first time; after it, from the keyed tables."""
    world_dir, world, bodies = synth
    _, want = _oracle(world, bodies)
    data = str(tmp_path / "data")
    fold_rows, first = 200, 320
    with open_store(data, world_dir, clock="inf_time", fold_rows=fold_rows) as store:
        held = _HeldFold(store._folder.conn)
        store._folder.conn = held
        try:
            got = _run(store, bodies[:first])
            # The fold runs on the folder thread, at a lower priority: wait until it holds the keyed file.
            assert held.holding.wait(60), "no fold started"
            assert store._tail.sealed is not None and store._folded_seq == 0
            sealed = len(store._tail.sealed.msgid)
            assert sealed >= fold_rows
            keys = sqlite3.connect(os.path.join(data, "yidi-keys.sqlite3"), timeout=0, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                keys.execute("BEGIN IMMEDIATE")  # the fold holds the keyed file
            # Meanwhile: new settlements commit, retries of the sealed rows answer from RAM.
            done: list = []

            def more():
                try:
                    done.append(_run(store, bodies[first:first + 64]))
                except BaseException as e:
                    done.append(e)

            t = threading.Thread(target=more)
            t.start()
            t.join(60)
            assert done, "a commit waited for the fold"
            if isinstance(done[0], BaseException):
                raise done[0]
            got += done[0]
            assert store._written_seq > sealed and store._folded_seq == 0
            journaled = [i for i in range(first) if orjson.loads(bodies[i])["infno"] in JOURNALED
                         and orjson.loads(got[i])["infcode"] == 0]
            assert len(journaled) >= fold_rows

            def retried() -> list[bytes]:
                again = _run(store, bodies[:first])
                return [again[i] for i in journaled]

            assert retried() == [got[i] for i in journaled]  # while the fold waits: from the sealed rows
            held.release.set()
            store._folder.wait()
            assert store._folded_seq == sealed and store._tail.sealed is None
            keys.execute("BEGIN IMMEDIATE")  # released
            keys.execute("ROLLBACK")
            keys.close()
            assert retried() == [got[i] for i in journaled]  # from the keyed tables now
        finally:
            held.release.set()  # a failed assertion must not leave close() waiting for the fold
        rest = _run(store, bodies[first + 64:])
        # The logs the fold covered are gone (deleted by the commits after it), the later ones kept.
        conn = connect(db_path(data), read_only=True)
        (covered,), (later,) = [conn.execute(f"SELECT COUNT(*) FROM person_log WHERE seq {op} ?",
                                             (sealed,)).fetchone() for op in ("<=", ">")]
        conn.close()
        assert covered == 0 and later > 0
    _check_ok(data)
    # The stream's own replies, before the retries changed balances (1101), are the oracle's.
    assert got == want[:first + 64] and rest



def test_changes_are_committed_in_the_order_made_none_left_out(tmp_path, synth):
    """Rows are numbered as the engine makes each change (Engine.on_change): a commit that
    leaves a change out, or takes them out of order, is refused before anything is written."""
    world_dir, world, bodies = synth
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time") as store:
        eng = store.engine
        eng.handle_batch([Request(b) for b in bodies[:64]])
        first = eng.take_changes()
        eng.handle_batch([Request(b) for b in bodies[64:128]])
        second = eng.take_changes()
        assert len(first) >= 2 and second
        assert [c.seq for c in first + second] == list(range(1, 1 + len(first) + len(second)))
        assert all(c.row[0] == c.seq and c.body for c in first + second)
        with pytest.raises(AssertionError, match="numbered"):
            store.prepare(second)  # the first batch left out
        with pytest.raises(AssertionError, match="numbered"):
            store.prepare(first[1:] + first[:1])  # out of order
        store.commit(first)
        store.commit(second)
        n = len(first) + len(second)
    conn = connect(db_path(data))
    assert conn.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM journal").fetchone() == (n, 1, n)
    conn.close()
    _check_ok(data)


def test_a_reply_whose_keys_moved_is_refused_before_anything_is_written(tmp_path, synth):
    """The journal keeps a reply's values only: prepare checks the keys' order on each batch."""
    world_dir, world, bodies = synth
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time") as store:
        store.engine.handle_batch([Request(b) for b in bodies[:40]])
        changes = store.engine.take_changes()
        first = next(c for c in changes if c.kind == "settle")
        info = first.reply.output["setlinfo"]
        first.reply.output["setlinfo"] = dict(reversed(list(info.items())))
        with pytest.raises(AssertionError, match="setlinfo keys"):
            store.prepare(changes)
        first.reply.output["setlinfo"] = info
        store.commit(changes)
    _check_ok(data)


def test_ram_holds_only_what_is_not_committed(tmp_path, synth):
    world_dir, world, bodies = synth
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time", fold_rows=100) as store:
        _run(store, bodies)
        eng = store.engine
        assert eng.journal.pending() == eng.settled.pending() == eng.open_visits.pending() == 0
        assert len(store._tail.msgid) < 100 + BATCH


def test_stored_result_rows_render_like_the_engine(tmp_path, synth):
    """A reply read back from the journal renders its `result` byte for byte as the engine did, in every format."""
    world_dir, world, bodies = synth
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time", fold_rows=10) as store:
        replies = store.engine.handle_batch([Request(b) for b in bodies[:300]])
        changes = store.engine.take_changes()
        store.commit(changes)
        n = 0
        for c in changes:
            if c.kind != "settle":
                continue
            live = c.reply.output["result"]
            stored = store._reader.journal_entry(c.msgid)[3]
            for fmt in (RAW_JSON, RAW_JSON_NUMBERS, RAW_MSGPACK):
                assert bytes(stored.output["result"].to_raw(fmt)) == bytes(live.to_raw(fmt))
            assert JSON.encoder.encode(stored) == JSON.encoder.encode(c.reply)
            n += 1
        assert n > 100 and len(replies) == 300


def test_commit_failure_is_fail_stop(tmp_path, synth):
    world_dir, world, bodies = synth
    data = str(tmp_path / "data")
    store = open_store(data, world_dir, clock="inf_time")
    _run(store, bodies[:100])
    store.engine.handle_batch([Request(b) for b in bodies[100:200]])
    prepared = store.prepare(store.engine.take_changes())
    real = store._bw

    class Broken:
        def execute(self, sql):
            if sql.startswith("COMMIT"):
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql)

        def executemany(self, *a):
            return real.executemany(*a)

        @property
        def in_transaction(self):
            return real.in_transaction

    store._bw = Broken()
    with pytest.raises(StoreFailed):
        store.write(prepared)
    assert not real.in_transaction  # the failed batch was rolled back
    store._bw = real
    with pytest.raises(StoreFailed):
        store.commit([])
    store.close()
    # The store on disk holds what was committed before, and nothing of the failed batch.
    _check_ok(data)
    with open_store(data, world_dir, clock="inf_time") as s2:
        assert all(s2.engine.journal.get(orjson.loads(b)["msgid"]) is None
                   for b in bodies[100:200] if orjson.loads(b)["infno"] in JOURNALED
                   and b not in bodies[:100])


# ---------------------------------------------------------------- check


def _tamper(data: str, sql: str) -> None:
    conn = connect(db_path(data))
    conn.execute(sql)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("sql, what", [
    ("UPDATE person SET balc_fen = balc_fen + 1 WHERE psn = (SELECT MIN(psn) FROM journal)", "persons"),
    ("UPDATE journal SET fund_pay_sumamt_fen = fund_pay_sumamt_fen + 1 WHERE seq = 1", "institution leg"),
    ("UPDATE account SET balance_fen = balance_fen - 7 WHERE account LIKE 'medins/%'", "balances"),
    ("UPDATE journal_blob SET body_lz4 = CAST(body_lz4 || x'00' AS BLOB) WHERE seq = 3", "crc32"),
    ("UPDATE journal_blob SET body_lz4 = 'text' WHERE seq = 4", "blob type"),
    ("UPDATE journal SET hifp_pay_fen = hifp_pay_fen + 1 WHERE seq = 2", "legs"),
    ("DELETE FROM open_visit WHERE rowid IN (SELECT rowid FROM open_visit LIMIT 1)", "open visits"),
])
def test_check_finds_differences(tmp_path, sql, what):
    data = str(tmp_path / "data")
    with open_store(data, VECTOR_WORLD, clock="inf_time") as store:
        _run(store, _lines(os.path.join(VECTORS, "requests.jsonl")))
    _check_ok(data)
    if "open_visit" in sql:
        sql = ("DELETE FROM open_visit WHERE (fixmedins_code, mdtrt_id) IN"
               " (SELECT fixmedins_code, mdtrt_id FROM open_visit LIMIT 1)")
    _tamper(data, sql)
    lines: list[str] = []
    assert check_store(data, out=lines.append) == 1, "\n".join(lines)
    assert any(ln.startswith("FAIL") for ln in lines)
    r = subprocess.run([sys.executable, "-m", "engine.cli", "check", "--data", data], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
    assert r.returncode == 1 and "FAIL" in r.stdout


# ---------------------------------------------------------------- damaged files


def _sha(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _damage(path: str, how: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if how == "truncated_half":
            f.truncate(size // 2)
        elif how == "truncated_odd":
            f.truncate(size - 1000)
        elif how == "header_zeroed":
            f.write(b"\0" * 100)
        elif how == "pages_garbage":
            f.seek(16384)  # pages 2 to 5: the schema's first tables and their roots
            f.write(os.urandom(4 * 16384))
        elif how == "not_a_database":
            f.truncate(0)
            f.write(b"hello, this is not SQLite" * 1000)
            f.truncate(16384 * 4)


@pytest.mark.parametrize("how", ["truncated_half", "truncated_odd", "header_zeroed", "pages_garbage",
                                 "not_a_database"])
@pytest.mark.parametrize("which", [DB_NAME, KEYS_NAME])
def test_damaged_store_is_refused_not_reset(tmp_path, how, which):
    data = str(tmp_path / "data")
    with open_store(data, VECTOR_WORLD, clock="inf_time") as store:
        _run(store, _lines(os.path.join(VECTORS, "requests.jsonl")))
    path = os.path.join(data, which)
    assert not os.path.exists(path + "-wal") or os.path.getsize(path + "-wal") == 0
    _damage(path, how)
    before = _sha(path)
    with pytest.raises(StoreRefused, match="refus|damaged|truncated"):
        open_store(data, VECTOR_WORLD, clock="inf_time")
    assert _sha(path) == before, "the damaged file was changed"
    # Still refused the second time: nothing was reset.
    with pytest.raises(StoreRefused):
        open_store(data, VECTOR_WORLD, clock="inf_time")
    assert _sha(path) == before


def test_foreign_sqlite_file_and_lost_database_are_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(db_path(str(data)))
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreRefused, match="not a yidi store"):
        open_store(str(data), VECTOR_WORLD)
    other = tmp_path / "other"
    other.mkdir()
    (other / "yidi.sqlite3-wal").write_bytes(b"x" * 4096)
    with pytest.raises(StoreRefused, match="WAL"):
        open_store(str(other), VECTOR_WORLD)


def test_keyed_file_missing_or_of_another_store_is_refused_and_a_cut_seed_is_redone(tmp_path):
    """The two files of a store carry one store_id; a keyed file alone is a seed cut short."""
    reqs = _lines(os.path.join(VECTORS, "requests.jsonl"))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for d in (a, b):
        with open_store(d, VECTOR_WORLD, clock="inf_time") as store:
            _run(store, reqs[:40])
    shutil.copy(os.path.join(b, KEYS_NAME), os.path.join(a, KEYS_NAME))
    before = _sha(db_path(a))
    with pytest.raises(StoreRefused, match="not the keyed tables of the store"):
        open_store(a, VECTOR_WORLD, clock="inf_time")
    os.remove(os.path.join(a, KEYS_NAME))
    with pytest.raises(StoreRefused, match="keyed tables' file of the store is missing"):
        open_store(a, VECTOR_WORLD, clock="inf_time")
    assert _sha(db_path(a)) == before, "a refused store was changed"
    # b's main file gone (as if its seed had stopped after the keyed file): seeded again, from the world.
    os.remove(db_path(b))
    with open_store(b, VECTOR_WORLD, clock="inf_time") as store:
        assert store._written_seq == 0 and store._folded_seq == 0
        assert _run(store, reqs) == _oracle(load_world(VECTOR_WORLD), reqs)[1]
    _check_ok(b)


def test_files_of_different_moments_are_refused(tmp_path):
    """A keyed file older than the logs the journal has deleted, or newer than the journal, is refused."""
    reqs = _lines(os.path.join(VECTORS, "requests.jsonl"))
    data = str(tmp_path / "data")
    old = tmp_path / "old"
    with open_store(data, VECTOR_WORLD, clock="inf_time", fold_rows=20) as store:
        _run(store, reqs[:150], batch=16)
    shutil.copytree(data, old)  # closed: folded, logs deleted, WALs checkpointed
    with open_store(data, VECTOR_WORLD, clock="inf_time", fold_rows=20) as store:
        _run(store, reqs[150:], batch=16)
    newer = tmp_path / "newer"
    shutil.copytree(data, newer)
    shutil.copy(old / KEYS_NAME, os.path.join(data, KEYS_NAME))  # the keyed file of the older moment
    with pytest.raises(StoreRefused, match="not of the same moment"):
        open_store(data, VECTOR_WORLD, clock="inf_time")
    lines: list[str] = []
    assert check_store(data, out=lines.append) == 1 and any("same moment" in ln for ln in lines), lines
    shutil.copy(newer / KEYS_NAME, old / KEYS_NAME)  # the older journal, the newer keyed file
    with pytest.raises(StoreRefused, match="not of the same moment"):
        open_store(str(old), VECTOR_WORLD, clock="inf_time")


def test_store_in_use_is_refused(tmp_path):
    data = str(tmp_path / "data")
    with open_store(data, VECTOR_WORLD):
        with pytest.raises(StoreRefused, match="in use"):
            open_store(data, VECTOR_WORLD)
    open_store(data, VECTOR_WORLD).close()


@pytest.mark.parametrize("data", [None, ""])
def test_no_data_folder_is_an_error_never_a_store_in_memory(data):
    with pytest.raises(StoreError, match="no data folder"):
        open_store(data, VECTOR_WORLD)


def test_a_folder_that_cannot_be_made_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a folder")
    with pytest.raises(StoreRefused, match="cannot create or lock"):
        open_store(str(blocker / "data"), VECTOR_WORLD)


# ---------------------------------------------------------------- world changes


def test_changed_world_files_are_logged(tmp_path, caplog):
    world = tmp_path / "world"
    shutil.copytree(VECTOR_WORLD, world)
    data = str(tmp_path / "data")
    with open_store(data, str(world), clock="inf_time") as store:
        _run(store, _lines(os.path.join(VECTORS, "requests.jsonl"))[:100])
    pol = json.loads((world / "policies.json").read_text())
    pol[0]["outpatient"]["annual_deductible"] = "123.00"
    changed = f"{pol[0]['insuplc_admdvs']}/{pol[0]['insutype']}"
    (world / "policies.json").write_text(json.dumps(pol))
    cat = (world / "catalogue.csv").read_text().splitlines()
    (world / "catalogue.csv").write_text("\n".join(cat[:-1]) + "\n")
    persons = (world / "persons.csv").read_text()
    added = persons.splitlines()[1].replace("P", "Q", 1)
    (world / "persons.csv").write_text(persons + added + "\n")
    # A person added: the store's world plus an addition, applied as a reload applies it.
    with caplog.at_level(logging.INFO, logger="yidi.store"):
        with open_store(data, str(world), clock="inf_time") as store:
            assert store.engine.policies[0].op_annual_deductible_fen == 12300
            assert store.engine.world.n_persons == len(persons.splitlines())  # the store's persons and the new one
    text = caplog.text
    assert f"the world adds to the store's: persons.csv names 1 persons this store does not hold ({added.split(',')[0]})" \
        " and lacks 0 of its" in text
    assert f"policies.json changed: 1 changed ({changed})" in text
    assert f"catalogue.csv changed: {len(cat) - 1} -> {len(cat) - 2} rows" in text
    assert "persons.csv changed; applied as a reload applies it" in text and "persons_added 1" in text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yidi.store"):  # recorded: the store's world now
        open_store(data, str(world), clock="inf_time").close()
    assert "is unchanged since the last start" in caplog.text and "not applied" not in caplog.text
    _check_ok(data)


# ---------------------------------------------------------------- journal bodies


def test_compress_bodies_writes_python_lz4_blocks():
    """core_ext's batch compressor gives python-lz4's block format, byte for byte, and it reads back."""
    import random

    import lz4.block

    from core_ext._pack import compress_bodies

    rnd = random.Random(5)
    bodies = [b"", b"x", bytes(range(256)) * 40, os.urandom(5000),
              *(orjson.dumps({"feedetail": [{"det_item_fee_sumamt": f"{rnd.randint(1, 10**6) / 100:.2f}"}] * k})
                for k in range(1, 200, 7))]
    got = compress_bodies(bodies)
    assert got == [lz4.block.compress(b) for b in bodies]
    assert [lz4.block.decompress(z) for z in got] == bodies
    assert compress_bodies([]) == []
    with pytest.raises(TypeError):
        compress_bodies([b"ok", "not bytes"])
    # As journal_blob rows: seq, codec, block and the block's crc32 (zlib's).
    import zlib

    from core_ext._pack import crc32

    fmts = ["json", "msgpack"] * (len(bodies) // 2) + ["json"] * (len(bodies) % 2)
    rows = compress_bodies(bodies, 41, fmts)
    assert rows == [(41 + i, f, z, zlib.crc32(z)) for i, (f, z) in enumerate(zip(fmts, got))]
    for data in (b"", b"a", b"123456789", os.urandom(8), os.urandom(9), os.urandom(4099)):
        assert crc32(data) == zlib.crc32(data)
    with pytest.raises(ValueError):
        compress_bodies(bodies, 1, fmts[:-1])


def test_compression_shared_by_threads_gives_the_same_blocks():
    """Chunks claimed by several threads at once: every block made once, exactly as alone, in order."""
    import threading

    import lz4.block

    from core_ext._pack import Compression

    bodies = [os.urandom(k % 700) + b"x" * (k * 13 % 2000) for k in range(1000)]
    want = [lz4.block.compress(b) for b in bodies]
    for chunk in (1, 7, 64, 5000):
        job = Compression(bodies, 10, ["json"] * len(bodies), chunk)
        helpers = [threading.Thread(target=job.work) for _ in range(3)]
        for t in helpers:
            t.start()
        rows = job.rows()  # this thread compresses what is left, then waits for the helpers
        for t in helpers:
            t.join()
        assert [r[2] for r in rows] == want and [r[0] for r in rows] == list(range(10, 1010))
        assert job.rows() is rows and job.blocks() == want
        job.work()  # nothing left to claim: a no-op
    assert Compression([]).blocks() == []


def test_bodies_compressed_on_the_worker_read_back_in_order(tmp_path, synth):
    """Batches larger than the compressor's chunk: every journal row holds its own request."""
    from engine.store.writer import COMPRESS_CHUNK_BODIES

    world_dir, world, bodies = synth
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time") as store:
        eng = store.engine
        eng.handle_batch([Request(b) for b in bodies[: 3 * COMPRESS_CHUNK_BODIES + 5]])
        changes = eng.take_changes()
        assert len(changes) > 2 * COMPRESS_CHUNK_BODIES
        store.commit(changes)
        for c in changes:
            stored = store._reader.journal_entry(c.msgid)
            assert stored[2] == c.input_raw
            assert JSON.encoder.encode(stored[3]) == JSON.encoder.encode(c.reply)
    _check_ok(data)


def test_pack_lines_equals_numpy_records():
    """core_ext's line packer writes exactly the LINE_DTYPE records numpy would, and refuses what does not fit."""
    import numpy as np

    from core_ext._pack import pack_lines
    from core_ext._split import CatalogueArrays, LineBatch, SplitResults
    from engine.store.codec import LINE_DTYPE

    rng = np.random.default_rng(9)
    n, m = 500, 300
    cat_lv = rng.integers(1, 4, m).astype(np.int8)
    cat_sp = rng.integers(0, 10_001, m).astype(np.int32)
    cat_cap = rng.integers(-1, 10**12, m).astype(np.int64)
    row = rng.integers(-1, m, n).astype(np.int32)
    memo = rng.integers(0, 5, n).astype(np.int8)
    amounts = [rng.integers(0, 2**31, n).astype(np.int64) for _ in range(4)]
    want = np.zeros(n, LINE_DTYPE)
    hit = row >= 0
    at = np.where(hit, row, 0)
    want["lv"] = np.where(hit, cat_lv[at], 0)
    want["selfpay_bp"] = np.where(hit, cat_sp[at], 0)
    want["cap_micro"] = np.where(hit, cat_cap[at], -1)
    want["memo"] = memo
    for name, col in zip(("fulamt_fen", "overlmt_fen", "preselfpay_fen", "inscp_fen"), amounts):
        want[name] = col
    z = np.zeros(n, np.int64)
    split = SplitResults(LineBatch(starts=np.array([0, n], np.int64), outpatient=np.zeros(1, np.uint8), row=row,
                                   pric_micro=z, cnt_ten_thousandths=z, amt_fen=z))
    split.memo[:] = memo
    for part, col in zip((split.fulamt_fen, split.overlmt_fen, split.presel_fen, split.inscp_fen), amounts):
        part[:] = col
    cat = CatalogueArrays(lv=cat_lv, selfpay_bp=cat_sp, cap_micro=cat_cap, lmt=np.zeros(m, np.int8))
    assert pack_lines(split, cat) == want.tobytes()
    for bad in (-1, 2**31):
        split.presel_fen[7] = bad
        with pytest.raises(ValueError, match="line 7"):
            pack_lines(split, cat)
    split.presel_fen[7] = 0
    row[3] = m
    with pytest.raises(ValueError, match="line 3"):
        pack_lines(split, cat)


# ---------------------------------------------------------------- lookup filters


def test_bloom_never_forgets_and_rarely_errs():
    """A key added is always reported; absent keys are reported present about 1 time in 1,000 at capacity."""
    from core_ext._bloom import Bloom

    f = Bloom(20_000)
    keys = [f"H{k:011d}2026112000{k:06d}" for k in range(f.capacity)]
    f.add_all(keys[: len(keys) // 2])
    for k in keys[len(keys) // 2:]:
        f.add(k)
    assert f.added == len(keys)
    assert all(f.may_contain(k) for k in keys)
    absent = [f"X{k:011d}2026112100{k:06d}" for k in range(50_000)]
    fp = sum(f.may_contain(k) for k in absent) / len(absent)
    assert fp < 0.005, fp
    f.add_all_pairs([("H1", "v1"), ("H2", "v2")])
    f.add("H3", "v3")
    assert f.may_contain("H1", "v1") and f.may_contain("H3", "v3")
    assert sum(f.may_contain(a, b) for a, b in (("H1", "v2"), ("H2", "v1"), ("H1v", "1"), ("H", "1v1"))) <= 1
    with pytest.raises(TypeError):
        f.may_contain(None)
    with pytest.raises(ValueError):
        Bloom(0)


def test_filters_grow_and_the_store_still_answers_like_the_engine(tmp_path, synth, monkeypatch):
    """Tiny filters, rebuilt larger at folds as they fill; every reply (retries, duplicate visits, reversals,
    across a restart) equals the in-memory engine's, and a filter's "absent" is never wrong."""
    import engine.store.lookups as lookups_mod

    monkeypatch.setattr(lookups_mod, "FILTER_KEYS_MIN", 1)
    world_dir, world, bodies = synth
    _, want = _oracle(world, bodies)
    data = str(tmp_path / "data")
    half = len(bodies) // 2
    with open_store(data, world_dir, clock="inf_time", fold_rows=100) as store:
        cap0 = store._reader.msgids.capacity
        got = _run(store, bodies[:half])
        assert store._reader.msgids.capacity > cap0
    with open_store(data, world_dir, clock="inf_time", fold_rows=100) as store:
        r = store._reader
        assert r.msgids.added >= half // 2
        for c in store._w.execute("SELECT msgid FROM msgid_index"):
            assert r.msgids.may_contain(c[0])
        for a, b in store._w.execute("SELECT fixmedins_code, mdtrt_id FROM open_visit"):
            assert r.visits.may_contain(a, b)
        got += _run(store, bodies[half:])
    assert got == want
    _check_ok(data)
