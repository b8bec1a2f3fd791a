"""Reloading the world folder into a running hub (docs/server.md, "Reload"; engine.hub.world, engine.world.merge).

The reload is driven here as the server drives it (WorldSource.load on a worker
thread, then apply between batches) over a real store in a temporary folder, and
then through `yidi serve` itself (SIGHUP and POST /admin/reload), with a restart
after the reload: persons keep their accumulators, new persons get the file's
values, filings and chronic qualifications are the file's, a bad world changes
nothing, and a restart with the new folder gives the same state.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.request
from decimal import Decimal

import numpy as np
import orjson
import pytest

from conftest import ROOT, VECTOR_WORLD
from engine.contract.wire import JSON
from engine.core.engine import Request
from engine.hub.reload import ReloadRefused
from engine.hub.world import WorldSource
from engine.store import StoreRefused, open_store
from engine.store.check import check_store
from engine.store.schema import DB_NAME, KEYS_NAME

WAIT_S = 60.0
PSN = "P43010000000031"  # insured in 430100, 390
CERTNO = "430100196709274006"
INST = ("H11010010001", "110100")  # treated in 110100: UNFILED for this person unless filed
NEW_PSN = "P43010000999999"


def _hub(store) -> types.SimpleNamespace:
    """What a WorldSource needs of a hub: its engine, its store, its metrics (no pre-payment monitor here)."""
    return types.SimpleNamespace(engine=store.engine, store=store, metrics=types.SimpleNamespace(prepay=None))


def envelope(infno: str, msgid: str, inp: dict, *, inst=INST, insuplc="430100", when="2026-09-09 12:00:00") -> bytes:
    return orjson.dumps({"infno": infno, "msgid": msgid, "mdtrtarea_admvs": inst[1], "insuplc_admdvs": insuplc,
                         "fixmedins_code": inst[0], "inf_time": when, "input": inp})


def settle(msgid: str, psn: str = PSN, insutype: str = "390", insuplc: str = "430100", infno: str = "2207") -> bytes:
    """An outpatient settlement (2207) of 1,591.80 at INST, whose filing class decides its fund payment."""
    lines = [("0001", "XA13ABG980A056010100483", "458.91", "0.5000", "917.820000"),
             ("0002", "XA55ABG149A001010100483", "138.43", "0.5000", "276.850000"),
             ("0003", "XA44ABG901A013010100483", "35.59", "0.5000", "71.182100"),
             ("0004", "ZA72BC2008B016020200011", "958.87", "3.0000", "319.621900")]
    return envelope(infno, msgid, {
        "data": {"psn_no": psn, "med_type": "11", "mdtrt_id": "V" + msgid, "insutype": insutype,
                 "medfee_sumamt": "1591.80", "acct_used_flag": "0", "begntime": "2026-09-09 08:00:00"},
        "feedetail": [{"feedetl_sn": sn, "med_list_codg": c, "medins_list_codg": "L", "det_item_fee_sumamt": a,
                       "cnt": n, "pric": p, "fee_ocur_time": "2026-09-09 09:00:00"} for sn, c, a, n, p in lines]},
        insuplc=insuplc)


def person(msgid: str, psn: str = PSN) -> bytes:
    return envelope("1101", msgid, {"data": {"mdtrt_cert_type": "01", "mdtrt_cert_no": psn}})


def run(store, bodies: list[bytes]) -> list[dict]:
    replies = store.engine.handle_batch([Request(b, JSON) for b in bodies])
    store.commit(store.engine.take_changes())
    return [orjson.loads(JSON.encoder.encode(r)) for r in replies]


def reload(store, world: str) -> dict:
    source = WorldSource(_hub(store), world)
    return source.apply(source.load())


def rows(path) -> list[str]:
    return path.read_text().splitlines()


def edit_world(world) -> None:
    """The day's changes: a person added, a person renamed, a filing and a chronic qualification added, one
    qualification dropped, the catalogue cut by a line."""
    persons = rows(world / "persons.csv")
    i = next(k for k, ln in enumerate(persons) if ln.startswith(PSN + ","))
    cols = persons[i].split(",")
    cols[2] = "Renamed Person"
    persons[i] = ",".join(cols)
    added = [NEW_PSN, "430100199901019999", "New Person", "430100", "390", "1601", "77.77", "2026", "0.00",
             "0.00", "0.00", "0.00", "0.00"]
    (world / "persons.csv").write_text("\n".join(persons + [",".join(added)]) + "\n")
    filings = rows(world / "filings.csv")
    (world / "filings.csv").write_text("\n".join(filings + [f"{PSN},LONG_RESIDENT,110000,2026-01-01,,1"]) + "\n")
    chronic = rows(world / "chronic.csv")
    (world / "chronic.csv").write_text("\n".join(chronic[:1] + chronic[2:] + [f"{NEW_PSN},M08300,12.00"]) + "\n")


@pytest.fixture
def world_store(tmp_path):
    world = tmp_path / "world"
    shutil.copytree(VECTOR_WORLD, world)
    data = str(tmp_path / "data")
    return world, data


def test_a_reload_adds_and_changes_and_keeps_what_was_committed(world_store):
    world, data = world_store
    with open_store(data, str(world), clock="inf_time") as store:
        before = run(store, [settle("A1"), person("Q1"), person("Q2", NEW_PSN)])
        assert before[0]["output"]["setlinfo"]["filing_class"] == "UNFILED"
        assert before[2]["err_code"] == "E_UNKNOWN_PERSON"
        balc = before[1]["output"]["insuinfo"][0]["balc"]
        chronic_before = rows(world / "chronic.csv")[1].split(",")
        edit_world(world)
        report = reload(store, str(world))
        assert (report["persons_added"], report["persons_changed"], report["filings_added"]) == (1, 1, 1)
        assert (report["chronic_added"], report["chronic_withdrawn"]) == (1, 1)
        after = run(store, [settle("A2"), person("Q3"), person("Q4", NEW_PSN), settle("A1")])
        # The new filing counts at once; the committed settlement is untouched (its retry: the same reply).
        assert after[0]["output"]["setlinfo"]["filing_class"] == "LONG_TERM"
        assert after[3] == before[0]
        # The renamed person keeps its balance; the new person has the file's.
        assert after[1]["output"]["baseinfo"]["psn_name"] == "Renamed Person"
        assert after[1]["output"]["insuinfo"][0]["balc"] == balc
        assert Decimal(str(after[2]["output"]["insuinfo"][0]["balc"])) == Decimal("77.77")
        withdrawn = (store.engine.psn_index.get(chronic_before[0]), chronic_before[1])
        assert withdrawn not in store.engine.cd_slots
        replies = [after[1], after[2]]
        state = store.engine.person_accumulators(np.array([store.engine.psn_index.get(PSN)]))
    # A restart with the new folder: not another world, and the same state.
    with open_store(data, str(world), clock="inf_time") as store:
        again = run(store, [person("Q5"), person("Q6", NEW_PSN)])
        assert [r["output"] for r in again] == [r["output"] for r in replies]
        assert store.engine.person_accumulators(np.array([store.engine.psn_index.get(PSN)])) == state
        assert withdrawn not in store.engine.cd_slots
        assert run(store, [settle("A3")])[0]["output"]["setlinfo"]["filing_class"] == "LONG_TERM"
    lines: list[str] = []
    assert check_store(data, out=lines.append) == 0, "\n".join(lines)


def test_a_bad_world_or_one_that_drops_a_person_is_refused_and_the_old_one_kept(world_store):
    world, data = world_store
    with open_store(data, str(world), clock="inf_time") as store:
        first = run(store, [settle("B1", infno="2206")])[0]
        pol = json.loads((world / "policies.json").read_text())
        pol[0]["outpatient"]["annual_deductible"] = "-1"
        (world / "policies.json").write_text(json.dumps(pol))
        with pytest.raises(ReloadRefused, match="policies.json"):
            reload(store, str(world))
        shutil.copy(os.path.join(VECTOR_WORLD, "policies.json"), world / "policies.json")
        persons = rows(world / "persons.csv")
        named = {ln.split(",")[0] for f in ("chronic.csv", "filings.csv") for ln in rows(world / f)}
        gone = next(ln.split(",")[0] for ln in persons[1:] if ln.split(",")[0] not in named)
        (world / "persons.csv").write_text("\n".join([ln for ln in persons if not ln.startswith(gone + ",")]) + "\n")
        with pytest.raises(ReloadRefused, match=f"persons.csv lacks 1 persons this hub holds \\({gone}\\)"):
            reload(store, str(world))
        # Nothing changed: the same pre-settlement gets the same answer.
        second = run(store, [settle("B2", infno="2206")])[0]
        for k in ("hifp_pay", "filing_class", "psn_cash_pay"):
            assert second["output"]["setlinfo"][k] == first["output"]["setlinfo"][k]


def _add_institution(world) -> str:
    inst = rows(world / "institutions.csv")
    code, rest = inst[1].split(",", 1)
    added = code[:-4] + "9999"
    (world / "institutions.csv").write_text("\n".join(inst + [f"{added},{rest}"]) + "\n")
    return added


def _store_state(data: str) -> dict:
    """The store's persons (accumulators and seeds), chronic slots, filings and the slots withdrawn."""
    conn = sqlite3.connect(f"file:{os.path.join(data, DB_NAME)}?mode=ro", uri=True)
    try:
        conn.execute(f"ATTACH DATABASE 'file:{os.path.join(data, KEYS_NAME)}?mode=ro' AS keys")
        return {"person": conn.execute("SELECT * FROM keys.person ORDER BY psn").fetchall(),
                "chronic": conn.execute("SELECT * FROM keys.chronic ORDER BY slot").fetchall(),
                "filing": conn.execute("SELECT * FROM filing ORDER BY id").fetchall(),
                "meta": conn.execute("SELECT key, value FROM meta WHERE key NOT IN ('created_at', 'store_id')"
                                     " ORDER BY key").fetchall()}
    finally:
        conn.close()


