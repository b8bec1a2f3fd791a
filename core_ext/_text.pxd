# Borrowed views of the bytes of a Python str, without allocating (text_view.h).
#
# Shared by the catalogue index and the line gatherer.

from cpython.ref cimport PyObject

cdef extern from "text_view.h":
    # Takes a borrowed reference; the caller holds the GIL and the object.
    const unsigned char *yidi_ascii_view(PyObject *o, Py_ssize_t *n)
