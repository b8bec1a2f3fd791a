"""Section 12, maintenance windows, in the engines: one test body on the reference and the compiled engine.

Each stream runs through both with the same schedule (replay clock: inf_time); the
replies must agree field by field, `err_msg` included for E_MAINTENANCE, and give
the codes written here. What runs during a window, what does not, where the check
stands in the order of checks (after E_MISMATCH, before E_NO_POLICY), and that a
refusal changes nothing, not even its msgid, are docs/contract.md's choices for
section 12. The file's own checks (one line naming line and field) and the
schedule the status page reads are tested at the end.
"""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.engine import Engine, Request
from engine.core.maintenance import MaintenanceError, Schedule, parse_schedule, read_schedule
from engine.contract.wire import JSON
from engine.reference.oracle import ReferenceEngine
from stepwise_streams import stepwise_streams
from test_differential import EXAMPLES, SETTINGS, _op, _rev, assert_same_replies, load_world_data, run_compiled, streams
from test_stepwise_reference import (
    DAY, WORLD, admit, discharge, facts, line, on_visit, register, revoke_batch, settle, undo, upload,
)

HEADER = "admdvs,begin,end,reason\n"
# Province 43 is down on DAY from 08:00 to 12:00; WORLD's P1 and P2 are insured in 430100, P3 in 440100.
PROVINCE_43 = HEADER + f"430000,{DAY} 08:00:00,{DAY} 12:00:00,省平台升级\n"
PROVINCE_44 = HEADER + f"440000,{DAY} 08:00:00,{DAY} 12:00:00,省平台升级\n"
ERR_43 = f"the platform of insured region 430000 is down for maintenance until {DAY} 12:00:00: 省平台升级"


@pytest.fixture(scope="module")
def world():
    return load_world_data(WORLD)


def at(env: dict, clock: str) -> dict:
    """`env` sent at `clock` on DAY (HH:MM:SS): the replay clock is inf_time."""
    e = copy.deepcopy(env)
    e["inf_time"] = f"{DAY} {clock}"
    return e


def op(msgid: str, visit: str, clock: str, **kw) -> dict:
    """A one-shot outpatient settlement of P1 (430100) at H4301 on DAY."""
    return at(_op(msgid, visit, DAY, **kw), clock)


def run_both(world, schedule_text: str, envs: list, sizes: list[int] | None = None,
             bodies: list[bytes] | None = None) -> list[dict]:
    """The stream (envelopes, or `bodies` as sent) through the reference and the compiled engine with the
    schedule; they must agree (err_msg of E_MAINTENANCE included). The reference's replies."""
    schedule = parse_schedule(schedule_text)
    if bodies is None:
        bodies = [json.dumps(e, ensure_ascii=False).encode() for e in envs]
    ref_engine = ReferenceEngine(world)
    ref_engine.maintenance = schedule.as_listed()
    ref = [json.loads(json.dumps(ref_engine.handle_body(b))) for b in bodies]
    engine = Engine(world, clock="inf_time")
    engine.maintenance = schedule
    got, i = [], 0
    for n in sizes or [len(bodies)]:
        got += [json.loads(JSON.encoder.encode(r)) for r in engine.handle_batch([Request(b) for b in bodies[i:i + n]])]
        i += n
    assert_same_replies(bodies, ref, got)
    for x, y in zip(ref, got):
        if x.get("err_code") == "E_MAINTENANCE":
            assert x["err_msg"] == y["err_msg"]
    refused = sum(1 for r in ref if r.get("err_code") == "E_MAINTENANCE")
    assert sum(engine.maintenance_refused.values()) == refused
    return ref


def codes(replies: list[dict]) -> list[str | None]:
    return [r.get("err_code") for r in replies]


BATCHINGS = [None, "one by one"]


def sizes_of(batching: str | None, envs: list) -> list[int] | None:
    return None if batching is None else [1] * len(envs)


@pytest.mark.parametrize("batching", BATCHINGS)
def test_a_window_refuses_the_charges_and_queries_of_the_persons_it_covers(world, batching):
    query = at({"infno": "1101", "msgid": "q1", "mdtrtarea_admvs": "430100", "insuplc_admdvs": "430100",
                "fixmedins_code": "H4301", "input": {"data": {"mdtrt_cert_type": "01", "mdtrt_cert_no": "P1"}}},
               "10:00:00")
    envs = [op("m1", "v1", "07:59:59"), op("m2", "v2", "08:00:00"), op("m3", "v3", "10:00:00", infno="2206"),
            query, op("m4", "v4", "11:59:59"), op("m5", "v5", "12:00:00"), at(query, "12:00:00")]
    replies = run_both(world, PROVINCE_43, envs, sizes_of(batching, envs))
    assert codes(replies) == [None, "E_MAINTENANCE", "E_MAINTENANCE", "E_MAINTENANCE", "E_MAINTENANCE", None, None]
    assert replies[1]["err_msg"] == ERR_43 and replies[1]["output"] == {}
    # Another province's window covers none of them.
    assert codes(run_both(world, PROVINCE_44, envs)) == [None] * len(envs)


