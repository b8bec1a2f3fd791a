"""Exact numbers: money in fen, prices in micro-yuan, counts in 1/10000, ratios in bp.

docs/contract.md section 1. Nothing here ever holds a binary float: a float that
reaches these parsers is refused, because its value is already inexact.
"""
from __future__ import annotations

import calendar
import datetime as _dt
import re

FEN_PLACES = 2
MICRO_PLACES = 6  # pric, pric_uplmt_amt
CNT_PLACES = 4
BP_PLACES = 4

BP_ONE = 10_000

_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")
# Bound on the digits of any number we accept: far above every limit of the
# spec, far below anything that could make int() slow.
DIGITS_MAX = 24


class NumberError(ValueError):
    """A value that is not an exact decimal with the allowed places."""


def parse_scaled(value: object, places: int) -> int:
    """Parse a decimal string or a JSON integer into an integer scaled by 10**places.

    More than `places` decimals, a float, a bool or anything else is refused.
    """
    if isinstance(value, str):
        s = value
        if len(s) > DIGITS_MAX or not _DECIMAL.match(s):
            raise NumberError(f"not a decimal: {value!r}")
        neg = s.startswith("-")
        if neg:
            s = s[1:]
        whole, _, frac = s.partition(".")
        if len(frac) > places:
            raise NumberError(f"more than {places} decimals: {value!r}")
        n = int(whole) * 10**places + (int(frac.ljust(places, "0")) if frac else 0)
        return -n if neg else n
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 10**DIGITS_MAX:
            raise NumberError(f"too large: {value!r}")
        return value * 10**places
    raise NumberError(f"not a decimal: {value!r}")


def parse_fen(value: object) -> int:
    """An amount of yuan in fen: '123.45' -> 12345."""
    return parse_scaled(value, FEN_PLACES)


def parse_micro(value: object) -> int:
    """A price in micro-yuan: '572.160071' -> 572160071."""
    return parse_scaled(value, MICRO_PLACES)


def parse_cnt(value: object) -> int:
    """A count in ten-thousandths of a unit: '2.5' -> 25000."""
    return parse_scaled(value, CNT_PLACES)


def parse_bp(value: object) -> int:
    """A ratio in basis points: '0.85' -> 8500."""
    return parse_scaled(value, BP_PLACES)


def format_scaled(n: int, places: int) -> str:
    sign = "-" if n < 0 else ""
    n = abs(n)
    q, r = divmod(n, 10**places)
    return f"{sign}{q}.{r:0{places}d}"


def format_fen(amount_fen: int) -> str:
    """Fen as yuan with two decimals: 12345 -> '123.45'."""
    return format_scaled(amount_fen, FEN_PLACES)


def format_bp(ratio_bp: int) -> str:
    """Basis points as a ratio with four decimals: 8500 -> '0.8500'."""
    return format_scaled(ratio_bp, BP_PLACES)


def format_micro(pric_micro: int) -> str:
    """Micro-yuan as yuan with six decimals: 572160071 -> '572.160071'."""
    return format_scaled(pric_micro, MICRO_PLACES)


def format_cnt(cnt_ten_thousandths: int) -> str:
    """A count in ten-thousandths with four decimals: 25000 -> '2.5000'."""
    return format_scaled(cnt_ten_thousandths, CNT_PLACES)


def mulr(amount_fen: int, ratio_bp: int) -> int:
    """Amount times ratio, rounded half up to the fen (section 1)."""
    assert amount_fen >= 0 and ratio_bp >= 0
    return (amount_fen * ratio_bp + 5_000) // BP_ONE


def ext(pric_micro: int, cnt_ten_thousandths: int) -> int:
    """Price times count, rounded half up to the fen; exact at any size (section 1).

    micro-yuan (10**-6) times ten-thousandths (10**-4) is 10**-10 yuan, and a fen
    is 10**8 of those.
    """
    return (pric_micro * cnt_ten_thousandths + 50_000_000) // 100_000_000


def clamp_bp(r: int) -> int:
    return 0 if r < 0 else (BP_ONE if r > BP_ONE else r)


# Dates are whole days since 1970-01-01, the same numbering as Arrow's date32.
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z")


def parse_day(value: object) -> int:
    """'YYYY-MM-DD' to a day number; anything else raises NumberError."""
    if not isinstance(value, str) or not _DATE.match(value):
        raise NumberError(f"not a date YYYY-MM-DD: {value!r}")
    try:
        return _dt.date.fromisoformat(value).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise NumberError(f"not a date: {value!r}") from None


def parse_time_day(value: object) -> int:
    """'YYYY-MM-DD HH:MM:SS' to the day number of its date."""
    if not isinstance(value, str) or not _DATETIME.match(value):
        raise NumberError(f"not a time YYYY-MM-DD HH:MM:SS: {value!r}")
    try:
        _dt.datetime.fromisoformat(value)
    except ValueError:
        raise NumberError(f"not a time: {value!r}") from None
    return parse_day(value[:10])


def day_to_date(day: int) -> _dt.date:
    return _dt.date.fromordinal(day + _EPOCH_ORDINAL)


def format_day(day: int) -> str:
    return day_to_date(day).isoformat()


def day_year(day: int) -> int:
    return day_to_date(day).year


def six_months(begn_day: int) -> int:
    """Add 6 calendar months (day clamped to the month's end), minus one day (section 4)."""
    b = day_to_date(begn_day)
    m = b.month + 6
    y = b.year + (m - 1) // 12
    m = (m - 1) % 12 + 1
    d = min(b.day, calendar.monthrange(y, m)[1])
    return _dt.date(y, m, d).toordinal() - _EPOCH_ORDINAL - 1
