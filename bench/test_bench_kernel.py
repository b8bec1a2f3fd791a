"""Kernel benchmark: match + split of fee lines, compiled vs the reference vs Polars, side by side.

1,000,000 fee lines (at YIDI_BENCH_SCALE=1) against a 200,000-entry catalogue,
codes drawn Zipf(1.1). Every peer starts from the decoded lines: the codes are
the str objects msgspec produced, the numbers already exact integers, and ends
with the four per-line amounts of section 3. The reference and Polars peers are
checked against the compiled result, so a fast wrong answer cannot pass.

    YIDI_BENCH_SCALE=1 pytest bench/test_bench_kernel.py --benchmark-enable -o addopts=""
"""
from __future__ import annotations

import os

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from engine.core import kernels
from engine.reference.rules import Entry, split_line

SCALE = float(os.environ.get("YIDI_BENCH_SCALE", "0.02"))
N_LINES = max(2_000, int(1_000_000 * SCALE))
N_CAT = max(1_000, int(200_000 * SCALE))
ZIPF_A = 1.1
PROV = 44
DAY = 20_000  # 2024-10-04


class _W:
    """Just the catalogue columns of a world that kernels.Catalogue reads."""


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)
    raw = alphabet[rng.integers(0, len(alphabet), size=(N_CAT, 22))]
    raw = np.concatenate([np.full((N_CAT, 1), ord("X"), np.uint8), raw], axis=1)
    codes = np.unique(raw.view("S23").ravel())
    n_cat = len(codes)
    w = _W()
    w.cat_prov = np.full(n_cat, PROV, np.int16)
    w.cat_code = pa.array([c.decode() for c in codes], pa.string())
    w.cat_lv = rng.choice(np.array([1, 2, 3], np.int8), size=n_cat, p=[0.45, 0.45, 0.10])
    w.cat_selfpay_bp = np.where(w.cat_lv == 2, rng.integers(500, 3001, n_cat), 0).astype(np.int32)
    w.cat_cap_micro = np.where(rng.random(n_cat) < 0.3, rng.integers(1, 500, n_cat) * 1_000_000, -1)
    w.cat_lmt = (rng.random(n_cat) < 0.05).astype(np.int8)
    w.cat_begn = np.zeros(n_cat, np.int32)
    w.cat_end = np.full(n_cat, 2**31 - 1, np.int32)
    cat = kernels.Catalogue(w)

    # Zipf(1.1) ranks over the catalogue, plus 1 % codes that are in no catalogue.
    ranks = rng.zipf(ZIPF_A, size=N_LINES * 2)
    ranks = ranks[ranks <= n_cat][:N_LINES] - 1
    perm = rng.permutation(n_cat)
    line_codes = [w.cat_code[int(perm[r])].as_py() for r in ranks[: min(len(ranks), 50_000)]]
    line_codes = (line_codes * (N_LINES // len(line_codes) + 1))[:N_LINES]
    for i in rng.integers(0, N_LINES, N_LINES // 100):
        line_codes[int(i)] = "Z" + line_codes[int(i)][1:]
    decoded = msgspec.json.decode(msgspec.json.encode(line_codes))  # the decoder's own str objects
    pric = rng.integers(1, 2_000_000_000, N_LINES).astype(np.int64)  # up to 2,000 yuan
    cnt = rng.integers(1, 200_000, N_LINES).astype(np.int64)  # up to 20 units
    amt = ((pric * cnt + 50_000_000) // 100_000_000).astype(np.int64)
    day = np.full(N_LINES, DAY, np.int32)
    return dict(cat=cat, w=w, codes=decoded, pric=pric, cnt=cnt, amt=amt, day=day)


def compiled(d):
    n = len(d["codes"])
    row = d["cat"].match(d["codes"], np.full(n, PROV, np.int16), d["day"])
    lines = kernels.Lines(d["codes"], None, d["amt"], d["cnt"], d["pric"], d["day"], np.zeros(n, np.uint8), 0)
    starts = np.array([0, n], np.int64)
    return kernels.split_lines(d["cat"], starts, np.zeros(1, np.uint8), row, lines)


def reference(d, n):
    """The oracle's own code: a dict lookup and engine.reference.oracle.split_line per line."""
    w = d["w"]
    catalogue = {}
    for i, code in enumerate(w.cat_code.to_pylist()):
        cap = int(w.cat_cap_micro[i])
        catalogue[(PROV, code)] = [Entry(int(w.cat_lv[i]), int(w.cat_selfpay_bp[i]), None if cap < 0 else cap,
                                         int(w.cat_lmt[i]), int(w.cat_begn[i]), int(w.cat_end[i]))]
    codes, pric, cnt, amt = d["codes"], d["pric"].tolist(), d["cnt"].tolist(), d["amt"].tolist()

    def run():
        out = []
        for i in range(n):
            e = next((e for e in catalogue.get((PROV, codes[i]), ()) if e.begn <= DAY <= e.end), None)
            out.append(split_line(amt[i], pric[i], cnt[i], e, False))
        return out

    return run


def polars_peer(d):
    import polars as pl

    w = d["w"]
    cat = pl.DataFrame({
        "code": pl.Series(w.cat_code.to_pylist(), dtype=pl.Utf8),
        "lv": w.cat_lv, "selfpay": w.cat_selfpay_bp.astype(np.int64), "cap": w.cat_cap_micro,
        "lmt": w.cat_lmt, "begn": w.cat_begn, "end": w.cat_end,
    })

    def run():
        lines = pl.DataFrame({
            "code": pl.Series(d["codes"], dtype=pl.Utf8),  # from the decoder's str objects
            "pric": d["pric"], "cnt": d["cnt"], "amt": d["amt"], "day": d["day"],
        }).with_row_index("i")
        m = lines.join(cat, on="code", how="left").filter(
            pl.col("begn").is_null() | ((pl.col("begn") <= pl.col("day")) & (pl.col("day") <= pl.col("end")))
        )
        a = pl.col("amt")
        in_scope = pl.col("lv").is_not_null() & (pl.col("lv") != 3)
        over = pl.when(in_scope & (pl.col("cap") >= 0) & (pl.col("pric") > pl.col("cap"))).then(
            pl.min_horizontal(a, ((pl.col("pric") - pl.col("cap")) * pl.col("cnt") + 50_000_000) // 100_000_000)
        ).otherwise(0)
        m = m.with_columns(over.alias("over"))
        base = a - pl.col("over")
        pre = pl.when(in_scope & (pl.col("lv") == 2)).then((base * pl.col("selfpay") + 5000) // 10000).otherwise(0)
        m = m.with_columns(
            pl.when(in_scope).then(0).otherwise(a).alias("fulamt"),
            pre.alias("presel"),
        ).with_columns((a - pl.col("fulamt") - pl.col("over") - pl.col("presel")).alias("inscp"))
        return m.sort("i").select("fulamt", "over", "presel", "inscp")

    return run


@pytest.mark.benchmark(group="kernel: match + split of fee lines")
def test_compiled(benchmark, data):
    s = benchmark.pedantic(compiled, args=(data,), rounds=5, warmup_rounds=1)
    assert int((s.fulamt_fen + s.overlmt_fen + s.presel_fen + s.inscp_fen - data["amt"]).any()) == 0
    benchmark.extra_info["lines"] = N_LINES


@pytest.mark.benchmark(group="kernel: match + split of fee lines")
def test_reference(benchmark, data):
    n = min(N_LINES, 200_000)  # the reference is slow: a prefix, reported per line
    out = benchmark.pedantic(reference(data, n), rounds=1, warmup_rounds=0)
    s = compiled(data)
    assert [r["inscp_scp_amt"] for r in out[:2000]] == s.inscp_fen[:2000].tolist()
    benchmark.extra_info["lines"] = n


@pytest.mark.benchmark(group="kernel: match + split of fee lines")
def test_polars(benchmark, data):
    pytest.importorskip("polars")
    out = benchmark.pedantic(polars_peer(data), rounds=3, warmup_rounds=1)
    s = compiled(data)
    assert out["inscp"].to_numpy().tolist() == s.inscp_fen.tolist()
    assert out["over"].to_numpy().tolist() == s.overlmt_fen.tolist()
    benchmark.extra_info["lines"] = N_LINES
