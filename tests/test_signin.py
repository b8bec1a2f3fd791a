"""Section 10 in the engine and the store: scope, 9001/9002 sign-ins, E_SIGN_IN, the journal's columns, `yidi check`.

The transports decide which credential signed a request (tests/test_auth.py and the
server's tests); here requests are handed to the engine with their credential, as
the hub does, on the replay clock so that time is the request's inf_time.
"""
from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
import sys

import pytest
from conftest import ROOT
from test_differential import MINI_WORLD, _op, _rev, load_world_data, write_world

from engine.contract.credential import Credential
from engine.contract.wire import JSON, MSGPACK
from engine.core import signin
from engine.core.engine import Engine, Request
from engine.store import open_store
from engine.store.check import check_store

HOSP = Credential("hosp-4301", "t" * 32, "H4301", "")
HOSP_OTHER = Credential("hosp-4401", "u" * 32, "H4401", "")
PLATFORM_HN = Credential("plat-43", "p" * 32, "", "430000")  # covers H4301 (430100), not H4401 (440100)
DAY = "2026-03-02"


def sign_in_env(msgid: str, code: str = "H4301", t: str = f"{DAY} 08:00:00", **signin_fields) -> dict:
    data = {"opter_no": "op-1", "mac": "00:11:22:33:44:55", "ip": "10.0.0.7"}
    data.update(signin_fields)
    return {"infno": "9001", "msgid": msgid, "fixmedins_code": code, "inf_time": t, "input": {"signIn": data}}


def sign_out_env(msgid: str, sign_no: str, code: str = "H4301", t: str = f"{DAY} 18:00:00") -> dict:
    return {"infno": "9002", "msgid": msgid, "fixmedins_code": code, "inf_time": t,
            "input": {"signOut": {"sign_no": sign_no, "opter_no": "op-1"}}}


def person_env(msgid: str, sign_no: str | None, t: str = f"{DAY} 09:00:00") -> dict:
    env = {"infno": "1101", "msgid": msgid, "fixmedins_code": "H4301", "mdtrtarea_admvs": "430100",
           "insuplc_admdvs": "430100", "inf_time": t, "input": {"data": {"mdtrt_cert_type": "01", "mdtrt_cert_no": "P1"}}}
    if sign_no is not None:
        env["sign_no"] = sign_no
    return env


def signed(env: dict, sign_no: str, opter: str = "op-1", opter_name: str = "张医生") -> dict:
    e = copy.deepcopy(env)
    e.update(sign_no=sign_no, opter=opter, opter_name=opter_name)
    return e


class Hub:
    """An engine over MINI_WORLD handed requests the way the hub hands them: one batch, each with its credential."""

    def __init__(self, engine: Engine | None = None):
        self.engine = engine or Engine(load_world_data(MINI_WORLD), clock="inf_time")

    def batch(self, *items: tuple[dict, Credential | None]) -> list[dict]:
        reqs = [Request(json.dumps(e).encode(), JSON, None, cred) for e, cred in items]
        return [json.loads(JSON.encoder.encode(r)) for r in self.engine.handle_batch(reqs)]

    def one(self, env: dict, cred: Credential | None) -> dict:
        return self.batch((env, cred))[0]

    def sign_in(self, cred: Credential, code: str = "H4301", t: str = f"{DAY} 08:00:00") -> str:
        rep = self.one(sign_in_env("si-" + cred.paasid + code + t, code, t), cred)
        assert rep["infcode"] == 0, rep
        return rep["output"]["signinoutb"]["sign_no"]


def code_of(rep: dict) -> str | None:
    return rep.get("err_code")


# ---------------------------------------------------------------- 9001 and 9002

def test_sign_in_answers_an_unguessable_sign_no_in_force_from_its_time():
    h = Hub()
    reps = h.batch((sign_in_env("a"), HOSP), (sign_in_env("b"), HOSP))
    outs = [r["output"]["signinoutb"] for r in reps]
    for o in outs:
        assert o["sign_time"] == f"{DAY} 08:00:00"
        assert len(o["sign_no"]) == 30 and all(c in "0123456789abcdef" for c in o["sign_no"])
    assert outs[0]["sign_no"] != outs[1]["sign_no"]
    s = h.engine.signins.by_no[outs[0]["sign_no"]]
    assert (s.paasid, s.fixmedins_code, s.opter_no, s.ip, s.ends) == (
        "hosp-4301", "H4301", "op-1", "10.0.0.7", "2026-03-03 08:00:00")


