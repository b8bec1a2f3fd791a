"""Line limits and the split of each fee line against its catalogue entry.

docs/contract.md section 1 (line limits, mulr, ext) and section 3 (the split).
Private: use engine.core.kernels.
"""
import numpy as np

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from core_ext._exact cimport (
    yidi_ext, yidi_ext_checked, yidi_mulr, yidi_mulr_checked, yidi_sat_add)

cdef extern from *:
    """
    /* Line limits of section 1, in the units of the arrays. */
    #define YIDI_PRIC_MICRO_MAX 1000000000000LL  /* 1,000,000.000000 yuan */
    #define YIDI_CNT_MAX_TEN_THOUSANDTHS 1000000000LL  /* 100,000.0000 units */
    #define YIDI_AMT_FEN_MAX 1000000000LL        /* 10,000,000.00 yuan */
    /* Catalogue classes (chrgitm_lv) as stored in cat_lv. */
    #define YIDI_LV_A 1
    #define YIDI_LV_B 2
    #define YIDI_LV_C 3
    """
    const int64_t PRIC_MICRO_MAX_C "YIDI_PRIC_MICRO_MAX"
    const int64_t CNT_MAX_TEN_THOUSANDTHS_C "YIDI_CNT_MAX_TEN_THOUSANDTHS"
    const int64_t AMT_FEN_MAX_C "YIDI_AMT_FEN_MAX"
    const int8_t LV_A "YIDI_LV_A"
    const int8_t LV_B "YIDI_LV_B"
    const int8_t LV_C "YIDI_LV_C"
    void prefetch "__builtin_prefetch"(const void *p) nogil

# Lines ahead whose catalogue entry is prefetched: the rows are random.
cdef enum:
    AHEAD = 8

PRIC_MICRO_MAX = PRIC_MICRO_MAX_C
CNT_MAX_TEN_THOUSANDTHS = CNT_MAX_TEN_THOUSANDTHS_C
AMT_FEN_MAX = AMT_FEN_MAX_C

# memo, per line
cdef enum:
    MEMO_NONE_C = 0
    MEMO_NOT_IN_CATALOGUE_C = 1
    MEMO_CLASS_C_C = 2
    MEMO_LIMITED_USE_C = 3
# err, per settlement
cdef enum:
    ERR_OK_C = 0
    ERR_LIMIT_C = 1
    ERR_AMOUNT_MISMATCH_C = 2

MEMO_NONE = MEMO_NONE_C
MEMO_NOT_IN_CATALOGUE = MEMO_NOT_IN_CATALOGUE_C
MEMO_CLASS_C = MEMO_CLASS_C_C
MEMO_LIMITED_USE = MEMO_LIMITED_USE_C
ERR_OK = ERR_OK_C
ERR_LIMIT = ERR_LIMIT_C
ERR_AMOUNT_MISMATCH = ERR_AMOUNT_MISMATCH_C


def ext(int64_t pric_micro, int64_t cnt_ten_thousandths) -> int:
    """ext(p, c) of section 1 for any int64 p, c; OverflowError when the result passes int64."""
    cdef int ok = 0
    cdef int64_t v = yidi_ext_checked(pric_micro, cnt_ten_thousandths, &ok)
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
    return (0 <= p <= PRIC_MICRO_MAX_C) and (0 < c <= CNT_MAX_TEN_THOUSANDTHS_C) and (0 <= a <= AMT_FEN_MAX_C)


