"""engine.tools.synth's step-wise and mixed flows (section 11) through the compiled engine: every request gets
the outcome it is meant to get, every step-wise settlement answers what its one-shot twin answers, the
hospital's split totals are the hub's, and the stream has the shape and the count asked for."""
from __future__ import annotations

import collections
import os

import orjson
import pytest

from engine.contract import money
from engine.contract.wire import JSON
from engine.core.engine import Engine, Request
from engine.tools.synth import STEP_ANOMALIES, gen_requests, gen_stream, world_view
from engine.tools.synth.flows import REFUSED, UNCERTAIN

N = 8000
SPLIT_KEYS = ("fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt")


def replay(world, envs: list[dict]) -> list[dict]:
    """Replies of the compiled engine on the replay clock, in rounds of 256."""
    eng = Engine(world, clock="inf_time")
    out: list[dict] = []
    for k in range(0, len(envs), 256):
        out += [orjson.loads(JSON.encoder.encode(r))
                for r in eng.handle_batch([Request(orjson.dumps(e)) for e in envs[k:k + 256]])]
    return out


@pytest.fixture(scope="module", params=["stepwise", "mixed"])
def replayed(request, synth_world):
    """A stream with many requests wrong on purpose, replayed; and its one-shot twin, replayed on a second engine."""
    st = gen_stream(synth_world, N, seed=5, flow=request.param, malformed_share=0.03)
    replies = replay(synth_world, st.envelopes)
    idx, twins = st.twin_stream()
    return request.param, st, replies, idx, replay(synth_world, twins)


def _fen(x) -> int:
    """Money of a reply (a decimal string, or a JSON number with two decimals) in fen."""
    return money.parse_fen(x if isinstance(x, str) else f"{x:.2f}")


def _refusal(r: dict) -> str | None:
    return r.get("err_code")


def test_every_request_gets_the_outcome_it_is_meant_to(replayed):
    flow, st, replies, _, _ = replayed
    first: dict[bytes, dict] = {}
    wrong = []
    for k, (e, nt, r) in enumerate(zip(st.envelopes, st.notes, replies)):
        key = orjson.dumps(e)
        if nt.step == "retry":  # the very same envelope again: its first reply, unchanged
            if nt.expect is None and r != first[key]:
                wrong.append((k, "retry", r.get("err_code")))
            continue
        first.setdefault(key, r)
        code = _refusal(r)
        if nt.expect is None:
            ok = code is None
        elif nt.expect == REFUSED:
            ok = code is not None
        else:
            ok = nt.expect == UNCERTAIN or code == nt.expect
        if not ok:
            wrong.append((k, e["infno"], nt.step, nt.anomaly, nt.expect, code, r.get("err_msg")))
    assert not wrong, f"{len(wrong)} requests got another outcome, first: {wrong[:5]}"
    # Requests wrong on purpose are all refused, and the refusals that mean "the flow is broken" come only
    # from them (and a late message after a void, E_VOIDED).
    for e, nt, r in zip(st.envelopes, st.notes, replies):
        if nt.anomaly:
            assert r["infcode"] == -1, (nt.anomaly, e["infno"])
        if _refusal(r) in ("E_SCHEMA", "E_STATE", "E_NOT_FOUND", "E_DUPLICATE_LINE", "E_VOIDED"):
            assert nt.anomaly or nt.step == "late" or (nt.step == "retry" and nt.expect is not None), (e, r)


def test_every_stepwise_settlement_answers_what_its_oneshot_twin_does(replayed):
    """Section 11: a step-wise settlement is computed exactly as the section-7 request of the same lines.
    The twin stream runs the one-shot settlements on a second engine after the same history."""
    flow, st, replies, idx, twin_replies = replayed
    compared = collections.Counter()
    for k, tr in zip(idx, twin_replies):
        nt, e = st.notes[k], st.envelopes[k]
        if not (nt.stepwise and nt.step in ("settle", "presettle")) or "feedetail" in e["input"]:
            continue
        mine = replies[k]
        twin_id, my_id = nt.twin["input"]["data"]["mdtrt_id"], e["input"]["data"]["mdtrt_id"]
        theirs = orjson.loads(orjson.dumps(tr).replace(f'"{twin_id}"'.encode(), f'"{my_id}"'.encode()))
        assert mine["infcode"] == theirs["infcode"] and mine.get("err_code") == theirs.get("err_code"), (k, e)
        if mine["infcode"] == 0:
            for part in ("setlinfo", "setldetail", "result"):
                assert mine["output"][part] == theirs["output"][part], (k, part)
            compared[e["infno"]] += 1
        assert mine == theirs, k
    assert compared["2207"] > 300 and compared["2304"] > 30 and compared["2206"] + compared["2303"] > 10, compared


