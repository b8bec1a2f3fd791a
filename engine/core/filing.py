"""When each filing (备案) is in force: its last day, for all filings at once (docs/contract.md section 4).

The engine decides a visit's filing class from these days one person at a
time; they are computed here once per world, vectorised, from the rules of
section 4 (six_months for temporary filings and for filings on a personal
commitment).
"""
from __future__ import annotations

import numpy as np

from engine.contract.protocol import TEMP_FILING_TYPES
from engine.world.loader import World


def filing_last_days(w: World) -> np.ndarray:
    """The last day each filing is in force (section 4), for all filings at once.

    Temporary filings end at their enddate or six_months(begndate), whichever is
    first; status 2 (personal commitment) filings end at six_months(begndate) at
    the latest; long-term filings otherwise run to their enddate or stay open.
    """
    six = six_months_days(w.fil_begn)
    end = w.fil_end.astype(np.int64)
    temp = np.isin(np.array(w.fil_type, dtype=object), list(TEMP_FILING_TYPES))
    committed = np.array(w.fil_status, dtype=object) == "2"
    cut = temp | committed
    return np.where(cut, np.minimum(end, six), end)


def six_months_days(begn: np.ndarray) -> np.ndarray:
    """engine.contract.money.six_months over an array of day numbers."""
    d = begn.astype("datetime64[D]")
    month = d.astype("datetime64[M]")
    day_of_month = (d - month).astype(np.int64)  # 0-based
    target = month + np.timedelta64(6, "M")
    month_len = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(np.int64)
    out = target.astype("datetime64[D]") + np.minimum(day_of_month, month_len - 1) - np.timedelta64(1, "D")
    return out.astype(np.int64)
