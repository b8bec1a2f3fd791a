"""Deterministic synthetic worlds and request streams (SETTLEMENT.md sections 2, 5 and 7).

`gen_world` writes a world folder that `engine.world.load_world` accepts;
`gen_requests` draws a stream of envelopes against such a world, in the shape of
the public `spec/vectors/requests.jsonl`. Both are driven by one integer seed:
the same seed and arguments give byte-identical files and the same envelopes.
Each file (and the request stream) draws from its own NumPy generator, derived
from the seed and the file's name, so a change in how persons are drawn never
shifts the catalogue.

Everything big is drawn as NumPy columns and formatted with Arrow compute
kernels; no Python loop runs once per catalogue row or per person. The request
stream does build one dict per envelope and per fee line (that is its output),
but every number in them was drawn and formatted column-wise first.

Money never passes through a float on its way out: amounts are drawn as floats
(a price distribution is a float by nature), rounded once to integer fen or
micro-yuan, and from there on only integers are formatted.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import time
import zlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.contract import money
from engine.contract.protocol import LINES_MAX, MAINLAND_PROVINCES, TEMP_FILING_TYPES
from engine.world.loader import DAY_OPEN, World

__all__ = ["gen_world", "gen_requests", "world_view", "write_requests_jsonl", "WorldView", "ANOMALIES"]

# ---------------------------------------------------------------- constants

# The 31 provincial-level divisions of the mainland (GB/T 2260), first two digits.
PROVINCE_CODES = MAINLAND_PROVINCES
# When asked for fewer than 31 provinces, take them in this order: it mixes big
# destinations, provinces with county-level pooling regions (41 42 46 65) and
# single-region municipalities, so that even a tiny world exercises every rule.
PROVINCE_PICK_ORDER = (
    "44", "11", "42", "46", "31", "51", "65", "33", "32", "43", "41", "12", "53", "50", "37",
    "13", "14", "15", "21", "22", "23", "34", "35", "36", "45", "52", "54", "61", "62", "63", "64",
)
# Pooling regions per province: (prefecture-level cities xx0100.., autonomous
# prefectures and leagues xx2200.., county-level regions under the province
# xx9001..). Close to the real map; 343 regions in total.
DEFAULT_REGIONS = {
    "11": (1, 0, 0), "12": (1, 0, 0), "13": (11, 0, 0), "14": (11, 0, 0), "15": (9, 3, 0),
    "21": (14, 0, 0), "22": (8, 1, 0), "23": (12, 1, 0), "31": (1, 0, 0), "32": (13, 0, 0),
    "33": (11, 0, 0), "34": (16, 0, 0), "35": (9, 0, 0), "36": (11, 0, 0), "37": (16, 0, 0),
    "41": (17, 0, 1), "42": (12, 1, 4), "43": (13, 1, 0), "44": (21, 0, 0), "45": (14, 0, 0),
    "46": (4, 0, 3), "50": (1, 0, 0), "51": (18, 3, 0), "52": (6, 3, 0), "53": (8, 8, 0),
    "54": (7, 0, 0), "61": (10, 0, 0), "62": (12, 2, 0), "63": (2, 6, 0), "64": (5, 0, 0),
    "65": (4, 5, 3),
}
COUNTY_PROVINCES = frozenset({"41", "42", "46", "65"})
# Where people go for care away from home: relative weight of each province as a
# destination (big hospitals in Beijing, Shanghai, Guangdong; retirees in Hainan).
DESTINATION_WEIGHT = {
    "11": 3.0, "31": 3.0, "44": 3.0, "33": 2.0, "32": 2.0, "46": 1.6, "51": 1.5, "42": 1.3,
    "43": 1.2, "37": 1.2, "50": 1.2, "41": 1.1, "61": 1.1,
}

INSUTYPES = ("310", "390")
HOSP_LEVEL_NAMES = {1: "一级", 2: "二级", 3: "三级"}
# Outpatient chronic and special diseases (门诊慢特病): hypertension and diabetes
# are by far the most common and every policy lists them.
CHRONIC_DISEASES = ("M03900", "M01600", "M00500", "M07800", "M08300")
CHRONIC_WEIGHTS = (0.40, 0.30, 0.10, 0.10, 0.10)
CHRONIC_ALWAYS_LISTED = frozenset({"M03900", "M01600"})
FILING_TYPES = (
    "LONG_RESETTLED", "LONG_RESIDENT", "LONG_STATIONED", "TEMP_REFERRAL", "TEMP_EMERGENCY", "TEMP_OTHER",
)
FILING_TYPE_WEIGHTS = (0.15, 0.20, 0.10, 0.20, 0.10, 0.25)
PSN_TYPES_310 = (("11", 0.64), ("1201", 0.20), ("1202", 0.03), ("1300", 0.02), ("1401", 0.05), ("1601", 0.06))
PSN_TYPES_390 = (("1501", 0.25), ("1601", 0.55), ("1401", 0.12), ("1201", 0.05), ("1701", 0.03))
RETIRED_PSN_TYPES = frozenset({"1201", "1202", "1300"})

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN_CHARS = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国玉梅红文辉鹏飞宇浩然欣怡子涵梓轩雨桐思远佳琪晨阳志强海燕春梅丹丹小红金凤丽娟桂芳淑珍凤兰德明永福宏伟"

# Kinds of national catalogue codes, their share of the national pool, and the
# median (yuan) and spread of their prices.
KIND_WESTERN, KIND_TCM, KIND_SERVICE, KIND_CONSUMABLE = 0, 1, 2, 3
KIND_SHARE = (0.45, 0.15, 0.25, 0.15)
KIND_PRICE_MEDIAN_YUAN = (25.0, 35.0, 20.0, 150.0)
KIND_PRICE_SIGMA = (1.1, 1.0, 1.3, 1.6)
KIND_NAME_PREFIX = ("西药", "中成药", "诊疗项目", "医用耗材")
SERVICE_PREFIXES = (
    "0011", "0012", "0013", "0021", "0022", "0023", "0024", "0025", "0026", "0027", "0031", "0033",
)

# Bounds (TigerStyle: a named limit on everything this module draws).
PRICE_MAX_MICRO = 200_000 * 10**6  # far below the spec's 1,000,000 yuan
CNT_MAX_UNITS = 100  # per line, far below the spec's 100,000
OP_LINES_MAX = 30
IP_LINES_MAX = 2_000
IP_LOS_DAYS_MAX = 90
CERT_SEQ_SLOTS = 500  # 3-digit sequence: two sexes x 500 slots per (region, birthday)
assert IP_LINES_MAX <= LINES_MAX

DATE_CATALOGUE_BASE = "2020-01-01"
EPOCH_DAY_SECONDS = 86_400


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per (seed, stream).

    SeedSequence entropy from the seed and the stream's name. NumPy keeps
    PCG64's bit stream stable, but not every distribution method across major
    versions: byte-identical output is promised for the same NumPy and Arrow.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer: {seed!r}")
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


def _day(s: str) -> int:
    return money.parse_day(s)


# ---------------------------------------------------------------- Arrow formatting


def _str_col(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def _join(*parts: object) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _lpad(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(_str_col(values), width=width, padding="0")


def _fmt_scaled(values: np.ndarray, places: int, mask_absent: np.ndarray | None = None,
                short2: np.ndarray | None = None) -> pa.Array:
    """Non-negative integers scaled by 10**places as decimal strings ('123.45').

    `short2` marks values that are whole fen and should print with 2 places only
    (a price cap of 468.07 rather than 468.070000). `mask_absent` gives nulls.
    """
    v = np.asarray(values, dtype=np.int64)
    if mask_absent is not None:
        v = np.where(mask_absent, 0, v)
    assert v.size == 0 or int(v.min()) >= 0, "negative amount to format"
    unit = 10**places
    whole = _str_col(v // unit)
    frac = _lpad(v % unit, places)
    if short2 is not None and places > 2:
        frac2 = _lpad((v % unit) // 10 ** (places - 2), 2)
        frac = pc.if_else(pa.array(short2), frac2, frac)
    out = _join(whole, ".", frac)
    if mask_absent is not None:
        out = pc.if_else(pa.array(mask_absent), pa.nulls(len(v), pa.string()), out)
    return out


def _date_col(days: np.ndarray, mask_absent: np.ndarray | None = None) -> pa.Array:
    a = pa.array(np.asarray(days, dtype=np.int32), type=pa.date32())
    if mask_absent is not None:
        a = pc.if_else(pa.array(mask_absent), pa.nulls(len(a), pa.date32()), a)
    return a


_CLOCK = None


def _time_col(abs_seconds: np.ndarray) -> pa.Array:
    """Seconds since 1970-01-01 as 'YYYY-MM-DD HH:MM:SS' (the spec's local time, no zone).

    Built from a table of the 86,400 clock readings and one string per distinct
    day: two takes and a join, several times faster than Arrow's strftime.
    """
    global _CLOCK
    if _CLOCK is None:
        sec = np.arange(EPOCH_DAY_SECONDS)
        _CLOCK = _join(_lpad(sec // 3600, 2), ":", _lpad(sec // 60 % 60, 2), ":", _lpad(sec % 60, 2))
    s = np.asarray(abs_seconds, dtype=np.int64)
    day = s // EPOCH_DAY_SECONDS
    uniq, inv = np.unique(day, return_inverse=True)
    day_s = _date_col(uniq).cast(pa.string())
    return _join(pc.take(day_s, pa.array(inv.ravel())), " ", pc.take(_CLOCK, pa.array(s - day * EPOCH_DAY_SECONDS)))


def _time_strs(abs_seconds: np.ndarray) -> list[str]:
    return _time_col(abs_seconds).to_pylist()


def _write_csv(table: pa.Table, path: str) -> int:
    # No quoting: every generated value is free of commas, quotes and newlines,
    # and the files then look like the public vectors byte for byte in style.
    pacsv.write_csv(
        table, path,
        write_options=pacsv.WriteOptions(quoting_style="none", quoting_header="none", batch_size=1 << 16),
    )
    return os.path.getsize(path)


def _codes(rng: np.random.Generator, n: int, alphabets: Sequence[bytes]) -> np.ndarray:
    """n random fixed-width codes; position j draws from alphabets[j]."""
    w = len(alphabets)
    mat = np.empty((n, w), dtype=np.uint8)
    for j, alpha in enumerate(alphabets):
        a = np.frombuffer(alpha, dtype=np.uint8)
        mat[:, j] = a[0] if len(a) == 1 else a[rng.integers(0, len(a), n)]
    return mat.view(f"S{w}").ravel()


def _unique_codes(rng: np.random.Generator, n: int, alphabets: Sequence[bytes]) -> np.ndarray:
    """n distinct codes: draw, drop repeats (keeping first draws), top up; bounded retries."""
    out = _codes(rng, n, alphabets)
    for _ in range(16):
        _, first = np.unique(out, return_index=True)
        if first.size == n:
            return out
        keep = out[np.sort(first)]
        out = np.concatenate([keep, _codes(rng, n - keep.size, alphabets)])
    raise AssertionError("code space too small for the pool")


# ---------------------------------------------------------------- regions


def _pick_provinces(provinces: int | Sequence[str]) -> list[str]:
    if isinstance(provinces, int):
        if not 1 <= provinces <= len(PROVINCE_CODES):
            raise ValueError(f"provinces must be 1..{len(PROVINCE_CODES)}")
        return sorted(PROVINCE_PICK_ORDER[:provinces])
    provs = sorted({str(p)[:2] for p in provinces})
    unknown = [p for p in provs if p not in PROVINCE_CODES]
    if unknown or not provs:
        raise ValueError(f"unknown province codes: {unknown}")
    return provs


def _province_regions(prov: str, spec: tuple[int, int, int]) -> list[str]:
    cities, prefectures, counties = spec
    out = [f"{prov}{k:02d}00" for k in range(1, cities + 1)]
    out += [f"{prov}{k:02d}00" for k in range(22, 22 + prefectures)]
    out += [f"{prov}90{k:02d}" for k in range(1, counties + 1)]
    return out


def _regions(provs: list[str], regions_per_province: int | Mapping[str, int] | None) -> list[str]:
    out: list[str] = []
    for p in provs:
        if regions_per_province is None:
            spec = DEFAULT_REGIONS[p]
        else:
            n = regions_per_province if isinstance(regions_per_province, int) else regions_per_province[p]
            if not 1 <= n <= 40:
                raise ValueError("regions per province must be 1..40")
            counties = 1 if n >= 2 and p in COUNTY_PROVINCES else 0
            prefectures = 1 if n - counties >= 3 and DEFAULT_REGIONS[p][1] else 0
            spec = (n - counties - prefectures, prefectures, counties)
        out += _province_regions(p, spec)
    return out


# ---------------------------------------------------------------- policies


def _policy(rng: np.random.Generator, region: str, insutype: str) -> dict:
    """One policy object (section 5) inside the load-time limits, as in policies.json."""
    def pick(xs):
        return xs[int(rng.integers(0, len(xs)))]

    def bp_between(lo: int, hi: int, step: int = 50) -> int:
        return lo + step * int(rng.integers(0, (hi - lo) // step + 1))

    y, r = (lambda yuan: money.format_fen(int(yuan) * 100)), money.format_bp
    employee = insutype == "310"
    if employee:
        annual_cap = pick([300_000, 400_000, 500_000, 600_000])
        ded = (pick([200, 300, 400]), pick([400, 500, 600, 800]), pick([800, 1000, 1200, 1500]))
        first_ratio = (bp_between(8800, 9500), bp_between(8200, 9000), bp_between(7800, 8800))
        ip_bonus = pick([200, 300, 500])
        op_ded = pick([200, 300, 500, 800, 1000])
        op_ratio = sorted((bp_between(6500, 8000, 500), bp_between(5500, 7000, 500),
                           bp_between(5000, 6000, 500)), reverse=True)
        op_cap = pick([2000, 3000, 4000, 5000, 6000, 8000])
        op_bonus = pick([500, 1000, 1500])
        sl_threshold = pick([15_000, 20_000, 25_000, 30_000])
        sl_cap = pick([300_000, 400_000, 500_000])
    else:
        annual_cap = pick([150_000, 200_000, 250_000, 300_000])
        ded = (pick([100, 200, 300]), pick([400, 500, 600]), pick([800, 1000, 1200]))
        first_ratio = (bp_between(8500, 9000), bp_between(7000, 8000), bp_between(5500, 6500))
        ip_bonus = 0
        op_ded = pick([0, 50, 100, 200])
        op_ratio = sorted((bp_between(5000, 6000, 500), bp_between(4000, 5500, 500),
                           bp_between(3500, 5000, 500)), reverse=True)
        op_cap = pick([300, 400, 500, 800])
        op_bonus = 0
        sl_threshold = pick([12_000, 15_000, 18_000, 20_000])
        sl_cap = pick([300_000, 400_000, 500_000])

    tiers = {}
    for lv in (1, 2, 3):
        n_tiers = int(rng.integers(1, 4))
        uppers = sorted(rng.choice([10_000, 20_000, 30_000, 50_000, 100_000, 150_000], n_tiers - 1,
                                   replace=False).tolist())
        ratio = first_ratio[lv - 1]
        rows = []
        for j in range(n_tiers):
            rows.append([y(uppers[j]) if j < n_tiers - 1 else None, r(min(ratio, 9700))])
            ratio += bp_between(0, 500, 100)
        tiers[str(lv)] = rows

    n_sl = int(rng.integers(1, 4))
    sl_uppers = [100_000, 200_000][: n_sl - 1]
    sl_ratio = bp_between(5000, 6500, 500)
    sl_tiers = []
    for j in range(n_sl):
        sl_tiers.append([y(sl_uppers[j]) if j < n_sl - 1 else None, r(min(sl_ratio, 9000))])
        sl_ratio += 1000

    chronic = {}
    for d in CHRONIC_DISEASES:
        if d in CHRONIC_ALWAYS_LISTED or rng.random() < 0.85:
            chronic[d] = {
                "ratio": r(pick([6000, 6500, 7000, 7500, 8000, 8500])),
                "annual_cap": y(pick([2000, 3000, 4000, 5000, 6000, 8000, 10_000])),
            }
    unfiled = None if rng.random() < 0.25 else r(pick([2000, 3000, 4000]))
    return {
        "insuplc_admdvs": region,
        "insutype": insutype,
        "annual_cap": y(annual_cap),
        "inpatient": {
            "deductible": {"1": y(ded[0]), "2": y(ded[1]), "3": y(ded[2])},
            "tiers": tiers,
            "retiree_bonus": r(ip_bonus),
        },
        "outpatient": {
            "annual_deductible": y(op_ded),
            "ratio": {"1": r(op_ratio[0]), "2": r(op_ratio[1]), "3": r(op_ratio[2])},
            "annual_cap": y(op_cap),
            "retiree_bonus": r(op_bonus),
            "requires_filing": bool(rng.random() < 0.6),
        },
        "chronic": chronic,
        "second_layer": {"threshold": y(sl_threshold), "tiers": sl_tiers, "annual_cap": y(sl_cap)},
        "reduction": {
            "long_term": r(pick([0, 0, 0, 0, 500])),
            "referral": r(pick([0, 500, 1000])),
            "emergency": r(pick([0, 500, 1000])),
            "temp_other": r(pick([1000, 1500, 2000])),
            "unfiled": unfiled,
        },
    }


# ---------------------------------------------------------------- catalogue


def _catalogue(rng: np.random.Generator, provs: list[str], per_province: int) -> pa.Table:
    """SETTLEMENT.md section 2 catalogue: a shared national code pool, one subset per province."""
    n_two = int(round(per_province * 0.03 / 1.03))  # codes with two date versions: ~3 % of codes
    k = per_province - n_two  # distinct codes per province
    pool_n = max(k, int(per_province * 1.3)) + 8

    # The national pool, kinds interleaved.
    kind = rng.choice(4, size=pool_n, p=KIND_SHARE).astype(np.int8)
    digits, upper = b"0123456789", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    alph = {
        KIND_WESTERN: [b"X", b"ABCDGHJLMNPRSV", digits, digits, upper, upper, upper, digits, digits, digits,
                       b"AB"] + [digits] * 12,
        KIND_TCM: [b"Z", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", digits, digits, upper, upper] + [digits] * 4
                  + [b"ABC"] + [digits] * 12,
        KIND_SERVICE: [digits] * 11,
        KIND_CONSUMABLE: [b"C"] + [digits] * 19,
    }
    pool_code = np.empty(pool_n, dtype=object)
    for kd in range(4):
        idx = np.flatnonzero(kind == kd)
        if kd == KIND_SERVICE:
            tail = _unique_codes(rng, idx.size, alph[kd])
            pre = np.array([p.encode() for p in SERVICE_PREFIXES], dtype="S4")[
                rng.integers(0, len(SERVICE_PREFIXES), idx.size)]
            codes = np.char.add(pre, tail)
            # Prefix and tail together are unique when the tails are.
        else:
            codes = _unique_codes(rng, idx.size, alph[kd])
        pool_code[idx] = pa.array(codes).cast(pa.string()).to_numpy(zero_copy_only=False)
    pool_code_pa = pa.array(pool_code, type=pa.string())
    pool_name = _join(
        pc.take(pa.array(KIND_NAME_PREFIX), pa.array(kind.astype(np.int32))),
        pc.utf8_slice_codeunits(pool_code_pa, 0, 8),
    )
    pool_lv, pool_selfpay, pool_cap = _catalogue_terms(rng, kind)
    pool_lmt = (rng.random(pool_n) < 0.05).astype(np.int8)

    base_day, d_lo, d_hi = _day(DATE_CATALOGUE_BASE), _day("2025-03-01"), _day("2027-03-01")
    parts: dict[str, list] = {c: [] for c in ("prov", "pool", "lv", "selfpay", "cap", "lmt", "begn", "end")}
    for pi, prov in enumerate(provs):
        sel = np.sort(rng.permutation(pool_n)[:k])
        lv, selfpay, cap, lmt = pool_lv[sel], pool_selfpay[sel], pool_cap[sel], pool_lmt[sel]
        # Province-specific terms for the same national code (各省目录不一).
        own = rng.random(k) < 0.12
        o_lv, o_sp, o_cap = _catalogue_terms(rng, kind[sel])
        lv, selfpay, cap = np.where(own, o_lv, lv), np.where(own, o_sp, selfpay), np.where(own, o_cap, cap)
        # Single versions: mostly listed since the base date; some later, a few
        # discontinued, a few listed only from next year.
        begn = np.where(rng.random(k) < 0.85, base_day, rng.integers(_day("2021-01-01"), _day("2026-06-30"), k))
        end = np.full(k, -1, dtype=np.int64)
        u = rng.random(k)
        gone = u < 0.01
        end[gone] = np.maximum(begn[gone], rng.integers(_day("2024-01-01"), _day("2026-10-31"), int(gone.sum())))
        begn = np.where((u >= 0.01) & (u < 0.015), _day("2027-01-01"), begn)
        # Two versions: the first ends on D, the second begins on D + 1 with new terms.
        two = np.sort(rng.choice(k, n_two, replace=False)) if n_two else np.zeros(0, dtype=np.int64)
        d = rng.integers(d_lo, d_hi, two.size)
        begn[two] = base_day
        end[two] = d
        t_lv, t_sp, t_cap = _catalogue_terms(rng, kind[sel[two]])
        t_end = np.where(rng.random(two.size) < 0.1, d + rng.integers(200, 900, two.size), -1)
        # Rows of one code stay adjacent, the first version first.
        order = np.argsort(np.concatenate([np.arange(k) * 2, two * 2 + 1]), kind="stable")

        def cat(a, b):
            return np.concatenate([a, b])[order]

        parts["prov"].append(np.full(per_province, pi, dtype=np.int32))
        parts["pool"].append(cat(sel, sel[two]))
        parts["lv"].append(cat(lv, t_lv))
        parts["selfpay"].append(cat(selfpay, t_sp))
        parts["cap"].append(cat(cap, t_cap))
        parts["lmt"].append(cat(lmt, lmt[two]))
        parts["begn"].append(cat(begn, d + 1))
        parts["end"].append(cat(end, t_end))
    col = {c: np.concatenate(v) for c, v in parts.items()}
    pool_idx = pa.array(col["pool"].astype(np.int64))
    lv = col["lv"]
    cap = col["cap"]
    return pa.table({
        "prov_admdvs": pc.take(pa.array([p + "0000" for p in provs]), pa.array(col["prov"])),
        "med_list_codg": pc.take(pool_code_pa, pool_idx),
        "med_list_name": pc.take(pool_name, pool_idx),
        "chrgitm_lv": pc.take(pa.array(["01", "02", "03"]), pa.array(lv.astype(np.int32) - 1)),
        "selfpay_prop": _fmt_scaled(col["selfpay"], money.BP_PLACES, mask_absent=lv != 2),
        "pric_uplmt_amt": _fmt_scaled(cap, money.MICRO_PLACES, mask_absent=cap < 0, short2=cap % 10_000 == 0),
        "lmt_used_flag": pc.take(pa.array(["0", "1"]), pa.array(col["lmt"].astype(np.int32))),
        "begndate": _date_col(col["begn"]),
        "enddate": _date_col(np.maximum(col["end"], 0), mask_absent=col["end"] < 0),
    }).sort_by([("prov_admdvs", "ascending"), ("med_list_codg", "ascending"), ("begndate", "ascending")])
    # Sorted by province, code and date, as national catalogues are published.


def _catalogue_terms(rng: np.random.Generator, kind: np.ndarray):
    """Class (1 A, 2 B, 3 C), class-B self-pay ratio in bp, price cap in micro-yuan (-1: none)."""
    n = kind.size
    lv = rng.choice(np.array([1, 2, 3], dtype=np.int8), size=n, p=[0.45, 0.45, 0.10])
    common = np.array([500, 1000, 1500, 2000, 3000])
    selfpay = np.where(rng.random(n) < 0.7, common[rng.integers(0, 5, n)], rng.integers(500, 3001, n))
    median = np.asarray(KIND_PRICE_MEDIAN_YUAN)[kind]
    sigma = np.asarray(KIND_PRICE_SIGMA)[kind]
    price_yuan = median * np.exp(sigma * rng.standard_normal(n)) * rng.uniform(1.0, 1.5, n)
    cap = np.clip(np.rint(price_yuan * 1e6), 10_000, PRICE_MAX_MICRO).astype(np.int64)
    # Most caps are whole fen, some carry the full six decimals of a price.
    whole_fen = rng.random(n) < 0.8
    cap = np.where(whole_fen, np.maximum(cap // 10_000, 1) * 10_000, cap)
    cap = np.where(rng.random(n) < 0.30, cap, -1)
    return lv, selfpay.astype(np.int64), cap


# ---------------------------------------------------------------- persons


def _persons(rng: np.random.Generator, regions: list[str], n: int, year: int, policies: dict) -> dict:
    """persons.csv columns and the numbers chronic.csv and filings.csv build on."""
    n_reg = len(regions)
    capital = np.array([r[2:4] == "01" for r in regions])
    municipality = np.array([sum(q[:2] == r[:2] for q in regions) == 1 for r in regions])
    w = np.exp(0.8 * rng.standard_normal(n_reg)) * np.where(capital, 2.5, 1.0) * np.where(municipality, 4.0, 1.0)
    reg = rng.choice(n_reg, size=n, p=w / w.sum()).astype(np.int32)
    emp = rng.random(n) < 0.35
    insutype = np.where(emp, 310, 390)

    def draw_types(pairs, size):
        names = [p for p, _ in pairs]
        return np.asarray(names, dtype=object)[rng.choice(len(pairs), size=size, p=[q for _, q in pairs])]

    psn_type = np.where(emp, draw_types(PSN_TYPES_310, n), draw_types(PSN_TYPES_390, n))
    retired = np.isin(psn_type, list(RETIRED_PSN_TYPES))
    student = psn_type == "1501"

    # Birthdays: retirees 60-95, students and children 0-22, others 18-75.
    ref_day = _day(f"{year}-11-20")
    age = np.where(retired, rng.uniform(60, 95, n), np.where(student, rng.uniform(0, 22, n), rng.uniform(18, 75, n)))
    birth = (ref_day - age * 365.2425).astype(np.int64)
    bdt = birth.astype("datetime64[D]")
    by = bdt.astype("datetime64[Y]").astype(np.int64) + 1970
    bm = bdt.astype("datetime64[M]").astype(np.int64) % 12 + 1
    bd = (bdt - bdt.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    ymd = by * 10_000 + bm * 100 + bd
    # certno is unique: number persons within each (region, birthday) and give
    # each a distinct slot of the 3-digit sequence (odd for men, even for women).
    key = reg.astype(np.int64) << 24 | (birth - birth.min())
    order = np.argsort(key, kind="stable")
    ks = key[order]
    new_group = np.r_[True, ks[1:] != ks[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start
    assert n == 0 or int(rank.max()) < CERT_SEQ_SLOTS, "too many persons per region and birthday"
    slot = (rank + (key * 2_654_435_761 >> 11) % CERT_SEQ_SLOTS) % CERT_SEQ_SLOTS
    sex = rng.integers(0, 2, n)
    seq3 = slot * 2 + sex
    reg_num = np.array([int(r) for r in regions], dtype=np.int64)[reg]
    digits = np.concatenate([
        (reg_num[:, None] // 10 ** np.arange(5, -1, -1)) % 10,
        (ymd[:, None] // 10 ** np.arange(7, -1, -1)) % 10,
        (seq3[:, None] // 10 ** np.arange(2, -1, -1)) % 10,
    ], axis=1)
    weights = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
    check = (digits @ weights) % 11
    region_pa = pc.take(pa.array(regions), pa.array(reg))
    certno = _join(region_pa, _str_col(ymd), _lpad(seq3, 3),
                   pc.take(pa.array(list("10X98765432")), pa.array(check)))
    psn_no = _join("P", region_pa, _lpad(np.arange(n), 8))
    name = _join(
        pc.take(pa.array(list(SURNAMES)), pa.array(rng.integers(0, len(SURNAMES), n))),
        pc.take(pa.array(list(GIVEN_CHARS)), pa.array(rng.integers(0, len(GIVEN_CHARS), n))),
        pc.if_else(pa.array(rng.random(n) < 0.7),
                   pc.take(pa.array(list(GIVEN_CHARS)), pa.array(rng.integers(0, len(GIVEN_CHARS), n))), ""),
    )

    # The policy terms each person's accumulators are drawn against.
    keys = [(r, t) for r in regions for t in INSUTYPES]
    pol_terms = np.zeros((len(keys), 6), dtype=np.int64)  # op_ded, op_cap, ip_cap, sl_thr, sl_cap, sl_bp
    for i, (r, t) in enumerate(keys):
        p = policies.get((r, t))
        if p is None:  # no policy: draw as for a typical one
            p_terms = (500_00, 3000_00, 300_000_00, 20_000_00, 400_000_00, 6000)
        else:
            p_terms = (
                money.parse_fen(p["outpatient"]["annual_deductible"]),
                money.parse_fen(p["outpatient"]["annual_cap"]),
                money.parse_fen(p["annual_cap"]),
                money.parse_fen(p["second_layer"]["threshold"]),
                money.parse_fen(p["second_layer"]["annual_cap"]),
                money.parse_bp(p["second_layer"]["tiers"][0][1]),
            )
        pol_terms[i] = p_terms
    pol = reg.astype(np.int64) * 2 + (insutype == 390)
    op_ded, op_cap, ip_cap, sl_thr, sl_cap, sl_bp = (pol_terms[pol, j] for j in range(6))

    acc_year = np.where(rng.random(n) < 0.9, year, year - 1)
    balc = np.where(emp & (rng.random(n) >= 0.1),
                    np.minimum(rng.exponential(3500.0, n), 20_000.0) * 100, 0).astype(np.int64)
    u = rng.random(n)
    ded_op = np.where(u < 0.4, 0, np.where(u < 0.8, op_ded, (op_ded * rng.random(n)).astype(np.int64)))
    u = rng.random(n)
    hifp_op = np.where(u < 0.5, 0, np.where(u < 0.58, op_cap, (op_cap * rng.random(n)).astype(np.int64)))
    u = rng.random(n)
    ip_amt = (8000.0 * np.exp(rng.standard_normal(n)) * 100).astype(np.int64)
    hifp_ip = np.where(u < 0.85, 0, np.where(u < 0.852, ip_cap, np.minimum(ip_amt, ip_cap)))
    burden2 = np.where(hifp_ip > 0, (6000.0 * np.exp(rng.standard_normal(n)) * 100).astype(np.int64), 0)
    second_paid = np.minimum((np.maximum(burden2 - sl_thr, 0) * sl_bp + 5000) // 10_000, sl_cap)
    return {
        "table": pa.table({
            "psn_no": psn_no,
            "certno": certno,
            "psn_name": name,
            "insuplc_admdvs": region_pa,
            "insutype": _str_col(insutype),
            "psn_type": pa.array(psn_type.astype(str)),
            "balc": _fmt_scaled(balc, 2),
            "acc_year": _str_col(acc_year),
            "hifp_ip": _fmt_scaled(hifp_ip, 2),
            "hifp_op": _fmt_scaled(hifp_op, 2),
            "ded_op": _fmt_scaled(ded_op, 2),
            "burden2": _fmt_scaled(burden2, 2),
            "second_paid": _fmt_scaled(second_paid, 2),
        }),
        "psn_no": psn_no,
        "reg": reg,
        "pol": pol,
    }


def _chronic(rng: np.random.Generator, persons: dict, policies: dict, regions: list[str]) -> pa.Table:
    n = len(persons["reg"])
    who = np.flatnonzero(rng.random(n) < 0.05)
    two = rng.random(who.size) < 0.3
    d1 = rng.choice(len(CHRONIC_DISEASES), size=who.size, p=CHRONIC_WEIGHTS)
    d2 = (d1 + rng.integers(1, len(CHRONIC_DISEASES), who.size)) % len(CHRONIC_DISEASES)
    psn = np.concatenate([who, who[two]])
    dise = np.concatenate([d1, d2[two]])
    order = np.lexsort((dise, psn))
    psn, dise = psn[order], dise[order]
    # The fund already paid this year: up to most of the disease's cap where the
    # policy lists it, else a typical 4000 yuan.
    caps = np.full((len(regions) * 2, len(CHRONIC_DISEASES)), 4000_00, dtype=np.int64)
    region_row = {r: i for i, r in enumerate(regions)}
    for (r, t), p in policies.items():
        for j, d in enumerate(CHRONIC_DISEASES):
            if d in p["chronic"]:
                caps[region_row[r] * 2 + (t == "390"), j] = money.parse_fen(p["chronic"][d]["annual_cap"])
    cap = caps[persons["pol"][psn], dise]
    paid = np.where(rng.random(psn.size) < 0.4, 0, (cap * rng.uniform(0, 0.9, psn.size)).astype(np.int64))
    return pa.table({
        "psn_no": pc.take(persons["psn_no"], pa.array(psn)),
        "dise_codg": pc.take(pa.array(CHRONIC_DISEASES), pa.array(dise)),
        "hifp_cd": _fmt_scaled(paid, 2),
    })


def _filings(rng: np.random.Generator, persons: dict, regions: list[str], year: int) -> pa.Table:
    """filings.csv: ~30 % of persons, every type and status, dest a region, a province or a city."""
    n = len(persons["reg"])
    filers = np.flatnonzero(rng.random(n) < 0.30)
    count = rng.choice([1, 2, 3], size=filers.size, p=[0.75, 0.20, 0.05])
    psn = np.repeat(filers, count)
    m = psn.size
    own = persons["reg"][psn]
    reg_prov = np.array([r[:2] for r in regions])
    provs = sorted(set(reg_prov))
    prov_of_reg = np.searchsorted(provs, reg_prov)
    own_prov = prov_of_reg[own]
    # Destination province: weighted, another province (90 %) or the own one.
    pw = np.array([DESTINATION_WEIGHT.get(p, 1.0) for p in provs])
    dest_prov = rng.choice(len(provs), size=m, p=pw / pw.sum())
    if len(provs) > 1:
        clash = dest_prov == own_prov
        dest_prov[clash] = (own_prov[clash] + rng.integers(1, len(provs), int(clash.sum()))) % len(provs)
    same = rng.random(m) < 0.10
    dest_prov = np.where(same, own_prov, dest_prov)
    # A region of that province (not the own region when staying in the province).
    starts = np.searchsorted(prov_of_reg, np.arange(len(provs)))
    counts = np.bincount(prov_of_reg, minlength=len(provs))
    dest_reg = starts[dest_prov] + (rng.random(m) * counts[dest_prov]).astype(np.int64)
    stuck = dest_reg == own
    dest_reg[stuck] = starts[dest_prov[stuck]] + (dest_reg[stuck] - starts[dest_prov[stuck]] + 1) % counts[
        dest_prov[stuck]]
    # Form of the destination: exact region, whole province xx0000, or a city
    # prefix xxxx00 (for a county-level region xx90yy that is xx9000).
    dest_codes = np.array(regions, dtype=object)[dest_reg]
    form = rng.choice(3, size=m, p=[0.55, 0.30, 0.15])
    prov_code = np.array([p + "0000" for p in provs], dtype=object)[dest_prov]
    city_code = np.array([c[:4] + "00" for c in regions], dtype=object)[dest_reg]
    dest = np.where(form == 0, dest_codes, np.where(form == 1, prov_code, city_code))
    # A filing to one's own region means nothing: file the whole province instead.
    own_code = np.array(regions, dtype=object)[own]
    dest = np.where(dest == own_code, prov_code, dest)

    ftype = rng.choice(len(FILING_TYPES), size=m, p=FILING_TYPE_WEIGHTS)
    long_term = ftype < 3
    y0, y1 = _day(f"{year}-01-01"), _day(f"{year}-11-25")
    begn = np.where(
        long_term,
        rng.integers(_day(f"{year - 7}-01-01"), _day(f"{year}-11-30"), m),
        np.where(rng.random(m) < 0.1, rng.integers(_day(f"{year - 1}-01-01"), y0, m), rng.integers(y0 + 59, y1, m)),
    )
    has_end = rng.random(m) < np.where(long_term, 0.3, 0.5)
    end = begn + np.where(long_term, rng.integers(365, 1500, m), rng.integers(15, 270, m))
    status = np.where(rng.random(m) < 0.2, "2", "1")
    return pa.table({
        "psn_no": pc.take(persons["psn_no"], pa.array(psn)),
        "filing_type": pc.take(pa.array(FILING_TYPES), pa.array(ftype)),
        "dest_admdvs": pa.array(dest.astype(str)),
        "begndate": _date_col(begn),
        "enddate": _date_col(end, mask_absent=~has_end),
        "status": pa.array(status),
    })


# ---------------------------------------------------------------- gen_world


def gen_world(
    out_dir: str,
    *,
    seed: int = 1,
    provinces: int | Sequence[str] = 31,
    regions_per_province: int | Mapping[str, int] | None = None,
    catalogue_per_province: int = 200_000,
    persons: int = 1_000_000,
    institutions_per_region: int | tuple[int, int, int] = (2, 2, 2),
    year: int = 2026,
    missing_policies: int | None = None,
) -> dict:
    """Write a world folder (SETTLEMENT.md section 2) and return a summary of it.

    provinces: how many of the 31 (taken in PROVINCE_PICK_ORDER) or which two-digit codes.
    regions_per_province: None for the real-looking map (343 regions over 31
    provinces), an int for every province, or a mapping province -> count.
    institutions_per_region: per hospital level 1, 2, 3 (an int: the same for each).
    year: the current accounting year; about 10 % of persons are still on year - 1.
    missing_policies: (region, insutype) pairs left without a policy, so that
    E_NO_POLICY can happen; None for about 1 % of the pairs (at least one).
    """
    t0 = time.perf_counter()
    if persons < 1 or catalogue_per_province < 1:
        raise ValueError("persons and catalogue_per_province must be positive")
    os.makedirs(out_dir, exist_ok=True)
    provs = _pick_provinces(provinces)
    regions = _regions(provs, regions_per_province)
    ipr = (institutions_per_region,) * 3 if isinstance(institutions_per_region, int) else tuple(
        institutions_per_region)
    if len(ipr) != 3 or min(ipr) < 0 or sum(ipr) < 1 or max(ipr) > 9999:
        raise ValueError("institutions_per_region: three counts, 0..9999, not all zero")
    sizes: dict[str, int] = {}

    # institutions.csv
    inst_rows = [(r, lv, s) for r in regions for lv in (1, 2, 3) for s in range(ipr[lv - 1])]
    inst = pa.table({
        "fixmedins_code": pa.array([f"H{r}{lv}{s:04d}" for r, lv, s in inst_rows]),
        "fixmedins_name": pa.array([f"{r}{HOSP_LEVEL_NAMES[lv]}医院{s + 1:02d}" for r, lv, s in inst_rows]),
        "admdvs": pa.array([r for r, _, _ in inst_rows]),
        "hosp_lv": pa.array([str(lv) for _, lv, _ in inst_rows]),
    })
    sizes["institutions.csv"] = _write_csv(inst, os.path.join(out_dir, "institutions.csv"))

    # policies.json
    rng = _rng(seed, "policies")
    pairs = [(r, t) for r in regions for t in INSUTYPES]
    n_missing = max(1, round(0.01 * len(pairs))) if missing_policies is None else missing_policies
    n_missing = min(n_missing, len(pairs) - 1)
    # Leave the gaps in smaller regions (not a capital xx01yy) where there are
    # enough of them: a missing policy for all of Shanghai would be no test.
    small = [i for i, (r, _) in enumerate(pairs) if r[2:4] != "01"]
    pool = small if len(small) >= n_missing else list(range(len(pairs)))
    missing = {pairs[i] for i in rng.choice(pool, n_missing, replace=False)} if n_missing > 0 else set()
    policies = {}
    for pair in pairs:
        p = _policy(rng, *pair)  # drawn for every pair, so `missing` does not shift the others
        if pair not in missing:
            policies[pair] = p
    body = json.dumps(list(policies.values()), ensure_ascii=False, indent=1) + "\n"
    with open(os.path.join(out_dir, "policies.json"), "w", encoding="utf-8") as f:
        f.write(body)
    sizes["policies.json"] = len(body.encode())

    # catalogue.csv
    cat = _catalogue(_rng(seed, "catalogue"), provs, catalogue_per_province)
    sizes["catalogue.csv"] = _write_csv(cat, os.path.join(out_dir, "catalogue.csv"))

    # persons.csv, chronic.csv, filings.csv
    ps = _persons(_rng(seed, "persons"), regions, persons, year, policies)
    sizes["persons.csv"] = _write_csv(ps["table"], os.path.join(out_dir, "persons.csv"))
    chronic = _chronic(_rng(seed, "chronic"), ps, policies, regions)
    sizes["chronic.csv"] = _write_csv(chronic, os.path.join(out_dir, "chronic.csv"))
    filings = _filings(_rng(seed, "filings"), ps, regions, year)
    sizes["filings.csv"] = _write_csv(filings, os.path.join(out_dir, "filings.csv"))

    # prepay.csv: each insured province deposits 300-900 yuan per insured person.
    # A synthetic day settles far more per insured person than the national one
    # (130,000 settlements among 1,000,000 persons), so deposits are sized for
    # the demo: one such day uses roughly 25-80 % of them, and a few provinces
    # cross the 70 % warning, as a busy month would show.
    rng = _rng(seed, "prepay")
    psn_prov = np.searchsorted(provs, np.array([r[:2] for r in regions])[ps["reg"]])
    per_prov = np.bincount(psn_prov, minlength=len(provs))
    amount = (per_prov * rng.uniform(300, 900, len(provs)) * 100).astype(np.int64) + rng.integers(0, 100, len(provs))
    prepay = pa.table({"prov_admdvs": pa.array([p + "0000" for p in provs]), "amount": _fmt_scaled(amount, 2)})
    sizes["prepay.csv"] = _write_csv(prepay, os.path.join(out_dir, "prepay.csv"))

    return {
        "out_dir": out_dir,
        "seed": seed,
        "year": year,
        "provinces": len(provs),
        "regions": len(regions),
        "institutions": inst.num_rows,
        "catalogue_rows": cat.num_rows,
        "persons": persons,
        "chronic_rows": chronic.num_rows,
        "filing_rows": filings.num_rows,
        "policies": len(policies),
        "missing_policies": sorted(f"{r}/{t}" for r, t in missing),
        "bytes": sizes,
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------- the world as gen_requests sees it


@dataclass
class WorldView:
    """The columns of a world that gen_requests draws from; build once with world_view()."""

    regions: list[str]  # sorted region codes of institutions and persons
    inst_code: list[str]
    inst_name: list[str]
    inst_region: np.ndarray  # int64 index into regions
    inst_lv: np.ndarray  # int64 1..3
    psn_no: pa.Array
    psn_certno: pa.Array
    psn_insutype: pa.Array
    psn_region: np.ndarray  # int64 index into regions
    chr_psn: np.ndarray  # int64 person row
    chr_dise: pa.Array
    fil_psn: np.ndarray  # int64 person row
    fil_dest: pa.Array
    fil_begn: np.ndarray  # int64 day
    fil_last: np.ndarray  # int64 last day in force (section 4), DAY_OPEN when open
    cat_provs: np.ndarray  # int64 province numbers with a catalogue (44 for 440000), sorted
    cat_start: np.ndarray  # int64, first row of each province in cat_code_id
    cat_count: np.ndarray  # int64, distinct codes of each province
    cat_code_id: np.ndarray  # int64 code ids, each province's codes from most to least used
    cat_cap_micro: np.ndarray  # int64 price cap of that code in that province, -1 none
    codes: pa.Array  # distinct codes of every province, sorted
    code_kind: np.ndarray  # int8 KIND_* of each distinct code


def _read_strings(folder: str, name: str, cols: list[str]) -> dict[str, pa.Array]:
    t = pacsv.read_csv(
        os.path.join(folder, name),
        read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in cols}, include_columns=cols,
            null_values=[""], strings_can_be_null=True,
        ),
    )
    return {c: t.column(c).combine_chunks() for c in cols}


def _day_col(a: pa.Array) -> np.ndarray:
    """'YYYY-MM-DD' strings to day numbers; absent gives DAY_OPEN."""
    d = pc.cast(pc.strptime(a, format="%Y-%m-%d", unit="s"), pa.date32())
    return pc.fill_null(pc.cast(d, pa.int32()), DAY_OPEN).to_numpy(zero_copy_only=False).astype(np.int64)


def _six_months(begn_day: np.ndarray) -> np.ndarray:
    """money.six_months, column-wise: 6 calendar months on (day clamped), minus one day."""
    b = np.asarray(begn_day, dtype=np.int64).astype("datetime64[D]")
    month = b.astype("datetime64[M]")
    day_of_month = (b - month.astype("datetime64[D]")).astype(np.int64)  # 0-based
    target = month + 6
    target_first = target.astype("datetime64[D]")
    month_days = ((target + 1).astype("datetime64[D]") - target_first).astype(np.int64)
    return target_first.astype(np.int64) + np.minimum(day_of_month, month_days - 1) - 1


def _rows_of(keys: pa.Array, psn_no: pa.Array) -> np.ndarray:
    rows = pc.index_in(keys, value_set=psn_no)
    return pc.fill_null(rows, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def world_view(world: object) -> WorldView:
    """Columns for gen_requests, from a world folder (read directly with Arrow, not
    validated: run load_world for that) or from an engine.world.World.

    Both give the same view, so a stream does not depend on how the world was passed.
    """
    if isinstance(world, World):
        inst_code, inst_name, inst_adm = list(world.inst_code), list(world.inst_name), list(world.inst_admdvs)
        inst_lv = np.asarray(world.inst_lv, dtype=np.int64)
        psn_no, certno = world.psn_no, world.psn_certno
        insuplc, insutype = world.psn_insuplc, world.psn_insutype
        chr_psn, chr_dise = np.asarray(world.chr_psn, dtype=np.int64), pa.array(world.chr_dise, pa.string())
        fil_psn, fil_dest = np.asarray(world.fil_psn, dtype=np.int64), pa.array(world.fil_dest, pa.string())
        fil_type, fil_status = np.asarray(world.fil_type, dtype=object), np.asarray(world.fil_status, dtype=object)
        fil_begn, fil_end = np.asarray(world.fil_begn, np.int64), np.asarray(world.fil_end, np.int64)
        cat_prov = np.asarray(world.cat_prov, dtype=np.int64)
        cat_code, cat_cap = world.cat_code, np.asarray(world.cat_cap_micro, dtype=np.int64)
    else:
        folder = os.fspath(world)
        t = _read_strings(folder, "institutions.csv", ["fixmedins_code", "fixmedins_name", "admdvs", "hosp_lv"])
        inst_code, inst_name = t["fixmedins_code"].to_pylist(), t["fixmedins_name"].to_pylist()
        inst_adm = t["admdvs"].to_pylist()
        inst_lv = pc.cast(t["hosp_lv"], pa.int64()).to_numpy()
        t = _read_strings(folder, "persons.csv", ["psn_no", "certno", "insuplc_admdvs", "insutype"])
        psn_no, certno, insuplc, insutype = t["psn_no"], t["certno"], t["insuplc_admdvs"], t["insutype"]
        t = _read_strings(folder, "chronic.csv", ["psn_no", "dise_codg"])
        chr_psn, chr_dise = _rows_of(t["psn_no"], psn_no), t["dise_codg"]
        t = _read_strings(folder, "filings.csv", ["psn_no", "filing_type", "dest_admdvs", "begndate", "enddate",
                                                  "status"])
        fil_psn, fil_dest = _rows_of(t["psn_no"], psn_no), t["dest_admdvs"]
        fil_type = t["filing_type"].to_numpy(zero_copy_only=False)
        fil_status = t["status"].to_numpy(zero_copy_only=False)
        fil_begn, fil_end = _day_col(t["begndate"]), _day_col(t["enddate"])
        t = _read_strings(folder, "catalogue.csv", ["prov_admdvs", "med_list_codg", "pric_uplmt_amt"])
        cat_prov = pc.cast(pc.utf8_slice_codeunits(t["prov_admdvs"], 0, 2), pa.int64()).to_numpy()
        cat_code = t["med_list_codg"]
        # The cap only steers the prices drawn; read as a float and rounded to the
        # micro-yuan, it is exact for every cap below 10**9 yuan (15 significant
        # digits), so the view equals the one built from a loaded World.
        caps = t["pric_uplmt_amt"]
        cap_f = pc.cast(pc.fill_null(caps, "-1"), pa.float64()).to_numpy(zero_copy_only=False)
        cat_cap = np.where(cap_f < 0, -1, np.rint(cap_f * 1e6)).astype(np.int64)
    keep = chr_psn >= 0
    chr_psn, chr_dise = chr_psn[keep], chr_dise.filter(pa.array(keep))
    keep = fil_psn >= 0
    fil_psn, fil_dest = fil_psn[keep], fil_dest.filter(pa.array(keep))
    # The last day each filing is in force (section 4), so that a visit made
    # under a filing can be made while it holds.
    six = _six_months(fil_begn[keep])
    fil_last = fil_end[keep]
    temp = np.isin(fil_type[keep], sorted(TEMP_FILING_TYPES))
    fil_last = np.where(temp & (fil_last == DAY_OPEN), six, fil_last)
    fil_last = np.where(temp | (fil_status[keep] == "2"), np.minimum(fil_last, six), fil_last)
    fil_begn = fil_begn[keep]

    regions = sorted(set(inst_adm) | set(pc.unique(insuplc).to_pylist()))
    region_pa = pa.array(regions)
    psn_region = pc.index_in(insuplc, value_set=region_pa).to_numpy(zero_copy_only=False).astype(np.int64)
    inst_region = pc.index_in(pa.array(inst_adm), value_set=region_pa).to_numpy().astype(np.int64)

    # Catalogue: code ids in sorted order of the distinct codes, so that the
    # view does not depend on row order; each province keeps one row per code,
    # ordered by a national popularity that belongs to the world, not to the
    # stream's seed. A code with several versions takes the smallest cap of
    # them (none, -1, counting as smallest): again independent of row order.
    enc = pc.dictionary_encode(cat_code)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    order = pc.sort_indices(enc.dictionary).to_numpy()
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    codes = pc.take(enc.dictionary, pa.array(order))
    popularity = _rng(0, "popularity").permutation(order.size)
    pop = popularity[rank][enc.indices.to_numpy(zero_copy_only=False)]
    assert order.size < 1 << 40
    key = cat_prov << 40 | pop
    o = np.argsort(key, kind="stable")
    ks = key[o]
    first = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]) if o.size else np.zeros(0, np.int64)
    cap_min = np.minimum.reduceat(cat_cap[o], first) if o.size else np.zeros(0, np.int64)
    o = o[first]
    cat_provs, cat_start, cat_count = np.unique(cat_prov[o], return_index=True, return_counts=True)
    code_ids = rank[enc.indices.to_numpy(zero_copy_only=False)[o]]
    head = pc.utf8_slice_codeunits(codes, 0, 1).to_numpy(zero_copy_only=False).astype(str)
    code_kind = np.where(head == "X", KIND_WESTERN, np.where(head == "Z", KIND_TCM, np.where(
        head == "C", KIND_CONSUMABLE, KIND_SERVICE))).astype(np.int8)
    return WorldView(
        regions=regions, inst_code=inst_code, inst_name=inst_name, inst_region=inst_region,
        inst_lv=np.asarray(inst_lv, dtype=np.int64), psn_no=psn_no, psn_certno=certno,
        psn_insutype=insutype, psn_region=psn_region, chr_psn=chr_psn, chr_dise=chr_dise,
        fil_psn=fil_psn, fil_dest=fil_dest, fil_begn=fil_begn, fil_last=fil_last, cat_provs=cat_provs.astype(np.int64),
        cat_start=cat_start.astype(np.int64), cat_count=cat_count.astype(np.int64),
        cat_code_id=code_ids, cat_cap_micro=cap_min, codes=codes, code_kind=code_kind,
    )


# ---------------------------------------------------------------- visits


GEO_CROSS, GEO_LOCAL, GEO_INTRA = 0, 1, 2
# Hospital level of the visit (1, 2, 3): inpatients go to bigger hospitals.
LEVEL_P_INPATIENT = (0.15, 0.35, 0.50)
LEVEL_P_OUTPATIENT = (0.25, 0.35, 0.40)
FREQUENT_PERSON_SHARE = 0.05  # visits by a small pool of frequent patients
FILED_SOURCE_SHARE = 0.70  # of cross-province visits, those by a person with a filing there
FILING_IN_FORCE_SHARE = 0.85  # of visits under a filing, those under one in force
CHRONIC_OTHER_DISEASE_SHARE = 0.03
DRUG_COUNTS = (1, 2, 3, 4, 5, 6, 10, 12, 14, 20, 28, 30)
DRUG_COUNT_P = (0.22, 0.18, 0.12, 0.06, 0.05, 0.07, 0.09, 0.05, 0.05, 0.04, 0.04, 0.03)


def _time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds into the day: a morning peak, a smaller afternoon peak, a few at night."""
    comp = rng.choice(3, size=n, p=[0.55, 0.35, 0.10])
    s = np.where(comp == 0, rng.normal(9.75 * 3600, 1.1 * 3600, n),
                 np.where(comp == 1, rng.normal(15.0 * 3600, 1.2 * 3600, n), rng.uniform(0, 86_400, n)))
    return np.clip(s, 0, 86_399).astype(np.int64)


def _csr(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by key: (rows in key order, start per key, count per key)."""
    order = np.argsort(keys, kind="stable")
    count = np.bincount(keys, minlength=n_keys)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return order, start, count


@dataclass
class _Visits:
    t: np.ndarray  # int64 absolute seconds of the settling request
    inst: np.ndarray  # int64 institution row
    psn: np.ndarray  # int64 person row
    ip: np.ndarray  # bool inpatient
    insuplc: list[str]
    data: list[dict]
    feedetail: list[list[dict]]


def _visits(v: WorldView, rng: np.random.Generator, nv: int, start_day: int, days: int, *,
            inpatient_share: float, cross_share: float, local_share: float, late_share: float,
            nic_share: float, zipf_a: float) -> _Visits:
    """nv visits, each a complete settlement input (section 7), drawn column-wise."""
    regions = v.regions
    n_reg = len(regions)
    n_psn = len(v.psn_no)
    if n_psn == 0 or not v.inst_code:
        raise ValueError("the world has no persons or no institutions")
    reg_prov = np.array([int(r[:2]) for r in regions], dtype=np.int64)
    capital = np.array([r[2:4] == "01" for r in regions])
    treatable = np.bincount(v.inst_region, minlength=n_reg) > 0
    treat = np.flatnonzero(treatable)  # sorted codes: grouped by province
    provs_t, p_start, p_count = np.unique(reg_prov[treat], return_index=True, return_counts=True)
    p_cap = np.array([bool(capital[treat[s]]) for s in p_start])

    def region_in_province(pi: np.ndarray) -> np.ndarray:
        """A treatable region of province row pi: the capital three times as likely."""
        c = p_count[pi]
        w_cap = np.where(p_cap[pi], 3.0, 1.0)
        first = rng.random(pi.size) < w_cap / (w_cap + c - 1)
        other = 1 + (rng.random(pi.size) * np.maximum(c - 1, 1)).astype(np.int64)
        return treat[p_start[pi] + np.where(first | (c == 1), 0, np.minimum(other, c - 1))]

    pw = np.array([DESTINATION_WEIGHT.get(f"{p:02d}", 1.0) for p in provs_t])
    pw = pw / pw.sum()

    def other_province(own_pi: np.ndarray) -> np.ndarray:
        k = rng.choice(provs_t.size, size=own_pi.size, p=pw)
        if provs_t.size > 1:
            clash = k == own_pi
            k[clash] = (own_pi[clash] + rng.integers(1, provs_t.size, int(clash.sum()))) % provs_t.size
        return k

    # What kind of visit, who, and where.
    ip = rng.random(nv) < inpatient_share
    u = rng.random(nv)
    mt = np.where(ip, np.where(u < 0.88, 21, 24), np.where(u < 0.80, 11, np.where(u < 0.88, 13, 14)))
    n_chr, n_fil = v.chr_psn.size, v.fil_psn.size
    if n_chr == 0:
        mt[mt == 14] = 11
    g = rng.random(nv)
    geo = np.where(g < cross_share, GEO_CROSS, np.where(g < cross_share + local_share, GEO_LOCAL, GEO_INTRA))
    psn = rng.integers(0, n_psn, nv)
    frequent = rng.choice(n_psn, size=max(1, n_psn // 200), replace=False)
    freq = rng.random(nv) < FREQUENT_PERSON_SHARE
    psn[freq] = frequent[rng.integers(0, frequent.size, int(freq.sum()))]
    # A visit under a filing: most under one in force on the first day of the
    # window, the rest under any (expired, not yet begun: UNFILED after all).
    fil_row = rng.integers(0, max(n_fil, 1), nv)
    in_force = np.flatnonzero((v.fil_begn <= start_day) & (start_day <= v.fil_last))
    if in_force.size:
        use = rng.random(nv) < FILING_IN_FORCE_SHARE
        fil_row = np.where(use, in_force[rng.integers(0, in_force.size, nv)], fil_row)
    fil_src = (geo == GEO_CROSS) & (rng.random(nv) < FILED_SOURCE_SHARE) & (mt != 14) & (n_fil > 0)
    if n_fil:
        psn = np.where(fil_src, v.fil_psn[fil_row], psn)
    chr_row = rng.integers(0, max(n_chr, 1), nv)
    chronic = mt == 14
    if n_chr:
        psn = np.where(chronic, v.chr_psn[chr_row], psn)
    own = v.psn_region[psn]
    own_pi = np.searchsorted(provs_t, reg_prov[own])
    own_pi_ok = (own_pi < provs_t.size) & (provs_t[np.minimum(own_pi, provs_t.size - 1)] == reg_prov[own])
    own_pi = np.where(own_pi_ok, own_pi, 0)

    trt = region_in_province(other_province(np.where(own_pi_ok, own_pi, -1)))  # cross by default
    local = (geo == GEO_LOCAL) & treatable[own]
    trt = np.where(local, own, trt)
    intra = (geo == GEO_INTRA) & own_pi_ok
    if intra.any():
        c = p_count[own_pi]
        pick = treat[p_start[own_pi] + (rng.random(nv) * c).astype(np.int64)]
        pick = np.where((pick == own) & (c > 1),
                        treat[p_start[own_pi] + (np.searchsorted(treat, own) - p_start[own_pi] + 1) % np.maximum(c, 1)],
                        pick)
        trt = np.where(intra, pick, trt)
    if n_fil and fil_src.any():
        enc = pc.dictionary_encode(v.fil_dest)
        dests = enc.dictionary.to_pylist()
        dest_id = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        cand: list[np.ndarray] = []
        for d in dests:
            if d.endswith("0000"):
                hit = [i for i in treat if regions[i][:2] == d[:2]]
            elif d.endswith("00"):
                hit = [i for i in treat if regions[i][:4] == d[:4]]
            else:
                hit = [i for i in treat if regions[i] == d]
            cand.append(np.array(hit, dtype=np.int64))
        c_count = np.array([len(c) for c in cand], dtype=np.int64)
        c_start = np.concatenate([[0], np.cumsum(c_count)[:-1]])
        c_flat = np.concatenate(cand + [np.zeros(1, np.int64)])
        d = dest_id[fil_row]
        ok = fil_src & (c_count[d] > 0)
        pick = c_flat[c_start[d] + (rng.random(nv) * np.maximum(c_count[d], 1)).astype(np.int64)]
        trt = np.where(ok, pick, trt)

    # The institution: by level within the region, any level if that one is missing.
    lv = np.where(ip, rng.choice(3, size=nv, p=LEVEL_P_INPATIENT), rng.choice(3, size=nv, p=LEVEL_P_OUTPATIENT))
    k_rows, k_start, k_count = _csr(v.inst_region * 3 + (v.inst_lv - 1), n_reg * 3)
    r_rows, r_start, r_count = _csr(v.inst_region, n_reg)
    key = trt * 3 + lv
    by_lv = k_rows[np.minimum(k_start[key] + (rng.random(nv) * k_count[key]).astype(np.int64), k_rows.size - 1)]
    any_lv = r_rows[np.minimum(r_start[trt] + (rng.random(nv) * r_count[trt]).astype(np.int64), r_rows.size - 1)]
    inst = np.where(k_count[key] > 0, by_lv, any_lv)

    # When: a day of the window (weekends quieter), a time of day; inpatients
    # stayed days before the discharge settlement, outpatients minutes to hours.
    dw = np.array([0.6 if money.day_to_date(start_day + d).weekday() >= 5 else 1.0 for d in range(days)])
    t = (start_day + rng.choice(days, size=nv, p=dw / dw.sum())) * EPOCH_DAY_SECONDS + _time_of_day(rng, nv)
    end_t = t - rng.integers(300, 3600, nv)
    los = np.clip(np.rint(np.exp(np.log(7.0) + 0.6 * rng.standard_normal(nv))), 1, IP_LOS_DAYS_MAX).astype(np.int64)
    begn_t = np.where(ip, end_t - los * EPOCH_DAY_SECONDS - rng.integers(0, 6 * 3600, nv),
                      t - rng.integers(600, 3 * 3600, nv))
    fee_hi = np.where(ip, end_t, t - 60)
    # A few outpatient visits uploaded late, from December of the year before (E_DATE
    # for a person whose accounting year has already moved on).
    late = ~ip & (rng.random(nv) < late_share)
    prev_dec = _day(f"{money.day_year(start_day) - 1}-12-01") * EPOCH_DAY_SECONDS
    late_begn = prev_dec + rng.integers(8 * 3600, 31 * EPOCH_DAY_SECONDS - 8 * 3600, nv)
    begn_t = np.where(late, late_begn, begn_t)
    fee_hi = np.where(late, late_begn + rng.integers(600, 3 * 3600, nv), fee_hi)

    # Fee lines.
    nl = np.where(ip, np.clip(np.rint(np.exp(np.log(60.0) + 0.7 * rng.standard_normal(nv))), 1, IP_LINES_MAX),
                  np.minimum(rng.geometric(0.16, nv), OP_LINES_MAX)).astype(np.int64)
    n_lines = int(nl.sum())
    lvis = np.repeat(np.arange(nv), nl)
    lstart = np.concatenate([[0], np.cumsum(nl)[:-1]])
    fee_t = begn_t[lvis] + (rng.random(n_lines) * (fee_hi - begn_t)[lvis]).astype(np.int64)
    n_codes = len(v.codes)
    if n_codes == 0:
        raise ValueError("the world has an empty catalogue")
    # The treatment province's catalogue: row cp of cat_provs, m codes (0: none).
    cp = np.minimum(np.searchsorted(v.cat_provs, reg_prov[trt]), v.cat_provs.size - 1)
    m = np.where(v.cat_provs[cp] == reg_prov[trt], v.cat_count[cp], 0)[lvis]
    # Zipf(zipf_a) ranks, bounded by the province's catalogue: inverse transform
    # on one shared table of cumulative weights.
    cdf = np.cumsum(np.arange(1, int(v.cat_count.max()) + 1, dtype=np.float64) ** -zipf_a)
    r = np.searchsorted(cdf, rng.random(n_lines) * cdf[np.maximum(m - 1, 0)], side="right")
    row = v.cat_start[cp][lvis] + np.minimum(r, np.maximum(m - 1, 0))
    code_id = v.cat_code_id[row]
    cap = v.cat_cap_micro[row]
    # Codes the province does not list: drawn from every code, and mistyped below.
    fake = (rng.random(n_lines) < nic_share) | (m == 0)
    code_id = np.where(fake, rng.integers(0, n_codes, n_lines), code_id)
    cap = np.where(fake, -1, cap)
    kind = v.code_kind[code_id]
    # Counts: packs of drugs, single services and consumables, some fractions.
    drug_n = np.asarray(DRUG_COUNTS)[rng.choice(len(DRUG_COUNTS), size=n_lines, p=DRUG_COUNT_P)]
    svc_n = np.where(rng.random(n_lines) < 0.7, 1, rng.integers(2, 6, n_lines))
    cons_n = np.where(rng.random(n_lines) < 0.8, 1, rng.integers(2, 11, n_lines))
    cnt = np.where(kind <= KIND_TCM, drug_n, np.where(kind == KIND_SERVICE, svc_n, cons_n)) * 10_000
    frac = rng.random(n_lines) < 0.08
    cnt = np.where(frac, np.where(rng.random(n_lines) < 0.5, 5_000, rng.integers(100, 100_000, n_lines)), cnt)
    cnt = np.clip(cnt, 1, CNT_MAX_UNITS * 10_000).astype(np.int64)
    # Prices: around the cap where there is one (some above it), else by kind.
    free_yuan = np.asarray(KIND_PRICE_MEDIAN_YUAN)[kind] * np.exp(
        np.asarray(KIND_PRICE_SIGMA)[kind] * rng.standard_normal(n_lines))
    price_yuan = np.where(cap >= 0, cap / 1e6 * rng.uniform(0.55, 1.12, n_lines), free_yuan)
    pric = np.clip(np.rint(price_yuan * 1e6), 10_000, PRICE_MAX_MICRO).astype(np.int64)
    u = rng.random(n_lines)
    pric = np.where(u < 0.65, pric // 10_000 * 10_000, np.where(u < 0.8, pric // 100 * 100, pric))
    assert n_lines == 0 or float(pric.max()) * float(cnt.max()) < 2.0**62, "ext would overflow int64"
    amt = (pric * cnt + 50_000_000) // 100_000_000  # money.ext, column-wise
    # Lines of a visit in the order they were charged.
    o = np.lexsort((fee_t, lvis))
    fee_t, code_id, cnt, pric, amt, fake, m = fee_t[o], code_id[o], cnt[o], pric[o], amt[o], fake[o], m[o]
    medfee = np.add.reduceat(amt, lstart) if nv else np.zeros(0, np.int64)

    code_s = pc.take(v.codes, pa.array(code_id)).to_pylist()
    for i in np.flatnonzero(fake & (m > 0)).tolist():
        # A national code the province does not list (or a mistyped one).
        code_s[i] = code_s[i][:-3] + "999"
    pos = (np.arange(n_lines) - lstart[lvis]).tolist()
    width = max(4, len(str(int(nl.max())))) if nv else 4
    sn_s = [f"{j + 1:0{width}d}" for j in range(int(nl.max()) if nv else 0)]
    ml_s = [f"L{j}" for j in range(len(sn_s))]
    lines = [
        {"feedetl_sn": sn_s[j], "med_list_codg": c, "medins_list_codg": ml_s[j], "det_item_fee_sumamt": a,
         "cnt": q, "pric": p, "fee_ocur_time": f}
        for j, c, a, q, p, f in zip(
            pos, code_s, _fmt_scaled(amt, 2).to_pylist(), _fmt_scaled(cnt, 4).to_pylist(),
            _fmt_scaled(pric, 6).to_pylist(), _time_strs(fee_t),
        )
    ]

    # The settlement input of each visit.
    psn_pa = pa.array(psn)
    psn_no = pc.take(v.psn_no, psn_pa).to_pylist()
    certno = pc.take(v.psn_certno, psn_pa).to_pylist()
    insutype = pc.take(v.psn_insutype, psn_pa).to_pylist()
    if n_chr:
        dise = pc.take(v.chr_dise, pa.array(chr_row)).to_pylist()
        other = rng.random(nv) < CHRONIC_OTHER_DISEASE_SHARE
        alt = np.asarray(CHRONIC_DISEASES)[rng.integers(0, len(CHRONIC_DISEASES), nv)]
        dise = [a if o_ else d for d, a, o_ in zip(dise, alt.tolist(), other.tolist())]
    else:
        dise = [None] * nv
    u = rng.random(nv)
    cert_type = np.where(u < 0.7, "02", np.where(u < 0.9, "01", "03")).tolist()
    emp = np.array([t_ == "310" for t_ in insutype], dtype=bool)
    acct = np.where(rng.random(nv) < np.where(emp, 0.8, 0.1), "1", "0").tolist()
    begn_s, end_s = _time_strs(begn_t), _time_strs(end_t)
    t_day = t // EPOCH_DAY_SECONDS
    ymd = {d: money.format_day(int(d)).replace("-", "") for d in np.unique(t_day).tolist()}
    medfee_s = _fmt_scaled(medfee, 2).to_pylist()
    data, feedetail = [], []
    ip_l, mt_l, trt_l, lstart_l, nl_l = ip.tolist(), mt.tolist(), trt.tolist(), lstart.tolist(), nl.tolist()
    t_day_l = t_day.tolist()
    for i in range(nv):
        d = {
            "psn_no": psn_no[i],
            "mdtrt_cert_type": cert_type[i],
            "mdtrt_cert_no": psn_no[i] if cert_type[i] == "01" else certno[i],
            "med_type": str(mt_l[i]),
            "mdtrt_id": f"{regions[trt_l[i]]}{ymd[t_day_l[i]]}{i:08d}",
            "insutype": insutype[i],
            "medfee_sumamt": medfee_s[i],
            "acct_used_flag": acct[i],
            "begntime": begn_s[i],
        }
        if ip_l[i]:
            d["endtime"] = end_s[i]
        if mt_l[i] == 14:
            d["dise_codg"] = dise[i]
        data.append(d)
        feedetail.append(lines[lstart_l[i]:lstart_l[i] + nl_l[i]])
    insuplc = [regions[r_] for r_ in own.tolist()]
    return _Visits(t=t, inst=inst, psn=psn, ip=ip, insuplc=insuplc, data=data, feedetail=feedetail)


# ---------------------------------------------------------------- request streams

# Order of events that fall on the same second: a card read comes before the
# pre-settlement, which comes before the settlement, and so on.
PHASE_QUERY, PHASE_PRE, PHASE_SETTLE, PHASE_REVERSE, PHASE_RESETTLE, PHASE_ANOMALY, PHASE_RETRY = range(7)
ENVELOPE_CONSTANTS = {"recer_sys_code": "YIDI", "infver": "V1.0", "opter_type": "1"}
OPERATORS_PER_INSTITUTION = 20
QUERY_UNKNOWN_SHARE = 0.03
PRESETTLE_ALONE_SHARE = 0.2  # pre-settlements the patient never settles
RESETTLE_SHARE = 0.5  # reversals followed by a corrected settlement of the same visit
# Requests that are wrong on purpose, each aimed at one refusal of section 7.
ANOMALIES = (
    "bad_med_type", "bad_decimal", "missing_field", "unknown_person", "unknown_institution",
    "wrong_region", "insutype_mismatch", "line_amount", "total_amount", "line_limit", "unknown_infno",
    "duplicate_visit", "msgid_reused", "no_qualification", "late_date",
    "reverse_unknown", "reverse_other_institution", "reverse_twice", "reverse_mismatch",
)


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic collector while millions of acyclic dicts are built.

    Every allocation burst would otherwise trigger full passes over all live
    objects (the caller's too); nothing built here holds a cycle.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _copy_input(inp: dict) -> dict:
    return {"data": dict(inp["data"]), "feedetail": [dict(ln) for ln in inp["feedetail"]]}


def _fmt_time(abs_s: int) -> str:
    day, sec = divmod(int(abs_s), EPOCH_DAY_SECONDS)
    return f"{money.format_day(day)} {sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"


def gen_requests(
    world: object,
    n: int,
    *,
    seed: int = 1,
    start: str = "2026-11-20",
    days: int = 1,
    inpatient_share: float = 0.15,
    retry_share: float = 0.01,
    reversal_share: float = 0.01,
    malformed_share: float = 0.002,
    zipf_a: float = 1.1,
    presettle_share: float = 0.05,
    query_share: float = 0.03,
    cross_province_share: float = 0.70,
    local_share: float = 0.20,
    late_share: float = 0.003,
    not_in_catalogue_share: float = 0.01,
) -> list[dict]:
    """n envelopes (SETTLEMENT.md section 7) against a world, in the order a replay feeds them.

    world: a folder, an engine.world.World, or a WorldView (reuse one for many streams).
    The stream holds settlements (2207 outpatient, 2304 inpatient), pre-settlements
    (2206/2303) shortly before most of them, person queries (1101), reversals
    (2208/2305, some followed by a corrected settlement of the same visit),
    retries (the very same envelope again, later) and `malformed_share` requests
    that are wrong on purpose (ANOMALIES). inf_time never goes back, except on a
    retry, which repeats the original's inf_time with the rest of the envelope.
    cross_province_share and local_share split the visits; the rest are in another
    region of the insured province. Everything else is section 7 as written.
    """
    if n < 1:
        raise ValueError("n must be positive")
    if days < 1:
        raise ValueError("days must be positive")
    if zipf_a <= 0:
        raise ValueError("zipf_a must be positive")
    v = world if isinstance(world, WorldView) else world_view(world)
    with _gc_paused():
        return _stream(v, n, seed=seed, start=start, days=days, inpatient_share=inpatient_share,
                       retry_share=retry_share, reversal_share=reversal_share, malformed_share=malformed_share,
                       zipf_a=zipf_a, presettle_share=presettle_share, query_share=query_share,
                       cross_province_share=cross_province_share, local_share=local_share,
                       late_share=late_share, not_in_catalogue_share=not_in_catalogue_share)


def _stream(v: WorldView, n: int, *, seed: int, start: str, days: int, inpatient_share: float,
            retry_share: float, reversal_share: float, malformed_share: float, zipf_a: float,
            presettle_share: float, query_share: float, cross_province_share: float, local_share: float,
            late_share: float, not_in_catalogue_share: float) -> list[dict]:
    """gen_requests on a view, with the collector paused."""
    rng = _rng(seed, "requests")
    n_query = round(n * query_share)
    n_pre = round(n * presettle_share)
    n_rev = round(n * reversal_share)
    n_reset = int(n_rev * RESETTLE_SHARE)
    n_retry = round(n * retry_share)
    n_bad = round(n * malformed_share)
    n_settle = n - n_query - n_pre - n_rev - n_reset - n_retry - n_bad
    if n_settle < 1 or n_rev > n_settle:
        raise ValueError("the shares leave too few settlements")
    n_pre_alone = int(n_pre * PRESETTLE_ALONE_SHARE)
    nv = n_settle + n_pre_alone
    start_day = _day(start)
    vis = _visits(
        v, rng, nv, start_day, days, inpatient_share=inpatient_share, cross_share=cross_province_share,
        local_share=local_share, late_share=late_share, nic_share=not_in_catalogue_share, zipf_a=zipf_a,
    )
    regions = v.regions
    inst_region = v.inst_region.tolist()
    t_vis = vis.t.tolist()
    inst_vis = vis.inst.tolist()
    t_str_vis = _time_strs(vis.t)
    events: list[tuple[int, int, int, dict]] = []
    seq = iter(range(1, 10**10))

    def msgid_for(inst: int, t: int) -> str:
        return f"{v.inst_code[inst]}{money.format_day(t // EPOCH_DAY_SECONDS).replace('-', '')}{next(seq):010d}"

    def envelope(infno: str, inst: int, insuplc: str, t: int, inp: dict, t_str: str | None = None,
                 msgid: str | None = None) -> dict:
        opter = 1 + (inst * 7 + t // 3600) % OPERATORS_PER_INSTITUTION
        return {
            "infno": infno,
            "msgid": msgid or msgid_for(inst, t),
            "mdtrtarea_admvs": regions[inst_region[inst]],
            "insuplc_admdvs": insuplc,
            **ENVELOPE_CONSTANTS,
            "opter": f"{opter:04d}",
            "opter_name": f"收费员{opter:02d}",
            "inf_time": t_str or _fmt_time(t),
            "fixmedins_code": v.inst_code[inst],
            "fixmedins_name": v.inst_name[inst],
            "sign_no": f"{inst:06d}{t // EPOCH_DAY_SECONDS % 1000:03d}",
            "input": inp,
        }

    def add(t: int, phase: int, env: dict) -> None:
        events.append((t, phase, len(events), env))

    def later(t: int, mean_s: float) -> int:
        return t + 1 + int(rng.exponential(mean_s))

    # Settlements, and the pre-settlements that never become one.
    settles: list[tuple[int, int, dict]] = []  # (visit, t, envelope)
    for i in range(nv):
        inp = {"data": vis.data[i], "feedetail": vis.feedetail[i]}
        if i < n_settle:
            env = envelope("2304" if vis.ip[i] else "2207", inst_vis[i], vis.insuplc[i], t_vis[i], inp, t_str_vis[i])
            add(t_vis[i], PHASE_SETTLE, env)
            settles.append((i, t_vis[i], env))
        else:
            add(t_vis[i], PHASE_PRE, envelope("2303" if vis.ip[i] else "2206", inst_vis[i], vis.insuplc[i],
                                              t_vis[i], inp, t_str_vis[i]))
    # Pre-settlements a few minutes before their settlement.
    for i in rng.choice(n_settle, size=min(n_pre - n_pre_alone, n_settle), replace=False).tolist():
        t = max(t_vis[i] - int(rng.integers(60, 1200)), start_day * EPOCH_DAY_SECONDS)
        add(t, PHASE_PRE, envelope("2303" if vis.ip[i] else "2206", inst_vis[i], vis.insuplc[i], t,
                                   _copy_input(settles[i][2]["input"])))
    # Person queries (1101) when the card is read, before the visit's first request.
    for i in rng.integers(0, nv, n_query).tolist():
        t = max(t_vis[i] - int(rng.integers(1200, 3600)), start_day * EPOCH_DAY_SECONDS)
        d = vis.data[i]
        data = {"mdtrt_cert_type": d["mdtrt_cert_type"], "mdtrt_cert_no": d["mdtrt_cert_no"]}
        if rng.random() < QUERY_UNKNOWN_SHARE:
            data = {"mdtrt_cert_type": "02", "mdtrt_cert_no": f"{vis.insuplc[i]}19000101999X"}
        add(t, PHASE_QUERY, envelope("1101", inst_vis[i], vis.insuplc[i], t, {"data": data}))

    # Reversals of earlier settlements, half of them followed by a corrected one.
    committed: list[tuple[int, dict]] = [(t, env) for _, t, env in settles]
    reversals: list[tuple[int, int, dict]] = []  # (settle index, t, envelope)

    def reversal(si: int, t: int, inst: int | None = None, infno: str | None = None,
                 mdtrt_id: str | None = None, setl_id: str | None = None) -> dict:
        i, _, senv = settles[si]
        d = senv["input"]["data"]
        return envelope(
            infno or ("2305" if vis.ip[i] else "2208"), inst_vis[i] if inst is None else inst, vis.insuplc[i], t,
            {"data": {"setl_id": setl_id or "S" + senv["msgid"], "mdtrt_id": mdtrt_id or d["mdtrt_id"],
                      "psn_no": d["psn_no"]}},
        )

    targets = rng.choice(n_settle, size=n_rev, replace=False).tolist()
    for k, si in enumerate(targets):
        t = later(settles[si][1], 2400)
        env = reversal(si, t)
        add(t, PHASE_REVERSE, env)
        reversals.append((si, t, env))
        committed.append((t, env))
        if k < n_reset:
            i, _, senv = settles[si]
            inp = _copy_input(senv["input"])
            if len(inp["feedetail"]) > 1:
                inp["feedetail"].pop()
                total = sum(money.parse_fen(ln["det_item_fee_sumamt"]) for ln in inp["feedetail"])
                inp["data"]["medfee_sumamt"] = money.format_fen(total)
            t2 = later(t, 600)
            env2 = envelope(senv["infno"], inst_vis[i], vis.insuplc[i], t2, inp)
            add(t2, PHASE_RESETTLE, env2)
            committed.append((t2, env2))

    # Requests wrong on purpose.
    for kind_i in rng.integers(0, len(ANOMALIES), n_bad).tolist():
        kind = ANOMALIES[kind_i]
        si = int(rng.integers(0, n_settle))
        i, t0, senv = settles[si]
        t = later(t0, 600)
        if kind.startswith("reverse_"):
            if kind == "reverse_twice" and reversals:
                si, tr, _ = reversals[int(rng.integers(0, len(reversals)))]
                t = later(tr, 600)
                env = reversal(si, t)
            elif kind == "reverse_other_institution":
                other = (inst_vis[i] + 1 + int(rng.integers(0, max(len(v.inst_code) - 1, 1)))) % len(v.inst_code)
                env = reversal(si, t, inst=other)
            elif kind == "reverse_mismatch":  # the other kind's infno, or another visit's mdtrt_id
                if rng.random() < 0.5:
                    env = reversal(si, t, infno="2208" if vis.ip[i] else "2305")
                else:
                    env = reversal(si, t, mdtrt_id=senv["input"]["data"]["mdtrt_id"] + "X")
            else:  # reverse_unknown, or reverse_twice with nothing reversed yet
                env = reversal(si, t, setl_id=f"S{v.inst_code[inst_vis[i]]}000000009999999999")
            add(t, PHASE_ANOMALY, env)
            continue
        inp = _copy_input(senv["input"])
        d, lines = inp["data"], inp["feedetail"]
        d["mdtrt_id"] = d["mdtrt_id"] + f"B{kind_i:02d}{len(events):06d}"
        infno, inst, insuplc, msgid = senv["infno"], inst_vis[i], senv["insuplc_admdvs"], None
        env_over: dict[str, str] = {}
        if kind == "bad_med_type":
            d["med_type"] = "99" if rng.random() < 0.5 else ("11" if vis.ip[i] else "21")
        elif kind == "bad_decimal":
            which = int(rng.integers(0, 3))
            if which == 0:
                lines[0]["det_item_fee_sumamt"] = lines[0]["det_item_fee_sumamt"] + "5"
            elif which == 1:
                lines[0]["pric"] = lines[0]["pric"] + "1"
            else:
                d["medfee_sumamt"] = "1," + d["medfee_sumamt"]
        elif kind == "missing_field":
            del d["psn_no" if rng.random() < 0.5 else "begntime"]
        elif kind == "unknown_person":
            d["psn_no"] = f"P{insuplc}X{int(rng.integers(0, 10**7)):07d}"
        elif kind == "unknown_institution":
            env_over["fixmedins_code"] = f"H{regions[inst_region[inst]]}9{int(rng.integers(0, 10**4)):04d}"
        elif kind == "wrong_region":
            env_over["mdtrtarea_admvs"] = regions[(inst_region[inst] + 1) % len(regions)]
        elif kind == "insutype_mismatch":
            d["insutype"] = "390" if d["insutype"] == "310" else "310"
        elif kind == "line_amount":
            bumped = money.parse_fen(lines[0]["det_item_fee_sumamt"]) + 5
            lines[0]["det_item_fee_sumamt"] = money.format_fen(bumped)
            d["medfee_sumamt"] = money.format_fen(money.parse_fen(d["medfee_sumamt"]) + 5)
        elif kind == "total_amount":
            d["medfee_sumamt"] = money.format_fen(money.parse_fen(d["medfee_sumamt"]) + 1)
        elif kind == "line_limit":
            d["medfee_sumamt"] = money.format_fen(
                money.parse_fen(d["medfee_sumamt"]) - money.parse_fen(lines[0]["det_item_fee_sumamt"]))
            lines[0]["cnt"], lines[0]["det_item_fee_sumamt"] = "0.0000", "0.00"
        elif kind == "unknown_infno":
            infno = "2209"
        elif kind == "duplicate_visit":
            d["mdtrt_id"] = senv["input"]["data"]["mdtrt_id"]
        elif kind == "msgid_reused":
            d["mdtrt_id"] = senv["input"]["data"]["mdtrt_id"]
            d["acct_used_flag"] = "0" if d["acct_used_flag"] == "1" else "1"
            msgid = senv["msgid"]
        elif kind == "no_qualification":
            infno = "2207"
            d["med_type"] = "14"
            d["dise_codg"] = "M99900"
            d.pop("endtime", None)
        elif kind == "late_date":
            late = _fmt_time(_day(f"{money.day_year(start_day) - 1}-12-15") * EPOCH_DAY_SECONDS + 36_000)
            d["begntime"] = late
            if "endtime" in d:
                d["endtime"] = late
        env = envelope(infno, inst, insuplc, t, inp, msgid=msgid)
        env.update(env_over)
        add(t, PHASE_ANOMALY, env)

    # Retries: the same envelope, byte for byte, sent again after a timeout.
    for k in rng.integers(0, len(committed), n_retry).tolist():
        t, env = committed[k]
        add(later(t, 180), PHASE_RETRY, orjson.loads(orjson.dumps(env)))

    events.sort(key=lambda e: (e[0], e[1], e[2]))
    assert len(events) == n
    return [e[3] for e in events]


def write_requests_jsonl(path: str, envelopes: Iterable[dict]) -> int:
    """One envelope per line, as the public requests.jsonl; returns the number written."""
    count = 0
    buf: list[bytes] = []
    with open(path, "wb") as f:
        for env in envelopes:
            buf.append(orjson.dumps(env))
            count += 1
            if len(buf) >= 4096:
                f.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    return count
