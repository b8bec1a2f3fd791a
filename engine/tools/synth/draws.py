"""What the synthetic world and its request streams share: one generator per
(seed, stream), the vocabulary both draw from, and column-wise formatting.

Money never passes through a float on its way out: amounts are drawn as floats
(a price distribution is a float by nature), rounded once to integer fen or
micro-yuan, and from there on only integers are formatted (`fmt_scaled`).
"""
from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract import money

# Where people go for care away from home: relative weight of each province as a
# destination (big hospitals in Beijing, Shanghai, Guangdong; retirees in Hainan).
DESTINATION_WEIGHT = {
    "11": 3.0, "31": 3.0, "44": 3.0, "33": 2.0, "32": 2.0, "46": 1.6, "51": 1.5, "42": 1.3,
    "43": 1.2, "37": 1.2, "50": 1.2, "41": 1.1, "61": 1.1,
}

# Outpatient chronic and special diseases (门诊慢特病): hypertension and diabetes
# are by far the most common and every policy lists them.
CHRONIC_DISEASES = ("M03900", "M01600", "M00500", "M07800", "M08300")

# Kinds of national catalogue codes, their share of the national pool, and the
# median (yuan) and spread of their prices.
KIND_WESTERN, KIND_TCM, KIND_SERVICE, KIND_CONSUMABLE = 0, 1, 2, 3
KIND_SHARE = (0.45, 0.15, 0.25, 0.15)
KIND_PRICE_MEDIAN_YUAN = (25.0, 35.0, 20.0, 150.0)
KIND_PRICE_SIGMA = (1.1, 1.0, 1.3, 1.6)

# Bounds (TigerStyle: a named limit on everything this module draws).
PRICE_MAX_MICRO = 200_000 * 10**6  # far below the spec's 1,000,000 yuan
EPOCH_DAY_SECONDS = 86_400


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per (seed, stream).

    SeedSequence entropy from the seed and the stream's name. NumPy keeps
    PCG64's bit stream stable, but not every distribution method across major
    versions: byte-identical output is promised for the same NumPy and Arrow.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer: {seed!r}")
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


def day_of(s: str) -> int:
    return money.parse_day(s)


# ---------------------------------------------------------------- Arrow formatting


def str_col(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def join(*parts: object) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def lpad(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(str_col(values), width=width, padding="0")


def fmt_scaled(values: np.ndarray, places: int, mask_absent: np.ndarray | None = None,
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
    whole = str_col(v // unit)
    frac = lpad(v % unit, places)
    if short2 is not None and places > 2:
        frac2 = lpad((v % unit) // 10 ** (places - 2), 2)
        frac = pc.if_else(pa.array(short2), frac2, frac)
    out = join(whole, ".", frac)
    if mask_absent is not None:
        out = pc.if_else(pa.array(mask_absent), pa.nulls(len(v), pa.string()), out)
    return out


def date_col(days: np.ndarray, mask_absent: np.ndarray | None = None) -> pa.Array:
    a = pa.array(np.asarray(days, dtype=np.int32), type=pa.date32())
    if mask_absent is not None:
        a = pc.if_else(pa.array(mask_absent), pa.nulls(len(a), pa.date32()), a)
    return a


_CLOCK = None


def time_col(abs_seconds: np.ndarray) -> pa.Array:
    """Seconds since 1970-01-01 as 'YYYY-MM-DD HH:MM:SS' (the spec's local time, no zone).

    Built from a table of the 86,400 clock readings and one string per distinct
    day: two takes and a join, several times faster than Arrow's strftime.
    """
    global _CLOCK
    if _CLOCK is None:
        sec = np.arange(EPOCH_DAY_SECONDS)
        _CLOCK = join(lpad(sec // 3600, 2), ":", lpad(sec // 60 % 60, 2), ":", lpad(sec % 60, 2))
    s = np.asarray(abs_seconds, dtype=np.int64)
    day = s // EPOCH_DAY_SECONDS
    uniq, inv = np.unique(day, return_inverse=True)
    day_s = date_col(uniq).cast(pa.string())
    return join(pc.take(day_s, pa.array(inv.ravel())), " ", pc.take(_CLOCK, pa.array(s - day * EPOCH_DAY_SECONDS)))


def time_strs(abs_seconds: np.ndarray) -> list[str]:
    return time_col(abs_seconds).to_pylist()

