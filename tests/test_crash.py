"""Crash safety with real processes: SIGKILL a child that commits to a real SQLite file.

The child (tests/crash_child.py) reads batches on stdin and acknowledges each
request only after its batch's commit is durable. The test pipelines batches
into it and kills it at random points: by SIGKILL from here the moment a
randomly chosen acknowledgement arrives (the child is then busy with the next
batches: computing, preparing, inserting or fsyncing), and by the child itself
at named points (before the write, inside the transaction, after the commit
but before the acknowledgement). After every kill it checks the store as the
child left it, then restarts the child and resends every request not yet
acknowledged, with the same msgid. Nothing waits on time: only on the child's
lines and its exit.

The oracle is the in-memory engine fed the same stream. The stream's
settlements and reversals are those the oracle accepts, so that whether a
resent one is answered from the journal or computed again, the answer is the
same: every acknowledged settlement or reversal must equal the oracle's reply
byte for byte, be in the journal exactly once, and the final persons must
equal both the oracle's and the plain-Python reference's.
"""
from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading

import orjson
import pytest

from engine.store.check import check_store
from engine.core.engine import Engine, Request
from engine.contract.protocol import COMMIT_INFNOS, REVERSE_INFNOS, STEP_INFNOS
from engine.reference.oracle import ReferenceEngine
from engine.store.files import connect, db_path
from engine.contract.wire import JSON
from engine.world.loader import load_world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "crash_child.py")
JOURNALED = COMMIT_INFNOS | REVERSE_INFNOS
BATCH_MAX = 48
FILTER_PASSES_MAX = 8
HOOKS = ("before_write", "in_transaction", "after_commit")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    from engine.tools.synth import gen_world

    d = str(tmp_path_factory.mktemp("crash_world"))
    gen_world(d, seed=11, provinces=2, regions_per_province=2, catalogue_per_province=300, persons=300,
              institutions_per_region=1)
    return d


def _oracle(world, bodies: list[bytes]) -> list[bytes]:
    eng = Engine(world, clock="inf_time")
    out = []
    for i in range(0, len(bodies), BATCH_MAX):
        out += [JSON.encoder.encode(r) for r in eng.handle_batch([Request(b) for b in bodies[i:i + BATCH_MAX]])]
        eng.take_changes()
    return out


def stream(world_dir: str, n: int, seed: int):
    """Requests whose settlements and reversals the oracle all accepts, and the oracle's replies."""
    from engine.tools.synth import gen_requests

    world = load_world(world_dir)
    bodies = [orjson.dumps(e) for e in gen_requests(world, n, seed=seed)]
    for _ in range(FILTER_PASSES_MAX):
        replies = _oracle(world, bodies)
        keep = [
            i for i, (b, r) in enumerate(zip(bodies, replies))
            if orjson.loads(b).get("infno") not in JOURNALED or orjson.loads(r)["infcode"] == 0
        ]
        if len(keep) == len(bodies):
            return world, bodies, replies
        bodies = [bodies[i] for i in keep]
    raise AssertionError("the stream did not settle into one the oracle accepts whole")


