"""Kernel benchmark, the DuckDB peer: the same lines and catalogue as bench/test_bench_kernel.py, in SQL.

The lines (codes as the decoder's str objects, exact integers) go into DuckDB
through Arrow, are joined to the catalogue on the code and the day, and the four
per-line amounts of docs/contract.md section 3 are computed in integer SQL
arithmetic. The result is checked against the compiled kernel's, line by line.
Same group as the other peers, so pytest-benchmark prints them side by side.

    YIDI_BENCH_SCALE=1 pytest bench/test_bench_kernel.py bench/test_bench_kernel_duckdb.py \\
        --benchmark-enable -o addopts=""
"""
from __future__ import annotations

import atexit
import gc
import os
import sys

import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_bench_kernel import N_LINES, compiled, data  # noqa: E402,F401  (data: the shared fixture)

duckdb = pytest.importorskip("duckdb")
# engine.core.engine freezes the collector's objects after a world load; frozen objects are not
# collected at shutdown, and DuckDB's nanobind module then reports its own module-level
# objects as leaked ("nanobind: leaked 27 instances!"). Unfreeze on the way out.
atexit.register(gc.unfreeze)

SQL = """
WITH m AS (
    SELECT l.i, l.amt, c.lv, c.selfpay,
           (c.lv IS NOT NULL AND c.lv <> 3) AS in_scope,
           CASE WHEN c.lv IS NOT NULL AND c.lv <> 3 AND c.cap >= 0 AND l.pric > c.cap
                THEN least(l.amt, ((l.pric - c.cap)::HUGEINT * l.cnt + 50000000) // 100000000)
                ELSE 0 END::BIGINT AS over
    FROM lines l LEFT JOIN cat c ON c.code = l.code AND c.begn <= l.day AND l.day <= c."end"
)
SELECT i,
       CASE WHEN in_scope THEN 0 ELSE amt END AS fulamt,
       over,
       CASE WHEN in_scope AND lv = 2 THEN ((amt - over) * selfpay + 5000) // 10000 ELSE 0 END AS presel
FROM m ORDER BY i
"""


def duckdb_peer(d):
    w = d["w"]
    con = duckdb.connect()
    con.execute("SET threads = 2")
    cat = pa.table({
        "code": w.cat_code, "lv": pa.array(w.cat_lv.astype(np.int64)),
        "selfpay": pa.array(w.cat_selfpay_bp.astype(np.int64)), "cap": pa.array(w.cat_cap_micro.astype(np.int64)),
        "begn": pa.array(w.cat_begn.astype(np.int64)), "end": pa.array(w.cat_end.astype(np.int64)),
    })
    con.register("cat", cat)

    def run():
        lines = pa.table({
            "i": pa.array(np.arange(len(d["codes"]), dtype=np.int64)),
            "code": pa.array(d["codes"], pa.string()),  # from the decoder's str objects
            "pric": d["pric"], "cnt": d["cnt"], "amt": d["amt"], "day": d["day"].astype(np.int64),
        })
        con.register("lines", lines)
        out = con.execute(SQL).fetchnumpy()  # a dict of NumPy columns, in DuckDB 1.x and 2.x
        con.unregister("lines")
        return out

    return run, con


@pytest.mark.benchmark(group="kernel: match + split of fee lines")
def test_duckdb(benchmark, data):  # noqa: F811
    run, con = duckdb_peer(data)
    try:
        out = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    finally:
        con.close()  # a connection left to interpreter exit makes nanobind report leaks
    s = compiled(data)
    fulamt, over, presel = (np.asarray(out[k], dtype=np.int64) for k in ("fulamt", "over", "presel"))
    inscp = data["amt"] - fulamt - over - presel
    assert over.tolist() == s.overlmt_fen.tolist()
    assert presel.tolist() == s.presel_fen.tolist()
    assert inscp.tolist() == s.inscp_fen.tolist()
    benchmark.extra_info["lines"] = N_LINES
