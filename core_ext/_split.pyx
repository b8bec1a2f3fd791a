"""Line limits and the split of each fee line against its catalogue entry.

SETTLEMENT.md section 1 (line limits, mulr, ext) and section 3 (the split).
Private: use engine.kernels.
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from core_ext._exact cimport (
    yidi_ext, yidi_ext_checked, yidi_mulr, yidi_mulr_checked, yidi_sat_add)

cdef extern from *:
    """
    /* Line limits of section 1, in the units of the arrays. */
    #define YIDI_PRIC_MICRO_MAX 1000000000000LL  /* 1,000,000.000000 yuan */
    #define YIDI_CNT_MAX 1000000000LL            /* 100,000.0000 units */
    #define YIDI_AMT_FEN_MAX 1000000000LL        /* 10,000,000.00 yuan */
    /* Catalogue classes (chrgitm_lv) as stored in cat_lv. */
    #define YIDI_LV_A 1
    #define YIDI_LV_B 2
    #define YIDI_LV_C 3
    """
    const int64_t PRIC_MICRO_MAX_C "YIDI_PRIC_MICRO_MAX"
    const int64_t CNT_MAX_C "YIDI_CNT_MAX"
    const int64_t AMT_FEN_MAX_C "YIDI_AMT_FEN_MAX"
    const int8_t LV_A "YIDI_LV_A"
    const int8_t LV_B "YIDI_LV_B"
    const int8_t LV_C "YIDI_LV_C"
    void prefetch "__builtin_prefetch"(const void *p) nogil

# Lines ahead whose catalogue entry is prefetched: the rows are random.
cdef enum:
    AHEAD = 8

PRIC_MICRO_MAX = PRIC_MICRO_MAX_C
CNT_MAX = CNT_MAX_C
AMT_FEN_MAX = AMT_FEN_MAX_C

# memo, per line
MEMO_NONE = 0
MEMO_NOT_IN_CATALOGUE = 1
MEMO_CLASS_C = 2
MEMO_LIMITED_USE = 3
# err, per settlement
ERR_OK = 0
ERR_LIMIT = 1
ERR_AMOUNT_MISMATCH = 2


def ext(int64_t pric_micro, int64_t cnt) -> int:
    """ext(p, c) of section 1 for any int64 p, c; OverflowError when the result passes int64."""
    cdef int ok = 0
    cdef int64_t v = yidi_ext_checked(pric_micro, cnt, &ok)
    if not ok:
        raise OverflowError("ext does not fit int64")
    return v


def mulr(int64_t amount_fen, int64_t ratio_bp) -> int:
    """mulr(a, r) of section 1 for a, r >= 0; OverflowError when the result passes int64."""
    cdef int ok = 0
    cdef int64_t v
    if amount_fen < 0 or ratio_bp < 0:
        raise ValueError("mulr takes a >= 0 and r >= 0")
    v = yidi_mulr_checked(amount_fen, ratio_bp, &ok)
    if not ok:
        raise OverflowError("mulr does not fit int64")
    return v


cdef inline bint within_limits(int64_t p, int64_t c, int64_t a) noexcept nogil:
    return (0 <= p <= PRIC_MICRO_MAX_C) and (0 < c <= CNT_MAX_C) and (0 <= a <= AMT_FEN_MAX_C)


def split_batch(
    const int64_t[::1] starts not None,
    const uint8_t[::1] outpatient not None,
    const int32_t[::1] row not None,
    const int64_t[::1] pric_micro not None,
    const int64_t[::1] cnt not None,
    const int64_t[::1] amt_fen not None,
    const int8_t[::1] cat_lv not None,
    const int32_t[::1] cat_selfpay_bp not None,
    const int64_t[::1] cat_cap_micro not None,
    const int8_t[::1] cat_lmt not None,
    int8_t[::1] memo not None,
    int64_t[::1] fulamt not None,
    int64_t[::1] overlmt not None,
    int64_t[::1] presel not None,
    int64_t[::1] inscp not None,
    int64_t[::1] tot_fulamt not None,
    int64_t[::1] tot_overlmt not None,
    int64_t[::1] tot_presel not None,
    int64_t[::1] tot_inscp not None,
    int64_t[::1] tot_amt not None,
    int8_t[::1] err not None,
    int32_t[::1] err_line not None,
) -> None:
    """Check the line limits and amounts, split every line, total each settlement.

    SETTLEMENT.md section 1 (limits) and section 3. Lines of settlement s are
    starts[s] .. starts[s+1]-1; row[i] is line i's catalogue row or -1. In
    line order, the first line outside the limits (err 1, E_LIMIT) or with
    |ext(p, c) - A| > 1 (err 2, E_AMOUNT_MISMATCH) decides err and err_line
    (its index within the settlement). A line outside the limits is not split:
    its amount goes whole to fulamt, memo 0. The totals of a settlement with
    err != 0 mean nothing (they saturate rather than overflow).
    """
    cdef Py_ssize_t n_set = starts.shape[0] - 1
    cdef Py_ssize_t n_lines = row.shape[0]
    cdef Py_ssize_t n_cat = cat_lv.shape[0]
    cdef Py_ssize_t s, i
    if n_set < 0:
        raise ValueError("starts needs n_settlements + 1 entries")
    for name, arr in (("outpatient", outpatient), ("tot_fulamt", tot_fulamt),
                      ("tot_overlmt", tot_overlmt), ("tot_presel", tot_presel),
                      ("tot_inscp", tot_inscp), ("tot_amt", tot_amt), ("err", err),
                      ("err_line", err_line)):
        if len(arr) != n_set:
            raise ValueError(f"{name} has {len(arr)} entries, expected {n_set} (settlements)")
    for name, arr in (("pric_micro", pric_micro), ("cnt", cnt), ("amt_fen", amt_fen),
                      ("memo", memo), ("fulamt", fulamt), ("overlmt", overlmt),
                      ("presel", presel), ("inscp", inscp)):
        if len(arr) != n_lines:
            raise ValueError(f"{name} has {len(arr)} entries, expected {n_lines} (lines)")
    for name, arr in (("cat_selfpay_bp", cat_selfpay_bp), ("cat_cap_micro", cat_cap_micro),
                      ("cat_lmt", cat_lmt)):
        if len(arr) != n_cat:
            raise ValueError(f"{name} has {len(arr)} entries, expected {n_cat} (cat_lv)")
    if starts[0] != 0 or starts[n_set] != n_lines:
        raise ValueError(f"starts must run from 0 to {n_lines}")
    for s in range(n_set):
        if starts[s + 1] < starts[s]:
            raise ValueError(f"starts decrease at settlement {s}")

    cdef Py_ssize_t bad_row = -1, broken = -1
    with nogil:
        bad_row, broken = _split(starts, outpatient, row, pric_micro, cnt, amt_fen,
                                 cat_lv, cat_selfpay_bp, cat_cap_micro, cat_lmt,
                                 memo, fulamt, overlmt, presel, inscp,
                                 tot_fulamt, tot_overlmt, tot_presel, tot_inscp, tot_amt,
                                 err, err_line)
    if bad_row >= 0:
        r = row[bad_row]
        raise ValueError(
            f"line {bad_row}: catalogue row {r} is not a valid entry "
            f"(of {n_cat} rows: lv, selfpay_bp or cap out of range)")
    if broken >= 0:
        raise AssertionError(f"line {broken}: the four parts do not add up to its amount, "
                             "or one is negative")


cdef (Py_ssize_t, Py_ssize_t) _split(
    const int64_t[::1] starts,
    const uint8_t[::1] outpatient,
    const int32_t[::1] row,
    const int64_t[::1] pric_micro,
    const int64_t[::1] cnt,
    const int64_t[::1] amt_fen,
    const int8_t[::1] cat_lv,
    const int32_t[::1] cat_selfpay_bp,
    const int64_t[::1] cat_cap_micro,
    const int8_t[::1] cat_lmt,
    int8_t[::1] memo,
    int64_t[::1] fulamt,
    int64_t[::1] overlmt,
    int64_t[::1] presel,
    int64_t[::1] inscp,
    int64_t[::1] tot_fulamt,
    int64_t[::1] tot_overlmt,
    int64_t[::1] tot_presel,
    int64_t[::1] tot_inscp,
    int64_t[::1] tot_amt,
    int8_t[::1] err,
    int32_t[::1] err_line,
) noexcept nogil:
    """The loop of split_batch. Returns (first line with an invalid catalogue
    row, first line whose parts do not add up), each -1 when none."""
    cdef Py_ssize_t n_set = starts.shape[0] - 1
    cdef Py_ssize_t n_cat = cat_lv.shape[0]
    cdef Py_ssize_t s, i, i0
    cdef Py_ssize_t bad_row = -1, broken = -1
    cdef int64_t a, p, c, e, cap, ful, ovr, pre, ins, base
    cdef int64_t t_ful, t_ovr, t_pre, t_ins, t_amt
    cdef Py_ssize_t n_lines = row.shape[0]
    cdef int32_t r, sp, r_ahead
    cdef int8_t lv, m, e_code
    cdef int32_t e_line
    cdef bint is_op
    for s in range(n_set):
        i0 = starts[s]
        is_op = outpatient[s] != 0
        e_code = 0
        e_line = -1
        t_ful = t_ovr = t_pre = t_ins = t_amt = 0
        for i in range(i0, starts[s + 1]):
            if i + AHEAD < n_lines:
                r_ahead = row[i + AHEAD]
                if 0 <= r_ahead < n_cat:
                    prefetch(&cat_lv[r_ahead])
                    prefetch(&cat_selfpay_bp[r_ahead])
                    prefetch(&cat_cap_micro[r_ahead])
                    prefetch(&cat_lmt[r_ahead])
            a = amt_fen[i]
            p = pric_micro[i]
            c = cnt[i]
            ful = ovr = pre = ins = 0
            m = 0
            if not within_limits(p, c, a):
                if e_code == 0:
                    e_code = 1
                    e_line = <int32_t>(i - i0)
                ful = a
            else:
                e = yidi_ext(p, c)
                if e_code == 0 and (e - a > 1 or a - e > 1):
                    e_code = 2
                    e_line = <int32_t>(i - i0)
                r = row[i]
                if r < 0:
                    if r != -1 and bad_row < 0:
                        bad_row = i
                    m = 1
                    ful = a
                elif r >= n_cat:
                    if bad_row < 0:
                        bad_row = i
                    m = 1
                    ful = a
                else:
                    lv = cat_lv[r]
                    sp = cat_selfpay_bp[r]
                    cap = cat_cap_micro[r]
                    if lv < LV_A or lv > LV_C or sp < 0 or sp > 10_000 or cap < -1:
                        if bad_row < 0:
                            bad_row = i
                    if lv == LV_C:
                        m = 2
                        ful = a
                    elif cat_lmt[r] == 1 and is_op:
                        m = 3
                        ful = a
                    else:
                        # cap <= p <= 1e12 and c <= 1e9 here: ext fits int64.
                        if cap >= 0 and p > cap:
                            ovr = yidi_ext(p - cap, c)
                            if ovr > a:
                                ovr = a
                        base = a - ovr
                        if lv == LV_B:
                            pre = yidi_mulr(base, sp)
                        ins = base - pre
                        if ins < 0 and broken < 0:
                            broken = i
            # The paired check of section 3: the four parts add up to A.
            if ful + ovr + pre + ins != a and broken < 0:
                broken = i
            memo[i] = m
            fulamt[i] = ful
            overlmt[i] = ovr
            presel[i] = pre
            inscp[i] = ins
            t_ful = yidi_sat_add(t_ful, ful)
            t_ovr = yidi_sat_add(t_ovr, ovr)
            t_pre = yidi_sat_add(t_pre, pre)
            t_ins = yidi_sat_add(t_ins, ins)
            t_amt = yidi_sat_add(t_amt, a)
        tot_fulamt[s] = t_ful
        tot_overlmt[s] = t_ovr
        tot_presel[s] = t_pre
        tot_inscp[s] = t_ins
        tot_amt[s] = t_amt
        err[s] = e_code
        err_line[s] = e_line
    return bad_row, broken
