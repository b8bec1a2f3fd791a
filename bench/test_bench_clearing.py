"""Clearing benchmark: `yidi clear` of a synthetic national day kept in a store (docs/contract.md section 8).

At YIDI_BENCH_SCALE=1, 130,000 requests of one day (engine.tools.synth) on 31
provinces are replayed into a kept store (`yidi replay --data`, not timed),
then the period is closed: the first close, then closing again, which must
write the same bytes. Pre-payment usage is timed as the server's gauges read it
(one full sum of the journal). The same code paths as production: engine.clearing.

    YIDI_BENCH_SCALE=1 pytest bench/test_bench_clearing.py --benchmark-enable -o addopts=""
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from engine.clearing import clearing

SCALE = float(os.environ.get("YIDI_BENCH_SCALE", "0.01"))
N_REQUESTS = max(500, int(130_000 * SCALE))
CAT_PER_PROVINCE = max(500, int(20_000 * SCALE))
PERSONS = max(5_000, int(1_000_000 * SCALE))
DAY = "2026-11-20"
PERIOD = DAY[:7]


@pytest.fixture(scope="module")
def day_store(tmp_path_factory):
    from engine.tools import synth

    d = tmp_path_factory.mktemp("clearing")
    world = str(d / "world")
    synth.gen_world(world, seed=11, provinces=31, catalogue_per_province=CAT_PER_PROVINCE, persons=PERSONS)
    reqs = str(d / "requests.jsonl")
    synth.write_requests_jsonl(reqs, synth.gen_requests(world, N_REQUESTS, seed=11, start=DAY))
    subprocess.run([sys.executable, "-m", "engine.cli", "replay", "--world", world, "--in", reqs,
                    "--out", str(d / "replies.jsonl"), "--data", str(d / "data")], check=True, capture_output=True)
    return d, world


def _rows(data: str) -> int:
    conn = sqlite3.connect(f"file:{os.path.join(data, 'yidi.sqlite3')}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM journal").fetchall()[0][0]
    finally:
        conn.close()


@pytest.mark.benchmark(group="clearing: a day in a kept store")
def test_clear_first_close(benchmark, day_store):
    d, _ = day_store
    n = [0]

    def setup():
        n[0] += 1
        data = str(d / f"first{n[0]}")
        shutil.copytree(d / "data", data)
        return (data, PERIOD, str(d / f"out{n[0]}")), {}

    benchmark.pedantic(clearing.clear, setup=setup, rounds=3, warmup_rounds=0)
    benchmark.extra_info["journal_rows"] = _rows(str(d / "data"))
    first = open(d / "out1" / f"statement-{PERIOD}.csv", "rb").read()
    assert first.count(b"\n") > 1
    # Every round closed its own copy of the store: the same bytes each time.
    assert all(open(d / f"out{k}" / f"statement-{PERIOD}.csv", "rb").read() == first for k in range(2, n[0] + 1))


@pytest.mark.benchmark(group="clearing: a day in a kept store")
def test_clear_again(benchmark, day_store):
    d, _ = day_store
    data = str(d / "again")
    shutil.copytree(d / "data", data)
    r = clearing.clear(data, PERIOD, str(d / "again-0"))
    assert r.closing.new
    out = benchmark.pedantic(clearing.clear, args=(data, PERIOD, str(d / "again-1")), rounds=3, warmup_rounds=0)
    assert not out.closing.new
    for name in os.listdir(d / "again-0"):
        assert open(d / "again-0" / name, "rb").read() == open(d / "again-1" / name, "rb").read()


@pytest.mark.benchmark(group="clearing: pre-payment usage")
def test_prepay_full_sum(benchmark, day_store):
    d, world = day_store
    prepay = clearing.load_prepay(world)

    def once():
        m = clearing.PrepayMonitor(str(d / "data"), prepay)
        try:
            return m.refresh()
        finally:
            m.close()

    rows = benchmark.pedantic(once, rounds=3, warmup_rounds=0)
    assert sum(u.used_fen for u in rows) > 0