@pytest.mark.parametrize("field,value", [("opter_no", ""), ("opter_no", None), ("ip", 7)])
def test_a_sign_in_without_its_required_fields_is_e_schema(field, value):
    h = Hub()
    rep = h.one(sign_in_env("a", **{field: value}), HOSP)
    assert code_of(rep) == "E_SCHEMA" and field in rep["err_msg"]
    assert not h.engine.signins.by_no


def test_a_sign_in_for_an_unknown_institution_is_refused():
    assert code_of(Hub().one(sign_in_env("a", code="H9999"), None)) == "E_UNKNOWN_INSTITUTION"


def test_a_transaction_needs_a_sign_in_in_force_for_its_credential_and_institution():
    h = Hub()
    mine = h.sign_in(HOSP)
    platform_4301 = h.sign_in(PLATFORM_HN)  # a platform's sign-in for H4301
    reps = h.batch(
        (person_env("q1", None), HOSP),  # no sign_no
        (person_env("q2", "0" * 30), HOSP),  # no such sign-in
        (person_env("q3", platform_4301), HOSP),  # another credential's
        (person_env("q4", mine), HOSP),
        (person_env("q5", platform_4301), PLATFORM_HN),
        (person_env("q6", mine, t=f"{DAY} 07:59:59"), HOSP),  # before its sign_time
        (person_env("q7", mine, t="2026-03-03 08:00:00"), HOSP),  # 24 h later: ended
    )
    assert [code_of(r) for r in reps] == ["E_SIGN_IN", "E_SIGN_IN", "E_SIGN_IN", None, None, "E_SIGN_IN", "E_SIGN_IN"]
    assert reps[3]["output"]["baseinfo"]["psn_no"] == "P1"
    assert "2026-03-03 08:00:00" in reps[6]["err_msg"]


def test_sign_out_ends_the_sign_in_and_only_its_own_credential_may_sign_it_out():
    h = Hub()
    sign_no = h.sign_in(HOSP)
    reps = h.batch(
        (sign_out_env("o1", sign_no, code="H4301"), PLATFORM_HN),  # not the platform's sign-in
        (signed(_op("m1", "v1", DAY), sign_no), HOSP),
        (sign_out_env("o2", sign_no), HOSP),
        (signed(_op("m2", "v2", DAY), sign_no), HOSP),
        (sign_out_env("o3", sign_no), HOSP),
    )
    assert [code_of(r) for r in reps] == ["E_SIGN_IN", None, None, "E_SIGN_IN", "E_SIGN_IN"]
    assert reps[2]["output"] == {"signoutoutb": {"sign_time": f"{DAY} 18:00:00"}}
    assert "sign in (9001)" in reps[3]["err_msg"] and sign_no not in h.engine.signins.by_no


def test_without_a_credential_nothing_of_section_10_is_checked():
    h = Hub()
    reps = h.batch((_op("m1", "v1", DAY), None), (person_env("q1", None), None), (sign_in_env("s"), None))
    assert [code_of(r) for r in reps] == [None, None, None]
    s = h.engine.signins.by_no[reps[2]["output"]["signinoutb"]["sign_no"]]
    assert s.paasid == ""


def test_the_sign_ins_in_force_of_one_credential_are_bounded(monkeypatch):
    monkeypatch.setattr(signin, "SIGN_INS_PER_CREDENTIAL_MAX", 3)
    h = Hub()
    reps = h.batch(*[(sign_in_env(f"s{i}"), HOSP) for i in range(4)])
    assert [code_of(r) for r in reps] == [None, None, None, "E_LIMIT"]
    # Another credential is not held back; one signed out makes room; ended ones are forgotten.
    assert code_of(h.one(sign_in_env("x"), PLATFORM_HN)) is None
    first = reps[0]["output"]["signinoutb"]["sign_no"]
    assert code_of(h.one(sign_out_env("o", first), HOSP)) is None
    assert code_of(h.one(sign_in_env("s5"), HOSP)) is None
    assert code_of(h.one(sign_in_env("s6", t="2026-03-03 09:00:00"), HOSP)) is None  # the others have ended