def test_the_hospitals_split_totals_are_the_hubs(replayed):
    """The four split totals a step-wise settlement sends (engine.tools.synth.split) equal the hub's, and
    E_AMOUNT_MISMATCH comes only from requests wrong on purpose."""
    flow, st, replies, _, _ = replayed
    claimed = 0
    for e, nt, r in zip(st.envelopes, st.notes, replies):
        d = e["input"].get("data")
        if nt.anomaly:
            continue
        assert _refusal(r) != "E_AMOUNT_MISMATCH", e
        if e["infno"] in ("2207", "2304") and isinstance(d, dict) and "fulamt_ownpay_amt" in d and r["infcode"] == 0:
            s = r["output"]["setlinfo"]
            for k in SPLIT_KEYS + ("medfee_sumamt",):
                assert money.parse_fen(d[k]) == _fen(s[k]), (k, d, s)
            claimed += 1
    kinds = collections.Counter(nt.anomaly for nt in st.notes if nt.anomaly)
    assert claimed > 300 and kinds["split_mismatch"] > 0


def test_the_stream_is_as_rich_as_the_oneshot_one(replayed):
    flow, st, replies, _, _ = replayed
    codes = {_refusal(r) for r in replies} - {None}
    assert codes >= {
        "E_SCHEMA", "E_LIMIT", "E_UNSUPPORTED", "E_UNKNOWN_PERSON", "E_UNKNOWN_INSTITUTION", "E_MISMATCH",
        "E_FORBIDDEN", "E_NO_POLICY", "E_FILING_REQUIRED", "E_NO_QUALIFICATION", "E_AMOUNT_MISMATCH", "E_DATE",
        "E_DUPLICATE_VISIT", "E_MSGID_REUSED", "E_NOT_FOUND", "E_ALREADY_REVERSED", "E_STATE", "E_DUPLICATE_LINE",
        "E_VOIDED",
    }
    kinds = {nt.anomaly for nt in st.notes if nt.anomaly}
    assert kinds >= set(STEP_ANOMALIES)
    ok = collections.Counter(e["infno"] for e, r in zip(st.envelopes, replies) if r["infcode"] == 0)
    assert set(ok) >= {"1101", "2201", "2202", "2203", "2204", "2205", "2206", "2207", "2208", "2301", "2302",
                       "2303", "2304", "2305", "2401", "2402", "2404", "2601"}
    undo = collections.Counter((r["output"]["data"]["oinfno"], r["output"]["data"]["status"])
                               for e, r in zip(st.envelopes, replies) if e["infno"] == "2601" and r["infcode"] == 0)
    assert {s for _, s in undo} == {"UNDONE", "VOIDED"}
    oinfnos = {o for o, _ in undo}
    assert oinfnos >= {"2201", "2204", "2207"} and oinfnos & {"2301", "2304", "2401", "2402"}, undo
    if flow == "mixed":
        assert {"2206", "2207", "2303", "2304"} <= {e["infno"] for e in st.envelopes if "feedetail" in e["input"]}


def test_stream_shape(replayed):
    """inf_time never goes back but on a retry; a step-wise settlement names its visit ("M" + the msgid of
    its 2201/2401) and batch, without lines; an upload names one visit and one batch; a stay's uploads are
    its fee days; every request of a visit comes in order."""
    flow, st, replies, _, _ = replayed
    last = ""
    registered: dict[int, str] = {}
    for e, nt, r in zip(st.envelopes, st.notes, replies):
        if nt.step != "retry":
            assert e["inf_time"] >= last, e
            last = e["inf_time"]
        if nt.anomaly or nt.step == "retry":
            continue
        infno = e["infno"]
        if infno in ("2201", "2401") and r["infcode"] == 0:
            mdtrt_id = (r["output"]["data"] if infno == "2201" else r["output"]["result"])["mdtrt_id"]
            assert mdtrt_id == "M" + e["msgid"]
            registered[nt.visit] = mdtrt_id
        if nt.stepwise and infno in ("2206", "2207", "2303", "2304"):
            d = e["input"]["data"]
            assert "feedetail" not in e["input"] and d["mdtrt_id"] == registered[nt.visit]
            assert ("chrg_bchno" in d) == (infno in ("2206", "2207"))
        if infno in ("2204", "2301"):
            lines = e["input"]["feedetail"]
            assert len({ln["mdtrt_id"] for ln in lines}) == 1 and lines[0]["mdtrt_id"] == registered[nt.visit]
            if infno == "2204":
                assert len({ln["chrg_bchno"] for ln in lines}) == 1
            else:
                assert len({ln["fee_ocur_time"][:10] for ln in lines}) == 1
        if not nt.stepwise and infno in ("2206", "2207", "2303", "2304"):
            assert "feedetail" in e["input"]


