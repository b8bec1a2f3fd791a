"""Section 11, the step-wise flow, on the compiled path: the public step-wise vectors in memory at several batch
sizes, through `yidi replay` and its store, across restarts, and what `yidi check` then proves."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, VECTOR_WORLD, VECTORS, differences, assert_replay_agrees_and_checks, vector_bodies, vector_replies

from engine.contract.protocol import INFNO_PERSON, SETTLE_INFNOS
from engine.contract.wire import JSON
from engine.core.engine import Engine, Request
from engine.store import open_store
from engine.store.check import check_store
from engine.world.loader import load_world

STEPWISE = os.path.join(VECTORS, "stepwise")


def _bodies() -> list[bytes]:
    return vector_bodies(STEPWISE)


def _expected() -> list[dict]:
    return vector_replies(STEPWISE)


def _disagreements(got: list[dict]) -> dict[int, list[str]]:
    exp = _expected()
    assert len(got) == len(exp) == 1201
    return {i: d[:3] for i, (e, g) in enumerate(zip(exp, got)) if (d := differences(e, g))}


def _batches(engine: Engine, bodies: list[bytes], size: int) -> list[dict]:
    out = []
    for i in range(0, len(bodies), size):
        out += [json.loads(JSON.encoder.encode(r)) for r in engine.handle_batch([Request(b) for b in bodies[i:i + size]])]
    return out


@pytest.mark.parametrize("size", [1, 16, 1201])
def test_stepwise_vectors_in_memory(size):
    """Batches of one, of sixteen and the whole stream: rounds close wherever a request depends on the open one."""
    got = _batches(Engine(load_world(VECTOR_WORLD), clock="inf_time"), _bodies(), size)
    bad = _disagreements(got)
    assert not bad, f"{len(bad)} replies differ, first: {list(bad.items())[:5]}"


def test_stepwise_vectors_through_replay_and_check(tmp_path):
    assert_replay_agrees_and_checks(STEPWISE, tmp_path, _disagreements)


@pytest.mark.parametrize("cut", [1155, 1165, 1175, 1190])
def test_visits_and_step_replies_survive_a_restart(tmp_path, cut):
    """Stop the store at `cut` (inside the visit cases: uploads, settlements, 2601s), open it again, go on:
    every reply equals the uninterrupted run's, and a retry of a message before the cut gets its stored reply."""
    bodies = _bodies()
    data = str(tmp_path / "data")
    got = []
    for part in (bodies[:cut], bodies[cut:]):
        with open_store(data, VECTOR_WORLD, clock="inf_time") as st:
            for i in range(0, len(part), 32):
                replies = st.engine.handle_batch([Request(b) for b in part[i:i + 32]])
                st.commit(st.engine.take_changes())
                got += [json.loads(JSON.encoder.encode(r)) for r in replies]
    bad = _disagreements(got)
    assert not bad, f"{len(bad)} replies differ, first: {list(bad.items())[:5]}"
    # Retries after a restart: each committed step-wise message before the cut answers its first reply.
    retried = [k for k in range(cut - 40, cut) if json.loads(bodies[k])["infno"] in ("2201", "2204", "2301", "2401",
                                                                                   "2402", "2601", "2203")]
    assert retried, "the window before the cut holds step-wise messages"
    with open_store(data, VECTOR_WORLD, clock="inf_time") as st:
        again = [json.loads(JSON.encoder.encode(r)) for r in st.engine.handle_batch([Request(bodies[k]) for k in retried])]
    for k, r in zip(retried, again):
        first = got[k]
        if first["infcode"] == 0:
            assert r == first, f"retry of request {k} after a restart"
    lines: list[str] = []
    assert check_store(data, lines.append) == 0, "\n".join(lines)


def test_check_finds_a_visit_that_disagrees_with_its_settlement(tmp_path):
    """Remove an upload that a settlement counted: the settled batch no longer sums to its settlement."""
    import sqlite3

    data = str(tmp_path / "data")
    with open_store(data, VECTOR_WORLD, clock="inf_time") as st:
        st.engine.handle_batch([Request(b) for b in _bodies()])
        st.commit(st.engine.take_changes())
    conn = sqlite3.connect(os.path.join(data, "yidi.sqlite3"))
    # The first upload of the outpatient visit the vectors settle batch by batch (MVSW00001, msgid VSW00003).
    assert conn.execute("DELETE FROM step WHERE msgid = 'VSW00003'").rowcount == 1
    conn.commit()
    conn.close()
    lines: list[str] = []
    assert check_store(data, lines.append) == 1
    text = "\n".join(lines)
    assert "FAIL  visits" in text and "sum to" in text, text