cdef object _array(object value, object dtype, str name):
    """value as a 1-D C-contiguous array of exactly `dtype`, else TypeError/ValueError."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, not {value.dtype}")
    if value.ndim != 1:
        raise ValueError(f"{name} must have 1 dimension, not {value.ndim}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return value


cdef _rows(dict arrays, Py_ssize_t want, str group):
    for name, arr in arrays.items():
        if len(arr) != want:
            raise ValueError(f"{name} has {len(arr)} entries, expected {want} ({group})")


cdef class CatalogueArrays:
    """The catalogue entries the split reads (docs/contract.md section 3), one row per entry.

    lv (chrgitm_lv: 1 A, 2 B, 3 C), selfpay_bp, cap_micro (-1: no cap), lmt
    (1: limited to inpatient use).
    """
    def __init__(self, *, lv, selfpay_bp, cap_micro, lmt):
        self.lv = _array(lv, np.int8, "lv")
        self.selfpay_bp = _array(selfpay_bp, np.int32, "selfpay_bp")
        self.cap_micro = _array(cap_micro, np.int64, "cap_micro")
        self.lmt = _array(lmt, np.int8, "lmt")
        self.n = len(self.lv)
        _rows({"selfpay_bp": self.selfpay_bp, "cap_micro": self.cap_micro, "lmt": self.lmt},
              self.n, "catalogue entries")
        self._lv, self._selfpay_bp = self.lv, self.selfpay_bp
        self._cap_micro, self._lmt = self.cap_micro, self.lmt


cdef class LineBatch:
    """A round's fee lines for the split (docs/contract.md sections 1, 3).

    Per settlement (n_settlements): outpatient (1: the limited-use rule
    applies); starts (n_settlements + 1): settlement s owns lines starts[s] ..
    starts[s+1]-1, from 0 to n_lines, never decreasing. Per line (n_lines):
    row (catalogue row, -1 not in the catalogue), pric_micro,
    cnt_ten_thousandths, amt_fen.
    """
    def __init__(self, *, starts, outpatient, row, pric_micro, cnt_ten_thousandths, amt_fen):
        cdef Py_ssize_t s
        self.starts = _array(starts, np.int64, "starts")
        self.outpatient = _array(outpatient, np.uint8, "outpatient")
        self.row = _array(row, np.int32, "row")
        self.pric_micro = _array(pric_micro, np.int64, "pric_micro")
        self.cnt_ten_thousandths = _array(cnt_ten_thousandths, np.int64, "cnt_ten_thousandths")
        self.amt_fen = _array(amt_fen, np.int64, "amt_fen")
        self.n_settlements = len(self.starts) - 1
        self.n_lines = len(self.row)
        if self.n_settlements < 0:
            raise ValueError("starts needs n_settlements + 1 entries")
        _rows({"outpatient": self.outpatient}, self.n_settlements, "settlements")
        _rows({"pric_micro": self.pric_micro, "cnt_ten_thousandths": self.cnt_ten_thousandths,
               "amt_fen": self.amt_fen}, self.n_lines, "lines")
        self._starts, self._outpatient, self._row = self.starts, self.outpatient, self.row
        self._pric_micro, self._cnt, self._amt_fen = (
            self.pric_micro, self.cnt_ten_thousandths, self.amt_fen)
        if self._starts[0] != 0 or self._starts[self.n_settlements] != self.n_lines:
            raise ValueError(f"starts must run from 0 to {self.n_lines}")
        for s in range(self.n_settlements):
            if self._starts[s + 1] < self._starts[s]:
                raise ValueError(f"starts decrease at settlement {s}")


cdef class SplitResults:
    """The split's outputs for the LineBatch `lines`, allocated here (docs/contract.md section 3).

    Per line: memo, and the four parts in fen (fulamt_fen, overlmt_fen,
    presel_fen, inscp_fen). Per settlement: their totals and tot_amt_fen
    (saturating), err (0 ok, 1 E_LIMIT, 2 E_AMOUNT_MISMATCH) and err_line.
    The results keep their lines: what renders or stores the rows (RowEmitter,
    pack_lines) reads both from this one object.
    """
    def __init__(self, LineBatch lines not None):
        cdef Py_ssize_t n_lines = lines.n_lines, n_settlements = lines.n_settlements
        self.lines = lines
        self.n_lines, self.n_settlements = n_lines, n_settlements
        I64 = np.int64
        self.memo = np.empty(n_lines, np.int8)
        self.fulamt_fen, self.overlmt_fen = np.empty(n_lines, I64), np.empty(n_lines, I64)
        self.presel_fen, self.inscp_fen = np.empty(n_lines, I64), np.empty(n_lines, I64)
        self.tot_fulamt_fen, self.tot_overlmt_fen = np.empty(n_settlements, I64), np.empty(n_settlements, I64)
        self.tot_presel_fen, self.tot_inscp_fen = np.empty(n_settlements, I64), np.empty(n_settlements, I64)
        self.tot_amt_fen = np.empty(n_settlements, I64)
        self.err, self.err_line = np.empty(n_settlements, np.int8), np.empty(n_settlements, np.int32)
        self._memo, self._err, self._err_line = self.memo, self.err, self.err_line
        self._ful, self._ovr, self._pre, self._ins = (
            self.fulamt_fen, self.overlmt_fen, self.presel_fen, self.inscp_fen)
        self._t_ful, self._t_ovr, self._t_pre, self._t_ins, self._t_amt = (
            self.tot_fulamt_fen, self.tot_overlmt_fen, self.tot_presel_fen, self.tot_inscp_fen,
            self.tot_amt_fen)


def split_batch(LineBatch lines not None, CatalogueArrays catalogue not None,
                SplitResults results not None) -> None:
    """Check the line limits and amounts, split every line, total each settlement.

    docs/contract.md section 1 (limits) and section 3. In line order, the first
    line of a settlement outside the limits (err 1, E_LIMIT) or with
    |ext(p, c) - A| > 1 (err 2, E_AMOUNT_MISMATCH) decides err and err_line
    (its index within the settlement). A line outside the limits is not split:
    its amount goes whole to fulamt_fen, memo 0. The totals of a settlement
    with err != 0 mean nothing (they saturate rather than overflow).
    """
    if results.lines is not lines:
        raise ValueError("results were made for another LineBatch")
    cdef Py_ssize_t bad_row = -1, broken = -1
    with nogil:
        bad_row, broken = _split(
            lines._starts, lines._outpatient, lines._row, lines._pric_micro, lines._cnt,
            lines._amt_fen, catalogue._lv, catalogue._selfpay_bp, catalogue._cap_micro,
            catalogue._lmt, results._memo, results._ful, results._ovr, results._pre, results._ins,
            results._t_ful, results._t_ovr, results._t_pre, results._t_ins, results._t_amt,
            results._err, results._err_line)
    if bad_row >= 0:
        r = lines.row[bad_row]
        raise ValueError(
            f"line {bad_row}: catalogue row {r} is not a valid entry "
            f"(of {catalogue.n} rows: lv, selfpay_bp or cap out of range)")
    if broken >= 0:
        raise AssertionError(f"line {broken}: the four parts do not add up to its amount, "
                             "or one is negative")


# Raw views of the catalogue columns for split_line (rows checked there).
cdef struct Entries:
    const int8_t *lv
    const int32_t *selfpay_bp
    const int64_t *cap_micro
    const int8_t *lmt
    Py_ssize_t n

# One line's split: memo and the four parts (fen).
cdef struct Parts:
    int8_t memo
    int64_t ful_fen
    int64_t ovr_fen
    int64_t pre_fen
    int64_t ins_fen

# What split_line found wrong with a line, as bits.
cdef enum:
    LINE_LIMIT = 1      # outside the limits of section 1: E_LIMIT
    LINE_MISMATCH = 2   # |ext(p, c) - A| > 1: E_AMOUNT_MISMATCH
    LINE_BAD_ROW = 4    # a catalogue row that is no valid entry: the caller's bug
    LINE_NEGATIVE = 8   # a negative in-scope part: a bug here


cdef inline int split_line(int64_t a, int64_t p, int64_t c, int32_t r, bint is_op,
                           const Entries *E, Parts *out) noexcept nogil:
    """Section 3 for one line of amount a (fen), price p (micro), count c
    (ten-thousandths) against catalogue row r (-1: none). Returns LINE_* bits."""
    cdef int flags = 0
    cdef int64_t e, cap, base
    cdef int32_t sp
    cdef int8_t lv
    out.memo = MEMO_NONE_C
    out.ful_fen = out.ovr_fen = out.pre_fen = out.ins_fen = 0
    if not within_limits(p, c, a):
        out.ful_fen = a  # not split: the line is refused with its settlement
        return LINE_LIMIT
    e = yidi_ext(p, c)
    if e - a > 1 or a - e > 1:
        flags |= LINE_MISMATCH
    if r < 0 or r >= E.n:
        if r != -1:
            flags |= LINE_BAD_ROW
        out.memo = MEMO_NOT_IN_CATALOGUE_C
        out.ful_fen = a
        return flags
    lv = E.lv[r]
    sp = E.selfpay_bp[r]
    cap = E.cap_micro[r]
    if lv < LV_A or lv > LV_C or sp < 0 or sp > 10_000 or cap < -1:
        flags |= LINE_BAD_ROW
    if lv == LV_C:
        out.memo = MEMO_CLASS_C_C
        out.ful_fen = a
    elif E.lmt[r] == 1 and is_op:
        out.memo = MEMO_LIMITED_USE_C
        out.ful_fen = a
    else:
        # cap <= p <= 1e12 and c <= 1e9 here: ext fits int64.
        if cap >= 0 and p > cap:
            out.ovr_fen = yidi_ext(p - cap, c)
            if out.ovr_fen > a:
                out.ovr_fen = a
        base = a - out.ovr_fen
        if lv == LV_B:
            out.pre_fen = yidi_mulr(base, sp)
        out.ins_fen = base - out.pre_fen
        if out.ins_fen < 0:
            flags |= LINE_NEGATIVE
    return flags


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
    cdef Py_ssize_t n_lines = row.shape[0]
    cdef Py_ssize_t s, i, i0
    cdef Py_ssize_t bad_row = -1, broken = -1
    cdef int64_t a, t_ful, t_ovr, t_pre, t_ins, t_amt
    cdef int32_t r_ahead
    cdef int8_t e_code
    cdef int32_t e_line
    cdef int flags
    cdef bint is_op
    cdef Parts parts
    cdef Entries E
    E.n = cat_lv.shape[0]
    E.lv = &cat_lv[0] if E.n > 0 else NULL
    E.selfpay_bp = &cat_selfpay_bp[0] if E.n > 0 else NULL
    E.cap_micro = &cat_cap_micro[0] if E.n > 0 else NULL
    E.lmt = &cat_lmt[0] if E.n > 0 else NULL
    for s in range(n_set):
        i0 = starts[s]
        is_op = outpatient[s] != 0
        e_code = 0
        e_line = -1
        t_ful = t_ovr = t_pre = t_ins = t_amt = 0
        for i in range(i0, starts[s + 1]):
            if i + AHEAD < n_lines:
                r_ahead = row[i + AHEAD]
                if 0 <= r_ahead < E.n:
                    prefetch(&E.lv[r_ahead])
                    prefetch(&E.selfpay_bp[r_ahead])
                    prefetch(&E.cap_micro[r_ahead])
                    prefetch(&E.lmt[r_ahead])
            a = amt_fen[i]
            flags = split_line(a, pric_micro[i], cnt[i], row[i], is_op, &E, &parts)
            # The first line outside the limits or mismatched decides the settlement's error.
            if e_code == 0 and flags & (LINE_LIMIT | LINE_MISMATCH):
                e_code = ERR_LIMIT_C if flags & LINE_LIMIT else ERR_AMOUNT_MISMATCH_C
                e_line = <int32_t>(i - i0)
            if flags & LINE_BAD_ROW and bad_row < 0:
                bad_row = i
            # The paired check of section 3: the four parts add up to A, none negative.
            if broken < 0 and (flags & LINE_NEGATIVE or
                               parts.ful_fen + parts.ovr_fen + parts.pre_fen + parts.ins_fen != a):
                broken = i
            memo[i] = parts.memo
            fulamt[i] = parts.ful_fen
            overlmt[i] = parts.ovr_fen
            presel[i] = parts.pre_fen
            inscp[i] = parts.ins_fen
            t_ful = yidi_sat_add(t_ful, parts.ful_fen)
            t_ovr = yidi_sat_add(t_ovr, parts.ovr_fen)
            t_pre = yidi_sat_add(t_pre, parts.pre_fen)
            t_ins = yidi_sat_add(t_ins, parts.ins_fen)
            t_amt = yidi_sat_add(t_amt, a)
        tot_fulamt[s] = t_ful
        tot_overlmt[s] = t_ovr
        tot_presel[s] = t_pre
        tot_inscp[s] = t_ins
        tot_amt[s] = t_amt
        err[s] = e_code
        err_line[s] = e_line
    return bad_row, broken
