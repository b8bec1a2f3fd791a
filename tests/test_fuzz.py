"""The fuzz campaigns of bench/fuzz.py, run small: no input crashes a decoder or changes state when refused.

The full campaigns (1,000,000 inputs each) are `python bench/fuzz.py --target T --runs 1000000`.
"""
from __future__ import annotations

import os
import subprocess
import sys

import msgspec
import pytest

from conftest import ROOT

from engine.contract.wire import JSON, MSGPACK

pytest.importorskip("atheris")

RUNS = int(os.environ.get("YIDI_FUZZ_RUNS", "20000"))


@pytest.mark.parametrize("target", ["envelope", "feedetail"])
def test_fuzz_campaign_small(target, tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "fuzz.py"), "--target", target, "--runs",
                        str(RUNS)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f": {RUNS} inputs, 0 failures" in r.stdout
    assert not list(tmp_path.glob("crash-*"))


def test_canonical_input_of_what_json_cannot_say():
    # A retry's input is compared in a canonical form; MessagePack can hold map
    # keys of mixed types and binary values, which have none: they compare
    # equal to nothing (a reused msgid), never an exception.
    same = {"data": {"psn_no": "P1", "n": 1}}
    assert JSON.canonical_input(msgspec.Raw(msgspec.json.encode(same))) == \
        MSGPACK.canonical_input(msgspec.Raw(msgspec.msgpack.encode(same)))
    for odd in ({"data": {1: "a", "b": 2}}, {"data": b"\x00\x01"}, {"data": {(1, 2): 3}}):
        try:
            raw = msgspec.msgpack.encode(odd)
        except TypeError:
            continue
        assert MSGPACK.canonical_input(msgspec.Raw(raw)) is None
