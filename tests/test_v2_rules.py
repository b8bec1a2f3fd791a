"""The three rules section 7 adds in v2, on the reference and the compiled engine with one test body.

- A msgid committed by another institution is E_MSGID_REUSED, never that institution's reply.
- A settlement day after the hub's clock day (in replay: the request's inf_time) is E_DATE, in
  E_DATE's place in the order of checks, and does not roll the person's year forward.
- A date outside 2000-2099, or nesting deeper than 32 levels anywhere (ignored fields
  included), is E_SCHEMA; no request, however malformed, stops the engine or changes anything.
"""
from __future__ import annotations

import copy
import json

import msgspec
import pytest

from test_differential import MINI_WORLD, _both, _op, _rev, assert_same_replies, load_world_data

from engine.contract.protocol import ENVELOPE_DEPTH_MAX
from engine.contract.wire import JSON, MSGPACK
from engine.core.engine import Engine, Request


def codes(replies: list[dict]) -> list[str | None]:
    return [r.get("err_code") for r in replies]


def agree(envs: list, sizes: list[int] | None = None) -> list[dict]:
    """Both engines on the stream; they must agree field by field; the reference's replies."""
    bodies, ref, got = _both(envs, sizes)
    assert_same_replies(bodies, ref, got)
    return ref


def other_institution(env: dict) -> dict:
    e = copy.deepcopy(env)
    e["fixmedins_code"] = "H4401"
    e["mdtrtarea_admvs"] = "440100"
    return e


@pytest.mark.parametrize("sizes", [None, [1, 1, 1, 1]])
def test_another_institutions_msgid_is_reused_not_answered(sizes):
    first = _op("m1", "v1", "2026-03-02")
    rev = _rev("m2", "Sm1", "v1", "2026-03-02")
    replies = agree([first, other_institution(first), rev, other_institution(rev)], sizes)
    assert codes(replies) == [None, "E_MSGID_REUSED", None, "E_MSGID_REUSED"]
    assert replies[1]["output"] == {} and replies[3]["output"] == {}
    # The institution that committed it still gets its reply back.
    again = agree([first, first])
    assert codes(again) == [None, None] and again[1]["output"]["setlinfo"] == again[0]["output"]["setlinfo"]


def test_a_bill_dated_after_the_clock_day_is_e_date_and_changes_nothing():
    future = _op("m1", "v1", "2026-03-03")
    future["inf_time"] = "2026-03-02 23:59:59"  # the clock is the day before the bill
    today = _op("m2", "v2", "2026-03-02")
    far = _op("m3", "v3", "2099-12-31")
    far["inf_time"] = "2026-03-02 12:00:00"
    replies = agree([future, today, far, _op("m4", "v4", "2026-03-04")])
    assert codes(replies) == ["E_DATE", None, "E_DATE", None]
    # The far-future bill did not roll the person's year to 2099: a 2026 settlement still pays.
    assert replies[3]["output"]["setlinfo"]["hifp_pay"] not in (None, "0.00")


def test_e_date_for_the_future_ranks_after_the_amounts_and_before_the_filing():
    wrong_total = _op("m1", "v1", "2026-03-05")
    wrong_total["inf_time"] = "2026-03-04 10:00:00"
    wrong_total["input"]["data"]["medfee_sumamt"] = "1.00"  # E_AMOUNT_MISMATCH ranks first
    unfiled = _op("m2", "v2", "2026-03-05")
    unfiled["inf_time"] = "2026-03-04 10:00:00"
    unfiled["mdtrtarea_admvs"] = "440100"  # treated in another province, unfiled: E_DATE ranks before
    unfiled["fixmedins_code"] = "H4401"
    unfiled["input"]["data"]["med_type"] = "11"
    assert codes(agree([wrong_total, unfiled])) == ["E_AMOUNT_MISMATCH", "E_DATE"]


@pytest.mark.parametrize("where,value", [
    ("begntime", "1999-12-31 23:59:59"), ("begntime", "2100-01-01 00:00:00"), ("begntime", "9999-12-31 00:00:00"),
    ("fee_ocur_time", "1999-12-31 08:00:00"), ("fee_ocur_time", "2100-01-01 08:00:00"),
])
def test_dates_outside_2000_2099_are_e_schema(where, value):
    env = _op("m1", "v1", "2026-03-02")
    if where == "begntime":
        env["input"]["data"]["begntime"] = value
    else:
        env["input"]["feedetail"][0]["fee_ocur_time"] = value
    ok = _op("m2", "v2", "2026-03-02")
    assert codes(agree([env, ok])) == ["E_SCHEMA", None]


@pytest.mark.parametrize("begn,end", [("1999-12-31", "2026-03-02"), ("2026-03-01", "9999-12-31")])
def test_reconciliation_dates_outside_2000_2099_are_e_schema(begn, end):
    q = {"infno": "3202", "msgid": "q1", "mdtrtarea_admvs": "430100", "insuplc_admdvs": "430100",
         "fixmedins_code": "H4301", "inf_time": "2026-03-02 12:00:00",
         "input": {"data": {"stmt_begndate": begn, "stmt_enddate": end}}}
    assert codes(agree([_op("m1", "v1", "2026-03-02"), q])) == [None, "E_SCHEMA"]


def _nested(levels: int) -> object:
    v: object = "x"
    for i in range(levels):
        v = [v] if i % 2 else {"k": v}
    return v


@pytest.mark.parametrize("levels,code", [(ENVELOPE_DEPTH_MAX - 3, None), (ENVELOPE_DEPTH_MAX - 2, "E_SCHEMA"),
                                         (200, "E_SCHEMA"), (900, "E_SCHEMA")])