def test_requests_per_settlement_and_shares(synth_world):
    """Hospitals: usually one batch a settlement in one to three uploads, a stay uploaded day by day; in a
    mixed stream half the visits step-wise."""
    v = world_view(synth_world)
    per = {}
    for flow in ("stepwise", "mixed"):
        st = gen_stream(v, 20000, seed=2, flow=flow)
        settles = sum(e["infno"] in ("2207", "2304") for e in st.envelopes)
        per[flow] = len(st.envelopes) / settles
        visits = {nt.visit: nt.stepwise for nt in st.notes if nt.visit >= 0}
        share = sum(visits.values()) / len(visits)
        if flow == "stepwise":
            assert share == 1.0
            # A batch in one to three uploads (one more when a 2601 undid one); most visits one batch.
            first_lines = [e["input"]["feedetail"][0] for e, nt in zip(st.envelopes, st.notes)
                           if e["infno"] == "2204" and nt.step == "upload"]
            uploads = collections.Counter((ln["mdtrt_id"], ln["chrg_bchno"]) for ln in first_lines)
            assert max(uploads.values()) <= 4 and 1.2 < sum(uploads.values()) / len(uploads) < 2.0
            batches = collections.Counter(m for m, b in uploads if not b.endswith("C"))  # "C": corrected
            assert 0.03 < sum(n > 1 for n in batches.values()) / len(batches) < 0.15
        else:
            assert 0.45 < share < 0.55
    assert 4.5 < per["stepwise"] < 7.0 and 2.5 < per["mixed"] < 4.0, per


@pytest.mark.parametrize("flow", ["stepwise", "mixed"])
def test_count_and_determinism(synth_world, synth_world_dir, flow):
    v = world_view(synth_world)
    for n in (1, 2, 5, 13, 100, 777):
        for bad in (0.002, 0.5):
            st = gen_stream(v, n, seed=n, flow=flow, malformed_share=bad, retry_share=0.05)
            assert len(st.envelopes) == len(st.notes) == n
    a = gen_requests(synth_world, 1500, seed=5, flow=flow)
    b = gen_requests(synth_world_dir, 1500, seed=5, flow=flow)
    c = gen_requests(v, 1500, seed=6, flow=flow)
    assert orjson.dumps(a) == orjson.dumps(b) != orjson.dumps(c)
    assert orjson.dumps(a) != orjson.dumps(gen_requests(synth_world, 1500, seed=5))  # not the one-shot stream


def test_bad_arguments(synth_world):
    v = world_view(synth_world)
    with pytest.raises(ValueError):
        gen_stream(v, 10, flow="batch")
    with pytest.raises(ValueError):
        gen_stream(v, 10, flow="stepwise", stepwise_share=0.5)
    with pytest.raises(ValueError):
        gen_stream(v, 10, flow="mixed", stepwise_share=1.5)
    assert gen_stream(v, 10).notes is None


def test_cli_gen_requests_flow(synth_world_dir, tmp_path):
    from engine.cli import main

    out = str(tmp_path / "sw.jsonl")
    assert main(["gen-requests", "--world", synth_world_dir, "--n", "300", "--out", out, "--flow", "stepwise",
                 "--seed", "4"]) == 0
    with open(out, "rb") as f:
        got = [orjson.loads(line) for line in f]
    assert got == gen_requests(synth_world_dir, 300, seed=4, flow="stepwise")
    assert {"2201", "2204", "2207"} <= {e["infno"] for e in got}
    out2 = str(tmp_path / "os.jsonl")
    assert main(["gen-requests", "--world", synth_world_dir, "--n", "300", "--out", out2, "--seed", "4"]) == 0
    with open(out2, "rb") as f:
        assert [orjson.loads(line) for line in f] == gen_requests(synth_world_dir, 300, seed=4)
    assert main(["gen-requests", "--world", synth_world_dir, "--n", "30", "--out", out2,
                 "--stepwise-share", "0.2"]) == 2
    assert os.path.getsize(out2) > 0
