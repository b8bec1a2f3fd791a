"""The typed Python face of the compiled kernels in core_ext (the only module that imports them).

Each function allocates its outputs and calls one kernel over a whole batch:
  match_lines  catalogue lookup by (province, code, day)      docs/contract.md 2, 3
  gather_lines decoded fee lines -> exact integer arrays        docs/contract.md 1
  FeeBuffer    a round's fee lines, raw from the wire or decoded docs/contract.md 1
  split_lines  line split and per-settlement totals             docs/contract.md 3
  stored_split a split as the store kept it, to render again     docs/contract.md 3
  pay_funds    fund payment with each person's accumulators     docs/contract.md 6

The kernels take their buffers in typed groups built by keyword (Catalogue,
LineBatch, SplitResults; PolicyTables, PersonState, SettlementBatch,
FundResults): a group checks dtypes and lengths once when it is made, and a
kernel refuses a group of the wrong type, so no two arrays can trade places.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyarrow.compute import unique as pc_unique

from core_ext._catalogue import CatalogueIndex
from core_ext._depth import json_depth, msgpack_depth
from core_ext._emit import RowEmitter, format_fen, format_fen_rows, format_scaled
from core_ext._fund import FundResults, PersonArrays, PolicyArrays, SettlementBatch, fund_batch
from core_ext._lines import FeeBuffer  # noqa: F401  (engine.core.engine)
from core_ext._lines import gather_lines as _gather
from core_ext._lines import parse_scaled as _parse_scaled
from core_ext._lines import parse_time_day as _parse_time_day
from core_ext._split import CatalogueArrays, LineBatch, SplitResults, split_batch

from engine.world.loader import Policy, World

I8, I16, I32, I64, U8 = np.int8, np.int16, np.int32, np.int64, np.uint8


def string_buffers(a: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64, n+1) and UTF-8 bytes of an Arrow string array, without Python objects."""
    a = a.cast(pa.large_string()) if a.type == pa.string() else a
    _, offs, data = a.buffers()
    offsets = np.frombuffer(offs, dtype=np.int64)[a.offset : a.offset + len(a) + 1].copy()
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return offsets, raw


class Catalogue(CatalogueArrays):
    """The catalogue arrays of a world (lv, selfpay_bp, cap_micro, lmt, begn, end) plus their
    compiled (province, code) index."""

    __slots__ = ("begn", "end", "index")

    def __init__(self, w: World):
        super().__init__(
            lv=np.ascontiguousarray(w.cat_lv, dtype=I8),
            selfpay_bp=np.ascontiguousarray(w.cat_selfpay_bp, dtype=I32),
            cap_micro=np.ascontiguousarray(w.cat_cap_micro, dtype=I64),
            lmt=np.ascontiguousarray(w.cat_lmt, dtype=I8),
        )
        self.begn = np.ascontiguousarray(w.cat_begn, dtype=I32)
        self.end = np.ascontiguousarray(w.cat_end, dtype=I32)
        offsets, data = string_buffers(w.cat_code)
        self.index = CatalogueIndex(np.ascontiguousarray(w.cat_prov, dtype=I16), offsets, data)

    def match(self, codes: list, line_prov: np.ndarray, line_day: np.ndarray) -> np.ndarray:
        out = np.empty(len(codes), dtype=I32)
        self.index.match(codes, line_prov, line_day, self.begn, self.end, out)
        return out


def parse_fen(value: object) -> int:
    """engine.contract.money.parse_fen, compiled; a magnitude past int64 saturates. ValueError when malformed."""
    return _parse_scaled(value, 2)


def parse_time_day(value: object) -> int:
    """engine.contract.money.parse_time_day, compiled. ValueError when malformed."""
    if not isinstance(value, str):
        raise ValueError(f"not a time YYYY-MM-DD HH:MM:SS: {value!r}")
    return _parse_time_day(value)


def nesting_depth(body: bytes, is_json: bool, limit: int) -> int:
    """How deeply a raw body nests, at most limit + 1 (MessagePack cut short: -1). docs/contract.md section 7."""
    return json_depth(body, limit) if is_json else msgpack_depth(body, limit)


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
    cnt_ten_thousandths: np.ndarray
    pric_micro: np.ndarray
    day: np.ndarray
    bad: np.ndarray
    n_bad: int


