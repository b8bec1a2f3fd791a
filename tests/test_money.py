"""Section 1 numbers and the section 4 six-month rule, in the plain-Python definitions."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.contract import money


@pytest.mark.parametrize(
    "text,places,want",
    [("123.45", 2, 12345), ("0", 2, 0), ("7", 2, 700), ("0.5", 2, 50), ("-1.25", 2, -125),
     ("572.160071", 6, 572160071), ("2.0000", 4, 20000), ("0.0300", 4, 300), ("00.10", 2, 10)],
)
def test_parse_scaled(text, places, want):
    assert money.parse_scaled(text, places) == want


@pytest.mark.parametrize("bad", ["1.234", "1.", ".5", "+1", " 1", "1e3", "1,5", "", "abc", "1.2.3", "0x10"])
def test_parse_fen_refuses(bad):
    with pytest.raises(money.NumberError):
        money.parse_fen(bad)


def test_parse_refuses_floats_and_bools():
    for v in (1.5, True, None, [1], {"a": 1}):
        with pytest.raises(money.NumberError):
            money.parse_fen(v)
    assert money.parse_fen(12) == 1200


@given(st.integers(min_value=-10**15, max_value=10**15))
def test_format_parse_roundtrip(n):
    assert money.parse_fen(money.format_fen(n)) == n


def test_format():
    assert money.format_fen(0) == "0.00"
    assert money.format_fen(-5) == "-0.05"
    assert money.format_fen(123456) == "1234.56"
    assert money.format_bp(8500) == "0.8500"


def test_mulr_rounds_half_up():
    assert money.mulr(1, 5000) == 1  # 0.5 fen rounds up
    assert money.mulr(1, 4999) == 0
    assert money.mulr(12345, 10000) == 12345
    assert money.mulr(0, 7000) == 0


def test_ext_exact_beyond_64_bits():
    p = 1_000_000 * 10**6  # the largest price, micro-yuan
    c = 100_000 * 10**4  # the largest count
    assert p * c > 2**63
    assert money.ext(p, c) == 100_000_000_000 * 100  # 1e11 yuan in fen
    assert money.ext(572160071, 20000) == 114432  # 572.160071 x 2 = 1144.320142 -> 1144.32
    assert money.ext(5_000, 10_000) == 1  # 0.005 yuan x 1 = half a fen: rounds up
    assert money.ext(4_999, 10_000) == 0

@given(st.integers(0, 10**12), st.integers(0, 10**9))
def test_ext_matches_definition(p, c):
    q, r = divmod(p * c, 100_000_000)
    assert money.ext(p, c) == q + (1 if r >= 50_000_000 else 0)


@pytest.mark.parametrize(
    "begn,want",
    [("2026-01-31", "2026-07-30"), ("2026-08-31", "2027-02-27"), ("2026-01-01", "2026-06-30"),
     ("2027-08-31", "2028-02-28"), ("2026-03-15", "2026-09-14"), ("2026-12-31", "2027-06-29")],
)
def test_six_months(begn, want):
    assert money.format_day(money.six_months(money.parse_day(begn))) == want


def test_time_day():
    assert money.parse_time_day("1970-01-02 00:00:00") == 1
    for bad in ("2026-02-30 10:00:00", "2026-01-01", "2026-01-01T10:00:00", "2026-01-01 24:00:00"):
        with pytest.raises(money.NumberError):
            money.parse_time_day(bad)


@given(st.lists(st.integers(min_value=0, max_value=40_000), min_size=1, max_size=50))
def test_six_months_vectorised_matches_definition(days):
    import numpy as np

    from engine.core.filing import six_months_days

    got = six_months_days(np.array(days, dtype=np.int32)).tolist()
    assert got == [money.six_months(d) for d in days]