# ---------------------------------------------------------------- scope and the order of checks

def test_scope_comes_first_then_the_sign_in_then_section_7():
    h = Hub()
    sign_no = h.sign_in(HOSP)
    unknown_infno = signed(_op("m1", "v1", DAY), sign_no)
    unknown_infno["infno"] = "9999"
    other = signed(_op("m2", "v2", DAY), sign_no)
    other["fixmedins_code"] = "H4401"
    no_sign_in = _op("m3", "v3", DAY)
    no_sign_in["infno"] = "9999"
    bad_schema = signed(_op("m4", "v4", DAY), sign_no)
    del bad_schema["input"]["data"]["psn_no"]
    reps = h.batch((other, HOSP), (no_sign_in, HOSP), (unknown_infno, HOSP), (bad_schema, HOSP),
                   (sign_in_env("s", code="H4401"), HOSP))
    assert [code_of(r) for r in reps] == ["E_FORBIDDEN", "E_SIGN_IN", "E_UNSUPPORTED", "E_SCHEMA", "E_FORBIDDEN"]
    assert "outside this credential's scope (institution H4301)" in reps[0]["err_msg"]


def test_a_platform_acts_for_the_institutions_its_region_covers():
    h = Hub()
    assert code_of(h.one(sign_in_env("a", code="H4401"), PLATFORM_HN)) == "E_FORBIDDEN"
    assert code_of(h.one(sign_in_env("b", code="H9999"), PLATFORM_HN)) == "E_FORBIDDEN"  # unknown: not covered
    sign_no = h.sign_in(PLATFORM_HN, "H4301")
    rep = h.one(signed(_op("m1", "v1", DAY), sign_no), PLATFORM_HN)
    assert rep["infcode"] == 0 and rep["output"]["setlinfo"]["setl_id"] == "Sm1"


def test_a_settlement_committed_under_a_sign_in_is_answered_again_on_retry_under_it():
    h = Hub()
    sign_no = h.sign_in(HOSP)
    env = signed(_op("m1", "v1", DAY), sign_no)
    first, again = h.batch((env, HOSP), (env, HOSP))
    assert first == again and first["infcode"] == 0


# ---------------------------------------------------------------- the store: durable sign-ins, the journal, check

@pytest.fixture()
def world_dir(tmp_path):
    d = tmp_path / "world"
    d.mkdir()
    write_world(str(d), MINI_WORLD)
    return str(d)


def commit(store, items: list[tuple[dict, Credential | None]], codec=JSON) -> list[dict]:
    reqs = [Request(codec.encoder.encode(e) if codec is MSGPACK else json.dumps(e).encode(), codec, None, c)
            for e, c in items]
    replies = store.engine.handle_batch(reqs)
    store.commit(store.engine.take_changes())
    return [json.loads(JSON.encoder.encode(r)) for r in replies]


def test_sign_ins_and_sign_outs_survive_a_restart(tmp_path, world_dir):
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time") as st:
        a, b = (r["output"]["signinoutb"]["sign_no"] for r in commit(st, [(sign_in_env("a"), HOSP),
                                                                          (sign_in_env("b"), HOSP)]))
        assert code_of(commit(st, [(sign_out_env("o", b), HOSP)])[0]) is None
    with open_store(data, world_dir, clock="inf_time") as st:
        reps = commit(st, [(person_env("q1", a), HOSP), (person_env("q2", b), HOSP)])
        assert [code_of(r) for r in reps] == [None, "E_SIGN_IN"]


