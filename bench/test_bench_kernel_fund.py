"""Kernel benchmark: fund payment (docs/contract.md section 6) of a batch of settlements.

1,000,000 settlements (at YIDI_BENCH_SCALE=1) of 100,000 persons under 8
policies: inpatient, general outpatient and chronic mixed 2:6:2, a tenth of
them pre-settlements, every person's accumulators carried from one settlement
to the next. The results are checked for the identities of section 6 here;
tests/test_kernels.py checks the kernel against a model of section 6.

    YIDI_BENCH_SCALE=1 pytest bench/test_bench_kernel_fund.py --benchmark-enable -o addopts=""
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from core_ext import _fund

SCALE = float(os.environ.get("YIDI_BENCH_SCALE", "0.02"))
N_SETTLEMENTS = max(2_000, int(1_000_000 * SCALE))
N_PERSONS = max(200, int(100_000 * SCALE))
N_POLICIES = 8
I8, I32, I64, U8 = np.int8, np.int32, np.int64, np.uint8


def policy_fields(rng: np.random.Generator) -> dict:
    """N_POLICIES policies; each level's inpatient tiers and the second layer share 3 tiers."""
    P = N_POLICIES
    upper_fen = np.tile(np.array([5_000_000, 10_000_000, -1], I64), 4 * P)
    ratio_bp = rng.integers(5000, 9500, len(upper_fen)).astype(I32)
    starts = np.arange(0, len(upper_fen), 3, dtype=I32).reshape(P, 4)
    return dict(
        annual_cap_fen=np.full(P, 40_000_000, I64),
        ip_ded_fen=rng.integers(30_000, 150_000, (P, 3)).astype(I64),
        ip_tier_start=np.ascontiguousarray(starts[:, :3]), ip_tier_len=np.full((P, 3), 3, I32),
        ip_bonus_bp=np.full(P, 300, I32), op_ded_fen=np.full(P, 50_000, I64),
        op_ratio_bp=rng.integers(5000, 7000, (P, 3)).astype(I32), op_cap_fen=np.full(P, 300_000, I64),
        op_bonus_bp=np.full(P, 1000, I32), sl_threshold_fen=np.full(P, 2_000_000, I64),
        sl_tier_start=np.ascontiguousarray(starts[:, 3]), sl_tier_len=np.full(P, 3, I32),
        sl_cap_fen=np.full(P, 40_000_000, I64), tier_upper_fen=upper_fen, tier_ratio_bp=ratio_bp,
        cd_ratio_bp=np.full(P, 7000, I32), cd_cap_fen=np.full(P, 400_000, I64),
    )


def person_fields(rng: np.random.Generator) -> dict:
    N = N_PERSONS
    return dict(
        acc_year=np.full(N, 2026, I32), hifp_ip_fen=np.zeros(N, I64), hifp_op_fen=np.zeros(N, I64),
        ded_op_fen=np.zeros(N, I64), burden2_fen=np.zeros(N, I64), second_paid_fen=np.zeros(N, I64),
        balc_fen=rng.integers(0, 500_000, N).astype(I64),
        cd_val_fen=np.zeros(N, I64), cd_year=np.full(N, 2026, I32),  # one chronic slot per person
    )


def batch_fields(rng: np.random.Generator) -> dict:
    n = N_SETTLEMENTS
    kind = rng.choice(np.array([0, 1, 2], I8), n, p=[0.2, 0.6, 0.2])
    psn = rng.integers(0, N_PERSONS, n).astype(I32)
    pol = rng.integers(0, N_POLICIES, n).astype(I32)
    inscp_fen = np.where(kind == 0, rng.integers(0, 30_000_000, n), rng.integers(0, 200_000, n)).astype(I64)
    chronic = kind == 2
    return dict(
        kind=kind, pol=pol, lv=rng.integers(1, 4, n).astype(I8), psn=psn,
        year=np.full(n, 2026, I32), inscp_fen=inscp_fen,
        medfee_fen=inscp_fen + rng.integers(0, 100_000, n), reduction_bp=rng.choice(
            np.array([0, 1000, 2000], I32), n), retired310=(rng.random(n) < 0.3).astype(U8),
        acct_ok=(rng.random(n) < 0.5).astype(U8), cd_slot=np.where(chronic, psn, -1).astype(I32),
        cd_pol=np.where(chronic, pol, -1).astype(I32), pre_status=np.zeros(n, I8),
        commit=(rng.random(n) < 0.9).astype(U8),
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    return dict(policies=policy_fields(rng), persons=person_fields(rng), batch=batch_fields(rng))


def compiled(d) -> tuple[_fund.FundResults, _fund.PersonArrays]:
    """One batch on a fresh copy of the persons: the groups made, the kernel run."""
    persons = _fund.PersonArrays(**{k: v.copy() for k, v in d["persons"].items()})
    batch = _fund.SettlementBatch(**d["batch"])
    results = _fund.FundResults(batch.n)
    _fund.fund_batch(batch, _fund.PolicyArrays(**d["policies"]), persons, results)
    return results, persons


@pytest.mark.benchmark(group="kernel: fund payment")
def test_fund_compiled(benchmark, data):
    res, _ = benchmark.pedantic(compiled, args=(data,), rounds=5, warmup_rounds=1)
    assert (res.fund_pay_sumamt == res.hifp_pay + res.second_pay_fen).all()
    assert (res.psn_part_amt - res.acct_pay == res.psn_cash_pay).all()
    benchmark.extra_info["settlements"] = N_SETTLEMENTS