def test_nesting_in_an_ignored_field(levels, code):
    # The envelope, `input` and `input.data` are three levels: an ignored field of
    # input.data nested `levels` deep makes levels + 3 in all.
    env = _op("m1", "v1", "2026-03-02")
    del env["inf_time"]  # a refused envelope is not read, so its reply is on the wall clock
    env["input"]["data"]["dev_safe_info"] = _nested(levels)
    assert (levels + 3 > ENVELOPE_DEPTH_MAX) == (code is not None)
    replies = agree([env, _op("m2", "v2", "2026-03-02")])
    assert codes(replies) == [code, None]
    if code:
        assert replies[0]["inf_refmsgid"] == ""  # not read at all: not even its msgid


@pytest.mark.parametrize("codec", [JSON, MSGPACK])
@pytest.mark.parametrize("levels", [1000, 100_000])
def test_very_deep_bodies_are_answered_and_change_nothing(codec, levels):
    engine = Engine(load_world_data(MINI_WORLD), clock="inf_time")
    if codec is JSON:
        body = b'{"infno":"2207","input":' + b"[" * levels + b"]" * levels + b"}"
    else:
        body = b"\x82\xa5infno\xa42207\xa5input" + b"\x91" * levels + b"\xc0"
    ok = msgspec.json.encode(_op("m2", "v2", "2026-03-02"))
    replies = engine.handle_batch([Request(body, codec), Request(ok, JSON)])
    assert [r.err_code for r in replies] == ["E_SCHEMA", None]
    assert len(engine.take_changes()) == 1  # only the good one


def test_replay_reference_reads_a_body_json_cannot_follow(tmp_path):
    from engine.tools.replay import replay_reference

    world = load_world_data(MINI_WORLD)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"[" * 5000 + b"]" * 5000 + b"\n" + json.dumps(_op("m1", "v1", "2026-03-02")).encode() + b"\n")
    out = tmp_path / "out.jsonl"
    assert replay_reference(world, str(src), str(out)) == 2
    replies = [json.loads(x) for x in out.read_text().splitlines()]
    assert codes(replies) == ["E_SCHEMA", None]


class _Exploding:
    """A person index that fails for one psn_no, as a bug met in one request's checks would."""

    def __init__(self, inner, bad: str):
        self.inner, self.bad = inner, bad

    def get(self, key):
        if key == self.bad:
            raise RuntimeError("a bug")
        return self.inner.get(key)


def test_a_bug_in_one_requests_checks_answers_it_and_spares_the_others(caplog):
    engine = Engine(load_world_data(MINI_WORLD), clock="inf_time")
    engine.psn_index = _Exploding(engine.psn_index, "P1")
    boom = _op("m1", "v1", "2026-03-02")
    fine = _op("m2", "v2", "2026-03-02")
    fine["input"]["data"]["psn_no"] = "P2"  # unknown: answered by the checks as usual
    replies = engine.handle_batch([Request(msgspec.json.encode(e)) for e in (boom, fine)])
    assert [r.err_code for r in replies] == ["E_SCHEMA", "E_UNKNOWN_PERSON"]
    assert replies[0].inf_refmsgid == "m1" and "logged" in replies[0].err_msg
    assert engine.take_changes() == []
    assert any("failed in its checks" in r.message for r in caplog.records)
    # The engine goes on: the same request, once the bug is gone, settles.
    engine.psn_index = engine.psn_index.inner
    assert engine.handle_batch([Request(msgspec.json.encode(boom))])[0].err_code is None


def test_a_bug_past_a_reversals_commit_point_stops_the_engine_instead_of_refusing():
    # A refusal promises nothing changed; a reversal that met a bug after it moved the
    # balance cannot keep that promise, so the engine raises (the hub fails stop).
    engine = Engine(load_world_data(MINI_WORLD), clock="inf_time")
    engine.handle_batch([Request(msgspec.json.encode(_op("m1", "v1", "2026-03-02")))])
    engine.take_changes()

    def sink(change):
        raise RuntimeError("a bug in the change sink")

    engine.on_change = sink
    with pytest.raises(RuntimeError, match="change sink"):
        engine.handle_batch([Request(msgspec.json.encode(_rev("m2", "Sm1", "v1", "2026-03-02")))])


@pytest.mark.parametrize("inf_time", ["1999-06-01 10:00:00", "2100-01-01 00:00:00", "2026-03-32 10:00:00",
                                      "2026-03-02"])
def test_a_replay_clock_outside_2000_2099_or_not_a_time_is_e_schema(inf_time):
    # In replay the clock is inf_time; it is a time of the request like any other, and
    # a settlement committed on a clock that is not a time would name no day and no period.
    env = _op("m1", "v1", "2026-03-02")
    env["inf_time"] = inf_time
    replies = agree([env, _op("m2", "v2", "2026-03-02")])
    assert codes(replies) == ["E_SCHEMA", None] and replies[0]["inf_refmsgid"] == "m1"


def test_depth_counts_a_duplicate_key_that_a_decoder_drops():
    env = _op("m1", "v1", "2026-03-02")
    del env["inf_time"]
    deep = json.dumps(_nested(40))
    body = json.dumps(env)[:-1] + f', "dev_safe_info": {deep}, "dev_safe_info": 1}}'
    bodies = [body.encode()]
    from test_differential import run_compiled, run_reference
    world = load_world_data(MINI_WORLD)
    ref, got = run_reference(world, bodies), run_compiled(world, bodies, [1])
    assert_same_replies(bodies, ref, got)
    assert codes(ref) == ["E_SCHEMA"]
