"""Fee lines from decoded objects to arrays: numbers and days, exactly.

SETTLEMENT.md section 1 (numbers) and section 3 (the line's day). Private: use
engine.kernels. Parsing agrees with engine.money.parse_scaled and
engine.money.parse_time_day bit for bit, except that a scaled value outside
int64 saturates instead of growing: the line limits refuse it later.
"""
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t

from core_ext._text cimport yidi_ascii_view

cdef extern from *:
    """
    #include <Python.h>
    #include <stdint.h>

    /* Bound on the characters of a decimal string, as engine.money.DIGITS_MAX. */
    #define YIDI_DIGITS_MAX 24
    /* 24 digits (< 10**24) times 10**12 stays below 2**127. */
    #define YIDI_PLACES_MAX 12

    static const int64_t yidi_pow10[YIDI_PLACES_MAX + 1] = {
        1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL,
        100000000LL, 1000000000LL, 10000000000LL, 100000000000LL, 1000000000000LL};

    static inline int64_t yidi_sat64(__int128 v) {
        if (v > (__int128)INT64_MAX) return INT64_MAX;
        if (v < (__int128)INT64_MIN) return INT64_MIN;
        return (int64_t)v;
    }

    /* `-?[0-9]+(\\.[0-9]+)?`, at most YIDI_DIGITS_MAX characters and `places`
       decimals, scaled by 10**places. 1 when valid, else 0. */
    static int yidi_parse_decimal(const unsigned char *s, Py_ssize_t n, int places, int64_t *out) {
        Py_ssize_t i = 0, start;
        int neg = 0, frac = 0;
        unsigned __int128 v = 0;
        if (n <= 0 || n > YIDI_DIGITS_MAX) return 0;
        if (s[0] == '-') { neg = 1; i = 1; }
        start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') { v = v * 10u + (unsigned)(s[i] - '0'); i++; }
        if (i == start) return 0;
        if (i < n) {
            if (s[i] != '.') return 0;
            i++;
            start = i;
            while (i < n && s[i] >= '0' && s[i] <= '9') {
                if (frac == places) return 0;
                v = v * 10u + (unsigned)(s[i] - '0');
                frac++;
                i++;
            }
            if (i == start || i != n) return 0;
        }
        for (; frac < places; frac++) v *= 10u;
        *out = yidi_sat64(neg ? -(__int128)v : (__int128)v);
        return 1;
    }

    /* A str or an int (not a bool) scaled by 10**places, as
       engine.money.parse_scaled. 1 valid, 0 invalid, -1 error raised (only
       from an int subclass whose comparison raises). */
    static int yidi_parse_scaled_obj(PyObject *o, int places, PyObject *lim_pos,
                                     PyObject *lim_neg, int64_t *out) {
        if (PyUnicode_Check(o)) {
            Py_ssize_t n;
            const unsigned char *p = yidi_ascii_view(o, &n);
            if (p == NULL) return 0;  /* non-ASCII: the decimal pattern cannot match */
            return yidi_parse_decimal(p, n, places, out);
        }
        if (PyLong_Check(o) && !PyBool_Check(o)) {
            int ovf = 0, big;
            long long v = PyLong_AsLongLongAndOverflow(o, &ovf);
            if (v == -1 && PyErr_Occurred()) return -1;
            if (ovf == 0) {
                *out = yidi_sat64((__int128)v * yidi_pow10[places]);
                return 1;
            }
            /* Beyond int64: refused at 10**24 as in engine.money, else saturated. */
            big = ovf > 0 ? PyObject_RichCompareBool(o, lim_pos, Py_GE)
                          : PyObject_RichCompareBool(o, lim_neg, Py_LE);
            if (big < 0) return -1;
            if (big) return 0;
            *out = ovf > 0 ? INT64_MAX : INT64_MIN;
            return 1;
        }
        return 0;
    }

    static inline int yidi_dig2(const unsigned char *p) {
        return (p[0] - '0') * 10 + (p[1] - '0');
    }

    /* Howard Hinnant's days_from_civil: days since 1970-01-01. */
    static inline int32_t yidi_days_from_civil(int y, int m, int d) {
        y -= m <= 2;
        const int era = (y >= 0 ? y : y - 399) / 400;
        const int yoe = y - era * 400;
        const int doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
        const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return (int32_t)(era * 146097 + doe - 719468);
    }

    /* `YYYY-MM-DD HH:MM:SS` (a real date of years 1..9999, a real time) to
       the day number of its date. 1 when valid, else 0. */
    static int yidi_parse_time_day(const unsigned char *s, Py_ssize_t n, int32_t *out) {
        static const char shape[] = "0000-00-00 00:00:00";
        static const int mdays[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        Py_ssize_t i;
        int y, m, d, leap;
        if (n != 19) return 0;
        for (i = 0; i < 19; i++) {
            if (shape[i] == '0') {
                if (s[i] < '0' || s[i] > '9') return 0;
            } else if (s[i] != (unsigned char)shape[i]) {
                return 0;
            }
        }
        y = yidi_dig2(s) * 100 + yidi_dig2(s + 2);
        m = yidi_dig2(s + 5);
        d = yidi_dig2(s + 8);
        if (y < 1 || m < 1 || m > 12 || d < 1) return 0;
        leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (d > mdays[m] + (m == 2 && leap)) return 0;
        if (yidi_dig2(s + 11) > 23 || yidi_dig2(s + 14) > 59 || yidi_dig2(s + 17) > 59) return 0;
        *out = yidi_days_from_civil(y, m, d);
        return 1;
    }

    static int yidi_parse_time_obj(PyObject *o, int32_t *out) {
        Py_ssize_t n;
        const unsigned char *p = yidi_ascii_view(o, &n);
        if (p == NULL) return 0;
        return yidi_parse_time_day(p, n, out);
    }

    /* Attribute `name` of `line`: a new reference; NULL with no error set when
       the attribute is missing (the line is malformed); NULL with the error
       set for any other failure. */
    static PyObject *yidi_attr(PyObject *line, PyObject *name) {
        PyObject *v = PyObject_GetAttr(line, name);
        if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) PyErr_Clear();
        return v;
    }

    /* 1 valid, 0 missing or invalid, -1 error raised. */
    static int yidi_get_scaled(PyObject *line, PyObject *name, int places,
                               PyObject *lim_pos, PyObject *lim_neg, int64_t *out) {
        int ok;
        PyObject *v = yidi_attr(line, name);
        if (v == NULL) return PyErr_Occurred() ? -1 : 0;
        ok = yidi_parse_scaled_obj(v, places, lim_pos, lim_neg, out);
        Py_DECREF(v);
        return ok;
    }

    static int yidi_get_day(PyObject *line, PyObject *name, int32_t *out) {
        int ok;
        PyObject *v = yidi_attr(line, name);
        if (v == NULL) return PyErr_Occurred() ? -1 : 0;
        ok = yidi_parse_time_obj(v, out);
        Py_DECREF(v);
        return ok;
    }

    /* Appends line.<name> (or None when missing) to `codes`. 0, or -1 with
       the error set. */
    static int yidi_append_attr(PyObject *codes, PyObject *line, PyObject *name, int *missing) {
        int rc;
        PyObject *v = yidi_attr(line, name);
        if (v == NULL) {
            if (PyErr_Occurred()) return -1;
            *missing = 1;
            return PyList_Append(codes, Py_None);
        }
        *missing = 0;
        rc = PyList_Append(codes, v);
        Py_DECREF(v);
        return rc;
    }
    """
    const int YIDI_PLACES_MAX
    int yidi_parse_decimal(const unsigned char *s, Py_ssize_t n, int places, int64_t *out) nogil
    int yidi_parse_scaled_obj(PyObject *o, int places, PyObject *lim_pos, PyObject *lim_neg,
                              int64_t *out) except -1
    int yidi_parse_time_day(const unsigned char *s, Py_ssize_t n, int32_t *out) nogil
    int yidi_parse_time_obj(PyObject *o, int32_t *out)
    int yidi_get_scaled(PyObject *line, PyObject *name, int places, PyObject *lim_pos,
                        PyObject *lim_neg, int64_t *out) except -1
    int yidi_get_day(PyObject *line, PyObject *name, int32_t *out) except -1
    int yidi_append_attr(PyObject *codes, PyObject *line, PyObject *name,
                         int *missing) except -1

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
    that fits 64 bits, as engine.reference checks them (E_SCHEMA otherwise)."""
    cdef int ovf = 0
    if not (isinstance(code, str) and len(<str>code) > 0):
        return 0
    if isinstance(sn, str):
        return len(<str>sn) > 0
    if isinstance(sn, int) and not isinstance(sn, bool):
        PyLong_AsLongLongAndOverflow(sn, &ovf)
        return ovf == 0
    return 0
# engine.money.parse_scaled refuses an int at or beyond 10**24 in magnitude.
cdef object INT_LIMIT_POS = 10**24
cdef object INT_LIMIT_NEG = -10**24


def gather_lines(list lines not None, list out_codes not None, list out_sns not None, int64_t[::1] amt_fen not None,
                 int64_t[::1] cnt not None, int64_t[::1] pric_micro not None,
                 int32_t[::1] day not None, uint8_t[::1] bad not None) -> int:
    """Parse the fee lines into arrays; return how many are malformed (SETTLEMENT.md section 1).

    Appends each line's med_list_codg object (None when missing) to out_codes
    and its feedetl_sn object (None when missing) to out_sns.
    amt_fen has 2 places, cnt 4, pric_micro 6; day is the date of
    fee_ocur_time in days since 1970-01-01. A malformed line gets bad[i] = 1
    and zeros elsewhere.
    """
    cdef Py_ssize_t n = PyList_GET_SIZE(lines)
    cdef Py_ssize_t i, n_bad = 0
    cdef PyObject *line
    cdef int64_t a = 0, c = 0, p = 0
    cdef int32_t d = 0
    cdef int missing, ok
    cdef object sn
    if (amt_fen.shape[0] != n or cnt.shape[0] != n or pric_micro.shape[0] != n
            or day.shape[0] != n or bad.shape[0] != n):
        raise ValueError(f"every output array must have {n} entries, one per line")
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


def parse_scaled(object value, int places) -> int:
    """As engine.money.parse_scaled, saturated to int64; ValueError when malformed."""
    cdef int64_t out = 0
    if not 0 <= places <= YIDI_PLACES_MAX:
        raise ValueError(f"places must be in 0..{YIDI_PLACES_MAX}")
    if not yidi_parse_scaled_obj(<PyObject *>value, places, <PyObject *>INT_LIMIT_POS,
                                 <PyObject *>INT_LIMIT_NEG, &out):
        raise ValueError(f"not a decimal with at most {places} places: {value!r}")
    return out


def parse_scaled_str(str s not None, int places) -> int:
    """As engine.money.parse_scaled for a str, saturated to int64; ValueError when malformed."""
    return parse_scaled(s, places)


def parse_time_day(str s not None) -> int:
    """'YYYY-MM-DD HH:MM:SS' to days since 1970-01-01; ValueError when malformed."""
    cdef int32_t out = 0
    if not yidi_parse_time_obj(<PyObject *>s, &out):
        raise ValueError(f"not a time YYYY-MM-DD HH:MM:SS: {s!r}")
    return out