def test_on_the_wall_clock_only_sign_ins_still_in_force_come_back(tmp_path, world_dir):
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time") as st:
        old = commit(st, [(sign_in_env("a", t="2020-01-01 08:00:00"), HOSP)])[0]["output"]["signinoutb"]["sign_no"]
        new = commit(st, [(sign_in_env("b", t="2099-01-01 08:00:00"), HOSP)])[0]["output"]["signinoutb"]["sign_no"]
    with open_store(data, world_dir, clock="wall") as st:
        assert set(st.engine.signins.by_no) == {new} and old != new


def test_the_journal_keeps_who_made_each_row_and_check_proves_the_sign_ins(tmp_path, world_dir):
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time") as st:
        sign_no = commit(st, [(sign_in_env("s"), HOSP)])[0]["output"]["signinoutb"]["sign_no"]
        reps = commit(st, [(signed(_op("m1", "v1", DAY), sign_no), HOSP),
                           (signed(_rev("m2", "Sm1", "v1", DAY), sign_no, "op-2", "李医生"), HOSP),
                           (_op("m3", "v3", DAY), None)], codec=MSGPACK)
        assert [code_of(r) for r in reps] == [None, None, None]
    conn = sqlite3.connect(os.path.join(data, "yidi.sqlite3"))
    rows = conn.execute("SELECT msgid, paasid, sign_no, opter, opter_name FROM journal ORDER BY seq").fetchall()
    assert rows == [("m1", "hosp-4301", sign_no, "op-1", "张医生"), ("m2", "hosp-4301", sign_no, "op-2", "李医生"),
                    ("m3", "", "", "", "")]
    out: list[str] = []
    assert check_store(data, out.append) == 0, out
    assert any(line.startswith("ok    sign-ins") and "(2)" in line for line in out)
    assert any("1 row(s) made without a credential" in line for line in out)
    # A row whose sign-in was not in force when it committed is found.
    conn.execute("UPDATE journal SET setl_time = '2026-03-04 10:00:00' WHERE msgid = 'm2'")
    conn.execute("UPDATE journal SET sign_no = 'forged' WHERE msgid = 'm1'")
    conn.commit()
    conn.close()
    out.clear()
    assert check_store(data, out.append) == 1
    text = "\n".join(out)
    assert "FAIL  sign-ins" in text and "2 difference(s)" in text
    assert "sign_no 'forged' is no sign-in" in text and f"sign_no {sign_no} in force from {DAY} 08:00:00" in text


def test_a_store_of_schema_3_is_upgraded_at_open(tmp_path, world_dir):
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time") as st:
        commit(st, [(_op("m1", "v1", DAY), None)])
    # Make it a store of schema 3: no sign_in or step table, no journal columns of sections 10 and 11.
    conn = sqlite3.connect(os.path.join(data, "yidi.sqlite3"))
    for c in ("paasid", "sign_no", "opter", "opter_name", "chrg_bchno"):
        conn.execute(f"ALTER TABLE journal DROP COLUMN {c}")
    conn.execute("DROP TABLE sign_in")
    conn.execute("DROP TABLE step")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with open_store(data, world_dir, clock="inf_time") as st:
        sign_no = commit(st, [(sign_in_env("s"), HOSP)])[0]["output"]["signinoutb"]["sign_no"]
        assert code_of(commit(st, [(signed(_op("m2", "v2", DAY), sign_no), HOSP)])[0]) is None
    out: list[str] = []
    assert check_store(data, out.append) == 0, out
    conn = sqlite3.connect(os.path.join(data, "yidi.sqlite3"))
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    assert conn.execute("SELECT msgid, paasid FROM journal ORDER BY seq").fetchall() == [("m1", ""), ("m2", "hosp-4301")]


def test_yidi_check_prints_the_sign_in_check(tmp_path, world_dir):
    data = str(tmp_path / "data")
    with open_store(data, world_dir, clock="inf_time") as st:
        sign_no = commit(st, [(sign_in_env("s"), HOSP)])[0]["output"]["signinoutb"]["sign_no"]
        commit(st, [(signed(_op("m1", "v1", DAY), sign_no), HOSP)])
    run = subprocess.run([sys.executable, "-m", "engine.cli", "check", "--data", data], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok    sign-ins: each row made under a credential was made under a sign-in in force" in run.stdout
