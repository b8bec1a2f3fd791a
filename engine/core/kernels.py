"""The typed Python face of the compiled kernels in core_ext (the only module that imports them).

Each function allocates its outputs and calls one kernel over a whole batch:
  match_lines  catalogue lookup by (province, code, day)      SETTLEMENT.md 2, 3
  gather_lines decoded fee lines -> exact integer arrays        SETTLEMENT.md 1
  FeeBuffer    a round's fee lines, raw from the wire or decoded SETTLEMENT.md 1
  split_lines  line split and per-settlement totals             SETTLEMENT.md 3
  pay_funds    fund payment with each person's accumulators     SETTLEMENT.md 6
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyarrow.compute import unique as pc_unique

from core_ext._catalogue import CatalogueIndex
from core_ext._emit import RowEmitter, format_fen, format_fen_rows, format_scaled
from core_ext._fund import fund_batch
from core_ext._lines import FeeBuffer  # noqa: F401  (engine.pipeline)
from core_ext._lines import gather_lines as _gather
from core_ext._lines import parse_scaled as _parse_scaled
from core_ext._lines import parse_time_day as _parse_time_day
from core_ext._split import split_batch

from engine.world.loader import Policy, World

I8, I16, I32, I64, U8 = np.int8, np.int16, np.int32, np.int64, np.uint8


def string_buffers(a: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64, n+1) and UTF-8 bytes of an Arrow string array, without Python objects."""
    a = a.cast(pa.large_string()) if a.type == pa.string() else a
    _, offs, data = a.buffers()
    offsets = np.frombuffer(offs, dtype=np.int64)[a.offset : a.offset + len(a) + 1].copy()
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return offsets, raw


class Catalogue:
    """The catalogue arrays of a world plus their compiled (province, code) index."""

    def __init__(self, w: World):
        self.lv = np.ascontiguousarray(w.cat_lv, dtype=I8)
        self.selfpay_bp = np.ascontiguousarray(w.cat_selfpay_bp, dtype=I32)
        self.cap_micro = np.ascontiguousarray(w.cat_cap_micro, dtype=I64)
        self.lmt = np.ascontiguousarray(w.cat_lmt, dtype=I8)
        self.begn = np.ascontiguousarray(w.cat_begn, dtype=I32)
        self.end = np.ascontiguousarray(w.cat_end, dtype=I32)
        offsets, data = string_buffers(w.cat_code)
        self.index = CatalogueIndex(np.ascontiguousarray(w.cat_prov, dtype=I16), offsets, data)

    def match(self, codes: list, line_prov: np.ndarray, line_day: np.ndarray) -> np.ndarray:
        out = np.empty(len(codes), dtype=I32)
        self.index.match(codes, line_prov, line_day, self.begn, self.end, out)
        return out


def parse_fen(value: object) -> int:
    """engine.money.parse_fen, compiled; a magnitude past int64 saturates. ValueError when malformed."""
    return _parse_scaled(value, 2)


def parse_time_day(value: object) -> int:
    """engine.money.parse_time_day, compiled. ValueError when malformed."""
    if not isinstance(value, str):
        raise ValueError(f"not a time YYYY-MM-DD HH:MM:SS: {value!r}")
    return _parse_time_day(value)


class KeyIndex:
    """Row of a string key (psn_no, certno) through the compiled hash index, no Python objects.

    Keys should be unique; when they are not, the first row wins (a dict is used
    then, since the index needs each key's rows together).
    """

    def __init__(self, keys: pa.Array):
        self._dict: dict[str, int] | None = None
        self._index = None
        if len(pc_unique(keys)) == len(keys):
            offsets, data = string_buffers(keys)
            self._index = CatalogueIndex(np.zeros(len(keys), I16), offsets, data)
        else:
            self._dict = {}
            for i, k in enumerate(keys.to_pylist()):
                self._dict.setdefault(k, i)

    def get(self, key: object) -> int | None:
        if self._dict is not None:
            return self._dict.get(key) if isinstance(key, str) else None
        row = self._index.lookup(0, key)
        return None if row < 0 else row