class Child:
    def __init__(self, data: str, world_dir: str, crash_at: str | None):
        env = dict(os.environ, PYTHONPATH=ROOT)
        env.pop("YIDI_CRASH_AT", None)
        if crash_at:
            env["YIDI_CRASH_AT"] = crash_at
        self.p = subprocess.Popen(
            [sys.executable, CHILD, "--data", data, "--world", world_dir, "--fold-rows", "40"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        line = self.p.stdout.readline()
        assert line == b"READY\n", f"child did not start: {line!r}"

    def send_all(self, batches: list[list[bytes]]) -> threading.Thread:
        def run():
            try:
                for b in batches:
                    self.p.stdin.write(b"B %d\n" % len(b) + b"".join(x + b"\n" for x in b))
                    self.p.stdin.flush()
                self.p.stdin.close()
            except (BrokenPipeError, ValueError, OSError):
                pass  # killed

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


def _step_msgids(data: str) -> dict[str, int]:
    conn = connect(db_path(data), read_only=True)
    try:
        return dict(conn.execute("SELECT msgid, COUNT(*) FROM step WHERE msgid IS NOT NULL GROUP BY msgid").fetchall())
    finally:
        conn.close()


def _journal_msgids(data: str) -> dict[str, int]:
    conn = connect(db_path(data), read_only=True)
    try:
        return dict(conn.execute("SELECT msgid, COUNT(*) FROM journal GROUP BY msgid").fetchall())
    finally:
        conn.close()


def _person_state(data: str):
    """Persons and chronic slots as the store holds them now (folded rows overlaid with the logs)."""
    conn = connect(db_path(data), read_only=True)
    try:
        cols = "balc_fen, acc_year, hifp_ip_fen, hifp_op_fen, ded_op_fen, burden2_fen, second_paid_fen"
        cur = {r[0]: r[1:] for r in conn.execute(f"SELECT psn, {cols} FROM person")}
        cur.update({r[0]: r[1:] for r in conn.execute(f"SELECT psn, {cols} FROM person_log ORDER BY seq")})
        chron = {r[0]: r[1:] for r in conn.execute("SELECT slot, hifp_cd_fen, cd_year FROM chronic")}
        chron.update({r[0]: r[1:] for r in conn.execute("SELECT slot, hifp_cd_fen, cd_year FROM chronic_log ORDER BY seq")})
        return cur, chron
    finally:
        conn.close()


def run_crashes(tmp_path, world_dir: str, n: int, seed: int, external_kills: int, hook_kills: int,
                given: tuple | None = None) -> int:
    """`given`: (world, bodies, oracle replies) of a stream to use instead of a generated one (the step-wise
    vectors, deterministic on the replay clock)."""
    rng = random.Random(seed)
    world, bodies, oracle = given or stream(world_dir, n, seed)
    infnos = [orjson.loads(b)["infno"] for b in bodies]
    # What a resent request must answer as the oracle did: a settlement or reversal, and for a given stream
    # (the step-wise vectors) every committing transaction the oracle accepted. A resent query or refusal may
    # rightly see later commits of the same batch (a pre-settlement before its stay's cancellation).
    committing = JOURNALED | STEP_INFNOS
    compared = [i in JOURNALED if not given else (i in committing and orjson.loads(r)["infcode"] == 0)
                for i, r in zip(infnos, oracle)]
    data = str(tmp_path / "data")
    plan = ["ext"] * external_kills + [rng.choice(HOOKS) for _ in range(hook_kills)]
    rng.shuffle(plan)
    acked = 0
    kills = 0
    while acked < len(bodies):
        kind = plan.pop() if plan else None
        crash_at = f"{rng.randrange(0, 4)}:{kind}" if kind in HOOKS else None
        child = Child(data, world_dir, crash_at)
        rest = bodies[acked:]
        batches, i = [], 0
        while i < len(rest):
            k = rng.randint(1, BATCH_MAX)
            batches.append(rest[i:i + k])
            i += k
        sender = child.send_all(batches)
        kill_after = rng.randint(1, max(1, min(len(rest) - 1, 3 * BATCH_MAX))) if kind == "ext" else None
        got = 0
        while acked < len(bodies):
            line = child.p.stdout.readline()
            if not line:
                break  # the child killed itself
            msgid, reply = line.rstrip(b"\n").split(b"\t", 1)
            if compared[acked]:
                assert reply == oracle[acked], f"request {acked} ({infnos[acked]}): {reply[:200]!r}"
            acked += 1
            got += 1
            if kill_after is not None and got == kill_after:
                child.p.kill()
                break
        sender.join()
        rc = child.p.wait()
        child.p.stdout.close()
        if rc == -9:
            kills += 1
        else:
            assert rc == 0 and acked == len(bodies), f"child exited with {rc}"
        # The store as the child left it: consistent, and every acknowledged one is there exactly once.
        lines: list[str] = []
        assert check_store(data, out=lines.append) == 0, "\n".join(lines)
        counts = _journal_msgids(data)
        assert all(c == 1 for c in counts.values()), "a msgid was journaled twice"
        steps = _step_msgids(data)
        assert all(c == 1 for c in steps.values()), "a step-wise msgid was committed twice"
        for j in range(acked):
            if given and orjson.loads(oracle[j])["infcode"] != 0:
                continue  # refused: nothing committed
            msgid = orjson.loads(bodies[j])["msgid"]
            if infnos[j] in STEP_INFNOS:
                assert steps.get(msgid) == 1, f"step-wise request {j} ({infnos[j]}) acknowledged, not in the store"
            elif infnos[j] in JOURNALED:
                assert counts.get(msgid) == 1
    # Every journaled request exactly once; the persons equal the oracle's and the reference's.
    if not given:
        want_msgids = {orjson.loads(bodies[j])["msgid"] for j in range(len(bodies)) if infnos[j] in JOURNALED}
        assert set(_journal_msgids(data)) == want_msgids
    eng = Engine(world, clock="inf_time")
    for i in range(0, len(bodies), BATCH_MAX):
        eng.handle_batch([Request(b) for b in bodies[i:i + BATCH_MAX]])
    persons, chronic = _person_state(data)
    st = eng.state
    for p in range(world.n_persons):
        want = (int(st.balc_fen[p]), int(st.acc_year[p]), int(st.hifp_ip_fen[p]), int(st.hifp_op_fen[p]), int(st.ded_op_fen[p]),
                int(st.burden2_fen[p]), int(st.second_paid_fen[p]))
        assert tuple(persons[p]) == want, f"person {p}"
    for k, (v, y) in chronic.items():
        assert (v, y) == (int(st.cd_val_fen[k]), int(st.cd_year[k])), f"chronic slot {k}"
    if given:
        return kills  # the step-wise stream: the oracle is the in-memory engine, checked above
    ref = ReferenceEngine(world)
    for b in bodies:
        env = orjson.loads(b)
        ref.handle(env, clock=env.get("inf_time"))
    psn_no = world.psn_no.to_pylist()
    for p in range(world.n_persons):
        rp = ref.persons[psn_no[p]]
        assert tuple(persons[p]) == (rp.balc, rp.acc_year, rp.hifp_ip, rp.hifp_op, rp.ded_op, rp.burden2,
                                     rp.second_paid), f"person {psn_no[p]} differs from the reference"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "check", "--data", data],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stdout + r.stderr
    return kills


def test_crash_kills(tmp_path, world_dir):
    """A handful of kills, every kind, in the default run."""
    kills = run_crashes(tmp_path, world_dir, n=700, seed=5, external_kills=3, hook_kills=3)
    assert kills >= 5


@pytest.mark.slow
def test_crash_kills_long(tmp_path, world_dir):
    """The long variant: at least 20 kills over a longer stream."""
    kills = run_crashes(tmp_path, world_dir, n=2500, seed=9, external_kills=18, hook_kills=8)
    assert kills >= 20


def test_crash_kills_stepwise(tmp_path):
    """The public step-wise vectors (visits, uploads, settlements by batch, 2601) under kills of every kind:
    every acknowledged reply is the in-memory engine's, and nothing committed twice or lost."""
    from conftest import VECTOR_WORLD, VECTORS

    world = load_world(VECTOR_WORLD)
    with open(os.path.join(VECTORS, "stepwise", "requests.jsonl"), "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f]
    kills = run_crashes(tmp_path, VECTOR_WORLD, n=len(bodies), seed=13, external_kills=3, hook_kills=3,
                        given=(world, bodies, _oracle(world, bodies)))
    assert kills >= 5