def test_reversals_retries_reconciliation_and_2601_still_run(world):
    recon = at({"infno": "3202", "msgid": "q1", "mdtrtarea_admvs": "430100", "insuplc_admdvs": "430100",
                "fixmedins_code": "H4301",
                "input": {"data": {"stmt_begndate": DAY, "stmt_enddate": DAY}}}, "10:00:00")
    first = op("m1", "v1", "07:00:00")
    envs = [first, op("m2", "v2", "07:30:00"),
            at(first, "09:00:00"),  # a retry of a settlement made before the window: its stored reply
            at(_rev("r1", "Sm1", "v1", DAY), "09:30:00"), recon,
            at(undo("u1", "m2", "2207"), "10:30:00"),  # 2601 undoing a settlement: its reversal
            at(undo("u2", "m9", "2207"), "10:40:00"),  # 2601 voiding a msgid never committed
            op("m9", "v9", "13:00:00")]
    replies = run_both(world, PROVINCE_43, envs)
    assert codes(replies) == [None, None, None, None, None, None, None, "E_VOIDED"]
    assert replies[2] == replies[0]
    assert [r["setl_id"] for r in replies[4]["output"]["stmtdetail"]] == ["Sm1", "Sm2", "Sr1"]
    assert [r["output"]["data"]["status"] for r in replies[5:7]] == ["UNDONE", "VOIDED"]


@pytest.mark.parametrize("batching", BATCHINGS)
def test_the_check_stands_after_e_mismatch_and_before_e_no_policy(world, batching):
    def bad(msgid: str, how) -> dict:
        e = op(msgid, "w" + msgid, "10:00:00")
        how(e)
        return e

    def fee_time(e):
        e["input"]["feedetail"][0]["fee_ocur_time"] = "2026-03-02 9:00"

    settled = op("m0", "v0", "07:00:00")
    envs = [
        settled,
        bad("s1", lambda e: e["input"]["data"].update(med_type="21")),  # E_SCHEMA
        bad("s2", fee_time),  # E_SCHEMA of a line
        bad("s3", lambda e: e["input"].update(feedetail=[e["input"]["feedetail"][0]] * 10_001)),  # E_LIMIT
        bad("s4", lambda e: e.update(fixmedins_code="H9999")),  # E_UNKNOWN_INSTITUTION
        bad("s5", lambda e: e.update(mdtrtarea_admvs="430200")),  # E_FORBIDDEN
        bad("s6", lambda e: e["input"]["data"].update(psn_no="P9")),  # E_UNKNOWN_PERSON
        bad("s7", lambda e: e.update(insuplc_admdvs="430200")),  # E_MISMATCH
        at(dict(op("m0", "v0", "07:00:00"), msgid="m0", input={**settled["input"], "x": 1}), "10:00:00"),
        # After the window's check: E_DUPLICATE_VISIT (v0 is settled), the total's E_AMOUNT_MISMATCH, E_DATE.
        op("s8", "v0", "10:00:00"),
        bad("s9", lambda e: e["input"]["data"].update(medfee_sumamt="1.00")),
        at(_op("s10", "w10", "2026-03-03"), "10:00:00"),
    ]
    replies = run_both(world, PROVINCE_43, envs, sizes_of(batching, envs))
    assert codes(replies) == [None, "E_SCHEMA", "E_SCHEMA", "E_LIMIT", "E_UNKNOWN_INSTITUTION", "E_FORBIDDEN",
                              "E_UNKNOWN_PERSON", "E_MISMATCH", "E_MSGID_REUSED"] + ["E_MAINTENANCE"] * 3
    # E_NO_POLICY ranks after it: P3's region (440100) has no policy.
    no_policy = at(_op("p3", "x3", DAY), "10:00:00")
    no_policy.update(mdtrtarea_admvs="440100", insuplc_admdvs="440100", fixmedins_code="H4401")
    no_policy["input"]["data"]["psn_no"] = "P3"
    assert codes(run_both(world, PROVINCE_44, [no_policy])) == ["E_MAINTENANCE"]
    assert codes(run_both(world, PROVINCE_43, [no_policy])) == ["E_NO_POLICY"]


