# Fee lines to exact integers, in C (lines_parse.h, lines_parse.c): the
# declarations core_ext._lines uses. The header documents each function.

from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t

cdef extern from "lines_parse.h":
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
