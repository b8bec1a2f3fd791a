"""Section 12 on the public vectors: `yidi replay --maintenance` through the compiled engine and the reference.

The vectors' world and both public streams (one-shot and step-wise), replayed
with tests/maintenance/windows.csv: windows over a province, cities, a window
that ends as the day's requests arrive and one over a day with no request. The
clock is each request's inf_time. The two paths must give the same replies;
E_MAINTENANCE exactly where a window covers the person's insured region at the
request's time and its infno charges or queries the person, never elsewhere;
and a refusal changes nothing: the stream without the refused requests,
replayed with no window, answers every other request the same.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, VECTOR_WORLD, VECTORS
from engine.contract.protocol import region_covers
from engine.core.maintenance import read_schedule
from test_differential import first_difference

WINDOWS = os.path.join(ROOT, "tests", "maintenance", "windows.csv")
# What a window holds back (docs/contract.md, section 12's choices): charges and queries of the person.
HELD = {"1101", "2206", "2207", "2303", "2304", "2201", "2401"}
# Checks that rank before the window's: their refusal stands during a window.
EARLIER = {"E_SCHEMA", "E_LIMIT", "E_UNSUPPORTED", "E_UNKNOWN_INSTITUTION", "E_FORBIDDEN", "E_UNKNOWN_PERSON",
           "E_MISMATCH", "E_MSGID_REUSED", "E_VOIDED"}
STREAMS = {"oneshot": VECTORS, "stepwise": os.path.join(VECTORS, "stepwise")}
# E_MAINTENANCE replies of each stream with tests/maintenance/windows.csv (what the predicate below
# demands, pinned so that a schedule or stream that covers nothing cannot pass unnoticed).
REFUSED = {"oneshot": 46, "stepwise": 96}


def replay(tmp_path, requests: str, name: str, *extra: str) -> list[dict]:
    out = tmp_path / f"{name}-replies.jsonl"
    cmd = [sys.executable, "-m", "engine.cli", "replay", "--world", VECTOR_WORLD, "--in", requests,
           "--out", str(out), *extra]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    return [json.loads(line) for line in out.read_text().splitlines()]


def insured_regions() -> dict[str, str]:
    """psn_no and certno -> insured region, from the vectors' persons.csv."""
    out = {}
    with open(os.path.join(VECTOR_WORLD, "persons.csv"), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out[row["psn_no"]] = out.setdefault(row["certno"], row["insuplc_admdvs"])
    return out


def held_back(env: object, windows, regions: dict[str, str]) -> bool:
    """Whether a window covers the request's person at its inf_time and its infno is one a window holds."""
    if not isinstance(env, dict) or env.get("infno") not in HELD or not isinstance(env.get("inf_time"), str):
        return False
    region = env.get("insuplc_admdvs")
    if env["infno"] == "1101":
        region = regions.get(((env.get("input") or {}).get("data") or {}).get("mdtrt_cert_no"))
    now = env["inf_time"]
    return isinstance(region, str) and any(w.begin <= now < w.end and region_covers(w.admdvs, region)
                                           for w in windows)


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_vectors_with_maintenance_windows(tmp_path, stream):
    requests = os.path.join(STREAMS[stream], "requests.jsonl")
    compiled = replay(tmp_path, requests, "compiled", "--maintenance", WINDOWS)
    reference = replay(tmp_path, requests, "reference", "--maintenance", WINDOWS, "--reference")
    plain = replay(tmp_path, requests, "plain")  # no window: the public replies
    lines = open(requests, encoding="utf-8").read().splitlines()
    envs = []
    for line in lines:
        try:
            envs.append(json.loads(line))
        except ValueError:
            envs.append(None)
    assert len(compiled) == len(reference) == len(plain) == len(envs)

    for i, (x, y) in enumerate(zip(compiled, reference)):
        if x.get("err_code") != "E_MAINTENANCE":
            x, y = dict(x, err_msg=None), dict(y, err_msg=None)
        assert x == y, f"reply {i} differs at {first_difference(x, y)}"

    windows = read_schedule(WINDOWS).windows
    regions = insured_regions()
    first_reply: dict[str, dict] = {}
    refused = []
    for i, (env, got, was) in enumerate(zip(envs, compiled, plain)):
        code = got.get("err_code")
        if held_back(env, windows, regions):
            # Refused, or refused before the window by a check that ranks earlier, or the stored
            # reply of a msgid committed before the window.
            stored = isinstance(env, dict) and first_reply.get(env.get("msgid")) == got and got["infcode"] == 0
            assert code == "E_MAINTENANCE" or (code in EARLIER and code == was.get("err_code")) or stored, \
                (i, env.get("infno"), env.get("inf_time"), got)
        else:
            assert code != "E_MAINTENANCE", (i, got)
        if code == "E_MAINTENANCE":
            refused.append(i)
            assert got["err_msg"].startswith("the platform of insured region ") and " until 2026-" in got["err_msg"]
        if isinstance(env, dict) and isinstance(env.get("msgid"), str) and got["infcode"] == 0:
            first_reply.setdefault(env["msgid"], got)
    assert len(refused) == REFUSED[stream]
    # Reversals, reconciliation and 2601 ran inside the windows as elsewhere: none of them was refused.
    assert any(envs[i].get("infno") in ("2208", "2305") and held_window(envs[i], windows) for i in
               range(len(envs)) if isinstance(envs[i], dict))

    # A refusal changed nothing: without the refused requests and without windows, the rest is the same.
    kept = tmp_path / "kept.jsonl"
    kept.write_text("".join(line + "\n" for i, line in enumerate(lines) if i not in set(refused)), encoding="utf-8")
    again = replay(tmp_path, str(kept), "kept")
    rest = [r for i, r in enumerate(compiled) if i not in set(refused)]
    assert len(again) == len(rest)
    for k, (x, y) in enumerate(zip(rest, again)):
        assert x == y, f"kept reply {k} differs at {first_difference(x, y)}"


def held_window(env: dict, windows) -> bool:
    """A request sent while a window covered its envelope's insured region."""
    now, region = env.get("inf_time"), env.get("insuplc_admdvs")
    return isinstance(now, str) and isinstance(region, str) and any(
        w.begin <= now < w.end and region_covers(w.admdvs, region) for w in windows)


def test_replay_refuses_a_bad_maintenance_file_in_one_line(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("admdvs,begin,end,reason\n430000,2026-03-02 08:00:00,2026-03-02 07:00:00,x\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    p = subprocess.run([sys.executable, "-m", "engine.cli", "replay", "--world", VECTOR_WORLD, "--in",
                        os.path.join(VECTORS, "requests.jsonl"), "--out", str(out), "--maintenance", str(bad),
                        "--data", str(tmp_path / "data")], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"yidi: --maintenance {bad}:2: end: 2026-03-02 07:00:00 is not after begin " \
                       "2026-03-02 08:00:00\n"
    assert not os.path.exists(tmp_path / "data")  # refused before the store was made