def test_a_start_with_the_stores_world_plus_additions_is_a_reload(tmp_path, caplog):
    """Stopped overnight, the world folder updated (a person and an institution added, a filing, a renamed person,
    a chronic qualification added and one dropped), started again: the store takes the folder as a reload does."""
    world = tmp_path / "world"
    shutil.copytree(VECTOR_WORLD, world)
    by_reload, by_start = str(tmp_path / "by-reload"), str(tmp_path / "by-start")
    with open_store(by_reload, str(world), clock="inf_time") as store:
        first = run(store, [settle("S1"), person("S2")])
    shutil.copytree(by_reload, by_start)
    edit_world(world)
    new_inst = _add_institution(world)
    day = [settle("D1"), settle("D2", psn=NEW_PSN), person("D3", NEW_PSN), person("D4"), settle("S1")]
    # The reload path: the old folder at start (the store's), then a reload of the new one.
    old_world = tmp_path / "old-world"
    shutil.copytree(VECTOR_WORLD, old_world)
    with open_store(by_reload, str(old_world), clock="inf_time") as store:
        report = reload(store, str(world))
        assert (report["persons_added"], report["filings_added"], report["institutions_added"]) == (1, 1, 1)
    with caplog.at_level(logging.INFO, logger="yidi.store"):
        open_store(by_start, str(world), clock="inf_time").close()
    text = caplog.text
    # The same state as by the reload, and the same replies to the same requests after it.
    assert _store_state(by_start) == _store_state(by_reload)
    replies = []
    for data in (by_start, by_reload):
        with open_store(data, str(world), clock="inf_time") as store:
            replies.append(run(store, day))
    started = replies[0]
    assert replies[1] == started
    assert _store_state(by_start) == _store_state(by_reload)
    assert f"the world adds to the store's: persons.csv names 1 persons this store does not hold ({NEW_PSN})" in text
    assert f"institutions.csv adds 1 institutions ({new_inst}) and drops 0" in text
    assert "persons_added 1, persons_changed 1, chronic_added 1, chronic_withdrawn 1" in text
    assert "institutions_added 1" in text and "not applied" not in text
    # The new person settles, the new filing counts, the settlement committed before is untouched.
    assert started[1]["output"]["setlinfo"]["psn_no"] == NEW_PSN, started[1]
    assert Decimal(str(started[2]["output"]["insuinfo"][0]["balc"])) == Decimal("77.77")
    assert started[0]["output"]["setlinfo"]["filing_class"] == "LONG_TERM"
    assert started[3]["output"]["baseinfo"]["psn_name"] == "Renamed Person"
    assert started[4] == first[0]
    for data in (by_start, by_reload):
        lines: list[str] = []
        assert check_store(data, out=lines.append) == 0, "\n".join(lines)
    # Started again with the same folder: nothing left to apply.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yidi.store"):
        open_store(by_start, str(world), clock="inf_time").close()
    assert "is unchanged since the last start" in caplog.text and "reloaded the world" not in caplog.text


