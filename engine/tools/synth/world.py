"""The synthetic world folder (docs/contract.md section 2): `gen_world` writes every file
that `engine.world.loader.load_world` reads, each from its own generator.

Everything big is drawn as NumPy columns and formatted with Arrow compute
kernels; no Python loop runs once per catalogue row or per person.
"""
from __future__ import annotations

import json
import os
import time
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.contract import money
from engine.contract.protocol import MAINLAND_PROVINCES
from engine.tools.synth.draws import (
    CHRONIC_DISEASES, DESTINATION_WEIGHT, KIND_CONSUMABLE, KIND_PRICE_MEDIAN_YUAN, KIND_PRICE_SIGMA, KIND_SERVICE,
    KIND_TCM, KIND_WESTERN, PRICE_MAX_MICRO, date_col, day_of, fmt_scaled, join, lpad, rng_for, str_col,
)

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
INSUTYPES = ("310", "390")
HOSP_LEVEL_NAMES = {1: "一级", 2: "二级", 3: "三级"}
# Outpatient chronic and special diseases (门诊慢特病): hypertension and diabetes
# are by far the most common and every policy lists them.
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

KIND_SHARE = (0.45, 0.15, 0.25, 0.15)
KIND_NAME_PREFIX = ("西药", "中成药", "诊疗项目", "医用耗材")
SERVICE_PREFIXES = (
    "0011", "0012", "0013", "0021", "0022", "0023", "0024", "0025", "0026", "0027", "0031", "0033",
)

# Bounds (TigerStyle: a named limit on everything this module draws).
CERT_SEQ_SLOTS = 500  # 3-digit sequence: two sexes x 500 slots per (region, birthday)

DATE_CATALOGUE_BASE = "2020-01-01"


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


def _pick(rng: np.random.Generator, xs: Sequence):
    return xs[int(rng.integers(0, len(xs)))]


