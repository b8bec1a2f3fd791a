import os
from decimal import Decimal, InvalidOperation

import orjson
import pytest
from hypothesis import HealthCheck, settings

# Shared machines are noisy: a deadline would fail tests on timing, not on answers.
settings.register_profile("yidi", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("yidi")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The public conformance vectors and clearing files, copied into the repository
# (tests/vectors/README.md says where they come from and what they hold).
VECTORS = os.path.join(ROOT, "tests", "vectors")
VECTOR_WORLD = os.path.join(VECTORS, "world")


def numeric(v):
    """Money and ratios compare numerically: '0.5000' == '0.50' == 0.5 (expected.jsonl rule)."""
    if isinstance(v, bool) or v is None:
        return v
    try:
        return Decimal(str(v))
    except (InvalidOperation, ValueError):
        return v


def differences(expected, got, path=""):
    """Every field listed in `expected` must be in `got` with the same (numeric) value."""
    out = []
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [f"{path}: want an object, got {got!r}"]
        for k, v in expected.items():
            if k not in got:
                out.append(f"{path}/{k}: missing")
            else:
                out += differences(v, got[k], f"{path}/{k}")
    elif isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return [f"{path}: want a list of {len(expected)}, got {got!r:.80}"]
        for i, (a, b) in enumerate(zip(expected, got)):
            out += differences(a, b, f"{path}[{i}]")
    elif numeric(expected) != numeric(got):
        out.append(f"{path}: want {expected!r}, got {got!r}")
    return out


# The synthetic world that the synth tests draw their streams from (engine.tools.synth).
SYNTH_SMALL = dict(provinces=6, regions_per_province=3, catalogue_per_province=3000, persons=6000,
                   missing_policies=2)


@pytest.fixture(scope="session")
def synth_world_dir(tmp_path_factory) -> str:
    from engine.tools.synth import gen_world

    d = str(tmp_path_factory.mktemp("synth") / "world")
    gen_world(d, seed=7, **SYNTH_SMALL)
    return d


@pytest.fixture(scope="session")
def synth_world(synth_world_dir):
    from engine.world.loader import load_world

    return load_world(synth_world_dir)


@pytest.fixture(scope="session")
def vector_world():
    from engine.world.loader import load_world

    return load_world(VECTOR_WORLD)


def vector_bodies(folder: str) -> list[bytes]:
    """The request bodies of a vectors folder's requests.jsonl, one a line, as sent."""
    with open(os.path.join(folder, "requests.jsonl"), "rb") as f:
        return [line.rstrip(b"\n") for line in f]


def vector_replies(folder: str) -> list[dict]:
    """The expected replies of a vectors folder's expected.jsonl, decoded."""
    with open(os.path.join(folder, "expected.jsonl"), "rb") as f:
        return [orjson.loads(line) for line in f]


def replay_with_store(folder: str, tmp_path) -> tuple[list[dict], str]:
    """`yidi replay --data` of a vectors folder's requests.jsonl on the vectors' world: the replies, decoded,
    and the store's folder."""
    import subprocess
    import sys

    out, data = tmp_path / "replies.jsonl", tmp_path / "data"
    subprocess.run([sys.executable, "-m", "engine.cli", "replay", "--world", VECTOR_WORLD, "--in",
                    os.path.join(folder, "requests.jsonl"), "--out", str(out), "--data", str(data)],
                   check=True, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    with open(out, "rb") as f:
        return [orjson.loads(line) for line in f], str(data)


def assert_replay_agrees_and_checks(folder: str, tmp_path, disagreements) -> None:
    """`yidi replay --data` of a vectors folder: `disagreements(replies)` (index -> differences) finds none, and
    `yidi check` then proves the store."""
    from engine.store.check import check_store

    got, data = replay_with_store(folder, tmp_path)
    bad = disagreements(got)
    assert not bad, f"{len(bad)} replies differ, first: {list(bad.items())[:5]}"
    lines: list[str] = []
    assert check_store(data, lines.append) == 0, "\n".join(lines)


# The event loops the hub's tests run on, one test body each (uvloop's way).
LOOPS = ["uvloop", "asyncio"]


@pytest.fixture(scope="session")
def vectors():
    """The conformance requests and their expected replies, as decoded JSON."""
    with open(os.path.join(VECTORS, "requests.jsonl"), "rb") as f:
        reqs = [orjson.loads(line) for line in f if line.strip()]
    with open(os.path.join(VECTORS, "expected.jsonl"), "rb") as f:
        exp = [orjson.loads(line) for line in f if line.strip()]
    return reqs, exp


@pytest.fixture(params=LOOPS)
def loop_kind(request):
    return request.param