def test_stepwise_settlements_clear_and_reconcile_like_one_shot_ones(tmp_path):
    """The step-wise vectors are the public stream with every clean settlement sent step-wise: closing each month
    writes the public one-shot clearing files byte for byte, and each institution's 3201 totals over the year
    agree with the one-shot stream's (the institutions of the visit cases at the end excepted)."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "engine.cli", "replay", "--world", VECTOR_WORLD, "--in",
                    os.path.join(STEPWISE, "requests.jsonl"), "--out", str(tmp_path / "r.jsonl"), "--data", str(data)],
                   check=True, capture_output=True, cwd=ROOT)
    periods = sorted(name[len("statement-"):-len(".csv")] for name in os.listdir(os.path.join(VECTORS, "clearing"))
                     if name.startswith("statement-"))
    for period in periods:
        subprocess.run([sys.executable, "-m", "engine.cli", "clear", "--data", str(data), "--period", period, "--out",
                        str(tmp_path / "clear")], check=True, capture_output=True, cwd=ROOT)
        for kind in ("statement", "netting"):
            name = f"{kind}-{period}.csv"
            assert (tmp_path / "clear" / name).read_bytes() == open(os.path.join(VECTORS, "clearing", name), "rb").read()

    oneshot = Engine(load_world(VECTOR_WORLD), clock="inf_time")
    with open(os.path.join(VECTORS, "requests.jsonl"), "rb") as f:
        oneshot.handle_batch([Request(line.rstrip(b"\n")) for line in f])
    stepwise = Engine(load_world(VECTOR_WORLD), clock="inf_time")
    stepwise.handle_batch([Request(b) for b in _bodies()])
    cases = {json.loads(b)["fixmedins_code"] for b in _bodies() if json.loads(b)["msgid"].startswith("VSW")}
    world = load_world(VECTOR_WORLD)
    admdvs = dict(zip(world.inst_code, world.inst_admdvs))
    codes = sorted(({json.loads(b)["fixmedins_code"] for b in _bodies()} & set(admdvs)) - cases)
    assert len(codes) > 20
    months = [(f"{y}-{m:02d}-01", f"{y}-{m:02d}-28") for y, m in [(2025, 12)] + [(2026, m) for m in range(1, 12)]]
    listed = 0
    for code in codes:  # 3202: every settlement and reversal of the institution, month by month, field by field
        for lo, hi in months:
            q = {"infno": "3202", "msgid": f"Q{code}{lo}", "fixmedins_code": code, "mdtrtarea_admvs": admdvs[code],
                 "inf_time": "2026-12-01 12:00:00", "input": {"data": {"stmt_begndate": lo, "stmt_enddate": hi}}}
            body = json.dumps(q).encode()
            a, b = (json.loads(JSON.encoder.encode(e.handle_batch([Request(body)])[0])) for e in (oneshot, stepwise))
            for r in (a, b):  # a visit's mdtrt_id is "M" + its 2201/2401's msgid; the one-shot request names its own
                for row in r["output"].get("stmtdetail", []):
                    row.pop("mdtrt_id")
            assert a["infcode"] == 0 and a["output"] == b["output"], (code, lo, a, b)
            listed += len(a["output"].get("stmtdetail", []))
    assert listed > 100


def test_the_framed_reply_of_a_step_wise_transaction_is_the_encoding_its_step_row_holds(tmp_path):
    """The store encodes each step-wise reply as MessagePack for its `step` row and hands those bytes to the
    framed transport (DurableStore: replies_msgpack), so the hub does not render the reply a second time: they
    must be the encoding of that very reply, for each reply with a step row and no other."""
    from engine.contract.wire import MSGPACK
    from engine.store.steps import SQL_STEP_ENTRY, step_entry

    bodies = _bodies()
    with open_store(str(tmp_path / "data"), VECTOR_WORLD, clock="inf_time") as st:
        replies = st.engine.handle_batch([Request(b) for b in bodies])
        prepared = st.prepare(st.engine.take_changes())
        encoded = prepared.replies_msgpack
        # A retry within the batch answers with its first reply, the same object: one encoding for both.
        stepwise = list({id(r): r for r in replies if id(r) in encoded}.values())
        assert len(encoded) == len(stepwise) > 100, "every encoding is a reply of the batch"
        for r in stepwise:
            assert encoded[id(r)] == MSGPACK.encoder.encode(r)
        assert not any(id(r) in encoded for r, b in zip(replies, bodies)
                       if json.loads(b)["infno"] in SETTLE_INFNOS | {INFNO_PERSON}), \
            "settlements, pre-settlements and queries have no step row of their own"
        st.write(prepared)
        # What a retry reads back from the row is the same reply.
        msgid = next(c.msgid for c in prepared.steps if c.msgid and c.reply is not None and c.reply.infcode == 0)
        row = st.engine.step_journal._reader._one(SQL_STEP_ENTRY + "msgid = ?", (msgid,))
        reply = next(c.reply for c in prepared.steps if c.msgid == msgid)
        assert MSGPACK.encoder.encode(step_entry(row, msgid)[3]) == encoded[id(reply)]
