"""Validating and converting world columns in one pass each (docs/contract.md section 2).

Arrow reads the CSV files (multi-threaded); these kernels then turn a string
column, given as Arrow buffers, into exact integers, reporting the first row
that breaks the rule so the loader can name file, line and field. Regular
expressions over millions of cells took most of the load time; one loop in C
per column does the same checks at memory speed. Private: use engine.world.
"""
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t
from libc.string cimport memcmp

cdef extern from *:
    """
    #include <stdint.h>
    /* Howard Hinnant's days_from_civil: days since 1970-01-01. */
    static inline int64_t yidi_days_from_civil(int64_t y, unsigned m, unsigned d) {
        y -= m <= 2;
        const int64_t era = (y >= 0 ? y : y - 399) / 400;
        const unsigned yoe = (unsigned)(y - era * 400);
        const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t)doe - 719468;
    }
    static inline int yidi_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }
    """
    int64_t yidi_days_from_civil(int64_t y, unsigned m, unsigned d) nogil
    int yidi_leap(int64_t y) nogil

cdef int[13] MONTH_DAYS
MONTH_DAYS[:] = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


cdef inline bint _valid(const uint8_t[::1] valid, Py_ssize_t i) noexcept nogil:
    # Arrow's validity bitmap, least significant bit first; empty: all valid.
    return valid.shape[0] == 0 or (valid[i >> 3] >> (i & 7)) & 1


cdef Py_ssize_t _parse_decimal_column(
    const int64_t[::1] offsets, const uint8_t[::1] data, const uint8_t[::1] valid,
    int places, int int_digits_max, bint optional, int64_t[::1] out,
) noexcept nogil:
    cdef Py_ssize_t n = out.shape[0], i, k, end, start
    cdef int64_t v
    cdef int digits, frac
    cdef uint8_t c
    for i in range(n):
        if not _valid(valid, i):
            if optional:
                out[i] = -1
                continue
            return i
        k = offsets[i]
        end = offsets[i + 1]
        v = 0
        digits = 0
        while k < end and data[k] >= 48 and data[k] <= 57:
            v = v * 10 + (data[k] - 48)
            digits += 1
            k += 1
        if digits == 0 or digits > int_digits_max:
            return i
        frac = 0
        if k < end:
            if data[k] != 46:  # '.'
                return i
            k += 1
            start = k
            while k < end and data[k] >= 48 and data[k] <= 57:
                if frac == places:
                    return i
                v = v * 10 + (data[k] - 48)
                frac += 1
                k += 1
            if k == start or k != end:
                return i
        while frac < places:
            v *= 10
            frac += 1
        out[i] = v
    return -1


def parse_decimal_column(
    const int64_t[::1] offsets, const uint8_t[::1] data, const uint8_t[::1] valid,
    int places, int int_digits_max, bint optional, int64_t[::1] out,
):
    """Non-negative decimals `[0-9]{1,int_digits_max}(\\.[0-9]{1,places})?` scaled by 10**places.

    An absent cell gives -1 when `optional`, else it is bad. Returns the first bad
    row, or -1 when every row is good.
    """
    cdef Py_ssize_t r
    with nogil:  # a national catalogue is millions of rows: a reload's load leaves the event loop the GIL
        r = _parse_decimal_column(offsets, data, valid, places, int_digits_max, optional, out)
    return r


cdef Py_ssize_t _parse_date_column(
    const int64_t[::1] offsets, const uint8_t[::1] data, const uint8_t[::1] valid,
    bint optional, int32_t absent, int32_t[::1] out,
) noexcept nogil:
    cdef Py_ssize_t n = out.shape[0], i, k
    cdef int y, m, d, dim, j
    cdef const uint8_t *p
    for i in range(n):
        if not _valid(valid, i):
            if optional:
                out[i] = absent
                continue
            return i
        k = offsets[i]
        if offsets[i + 1] - k != 10:
            return i
        p = &data[k]
        if p[4] != 45 or p[7] != 45:  # '-'
            return i
        for j in range(10):
            if j != 4 and j != 7 and (p[j] < 48 or p[j] > 57):
                return i
        y = (p[0] - 48) * 1000 + (p[1] - 48) * 100 + (p[2] - 48) * 10 + (p[3] - 48)
        m = (p[5] - 48) * 10 + (p[6] - 48)
        d = (p[8] - 48) * 10 + (p[9] - 48)
        if y < 1 or m < 1 or m > 12 or d < 1:
            return i
        dim = 29 if (m == 2 and yidi_leap(y)) else MONTH_DAYS[m]
        if d > dim:
            return i
        out[i] = <int32_t>yidi_days_from_civil(y, m, d)
    return -1