def _bp_between(rng: np.random.Generator, lo: int, hi: int, step: int = 50) -> int:
    return lo + step * int(rng.integers(0, (hi - lo) // step + 1))


def _yuan_text(yuan: int) -> str:
    return money.format_fen(int(yuan) * 100)


def _policy(rng: np.random.Generator, region: str, insutype: str) -> dict:
    """One policy object (section 5) inside the load-time limits, as in policies.json."""
    y, r = _yuan_text, money.format_bp
    t = _policy_amounts(rng, insutype == "310")
    tiers = _inpatient_tiers(rng, t["first_ratio"])
    sl_tiers = _second_layer_tiers(rng)
    chronic = _chronic_terms(rng)
    unfiled = None if rng.random() < 0.25 else r(_pick(rng, [2000, 3000, 4000]))
    ded, op_ratio = t["ded"], t["op_ratio"]
    return {
        "insuplc_admdvs": region,
        "insutype": insutype,
        "annual_cap": y(t["annual_cap"]),
        "inpatient": {
            "deductible": {"1": y(ded[0]), "2": y(ded[1]), "3": y(ded[2])},
            "tiers": tiers,
            "retiree_bonus": r(t["ip_bonus"]),
        },
        "outpatient": {
            "annual_deductible": y(t["op_ded"]),
            "ratio": {"1": r(op_ratio[0]), "2": r(op_ratio[1]), "3": r(op_ratio[2])},
            "annual_cap": y(t["op_cap"]),
            "retiree_bonus": r(t["op_bonus"]),
            "requires_filing": bool(rng.random() < 0.6),
        },
        "chronic": chronic,
        "second_layer": {"threshold": y(t["sl_threshold"]), "tiers": sl_tiers, "annual_cap": y(t["sl_cap"])},
        "reduction": {
            "long_term": r(_pick(rng, [0, 0, 0, 0, 500])),
            "referral": r(_pick(rng, [0, 500, 1000])),
            "emergency": r(_pick(rng, [0, 500, 1000])),
            "temp_other": r(_pick(rng, [1000, 1500, 2000])),
            "unfiled": unfiled,
        },
    }


def _policy_amounts(rng: np.random.Generator, employee: bool) -> dict:
    """The scalar terms of a policy (yuan, bp): employees' (310) richer than residents' (390)."""
    pick = lambda xs: _pick(rng, xs)  # noqa: E731
    bp = lambda lo, hi, step=50: _bp_between(rng, lo, hi, step)  # noqa: E731
    if employee:
        return dict(
            annual_cap=pick([300_000, 400_000, 500_000, 600_000]),
            ded=(pick([200, 300, 400]), pick([400, 500, 600, 800]), pick([800, 1000, 1200, 1500])),
            first_ratio=(bp(8800, 9500), bp(8200, 9000), bp(7800, 8800)),
            ip_bonus=pick([200, 300, 500]),
            op_ded=pick([200, 300, 500, 800, 1000]),
            op_ratio=sorted((bp(6500, 8000, 500), bp(5500, 7000, 500), bp(5000, 6000, 500)), reverse=True),
            op_cap=pick([2000, 3000, 4000, 5000, 6000, 8000]),
            op_bonus=pick([500, 1000, 1500]),
            sl_threshold=pick([15_000, 20_000, 25_000, 30_000]),
            sl_cap=pick([300_000, 400_000, 500_000]),
        )
    return dict(
        annual_cap=pick([150_000, 200_000, 250_000, 300_000]),
        ded=(pick([100, 200, 300]), pick([400, 500, 600]), pick([800, 1000, 1200])),
        first_ratio=(bp(8500, 9000), bp(7000, 8000), bp(5500, 6500)),
        ip_bonus=0,
        op_ded=pick([0, 50, 100, 200]),
        op_ratio=sorted((bp(5000, 6000, 500), bp(4000, 5500, 500), bp(3500, 5000, 500)), reverse=True),
        op_cap=pick([300, 400, 500, 800]),
        op_bonus=0,
        sl_threshold=pick([12_000, 15_000, 18_000, 20_000]),
        sl_cap=pick([300_000, 400_000, 500_000]),
    )


def _inpatient_tiers(rng: np.random.Generator, first_ratio: tuple[int, int, int]) -> dict:
    """Per hospital level, 1-3 tiers of rising ratio (the last one open)."""
    tiers = {}
    for lv in (1, 2, 3):
        n_tiers = int(rng.integers(1, 4))
        uppers = sorted(rng.choice([10_000, 20_000, 30_000, 50_000, 100_000, 150_000], n_tiers - 1,
                                   replace=False).tolist())
        ratio = first_ratio[lv - 1]
        rows = []
        for j in range(n_tiers):
            rows.append([_yuan_text(uppers[j]) if j < n_tiers - 1 else None, money.format_bp(min(ratio, 9700))])
            ratio += _bp_between(rng, 0, 500, 100)
        tiers[str(lv)] = rows
    return tiers


def _second_layer_tiers(rng: np.random.Generator) -> list:
    n_sl = int(rng.integers(1, 4))
    sl_uppers = [100_000, 200_000][: n_sl - 1]
    sl_ratio = _bp_between(rng, 5000, 6500, 500)
    sl_tiers = []
    for j in range(n_sl):
        sl_tiers.append([_yuan_text(sl_uppers[j]) if j < n_sl - 1 else None, money.format_bp(min(sl_ratio, 9000))])
        sl_ratio += 1000
    return sl_tiers


def _chronic_terms(rng: np.random.Generator) -> dict:
    """The chronic diseases a policy lists (hypertension and diabetes always), each with its terms."""
    chronic = {}
    for d in CHRONIC_DISEASES:
        if d in CHRONIC_ALWAYS_LISTED or rng.random() < 0.85:
            chronic[d] = {
                "ratio": money.format_bp(_pick(rng, [6000, 6500, 7000, 7500, 8000, 8500])),
                "annual_cap": _yuan_text(_pick(rng, [2000, 3000, 4000, 5000, 6000, 8000, 10_000])),
            }
    return chronic


# ---------------------------------------------------------------- catalogue


def _catalogue(rng: np.random.Generator, provs: list[str], per_province: int) -> pa.Table:
    """docs/contract.md section 2 catalogue: a shared national code pool, one subset per province."""
    n_two = int(round(per_province * 0.03 / 1.03))  # codes with two date versions: ~3 % of codes
    k = per_province - n_two  # distinct codes per province
    pool = _Pool(rng, max(k, int(per_province * 1.3)) + 8)
    parts: dict[str, list] = {c: [] for c in ("prov", "pool", "lv", "selfpay", "cap", "lmt", "begn", "end")}
    for pi in range(len(provs)):
        for c, values in _province_catalogue(rng, pool, k, n_two).items():
            parts[c].append(values)
        parts["prov"].append(np.full(per_province, pi, dtype=np.int32))
    col = {c: np.concatenate(v) for c, v in parts.items()}
    pool_idx = pa.array(col["pool"].astype(np.int64))
    lv = col["lv"]
    cap = col["cap"]
    return pa.table({
        "prov_admdvs": pc.take(pa.array([p + "0000" for p in provs]), pa.array(col["prov"])),
        "med_list_codg": pc.take(pool.code, pool_idx),
        "med_list_name": pc.take(pool.name, pool_idx),
        "chrgitm_lv": pc.take(pa.array(["01", "02", "03"]), pa.array(lv.astype(np.int32) - 1)),
        "selfpay_prop": fmt_scaled(col["selfpay"], money.BP_PLACES, mask_absent=lv != 2),
        "pric_uplmt_amt": fmt_scaled(cap, money.MICRO_PLACES, mask_absent=cap < 0, short2=cap % 10_000 == 0),
        "lmt_used_flag": pc.take(pa.array(["0", "1"]), pa.array(col["lmt"].astype(np.int32))),
        "begndate": date_col(col["begn"]),
        "enddate": date_col(np.maximum(col["end"], 0), mask_absent=col["end"] < 0),
    }).sort_by([("prov_admdvs", "ascending"), ("med_list_codg", "ascending"), ("begndate", "ascending")])
    # Sorted by province, code and date, as national catalogues are published.


_CODE_DIGITS, _CODE_UPPER = b"0123456789", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The alphabet of each position of a national code, by kind.
_CODE_ALPHABETS = {
    KIND_WESTERN: [b"X", b"ABCDGHJLMNPRSV", _CODE_DIGITS, _CODE_DIGITS, _CODE_UPPER, _CODE_UPPER, _CODE_UPPER,
                   _CODE_DIGITS, _CODE_DIGITS, _CODE_DIGITS, b"AB"] + [_CODE_DIGITS] * 12,
    KIND_TCM: [b"Z", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", _CODE_DIGITS, _CODE_DIGITS, _CODE_UPPER, _CODE_UPPER]
              + [_CODE_DIGITS] * 4 + [b"ABC"] + [_CODE_DIGITS] * 12,
    KIND_SERVICE: [_CODE_DIGITS] * 11,
    KIND_CONSUMABLE: [b"C"] + [_CODE_DIGITS] * 19,
}


class _Pool:
    """The national code pool, kinds interleaved: codes, names and national terms."""

    def __init__(self, rng: np.random.Generator, pool_n: int):
        self.n = pool_n
        self.kind = kind = rng.choice(4, size=pool_n, p=KIND_SHARE).astype(np.int8)
        pool_code = np.empty(pool_n, dtype=object)
        for kd in range(4):
            idx = np.flatnonzero(kind == kd)
            if kd == KIND_SERVICE:
                tail = _unique_codes(rng, idx.size, _CODE_ALPHABETS[kd])
                pre = np.array([p.encode() for p in SERVICE_PREFIXES], dtype="S4")[
                    rng.integers(0, len(SERVICE_PREFIXES), idx.size)]
                codes = np.char.add(pre, tail)
                # Prefix and tail together are unique when the tails are.
            else:
                codes = _unique_codes(rng, idx.size, _CODE_ALPHABETS[kd])
            pool_code[idx] = pa.array(codes).cast(pa.string()).to_numpy(zero_copy_only=False)
        self.code = pa.array(pool_code, type=pa.string())
        self.name = join(
            pc.take(pa.array(KIND_NAME_PREFIX), pa.array(kind.astype(np.int32))),
            pc.utf8_slice_codeunits(self.code, 0, 8),
        )
        self.lv, self.selfpay, self.cap = _catalogue_terms(rng, kind)
        self.lmt = (rng.random(pool_n) < 0.05).astype(np.int8)


def _province_catalogue(rng: np.random.Generator, pool: _Pool, k: int, n_two: int) -> dict[str, np.ndarray]:
    """One province's rows: k codes of the pool, n_two of them in two date versions."""
    base_day, d_lo, d_hi = day_of(DATE_CATALOGUE_BASE), day_of("2025-03-01"), day_of("2027-03-01")
    sel = np.sort(rng.permutation(pool.n)[:k])
    lv, selfpay, cap, lmt = pool.lv[sel], pool.selfpay[sel], pool.cap[sel], pool.lmt[sel]
    # Province-specific terms for the same national code (各省目录不一).
    own = rng.random(k) < 0.12
    o_lv, o_sp, o_cap = _catalogue_terms(rng, pool.kind[sel])
    lv, selfpay, cap = np.where(own, o_lv, lv), np.where(own, o_sp, selfpay), np.where(own, o_cap, cap)
    # Single versions: mostly listed since the base date; some later, a few
    # discontinued, a few listed only from next year.
    begn = np.where(rng.random(k) < 0.85, base_day, rng.integers(day_of("2021-01-01"), day_of("2026-06-30"), k))
    end = np.full(k, -1, dtype=np.int64)
    u = rng.random(k)
    gone = u < 0.01
    end[gone] = np.maximum(begn[gone], rng.integers(day_of("2024-01-01"), day_of("2026-10-31"), int(gone.sum())))
    begn = np.where((u >= 0.01) & (u < 0.015), day_of("2027-01-01"), begn)
    # Two versions: the first ends on D, the second begins on D + 1 with new terms.
    two = np.sort(rng.choice(k, n_two, replace=False)) if n_two else np.zeros(0, dtype=np.int64)
    d = rng.integers(d_lo, d_hi, two.size)
    begn[two] = base_day
    end[two] = d
    t_lv, t_sp, t_cap = _catalogue_terms(rng, pool.kind[sel[two]])
    t_end = np.where(rng.random(two.size) < 0.1, d + rng.integers(200, 900, two.size), -1)
    # Rows of one code stay adjacent, the first version first.
    order = np.argsort(np.concatenate([np.arange(k) * 2, two * 2 + 1]), kind="stable")

    def cat(a, b):
        return np.concatenate([a, b])[order]

    return {
        "pool": cat(sel, sel[two]), "lv": cat(lv, t_lv), "selfpay": cat(selfpay, t_sp), "cap": cat(cap, t_cap),
        "lmt": cat(lmt, lmt[two]), "begn": cat(begn, d + 1), "end": cat(end, t_end),
    }


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
    birth = _birthdays(rng, year, retired, student)
    region_pa = pc.take(pa.array(regions), pa.array(reg))
    certno = _certno(rng, regions, reg, birth, region_pa)
    psn_no = join("P", region_pa, lpad(np.arange(n), 8))
    name = join(
        pc.take(pa.array(list(SURNAMES)), pa.array(rng.integers(0, len(SURNAMES), n))),
        pc.take(pa.array(list(GIVEN_CHARS)), pa.array(rng.integers(0, len(GIVEN_CHARS), n))),
        pc.if_else(pa.array(rng.random(n) < 0.7),
                   pc.take(pa.array(list(GIVEN_CHARS)), pa.array(rng.integers(0, len(GIVEN_CHARS), n))), ""),
    )
    pol = reg.astype(np.int64) * 2 + (insutype == 390)
    acc = _accumulators(rng, _policy_terms(regions, policies)[pol], emp, year)
    return {
        "table": pa.table({
            "psn_no": psn_no,
            "certno": certno,
            "psn_name": name,
            "insuplc_admdvs": region_pa,
            "insutype": str_col(insutype),
            "psn_type": pa.array(psn_type.astype(str)),
            "balc": fmt_scaled(acc["balc"], 2),
            "acc_year": str_col(acc["acc_year"]),
            **{c: fmt_scaled(acc[c], 2) for c in ("hifp_ip", "hifp_op", "ded_op", "burden2", "second_paid")},
        }),
        "psn_no": psn_no,
        "reg": reg,
        "pol": pol,
    }


def _birthdays(rng: np.random.Generator, year: int, retired: np.ndarray, student: np.ndarray) -> np.ndarray:
    """Day numbers of birth: retirees 60-95, students and children 0-22, others 18-75."""
    n = retired.size
    ref_day = day_of(f"{year}-11-20")
    age = np.where(retired, rng.uniform(60, 95, n), np.where(student, rng.uniform(0, 22, n), rng.uniform(18, 75, n)))
    return (ref_day - age * 365.2425).astype(np.int64)


def _certno(rng: np.random.Generator, regions: list[str], reg: np.ndarray, birth: np.ndarray,
            region_pa: pa.Array) -> pa.Array:
    """18-digit resident identity numbers (GB 11643): region, birthday, sequence, check digit."""
    n = reg.size
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
    return join(region_pa, str_col(ymd), lpad(seq3, 3), pc.take(pa.array(list("10X98765432")), pa.array(check)))


def _policy_terms(regions: list[str], policies: dict) -> np.ndarray:
    """Per (region, insutype) row, region-major: the policy terms each person's accumulators are
    drawn against (op_ded, op_cap, ip_cap fen, sl_thr, sl_cap fen, sl_bp)."""
    keys = [(r, t) for r in regions for t in INSUTYPES]
    pol_terms = np.zeros((len(keys), 6), dtype=np.int64)
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
    return pol_terms


def _accumulators(rng: np.random.Generator, terms: np.ndarray, emp: np.ndarray, year: int) -> dict[str, np.ndarray]:
    """Each person's accounting year, account balance and what the year has used so far (fen)."""
    n = emp.size
    op_ded, op_cap, ip_cap, sl_thr, sl_cap, sl_bp = (terms[:, j] for j in range(6))
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
    return {"acc_year": acc_year, "balc": balc, "hifp_ip": hifp_ip, "hifp_op": hifp_op, "ded_op": ded_op,
            "burden2": burden2, "second_paid": second_paid}


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
        "hifp_cd": fmt_scaled(paid, 2),
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
    y0, y1 = day_of(f"{year}-01-01"), day_of(f"{year}-11-25")
    begn = np.where(
        long_term,
        rng.integers(day_of(f"{year - 7}-01-01"), day_of(f"{year}-11-30"), m),
        np.where(rng.random(m) < 0.1, rng.integers(day_of(f"{year - 1}-01-01"), y0, m), rng.integers(y0 + 59, y1, m)),
    )
    has_end = rng.random(m) < np.where(long_term, 0.3, 0.5)
    end = begn + np.where(long_term, rng.integers(365, 1500, m), rng.integers(15, 270, m))
    status = np.where(rng.random(m) < 0.2, "2", "1")
    return pa.table({
        "psn_no": pc.take(persons["psn_no"], pa.array(psn)),
        "filing_type": pc.take(pa.array(FILING_TYPES), pa.array(ftype)),
        "dest_admdvs": pa.array(dest.astype(str)),
        "begndate": date_col(begn),
        "enddate": date_col(end, mask_absent=~has_end),
        "status": pa.array(status),
    })


# ---------------------------------------------------------------- institutions, policies, prepay


def _institutions(regions: list[str], per_level: tuple[int, int, int]) -> pa.Table:
    """institutions.csv: per region, per_level[lv - 1] hospitals of each level."""
    inst_rows = [(r, lv, s) for r in regions for lv in (1, 2, 3) for s in range(per_level[lv - 1])]
    return pa.table({
        "fixmedins_code": pa.array([f"H{r}{lv}{s:04d}" for r, lv, s in inst_rows]),
        "fixmedins_name": pa.array([f"{r}{HOSP_LEVEL_NAMES[lv]}医院{s + 1:02d}" for r, lv, s in inst_rows]),
        "admdvs": pa.array([r for r, _, _ in inst_rows]),
        "hosp_lv": pa.array([str(lv) for _, lv, _ in inst_rows]),
    })


def _policies(rng: np.random.Generator, regions: list[str],
              missing_policies: int | None) -> tuple[dict, set]:
    """policies.json's objects by (region, insutype), and the pairs left without one."""
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
    return policies, missing


def _prepay(rng: np.random.Generator, provs: list[str], regions: list[str], psn_reg: np.ndarray) -> pa.Table:
    """prepay.csv: each insured province deposits 300-900 yuan per insured person.

    A synthetic day settles far more per insured person than the national one
    (130,000 settlements among 1,000,000 persons), so deposits are sized for
    the demo: one such day uses roughly 25-80 % of them, and a few provinces
    cross the 70 % warning, as a busy month would show.
    """
    psn_prov = np.searchsorted(provs, np.array([r[:2] for r in regions])[psn_reg])
    per_prov = np.bincount(psn_prov, minlength=len(provs))
    amount = (per_prov * rng.uniform(300, 900, len(provs)) * 100).astype(np.int64) + rng.integers(0, 100, len(provs))
    return pa.table({"prov_admdvs": pa.array([p + "0000" for p in provs]), "amount": fmt_scaled(amount, 2)})


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
    """Write a world folder (docs/contract.md section 2) and return a summary of it.

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

    inst = _institutions(regions, ipr)
    sizes["institutions.csv"] = _write_csv(inst, os.path.join(out_dir, "institutions.csv"))

    policies, missing = _policies(rng_for(seed, "policies"), regions, missing_policies)
    body = json.dumps(list(policies.values()), ensure_ascii=False, indent=1) + "\n"
    with open(os.path.join(out_dir, "policies.json"), "w", encoding="utf-8") as f:
        f.write(body)
    sizes["policies.json"] = len(body.encode())

    # catalogue.csv
    cat = _catalogue(rng_for(seed, "catalogue"), provs, catalogue_per_province)
    sizes["catalogue.csv"] = _write_csv(cat, os.path.join(out_dir, "catalogue.csv"))

    # persons.csv, chronic.csv, filings.csv
    ps = _persons(rng_for(seed, "persons"), regions, persons, year, policies)
    sizes["persons.csv"] = _write_csv(ps["table"], os.path.join(out_dir, "persons.csv"))
    chronic = _chronic(rng_for(seed, "chronic"), ps, policies, regions)
    sizes["chronic.csv"] = _write_csv(chronic, os.path.join(out_dir, "chronic.csv"))
    filings = _filings(rng_for(seed, "filings"), ps, regions, year)
    sizes["filings.csv"] = _write_csv(filings, os.path.join(out_dir, "filings.csv"))

    prepay = _prepay(rng_for(seed, "prepay"), provs, regions, ps["reg"])
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

