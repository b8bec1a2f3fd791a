/* Borrowed views of the bytes of a Python str, without allocating.
 *
 * Shared by the catalogue index and the line parsers (declared to Cython in
 * _text.pxd). A compact ASCII str (what msgspec, json and every literal
 * produce) stores its characters as one byte each right after the object
 * header: they are read in place.
 */
#ifndef YIDI_TEXT_VIEW_H
#define YIDI_TEXT_VIEW_H

#include <Python.h>

/* The ASCII bytes of str `o` in *n bytes, or NULL when `o` is not a str or
   holds any non-ASCII character. Never allocates, never raises. A legacy
   (not ready) string, which only deprecated C APIs of CPython < 3.12 can
   make, also gives NULL: readying it would allocate. */
static inline const unsigned char *yidi_ascii_view(PyObject *o, Py_ssize_t *n) {
    if (!PyUnicode_Check(o)) return NULL;
    if (PyUnicode_IS_COMPACT_ASCII(o)) {
        *n = PyUnicode_GET_LENGTH(o);
        return (const unsigned char *)PyUnicode_DATA(o);
    }
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(o)) return NULL;
#endif
    if (!PyUnicode_IS_ASCII(o)) return NULL;
    *n = PyUnicode_GET_LENGTH(o);
    return (const unsigned char *)PyUnicode_DATA(o);
}

#endif  /* YIDI_TEXT_VIEW_H */
