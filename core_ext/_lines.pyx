"""Fee lines from decoded objects to arrays: numbers and days, exactly.

docs/contract.md section 1 (numbers) and section 3 (the line's day). Private: use
engine.core.kernels. Parsing agrees with engine.contract.money.parse_scaled and
engine.contract.money.parse_time_day bit for bit, except that a scaled value outside
int64 saturates instead of growing: the line limits refuse it later.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset

import numpy as np

from core_ext.lines_parse cimport (
    YIDI_PLACES_MAX, yidi_append_attr, yidi_cur, yidi_get_day, yidi_get_scaled, yidi_js_eat, yidi_js_line,
    yidi_js_ws, yidi_line_out, yidi_mp_container, yidi_mp_line, yidi_parse_decimal, yidi_parse_scaled_obj,
    yidi_parse_time_day, yidi_parse_time_obj, yidi_val)

FEN_PLACES = 2
CNT_PLACES = 4
MICRO_PLACES = 6

# Identifier-like literals are interned by Cython: PyObject_GetAttr then
# finds them in the type's dict by pointer.
cdef object ATTR_CODE = "med_list_codg"
cdef object ATTR_AMT = "det_item_fee_sumamt"
cdef object ATTR_CNT = "cnt"
cdef object ATTR_PRIC = "pric"
cdef object ATTR_TIME = "fee_ocur_time"
cdef object ATTR_SN = "feedetl_sn"


cdef inline int _key_ok(object code, object sn):
    """med_list_codg a non-empty str; feedetl_sn a non-empty str or an int (not a bool)
    that fits 64 bits, as engine.reference.oracle checks them (E_SCHEMA otherwise)."""
    cdef int ovf = 0
    if not (isinstance(code, str) and len(<str>code) > 0):
        return 0
    if isinstance(sn, str):
        return len(<str>sn) > 0
    if isinstance(sn, int) and not isinstance(sn, bool):
        PyLong_AsLongLongAndOverflow(sn, &ovf)
        return ovf == 0
    return 0
# engine.contract.money.parse_scaled refuses an int at or beyond 10**24 in magnitude.
cdef object INT_LIMIT_POS = 10**24
cdef object INT_LIMIT_NEG = -10**24


cdef Py_ssize_t _gather(list lines, list out_codes, list out_sns, int64_t *amt_fen, int64_t *cnt,
                       int64_t *pric_micro, int32_t *day, uint8_t *bad) except -1:
    """gather_lines into raw arrays of len(lines) entries; returns how many lines are malformed."""
    cdef Py_ssize_t n = PyList_GET_SIZE(lines)
    cdef Py_ssize_t i, n_bad = 0
    cdef PyObject *line
    cdef int64_t a = 0, c = 0, p = 0
    cdef int32_t d = 0
    cdef int missing, ok
    cdef object sn
    for i in range(n):
        line = PyList_GET_ITEM(lines, i)
        yidi_append_attr(<PyObject *>out_codes, line, <PyObject *>ATTR_CODE, &missing)
        ok = not missing
        # Every field is read even after one fails: malformed lines are rare,
        # and the code stays one straight sequence.
        ok &= yidi_get_scaled(line, <PyObject *>ATTR_AMT, 2, <PyObject *>INT_LIMIT_POS,
                              <PyObject *>INT_LIMIT_NEG, &a)
        ok &= yidi_get_scaled(line, <PyObject *>ATTR_CNT, 4, <PyObject *>INT_LIMIT_POS,
                              <PyObject *>INT_LIMIT_NEG, &c)
        ok &= yidi_get_scaled(line, <PyObject *>ATTR_PRIC, 6, <PyObject *>INT_LIMIT_POS,
                              <PyObject *>INT_LIMIT_NEG, &p)
        ok &= yidi_get_day(line, <PyObject *>ATTR_TIME, &d)
        sn = getattr(<object>line, ATTR_SN, None)
        out_sns.append(sn)
        if ok and not _key_ok(<object>PyList_GET_ITEM(out_codes, PyList_GET_SIZE(out_codes) - 1), sn):
            ok = 0
        if ok:
            amt_fen[i] = a
            cnt[i] = c
            pric_micro[i] = p
            day[i] = d
            bad[i] = 0
        else:
            amt_fen[i] = 0
            cnt[i] = 0
            pric_micro[i] = 0
            day[i] = 0
            bad[i] = 1
            n_bad += 1
    return n_bad


def gather_lines(list lines not None, list out_codes not None, list out_sns not None, int64_t[::1] amt_fen not None,
                 int64_t[::1] cnt not None, int64_t[::1] pric_micro not None,
                 int32_t[::1] day not None, uint8_t[::1] bad not None) -> int:
    """Parse the fee lines into arrays; return how many are malformed (docs/contract.md section 1).

    Appends each line's med_list_codg object (None when missing) to out_codes
    and its feedetl_sn object (None when missing) to out_sns.
    amt_fen has 2 places, cnt 4, pric_micro 6; day is the date of
    fee_ocur_time in days since 1970-01-01. A malformed line gets bad[i] = 1
    and zeros elsewhere.
    """
    cdef Py_ssize_t n = PyList_GET_SIZE(lines)
    if (amt_fen.shape[0] != n or cnt.shape[0] != n or pric_micro.shape[0] != n
            or day.shape[0] != n or bad.shape[0] != n):
        raise ValueError(f"every output array must have {n} entries, one per line")
    if n == 0:
        return 0
    return _gather(lines, out_codes, out_sns, &amt_fen[0], &cnt[0], &pric_micro[0], &day[0], &bad[0])


cdef void *_grown(void *p, size_t nbytes) except NULL:
    """realloc, raising MemoryError (p stays valid and owned by the caller then)."""
    cdef void *q = realloc(p, nbytes)
    if q == NULL:
        raise MemoryError()
    return q


cdef class FeeBuffer:
    """The fee lines of one round of settlements, appended one settlement at a time.

    parse() reads a settlement's `feedetail` straight from its raw MessagePack
    or JSON bytes when it has the common shape (see the C block above), and
    answers -1 otherwise, appending nothing; the caller then decodes the input
    with msgspec and hands the decoded lines to gather(). Either way a line gets
    exactly what gather_lines gives it. truncate() takes back the lines of a
    settlement that left the round; arrays() copies out the round's columns.
    """

    cdef readonly list codes
    cdef readonly list sns
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t n_bad
    cdef Py_ssize_t cap
    cdef int64_t *amt
    cdef int64_t *cnt
    cdef int64_t *pric
    cdef int32_t *day
    cdef uint8_t *bad

    def __cinit__(self, Py_ssize_t capacity=4096):
        self.codes = []
        self.sns = []
        self.n = self.n_bad = self.cap = 0
        self._reserve(max(capacity, 16))

    def __dealloc__(self):
        free(self.amt)
        free(self.cnt)
        free(self.pric)
        free(self.day)
        free(self.bad)

    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self.cap
        if need <= cap:
            return 0
        while cap < need:
            cap = cap * 2 if cap else 16
        self.amt = <int64_t *>_grown(self.amt, cap * sizeof(int64_t))
        self.cnt = <int64_t *>_grown(self.cnt, cap * sizeof(int64_t))
        self.pric = <int64_t *>_grown(self.pric, cap * sizeof(int64_t))
        self.day = <int32_t *>_grown(self.day, cap * sizeof(int32_t))
        self.bad = <uint8_t *>_grown(self.bad, cap * sizeof(uint8_t))
        self.cap = cap
        return 0

    cdef int _take(self, const yidi_val *vals) except -1:
        """Append one parsed line (room reserved); 1 done, 0 not the common shape (nothing appended)."""
        cdef Py_ssize_t n = self.n
        if not yidi_line_out(vals, <PyObject *>self.codes, <PyObject *>self.sns, self.amt + n, self.cnt + n,
                             self.pric + n, self.day + n):
            return 0
        self.bad[n] = 0
        self.n = n + 1
        return 1

    def parse(self, object raw, bint json) -> int:
        """Append the lines of a raw `feedetail` (JSON when `json`, else MessagePack).

        Returns how many lines were appended (0: an empty list), or -1 when the
        value does not have the common shape and nothing was appended.
        """
        cdef Py_buffer view
        cdef yidi_cur c
        cdef yidi_val vals[6]  # YF_N
        cdef Py_ssize_t n0 = self.n, k, count = -1
        PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE)
        try:
            c.p = <const unsigned char *>view.buf
            c.end = c.p + view.len
            if json:
                if not yidi_js_eat(&c, c'['):
                    return -1
                if yidi_js_eat(&c, c']'):
                    count = 0
                else:
                    while True:
                        self._reserve(self.n + 1)
                        if not (yidi_js_line(&c, vals) and self._take(vals)):
                            break
                        if yidi_js_eat(&c, c','):
                            continue
                        if yidi_js_eat(&c, c']'):
                            count = self.n - n0
                        break
                yidi_js_ws(&c)
            else:
                k = yidi_mp_container(&c, 0x90, 0x9f, 0xdc, 0xdd)
                # Every line takes at least a byte: a larger count is cut short.
                if 0 <= k <= c.end - c.p:
                    self._reserve(self.n + k)
                    while k > 0:
                        if not (yidi_mp_line(&c, vals) and self._take(vals)):
                            break
                        k -= 1
                    if k == 0:
                        count = self.n - n0
            if count < 0 or c.p != c.end:
                self.truncate(n0)
                return -1
            return count
        except BaseException:
            self.truncate(n0)
            raise
        finally:
            PyBuffer_Release(&view)

    def gather(self, list lines not None) -> int:
        """Append decoded lines (gather_lines); returns how many of them are malformed."""
        cdef Py_ssize_t m = PyList_GET_SIZE(lines), n0 = self.n, bad
        self._reserve(self.n + m)
        try:
            bad = _gather(lines, self.codes, self.sns, self.amt + n0, self.cnt + n0, self.pric + n0,
                          self.day + n0, self.bad + n0)
        except BaseException:
            self.truncate(n0)
            raise
        self.n += m
        self.n_bad += bad
        return bad

    def extend(self, list codes not None, list sns not None, const int64_t[::1] amt, const int64_t[::1] cnt,
               const int64_t[::1] pric, const int32_t[::1] day) -> None:
        """Append lines parsed and checked before (the lines in force of a visit, engine.core.visits):
        the columns gather() and parse() would have made of them."""
        cdef Py_ssize_t m = PyList_GET_SIZE(codes), n0 = self.n
        if not (PyList_GET_SIZE(sns) == m and amt.shape[0] == m and cnt.shape[0] == m and pric.shape[0] == m
                and day.shape[0] == m):
            raise ValueError("extend: columns of different lengths")
        if m == 0:
            return
        self._reserve(n0 + m)
        memcpy(self.amt + n0, &amt[0], m * sizeof(int64_t))
        memcpy(self.cnt + n0, &cnt[0], m * sizeof(int64_t))
        memcpy(self.pric + n0, &pric[0], m * sizeof(int64_t))
        memcpy(self.day + n0, &day[0], m * sizeof(int32_t))
        memset(self.bad + n0, 0, m * sizeof(uint8_t))
        self.codes.extend(codes)
        self.sns.extend(sns)
        self.n = n0 + m

    def truncate(self, Py_ssize_t n) -> None:
        """Forget the lines from the n-th on (those of settlements that left the round)."""
        cdef Py_ssize_t i
        if not 0 <= n <= self.n:
            raise ValueError(f"cannot truncate {self.n} lines to {n}")
        for i in range(n, self.n):
            self.n_bad -= self.bad[i]
        self.n = n
        del self.codes[n:]
        del self.sns[n:]

    def arrays(self) -> tuple:
        """Copies of (amt_fen, cnt, pric_micro, day, bad) for the lines held."""
        cdef Py_ssize_t n = self.n
        amt = np.empty(n, np.int64)
        cnt = np.empty(n, np.int64)
        pric = np.empty(n, np.int64)
        day = np.empty(n, np.int32)
        bad = np.empty(n, np.uint8)
        cdef int64_t[::1] a = amt, c = cnt, p = pric
        cdef int32_t[::1] d = day
        cdef uint8_t[::1] b = bad
        if n:
            memcpy(&a[0], self.amt, n * sizeof(int64_t))
            memcpy(&c[0], self.cnt, n * sizeof(int64_t))
            memcpy(&p[0], self.pric, n * sizeof(int64_t))
            memcpy(&d[0], self.day, n * sizeof(int32_t))
            memcpy(&b[0], self.bad, n * sizeof(uint8_t))
        return amt, cnt, pric, day, bad


def parse_scaled(object value, int places) -> int:
    """As engine.contract.money.parse_scaled, saturated to int64; ValueError when malformed."""
    cdef int64_t out = 0
    if not 0 <= places <= YIDI_PLACES_MAX:
        raise ValueError(f"places must be in 0..{YIDI_PLACES_MAX}")
    if not yidi_parse_scaled_obj(<PyObject *>value, places, <PyObject *>INT_LIMIT_POS,
                                 <PyObject *>INT_LIMIT_NEG, &out):
        raise ValueError(f"not a decimal with at most {places} places: {value!r}")
    return out


def parse_scaled_str(str s not None, int places) -> int:
    """As engine.contract.money.parse_scaled for a str, saturated to int64; ValueError when malformed."""
    return parse_scaled(s, places)


def parse_time_day(str s not None) -> int:
    """'YYYY-MM-DD HH:MM:SS' to days since 1970-01-01; ValueError when malformed."""
    cdef int32_t out = 0
    if not yidi_parse_time_obj(<PyObject *>s, &out):
        raise ValueError(f"not a time YYYY-MM-DD HH:MM:SS: {s!r}")
    return out
