"""Fee lines from decoded objects to arrays: numbers and days, exactly.

SETTLEMENT.md section 1 (numbers) and section 3 (the line's day). Private: use
engine.kernels. Parsing agrees with engine.money.parse_scaled and
engine.money.parse_time_day bit for bit, except that a scaled value outside
int64 saturates instead of growing: the line limits refuse it later.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

import numpy as np

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

    /* ---- Fee lines straight from the wire (FeeBuffer.parse) ----------------

       The common shape of `feedetail`, parsed from its raw MessagePack or JSON
       bytes without making a msgspec Struct and a str per field: a list of
       maps whose six known fields are ASCII strings (JSON: without escapes) or
       integers (JSON: decimal literals too) that parse, each at most once,
       other keys holding scalars. Anything else (a missing, repeated or
       malformed field, a nested value, a non-ASCII or escaped string, a float,
       an exponent) answers YIDI_RAW_OTHER: the caller then decodes with msgspec
       and gathers the decoded lines, which stays the one definition of every
       error. A line this parser accepts gets exactly what gather_lines gives
       the same line decoded. */

    #define YIDI_RAW_OTHER (-1)
    enum { YF_SN, YF_CODE, YF_AMT, YF_CNT, YF_PRIC, YF_TIME, YF_N, YF_SKIP };
    enum { YV_NONE, YV_STR, YV_INT, YV_DEC, YV_SCALAR };
    typedef char yidi_six_fields[(YF_N == 6) ? 1 : -1];  /* FeeBuffer.parse's vals[6] */

    typedef struct {
        int kind;                   /* YV_* */
        const unsigned char *s;     /* YV_STR: the characters; YV_DEC: the literal */
        Py_ssize_t n;
        int64_t i;                  /* YV_INT */
    } yidi_val;

    typedef struct {
        const unsigned char *p, *end;
    } yidi_cur;

    /* Which field a key names; YF_SKIP for any other key. */
    static int yidi_field(const unsigned char *k, Py_ssize_t n) {
        switch (n) {
        case 3: if (memcmp(k, "cnt", 3) == 0) return YF_CNT; break;
        case 4: if (memcmp(k, "pric", 4) == 0) return YF_PRIC; break;
        case 10: if (memcmp(k, "feedetl_sn", 10) == 0) return YF_SN; break;
        case 13:
            if (memcmp(k, "med_list_codg", 13) == 0) return YF_CODE;
            if (memcmp(k, "fee_ocur_time", 13) == 0) return YF_TIME;
            break;
        case 19: if (memcmp(k, "det_item_fee_sumamt", 19) == 0) return YF_AMT; break;
        }
        return YF_SKIP;
    }

    static inline int yidi_plain_ascii(const unsigned char *s, Py_ssize_t n) {
        Py_ssize_t i;
        for (i = 0; i < n; i++) if (s[i] >= 0x80) return 0;
        return 1;
    }

    /* -- MessagePack -- */

    static inline int yidi_mp_need(yidi_cur *c, Py_ssize_t n) { return c->end - c->p >= n; }

    static inline uint64_t yidi_be(const unsigned char *p, int n) {
        uint64_t v = 0;
        int i;
        for (i = 0; i < n; i++) v = (v << 8) | p[i];
        return v;
    }

    /* A str header; 1 with its characters, 0 when the next item is not a str. */
    static int yidi_mp_str(yidi_cur *c, const unsigned char **s, Py_ssize_t *n) {
        unsigned char b;
        Py_ssize_t len, hdr;
        if (!yidi_mp_need(c, 1)) return 0;
        b = c->p[0];
        if (b >= 0xa0 && b <= 0xbf) { len = b & 0x1f; hdr = 1; }
        else if (b == 0xd9 && yidi_mp_need(c, 2)) { len = c->p[1]; hdr = 2; }
        else if (b == 0xda && yidi_mp_need(c, 3)) { len = (Py_ssize_t)yidi_be(c->p + 1, 2); hdr = 3; }
        else if (b == 0xdb && yidi_mp_need(c, 5)) { len = (Py_ssize_t)yidi_be(c->p + 1, 4); hdr = 5; }
        else return 0;
        if (!yidi_mp_need(c, hdr + len)) return 0;
        *s = c->p + hdr;
        *n = len;
        c->p += hdr + len;
        return 1;
    }

    /* A map or array header of the given family; -1 when the next item is another. */
    static Py_ssize_t yidi_mp_container(yidi_cur *c, unsigned char fix_lo, unsigned char fix_hi,
                                        unsigned char b16, unsigned char b32) {
        unsigned char b;
        if (!yidi_mp_need(c, 1)) return -1;
        b = c->p[0];
        if (b >= fix_lo && b <= fix_hi) { c->p += 1; return b & 0x0f; }
        if (b == b16 && yidi_mp_need(c, 3)) { c->p += 3; return (Py_ssize_t)yidi_be(c->p - 2, 2); }
        if (b == b32 && yidi_mp_need(c, 5)) { c->p += 5; return (Py_ssize_t)yidi_be(c->p - 4, 4); }
        return -1;
    }

    /* One scalar value; 0 when it is a container, an extension or cut short. */
    static int yidi_mp_value(yidi_cur *c, yidi_val *v) {
        unsigned char b;
        Py_ssize_t len;
        uint64_t u;
        if (!yidi_mp_need(c, 1)) return 0;
        b = c->p[0];
        if ((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb)) {
            v->kind = YV_STR;
            return yidi_mp_str(c, &v->s, &v->n);
        }
        if (b <= 0x7f) { v->kind = YV_INT; v->i = b; c->p += 1; return 1; }
        if (b >= 0xe0) { v->kind = YV_INT; v->i = (int8_t)b; c->p += 1; return 1; }
        switch (b) {
        case 0xc0: case 0xc2: case 0xc3:
            v->kind = YV_SCALAR; c->p += 1; return 1;
        case 0xcc: case 0xcd: case 0xce: case 0xcf:
            len = (Py_ssize_t)1 << (b - 0xcc);
            if (!yidi_mp_need(c, 1 + len)) return 0;
            u = yidi_be(c->p + 1, (int)len);
            if (u > (uint64_t)INT64_MAX) return 0;
            v->kind = YV_INT; v->i = (int64_t)u; c->p += 1 + len; return 1;
        case 0xd0: case 0xd1: case 0xd2: case 0xd3:
            len = (Py_ssize_t)1 << (b - 0xd0);
            if (!yidi_mp_need(c, 1 + len)) return 0;
            u = yidi_be(c->p + 1, (int)len);
            if (len == 1) v->i = (int8_t)u;
            else if (len == 2) v->i = (int16_t)u;
            else if (len == 4) v->i = (int32_t)u;
            else v->i = (int64_t)u;
            v->kind = YV_INT; c->p += 1 + len; return 1;
        case 0xca: case 0xcb:
            len = b == 0xca ? 4 : 8;
            if (!yidi_mp_need(c, 1 + len)) return 0;
            v->kind = YV_SCALAR; c->p += 1 + len; return 1;
        case 0xc4: case 0xc5: case 0xc6:
            len = (Py_ssize_t)1 << (b - 0xc4);
            if (!yidi_mp_need(c, 1 + len)) return 0;
            u = yidi_be(c->p + 1, (int)len);
            if (!yidi_mp_need(c, 1 + len + (Py_ssize_t)u)) return 0;
            v->kind = YV_SCALAR; c->p += 1 + len + (Py_ssize_t)u; return 1;
        }
        return 0;
    }

    /* -- JSON (RFC 8259), as msgspec reads it with float_hook=str -- */

    static inline void yidi_js_ws(yidi_cur *c) {
        while (c->p < c->end && (*c->p == ' ' || *c->p == '\\n' || *c->p == '\\r' || *c->p == '\\t')) c->p++;
    }

    static inline int yidi_js_eat(yidi_cur *c, unsigned char ch) {
        yidi_js_ws(c);
        if (c->p < c->end && *c->p == ch) { c->p++; return 1; }
        return 0;
    }

    /* A string of printable ASCII without escapes; 0 for anything else. */
    static int yidi_js_str(yidi_cur *c, const unsigned char **s, Py_ssize_t *n) {
        const unsigned char *q;
        yidi_js_ws(c);
        if (c->p >= c->end || *c->p != '"') return 0;
        q = c->p + 1;
        while (q < c->end && *q != '"') {
            if (*q == '\\\\' || *q < 0x20 || *q >= 0x80) return 0;
            q++;
        }
        if (q >= c->end) return 0;
        *s = c->p + 1;
        *n = q - (c->p + 1);
        c->p = q + 1;
        return 1;
    }

    static int yidi_js_value(yidi_cur *c, yidi_val *v) {
        const unsigned char *q, *start;
        int64_t i = 0;
        int neg = 0, digits = 0;
        yidi_js_ws(c);
        if (c->p >= c->end) return 0;
        switch (*c->p) {
        case '"':
            v->kind = YV_STR;
            return yidi_js_str(c, &v->s, &v->n);
        case 't':
            if (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) { c->p += 4; v->kind = YV_SCALAR; return 1; }
            return 0;
        case 'f':
            if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) { c->p += 5; v->kind = YV_SCALAR; return 1; }
            return 0;
        case 'n':
            if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) { c->p += 4; v->kind = YV_SCALAR; return 1; }
            return 0;
        }
        /* -?(0|[1-9][0-9]*)(\\.[0-9]+)? ; an exponent or more than 18 digits: not here. */
        start = q = c->p;
        if (q < c->end && *q == '-') { neg = 1; q++; }
        if (q >= c->end || *q < '0' || *q > '9') return 0;
        if (*q == '0' && q + 1 < c->end && q[1] >= '0' && q[1] <= '9') return 0;
        while (q < c->end && *q >= '0' && *q <= '9') {
            if (++digits > 18) return 0;
            i = i * 10 + (*q - '0');
            q++;
        }
        if (q < c->end && (*q == 'e' || *q == 'E')) return 0;
        if (q < c->end && *q == '.') {
            q++;
            if (q >= c->end || *q < '0' || *q > '9') return 0;
            while (q < c->end && *q >= '0' && *q <= '9') q++;
            if (q < c->end && (*q == 'e' || *q == 'E')) return 0;
            v->kind = YV_DEC; v->s = start; v->n = q - start;
        } else {
            v->kind = YV_INT; v->i = neg ? -i : i;
        }
        c->p = q;
        return 1;
    }

    /* -- one line's fields to numbers, as gather_lines reads the decoded line -- */

    static int yidi_val_scaled(const yidi_val *v, int places, int64_t *out) {
        if (v->kind == YV_STR || v->kind == YV_DEC) return yidi_parse_decimal(v->s, v->n, places, out);
        if (v->kind == YV_INT) { *out = yidi_sat64((__int128)v->i * yidi_pow10[places]); return 1; }
        return 0;
    }

    static PyObject *yidi_ascii_str(const unsigned char *s, Py_ssize_t n) {
        PyObject *o = PyUnicode_New(n, 127);
        if (o != NULL) memcpy(PyUnicode_DATA(o), s, (size_t)n);
        return o;
    }

    /* One line map into vals[YF_N]; 1 when it has the common shape, else 0. */
    static int yidi_mp_line(yidi_cur *c, yidi_val *vals) {
        Py_ssize_t k, n, kn;
        const unsigned char *key;
        yidi_val skip;
        int f;
        for (f = 0; f < YF_N; f++) vals[f].kind = YV_NONE;
        n = yidi_mp_container(c, 0x80, 0x8f, 0xde, 0xdf);
        if (n < 0) return 0;
        for (k = 0; k < n; k++) {
            if (!yidi_mp_str(c, &key, &kn)) return 0;
            f = yidi_field(key, kn);
            if (f == YF_SKIP) {
                if (!yidi_mp_value(c, &skip)) return 0;
            } else {
                if (vals[f].kind != YV_NONE || !yidi_mp_value(c, &vals[f])) return 0;
            }
        }
        return 1;
    }

    static int yidi_js_line(yidi_cur *c, yidi_val *vals) {
        Py_ssize_t kn;
        const unsigned char *key;
        yidi_val skip;
        int f;
        for (f = 0; f < YF_N; f++) vals[f].kind = YV_NONE;
        if (!yidi_js_eat(c, '{')) return 0;
        if (yidi_js_eat(c, '}')) return 1;
        for (;;) {
            if (!yidi_js_str(c, &key, &kn) || !yidi_js_eat(c, ':')) return 0;
            f = yidi_field(key, kn);
            if (f == YF_SKIP) {
                if (!yidi_js_value(c, &skip)) return 0;
            } else {
                if (vals[f].kind != YV_NONE || !yidi_js_value(c, &vals[f])) return 0;
            }
            if (yidi_js_eat(c, ',')) continue;
            return yidi_js_eat(c, '}');
        }
    }

    /* An accepted line's values to the outputs: 1 done, 0 not the common shape
       (nothing appended), -1 error set. */
    static int yidi_line_out(const yidi_val *vals, PyObject *codes, PyObject *sns,
                             int64_t *amt, int64_t *cnt, int64_t *pric, int32_t *day) {
        const yidi_val *code = &vals[YF_CODE], *sn = &vals[YF_SN], *t = &vals[YF_TIME];
        PyObject *o;
        if (code->kind != YV_STR || code->n == 0 || !yidi_plain_ascii(code->s, code->n)) return 0;
        if (!(sn->kind == YV_INT || (sn->kind == YV_STR && sn->n > 0 && yidi_plain_ascii(sn->s, sn->n))))
            return 0;
        if (!yidi_val_scaled(&vals[YF_AMT], 2, amt) || !yidi_val_scaled(&vals[YF_CNT], 4, cnt)
                || !yidi_val_scaled(&vals[YF_PRIC], 6, pric))
            return 0;
        if (t->kind != YV_STR || !yidi_parse_time_day(t->s, t->n, day)) return 0;
        o = yidi_ascii_str(code->s, code->n);
        if (o == NULL) return -1;
        if (PyList_Append(codes, o) < 0) { Py_DECREF(o); return -1; }
        Py_DECREF(o);
        o = sn->kind == YV_INT ? PyLong_FromLongLong(sn->i) : yidi_ascii_str(sn->s, sn->n);
        if (o == NULL) return -1;
        if (PyList_Append(sns, o) < 0) { Py_DECREF(o); return -1; }
        Py_DECREF(o);
        return 1;
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
    ctypedef struct yidi_val:
        pass
    ctypedef struct yidi_cur:
        const unsigned char *p
        const unsigned char *end
    Py_ssize_t yidi_mp_container(yidi_cur *c, unsigned char fix_lo, unsigned char fix_hi,
                                 unsigned char b16, unsigned char b32)
    bint yidi_js_eat(yidi_cur *c, unsigned char ch)
    void yidi_js_ws(yidi_cur *c)
    bint yidi_mp_line(yidi_cur *c, yidi_val *vals)
    bint yidi_js_line(yidi_cur *c, yidi_val *vals)
    int yidi_line_out(const yidi_val *vals, PyObject *codes, PyObject *sns, int64_t *amt, int64_t *cnt,
                      int64_t *pric, int32_t *day) except -1

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
    """Parse the fee lines into arrays; return how many are malformed (SETTLEMENT.md section 1).

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