def test_a_refused_request_changes_nothing_and_its_msgid_may_be_sent_again(world):
    stream = [op("m1", "v1", "07:00:00", amount="300.00"), op("m2", "v2", "09:00:00", amount="250.00"),
              at(settle("m2", "v2", "250.00"), "09:30:00"),  # the same msgid, another input: not held against it
              op("m2", "v2", "13:00:00", amount="250.00"), op("m3", "v3", "13:30:00", amount="120.00")]
    with_window = run_both(world, PROVINCE_43, stream)
    assert codes(with_window) == [None, "E_MAINTENANCE", "E_MAINTENANCE", None, None]
    # The same stream without the refused requests, and no window: every other reply is the same.
    without = run_both(world, HEADER, [stream[0], stream[3], stream[4]])
    assert [with_window[0], with_window[3], with_window[4]] == without


@pytest.mark.parametrize("batching", BATCHINGS)
def test_stepwise_visits_during_a_window(world, batching):
    """Registrations and settlements charge or query the person: refused. Visit facts, uploads,
    revocations, discharge and cancellations change only the hub's record of the visit: they run,
    so a stay goes on through the window and settles after it."""
    stay, visit = "MA1", "MR1"
    envs = [
        at(register("R1"), "07:00:00"), at(admit("A1"), "07:00:00"),
        at(register("R2", otp="OTP2"), "09:00:00"), at(admit("A2", psn="P2"), "09:00:00"),  # refused
        at(facts("F1", visit), "09:00:00"), at(upload("U1", visit, [line("1")]), "09:00:00"),
        at(upload("U2", visit, [line("2")], batch="2"), "09:00:00"), at(revoke_batch("V1", visit, "2"), "09:00:00"),
        at(upload("U3", stay, [line("1")]), "09:00:00"),
        at(settle("S1", visit, "100.00", commit=False), "10:00:00"), at(settle("S2", visit, "100.00"), "10:00:00"),
        at(discharge("D1", stay, end=f"{DAY} 09:30:00"), "10:00:00"),
        at(settle("S3", stay, "100.00"), "11:00:00"),
        at(undo("X1", "U1", "2204"), "11:00:00"), at(on_visit("2202", "C1", visit), "11:00:00"),
        at(settle("S3", stay, "100.00"), "12:00:00"),  # the same msgid after the window: it settles
        at(on_visit("2404", "C2", stay), "12:30:00"),  # a stay with a settlement in force: E_STATE
    ]
    replies = run_both(world, PROVINCE_43, envs, sizes_of(batching, envs))
    assert codes(replies) == [None, None, "E_MAINTENANCE", "E_MAINTENANCE", None, None, None, None, None,
                              "E_MAINTENANCE", "E_MAINTENANCE", None, "E_MAINTENANCE", None, None, None, "E_STATE"]
    assert replies[15]["output"]["setlinfo"]["setl_id"] == "SS3"


def test_of_several_windows_in_force_the_refusal_names_the_one_that_ends_last(world):
    text = HEADER + "\n".join([
        f"430000,{DAY} 08:00:00,{DAY} 12:00:00,province",
        f"430100,{DAY} 09:00:00,{DAY} 14:00:00,city",
        f"430100,{DAY} 10:00:00,{DAY} 14:00:00,city again",
        f"430000,{DAY} 13:00:00,{DAY} 15:00:00,province again",
    ]) + "\n"
    replies = run_both(world, text, [op(f"m{i}", f"v{i}", t) for i, t in
                                     enumerate(("08:30:00", "10:30:00", "13:30:00", "14:30:00", "15:00:00"))])
    assert [r["err_msg"].rsplit(": ", 1)[-1] if r.get("err_code") else None for r in replies] == \
        ["province", "city", "province again", "province again", None]


# ---------------------------------------------------------------- generated streams


@st.composite
def with_windows(draw, cases):
    """A generated stream (one-shot or step-wise) and a schedule over its regions and its requests' times."""
    case = draw(cases)
    times = sorted({e["inf_time"] for e in map(_json_or_none, case.bodies)
                    if isinstance(e, dict) and isinstance(e.get("inf_time"), str) and len(e["inf_time"]) == 19})
    rows = []
    for k in range(draw(st.integers(0, 4)) if times else 0):
        region = draw(st.sampled_from(case.w["regions"]))
        admdvs = draw(st.sampled_from((region, region[:4] + "00", region[:2] + "0000")))
        a, b = sorted(draw(st.lists(st.sampled_from(times), min_size=2, max_size=2)))
        end = b if b > a else "2099-12-31 00:00:00"
        rows.append(f"{admdvs},{a},{end},window {k}\n")
    return case, HEADER + "".join(rows)