def test_a_start_with_a_folder_that_drops_a_person_is_refused(world_store):
    world, data = world_store
    open_store(data, str(world), clock="inf_time").close()
    edit_world(world)
    persons = rows(world / "persons.csv")
    named = {ln.split(",")[0] for f in ("chronic.csv", "filings.csv") for ln in rows(world / f)}
    gone = next(ln.split(",")[0] for ln in persons[1:] if ln.split(",")[0] not in named)
    (world / "persons.csv").write_text("\n".join([ln for ln in persons if not ln.startswith(gone + ",")]) + "\n")
    before = _store_state(data)
    with pytest.raises(StoreRefused) as refused:
        open_store(data, str(world), clock="inf_time")
    line = str(refused.value)
    assert "\n" not in line and "is not this store's" in line, line
    assert f"persons.csv names 1 persons this store does not hold ({NEW_PSN}) and lacks 1 of its" in line
    assert f"({gone})" in line and "pass --accept-world-change" in line
    assert _store_state(data) == before  # nothing written


def test_a_reload_cut_short_between_its_two_files_is_undone_at_open(world_store, monkeypatch):
    from engine.store import seed

    world, data = world_store
    real = seed._insert_filings

    def crash(w, world_):  # the main file's transaction fails after the keyed file's committed
        raise OSError("cut short")

    with open_store(data, str(world), clock="inf_time") as store:
        edit_world(world)
        monkeypatch.setattr(seed, "_insert_filings", crash)
        with pytest.raises(Exception, match="cut short"):
            reload(store, str(world))
    monkeypatch.setattr(seed, "_insert_filings", real)
    # The store is as before the reload: its world is the old one, and the edited folder is another world.
    shutil.rmtree(world)
    shutil.copytree(VECTOR_WORLD, world)
    with open_store(data, str(world), clock="inf_time") as store:
        assert run(store, [person("C1", NEW_PSN)])[0]["err_code"] == "E_UNKNOWN_PERSON"
    lines: list[str] = []
    assert check_store(data, out=lines.append) == 0, "\n".join(lines)


