"""The PostgreSQL store (engine.store.pg): restart, and several nodes on one database (docs/contract.md section 13).

Each test uses a database of its own on a real server (tests/pg_fixtures.py). Two nodes are two stores opened
on the same database in one process, each with its own engine and connections, exactly as two `yidi serve`
processes hold them; tests/test_pg_serve.py runs real processes.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

import orjson
import psycopg
import pytest

from conftest import ROOT, VECTOR_WORLD, VECTORS
from engine.core.engine import Engine, Request
from engine.store import open_store
from pg_fixtures import pg_url  # noqa: F401  (a fixture)
from test_signin import HOSP, commit, person_env, sign_in_env, sign_out_env, world_dir  # noqa: F401
from test_store import _assert_persons_equal_reference, _check_ok, _enc, _oracle, _run, synth  # noqa: F401

from engine.tools.synth import gen_requests

BATCH = 48


def _persons(engine) -> list[tuple]:
    st = engine.state
    return list(zip(st.balc_fen.tolist(), st.acc_year.tolist(), st.hifp_ip_fen.tolist(), st.hifp_op_fen.tolist(),
                    st.ded_op_fen.tolist(), st.burden2_fen.tolist(), st.second_paid_fen.tolist()))


def _chronic(engine) -> list[tuple]:
    st = engine.state
    return list(zip(st.cd_val_fen.tolist(), st.cd_year.tolist()))


def test_restart_from_postgresql_answers_like_one_run(pg_url, synth):
    """Four runs of one stream with a stop and start between them answer exactly like one engine in RAM; the
    persons equal the reference's, and `yidi check --store` passes after each run."""
    world_dir, world, bodies = synth
    _, want = _oracle(world, bodies)
    got: list[bytes] = []
    cuts = [0, 200, 611, 1100, len(bodies)]
    for a, b in zip(cuts, cuts[1:]):
        with open_store(pg_url, world_dir, clock="inf_time") as store:
            got += _run(store, bodies[a:b])
        _check_ok(pg_url)
    assert [i for i, (x, y) in enumerate(zip(got, want)) if x != y] == [] and len(got) == len(want)
    with open_store(pg_url, world_dir, clock="inf_time") as store:
        _assert_persons_equal_reference(store.current, world, bodies)
        # Every committed request again: the stored replies, nothing charged twice.
        again = _enc(store.engine.handle_batch([Request(b) for b in bodies]))
        assert store.engine.take_changes() == []
        store.commit([])
    committed = {orjson.loads(b)["msgid"] for b, g in zip(bodies, got)
                 if orjson.loads(b)["infno"] in ("2207", "2304", "2208", "2305") and orjson.loads(g)["infcode"] == 0}
    assert len(committed) > 300
    for b, first, second in zip(bodies, got, again):
        if orjson.loads(b)["msgid"] in committed:
            assert first == second


@pytest.fixture(scope="module")
def mixed(synth):
    """A mixed stream (one-shot and step-wise visits, reversals, 2601, retries) on the synth world's persons."""
    world_dir, world, _ = synth
    return world_dir, world, [orjson.dumps(e) for e in gen_requests(world, 2500, seed=9, flow="mixed")]


def test_two_nodes_taking_turns_answer_like_one_engine(pg_url, mixed):
    """Batches of one stream sent to two nodes in a random turn: every reply, and every person's and chronic
    slot's accumulators, equal one engine's that took the batches in that order. The stream's visits are opened,
    uploaded, settled, reversed and undone (2601) on whichever node a batch reaches, and its retries reach the
    other node than their first: each node catches up on the other's batches before computing its own."""
    world_dir, world, bodies = mixed
    one = Engine(world, clock="inf_time")
    a = open_store(pg_url, world_dir, clock="inf_time")
    b = open_store(pg_url, world_dir, clock="inf_time")
    rng = random.Random(5)
    try:
        want, got = [], []
        for i in range(0, len(bodies), BATCH):
            chunk = bodies[i:i + BATCH]
            want += _enc(one.handle_batch([Request(x) for x in chunk]))
            one.take_changes()
            got += _run(rng.choice((a, b)), chunk, batch=BATCH)
        assert a.caught_up_rows > 0 and b.caught_up_rows > 0
        diffs = [i for i, (x, y) in enumerate(zip(got, want)) if x != y]
        assert not diffs, f"{len(diffs)} replies differ, first {diffs[0]}: {got[diffs[0]][:300]!r} {want[diffs[0]][:300]!r}"
        for node in (a, b):  # an empty batch catches each up on the other's last
            node.commit(node.engine.handle_batch([]))
            assert _persons(node.current) == _persons(one) and _chronic(node.current) == _chronic(one)
            assert node.current.visits.voided == one.visits.voided
    finally:
        a.close()
        b.close()
    _check_ok(pg_url)