def _json_or_none(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        return None


def _changes_nothing(case, text: str) -> int:
    """Both engines agree with the schedule; the stream without its refused requests, and no window, answers the
    rest the same. The number refused."""
    replies = run_both(case.world, text, [_json_or_none(b) for b in case.bodies], case.sizes, bodies=case.bodies)
    refused = {i for i, r in enumerate(replies) if r.get("err_code") == "E_MAINTENANCE"}
    kept = [b for i, b in enumerate(case.bodies) if i not in refused]
    assert_same_replies(kept, [r for i, r in enumerate(replies) if i not in refused],
                        run_compiled(case.world, kept, [len(kept)] if kept else []))
    return len(refused)


@pytest.mark.parametrize("cases", [streams, stepwise_streams], ids=["oneshot", "stepwise"])
def test_generated_streams_with_windows(cases):
    refused = []

    @settings(max_examples=max(10, EXAMPLES // 2), **SETTINGS)
    @given(with_windows(cases()))
    def run(drawn):
        refused.append(_changes_nothing(*drawn))

    run()
    assert sum(refused) > 0, "no generated schedule refused anything: the generator misses the windows"


# ---------------------------------------------------------------- the file and the schedule


@pytest.mark.parametrize("text,error", [
    ("", "m.csv:1: header: must be admdvs,begin,end,reason"),
    ("admdvs,begin,end\n", "m.csv:1: header: must be admdvs,begin,end,reason"),
    (HEADER + "4300,2026-03-02 08:00:00,2026-03-02 09:00:00,x\n", "m.csv:2: admdvs: '4300' is not a 6-digit region"),
    (HEADER + "990000,2026-03-02 08:00:00,2026-03-02 09:00:00,x\n", "m.csv:2: admdvs: 990000: 99 is not a province"),
    (HEADER + "\n430000,2026-03-02 8:00,2026-03-02 09:00:00,x\n", "m.csv:3: begin: '2026-03-02 8:00' is not a time"),
    (HEADER + "430000,2026-03-02 08:00:00,2026-02-30 09:00:00,x\n", "m.csv:2: end: '2026-02-30 09:00:00' is not"),
    (HEADER + "430000,2026-03-02 08:00:00,2026-03-02 08:00:00,x\n", "m.csv:2: end: 2026-03-02 08:00:00 is not after"),
    (HEADER + "430000,1999-03-02 08:00:00,2026-03-02 08:00:00,x\n", "m.csv:2: begin: 1999-03-02 08:00:00 is outside"),
    (HEADER + "430000,2026-03-02 08:00:00,2026-03-02 09:00:00,\n", "m.csv:2: reason: must be 1-200 printable"),
    (HEADER + '430000,2026-03-02 08:00:00,2026-03-02 09:00:00,"two\nlines"\n', "m.csv:2: reason: must be 1-200"),
    (HEADER + "430000,2026-03-02 08:00:00,2026-03-02 09:00:00\n", "m.csv:2: row: has 3 cells, want 4"),
])
def test_a_bad_file_is_refused_naming_line_and_field(text, error):
    with pytest.raises(MaintenanceError) as e:
        parse_schedule(text, "m.csv")
    assert str(e.value).startswith(error), str(e.value)
    assert "\n" not in str(e.value)


def test_reading_the_file(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("\ufeff" + PROVINCE_43 + "\n", encoding="utf-8")  # a BOM and a blank line are fine
    assert [w.admdvs for w in read_schedule(str(path)).windows] == ["430000"]
    with pytest.raises(MaintenanceError, match=r"m\.csv: not UTF-8"):
        path.write_bytes(HEADER.encode() + b"430000,\xff\n")
        read_schedule(str(path))
    with pytest.raises(MaintenanceError, match=r"nope\.csv: No such file or directory"):
        read_schedule(str(tmp_path / "nope.csv"))
    with pytest.raises(MaintenanceError, match=r": not a regular file"):
        read_schedule(str(tmp_path))
    assert len(parse_schedule(HEADER)) == 0  # the header alone: no window announced


def test_status_lists_the_windows_in_force_and_the_next_ones():
    s = parse_schedule(HEADER + "\n".join([
        "440000,2026-03-02 10:00:00,2026-03-02 11:00:00,next",
        "430000,2026-03-02 08:00:00,2026-03-02 12:00:00,long",
        "430100,2026-03-02 08:30:00,2026-03-02 09:30:00,short",
        "110000,2026-03-01 08:00:00,2026-03-01 09:00:00,past",
    ]) + "\n")
    status = s.status("2026-03-02 09:00:00")
    assert [w["reason"] for w in status["in_force"]] == ["short", "long"]  # by end
    assert status["next"] == [{"admdvs": "440000", "begin": "2026-03-02 10:00:00", "end": "2026-03-02 11:00:00",
                               "reason": "next"}]
    assert s.status("2026-03-03 00:00:00") == {"in_force": [], "next": []}
    assert s.window_for("430100", "2026-03-02 09:00:00").reason == "long"
    assert s.window_for("430200", "2026-03-02 09:00:00").reason == "long"
    assert s.window_for("440100", "2026-03-02 09:00:00") is None
    assert s.window_for("110100", "2026-03-01 09:00:00") is None  # end excluded
    assert Schedule([]).window_for("430100", "2026-03-02 09:00:00") is None