# ---------------------------------------------------------------- through `yidi serve`


def _serve(data: str, world: str) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--world", world, "--data", data,
                          "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--no-auth"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    addresses: dict = {}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            raise AssertionError(f"yidi serve ended: {p.stderr.read()}")
        if " listening on " in line:
            kind, rest = line.split(": ", 1)[1].split(" listening on ")
            addresses[kind] = rest.split()[0]
        if line.startswith("yidi: ready"):
            threading.Thread(target=p.stdout.read, daemon=True).start()  # keep the pipe drained
            return p, addresses
    raise AssertionError("yidi serve did not get ready in time")


def _post(url: str, body: bytes = b"") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=WAIT_S) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _call(addresses: dict, body: bytes) -> dict:
    return _post(f"http://{addresses['http']}/fsi/api/rsfComIfsService/callService", body)[1]


def _deposit_fen(addresses: dict, province: str) -> int:
    """The insured province's pre-payment deposit on the admin listener's /metrics."""
    with urllib.request.urlopen(f"http://{addresses['admin']}/metrics", timeout=WAIT_S) as r:
        text = r.read().decode()
    line = next(x for x in text.splitlines()
                if x.startswith("yidi_prepay_deposit_fen{") and f'"{province}"' in x)
    return int(float(line.rsplit(" ", 1)[1]))


def _stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGTERM)
    assert p.wait(WAIT_S) == 0


