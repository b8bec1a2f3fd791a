"""Replay benchmark: `yidi replay` (compiled) vs `yidi replay --reference`, world load included.

A mixed stream of 20,000 requests at YIDI_BENCH_SCALE=1 (85 % outpatient with
1-30 lines, 15 % inpatient with ~60 lines median, retries, reversals, person
queries, a few malformed) from engine.tools.synth, on a synthetic world of 31
provinces. Both run as real `yidi replay` processes, so start-up and world
loading count; both outputs must agree line for line.

    YIDI_BENCH_SCALE=1 pytest bench/test_bench_replay.py --benchmark-enable -o addopts=""
"""
from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

SCALE = float(os.environ.get("YIDI_BENCH_SCALE", "0.02"))
N_REQUESTS = max(200, int(20_000 * SCALE))
CAT_PER_PROVINCE = max(500, int(5_000 * SCALE))
PERSONS = max(2_000, int(50_000 * SCALE))


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    from engine.tools import synth

    d = tmp_path_factory.mktemp("replay")
    world = str(d / "world")
    synth.gen_world(world, seed=11, provinces=31, catalogue_per_province=CAT_PER_PROVINCE, persons=PERSONS)
    reqs = str(d / "requests.jsonl")
    synth.write_requests_jsonl(reqs, synth.gen_requests(world, N_REQUESTS, seed=11))
    return world, reqs, d


def _replay(world, reqs, out, *extra):
    subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", "--world", world, "--in", reqs, "--out", out, *extra],
        check=True, capture_output=True,
    )


def _replies(path):
    out = []
    with open(path, "rb") as f:
        for line in f:
            r = orjson.loads(line)
            r.pop("err_msg", None)
            out.append(r)
    return out


@pytest.mark.benchmark(group="replay: mixed stream, world load included")
def test_replay_compiled(benchmark, stream):
    world, reqs, d = stream
    out = str(d / "compiled.jsonl")
    benchmark.pedantic(_replay, args=(world, reqs, out), rounds=3, warmup_rounds=0)
    benchmark.extra_info["requests"] = N_REQUESTS
    assert len(_replies(out)) == N_REQUESTS


@pytest.mark.benchmark(group="replay: mixed stream, world load included")
def test_replay_reference(benchmark, stream):
    world, reqs, d = stream
    out = str(d / "reference.jsonl")
    benchmark.pedantic(_replay, args=(world, reqs, out, "--reference"), rounds=1, warmup_rounds=0)
    benchmark.extra_info["requests"] = N_REQUESTS
    compiled = str(d / "compiled-check.jsonl")
    _replay(world, reqs, compiled)
    a, b = _replies(compiled), _replies(out)
    assert len(a) == len(b) == N_REQUESTS
    assert a == b


@pytest.mark.benchmark(group="replay: compiled and reference back to back")
def test_replay_interleaved(benchmark, stream):
    """Each round runs the compiled replay and then the reference one, and keeps their ratio.

    On a shared machine a burst of someone else's work can land on the rounds of
    one side only; a pair measured back to back sees the same machine.
    """
    import time

    world, reqs, d = stream
    pairs: list[tuple[float, float]] = []

    def pair():
        t0 = time.perf_counter()
        _replay(world, reqs, str(d / "pair-compiled.jsonl"))
        t1 = time.perf_counter()
        _replay(world, reqs, str(d / "pair-reference.jsonl"), "--reference")
        pairs.append((t1 - t0, time.perf_counter() - t1))

    benchmark.pedantic(pair, rounds=2, warmup_rounds=0)
    ratios = [r / c for c, r in pairs]
    benchmark.extra_info["requests"] = N_REQUESTS
    benchmark.extra_info["pairs_s"] = [[round(c, 3), round(r, 3)] for c, r in pairs]
    benchmark.extra_info["ratios"] = [round(x, 2) for x in ratios]
    assert _replies(str(d / "pair-compiled.jsonl")) == _replies(str(d / "pair-reference.jsonl"))
