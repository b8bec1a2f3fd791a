"""The public conformance vectors (tests/vectors), through the CLI, for both paths: the one-shot
stream and the step-wise one (tests/vectors/stepwise, section 11)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import VECTOR_WORLD, VECTORS, differences
from pg_fixtures import STORES, store_at, store_flag


STEPWISE = os.path.join(VECTORS, "stepwise")


def _replay(tmp_path, *extra, folder=VECTORS):
    out = tmp_path / "replies.jsonl"
    cmd = [sys.executable, "-m", "engine.cli", "replay", "--world", VECTOR_WORLD,
           "--in", os.path.join(folder, "requests.jsonl"), "--out", str(out), *extra]
    subprocess.run(cmd, check=True, capture_output=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


def _assert_agree(expected: list[dict], got: list[dict]) -> None:
    bad = {}
    for i, (e, g) in enumerate(zip(expected, got)):
        d = differences(e, g)
        if d:
            bad[i] = d[:3]
    assert not bad, f"{len(bad)} replies differ, first: {list(bad.items())[:5]}"


# The compiled engine in RAM, the reference, and the compiled engine on each durable store (pg_fixtures.STORES).
PATHS = ["compiled", "reference", *STORES]


def _replay_path(tmp_path, path: str, folder: str = VECTORS) -> list[dict]:
    if path in STORES:
        with store_at(path, tmp_path) as where:
            return _replay(tmp_path, *store_flag(where), folder=folder)
    return _replay(tmp_path, *(["--reference"] if path == "reference" else []), folder=folder)


@pytest.mark.parametrize("path", PATHS)
def test_public_vectors(tmp_path, path):
    got = _replay_path(tmp_path, path)
    expected = [json.loads(line) for line in open(os.path.join(VECTORS, "expected.jsonl"))]
    assert len(got) == len(expected) == 442
    _assert_agree(expected, got)


@pytest.mark.parametrize("path", PATHS)
def test_stepwise_vectors(tmp_path, path):
    """Section 11: the public stream sent step-wise, then cases of the visit states and of 2601."""
    got = _replay_path(tmp_path, path, folder=STEPWISE)
    expected = [json.loads(line) for line in open(os.path.join(STEPWISE, "expected.jsonl"))]
    assert len(got) == len(expected) == 1201
    assert sum(e["infcode"] == 0 for e in expected) == 1036
    _assert_agree(expected, got)


def test_compiled_equals_reference_on_every_field(tmp_path):
    """Beyond the listed fields: the two paths agree on everything they answer."""
    a = _replay(tmp_path)
    b = _replay(tmp_path, "--reference")
    for i, (x, y) in enumerate(zip(a, b)):
        for r in (x, y):
            r.pop("err_msg", None)
        assert x == y, f"reply {i} differs"
