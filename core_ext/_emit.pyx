"""Rendering the per-line `result` of a settlement straight to JSON or MessagePack bytes.

docs/contract.md section 7 (the `result` rows). A settlement of 60 lines has 720
fields to format; building them as Python dicts costs more than everything
else the engine does for that settlement, so the rows are written here, into
one buffer, and spliced into the reply as msgspec.Raw. Private: use
engine.core.kernels.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeASCII
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cimport cython

from core_ext._split cimport CatalogueArrays, LineBatch, SplitResults

cdef extern from "Python.h":
    bint PyUnicode_Check(object o)
    bint PyLong_Check(object o)
    bint PyBool_Check(object o)

# A row's fixed part is under 400 bytes; a feedetl_sn adds up to 6 bytes per
# byte when every character needs a JSON escape.
cdef enum:
    ROW_FIXED_BYTES_MAX = 512

cdef const char *MEMO_TEXT[4]
MEMO_TEXT[0] = b""
MEMO_TEXT[1] = b"NOT_IN_CATALOGUE"
MEMO_TEXT[2] = b"CLASS_C"
MEMO_TEXT[3] = b"LIMITED_USE"
cdef int MEMO_LEN[4]
MEMO_LEN[:] = [0, 16, 7, 11]


cdef struct Buf:
    char *p
    Py_ssize_t n
    Py_ssize_t cap


cdef inline void put(Buf *b, const char *s, Py_ssize_t n) noexcept nogil:
    memcpy(b.p + b.n, s, n)
    b.n += n


cdef inline void put_c(Buf *b, char c) noexcept nogil:
    b.p[b.n] = c
    b.n += 1


cdef inline Py_ssize_t fmt_scaled(char *out, int64_t v, int places) noexcept nogil:
    """v / 10**places as a decimal with exactly `places` decimals; returns the length."""
    cdef char tmp[32]
    cdef int i = 0, k
    cdef Py_ssize_t n = 0
    cdef uint64_t u
    if v < 0:
        out[0] = b'-'
        n = 1
        u = <uint64_t>(-(v + 1)) + 1
    else:
        u = <uint64_t>v
    # digits, least significant first; at least places + 1 of them
    while u > 0 or i <= places:
        tmp[i] = <char>(48 + <int>(u % 10))
        u //= 10
        i += 1
    for k in range(i - 1, places - 1, -1):
        out[n] = tmp[k]
        n += 1
    if places > 0:
        out[n] = b'.'
        n += 1
        for k in range(places - 1, -1, -1):
            out[n] = tmp[k]
            n += 1
    return n


cdef inline void json_scaled(Buf *b, int64_t v, int places, bint quoted) noexcept nogil:
    if quoted:
        put_c(b, b'"')
    b.n += fmt_scaled(b.p + b.n, v, places)
    if quoted:
        put_c(b, b'"')


cdef inline void json_str(Buf *b, const char *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned char c
    cdef const char *hexd = b"0123456789abcdef"
    put_c(b, b'"')
    for i in range(n):
        c = <unsigned char>s[i]
        if c == b'"' or c == b'\\':
            put_c(b, b'\\')
            put_c(b, <char>c)
        elif c < 0x20:
            put(b, b"\\u00", 4)
            put_c(b, hexd[c >> 4])
            put_c(b, hexd[c & 15])
        else:
            put_c(b, <char>c)
    put_c(b, b'"')


cdef inline void mp_str(Buf *b, const char *s, Py_ssize_t n) noexcept nogil:
    if n < 32:
        put_c(b, <char>(0xa0 | n))
    elif n < 256:
        put_c(b, <char>0xd9)
        put_c(b, <char>n)
    else:
        put_c(b, <char>0xda)
        put_c(b, <char>(n >> 8))
        put_c(b, <char>(n & 0xff))
    put(b, s, n)


cdef inline void mp_scaled(Buf *b, int64_t v, int places) noexcept nogil:
    cdef char tmp[40]
    cdef Py_ssize_t n = fmt_scaled(tmp, v, places)
    put_c(b, <char>(0xa0 | n))
    put(b, tmp, n)


cdef inline void mp_int(Buf *b, long long v) noexcept nogil:
    cdef int k
    if 0 <= v < 128:
        put_c(b, <char>v)
    elif -32 <= v < 0:
        put_c(b, <char>(0xe0 | (v + 32)))
    else:
        put_c(b, <char>0xd3)  # int64, big-endian
        for k in range(7, -1, -1):
            put_c(b, <char>((v >> (8 * k)) & 0xff))


cdef inline void key(Buf *b, const char *k, Py_ssize_t n, bint mp, bint first) noexcept nogil:
    if mp:
        put_c(b, <char>(0xa0 | n))
        put(b, k, n)
    else:
        if not first:
            put_c(b, b',')
        put_c(b, b'"')
        put(b, k, n)
        put(b, b'":', 2)




cdef inline void scaled(Buf *b, int64_t v, int places, bint mp, bint quoted) noexcept nogil:
    """A scaled number: a MessagePack str, or JSON (a string when `quoted`)."""
    if mp:
        mp_scaled(b, v, places)
    else:
        json_scaled(b, v, places, quoted)


cdef inline void text(Buf *b, const char *s, Py_ssize_t n, bint mp) noexcept nogil:
    if mp:
        mp_str(b, s, n)
    else:
        json_str(b, s, n)


cdef inline void nil(Buf *b, bint mp) noexcept nogil:
    if mp:
        put_c(b, <char>0xc0)
    else:
        put(b, b"null", 4)


cdef inline void list_start(Buf *b, Py_ssize_t m, bint mp) noexcept nogil:
    """The header of a list of m rows."""
    cdef int j
    if not mp:
        put_c(b, b'[')
    elif m < 16:
        put_c(b, <char>(0x90 | m))
    elif m < 65536:
        put_c(b, <char>0xdc)
        put_c(b, <char>(m >> 8))
        put_c(b, <char>(m & 0xff))
    else:
        put_c(b, <char>0xdd)
        for j in range(3, -1, -1):
            put_c(b, <char>((m >> (8 * j)) & 0xff))


cdef int put_sn(Buf *b, object sn, bint mp) except -1:
    """feedetl_sn as it came: a str, or an int (a JSON number either way of quoting)."""
    cdef const char *sn_p
    cdef Py_ssize_t sn_n
    cdef long long sn_int
    if PyUnicode_Check(sn):
        sn_p = PyUnicode_AsUTF8AndSize(sn, &sn_n)
        text(b, sn_p, sn_n, mp)
    elif PyLong_Check(sn) and not PyBool_Check(sn):
        sn_int = sn
        if mp:
            mp_int(b, sn_int)
        else:
            b.n += fmt_scaled(b.p + b.n, sn_int, 0)
    else:
        raise TypeError("feedetl_sn must be a str or an int")
    return 0


@cython.final
cdef class RowEmitter:
    """A round's `result` rows, rendered a settlement at a time (emit).

    Reads the round's split (SplitResults: the parts and memo of each line,
    and through .lines its amount, count, price and catalogue row) and the
    catalogue it was split against (lv, selfpay_bp, cap_micro of each row's
    entry, -1 for none); sns[i] is the feedetl_sn of line i (a str or an int).
    The typed views are taken once per round rather than once per settlement.
    """

    cdef list sns
    cdef const int64_t[::1] amt_fen
    cdef const int64_t[::1] cnt
    cdef const int64_t[::1] pric_micro
    cdef const int32_t[::1] row
    cdef const int8_t[::1] cat_lv
    cdef const int32_t[::1] cat_selfpay_bp
    cdef const int64_t[::1] cat_cap_micro
    cdef const int8_t[::1] memo
    cdef const int64_t[::1] fulamt
    cdef const int64_t[::1] overlmt
    cdef const int64_t[::1] presel
    cdef const int64_t[::1] inscp

    def __init__(self, list sns not None, SplitResults split not None,
                 CatalogueArrays catalogue not None):
        cdef LineBatch lines = split.lines
        cdef Py_ssize_t n = lines.n_lines, i
        if PyList_GET_SIZE(sns) < n:
            raise ValueError("sns must hold a feedetl_sn per line")
        self.sns = sns
        self.amt_fen, self.cnt, self.pric_micro, self.row = (
            lines._amt_fen, lines._cnt, lines._pric_micro, lines._row)
        self.cat_lv, self.cat_selfpay_bp, self.cat_cap_micro = (
            catalogue._lv, catalogue._selfpay_bp, catalogue._cap_micro)
        self.memo, self.fulamt, self.overlmt, self.presel, self.inscp = (
            split._memo, split._ful, split._ovr, split._pre, split._ins)
        for i in range(n):
            if not (-1 <= self.row[i] < catalogue.n):
                raise ValueError(f"row {i} names catalogue entry {self.row[i]}, outside the catalogue")
            if not (0 <= self.memo[i] < 4):
                raise ValueError(f"row {i} has memo {self.memo[i]}")

    def emit(self, Py_ssize_t lo, Py_ssize_t hi, int fmt):
        """Rows lo..hi-1 as a `result` list: fmt 0 JSON with money as strings,
        1 JSON with money as numbers (the HTTP gateway), 2 MessagePack (strings)."""
        cdef Py_ssize_t m = hi - lo, i, j, sn_n, total = 16
        cdef bint mp = fmt == 2, q = fmt != 1
        cdef Buf b
        cdef object sn
        cdef list sns = self.sns
        if lo < 0 or hi < lo or self.row.shape[0] < hi:
            raise ValueError("rows lo..hi-1 are not all in the round")
        # Size the buffer once: the fixed part of each row plus its serial number.
        for j in range(m):
            sn = <object>PyList_GET_ITEM(sns, lo + j)
            if PyUnicode_Check(sn):
                PyUnicode_AsUTF8AndSize(sn, &sn_n)
                total += ROW_FIXED_BYTES_MAX + 6 * sn_n
            else:
                total += ROW_FIXED_BYTES_MAX + 24
        b.p = <char *>malloc(total)
        if b.p == NULL:
            raise MemoryError()
        b.n = 0
        b.cap = total
        try:
            list_start(&b, m, mp)
            for j in range(m):
                i = lo + j
                if mp:
                    put_c(&b, <char>0x8c)  # a map of 12
                else:
                    if j:
                        put_c(&b, b',')
                    put_c(&b, b'{')
                key(&b, b"feedetl_sn", 10, mp, True)
                put_sn(&b, <object>PyList_GET_ITEM(sns, i), mp)
                self._fields(&b, i, mp, q)
                if not mp:
                    put_c(&b, b'}')
            if not mp:
                put_c(&b, b']')
            assert b.n <= b.cap
            return PyBytes_FromStringAndSize(b.p, b.n)
        finally:
            free(b.p)

    cdef inline void _fields(self, Buf *b, Py_ssize_t i, bint mp, bint q) noexcept nogil:
        """The eleven fields of row i after feedetl_sn, in the order of section 7."""
        cdef int32_t r = self.row[i]
        cdef char lvtxt[2]
        key(b, b"det_item_fee_sumamt", 19, mp, False)
        scaled(b, self.amt_fen[i], 2, mp, q)
        key(b, b"cnt", 3, mp, False)
        scaled(b, self.cnt[i], 4, mp, q)
        key(b, b"pric", 4, mp, False)
        scaled(b, self.pric_micro[i], 6, mp, q)
        key(b, b"pric_uplmt_amt", 14, mp, False)
        if r >= 0 and self.cat_cap_micro[r] >= 0:
            scaled(b, self.cat_cap_micro[r], 6, mp, q)
        else:
            nil(b, mp)
        key(b, b"selfpay_prop", 12, mp, False)
        if r >= 0:
            scaled(b, self.cat_selfpay_bp[r], 4, mp, q)
        else:
            nil(b, mp)
        key(b, b"chrgitm_lv", 10, mp, False)
        if r >= 0:
            lvtxt[0] = b'0'
            lvtxt[1] = <char>(48 + self.cat_lv[r])
            text(b, lvtxt, 2, mp)
        else:
            text(b, b"", 0, mp)
        key(b, b"fulamt_ownpay_amt", 17, mp, False)
        scaled(b, self.fulamt[i], 2, mp, q)
        key(b, b"overlmt_amt", 11, mp, False)
        scaled(b, self.overlmt[i], 2, mp, q)
        key(b, b"preselfpay_amt", 14, mp, False)
        scaled(b, self.presel[i], 2, mp, q)
        key(b, b"inscp_scp_amt", 13, mp, False)
        scaled(b, self.inscp[i], 2, mp, q)
        key(b, b"memo", 4, mp, False)
        text(b, MEMO_TEXT[self.memo[i]], MEMO_LEN[self.memo[i]], mp)


def format_scaled(long long v, int places):
    """v / 10**places as text with exactly `places` decimals: format_scaled(-5, 2) == '-0.05'.

    The compiled twin of engine.contract.money.format_scaled, for the reply's hot path.
    """
    cdef char tmp[48]
    cdef Py_ssize_t n
    if places < 0 or places > 18:
        raise ValueError("places must be in 0..18")
    n = fmt_scaled(tmp, v, places)
    return tmp[:n].decode("ascii")


def format_fen(long long v):
    """Fen as yuan with two decimals, as engine.contract.money.format_fen."""
    cdef char tmp[48]
    cdef Py_ssize_t n = fmt_scaled(tmp, v, 2)
    return tmp[:n].decode("ascii")


def format_fen_rows(const int64_t[:, ::1] fen):
    """Each row of fen as a tuple of format_fen texts: one call for a round's setlinfo amounts."""
    cdef Py_ssize_t m = fen.shape[0], k = fen.shape[1], i, j, n
    cdef char tmp[48]
    cdef list out = [None] * m
    cdef tuple row
    for i in range(m):
        row = PyTuple_New(k)
        for j in range(k):
            n = fmt_scaled(tmp, fen[i, j], 2)
            s = PyUnicode_DecodeASCII(tmp, n, NULL)
            Py_INCREF(s)
            PyTuple_SET_ITEM(row, j, s)
        out[i] = row
    return out
