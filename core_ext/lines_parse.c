/* Fee lines to exact integers (declarations and contract in lines_parse.h). */
#include "lines_parse.h"
#include "text_view.h"
static const int64_t yidi_pow10[YIDI_PLACES_MAX + 1] = {
    1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL,
    100000000LL, 1000000000LL, 10000000000LL, 100000000000LL, 1000000000000LL};

static inline int64_t yidi_sat64(__int128 v) {
    if (v > (__int128)INT64_MAX) return INT64_MAX;
    if (v < (__int128)INT64_MIN) return INT64_MIN;
    return (int64_t)v;
}

/* `-?[0-9]+(\.[0-9]+)?`, at most YIDI_DIGITS_MAX characters and `places`
   decimals, scaled by 10**places. 1 when valid, else 0. */
int yidi_parse_decimal(const unsigned char *s, Py_ssize_t n, int places, int64_t *out) {
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
   engine.contract.money.parse_scaled. 1 valid, 0 invalid, -1 error raised (only
   from an int subclass whose comparison raises). */
int yidi_parse_scaled_obj(PyObject *o, int places, PyObject *lim_pos,
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
        /* Beyond int64: refused at 10**24 as in engine.contract.money, else saturated. */
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
int yidi_parse_time_day(const unsigned char *s, Py_ssize_t n, int32_t *out) {
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

int yidi_parse_time_obj(PyObject *o, int32_t *out) {
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
int yidi_get_scaled(PyObject *line, PyObject *name, int places,
                           PyObject *lim_pos, PyObject *lim_neg, int64_t *out) {
    int ok;
    PyObject *v = yidi_attr(line, name);
    if (v == NULL) return PyErr_Occurred() ? -1 : 0;
    ok = yidi_parse_scaled_obj(v, places, lim_pos, lim_neg, out);
    Py_DECREF(v);
    return ok;
}

int yidi_get_day(PyObject *line, PyObject *name, int32_t *out) {
    int ok;
    PyObject *v = yidi_attr(line, name);
    if (v == NULL) return PyErr_Occurred() ? -1 : 0;
    ok = yidi_parse_time_obj(v, out);
    Py_DECREF(v);
    return ok;
}

/* Appends line.<name> (or None when missing) to `codes`. 0, or -1 with
   the error set. */
int yidi_append_attr(PyObject *codes, PyObject *line, PyObject *name, int *missing) {
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

/* ---- Fee lines straight from the wire (FeeBuffer.parse): see lines_parse.h ---- */

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
Py_ssize_t yidi_mp_container(yidi_cur *c, unsigned char fix_lo, unsigned char fix_hi,
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

/* A string of printable ASCII without escapes; 0 for anything else. */
static int yidi_js_str(yidi_cur *c, const unsigned char **s, Py_ssize_t *n) {
    const unsigned char *q;
    yidi_js_ws(c);
    if (c->p >= c->end || *c->p != '"') return 0;
    q = c->p + 1;
    while (q < c->end && *q != '"') {
        if (*q == '\\' || *q < 0x20 || *q >= 0x80) return 0;
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
    /* -?(0|[1-9][0-9]*)(\.[0-9]+)? ; an exponent or more than 18 digits: not here. */
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
int yidi_mp_line(yidi_cur *c, yidi_val *vals) {
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

int yidi_js_line(yidi_cur *c, yidi_val *vals) {
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
int yidi_line_out(const yidi_val *vals, PyObject *codes, PyObject *sns,
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