def parse_date_column(
    const int64_t[::1] offsets, const uint8_t[::1] data, const uint8_t[::1] valid,
    bint optional, int32_t absent, int32_t[::1] out,
):
    """`YYYY-MM-DD` (a real calendar day) as days since 1970-01-01; absent gives `absent`
    when `optional`. Returns the first bad row, or -1."""
    cdef Py_ssize_t r
    with nogil:  # a national catalogue is millions of rows: a reload's load leaves the event loop the GIL
        r = _parse_date_column(offsets, data, valid, optional, absent, out)
    return r


cdef Py_ssize_t _check_token_column(
    const int64_t[::1] offsets, const uint8_t[::1] data, const uint8_t[::1] valid, int len_max,
) noexcept nogil:
    cdef Py_ssize_t n = offsets.shape[0] - 1, i, k, ln
    for i in range(n):
        if not _valid(valid, i):
            return i
        ln = offsets[i + 1] - offsets[i]
        if ln < 1 or ln > len_max:
            return i
        for k in range(offsets[i], offsets[i + 1]):
            if data[k] < 0x21 or data[k] > 0x7e:
                return i
    return -1


def check_token_column(
    const int64_t[::1] offsets, const uint8_t[::1] data, const uint8_t[::1] valid, int len_max,
):
    """Every cell present, 1..len_max bytes, each a printable ASCII character other than
    space (0x21-0x7e). Returns the first bad row, or -1."""
    cdef Py_ssize_t r
    with nogil:  # a national catalogue is millions of rows: a reload's load leaves the event loop the GIL
        r = _check_token_column(offsets, data, valid, len_max)
    return r


cdef Py_ssize_t _catalogue_order(
    const int16_t[::1] prov, const int64_t[::1] offsets, const uint8_t[::1] data,
    const int32_t[::1] begn,
) noexcept nogil:
    cdef Py_ssize_t n = prov.shape[0], i, la, lb, lm
    cdef int c
    for i in range(1, n):
        if prov[i] != prov[i - 1]:
            if prov[i] < prov[i - 1]:
                return i
            continue
        la = offsets[i] - offsets[i - 1]
        lb = offsets[i + 1] - offsets[i]
        lm = la if la < lb else lb
        c = memcmp(&data[offsets[i - 1]], &data[offsets[i]], lm)
        if c > 0 or (c == 0 and la > lb):
            return i
        if c == 0 and la == lb and begn[i] < begn[i - 1]:
            return i
    return -1


def catalogue_order(
    const int16_t[::1] prov, const int64_t[::1] offsets, const uint8_t[::1] data,
    const int32_t[::1] begn,
):
    """-1 when rows are sorted by (prov, code bytes, begn), else the first row out of order."""
    cdef Py_ssize_t r
    with nogil:  # a national catalogue is millions of rows: a reload's load leaves the event loop the GIL
        r = _catalogue_order(prov, offsets, data, begn)
    return r


cdef Py_ssize_t _catalogue_overlap(
    const int16_t[::1] prov, const int64_t[::1] offsets, const uint8_t[::1] data,
    const int32_t[::1] begn, const int32_t[::1] end,
) noexcept nogil:
    cdef Py_ssize_t n = prov.shape[0], i, la
    for i in range(1, n):
        if prov[i] != prov[i - 1]:
            continue
        la = offsets[i] - offsets[i - 1]
        if la != offsets[i + 1] - offsets[i]:
            continue
        if memcmp(&data[offsets[i - 1]], &data[offsets[i]], la) != 0:
            continue
        if begn[i] <= end[i - 1]:
            return i
    return -1


def catalogue_overlap(
    const int16_t[::1] prov, const int64_t[::1] offsets, const uint8_t[::1] data,
    const int32_t[::1] begn, const int32_t[::1] end,
):
    """On sorted rows: the first row whose date range overlaps the previous version of
    the same (prov, code), or -1."""
    cdef Py_ssize_t r
    with nogil:  # a national catalogue is millions of rows: a reload's load leaves the event loop the GIL
        r = _catalogue_overlap(prov, offsets, data, begn, end)
    return r
