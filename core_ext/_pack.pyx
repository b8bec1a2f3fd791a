# cython: language_level=3
"""The journal's bodies as LZ4 blocks, a batch at a time, without the GIL.

engine.store compresses every settlement's request and reply (its journal
body). Compressed one call at a time through python-lz4, each call takes and
gives back the GIL, so a second thread cannot share the work; here a whole run
of bodies is compressed in one call that releases the GIL for all of it, and
the store's commit compresses one part of a batch on a worker thread while its
own thread builds the next (engine.store.SqliteStore.prepare).

The output is python-lz4's block format (`lz4.block.compress` with its
defaults): the input's size as 4 bytes little-endian, then the LZ4 block, so
`lz4.block.decompress` reads it back. LZ4 itself is vendored in core_ext/lz4.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t
from libc.stdlib cimport free, malloc

cdef extern from "lz4/yidi_lz4.h" nogil:
    int LZ4_compressBound(int inputSize)
    int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity)

BODY_BYTES_MAX = 0x7E000000  # LZ4_MAX_INPUT_SIZE


def compress_bodies(bodies):
    """LZ4 blocks (python-lz4's format) of a sequence of bytes, as a list of bytes."""
    cdef tuple items = tuple(bodies)  # holds every body while the GIL is released
    cdef Py_ssize_t n = len(items), i
    cdef size_t total = 0
    cdef const char** src = NULL
    cdef int* size = NULL
    cdef int* zsize = NULL
    cdef size_t* at = NULL
    cdef char* buf = NULL
    cdef uint8_t* head
    cdef int k, failed = 0
    if n == 0:
        return []
    try:
        src = <const char**> malloc(n * sizeof(char*))
        size = <int*> malloc(n * sizeof(int))
        zsize = <int*> malloc(n * sizeof(int))
        at = <size_t*> malloc(n * sizeof(size_t))
        if src == NULL or size == NULL or zsize == NULL or at == NULL:
            raise MemoryError()
        for i in range(n):
            b = items[i]
            if type(b) is not bytes:
                raise TypeError(f"body {i} is {type(b).__name__}, not bytes")
            if PyBytes_GET_SIZE(b) > BODY_BYTES_MAX:
                raise ValueError(f"body {i} of {PyBytes_GET_SIZE(b)} bytes is over {BODY_BYTES_MAX}")
            src[i] = PyBytes_AS_STRING(b)
            size[i] = <int> PyBytes_GET_SIZE(b)
            at[i] = total
            total += 4 + <size_t> LZ4_compressBound(size[i])
        buf = <char*> malloc(total)
        if buf == NULL:
            raise MemoryError()
        with nogil:
            for i in range(n):
                head = <uint8_t*> (buf + at[i])
                k = size[i]
                head[0] = k & 0xFF
                head[1] = (k >> 8) & 0xFF
                head[2] = (k >> 16) & 0xFF
                head[3] = (k >> 24) & 0xFF
                zsize[i] = LZ4_compress_default(src[i], buf + at[i] + 4, k, LZ4_compressBound(k))
                if zsize[i] <= 0 and k > 0:
                    failed = 1
        if failed:
            raise RuntimeError("LZ4 compression failed")
        return [PyBytes_FromStringAndSize(buf + at[i], 4 + zsize[i]) for i in range(n)]
    finally:
        free(src)
        free(size)
        free(zsize)
        free(at)
        free(buf)