def test_yidi_serve_reloads_on_post_and_sighup_and_restarts_with_the_new_world(world_store):
    world, data = world_store
    p, addr = _serve(data, str(world))
    try:
        assert _call(addr, person("S1", NEW_PSN))["err_code"] == "E_UNKNOWN_PERSON"
        assert _deposit_fen(addr, "110000") == 922793258
        edit_world(world)
        prepay = (world / "prepay.csv").read_text().replace("110000,9227932.58", "110000,9300000.00")
        (world / "prepay.csv").write_text(prepay)
        status, report = _post(f"http://{addr['admin']}/admin/reload")
        assert status == 200 and report["parts"]["world"]["persons_added"] == 1, report
        assert _deposit_fen(addr, "110000") == 930000000  # the pre-payment monitor takes the new deposits
        assert _call(addr, person("S2", NEW_PSN))["output"]["baseinfo"]["psn_name"] == "New Person"
        # A bad world: 422 naming the file; the world in force stays.
        (world / "institutions.csv").write_text("fixmedins_code,fixmedins_name,admdvs,hosp_lv\nH1,x,999999,1\n")
        status, report = _post(f"http://{addr['admin']}/admin/reload")
        assert status == 422 and "institutions.csv" in report["parts"]["world"]["error"], report
        assert _call(addr, person("S3", NEW_PSN))["infcode"] == 0
        shutil.copy(os.path.join(VECTOR_WORLD, "institutions.csv"), world / "institutions.csv")
        # SIGHUP: the same reload (a person added again), seen by the next request.
        with open(world / "persons.csv", "a") as f:
            f.write("P43010000888888,430100199901018888,Later Person,430100,390,1601,5.00,2026,0,0,0,0,0\n")
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT_S
        while _call(addr, person(f"S4-{time.monotonic()}", "P43010000888888")).get("infcode") != 0:
            assert time.monotonic() < deadline, "the SIGHUP reload never took"
    finally:
        _stop(p)
    p, addr = _serve(data, str(world))  # the reloaded folder is the store's world now
    try:
        assert _call(addr, person("S5", "P43010000888888"))["output"]["insuinfo"][0]["balc"] == 5
    finally:
        _stop(p)


def test_no_request_sees_half_a_world(world_store):
    """Pre-settlements sent without pause while a reload changes both the person's filings and the policy:
    each reply is wholly the old world's or wholly the new one's (filing class and fund payment together)."""
    world, data = world_store
    p, addr = _serve(data, str(world))
    seen: list[tuple] = []
    stop = threading.Event()

    def hammer() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            s = _call(addr, settle(f"H{k}", infno="2206"))["output"]["setlinfo"]
            seen.append((s["filing_class"], s["hifp_pay"]))

    try:
        old = _call(addr, settle("H0", infno="2206"))["output"]["setlinfo"]
        filings = rows(world / "filings.csv")
        (world / "filings.csv").write_text("\n".join(filings + [f"{PSN},LONG_RESIDENT,110000,2026-01-01,,1"]) + "\n")
        pol = json.loads((world / "policies.json").read_text())
        for x in pol:
            if (x["insuplc_admdvs"], x["insutype"]) == ("430100", "390"):
                x["outpatient"]["ratio"]["1"] = "0.9000"
        (world / "policies.json").write_text(json.dumps(pol))
        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + WAIT_S
        while len(seen) < 20:  # polled with a deadline
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _post(f"http://{addr['admin']}/admin/reload")[0] == 200
        n = len(seen)
        while len(seen) < n + 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(WAIT_S)
        new = _call(addr, settle("H-new", infno="2206"))["output"]["setlinfo"]
    finally:
        stop.set()
        _stop(p)
    before, after = (old["filing_class"], old["hifp_pay"]), (new["filing_class"], new["hifp_pay"])
    assert before[0] == "UNFILED" and after[0] == "LONG_TERM" and before[1] != after[1]
    assert set(seen) == {before, after}, set(seen)


def test_the_status_of_the_world_in_force(world_store):
    """WorldSource.status: when the world in force was loaded, its version, what its last reload changed."""
    world, data = world_store
    with open_store(data, str(world), clock="inf_time") as store:
        source = WorldSource(_hub(store), str(world))
        first = source.status()
        assert first["changes"] == {} and len(first["version"]) == 12
        edit_world(world)
        source.apply(source.load())
        now = source.status()
        assert now["version"] != first["version"] and now["loaded_at"] >= first["loaded_at"]
        assert now["changes"]["persons_added"] == 1 and now["changes"]["filings_added"] == 1
