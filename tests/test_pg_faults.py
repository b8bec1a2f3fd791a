"""Failover and faults of the PostgreSQL store (docs/contract.md section 13; docs/store.md, "Faults").

A node SIGKILLed under load: its hospitals retry on the other node; nothing acknowledged is lost, nothing is
charged twice, `yidi check --store` passes. The database stopped under load (a cluster of the test's own): the
batches it cannot take are refused (E_BUSY at the hub) with nothing done, and once it is back the node rebuilds
its engine from it by itself and answers as if the outage had not been.
"""
from __future__ import annotations

import signal
import time

import orjson
import pytest

from engine.core.engine import Engine, Request
from engine.hub.client import FramedClient
from engine.reference.oracle import ReferenceEngine
from engine.store import StoreUnavailable, open_store
from engine.store.check import check_store
from pg_fixtures import pg_url, private_pg  # noqa: F401  (fixtures)
from test_pg_store import BATCH, _chronic, _persons, mixed, synth  # noqa: F401
from test_server import clone_settlements, differences, start_serve, strip_times
from test_store import _enc

WAIT_S = 60


def _check_ok(url: str) -> None:
    lines: list[str] = []
    assert check_store(url, out=lines.append) == 0, "\n".join(lines)


def test_sigkill_a_node_under_load_and_retry_on_the_other(pg_url, vector_world, vectors):
    reqs, exp = vectors
    clones = clone_settlements(reqs, exp, 60, "F")
    a, addr_a = start_serve(pg_url, "uvloop", "--no-auth")
    b = None
    try:
        b, addr_b = start_serve(pg_url, "uvloop", "--no-auth")
        with FramedClient(*addr_a["tcp"], timeout_s=WAIT_S) as c:
            c.send_many(clones)  # the same person's settlements: each depends on those before it
            acked = [c.recv() for _ in range(12)]
            a.send_signal(signal.SIGKILL)
            a.wait(WAIT_S)
        with FramedClient(*addr_b["tcp"], timeout_s=WAIT_S) as c:
            retried = c.pipeline(clones)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(WAIT_S)
    assert retried[:12] == acked  # acknowledged on the dead node: the stored reply from the other
    ref = ReferenceEngine(vector_world)
    for env, r in zip(clones, retried):  # each charged once, in order, before the kill or on its retry
        want = strip_times(ref.handle(env))
        assert r["infcode"] == 0 and not differences(want, strip_times(r)), differences(want, strip_times(r))[:5]
    lines: list[str] = []
    assert check_store(pg_url, out=lines.append) == 0, "\n".join(lines)
    assert f"{len(clones)} journal rows" in "\n".join(lines)


def test_the_database_stopped_under_load_then_back(private_pg, mixed):
    """Batches the stopped database cannot take raise StoreUnavailable (before and during their commit), and
    change nothing; once it is back the same store rebuilds its engine and goes on. Every batch, retried until
    taken, answers as one engine in RAM that never saw the outage."""
    world_dir, world, bodies = mixed
    chunks = [bodies[i:i + BATCH] for i in range(0, len(bodies), BATCH)]
    one = Engine(world, clock="inf_time")
    store = open_store(private_pg.url, world_dir, clock="inf_time")
    refused = {"begin": 0, "commit": 0}
    try:
        for k, chunk in enumerate(chunks):
            want = _enc(one.handle_batch([Request(x) for x in chunk]))
            one.take_changes()
            outage = k in (5, 17)  # 5: stopped before the batch; 17: stopped between compute and commit
            for attempt in range(3):
                try:
                    if outage and attempt == 0 and k == 5:
                        private_pg.stop()
                    replies = store.engine.handle_batch([Request(x) for x in chunk])
                    if outage and attempt == 0 and k == 17:
                        private_pg.stop()
                    store.commit(store.engine.take_changes())
                    break
                except StoreUnavailable:
                    refused["begin" if k == 5 else "commit"] += 1
                    assert store.stale
                    private_pg.start()
            else:
                raise AssertionError(f"batch {k} never taken")
            assert _enc(replies) == want, f"batch {k} answered otherwise than one engine"
        assert refused == {"begin": 1, "commit": 1}
        store.commit(store.engine.handle_batch([]))
        assert _persons(store.current) == _persons(one) and _chronic(store.current) == _chronic(one)
    finally:
        store.close()
    _check_ok(private_pg.url)


def test_a_serving_node_answers_e_busy_while_the_database_is_away_and_recovers_by_itself(private_pg, vector_world,
                                                                                      vectors):
    reqs, exp = vectors
    clones = clone_settlements(reqs, exp, 30, "D")
    p, addrs = start_serve(private_pg.url, "uvloop", "--no-auth")
    try:
        with FramedClient(*addrs["tcp"], timeout_s=WAIT_S) as c:
            before = c.pipeline(clones[:10])
            assert all(r["infcode"] == 0 for r in before)
            private_pg.stop()
            away = c.pipeline(clones[10:20])
            assert [r.get("err_code") for r in away] == ["E_BUSY"] * 10, away[:2]
            private_pg.start()
            deadline = time.monotonic() + WAIT_S
            while True:  # the node comes back by itself: no restart, no operator
                r = c.call(clones[10])
                if r.get("err_code") != "E_BUSY" or time.monotonic() > deadline:
                    break
            assert r["infcode"] == 0, r
            after = c.pipeline(clones[10:])
    finally:
        p.kill()
        p.wait(WAIT_S)
    assert after[0] == r  # its retry: the stored reply
    ref = ReferenceEngine(vector_world)
    for env, got in zip(clones, before + after):
        want = strip_times(ref.handle(env))
        assert got["infcode"] == 0 and not differences(want, strip_times(got)), differences(want, strip_times(got))[:5]
    _check_ok(private_pg.url)


def test_a_lookup_connection_lost_inside_a_batch_makes_it_busy_not_a_refusal(pg_url, synth):
    """A retry's lookup of its stored reply fails inside the engine (its connection cut): the batch is refused
    whole (StoreUnavailable), not answered with the refusal the engine made of the failure; the next batch, on
    rebuilt connections, answers the retry with the stored reply."""
    import psycopg

    world_dir, world, bodies = synth
    store = open_store(pg_url, world_dir, clock="inf_time")
    try:
        first = _enc(store.engine.handle_batch([Request(b) for b in bodies[:200]]))
        store.commit(store.engine.take_changes())
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'yidi-lookups'"
                      " AND datname = current_database()")
        with pytest.raises(StoreUnavailable):
            store.engine.handle_batch([Request(b) for b in bodies[:200]])
            store.commit(store.engine.take_changes())
        again = _enc(store.engine.handle_batch([Request(b) for b in bodies[:200]]))
        assert store.engine.take_changes() == []
        store.commit([])
    finally:
        store.close()
    committed = [i for i, b in enumerate(bodies[:200]) if orjson.loads(b)["infno"] in ("2207", "2304", "2208", "2305")
                 and orjson.loads(first[i])["infcode"] == 0]
    assert len(committed) > 30 and all(again[i] == first[i] for i in committed)
