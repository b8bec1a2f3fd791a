"""Splitting fee lines as the hub will (docs/contract.md section 3), column-wise, from a WorldView.

A hospital system sends the four split totals of a step-wise settlement
(`fulamt_ownpay_amt`, `overlmt_selfpay`, `preselfpay_amt`, `inscp_scp_amt`) and the
hub refuses them when they differ from its own (section 11). The generator computes
them here from the catalogue of the treatment province, independently of the engine,
so that a replay checks the engine's split against a second implementation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.tools.synth.view import VERSION_DAY_BITS, WorldView, version_key

BP_ONE = 10_000
CLASS_A, CLASS_B, CLASS_C = 1, 2, 3


@dataclass
class LineSplit:
    """The four parts of each line (section 3); they add up to the line's amount."""

    fulamt_ownpay_fen: np.ndarray
    overlmt_fen: np.ndarray
    preselfpay_fen: np.ndarray
    inscp_scp_fen: np.ndarray


def ext(pric_micro: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """money.ext column-wise: exact for the products the generator draws (below 2**62)."""
    return (pric_micro * cnt + 50_000_000) // 100_000_000


def mulr(amount_fen: np.ndarray, ratio_bp: np.ndarray) -> np.ndarray:
    """money.mulr column-wise."""
    return (amount_fen * ratio_bp + 5_000) // BP_ONE


def split_lines(v: WorldView, prov: np.ndarray, code: list[str], day: np.ndarray, amt_fen: np.ndarray,
                cnt: np.ndarray, pric_micro: np.ndarray, outpatient: np.ndarray) -> LineSplit:
    """Section 3 for each line: `prov` the treatment province (44 for 440000), `day` the
    day of fee_ocur_time, `outpatient` whether the visit is (for lmt_used_flag).

    The lines are exact (|ext(p, c) - A| <= 1 fen is the generator's own promise); a
    line whose code has no version valid on its day is NOT_IN_CATALOGUE.
    """
    n = amt_fen.size
    assert v.ver_key.size, "the world has an empty catalogue"
    prov, day, amt, cnt, pric = (np.asarray(a, dtype=np.int64) for a in (prov, day, amt_fen, cnt, pric_micro))
    assert n == 0 or bool((np.abs(ext(pric, cnt) - amt) <= 1).all()), "a line that does not add up"
    code_id = pc.fill_null(pc.index_in(pa.array(code, pa.string()), value_set=v.codes), -1)
    code_id = code_id.to_numpy(zero_copy_only=False).astype(np.int64)
    key = version_key(prov, np.maximum(code_id, 0), day)
    # The version that begins last on or before the day, of the same (province, code).
    at = np.searchsorted(v.ver_key, key, side="right") - 1
    at_c = np.maximum(at, 0)
    found = ((code_id >= 0) & (at >= 0) & ((v.ver_key[at_c] >> VERSION_DAY_BITS) == (key >> VERSION_DAY_BITS))
             & (day <= v.ver_end[at_c]))
    lv, selfpay, cap, lmt = v.ver_lv[at_c], v.ver_selfpay_bp[at_c], v.ver_cap_micro[at_c], v.ver_lmt[at_c]
    own = ~found | (lv == CLASS_C) | ((lmt == 1) & np.asarray(outpatient, dtype=bool))
    over = np.where(~own & (cap >= 0) & (pric > cap), np.minimum(amt, ext(pric - np.maximum(cap, 0), cnt)), 0)
    base = np.where(own, 0, amt - over)
    pre = np.where(~own & (lv == CLASS_B), mulr(base, selfpay), 0)
    ful = np.where(own, amt, 0)
    inscp = base - pre
    assert n == 0 or bool((ful + over + pre + inscp == amt).all())
    return LineSplit(fulamt_ownpay_fen=ful, overlmt_fen=over, preselfpay_fen=pre, inscp_scp_fen=inscp)