def gather_lines(lines: list) -> Lines:
    n = len(lines)
    codes: list = []
    sns: list = []
    amt_fen, cnt, pric_micro = np.empty(n, I64), np.empty(n, I64), np.empty(n, I64)
    day, bad = np.empty(n, I32), np.empty(n, U8)
    n_bad = _gather(lines, codes, sns, amt_fen, cnt, pric_micro, day, bad)
    return Lines(codes, sns, amt_fen, cnt, pric_micro, day, bad, n_bad)


# The split's outputs: memo and the four parts per line, their totals, err and err_line per settlement.
Split = SplitResults


def split_lines(
    cat: Catalogue, starts: np.ndarray, outpatient: np.ndarray, row: np.ndarray, lines: Lines
) -> SplitResults:
    """Split the round's lines (settlement s owns lines starts[s] .. starts[s+1]-1) against `cat`."""
    batch = LineBatch(
        starts=starts, outpatient=outpatient, row=row, pric_micro=lines.pric_micro,
        cnt_ten_thousandths=lines.cnt_ten_thousandths, amt_fen=lines.amt_fen,
    )
    results = SplitResults(batch)
    split_batch(batch, cat, results)
    return results


def stored_split(lines: Lines, row: np.ndarray, *, memo: np.ndarray, fulamt_fen: np.ndarray,
                 overlmt_fen: np.ndarray, presel_fen: np.ndarray, inscp_fen: np.ndarray) -> SplitResults:
    """The split of one settlement's lines as a store kept it (its parts as computed then), to render again."""
    n = len(row)
    batch = LineBatch(
        starts=np.array([0, n], I64), outpatient=np.zeros(1, U8), row=row, pric_micro=lines.pric_micro,
        cnt_ten_thousandths=lines.cnt_ten_thousandths, amt_fen=lines.amt_fen,
    )
    split = SplitResults(batch)
    split.memo[:] = memo
    for part, stored in ((split.fulamt_fen, fulamt_fen), (split.overlmt_fen, overlmt_fen),
                         (split.presel_fen, presel_fen), (split.inscp_fen, inscp_fen)):
        part[:] = stored
    return split


class PolicyTables(PolicyArrays):
    """Policies flattened into the fund kernel's arrays (section 5), with the rows of their keys.

    ids: (insuplc_admdvs, insutype) -> policy row; chronic: (policy row,
    disease code) -> chronic disease row (a settlement's cd_pol).
    """

    __slots__ = ("ids", "chronic")

    def __init__(self, policies: list[Policy]):
        P = max(1, len(policies))
        self.ids = {(p.insuplc_admdvs, p.insutype): i for i, p in enumerate(policies)}
        self.chronic: dict[tuple[int, str], int] = {}
        a = {k: np.zeros(P, I64) for k in ("annual_cap_fen", "op_ded_fen", "op_cap_fen",
                                            "sl_threshold_fen", "sl_cap_fen")}
        a.update({k: np.zeros(P, I32) for k in ("ip_bonus_bp", "op_bonus_bp", "sl_tier_start",
                                                 "sl_tier_len")})
        a.update(ip_ded_fen=np.zeros((P, 3), I64), ip_tier_start=np.zeros((P, 3), I32),
                 ip_tier_len=np.zeros((P, 3), I32), op_ratio_bp=np.zeros((P, 3), I32))
        uppers_fen: list[int] = []
        ratios_bp: list[int] = []
        cd_ratio_bp: list[int] = []
        cd_cap_fen: list[int] = []

        def add_tiers(tiers) -> tuple[int, int]:
            start = len(uppers_fen)
            for t in tiers:
                uppers_fen.append(-1 if t.upper_fen is None else t.upper_fen)
                ratios_bp.append(t.ratio_bp)
            return start, len(tiers)

        for i, p in enumerate(policies):
            a["annual_cap_fen"][i] = p.annual_cap_fen
            for lv in (1, 2, 3):
                a["ip_ded_fen"][i, lv - 1] = p.ip_deductible_fen[lv]
                a["ip_tier_start"][i, lv - 1], a["ip_tier_len"][i, lv - 1] = add_tiers(p.ip_tiers[lv])
                a["op_ratio_bp"][i, lv - 1] = p.op_ratio_bp[lv]
            a["ip_bonus_bp"][i] = p.ip_retiree_bonus_bp
            a["op_ded_fen"][i] = p.op_annual_deductible_fen
            a["op_cap_fen"][i] = p.op_annual_cap_fen
            a["op_bonus_bp"][i] = p.op_retiree_bonus_bp
            a["sl_threshold_fen"][i] = p.sl_threshold_fen
            a["sl_tier_start"][i], a["sl_tier_len"][i] = add_tiers(p.sl_tiers)
            a["sl_cap_fen"][i] = p.sl_annual_cap_fen
            for dise, (ratio_bp, cap_fen) in p.chronic.items():
                self.chronic[(i, dise)] = len(cd_ratio_bp)
                cd_ratio_bp.append(ratio_bp)
                cd_cap_fen.append(cap_fen)
        super().__init__(
            **a, tier_upper_fen=np.array(uppers_fen or [0], I64),
            tier_ratio_bp=np.array(ratios_bp or [0], I32),
            cd_ratio_bp=np.array(cd_ratio_bp or [0], I32), cd_cap_fen=np.array(cd_cap_fen or [0], I64),
        )


