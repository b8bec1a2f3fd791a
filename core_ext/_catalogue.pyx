"""Catalogue index: (province, code) to the date versions of one entry.

docs/contract.md sections 2 (catalogue.csv) and 3 (step 2: the entry valid on the
line's day). Private: use engine.core.kernels.

The catalogue arrives sorted by (prov, code, begndate); the consecutive rows of
one (prov, code) are its date versions, with disjoint date ranges. The index is
an open-addressing hash table (linear probing, power-of-two capacity, load at
most 0.5) from (prov, code) to the group's first row and row count. Each slot
keeps the full 64-bit hash, so a probe compares the key bytes only when the
hashes agree, which for a different key happens about once in 2**64.
"""
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from core_ext._text cimport yidi_ascii_view

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* A wyhash-style hash: 64x64->128 multiply, xor of the halves. The
       province and the length are in the seed, so codes that differ only in
       province, or only in trailing NUL bytes, hash apart. */
    #define YIDI_H0 0xa0761d6478bd642full
    #define YIDI_H1 0xe7037ed1a0b428dbull
    #define YIDI_H2 0x8ebc6af09c88c6e3ull
    #define YIDI_H3 0x589965cc75374cc3ull

    static inline uint64_t yidi_mum(uint64_t a, uint64_t b) {
        unsigned __int128 r = (unsigned __int128)a * b;
        return (uint64_t)r ^ (uint64_t)(r >> 64);
    }

    static inline uint64_t yidi_rd64(const unsigned char *p) {
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }

    static inline uint64_t yidi_code_hash(int16_t prov, const unsigned char *p, size_t n) {
        const size_t len = n;
        uint64_t h = yidi_mum(((uint64_t)(uint16_t)prov << 32) ^ YIDI_H0, (uint64_t)len ^ YIDI_H1);
        while (n > 16) {
            h = yidi_mum(yidi_rd64(p) ^ YIDI_H1, yidi_rd64(p + 8) ^ h);
            p += 16;
            n -= 16;
        }
        uint64_t a = 0, b = 0;
        if (n > 8) {
            a = yidi_rd64(p);
            memcpy(&b, p + 8, n - 8);
        } else {
            memcpy(&a, p, n);
        }
        h = yidi_mum(a ^ YIDI_H1, b ^ h);
        return yidi_mum(h ^ YIDI_H2, (uint64_t)len ^ YIDI_H3);
    }
    """
    uint64_t yidi_code_hash(int16_t prov, const unsigned char *p, size_t n) nogil

cdef extern from *:
    """
    #include <sys/mman.h>

    /* Zeroed memory for a table probed at random: anonymous pages, asking
       for transparent huge pages so that a lookup misses the TLB less often.
       NULL when the system refuses. */
    static void *yidi_table_alloc(size_t size) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
    #ifdef MADV_HUGEPAGE
        if (size >= ((size_t)2 << 20)) (void)madvise(p, size, MADV_HUGEPAGE);
    #endif
        return p;
    }

    static void yidi_table_free(void *p, size_t size) {
        if (p != NULL) munmap(p, size);
    }
    """
    void *yidi_table_alloc(size_t size) nogil
    void yidi_table_free(void *p, size_t size) nogil

# One slot of the table: 32 bytes, two to a cache line. hash 0 marks an empty
# slot (a key whose hash is 0 is stored as 1).
cdef struct Slot:
    uint64_t hash
    uint32_t key_off  # into the index's own copy of the key bytes
    uint32_t key_len
    int32_t first  # first catalogue row of the group
    int32_t count  # its number of rows (date versions)
    int16_t prov

# Rows and key bytes are addressed with 32-bit fields.
cdef int64_t ROWS_MAX = 2**31 - 2
cdef int64_t KEY_BYTES_MAX = 2**32 - 1
cdef int64_t CAPACITY_MIN = 16
# Lines per block of match(): enough slot misses in flight to hide latency.
cdef enum:
    BLOCK = 16

cdef extern from *:
    void prefetch "__builtin_prefetch"(const void *p) nogil


cdef inline bint same_bytes(const uint8_t[::1] data, int64_t a0, int64_t a1,
                            int64_t b0, int64_t b1) noexcept nogil:
    if a1 - a0 != b1 - b0:
        return False
    if a1 == a0:
        return True
    return memcmp(&data[a0], &data[b0], <size_t>(a1 - a0)) == 0


cdef inline int32_t version_on(const Slot *s, int32_t d, const int32_t[::1] begn,
                               const int32_t[::1] end) noexcept nogil:
    """The row of group s valid on day d, or -1. The versions are sorted by
    begndate with disjoint ranges: take the last that begins on or before d,
    then check its end."""
    cdef int32_t lo, hi, mid
    if s == NULL:
        return -1
    lo = s.first
    hi = s.first + s.count
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        if begn[mid] <= d:
            lo = mid
        else:
            hi = mid
    if begn[lo] <= d and d <= end[lo]:
        return lo
    return -1


cdef (Py_ssize_t, int64_t) _count_groups(const int16_t[::1] prov, const int64_t[::1] offsets,
                                         const uint8_t[::1] data) noexcept nogil:
    """(groups, bytes of their keys): a group is a run of rows of one (prov, code)."""
    cdef Py_ssize_t i, n_groups = 0
    cdef int64_t key_bytes = 0
    for i in range(prov.shape[0]):
        if i == 0 or prov[i] != prov[i - 1] or not same_bytes(
                data, offsets[i], offsets[i + 1], offsets[i - 1], offsets[i]):
            n_groups += 1
            key_bytes += offsets[i + 1] - offsets[i]
    return n_groups, key_bytes


cdef class CatalogueIndex:
    """Hash index of a sorted catalogue (docs/contract.md sections 2 and 3).

    CatalogueIndex(prov, offsets, data, *, hash_bits=64): row i is the code
    data[offsets[i]:offsets[i+1]] of province prov[i] (the first two digits).
    The index copies what it needs; the arrays may be dropped afterwards.
    hash_bits < 64 truncates the hash, only to test collisions.
    """

    cdef Slot *slots
    cdef unsigned char *keys
    cdef uint64_t slot_mask
    cdef size_t slots_bytes
    cdef uint64_t hash_mask
    cdef Py_ssize_t n_rows_
    cdef Py_ssize_t n_groups_
    cdef Py_ssize_t max_probe_

    def __cinit__(self):
        self.slots = NULL
        self.slots_bytes = 0
        self.keys = NULL

    def __dealloc__(self):
        yidi_table_free(self.slots, self.slots_bytes)
        PyMem_Free(self.keys)

    def __init__(self, const int16_t[::1] prov not None, const int64_t[::1] offsets not None,
                 const uint8_t[::1] data not None, *, int hash_bits=64):
        cdef Py_ssize_t n = prov.shape[0]
        cdef Py_ssize_t i, n_groups = 0
        cdef int64_t key_bytes = 0
        if self.slots != NULL:
            raise RuntimeError("CatalogueIndex is already built")
        if not 1 <= hash_bits <= 64:
            raise ValueError(f"hash_bits must be in 1..64, got {hash_bits}")
        if n > ROWS_MAX:
            raise ValueError(f"too many catalogue rows: {n} > {ROWS_MAX}")
        if offsets.shape[0] != n + 1:
            raise ValueError(f"offsets has {offsets.shape[0]} entries, expected {n + 1}")
        if offsets[0] < 0 or offsets[n] > data.shape[0]:
            raise ValueError("offsets point outside data")
        for i in range(n):
            if offsets[i + 1] < offsets[i]:
                raise ValueError(f"offsets decrease at row {i}")

        # Pass 1: count the groups and the bytes of their keys. Both passes run
        # without the GIL, so a large catalogue can be indexed on a thread while
        # the rest of the world loads.
        with nogil:
            n_groups, key_bytes = _count_groups(prov, offsets, data)
        if key_bytes > KEY_BYTES_MAX:
            raise ValueError(f"catalogue codes too long in total: {key_bytes} bytes")
        self._allocate(n, n_groups, key_bytes, hash_bits)
        # Pass 2: insert each group.
        cdef Py_ssize_t dup_row = -1, dup_first = -1
        cdef int64_t k0, k1
        with nogil:
            dup_row, dup_first = self._insert_groups(prov, offsets, data)
        if dup_row >= 0:
            # A key met twice means the input was not sorted by (prov, code): its
            # versions would be split across groups.
            k0 = offsets[dup_row]
            k1 = offsets[dup_row + 1]
            code = bytes(data[k0:k1]).decode("ascii", "backslashreplace")
            raise ValueError(
                f"catalogue not sorted by (prov, code): {prov[dup_row]} {code!r} "
                f"appears at rows {dup_first} and {dup_row} apart")

    cdef int _allocate(self, Py_ssize_t n, Py_ssize_t n_groups, int64_t key_bytes,
                       int hash_bits) except -1:
        """The slot table (a power of two, at most half full) and the key bytes."""
        cdef uint64_t capacity = <uint64_t>CAPACITY_MIN
        while capacity < 2 * <uint64_t>n_groups:
            capacity *= 2
        self.slots = <Slot *>yidi_table_alloc(capacity * sizeof(Slot))
        if self.slots != NULL:
            self.slots_bytes = capacity * sizeof(Slot)
        self.keys = <unsigned char *>PyMem_Malloc(<size_t>key_bytes + 1)
        if self.slots == NULL or self.keys == NULL:
            raise MemoryError()
        self.slot_mask = capacity - 1
        self.hash_mask = <uint64_t>0xFFFFFFFFFFFFFFFF if hash_bits == 64 else (
            (<uint64_t>1 << hash_bits) - 1)
        self.n_rows_ = n
        self.n_groups_ = n_groups
        self.max_probe_ = 0
        return 0

    cdef (Py_ssize_t, Py_ssize_t) _insert_groups(
            self, const int16_t[::1] prov, const int64_t[::1] offsets,
            const uint8_t[::1] data) noexcept nogil:
        """Insert each group of rows (one (prov, code), its versions together).
        Returns (a row whose key was met before, that key's first row), or (-1, -1)."""
        cdef Py_ssize_t n = prov.shape[0]
        cdef Py_ssize_t i, g0 = 0, key_off = 0, probe
        cdef int64_t k0, k1
        cdef uint64_t h, j
        cdef Slot *s
        for i in range(1, n + 1):
            if i < n and prov[i] == prov[i - 1] and same_bytes(
                    data, offsets[i], offsets[i + 1], offsets[i - 1], offsets[i]):
                continue
            # rows g0 .. i-1 form one group
            k0 = offsets[g0]
            k1 = offsets[g0 + 1]
            if k1 > k0:
                memcpy(&self.keys[key_off], &data[k0], <size_t>(k1 - k0))
            h = self._hash(prov[g0], &self.keys[key_off], <Py_ssize_t>(k1 - k0))
            j = h & self.slot_mask
            probe = 0
            while self.slots[j].hash != 0:
                s = &self.slots[j]
                if (s.hash == h and s.prov == prov[g0] and s.key_len == <uint32_t>(k1 - k0)
                        and memcmp(&self.keys[s.key_off], &self.keys[key_off],
                                   <size_t>(k1 - k0)) == 0):
                    return g0, s.first
                j = (j + 1) & self.slot_mask
                probe += 1
            s = &self.slots[j]
            s.hash = h
            s.key_off = <uint32_t>key_off
            s.key_len = <uint32_t>(k1 - k0)
            s.first = <int32_t>g0
            s.count = <int32_t>(i - g0)
            s.prov = prov[g0]
            key_off += k1 - k0
            if probe > self.max_probe_:
                self.max_probe_ = probe
            g0 = i
        return -1, -1

    cdef inline uint64_t _hash(self, int16_t prov, const unsigned char *p,
                               Py_ssize_t n) noexcept nogil:
        cdef uint64_t h = yidi_code_hash(prov, p, <size_t>n) & self.hash_mask
        return h if h != 0 else 1

    cdef inline const Slot *_find(self, int16_t prov, const unsigned char *p,
                                  Py_ssize_t n) noexcept nogil:
        cdef uint64_t h = self._hash(prov, p, n)
        cdef uint64_t j = h & self.slot_mask
        cdef const Slot *s
        while True:
            s = &self.slots[j]
            if s.hash == 0:
                return NULL
            if (s.hash == h and s.prov == prov and s.key_len == <uint64_t>n
                    and (n == 0 or memcmp(&self.keys[s.key_off], p, <size_t>n) == 0)):
                return s
            j = (j + 1) & self.slot_mask

    cdef const Slot *_find_obj(self, int16_t prov, PyObject *code):
        cdef Py_ssize_t n
        cdef const unsigned char *p = yidi_ascii_view(code, &n)
        if p == NULL:
            return NULL
        return self._find(prov, p, n)

    @property
    def n_rows(self) -> int:
        return self.n_rows_

    @property
    def n_groups(self) -> int:
        """Distinct (prov, code) keys."""
        return self.n_groups_

    @property
    def capacity(self) -> int:
        """Slots in the table: a power of two, at least twice n_groups."""
        return <Py_ssize_t>(self.slot_mask + 1)

    @property
    def max_probe(self) -> int:
        """Longest run of occupied slots passed over by an insertion."""
        return self.max_probe_

    def group(self, int prov, object code) -> tuple:
        """(first row, row count) of the (prov, code) group, or (-1, 0)."""
        if not -32768 <= prov <= 32767:
            return (-1, 0)
        cdef const Slot *s = self._find_obj(<int16_t>prov, <PyObject *>code)
        if s == NULL:
            return (-1, 0)
        return (s.first, s.count)

    def lookup(self, int prov, object code) -> int:
        """First row of the (prov, code) group, or -1."""
        return self.group(prov, code)[0]

    def match(self, list codes not None, const int16_t[::1] line_prov not None,
              const int32_t[::1] line_day not None, const int32_t[::1] begn not None,
              const int32_t[::1] end not None, int32_t[::1] out_row not None) -> None:
        """Catalogue row valid on each line's day, or -1 (docs/contract.md section 3, step 2).

        codes[i] is line i's med_list_codg (normally a str; anything else, or a
        str with a non-ASCII character, finds nothing). begn and end are the
        catalogue's date columns (end 2**31-1 = open).
        """
        cdef Py_ssize_t n = out_row.shape[0]
        cdef Py_ssize_t i0, i, j, m
        cdef uint64_t h, k
        cdef const Slot *s
        # Per block: the code bytes, their length and hash, the slot found.
        cdef const unsigned char *key_p[BLOCK]
        cdef Py_ssize_t key_n[BLOCK]
        cdef uint64_t key_h[BLOCK]
        cdef const Slot *found[BLOCK]
        if PyList_GET_SIZE(codes) != n or line_prov.shape[0] != n or line_day.shape[0] != n:
            raise ValueError(
                f"lengths differ: codes {len(codes)}, line_prov {line_prov.shape[0]}, "
                f"line_day {line_day.shape[0]}, out_row {n}")
        if begn.shape[0] != self.n_rows_ or end.shape[0] != self.n_rows_:
            raise ValueError(
                f"begn/end have {begn.shape[0]}/{end.shape[0]} rows, the index {self.n_rows_}")
        # The GIL stays held: the codes are borrowed from a list that another
        # thread could otherwise change under us. Nothing here allocates.
        #
        # A cold key costs three dependent cache misses (its slot, its key
        # bytes, its date versions). Lines go in blocks whose misses overlap:
        # hash all and prefetch their slots, then probe all and prefetch the
        # keys and versions, then confirm and pick the version.
        for i0 in range(0, n, BLOCK):
            m = min(BLOCK, n - i0)
            for j in range(m):
                key_p[j] = yidi_ascii_view(PyList_GET_ITEM(codes, i0 + j), &key_n[j])
                if key_p[j] != NULL:
                    h = self._hash(line_prov[i0 + j], key_p[j], key_n[j])
                    key_h[j] = h
                    prefetch(&self.slots[h & self.slot_mask])
            for j in range(m):
                found[j] = NULL
                if key_p[j] == NULL:
                    continue
                h = key_h[j]
                k = h & self.slot_mask
                while self.slots[k].hash != 0:
                    s = &self.slots[k]
                    if (s.hash == h and s.prov == line_prov[i0 + j]
                            and s.key_len == <uint64_t>key_n[j]):
                        found[j] = s
                        prefetch(&self.keys[s.key_off])
                        prefetch(&begn[s.first])
                        prefetch(&end[s.first])
                        break
                    k = (k + 1) & self.slot_mask
            for j in range(m):
                s = found[j]
                if s != NULL and key_n[j] > 0 and memcmp(
                        &self.keys[s.key_off], key_p[j], <size_t>key_n[j]) != 0:
                    # Equal 64-bit hashes of different keys: about never.
                    s = self._find(line_prov[i0 + j], key_p[j], key_n[j])
                out_row[i0 + j] = version_on(s, line_day[i0 + j], begn, end)
