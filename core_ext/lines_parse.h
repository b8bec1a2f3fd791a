/* Fee lines to exact integers: decimal strings, times, and the fast path
 * that parses a raw `feedetail` (JSON or MessagePack) without Python objects.
 *
 * docs/contract.md section 1 (numbers) and section 3 (the line's day). Compiled
 * from lines_parse.c into core_ext._lines only, which declares these in
 * lines_parse.pxd. Parsing agrees with engine.contract.money.parse_scaled and
 * engine.contract.money.parse_time_day bit for bit, except that a scaled value outside
 * int64 saturates instead of growing: the line limits refuse it later.
 */
#ifndef YIDI_LINES_PARSE_H
#define YIDI_LINES_PARSE_H

#include <Python.h>
#include <stdint.h>

/* Hidden: the symbols stay inside the one extension that links them. */
#define YIDI_LINES_API __attribute__ ((visibility ("hidden")))

/* Bound on the characters of a decimal string, as engine.contract.money.DIGITS_MAX. */
#define YIDI_DIGITS_MAX 24
/* 24 digits (< 10**24) times 10**12 stays below 2**127. */
#define YIDI_PLACES_MAX 12

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

/* Whitespace and one expected character of JSON; inline, since FeeBuffer.parse
   calls them between the lines. */
static inline void yidi_js_ws(yidi_cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static inline int yidi_js_eat(yidi_cur *c, unsigned char ch) {
    yidi_js_ws(c);
    if (c->p < c->end && *c->p == ch) { c->p++; return 1; }
    return 0;
}

/* `-?[0-9]+(\.[0-9]+)?`, at most YIDI_DIGITS_MAX characters and `places`
   decimals, scaled by 10**places. 1 when valid, else 0. */
YIDI_LINES_API int yidi_parse_decimal(const unsigned char *s, Py_ssize_t n, int places, int64_t *out);

/* A str or an int (not a bool) scaled by 10**places, as
   engine.contract.money.parse_scaled. 1 valid, 0 invalid, -1 error raised (only
   from an int subclass whose comparison raises). */
YIDI_LINES_API int yidi_parse_scaled_obj(PyObject *o, int places, PyObject *lim_pos,
                                 PyObject *lim_neg, int64_t *out);

/* `YYYY-MM-DD HH:MM:SS` (a real date of years 1..9999, a real time) to
   the day number of its date. 1 when valid, else 0. */
YIDI_LINES_API int yidi_parse_time_day(const unsigned char *s, Py_ssize_t n, int32_t *out);

YIDI_LINES_API int yidi_parse_time_obj(PyObject *o, int32_t *out);

/* 1 valid, 0 missing or invalid, -1 error raised. */
YIDI_LINES_API int yidi_get_scaled(PyObject *line, PyObject *name, int places,
                           PyObject *lim_pos, PyObject *lim_neg, int64_t *out);

YIDI_LINES_API int yidi_get_day(PyObject *line, PyObject *name, int32_t *out);

/* Appends line.<name> (or None when missing) to `codes`. 0, or -1 with
   the error set. */
YIDI_LINES_API int yidi_append_attr(PyObject *codes, PyObject *line, PyObject *name, int *missing);

/* A map or array header of the given family; -1 when the next item is another. */
YIDI_LINES_API Py_ssize_t yidi_mp_container(yidi_cur *c, unsigned char fix_lo, unsigned char fix_hi,
                                    unsigned char b16, unsigned char b32);

/* One line map into vals[YF_N]; 1 when it has the common shape, else 0. */
YIDI_LINES_API int yidi_mp_line(yidi_cur *c, yidi_val *vals);

YIDI_LINES_API int yidi_js_line(yidi_cur *c, yidi_val *vals);

/* An accepted line's values to the outputs: 1 done, 0 not the common shape
   (nothing appended), -1 error set. */
YIDI_LINES_API int yidi_line_out(const yidi_val *vals, PyObject *codes, PyObject *sns,
                         int64_t *amt, int64_t *cnt, int64_t *pric, int32_t *day);

#endif  /* YIDI_LINES_PARSE_H */