class PersonState(PersonArrays):
    """The dynamic state of every person (section 6), as arrays the fund kernel mutates in place.

    Copies of the world's columns; one chronic slot per (person, disease) row
    of the world's chronic table (at least one, so the arrays are never empty).
    """

    __slots__ = ()

    def __init__(self, w: World, chronic_slots: int):
        def own(column, dtype) -> np.ndarray:
            return np.array(column, dtype=dtype, order="C", copy=True)

        super().__init__(
            acc_year=own(w.psn_acc_year, I32), hifp_ip_fen=own(w.psn_hifp_ip, I64),
            hifp_op_fen=own(w.psn_hifp_op, I64), ded_op_fen=own(w.psn_ded_op, I64),
            burden2_fen=own(w.psn_burden2, I64), second_paid_fen=own(w.psn_second_paid, I64),
            balc_fen=own(w.psn_balc, I64),
            cd_val_fen=np.zeros(max(1, chronic_slots), I64), cd_year=np.zeros(max(1, chronic_slots), I32),
        )


def grown_state(st: PersonState, w: World, slots_before: int, slots: int) -> PersonState:
    """`st` with the persons and chronic slots `w` has beyond it, at the world's values (a reload,
    engine.core.engine.Engine.apply_world); `st`'s own rows are copied as they are. The year a new
    slot's hifp_cd counts in is its person's acc_year in the world (section 2)."""
    n_before = len(st.balc_fen)
    if w.n_persons == n_before and slots == slots_before:
        return st
    grown = PersonState.__new__(PersonState)

    def grow(mine: np.ndarray, theirs: np.ndarray, dtype) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate([mine[:n_before], np.asarray(theirs[n_before:], dtype)]))

    new_slots = np.asarray(w.chr_psn[slots_before:slots], np.int64)
    cd_val = np.concatenate([st.cd_val_fen[:slots_before], np.asarray(w.chr_hifp_cd[slots_before:slots], I64)])
    cd_year = np.concatenate([st.cd_year[:slots_before], np.asarray(w.psn_acc_year, I32)[new_slots]])
    PersonArrays.__init__(
        grown, acc_year=grow(st.acc_year, w.psn_acc_year, I32), hifp_ip_fen=grow(st.hifp_ip_fen, w.psn_hifp_ip, I64),
        hifp_op_fen=grow(st.hifp_op_fen, w.psn_hifp_op, I64), ded_op_fen=grow(st.ded_op_fen, w.psn_ded_op, I64),
        burden2_fen=grow(st.burden2_fen, w.psn_burden2, I64),
        second_paid_fen=grow(st.second_paid_fen, w.psn_second_paid, I64), balc_fen=grow(st.balc_fen, w.psn_balc, I64),
        cd_val_fen=np.ascontiguousarray(cd_val if slots else np.zeros(1, I64)),
        cd_year=np.ascontiguousarray(cd_year.astype(I32) if slots else np.zeros(1, I32)),
    )
    return grown


def pay_funds(pol: PolicyTables, st: PersonState, s: dict[str, np.ndarray]) -> FundResults:
    """Run the fund kernel over settlements `s` (the SettlementBatch fields by name, see core_ext/_fund.pyi)."""
    batch = SettlementBatch(**s)
    results = FundResults(batch.n)
    fund_batch(batch, pol, st, results)
    return results