@dataclass
class Lines:
    codes: list  # med_list_codg of each line (None when missing)
    sns: list  # feedetl_sn of each line (None when missing)
    amt_fen: np.ndarray
    cnt: np.ndarray
    pric_micro: np.ndarray
    day: np.ndarray
    bad: np.ndarray
    n_bad: int


def gather_lines(lines: list) -> Lines:
    n = len(lines)
    codes: list = []
    sns: list = []
    amt, cnt, pric = np.empty(n, I64), np.empty(n, I64), np.empty(n, I64)
    day, bad = np.empty(n, I32), np.empty(n, U8)
    n_bad = _gather(lines, codes, sns, amt, cnt, pric, day, bad)
    return Lines(codes, sns, amt, cnt, pric, day, bad, n_bad)


@dataclass
class Split:
    memo: np.ndarray
    fulamt: np.ndarray
    overlmt: np.ndarray
    presel: np.ndarray
    inscp: np.ndarray
    tot_fulamt: np.ndarray
    tot_overlmt: np.ndarray
    tot_presel: np.ndarray
    tot_inscp: np.ndarray
    tot_amt: np.ndarray
    err: np.ndarray  # 0 ok, 1 E_LIMIT, 2 E_AMOUNT_MISMATCH
    err_line: np.ndarray


def split_lines(
    cat: Catalogue, starts: np.ndarray, outpatient: np.ndarray, row: np.ndarray, lines: Lines
) -> Split:
    n_lines, n = len(row), len(starts) - 1
    memo = np.empty(n_lines, I8)
    per_line = [np.empty(n_lines, I64) for _ in range(4)]
    per_set = [np.empty(n, I64) for _ in range(5)]
    err, err_line = np.empty(n, I8), np.empty(n, I32)
    split_batch(
        starts, outpatient, row, lines.pric_micro, lines.cnt, lines.amt_fen,
        cat.lv, cat.selfpay_bp, cat.cap_micro, cat.lmt,
        memo, *per_line, *per_set, err, err_line,
    )
    return Split(memo, *per_line, *per_set, err, err_line)


class PolicyTables:
    """Policies flattened into arrays for the fund kernel (section 5)."""

    def __init__(self, policies: list[Policy]):
        P = max(1, len(policies))
        self.ids = {(p.insuplc_admdvs, p.insutype): i for i, p in enumerate(policies)}
        self.annual_cap = np.zeros(P, I64)
        self.ip_ded = np.zeros((P, 3), I64)
        self.ip_tier_start = np.zeros((P, 3), I32)
        self.ip_tier_len = np.zeros((P, 3), I32)
        self.ip_bonus = np.zeros(P, I32)
        self.op_ded = np.zeros(P, I64)
        self.op_ratio = np.zeros((P, 3), I32)
        self.op_cap = np.zeros(P, I64)
        self.op_bonus = np.zeros(P, I32)
        self.sl_threshold = np.zeros(P, I64)
        self.sl_tier_start = np.zeros(P, I32)
        self.sl_tier_len = np.zeros(P, I32)
        self.sl_cap = np.zeros(P, I64)
        uppers: list[int] = []
        ratios: list[int] = []
        self.chronic: dict[tuple[int, str], int] = {}
        cd_ratio: list[int] = []
        cd_cap: list[int] = []

        def add_tiers(tiers) -> tuple[int, int]:
            start = len(uppers)
            for t in tiers:
                uppers.append(-1 if t.upper_fen is None else t.upper_fen)
                ratios.append(t.ratio_bp)
            return start, len(tiers)

        for i, p in enumerate(policies):
            self.annual_cap[i] = p.annual_cap_fen
            for lv in (1, 2, 3):
                self.ip_ded[i, lv - 1] = p.ip_deductible_fen[lv]
                self.ip_tier_start[i, lv - 1], self.ip_tier_len[i, lv - 1] = add_tiers(p.ip_tiers[lv])
                self.op_ratio[i, lv - 1] = p.op_ratio_bp[lv]
            self.ip_bonus[i] = p.ip_retiree_bonus_bp
            self.op_ded[i] = p.op_annual_deductible_fen
            self.op_cap[i] = p.op_annual_cap_fen
            self.op_bonus[i] = p.op_retiree_bonus_bp
            self.sl_threshold[i] = p.sl_threshold_fen
            self.sl_tier_start[i], self.sl_tier_len[i] = add_tiers(p.sl_tiers)
            self.sl_cap[i] = p.sl_annual_cap_fen
            for dise, (r, cap) in p.chronic.items():
                self.chronic[(i, dise)] = len(cd_ratio)
                cd_ratio.append(r)
                cd_cap.append(cap)
        self.tier_upper = np.array(uppers or [0], I64)
        self.tier_ratio = np.array(ratios or [0], I32)
        self.cd_ratio = np.array(cd_ratio or [0], I32)
        self.cd_cap = np.array(cd_cap or [0], I64)


