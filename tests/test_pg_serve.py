"""Two `yidi serve` processes on one PostgreSQL database (docs/contract.md section 13), as real processes.

The public requests are sent at once, half to each node: settlements, reversals and pre-settlements of the same
persons reach both. Then `yidi check --store` proves the ledger and every person's accumulators against the
journal in its one commit order, and every committed request, retried on the other node than its first, is
answered with its stored reply; nothing is charged twice.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

from conftest import ROOT
from engine.hub.client import FramedClient
from engine.store.check import check_store
from pg_fixtures import pg_url  # noqa: F401  (a fixture)
from test_server import start_serve

WAIT_S = 60
JOURNALED = ("2207", "2304", "2208", "2305")


def start_node(url: str, lease_ms: int = 0) -> tuple[subprocess.Popen, dict]:
    """`yidi serve --store URL` on the vectors' world, --no-auth, every listener on a free port; `lease_ms`:
    --store-lease-ms (docs/store.md, "The lease")."""
    return start_serve(url, "uvloop", "--no-auth", "--store-lease-ms", str(lease_ms))


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(WAIT_S)


@pytest.mark.parametrize("lease_ms", [0, 10])
def test_two_serve_processes_on_one_database(pg_url, vectors, lease_ms):
    reqs, _ = vectors
    a, addr_a = start_node(pg_url, lease_ms)
    try:
        b, addr_b = start_node(pg_url, lease_ms)
        try:
            halves = [reqs[0::2], reqs[1::2]]
            got: list = [None, None]

            def send(k: int, addr) -> None:
                with FramedClient(*addr, timeout_s=WAIT_S) as c:
                    got[k] = c.pipeline(halves[k], window=32)

            threads = [threading.Thread(target=send, args=(k, ad["tcp"])) for k, ad in enumerate((addr_a, addr_b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(WAIT_S * 2)
            assert got[0] is not None and got[1] is not None
            assert all(r.get("err_code") != "E_BUSY" for h in got for r in h)
            # Every committed request again, on the other node: its stored reply, nothing new.
            retried: list = [None, None]
            for k, addr in ((0, addr_b), (1, addr_a)):
                with FramedClient(*addr["tcp"], timeout_s=WAIT_S) as c:
                    retried[k] = c.pipeline(halves[k], window=32)
        finally:
            stop(b)
    finally:
        stop(a)
    committed = set()  # a msgid the stream retries is committed once
    for k in (0, 1):
        for env, first, again in zip(halves[k], got[k], retried[k]):
            if env.get("infno") not in JOURNALED:
                continue
            if first["infcode"] == 0:
                assert again == first, env["msgid"]
            if first["infcode"] == 0 or again["infcode"] == 0:  # a reversal may find its settlement only now
                committed.add(env["msgid"])
    assert len(committed) > 150
    lines: list[str] = []
    assert check_store(pg_url, out=lines.append) == 0, "\n".join(lines)
    n_rows = int(re.search(r"(\d+) journal rows", "\n".join(lines)).group(1))
    assert n_rows == len(committed), (n_rows, len(committed))


def test_demo_on_a_postgresql_database(pg_url, tmp_path):
    """`yidi demo --store URL`: the day served on the database, which is kept; `yidi check --store` passes and
    its journal holds the settlements the summary counts."""
    import json

    r = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--scale", "0.002", "--provinces", "3",
                        "--catalogue", "500", "--persons", "3000", "--cache", str(tmp_path / "cache"),
                        "--report", str(tmp_path / "report"), "--store", pg_url, "--no-progress"],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Store kept in postgresql://" in r.stdout
    summary = json.load(open(tmp_path / "report" / "summary.json"))
    lines: list[str] = []
    assert check_store(pg_url, out=lines.append) == 0, "\n".join(lines)
    n_rows = int(re.search(r"(\d+) journal rows \((\d+) settlements", "\n".join(lines)).group(2))
    assert n_rows >= summary["counts"]["settlements"] > 0
