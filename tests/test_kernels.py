"""The compiled kernels of core_ext against plain-Python models built on engine.contract.money.

Each kernel is checked twice: on small hand-made cases whose results were
worked out from docs/contract.md by hand, and by hypothesis against a model that
follows the spec's wording line by line (sections 1, 3 and 6).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from core_ext import _catalogue, _fund, _lines, _split
from engine.contract import money

I8, I16, I32, I64, U8 = np.int8, np.int16, np.int32, np.int64, np.uint8
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DAY_OPEN = 2**31 - 1

SETTINGS = settings(deadline=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow])


def sat64(v: int) -> int:
    return max(INT64_MIN, min(INT64_MAX, v))


# ------------------------------------------------------------------ numbers


def model_parse(value: object, places: int) -> int | None:
    """engine.contract.money.parse_scaled saturated to int64, None when malformed."""
    try:
        return sat64(money.parse_scaled(value, places))
    except ValueError:
        return None


def kernel_parse(value: object, places: int) -> int | None:
    try:
        return _lines.parse_scaled(value, places)
    except ValueError:
        return None


@pytest.mark.parametrize("s", [
    "0", "-0", "00.10", "1.", ".5", "+1", " 1", "1 ", "1\n", "-", "", ".", "-.5", "1.2.3",
    "123.45", "123.456", "1e3", "0x10", "１２", "1_000", "9" * 24, "9" * 25, "-" + "9" * 23,
    "-" + "9" * 24, "9" * 22 + ".9", "92233720368547758.07", "92233720368547758.08",
    "-92233720368547758.08", "-92233720368547758.09", "٣", "1.0000",
])
@pytest.mark.parametrize("places", [0, 2, 4, 6])
def test_parse_scaled_str_cases(s: str, places: int) -> None:
    want = model_parse(s, places)
    if want is None:
        with pytest.raises(ValueError):
            _lines.parse_scaled_str(s, places)
    else:
        assert _lines.parse_scaled_str(s, places) == want


def test_parse_scaled_saturates_and_refuses() -> None:
    assert _lines.parse_scaled_str("92233720368547758.07", 2) == INT64_MAX
    assert _lines.parse_scaled_str("92233720368547758.08", 2) == INT64_MAX
    assert _lines.parse_scaled_str("-92233720368547758.08", 2) == INT64_MIN
    assert _lines.parse_scaled_str("-0.00", 2) == 0
    assert _lines.parse_scaled_str("00.10", 2) == 10
    assert _lines.parse_scaled_str("12.345678", 6) == 12_345_678
    for bad in ("1.", ".5", "+1", " 1", "1.234", "9" * 25):
        with pytest.raises(ValueError):
            _lines.parse_scaled_str(bad, 2)


class IntSub(int):
    pass


@pytest.mark.parametrize("v", [
    0, 1, -1, 12345, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**24 - 1, 10**24, -(10**24),
    -(10**24) + 1, 10**40, True, False, 1.5, 2.0, None, b"12", [1], IntSub(7), IntSub(10**30),
])
@pytest.mark.parametrize("places", [0, 2, 6])
def test_parse_scaled_objects(v: object, places: int) -> None:
    assert kernel_parse(v, places) == model_parse(v, places)


decimal_like = st.one_of(
    st.from_regex(r"-?[0-9]{1,26}(\.[0-9]{0,9})?", fullmatch=True),
    st.text(alphabet="0123456789-.+ e\n_١", max_size=28),
    st.text(max_size=6),
    st.integers(0, 10**26).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
)


@SETTINGS
@given(decimal_like, st.sampled_from([0, 2, 4, 6]))
@example("-0", 2)
@example("9" * 24, 6)
def test_parse_scaled_str_matches_money(s: str, places: int) -> None:
    assert kernel_parse(s, places) == model_parse(s, places)


@SETTINGS
@given(st.one_of(st.integers(-(10**25), 10**25), st.integers(), st.booleans(), st.floats(),
                 st.none()), st.sampled_from([0, 2, 4, 6]))
def test_parse_scaled_int_matches_money(v: object, places: int) -> None:
    assert kernel_parse(v, places) == model_parse(v, places)


def model_day(s: object) -> int | None:
    try:
        return money.parse_time_day(s)
    except ValueError:
        return None


def kernel_day(s: str) -> int | None:
    try:
        return _lines.parse_time_day(s)
    except ValueError:
        return None


@pytest.mark.parametrize("s", [
    "1970-01-01 00:00:00", "1969-12-31 23:59:59", "2024-02-29 12:00:00", "2023-02-29 12:00:00",
    "1900-02-29 00:00:00", "2000-02-29 00:00:00", "2026-04-31 00:00:00", "2026-12-31 23:59:59",
    "2026-13-01 00:00:00", "2026-00-10 00:00:00", "2026-01-00 00:00:00", "2026-01-01 24:00:00",
    "2026-01-01 23:60:00", "2026-01-01 23:59:60", "0000-01-01 00:00:00", "0001-01-01 00:00:00",
    "9999-12-31 23:59:59", "2026-01-01T00:00:00", "2026-01-01 00:00", "2026-01-01 00:00:00 ",
    "2026-1-01 00:00:00x", "２０２６-01-01 00:00:00", "",
])
def test_parse_time_day_cases(s: str) -> None:
    assert kernel_day(s) == model_day(s)


def test_parse_time_day_known_values() -> None:
    assert _lines.parse_time_day("1970-01-01 00:00:00") == 0
    assert _lines.parse_time_day("2000-03-01 08:00:00") == 11017
    with pytest.raises(ValueError):
        _lines.parse_time_day("2023-02-29 00:00:00")


two = st.integers(0, 99).map(lambda v: f"{v:02d}")
time_like = st.one_of(
    st.builds(lambda y, mo, d, h, mi, s: f"{y:04d}-{mo}-{d} {h}:{mi}:{s}",
              st.integers(0, 9999), two, two, two, two, two),
    st.datetimes().map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S")),
    st.text(alphabet="0123456789-: T", min_size=17, max_size=21),
)


@SETTINGS
@given(time_like)
def test_parse_time_day_matches_money(s: str) -> None:
    assert kernel_day(s) == model_day(s)


big = st.integers(0, INT64_MAX)


@SETTINGS
@given(st.one_of(big, st.integers(0, 10**12)), st.one_of(big, st.integers(0, 10**9)))
@example(10**12, 10**9)
@example(INT64_MAX, INT64_MAX)
@example(1, 50_000_000)
@example(1, 49_999_999)
def test_ext_exact(p: int, c: int) -> None:
    want = money.ext(p, c)
    if want > INT64_MAX:
        with pytest.raises(OverflowError):
            _split.ext(p, c)
    else:
        assert _split.ext(p, c) == want


@SETTINGS
@given(st.integers(INT64_MIN, INT64_MAX), st.integers(INT64_MIN, INT64_MAX))
def test_ext_floor_for_negative(p: int, c: int) -> None:
    want = money.ext(p, c)
    if not INT64_MIN <= want <= INT64_MAX:
        with pytest.raises(OverflowError):
            _split.ext(p, c)
    else:
        assert _split.ext(p, c) == want


@SETTINGS
@given(st.one_of(big, st.integers(0, 10**13)), st.one_of(st.integers(0, 10_000), big))
@example(1, 5000)
@example(1, 4999)
@example(INT64_MAX, 10_000)
def test_mulr_exact(a: int, r: int) -> None:
    want = money.mulr(a, r)
    if want > INT64_MAX:
        with pytest.raises(OverflowError):
            _split.mulr(a, r)
    else:
        assert _split.mulr(a, r) == want


# ------------------------------------------------------------------ gather


class WireLine(msgspec.Struct):
    med_list_codg: object = None
    det_item_fee_sumamt: object = None
    cnt: object = None
    pric: object = None
    fee_ocur_time: object = None
    feedetl_sn: object = "1"


class NoAmount:
    """A line object without det_item_fee_sumamt."""

    med_list_codg = "X1"
    feedetl_sn = "1"
    cnt = "1"
    pric = "1"
    fee_ocur_time = "2026-01-01 00:00:00"


def model_gather(lines: list) -> list[tuple]:
    out = []
    for ln in lines:
        code = getattr(ln, "med_list_codg", None)
        sn = getattr(ln, "feedetl_sn", None)
        try:
            if not (isinstance(code, str) and code):
                raise ValueError("med_list_codg must be a non-empty str")
            if not ((isinstance(sn, str) and sn) or (
                    isinstance(sn, int) and not isinstance(sn, bool) and -(2**63) <= sn < 2**63)):
                raise ValueError("feedetl_sn must be a non-empty str or a 64-bit int")
            a = sat64(money.parse_scaled(ln.det_item_fee_sumamt, 2))
            c = sat64(money.parse_scaled(ln.cnt, 4))
            p = sat64(money.parse_scaled(ln.pric, 6))
            d = money.parse_time_day(ln.fee_ocur_time)
            out.append((code, a, c, p, d, 0))
        except (ValueError, AttributeError):
            out.append((code, 0, 0, 0, 0, 1))
    return out


def run_gather(lines: list) -> tuple[list[tuple], int]:
    n = len(lines)
    codes: list = []
    sns: list = []
    amt, cnt, pric = np.full(n, 7, I64), np.full(n, 7, I64), np.full(n, 7, I64)
    day, bad = np.full(n, 7, I32), np.full(n, 7, U8)
    n_bad = _lines.gather_lines(lines, codes, sns, amt, cnt, pric, day, bad)
    assert len(codes) == n
    assert sns == [getattr(ln, "feedetl_sn", None) for ln in lines]
    got = [(codes[i], int(amt[i]), int(cnt[i]), int(pric[i]), int(day[i]), int(bad[i]))
           for i in range(n)]
    return got, n_bad


def test_gather_hand() -> None:
    lines = [
        WireLine("A01", "123.45", "2.5", "49.38", "2026-03-01 10:00:00"),
        WireLine("A02", 12, 3, 4, "2026-03-01 10:00:00"),
        WireLine("A03", 1.5, "1", "1", "2026-03-01 10:00:00"),  # float: schema error
        WireLine("A04", "1", True, "1", "2026-03-01 10:00:00"),  # bool: schema error
        WireLine("A05", "1", "1", "1.1234567", "2026-03-01 10:00:00"),  # 7 decimals
        WireLine("A06", "1", "1", "1", "2026-02-30 10:00:00"),  # no such day
        WireLine("A07", "99999999999999999999", "1", "1", "2026-03-01 10:00:00"),  # saturates
        WireLine(None, "1", "1", "1", "2026-03-01 10:00:00"),  # no code: schema error
        NoAmount(),
        42,
        WireLine("A11", "1", "1", "1", "2026-03-01 10:00:00", feedetl_sn=7),  # an int serial: fine
        WireLine("A12", "1", "1", "1", "2026-03-01 10:00:00", feedetl_sn=""),  # empty serial
        WireLine("A13", "1", "1", "1", "2026-03-01 10:00:00", feedetl_sn=True),  # a bool serial
        WireLine("A14", "1", "1", "1", "2026-03-01 10:00:00", feedetl_sn=2**63),  # past 64 bits
        WireLine("", "1", "1", "1", "2026-03-01 10:00:00"),  # empty code
    ]
    got, n_bad = run_gather(lines)
    day = money.parse_day("2026-03-01")
    assert got[0] == ("A01", 12345, 25000, 49_380_000, day, 0)
    assert got[1] == ("A02", 1200, 30000, 4_000_000, day, 0)
    assert [g[5] for g in got] == [0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1]
    assert got[6][1] == INT64_MAX
    assert got[7][0] is None
    assert got[9][0] is None  # no attribute: None appended
    assert n_bad == 11
    assert got == model_gather(lines)


def test_gather_keeps_references_exact() -> None:
    code = "".join(["REF", "CODE"])  # a fresh object
    amt = "".join(["1", ".00"])
    lines = [WireLine(code, amt, "1", "1", "2026-03-01 10:00:00")]
    before_code, before_amt = sys.getrefcount(code), sys.getrefcount(amt)
    codes: list = []
    z = np.zeros(1, I64)
    _lines.gather_lines(lines, codes, [], z, z.copy(), z.copy(), np.zeros(1, I32), np.zeros(1, U8))
    assert codes[0] is code
    assert sys.getrefcount(code) == before_code + 1
    assert sys.getrefcount(amt) == before_amt
    del codes
    assert sys.getrefcount(code) == before_code


def test_gather_appends_and_checks_lengths() -> None:
    codes: list = ["earlier"]
    z = np.zeros(1, I64)
    lines = [WireLine("A", "1", "1", "1", "2026-03-01 10:00:00")]
    _lines.gather_lines(lines, codes, [], z, z.copy(), z.copy(), np.zeros(1, I32), np.zeros(1, U8))
    assert codes == ["earlier", "A"]
    with pytest.raises(ValueError):
        _lines.gather_lines(lines, [], [], np.zeros(2, I64), z, z, np.zeros(1, I32), np.zeros(1, U8))


money_value = st.one_of(decimal_like, st.integers(-(10**25), 10**25), st.floats(), st.booleans(),
                        st.none())


@SETTINGS
@given(st.lists(st.builds(WireLine, st.one_of(st.text(max_size=5), st.none(), st.integers()),
                          money_value, money_value, money_value,
                          st.one_of(time_like, st.none(), st.integers())), max_size=20))
def test_gather_matches_model(lines: list) -> None:
    got, n_bad = run_gather(lines)
    want = model_gather(lines)
    assert got == want
    assert n_bad == sum(w[5] for w in want)


# ------------------------------------------------------------------ catalogue index


@dataclass
class Cat:
    """A catalogue sorted by (prov, code, begn), as the world loader makes it."""

    rows: list[tuple[int, str, int, int]]  # prov, code, begn, end
    prov: np.ndarray = field(init=False)
    offsets: np.ndarray = field(init=False)
    data: np.ndarray = field(init=False)
    begn: np.ndarray = field(init=False)
    end: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.rows = sorted(self.rows)
        enc = [r[1].encode("ascii") for r in self.rows]
        self.prov = np.array([r[0] for r in self.rows], I16)
        self.offsets = np.zeros(len(enc) + 1, I64)
        self.offsets[1:] = np.cumsum([len(e) for e in enc])
        self.data = np.frombuffer(b"".join(enc), U8).copy()
        self.begn = np.array([r[2] for r in self.rows], I32)
        self.end = np.array([r[3] for r in self.rows], I32)

    def index(self, **kw) -> _catalogue.CatalogueIndex:
        return _catalogue.CatalogueIndex(self.prov, self.offsets, self.data, **kw)


def model_match(rows: list, prov: int, code: object, day: int) -> int:
    """Section 3 step 2 read literally: the entry of (prov, code) valid on day."""
    hits = [i for i, (p, c, b, e) in enumerate(rows)
            if p == prov and c == code and b <= day <= e]
    assert len(hits) <= 1
    return hits[0] if hits else -1


def run_match(idx, cat: Cat, queries: list[tuple[int, object, int]]) -> list[int]:
    codes = [q[1] for q in queries]
    out = np.full(len(queries), -7, I32)
    idx.match(codes, np.array([q[0] for q in queries], I16), np.array([q[2] for q in queries], I32),
              cat.begn, cat.end, out)
    return out.tolist()


def test_index_hand() -> None:
    cat = Cat([
        (44, "XA01", 100, 199), (44, "XA01", 200, 299), (44, "XA01", 400, DAY_OPEN),
        (11, "XA01", 0, DAY_OPEN),  # same code, another province
        (44, "XA011", 0, 50),  # a code that extends another
        (44, "B", 10, 10),
    ])
    idx = cat.index()
    assert idx.n_rows == 6 and idx.n_groups == 4
    assert idx.capacity >= 2 * idx.n_groups and idx.capacity & (idx.capacity - 1) == 0
    r = {row: i for i, row in enumerate(cat.rows)}
    assert idx.lookup(44, "XA01") == r[(44, "XA01", 100, 199)]
    assert idx.group(44, "XA01") == (r[(44, "XA01", 100, 199)], 3)
    assert idx.lookup(11, "XA01") == r[(11, "XA01", 0, DAY_OPEN)]
    assert idx.lookup(31, "XA01") == -1
    assert idx.lookup(44, "XA0") == -1
    assert idx.lookup(44, "中文") == -1
    assert idx.lookup(70000, "XA01") == -1
    queries = [
        (44, "XA01", 99), (44, "XA01", 100), (44, "XA01", 199), (44, "XA01", 250),
        (44, "XA01", 300), (44, "XA01", 399), (44, "XA01", 400), (44, "XA01", 2**31 - 1),
        (11, "XA01", 5), (44, "XA011", 50), (44, "XA011", 51), (44, "B", 10), (44, "B", 11),
        (44, None, 10), (44, 17, 10), (44, b"B", 10), (44, "Bé", 10), (44, "", 10),
    ]
    got = run_match(idx, cat, queries)
    assert got == [model_match(cat.rows, *q) for q in queries]
    # Sorted rows: 0 (11 XA01), 1 (44 B), 2-4 (44 XA01 versions), 5 (44 XA011).
    assert got[:8] == [-1, 2, 2, 3, -1, -1, 4, 4]
    assert got[-5:] == [-1, -1, -1, -1, -1]


def test_index_refuses_unsorted_and_bad_offsets() -> None:
    rows = [(44, "A", 0, 10), (44, "B", 0, 10), (44, "A", 20, 30)]
    enc = [r[1].encode() for r in rows]
    offsets = np.array([0, 1, 2, 3], I64)
    data = np.frombuffer(b"".join(enc), U8)
    with pytest.raises(ValueError, match="not sorted"):
        _catalogue.CatalogueIndex(np.array([44, 44, 44], I16), offsets, data)
    with pytest.raises(ValueError):
        _catalogue.CatalogueIndex(np.array([44], I16), np.array([0, 5], I64), data)
    with pytest.raises(ValueError):
        _catalogue.CatalogueIndex(np.array([44, 44], I16), np.array([0, 2, 1], I64), data)


def test_index_empty_and_match_lengths() -> None:
    cat = Cat([])
    idx = cat.index()
    assert idx.n_groups == 0 and idx.lookup(44, "A") == -1
    assert run_match(idx, cat, [(44, "A", 1)]) == [-1]
    with pytest.raises(ValueError):
        idx.match(["A"], np.zeros(2, I16), np.zeros(1, I32), cat.begn, cat.end, np.zeros(1, I32))


def test_index_many_versions_and_weak_hash() -> None:
    # One code with 50 date versions (with gaps), a hash cut to 1 bit so that
    # every key collides and probing must compare bytes.
    rows = [(44, "V", 10 * k, 10 * k + 6) for k in range(50)]
    rows += [(p, f"K{j}", 0, DAY_OPEN) for p in (11, 44) for j in range(40)]
    cat = Cat(rows)
    for bits in (1, 2, 64):
        idx = cat.index(hash_bits=bits)
        queries = [(44, "V", d) for d in range(-1, 505)]
        queries += [(p, f"K{j}", 3) for p in (11, 31, 44) for j in range(42)]
        assert run_match(idx, cat, queries) == [model_match(cat.rows, *q) for q in queries]
    assert cat.index(hash_bits=1).max_probe >= 80  # the collisions really happened


code_alphabet = st.sampled_from(["A", "B", "a", "0", "\x00", "~"])
codes_st = st.lists(code_alphabet, min_size=0, max_size=20).map("".join)


@st.composite
def catalogues(draw) -> Cat:
    keys = draw(st.lists(st.tuples(st.sampled_from([11, 44, -1, 32767]), codes_st),
                         unique=True, max_size=30))
    rows = []
    for p, c in keys:
        cuts = sorted(draw(st.lists(st.integers(-5, 60), min_size=1, max_size=8, unique=True)))
        # Disjoint ranges [cuts[k], cuts[k+1]-1 or a bit less], the last maybe open.
        for k, b in enumerate(cuts):
            if k + 1 < len(cuts):
                e = cuts[k + 1] - 1 - draw(st.integers(0, 2))
                if e < b:
                    continue
            else:
                e = draw(st.sampled_from([DAY_OPEN, b, b + 7]))
            rows.append((p, c, b, e))
    return Cat(rows)


@SETTINGS
@given(catalogues(), st.data(), st.sampled_from([1, 3, 64]))
def test_index_matches_model(cat: Cat, data, bits: int) -> None:
    idx = cat.index(hash_bits=bits)
    known = [(r[0], r[1]) for r in cat.rows]
    q = st.tuples(
        st.one_of(st.sampled_from(known or [(44, "A")]),
                  st.tuples(st.sampled_from([11, 44, 31]), codes_st)),
        st.integers(-8, 70),
    ).map(lambda t: (t[0][0], t[0][1], t[1]))
    queries = data.draw(st.lists(q, max_size=40))
    assert run_match(idx, cat, queries) == [model_match(cat.rows, *x) for x in queries]
    assert idx.n_groups == len(set(known))
    for p, c in set(known):
        first = idx.lookup(p, c)
        assert cat.rows[first][:2] == (p, c) and (first == 0 or cat.rows[first - 1][:2] != (p, c))


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 2**32 - 1))
def test_index_random_codes_large(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alpha = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", U8)
    n = 3000
    codes = {bytes(alpha[rng.integers(0, 36, int(rng.integers(1, 30)))]).decode() for _ in range(n)}
    rows = []
    for c in codes:
        for p in rng.choice([11, 44, 51], size=int(rng.integers(1, 3)), replace=False):
            nv = int(rng.integers(1, 4))
            for v in range(nv):
                rows.append((int(p), c, 100 * v, 100 * v + 49 if v < nv - 1 else DAY_OPEN))
    cat = Cat(rows)
    idx = cat.index()
    known = {(r[0], r[1]): i for i, r in reversed(list(enumerate(cat.rows)))}
    keys = list(known)
    qs = []
    for _ in range(2000):
        p, c = keys[int(rng.integers(len(keys)))]
        if rng.random() < 0.2:
            p = int(rng.choice([11, 31, 44, 51]))
        qs.append((p, c, int(rng.integers(-10, 400))))
    got = run_match(idx, cat, qs)
    by_key: dict = {}
    for i, (p, c, b, e) in enumerate(cat.rows):
        by_key.setdefault((p, c), []).append((b, e, i))
    want = [next((i for b, e, i in by_key.get((p, c), []) if b <= d <= e), -1) for p, c, d in qs]
    assert got == want


# ------------------------------------------------------------------ split


@dataclass
class Entry:
    lv: int  # 1 A, 2 B, 3 C
    selfpay_bp: int = 0
    cap_micro: int = -1
    lmt: int = 0


@dataclass
class LineIn:
    row: int
    pric_micro: int
    cnt: int
    amt_fen: int


def model_split(settlements: list[tuple[bool, list[LineIn]]], entries: list[Entry]) -> tuple:
    """Sections 1 and 3 read literally, with engine.contract.money."""
    lines_out, sets_out = [], []
    for outpatient, lines in settlements:
        err, err_line = 0, -1
        tot = [0, 0, 0, 0, 0]
        for k, ln in enumerate(lines):
            a, p, c = ln.amt_fen, ln.pric_micro, ln.cnt
            if not (0 <= p <= 10**12 and 0 < c <= 10**9 and 0 <= a <= 10**9):
                if err == 0:
                    err, err_line = 1, k
                parts = (0, a, 0, 0, 0)
            else:
                if err == 0 and abs(money.ext(p, c) - a) > 1:
                    err, err_line = 2, k
                if ln.row < 0:
                    parts = (1, a, 0, 0, 0)
                else:
                    e = entries[ln.row]
                    if e.lv == 3:
                        parts = (2, a, 0, 0, 0)
                    elif e.lmt == 1 and outpatient:
                        parts = (3, a, 0, 0, 0)
                    else:
                        over = min(a, money.ext(p - e.cap_micro, c)) if 0 <= e.cap_micro < p else 0
                        base = a - over
                        pre = money.mulr(base, e.selfpay_bp) if e.lv == 2 else 0
                        parts = (0, 0, over, pre, base - pre)
            assert sum(parts[1:]) == a
            lines_out.append(parts)
            for j in range(4):
                tot[j] = sat64(tot[j] + parts[j + 1])
            tot[4] = sat64(tot[4] + a)
        sets_out.append((*tot, err, err_line))
    return lines_out, sets_out


def run_split(settlements: list[tuple[bool, list[LineIn]]], entries: list[Entry]) -> tuple:
    lines = [ln for _, ls in settlements for ln in ls]
    n, m = len(lines), len(settlements)
    starts = np.zeros(m + 1, I64)
    starts[1:] = np.cumsum([len(ls) for _, ls in settlements])
    col = lambda f, t: np.array([getattr(x, f) for x in lines], t)  # noqa: E731
    ecol = lambda f, t: np.array([getattr(x, f) for x in entries], t)  # noqa: E731
    batch = _split.LineBatch(
        starts=starts, outpatient=np.array([o for o, _ in settlements], U8), row=col("row", I32),
        pric_micro=col("pric_micro", I64), cnt_ten_thousandths=col("cnt", I64), amt_fen=col("amt_fen", I64))
    res = _split.SplitResults(batch)
    for arr in (res.memo, res.err, res.err_line):
        arr.fill(9)  # every output is written by the kernel
    _split.split_batch(
        batch,
        _split.CatalogueArrays(lv=ecol("lv", I8), selfpay_bp=ecol("selfpay_bp", I32),
                               cap_micro=ecol("cap_micro", I64), lmt=ecol("lmt", I8)),
        res)
    parts = (res.fulamt_fen, res.overlmt_fen, res.presel_fen, res.inscp_fen)
    tots = (res.tot_fulamt_fen, res.tot_overlmt_fen, res.tot_presel_fen, res.tot_inscp_fen, res.tot_amt_fen)
    lines_out = [(int(res.memo[i]), *(int(p[i]) for p in parts)) for i in range(n)]
    sets_out = [(*(int(t[s]) for t in tots), int(res.err[s]), int(res.err_line[s])) for s in range(m)]
    return lines_out, sets_out


ENTRIES = [
    Entry(1),  # 0: class A, no cap
    Entry(2, selfpay_bp=1000, cap_micro=10_000_000),  # 1: class B 10 %, cap 10.000000 yuan
    Entry(3),  # 2: class C
    Entry(1, lmt=1),  # 3: class A, inpatient use only
    Entry(2, selfpay_bp=1500, cap_micro=0),  # 4: class B, cap 0
]


def test_split_hand() -> None:
    # p 12.345678 yuan x 3: A = 37.04; over the cap ext(2.345678, 3) = 7.04;
    # base 30.00, self-pay first 10 % = 3.00, in scope 27.00.
    b = LineIn(1, 12_345_678, 30_000, 3704)
    settlements = [
        (False, [b, LineIn(0, 1_000_000, 10_000, 100), LineIn(-1, 500, 10_000, 0),
                 LineIn(2, 1_000_000, 20_000, 200), LineIn(3, 1_000_000, 10_000, 100)]),
        (True, [LineIn(3, 1_000_000, 10_000, 100), LineIn(4, 1_000_000, 10_000, 100)]),
        (True, []),
    ]
    lines, sets = run_split(settlements, ENTRIES)
    assert lines[0] == (0, 0, 704, 300, 2700)
    assert lines[1] == (0, 0, 0, 0, 100)
    assert lines[2] == (1, 0, 0, 0, 0)
    assert lines[3] == (2, 200, 0, 0, 0)
    assert lines[4] == (0, 0, 0, 0, 100)  # inpatient: limited use is fine
    assert lines[5] == (3, 100, 0, 0, 0)  # outpatient: limited use is self-paid
    assert lines[6] == (0, 0, 100, 0, 0)  # cap 0: all over the cap
    assert sets[0] == (200, 704, 300, 2900, 4104, 0, -1)
    assert sets[1] == (100, 100, 0, 0, 200, 0, -1)
    assert sets[2] == (0, 0, 0, 0, 0, 0, -1)
    assert (lines, sets) == model_split(settlements, ENTRIES)


@pytest.mark.parametrize("line,err", [
    (LineIn(0, 10**12, 1, 10_000), 0),  # pric at its limit
    (LineIn(0, 10**12 + 1, 1, 10), 1),
    (LineIn(0, -1, 1, 0), 1),
    (LineIn(0, 0, 0, 0), 1),  # cnt must be > 0
    (LineIn(0, 1, 10**9, 10), 0),
    (LineIn(0, 1, 10**9 + 1, 10), 1),
    (LineIn(0, 10**8, 10**9, 10**9), 0),  # amount at its limit, product 1e17
    (LineIn(0, 10**12, 10**9, 10**9), 2),  # product 1e21: exact, mismatched
    (LineIn(0, 1, 1, -1), 1),
    (LineIn(0, 1, 1, 10**9 + 1), 1),
    (LineIn(0, INT64_MAX, INT64_MAX, INT64_MAX), 1),
    (LineIn(0, 1_000_000, 10_000, 101), 0),  # off by one fen: tolerated
    (LineIn(0, 1_000_000, 10_000, 99), 0),
    (LineIn(0, 1_000_000, 10_000, 102), 2),
    (LineIn(0, 1_000_000, 10_000, 98), 2),
])
def test_split_limits(line: LineIn, err: int) -> None:
    settlements = [(False, [LineIn(0, 1, 10_000, 0), line])]
    lines, sets = run_split(settlements, ENTRIES)
    assert sets[0][5] == err
    assert sets[0][6] == (1 if err else -1)
    assert (lines, sets) == model_split(settlements, ENTRIES)


def test_split_first_failing_line_decides() -> None:
    mism = LineIn(0, 1_000_000, 10_000, 500)
    over = LineIn(0, 1, 1, 10**9 + 1)
    ok = LineIn(0, 1_000_000, 10_000, 100)
    _, sets = run_split([(False, [ok, mism, over]), (False, [ok, over, mism])], ENTRIES)
    assert sets[0][5:] == (2, 1)
    assert sets[1][5:] == (1, 1)


def test_split_refuses_bad_rows_and_shapes() -> None:
    with pytest.raises(ValueError, match="catalogue row"):
        run_split([(False, [LineIn(len(ENTRIES), 1, 1, 0)])], ENTRIES)
    with pytest.raises(ValueError, match="catalogue row"):
        run_split([(False, [LineIn(0, 1, 1, 0)])], [Entry(4)])
    z64, z32 = np.zeros(1, I64), np.zeros(1, I32)
    line_fields = dict(starts=np.array([0, 2], I64), outpatient=np.zeros(1, U8), row=z32,
                       pric_micro=z64, cnt_ten_thousandths=z64, amt_fen=z64)
    with pytest.raises(ValueError, match="starts"):
        _split.LineBatch(**line_fields)
    with pytest.raises(TypeError, match="cnt_ten_thousandths must be int64"):
        _split.LineBatch(**{**line_fields, "cnt_ten_thousandths": z32})
    with pytest.raises(TypeError):
        _split.LineBatch(*line_fields.values())  # every field is named
    lines = _split.LineBatch(**{**line_fields, "starts": np.array([0, 1], I64)})
    cat = _split.CatalogueArrays(lv=np.ones(1, I8), selfpay_bp=z32, cap_micro=z64, lmt=np.zeros(1, I8))
    with pytest.raises(TypeError):
        _split.split_batch(cat, lines, _split.SplitResults(lines))
    other = _split.LineBatch(**{**line_fields, "starts": np.array([0, 1], I64)})
    with pytest.raises(ValueError, match="another LineBatch"):
        _split.split_batch(lines, cat, _split.SplitResults(other))
    with pytest.raises(ValueError, match="lmt has 2 entries"):
        _split.CatalogueArrays(lv=np.ones(1, I8), selfpay_bp=z32, cap_micro=z64, lmt=np.zeros(2, I8))


entries_st = st.lists(st.builds(Entry, st.integers(1, 3), st.integers(0, 10_000),
                                st.one_of(st.just(-1), st.integers(0, 10**12)),
                                st.integers(0, 1)), min_size=1, max_size=6)


@st.composite
def split_cases(draw):
    entries = draw(entries_st)
    in_limits = st.builds(
        lambda row, p, c, delta: LineIn(row, p, c, max(0, min(10**9, money.ext(p, c) + delta))),
        st.integers(-1, len(entries) - 1),
        st.one_of(st.integers(0, 10**12), st.integers(0, 10**8)),
        st.one_of(st.integers(1, 10**9), st.integers(1, 10**5)),
        st.sampled_from([0, 0, 0, 1, -1, 2, -2, 10**6]))
    wild = st.builds(LineIn, st.integers(-1, len(entries) - 1),
                     st.integers(-2, 2 * 10**12), st.integers(-2, 2 * 10**9),
                     st.integers(-2, 2 * 10**9))
    extreme = st.builds(LineIn, st.integers(-1, len(entries) - 1),
                        st.sampled_from([INT64_MIN, INT64_MAX]), st.sampled_from([INT64_MAX, 1]),
                        st.sampled_from([INT64_MAX, INT64_MIN]))
    line = st.one_of(in_limits, in_limits, in_limits, wild, extreme)
    settlements = draw(st.lists(st.tuples(st.booleans(), st.lists(line, max_size=8)),
                                min_size=1, max_size=6))
    return settlements, entries


@SETTINGS
@given(split_cases())
def test_split_matches_model(case) -> None:
    settlements, entries = case
    assert run_split(settlements, entries) == model_split(settlements, entries)


# ------------------------------------------------------------------ fund


@dataclass
class Pol:
    annual_cap: int = 40_000_000
    ip_ded: tuple = (30_000, 50_000, 100_000)
    ip_tiers: tuple = (((None, 9000),), ((5_000_000, 8500), (None, 9000)),
                       ((5_000_000, 8000), (None, 8500)))
    ip_bonus: int = 300
    op_ded: int = 50_000
    op_ratio: tuple = (6000, 5500, 5000)
    op_cap: int = 300_000
    op_bonus: int = 1000
    sl_threshold: int = 2_000_000
    sl_tiers: tuple = ((10_000_000, 6000), (None, 7000))
    sl_cap: int = 40_000_000
    chronic: tuple = ((7000, 400_000),)  # (ratio_bp, annual_cap_fen) per disease


@dataclass
class Psn:
    acc_year: int = 2026
    hifp_ip: int = 0
    hifp_op: int = 0
    ded_op: int = 0
    burden2: int = 0
    second_paid: int = 0
    balc: int = 0


@dataclass
class Slot:
    psn: int
    pol: int  # policy and disease of the slot
    dise: int
    val: int
    year: int


@dataclass
class Setl:
    kind: int
    psn: int = 0
    pol: int = 0
    lv: int = 1
    year: int = 2026
    inscp: int = 0
    medfee: int = 0
    reduction_bp: int = 0
    retired310: int = 0
    acct_ok: int = 0
    cd_slot: int = -1
    cd_dise: int = -1  # disease index within the policy
    pre_status: int = 0
    commit: int = 1


OUT_FIELDS = ("status", "act_pay_dedc", "hifp_pay", "second_pay", "fund_pay_sumamt",
              "psn_part_amt", "acct_pay", "psn_cash_pay", "balc_after", "burden", "pool_prop_bp")
ACC_FIELDS = ("hifp_ip", "hifp_op", "ded_op", "burden2", "second_paid")
# FundResults' attribute of each model output where the two names differ (units).
RESULT_ATTR = {"second_pay": "second_pay_fen", "balc_after": "balc_after_fen", "burden": "burden_fen"}


def model_segments(lo: int, hi: int, tiers, adj: int) -> int:
    total, a = 0, 0
    for upper, ratio in tiers:
        top = hi if upper is None else min(hi, upper)
        total += money.mulr(max(0, top - max(lo, a)), money.clamp_bp(ratio + adj))
        if upper is None:
            break
        a = upper
    return total


def model_fund(setls: list[Setl], pols: list[Pol], psns: list[Psn], slots: list[Slot]):
    """Section 6 read literally; returns the outputs and the state after."""
    psns = [Psn(**vars(p)) for p in psns]
    slots = [Slot(**vars(s)) for s in slots]
    outs = []
    for s in setls:
        me = psns[s.psn]
        o = dict.fromkeys(OUT_FIELDS, 0)
        o["balc_after"] = me.balc
        if s.year < me.acc_year:
            o["status"] = 3
            outs.append(o)
            continue
        if s.pre_status:
            o["status"] = s.pre_status
            outs.append(o)
            continue
        # The year brought forward, on a copy that only a commit keeps.
        cur = Psn(**vars(me))
        if s.year > cur.acc_year:
            cur = Psn(acc_year=s.year, balc=me.balc)
        pol = pols[s.pol]
        I = s.inscp
        second = burden = dedc = 0
        if s.kind == 0:
            adj = (pol.ip_bonus if s.retired310 else 0) - s.reduction_bp
            dedc = min(I, pol.ip_ded[s.lv - 1])
            raw = model_segments(0, I - dedc, pol.ip_tiers[s.lv - 1], adj)
            hifp = min(raw, max(0, pol.annual_cap - cur.hifp_ip))
            burden = I - hifp
            t = pol.sl_threshold
            lo, hi = max(0, cur.burden2 - t), max(0, cur.burden2 + burden - t)
            second = min(model_segments(lo, hi, pol.sl_tiers, 0),
                         max(0, pol.sl_cap - cur.second_paid))
            pool = money.clamp_bp(pol.ip_tiers[s.lv - 1][0][1] + adj)
            cur.hifp_ip += hifp
            cur.burden2 += burden
            cur.second_paid += second
        elif s.kind == 1:
            eff = money.clamp_bp(pol.op_ratio[s.lv - 1] + (pol.op_bonus if s.retired310 else 0)
                                 - s.reduction_bp)
            dedc = min(I, max(0, pol.op_ded - cur.ded_op))
            hifp = min(money.mulr(I - dedc, eff), max(0, pol.op_cap - cur.hifp_op))
            pool = eff
            cur.ded_op += dedc
            cur.hifp_op += hifp
        else:
            slot = slots[s.cd_slot]
            ratio, cap = pol.chronic[s.cd_dise]
            val = slot.val if slot.year == cur.acc_year else 0
            eff = money.clamp_bp(ratio - s.reduction_bp)
            hifp = min(money.mulr(I, eff), max(0, cap - val))
            pool = eff
        fund = hifp + second
        part = s.medfee - fund
        acct = max(0, min(cur.balc, part)) if s.acct_ok else 0
        cur.balc -= acct
        o.update(act_pay_dedc=dedc, hifp_pay=hifp, second_pay=second, fund_pay_sumamt=fund,
                 psn_part_amt=part, acct_pay=acct, psn_cash_pay=part - acct,
                 balc_after=cur.balc, burden=burden, pool_prop_bp=pool)
        outs.append(o)
        if s.commit:
            psns[s.psn] = cur
            if s.kind == 2:
                slot.val, slot.year = val + hifp, cur.acc_year
    return outs, psns, slots


def run_fund(setls: list[Setl], pols: list[Pol], psns: list[Psn], slots: list[Slot]):
    uppers: list[int] = []
    ratios: list[int] = []
    dise_index: dict[tuple[int, int], int] = {}
    cd_ratio: list[int] = []
    cd_cap: list[int] = []

    def add(tiers) -> tuple[int, int]:
        start = len(uppers)
        for u, r in tiers:
            uppers.append(-1 if u is None else u)
            ratios.append(r)
        return start, len(tiers)

    P = len(pols)
    a = {k: np.zeros(P, I64) for k in ("annual_cap_fen", "op_ded_fen", "op_cap_fen",
                                        "sl_threshold_fen", "sl_cap_fen")}
    a.update({k: np.zeros(P, I32) for k in ("ip_bonus_bp", "op_bonus_bp", "sl_tier_start",
                                             "sl_tier_len")})
    a.update({k: np.zeros((P, 3), I64 if k == "ip_ded_fen" else I32)
              for k in ("ip_ded_fen", "ip_tier_start", "ip_tier_len", "op_ratio_bp")})
    for i, p in enumerate(pols):
        a["annual_cap_fen"][i], a["op_ded_fen"][i], a["op_cap_fen"][i] = p.annual_cap, p.op_ded, p.op_cap
        a["sl_threshold_fen"][i], a["sl_cap_fen"][i] = p.sl_threshold, p.sl_cap
        a["ip_bonus_bp"][i], a["op_bonus_bp"][i] = p.ip_bonus, p.op_bonus
        for lv in range(3):
            a["ip_ded_fen"][i, lv] = p.ip_ded[lv]
            a["ip_tier_start"][i, lv], a["ip_tier_len"][i, lv] = add(p.ip_tiers[lv])
            a["op_ratio_bp"][i, lv] = p.op_ratio[lv]
        a["sl_tier_start"][i], a["sl_tier_len"][i] = add(p.sl_tiers)
        for d, (r, cap) in enumerate(p.chronic):
            dise_index[(i, d)] = len(cd_ratio)
            cd_ratio.append(r)
            cd_cap.append(cap)
    policies = _fund.PolicyArrays(
        **a, tier_upper_fen=np.array(uppers, I64), tier_ratio_bp=np.array(ratios, I32),
        cd_ratio_bp=np.array(cd_ratio, I32), cd_cap_fen=np.array(cd_cap, I64))
    persons = _fund.PersonArrays(
        acc_year=np.array([p.acc_year for p in psns], I32),
        **{k + "_fen": np.array([getattr(p, k) for p in psns], I64) for k in (*ACC_FIELDS, "balc")},
        cd_val_fen=np.array([s.val for s in slots], I64), cd_year=np.array([s.year for s in slots], I32))
    n = len(setls)
    c = lambda f, t: np.array([getattr(s, f) for s in setls], t)  # noqa: E731
    batch = _fund.SettlementBatch(
        kind=c("kind", I8), pol=c("pol", I32), lv=c("lv", I8), psn=c("psn", I32), year=c("year", I32),
        inscp_fen=c("inscp", I64), medfee_fen=c("medfee", I64), reduction_bp=c("reduction_bp", I32),
        retired310=c("retired310", U8), acct_ok=c("acct_ok", U8), cd_slot=c("cd_slot", I32),
        cd_pol=np.array([dise_index.get((s.pol, s.cd_dise), -1) for s in setls], I32),
        pre_status=c("pre_status", I8), commit=c("commit", U8))
    res = _fund.FundResults(n)
    _fund.fund_batch(batch, policies, persons, res)
    out = {f: getattr(res, RESULT_ATTR.get(f, f)) for f in OUT_FIELDS}
    outs = [{f: int(out[f][i]) for f in OUT_FIELDS} for i in range(n)]
    psns_after = [Psn(int(persons.acc_year[i]),
                      *(int(getattr(persons, k + "_fen")[i]) for k in (*ACC_FIELDS, "balc")))
                  for i in range(len(psns))]
    slots_after = [Slot(s.psn, s.pol, s.dise, int(persons.cd_val_fen[i]), int(persons.cd_year[i]))
                   for i, s in enumerate(slots)]
    return outs, psns_after, slots_after


def test_fund_inpatient_hand() -> None:
    # The policy of section 5, level 2, a local employee (no reduction).
    pols = [Pol()]
    psns = [Psn(balc=1_000_000)]
    setls = [
        Setl(0, lv=2, inscp=6_000_000, medfee=6_500_000),
        Setl(0, lv=2, inscp=20_000_000, medfee=21_000_000, acct_ok=1),
    ]
    outs, after, _ = run_fund(setls, pols, psns, [])
    # R = 60000.00 - 500.00; 50000.00 at 85 % + 9500.00 at 90 %.
    assert outs[0]["act_pay_dedc"] == 50_000
    assert outs[0]["hifp_pay"] == 4_250_000 + 855_000
    assert outs[0]["burden"] == 895_000 and outs[0]["second_pay"] == 0
    assert outs[0]["pool_prop_bp"] == 8500
    # Second visit: R = 199500.00 gives 42500.00 + 134550.00; burden 22950.00,
    # burden2 reaches 31900.00, 11900.00 above the threshold at 60 %.
    assert outs[1]["hifp_pay"] == 17_705_000
    assert outs[1]["second_pay"] == 714_000
    assert outs[1]["fund_pay_sumamt"] == 18_419_000
    assert outs[1]["psn_part_amt"] == 2_581_000
    assert outs[1]["acct_pay"] == 1_000_000 and outs[1]["psn_cash_pay"] == 1_581_000
    assert outs[1]["balc_after"] == 0
    assert after[0] == Psn(2026, 22_810_000, 0, 0, 3_190_000, 714_000, 0)
    assert (outs, after) == model_fund(setls, pols, psns, [])[:2]


def test_fund_outpatient_and_chronic_hand() -> None:
    pols = [Pol()]
    psns = [Psn(hifp_op=290_000, ded_op=20_000, balc=50)]
    slots = [Slot(0, 0, 0, 380_000, 2026)]
    setls = [
        # Retired employee, referral: eff = 60 % + 10 % - 10 %.
        Setl(1, lv=1, inscp=80_000, medfee=90_000, retired310=1, reduction_bp=1000, acct_ok=1),
        # Chronic, temp_other: no bonus, 70 % - 20 %; 4000.00 cap, 3800.00 used.
        Setl(2, inscp=100_001, medfee=100_001, retired310=1, reduction_bp=2000, cd_slot=0,
             cd_dise=0),
    ]
    outs, after, slots_after = run_fund(setls, pols, psns, slots)
    assert outs[0]["act_pay_dedc"] == 30_000
    assert outs[0]["hifp_pay"] == 10_000  # mulr(50000, 6000) = 30000, cut to the cap
    assert outs[0]["pool_prop_bp"] == 6000
    assert outs[0]["acct_pay"] == 50 and outs[0]["balc_after"] == 0
    assert outs[1]["hifp_pay"] == 20_000 and outs[1]["pool_prop_bp"] == 5000
    assert outs[1]["act_pay_dedc"] == 0 and outs[1]["burden"] == 0
    assert after[0].ded_op == 50_000 and after[0].hifp_op == 300_000
    assert slots_after[0].val == 400_000
    assert (outs, after, slots_after) == model_fund(setls, pols, psns, slots)


def test_fund_year_rollover_date_and_presettlement() -> None:
    pols = [Pol()]
    psns = [Psn(acc_year=2025, hifp_op=300_000, ded_op=50_000, hifp_ip=100, burden2=7,
                second_paid=5, balc=1000)]
    slots = [Slot(0, 0, 0, 400_000, 2025)]
    setls = [
        Setl(1, year=2025, inscp=10_000, medfee=10_000, commit=0),  # cap used up: 0
        Setl(1, year=2026, inscp=80_000, medfee=80_000, commit=0),  # virtual roll-over
        Setl(2, year=2026, inscp=1000, medfee=1000, cd_slot=0, cd_dise=0, commit=0),
        Setl(1, year=2024, inscp=1, medfee=1),  # E_DATE
        Setl(1, year=2025, inscp=1, medfee=1, pre_status=1),  # E_FILING_REQUIRED
        Setl(1, year=2026, inscp=80_000, medfee=80_000, acct_ok=1),  # the real roll-over
        Setl(1, year=2025, inscp=1, medfee=1, pre_status=2),  # now E_DATE outranks it
        Setl(2, year=2026, inscp=1000, medfee=1000, cd_slot=0, cd_dise=0),
    ]
    outs, after, slots_after = run_fund(setls, pols, psns, slots)
    assert outs[0]["status"] == 0 and outs[0]["hifp_pay"] == 0
    assert outs[1]["act_pay_dedc"] == 50_000 and outs[1]["hifp_pay"] == 18_000
    assert outs[2]["hifp_pay"] == 700  # last year's chronic value does not count
    assert [o["status"] for o in outs] == [0, 0, 0, 3, 1, 0, 3, 0]
    assert outs[3]["balc_after"] == 1000 and outs[3]["hifp_pay"] == 0
    assert outs[5]["acct_pay"] == 1000 and outs[5]["balc_after"] == 0
    assert after[0] == Psn(2026, 0, 18_000, 50_000, 0, 0, 0)
    assert slots_after[0] == Slot(0, 0, 0, 700, 2026)
    assert (outs, after, slots_after) == model_fund(setls, pols, psns, slots)


def test_fund_refuses_bad_indices_before_changing_state() -> None:
    pols = [Pol()]
    psns = [Psn(balc=100)]
    good = Setl(1, inscp=100, medfee=100, acct_ok=1)
    for bad in (Setl(1, psn=1), Setl(1, pol=1), Setl(1, lv=4), Setl(3), Setl(2),
                Setl(1, inscp=10, medfee=5), Setl(1, reduction_bp=-1), Setl(1, pre_status=4)):
        with pytest.raises((ValueError, IndexError)):
            run_fund([good, bad], pols, psns, [])
    # run_fund copies the state in; check the kernel's own arrays directly.
    groups = _minimal_fund_groups()
    groups["batch"] = _fund.SettlementBatch(**{**_batch_fields(), "psn": np.array([0, 3], I32)})
    with pytest.raises(ValueError, match="psn"):
        _fund.fund_batch(**groups)
    assert groups["persons"].balc_fen[0] == 100


def _batch_fields(n: int = 2) -> dict:
    z = lambda t: np.zeros(n, t)  # noqa: E731
    return dict(
        kind=np.ones(n, I8), pol=z(I32), lv=np.ones(n, I8), psn=z(I32),
        year=np.full(n, 2026, I32), inscp_fen=np.full(n, 50, I64), medfee_fen=np.full(n, 50, I64),
        reduction_bp=z(I32), retired310=z(U8), acct_ok=np.ones(n, U8),
        cd_slot=np.full(n, -1, I32), cd_pol=np.full(n, -1, I32), pre_status=z(I8),
        commit=np.ones(n, U8))


def _policy_fields() -> dict:
    z = lambda t: np.zeros(1, t)  # noqa: E731
    return dict(
        annual_cap_fen=z(I64), ip_ded_fen=np.zeros((1, 3), I64),
        ip_tier_start=np.zeros((1, 3), I32), ip_tier_len=np.ones((1, 3), I32),
        ip_bonus_bp=z(I32), op_ded_fen=z(I64), op_ratio_bp=np.zeros((1, 3), I32),
        op_cap_fen=z(I64), op_bonus_bp=z(I32), sl_threshold_fen=z(I64),
        sl_tier_start=z(I32), sl_tier_len=np.ones(1, I32), sl_cap_fen=z(I64),
        tier_upper_fen=np.full(1, -1, I64), tier_ratio_bp=z(I32), cd_ratio_bp=z(I32),
        cd_cap_fen=z(I64))


def _person_fields(balc_fen: int = 100) -> dict:
    z = lambda t: np.zeros(1, t)  # noqa: E731
    return dict(
        acc_year=np.full(1, 2026, I32), hifp_ip_fen=z(I64), hifp_op_fen=z(I64), ded_op_fen=z(I64),
        burden2_fen=z(I64), second_paid_fen=z(I64), balc_fen=np.array([balc_fen], I64),
        cd_val_fen=z(I64), cd_year=z(I32))


def _minimal_fund_groups(balc_fen: int = 100) -> dict:
    return dict(batch=_fund.SettlementBatch(**_batch_fields()),
                policies=_fund.PolicyArrays(**_policy_fields()),
                persons=_fund.PersonArrays(**_person_fields(balc_fen)),
                results=_fund.FundResults(2))


def test_fund_keywords_and_readonly_inputs() -> None:
    fields, pol = _batch_fields(), _policy_fields()
    for k in ("kind", "pol"):
        fields[k].setflags(write=False)
    for k in ("tier_upper_fen", "ip_ded_fen"):
        pol[k].setflags(write=False)
    persons = _fund.PersonArrays(**_person_fields(80))
    res = _fund.FundResults(2)
    _fund.fund_batch(_fund.SettlementBatch(**fields), _fund.PolicyArrays(**pol), persons, res)
    assert res.acct_pay.tolist() == [50, 30] and persons.balc_fen[0] == 0


def test_fund_groups_refuse_swaps_and_wrong_types() -> None:
    g = _minimal_fund_groups()
    # The groups in the wrong places: a TypeError, never a wrong payment.
    with pytest.raises(TypeError):
        _fund.fund_batch(g["batch"], g["persons"], g["policies"], g["results"])
    with pytest.raises(TypeError):
        _fund.fund_batch(g["policies"], g["batch"], g["persons"], g["results"])
    # Positional fields are refused: every field is named.
    with pytest.raises(TypeError):
        _fund.SettlementBatch(*_batch_fields().values())
    # Two money arrays of another dtype, or a ratio array where money goes.
    fields = _batch_fields()
    with pytest.raises(TypeError, match="inscp_fen must be int64"):
        _fund.SettlementBatch(**{**fields, "inscp_fen": fields["reduction_bp"]})
    with pytest.raises(TypeError, match="must be a numpy array"):
        _fund.SettlementBatch(**{**fields, "kind": [1, 1]})
    with pytest.raises(ValueError, match="medfee_fen has 1 rows, expected 2"):
        _fund.SettlementBatch(**{**fields, "medfee_fen": np.zeros(1, I64)})
    pol = _policy_fields()
    with pytest.raises(ValueError, match="op_ratio_bp must have 3 columns"):
        _fund.PolicyArrays(**{**pol, "op_ratio_bp": np.zeros((1, 2), I32)})
    with pytest.raises(ValueError, match="tier_upper_fen and tier_ratio_bp differ"):
        _fund.PolicyArrays(**{**pol, "tier_ratio_bp": np.zeros(2, I32)})
    with pytest.raises(ValueError, match="contiguous"):
        _fund.SettlementBatch(**{**fields, "medfee_fen": np.zeros(4, I64)[::2]})
    psn = _person_fields()
    with pytest.raises(ValueError, match="balc_fen has 2 rows"):
        _fund.PersonArrays(**{**psn, "balc_fen": np.zeros(2, I64)})
    ro = psn["balc_fen"].copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError):
        _fund.PersonArrays(**{**psn, "balc_fen": ro})  # the kernel writes the state
    with pytest.raises(ValueError, match="results has 3 rows"):
        _fund.fund_batch(g["batch"], g["policies"], g["persons"], _fund.FundResults(3))
    # The attributes cannot be rebound: the kernel and the engine see one array.
    with pytest.raises(AttributeError):
        g["persons"].balc_fen = np.zeros(1, I64)


@st.composite
def tiers_st(draw, scale: int):
    n = draw(st.integers(1, 3))
    uppers = sorted(draw(st.lists(st.integers(1, scale), min_size=n - 1, max_size=n - 1,
                                  unique=True)))
    ratios = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n))
    return tuple(zip([*uppers, None], ratios))


@st.composite
def policies_st(draw) -> Pol:
    money_st = st.integers(0, 5_000_000)
    return Pol(
        annual_cap=draw(st.integers(0, 50_000_000)),
        ip_ded=tuple(draw(st.lists(st.integers(0, 200_000), min_size=3, max_size=3))),
        ip_tiers=tuple(draw(tiers_st(10_000_000)) for _ in range(3)),
        ip_bonus=draw(st.integers(0, 1000)),
        op_ded=draw(money_st), op_ratio=tuple(draw(st.lists(st.integers(0, 10_000),
                                                            min_size=3, max_size=3))),
        op_cap=draw(money_st), op_bonus=draw(st.integers(0, 2000)),
        sl_threshold=draw(st.integers(0, 3_000_000)), sl_tiers=draw(tiers_st(10_000_000)),
        sl_cap=draw(st.integers(0, 50_000_000)),
        chronic=tuple(draw(st.lists(st.tuples(st.integers(0, 10_000), money_st),
                                    min_size=1, max_size=2))),
    )


@st.composite
def fund_cases(draw):
    pols = draw(st.lists(policies_st(), min_size=1, max_size=2))
    acc = st.integers(0, 3_000_000)
    psns = draw(st.lists(st.builds(Psn, st.integers(2024, 2026), acc, acc, acc, acc, acc,
                                   st.integers(-1000, 3_000_000)), min_size=1, max_size=3))
    slots = []
    for i, p in enumerate(psns):
        for _ in range(draw(st.integers(0, 2))):
            pol = draw(st.integers(0, len(pols) - 1))
            slots.append(Slot(i, pol, draw(st.integers(0, len(pols[pol].chronic) - 1)),
                              draw(acc), draw(st.integers(2023, p.acc_year))))
    setls = []
    for _ in range(draw(st.integers(1, 14))):
        psn = draw(st.integers(0, len(psns) - 1))
        kind = draw(st.integers(0, 2))
        inscp = draw(st.one_of(st.integers(0, 3_000_000), st.integers(0, 10**13)))
        s = Setl(kind, psn=psn, pol=draw(st.integers(0, len(pols) - 1)),
                 lv=draw(st.integers(1, 3)), year=draw(st.integers(2023, 2027)),
                 inscp=inscp, medfee=inscp + draw(st.integers(0, 1_000_000)),
                 reduction_bp=draw(st.sampled_from([0, 1000, 2000, 3000, 10_000])),
                 retired310=draw(st.integers(0, 1)), acct_ok=draw(st.integers(0, 1)),
                 pre_status=draw(st.sampled_from([0, 0, 0, 0, 1, 2])),
                 commit=draw(st.sampled_from([1, 1, 0])))
        if kind == 2:
            mine = [k for k, sl in enumerate(slots) if sl.psn == psn]
            if mine:
                k = draw(st.sampled_from(mine))
                s.cd_slot, s.pol, s.cd_dise = k, slots[k].pol, slots[k].dise
            elif s.pre_status == 0:
                s.pre_status = 2
        setls.append(s)
    return setls, pols, psns, slots


@SETTINGS
@given(fund_cases())
def test_fund_matches_model(case) -> None:
    setls, pols, psns, slots = case
    got = run_fund(setls, pols, psns, slots)
    want = model_fund(setls, pols, psns, slots)
    assert got[0] == want[0]
    assert got[1] == want[1]
    assert got[2] == want[2]
    for o in got[0]:
        assert o["fund_pay_sumamt"] == o["hifp_pay"] + o["second_pay"]
        assert o["psn_part_amt"] - o["acct_pay"] == o["psn_cash_pay"]
        assert o["acct_pay"] >= 0 and o["hifp_pay"] >= 0 and o["second_pay"] >= 0