class PersonState:
    """The dynamic state of every person (section 6), as arrays the fund kernel mutates."""

    def __init__(self, w: World, chronic_slots: int):
        self.acc_year = np.ascontiguousarray(w.psn_acc_year, dtype=I32).copy()
        self.hifp_ip = np.ascontiguousarray(w.psn_hifp_ip, dtype=I64).copy()
        self.hifp_op = np.ascontiguousarray(w.psn_hifp_op, dtype=I64).copy()
        self.ded_op = np.ascontiguousarray(w.psn_ded_op, dtype=I64).copy()
        self.burden2 = np.ascontiguousarray(w.psn_burden2, dtype=I64).copy()
        self.second_paid = np.ascontiguousarray(w.psn_second_paid, dtype=I64).copy()
        self.balc = np.ascontiguousarray(w.psn_balc, dtype=I64).copy()
        self.cd_val = np.zeros(max(1, chronic_slots), I64)
        self.cd_year = np.zeros(max(1, chronic_slots), I32)


@dataclass
class Pay:
    status: np.ndarray  # 0 ok, 1 E_FILING_REQUIRED, 2 E_NO_QUALIFICATION, 3 E_DATE
    act_pay_dedc: np.ndarray
    hifp_pay: np.ndarray
    second_pay: np.ndarray
    fund_pay_sumamt: np.ndarray
    psn_part_amt: np.ndarray
    acct_pay: np.ndarray
    psn_cash_pay: np.ndarray
    balc_after: np.ndarray
    burden: np.ndarray
    pool_prop_bp: np.ndarray


def pay_funds(pol: PolicyTables, st: PersonState, s: dict[str, np.ndarray]) -> Pay:
    """Run the fund kernel over settlements `s` (arrays by name, see core_ext/_fund.pyi)."""
    n = len(s["kind"])
    status = np.empty(n, I8)
    money = [np.empty(n, I64) for _ in range(9)]
    pool = np.empty(n, I32)
    fund_batch(
        s["kind"], s["pol"], s["lv"], s["psn"], s["year"], s["inscp"], s["medfee"],
        s["reduction_bp"], s["retired310"], s["acct_ok"], s["cd_slot"], s["cd_pol"],
        s["pre_status"], s["commit"],
        pol.annual_cap, pol.ip_ded, pol.ip_tier_start, pol.ip_tier_len, pol.ip_bonus,
        pol.op_ded, pol.op_ratio, pol.op_cap, pol.op_bonus,
        pol.sl_threshold, pol.sl_tier_start, pol.sl_tier_len, pol.sl_cap,
        pol.tier_upper, pol.tier_ratio, pol.cd_ratio, pol.cd_cap,
        st.acc_year, st.hifp_ip, st.hifp_op, st.ded_op, st.burden2, st.second_paid, st.balc,
        st.cd_val, st.cd_year,
        status, *money, pool,
    )
    return Pay(status, *money, pool)
