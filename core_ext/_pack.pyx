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

pack_lines packs a round's per-line `result` numbers as the journal keeps them.
"""
import sys

assert sys.byteorder == "little", "LINE_DTYPE records are little-endian"
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t

from core_ext._split cimport CatalogueArrays, SplitResults
from libc.stdlib cimport free, malloc

cdef extern from "lz4/yidi_lz4.h" nogil:
    int LZ4_compressBound(int inputSize)
    int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity)

BODY_BYTES_MAX = 0x7E000000  # LZ4_MAX_INPUT_SIZE

# CRC-32 (ISO-HDLC, as zlib.crc32), slicing by 8: table[k][b] is the CRC of byte b followed by k zero bytes.
cdef uint32_t CRC_TABLE[8][256]


cdef void _crc_init():
    cdef uint32_t c
    cdef int b, k, j
    for b in range(256):
        c = b
        for j in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        CRC_TABLE[0][b] = c
    for b in range(256):
        for k in range(1, 8):
            CRC_TABLE[k][b] = (CRC_TABLE[k - 1][b] >> 8) ^ CRC_TABLE[0][CRC_TABLE[k - 1][b] & 0xFF]


_crc_init()


cdef inline uint32_t _crc32(const uint8_t* p, size_t n) noexcept nogil:
    cdef uint32_t c = ~(<uint32_t> 0)
    cdef uint32_t lo, hi
    while n >= 8:
        lo = (p[0] | (<uint32_t> p[1] << 8) | (<uint32_t> p[2] << 16) | (<uint32_t> p[3] << 24)) ^ c
        hi = p[4] | (<uint32_t> p[5] << 8) | (<uint32_t> p[6] << 16) | (<uint32_t> p[7] << 24)
        c = (CRC_TABLE[7][lo & 0xFF] ^ CRC_TABLE[6][(lo >> 8) & 0xFF] ^ CRC_TABLE[5][(lo >> 16) & 0xFF]
             ^ CRC_TABLE[4][lo >> 24] ^ CRC_TABLE[3][hi & 0xFF] ^ CRC_TABLE[2][(hi >> 8) & 0xFF]
             ^ CRC_TABLE[1][(hi >> 16) & 0xFF] ^ CRC_TABLE[0][hi >> 24])
        p += 8
        n -= 8
    while n > 0:
        c = (c >> 8) ^ CRC_TABLE[0][(c ^ p[0]) & 0xFF]
        p += 1
        n -= 1
    return ~c


def crc32(const uint8_t[::1] data):
    """zlib.crc32 of data (for the tests)."""
    cdef size_t n = data.shape[0]
    if n == 0:
        return 0
    return _crc32(&data[0], n)


cdef extern from *:
    """
    #include <sched.h>
    static inline Py_ssize_t yidi_claim(Py_ssize_t* p) { return __atomic_fetch_add(p, 1, __ATOMIC_ACQ_REL); }
    static inline void yidi_done(Py_ssize_t* p) { __atomic_fetch_add(p, 1, __ATOMIC_RELEASE); }
    static inline Py_ssize_t yidi_load(Py_ssize_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    """
    Py_ssize_t yidi_claim(Py_ssize_t* p) nogil
    void yidi_done(Py_ssize_t* p) nogil
    Py_ssize_t yidi_load(Py_ssize_t* p) nogil
    int sched_yield() nogil


cdef class Compression:
    """The LZ4 blocks of a run of bodies, made in chunks by any threads that call work(), without the GIL.

    Chunks are claimed with an atomic counter: a helper thread calls work() once
    it has the job (it needs the GIL only to be handed it), the owner calls
    rows() or blocks() when it needs the result, which compresses the chunks
    nobody has claimed yet and then waits for the ones being compressed. The
    bodies are held until the object is freed.
    """

    cdef tuple items
    cdef object fmts
    cdef object first_seq
    cdef Py_ssize_t n, chunk, n_chunks, next_chunk, done_chunks
    cdef const char** src
    cdef int* size
    cdef int* zsize
    cdef size_t* at
    cdef uint32_t* crc
    cdef char* buf
    cdef int failed
    cdef object result

    def __cinit__(self, bodies, first_seq=None, fmts=None, Py_ssize_t chunk=64):
        cdef Py_ssize_t i, n
        cdef size_t total = 0
        self.items = tuple(bodies)
        self.n = len(self.items)
        self.fmts, self.first_seq = fmts, first_seq
        self.chunk = max(chunk, 1)
        self.n_chunks = (self.n + self.chunk - 1) // self.chunk
        if fmts is not None and len(fmts) != self.n:
            raise ValueError(f"{len(fmts)} formats for {self.n} bodies")
        n = max(self.n, 1)
        self.src = <const char**> malloc(n * sizeof(char*))
        self.size = <int*> malloc(n * sizeof(int))
        self.zsize = <int*> malloc(n * sizeof(int))
        self.at = <size_t*> malloc(n * sizeof(size_t))
        self.crc = <uint32_t*> malloc(n * sizeof(uint32_t))
        if self.src == NULL or self.size == NULL or self.zsize == NULL or self.at == NULL or self.crc == NULL:
            raise MemoryError()
        for i in range(self.n):
            b = self.items[i]
            if type(b) is not bytes:
                raise TypeError(f"body {i} is {type(b).__name__}, not bytes")
            if PyBytes_GET_SIZE(b) > BODY_BYTES_MAX:
                raise ValueError(f"body {i} of {PyBytes_GET_SIZE(b)} bytes is over {BODY_BYTES_MAX}")
            self.src[i] = PyBytes_AS_STRING(b)
            self.size[i] = <int> PyBytes_GET_SIZE(b)
            self.at[i] = total
            total += 4 + <size_t> LZ4_compressBound(self.size[i])
        self.buf = <char*> malloc(max(total, 1))
        if self.buf == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.src)
        free(self.size)
        free(self.zsize)
        free(self.at)
        free(self.crc)
        free(self.buf)

    cdef void _work(self) noexcept nogil:
        cdef Py_ssize_t k, i, hi
        cdef uint8_t* head
        cdef int z
        while True:
            k = yidi_claim(&self.next_chunk)
            if k >= self.n_chunks:
                return
            hi = min((k + 1) * self.chunk, self.n)
            for i in range(k * self.chunk, hi):
                head = <uint8_t*> (self.buf + self.at[i])
                z = self.size[i]
                head[0] = z & 0xFF
                head[1] = (z >> 8) & 0xFF
                head[2] = (z >> 16) & 0xFF
                head[3] = (z >> 24) & 0xFF
                self.zsize[i] = LZ4_compress_default(self.src[i], self.buf + self.at[i] + 4, z, LZ4_compressBound(z))
                if self.zsize[i] <= 0 and z > 0:
                    self.failed = 1
                    self.zsize[i] = 0
                self.crc[i] = _crc32(head, 4 + self.zsize[i])
            yidi_done(&self.done_chunks)

    def work(self) -> None:
        """Compress chunks until none is left to claim (a helper thread's part)."""
        with nogil:
            self._work()

    cdef _finish(self):
        with nogil:
            self._work()
            while yidi_load(&self.done_chunks) < self.n_chunks:
                sched_yield()  # another thread is compressing its last chunk
        if self.failed:
            raise RuntimeError("LZ4 compression failed")

    def blocks(self) -> list:
        """The LZ4 blocks, in order."""
        self._finish()
        return [PyBytes_FromStringAndSize(self.buf + self.at[i], 4 + self.zsize[i]) for i in range(self.n)]

    def rows(self) -> list:
        """The journal_blob rows: (seq, fmt, block, zlib.crc32 of the block), seq counting from first_seq."""
        if self.result is None:
            self._finish()
            first = self.first_seq
            fmts = self.fmts
            self.result = [(first + i, fmts[i], PyBytes_FromStringAndSize(self.buf + self.at[i], 4 + self.zsize[i]),
                            self.crc[i]) for i in range(self.n)]
        return self.result


def compress_bodies(bodies, first_seq=None, fmts=None):
    """LZ4 blocks (python-lz4's format) of a sequence of bytes, as a list of bytes.

    With first_seq and fmts: the journal_blob rows instead, (seq, fmt, block,
    zlib.crc32 of the block) with seq counting from first_seq.
    """
    job = Compression(bodies, first_seq, fmts)
    return job.blocks() if first_seq is None else job.rows()


cdef packed struct LineRecord:  # engine.store.LINE_DTYPE, little-endian
    int64_t cap_micro
    int32_t fulamt_fen
    int32_t overlmt_fen
    int32_t preselfpay_fen
    int32_t inscp_fen
    int16_t selfpay_bp
    int8_t lv
    int8_t memo


LINE_RECORD_BYTES = sizeof(LineRecord)


def pack_lines(SplitResults split not None, CatalogueArrays catalogue not None):
    """The `result` rows of a round's split lines as LINE_DTYPE records, in one pass.

    Reads each line's catalogue row (split.lines.row), its memo and four parts
    (split) and its entry in `catalogue`, the one the lines were split against.
    A line that matched no catalogue entry (row -1) has lv 0, selfpay_bp 0 and
    cap_micro -1. Every amount must be within [0, 2**31 - 1] fen (a settled
    line is, by section 1), else ValueError.
    """
    cdef Py_ssize_t n = split.n_lines, i
    cdef int32_t r
    cdef int bad = -1
    cdef int64_t v
    cdef const int32_t[::1] row = split.lines._row
    cdef const int8_t[::1] cat_lv = catalogue._lv
    cdef const int32_t[::1] cat_selfpay_bp = catalogue._selfpay_bp
    cdef const int64_t[::1] cat_cap_micro = catalogue._cap_micro
    cdef const int8_t[::1] memo = split._memo
    cdef const int64_t[::1] fulamt = split._ful, overlmt = split._ovr
    cdef const int64_t[::1] presel = split._pre, inscp = split._ins
    out = PyBytes_FromStringAndSize(NULL, n * sizeof(LineRecord))
    cdef LineRecord* rec = <LineRecord*> PyBytes_AS_STRING(out)
    with nogil:
        for i in range(n):
            r = row[i]
            if r >= 0:
                if r >= cat_lv.shape[0]:
                    bad = i
                    break
                rec[i].lv = cat_lv[r]
                rec[i].selfpay_bp = <int16_t> cat_selfpay_bp[r]
                rec[i].cap_micro = cat_cap_micro[r]
            else:
                rec[i].lv = 0
                rec[i].selfpay_bp = 0
                rec[i].cap_micro = -1
            rec[i].memo = memo[i]
            v = fulamt[i] | overlmt[i] | presel[i] | inscp[i]
            if v < 0 or v > 0x7FFFFFFF:
                bad = i
                break
            rec[i].fulamt_fen = <int32_t> fulamt[i]
            rec[i].overlmt_fen = <int32_t> overlmt[i]
            rec[i].preselfpay_fen = <int32_t> presel[i]
            rec[i].inscp_fen = <int32_t> inscp[i]
    if bad >= 0:
        raise ValueError(f"line {bad}: a catalogue row or an amount out of range")
    return out
