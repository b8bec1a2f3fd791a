"""Filings online (docs/contract.md, "Filings online"): 2501 转院备案, 2502 its cancellation, and the operator's
long-term filing on the admin listener.

One stream pins every rule on the plain-Python reference, and the compiled engine
answers it exactly as the reference does: in one batch, one request a batch, and
through the store with a restart in the middle (the filings come back from the
store). The operator's filing is driven through `yidi serve` itself.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import orjson
import pytest

from conftest import ROOT, VECTOR_WORLD
from test_differential import assert_same_replies, run_compiled, run_reference
from test_reload_world import PSN, WAIT_S, _call, _post, _serve, _stop, person, settle
from engine.contract.wire import JSON
from engine.core.engine import Request
from engine.store import open_store
from engine.store.check import check_store

REFERRER = ("H43010010000", "430100")  # the referring hospital, in the person's own region
OTHER = ("H43010010001", "430100")


def env(infno: str, msgid: str, inp: dict, inst=REFERRER, insuplc: str = "430100") -> bytes:
    return orjson.dumps({"infno": infno, "msgid": msgid, "mdtrtarea_admvs": inst[1], "insuplc_admdvs": insuplc,
                         "fixmedins_code": inst[0], "inf_time": "2026-09-09 12:00:00", "input": inp})


def refer(msgid: str, *, psn: str = PSN, insutype: str = "390", dest: object = "110100", begn: object = "2026-09-01",
          end: object = None, inst=REFERRER, **extra) -> bytes:
    d = {"psn_no": psn, "insutype": insutype, "tel": "1", "addr": "x", "insu_optins": "430100", "diag_code": "I10",
         "diag_name": "hypertension", "dise_cond_dscr": "", "reflin_medins_no": "H11010010001",
         "reflin_medins_name": "Hospital 110100-1-1", "mdtrtarea_admdvs": dest, "hosp_agre_refl_flag": "1",
         "refl_type": "1", "refl_date": "2026-09-01", "refl_rea": "", "refl_opnn": "", "begndate": begn,
         "enddate": end, "refl_used_flag": "0", **extra}
    return env("2501", msgid, {"refmedin": d}, inst=inst)


def unfile(msgid: str, sn: str, psn: str = PSN, inst=REFERRER) -> bytes:
    return env("2502", msgid, {"data": {"trt_dcla_detl_sn": sn, "psn_no": psn, "memo": "no longer needed"}}, inst=inst)


# What each request of STREAM must get from the reference: None for success, else its err_code.
STREAM: list[tuple[bytes, str | None]] = [
    (settle("V1"), None),  # UNFILED
    (refer("R1"), None),
    (refer("R1"), None),  # a retry: the stored reply
    (refer("R1", dest="110000"), "E_MSGID_REUSED"),
    (person("Q1"), None),  # shows the referral
    (settle("V2"), None),  # REFERRAL now
    (unfile("C1", "FR1", inst=OTHER), "E_FORBIDDEN"),
    (unfile("C2", "FNOPE"), "E_NOT_FOUND"),
    (unfile("C3", "FR1", psn="P11010000000001"), "E_MISMATCH"),
    (unfile("C4", "FR1"), None),
    (unfile("C4", "FR1"), None),  # a retry
    (unfile("C5", "FR1"), "E_ALREADY_REVERSED"),
    (person("Q2"), None),  # shows it no more
    (settle("V3"), None),  # UNFILED again
    (env("2501", "B1", {"data": {}}), "E_SCHEMA"),
    (refer("B2", dest="999999"), "E_SCHEMA"),
    (refer("B3", begn="2026-13-01"), "E_SCHEMA"),
    (refer("B4", end="2026-08-01"), "E_DATE"),
    (refer("B5", psn="PNOBODY"), "E_UNKNOWN_PERSON"),
    (refer("B6", insutype="310"), "E_MISMATCH"),
    (refer("B7", inst=("HNOWHERE", "430100")), "E_UNKNOWN_INSTITUTION"),
    (refer("B8", inst=("H11010010001", "430100")), "E_FORBIDDEN"),
    (unfile("B9", ""), "E_SCHEMA"),
    (refer("V2"), "E_MSGID_REUSED"),  # a settlement's msgid
    (env("admin-long-filing", "B10", {"data": {}}), "E_UNSUPPORTED"),  # the operator's, never a gateway's
    # Six months at most: a referral begun 2026-01-01 with an enddate past that no longer counts on 2026-09-09.
    (refer("R2", begn="2026-01-01", end="2027-01-01"), None),
    (settle("V4"), None),  # UNFILED
    (refer("R3", dest="110000", begn="2026-09-09", end=""), None),  # a whole province, open: six months
    (settle("V5"), None),  # REFERRAL
    (person("Q3"), None),
]
CLASSES = {"V1": "UNFILED", "V2": "REFERRAL", "V3": "UNFILED", "V4": "UNFILED", "V5": "REFERRAL"}


def _check_reference(replies: list[dict]) -> None:
    for (body, want), got in zip(STREAM, replies):
        assert got.get("err_code") == want, (body, got)
        msgid = orjson.loads(body)["msgid"]
        if msgid in CLASSES and got["infcode"] == 0:
            assert got["output"]["setlinfo"]["filing_class"] == CLASSES[msgid], msgid
    out = {orjson.loads(b)["msgid"]: r["output"] for (b, _), r in zip(STREAM, replies) if r["infcode"] == 0}
    assert out["R1"] == {"result": {"trt_dcla_detl_sn": "FR1"}}
    referral = {"filing_type": "TEMP_REFERRAL", "dest_admdvs": "110100", "begndate": "2026-09-01", "enddate": None,
                "status": "1"}
    assert referral in out["Q1"]["filinginfo"] and referral not in out["Q2"]["filinginfo"]
    assert [f["dest_admdvs"] for f in out["Q3"]["filinginfo"][-2:]] == ["110100", "110000"]


@pytest.fixture(scope="module")
def world(vector_world):
    return vector_world


def test_filings_online_compiled_as_the_reference(world):
    bodies = [b for b, _ in STREAM]
    ref = run_reference(world, bodies)
    _check_reference(ref)
    assert_same_replies(bodies, ref, run_compiled(world, bodies, [len(bodies)]))
    assert_same_replies(bodies, ref, run_compiled(world, bodies, [1] * len(bodies)))


def test_filings_online_are_durable_and_come_back_at_open(world, tmp_path):
    bodies = [b for b, _ in STREAM]
    ref = run_reference(world, bodies)
    data = str(tmp_path / "data")
    half = bodies.index(unfile("C4", "FR1"))  # the referral made, not yet cancelled
    got = []
    for part in (bodies[:half], bodies[half:]):
        with open_store(data, VECTOR_WORLD, clock="inf_time") as store:
            replies = store.engine.handle_batch([Request(b, JSON) for b in part])
            store.commit(store.engine.take_changes())
            got += [json.loads(JSON.encoder.encode(r)) for r in replies]
    assert_same_replies(bodies, ref, got)
    with open_store(data, VECTOR_WORLD, clock="inf_time") as store:  # every retry: its stored reply
        again = store.engine.handle_batch([Request(b, JSON) for b in bodies[1:3] + bodies[9:11]])
        assert [json.loads(JSON.encoder.encode(r)) for r in again] == [got[1], got[2], got[9], got[10]]
        assert store.engine.filings_online.by_sn["FR1"].cancelled
    lines: list[str] = []
    assert check_store(data, out=lines.append) == 0, "\n".join(lines)


def test_the_operators_long_term_filing_on_the_admin_listener(tmp_path):
    world = tmp_path / "world"
    shutil.copytree(VECTOR_WORLD, world)
    data = str(tmp_path / "data")
    p, addr = _serve(data, str(world))
    try:
        url = f"http://{addr['admin']}/admin/filings"
        filing = {"psn_no": PSN, "insutype": "390", "filing_type": "LONG_RESIDENT", "dest_admdvs": "110000",
                  "begndate": "2026-09-01"}
        status, reply = _post(url, json.dumps({"msgid": "LT1", **filing}).encode())
        assert status == 200 and reply["infcode"] == 0 and reply["output"]["result"]["trt_dcla_detl_sn"] == "FLT1"
        assert _post(url, json.dumps({"msgid": "LT1", **filing}).encode())[1] == reply  # idempotent
        got = _call(addr, person("Q1"))["output"]["filinginfo"]
        assert {"filing_type": "LONG_RESIDENT", "dest_admdvs": "110000", "begndate": "2026-09-01", "enddate": None,
                "status": "2"} in got
        assert _call(addr, settle("V1"))["output"]["setlinfo"]["filing_class"] == "LONG_TERM"
        status, reply = _post(url, json.dumps({**filing, "filing_type": "TEMP_REFERRAL"}).encode())
        assert status == 422 and reply["err_code"] == "E_SCHEMA"
        status, reply = _post(url, b"not json")
        assert status == 400 and "JSON" in reply["error"]
        # A gateway cannot send it.
        assert _call(addr, env("admin-long-filing", "G1", {"data": filing}))["err_code"] == "E_UNSUPPORTED"
    finally:
        _stop(p)
    p, addr = _serve(data, str(world))  # committed: it is back after a restart
    try:
        assert _call(addr, settle("V2"))["output"]["setlinfo"]["filing_class"] == "LONG_TERM"
    finally:
        _stop(p)
    assert os.path.exists(os.path.join(data, "yidi.sqlite3"))


def test_filings_online_in_yidi_replay(world, tmp_path):
    bodies = [b for b, _ in STREAM]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(bodies) + b"\n")
    out = tmp_path / "out.jsonl"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "replay", "--world", VECTOR_WORLD, "--in",
                        str(tmp_path / "in.jsonl"), "--out", str(out), "--data", str(tmp_path / "data")],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert_same_replies(bodies, run_reference(world, bodies), got)


def test_a_maintenance_window_does_not_hold_a_filing_back(world):
    """Section 12 holds back what charges or queries a person; a filing made online does neither
    (docs/contract.md): 2501 and 2502 run while the person's insured region is down, a 1101 of the
    same person is refused, in the reference and the compiled engine alike."""
    from test_maintenance import HEADER, run_both

    window = HEADER + "430000,2026-09-09 08:00:00,2026-09-09 18:00:00,省平台升级\n"
    replies = run_both(world, window, [], bodies=[refer("R1"), unfile("C1", "FR1"), person("Q1")])
    assert [r.get("err_code") for r in replies] == [None, None, "E_MAINTENANCE"]
    assert replies[0]["output"]["result"]["trt_dcla_detl_sn"] == "FR1"