def _node_worker(store, batches: list, out: dict, errors: list) -> None:
    try:
        for k, chunk in batches:
            replies = store.engine.handle_batch([Request(x) for x in chunk])
            seen = store.gseq  # every batch before this one, by any node, is in the engine now
            store.commit(store.engine.take_changes())
            # A batch that wrote is batch number store.gseq; one that wrote nothing saw `seen` and
            # falls after it (and before the next) in the one order.
            order = (store.gseq, 0) if store.gseq != seen else (seen, 1)
            out[k] = (order, _enc(replies))
    except BaseException as e:  # noqa: BLE001  (reported by the test)
        errors.append(e)


def test_two_nodes_at_once_on_the_same_persons_equal_a_serial_recomputation(pg_url, mixed):
    """Two nodes in two threads, each taking batches of the same persons' requests at the same time: the store
    puts their batches in one order; one engine taking the batches in that order answers every request the same,
    and ends with the same accumulators. `yidi check --store` passes."""
    world_dir, world, bodies = mixed
    chunks = [(k, bodies[i:i + BATCH]) for k, i in enumerate(range(0, len(bodies), BATCH))]
    # Node A takes the even batches, B the odd ones: the same persons and visits reach both at once.
    nodes = [open_store(pg_url, world_dir, clock="inf_time") for _ in range(2)]
    out: dict = {}
    errors: list = []
    try:
        threads = [threading.Thread(target=_node_worker, args=(n, chunks[j::2], out, errors)) for j, n in
                   enumerate(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        one = Engine(world, clock="inf_time")
        order = sorted(out, key=lambda k: out[k][0])
        assert [out[k][0][0] for k in order] == sorted(out[k][0][0] for k in order)
        for k in order:
            want = _enc(one.handle_batch([Request(x) for x in chunks[k][1]]))
            one.take_changes()
            assert out[k][1] == want, f"batch {k} (order {out[k][0]}) answered otherwise than in the one order"
        assert nodes[0].caught_up_rows > 0 and nodes[1].caught_up_rows > 0
        for node in nodes:
            node.commit(node.engine.handle_batch([]))
            assert _persons(node.current) == _persons(one) and _chronic(node.current) == _chronic(one)
    finally:
        for n in nodes:
            n.close()
    _check_ok(pg_url)


def test_a_sign_in_made_on_one_node_is_in_force_on_the_other_and_its_sign_out_too(pg_url, world_dir):
    a = open_store(pg_url, world_dir, clock="inf_time")
    b = open_store(pg_url, world_dir, clock="inf_time")
    try:
        sign_no = commit(a, [(sign_in_env("si-1"), HOSP)])[0]["output"]["signinoutb"]["sign_no"]
        assert commit(b, [(person_env("q-1", sign_no), HOSP)])[0].get("err_code") is None
        assert commit(b, [(sign_out_env("so-1", sign_no), HOSP)])[0].get("err_code") is None
        assert commit(a, [(person_env("q-2", sign_no), HOSP)])[0].get("err_code") == "E_SIGN_IN"
        # Both nodes hold the sign-out.
        assert set(b.current.signins.by_no) == set(a.current.signins.by_no) == set()
    finally:
        a.close()
        b.close()
    _check_ok(pg_url)


# ---------------------------------------------------------------- refused at start, in one line

def _yidi(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})


def _one_line_refusal(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def _replay_into(url: str, tmp_path, world: str = VECTOR_WORLD) -> subprocess.CompletedProcess:
    return _yidi("replay", "--world", world, "--in", os.path.join(VECTORS, "requests.jsonl"),
                 "--out", str(tmp_path / "out.jsonl"), "--store", url)


def test_a_wrong_unreachable_or_unprivileged_database_is_refused_in_one_line(pg_url, tmp_path):
    host = pg_url.rsplit("/", 1)[0]
    _one_line_refusal(_replay_into("postgresql://postgres@127.0.0.1:1/yidi", tmp_path), "cannot connect")
    _one_line_refusal(_replay_into(host + "/yidi_no_such_database", tmp_path), "cannot connect",
                      "yidi_no_such_database")
    _one_line_refusal(_yidi("check", "--store", host + "/yidi_no_such_database"), "cannot connect")
    _one_line_refusal(_yidi("serve", "--world", VECTOR_WORLD, "--store", "postgresql://postgres@127.0.0.1:1/yidi",
                            "--no-auth", "--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"), "cannot connect")
    # A role that may connect but not create the store's tables.
    role = "yidi_ro_" + pg_url.rsplit("_", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        bare = pg_url.replace("postgresql://postgres@", f"postgresql://{role}@")
        _one_line_refusal(_replay_into(bare, tmp_path), "lacks a privilege")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")


def test_a_newer_schema_or_another_world_is_refused_and_left_as_it_is(pg_url, tmp_path, synth):
    assert _replay_into(pg_url, tmp_path).returncode == 0
    _one_line_refusal(_replay_into(pg_url, tmp_path, world=synth[0]), "not this store's", "--accept-world-change")
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        rows = c.execute("SELECT count(*) FROM journal").fetchone()[0]
    _one_line_refusal(_replay_into(pg_url, tmp_path), "schema version 99", "newer")
    with psycopg.connect(pg_url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM journal").fetchone()[0] == rows
    # A database holding other tables is no store, and is not made one.
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("DROP TABLE meta CASCADE")
    _one_line_refusal(_replay_into(pg_url, tmp_path), "no yidi store")


def test_a_lease_keeps_the_lock_over_batches_and_the_other_node_waits_for_it(pg_url, mixed):
    """Node A with a lease and more work: its next batch is one round trip with no catch-up, and node B's batch
    waits (in a thread) until A's batch that finds no more work gives the lease up; B then catches up on A's
    batches, and both answer as one engine taking the batches in that order."""
    world_dir, world, bodies = mixed
    chunks = [bodies[i:i + BATCH] for i in range(0, 6 * BATCH, BATCH)]
    a = open_store(pg_url, world_dir, clock="inf_time")
    b = open_store(pg_url, world_dir, clock="inf_time")
    more = [True]
    a.lease_s, a.more_work = 60.0, lambda: more[0]
    got: dict = {}
    try:
        got[0] = _run(a, chunks[0], batch=BATCH)  # takes the lease
        trips = a.round_trips
        got[1] = _run(a, chunks[1], batch=BATCH)
        assert a.round_trips == trips + 1, "a batch under the lease is one round trip"
        started = threading.Event()

        def node_b():
            started.set()
            got[3] = _run(b, chunks[3], batch=BATCH)

        t = threading.Thread(target=node_b)
        t.start()
        started.wait()
        t.join(0.5)
        assert t.is_alive(), "node B's batch ran while A held the lease"
        more[0] = False
        got[2] = _run(a, chunks[2], batch=BATCH)  # finds no more work: gives the lease up after its commit
        t.join(30)
        assert not t.is_alive()
        assert b.catch_ups == 1
        got[4] = _run(a, chunks[4], batch=BATCH)
    finally:
        a.close()
        b.close()
    one = Engine(world, clock="inf_time")
    for k in range(5):
        want = _enc(one.handle_batch([Request(x) for x in chunks[k]]))
        one.take_changes()
        assert got[k] == want, f"batch {k}"
    _check_ok(pg_url)


def test_the_catch_up_reads_its_rows_by_the_gseq_index_before_any_analyze(pg_url, mixed):
    """A node's catch-up runs under the store's lock on every batch: on a journal PostgreSQL has not analyzed yet
    (a fresh database; autovacuum comes a minute later), each of its statements is planned on its gseq index for
    the value it is sent, never as a scan of the whole table."""
    from engine.store.pg.catchup import CATCH_UP_SQL

    world_dir, world, _ = mixed
    bodies = [orjson.dumps(e) for e in gen_requests(world, 6000, seed=4)]
    with open_store(pg_url, world_dir, clock="inf_time") as node:
        _run(node, bodies, batch=500)
        seen = node.gseq - 1
        raw = node._conn.raw
        rows = raw.execute("SELECT count(*) FROM journal").fetchone()[0]
        assert rows > 4000
        analyzed = raw.execute("SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'journal' AND "
                               "coalesce(last_analyze, last_autoanalyze) IS NOT NULL").fetchone()[0]
        if analyzed:
            pytest.skip("autovacuum analyzed the journal during the test: the plan no longer shows the guess")
        for sql in CATCH_UP_SQL:
            plan = "\n".join(r[0] for r in raw.execute("EXPLAIN " + sql, (seen,)).fetchall())
            table = sql.split(" FROM ")[1].split()[0]
            assert f"Seq Scan on {table}" not in plan and f"{table}_gseq" in plan, plan


def test_a_config_file_may_name_the_store_instead_of_a_data_folder(tmp_path):
    from engine.cli import parse_args

    path = tmp_path / "yidi.toml"
    path.write_text('world = "/w"\nstore = "postgresql://yidi@db:5432/yidi"\nno-auth = true\ntcp = "127.0.0.1:9000"\n'
                    "store-lease-ms = 10\n")
    a = parse_args(["serve", "--config", str(path)])
    assert (a.store, a.data, a.store_lease_ms) == ("postgresql://yidi@db:5432/yidi", None, 10.0)
    # The command line still wins.
    a = parse_args(["serve", "--config", str(path), "--store-lease-ms", "0"])
    assert a.store_lease_ms == 0.0
