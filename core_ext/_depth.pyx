# cython: language_level=3
"""How deeply an envelope's raw bytes nest, read before anything decodes them.

docs/contract.md section 7: structure nested deeper than 32 levels anywhere in
an envelope, ignored fields included, is E_SCHEMA. Decoders recurse, and an
ignored field is skipped without being kept, so the depth is read from the raw
bytes: JSON by its brackets outside strings, MessagePack by walking its type
headers with a stack of counts that never grows past the limit. Each returns
as soon as it has seen more than `limit` levels; the work is one pass over the
bytes without the GIL and without allocating.

A body that is not well formed may get any answer not above limit + 1: its
decoder refuses it afterwards anyway.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memchr

DEPTH_LIMIT_MAX = 256  # the stack below holds this many levels


cdef inline uint64_t _be(const uint8_t* p, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


# Byte classes for the JSON scan: most bytes are none of these, and the table
# lets the loop pass them with one load and one test.
DEF J_OPEN = 1
DEF J_CLOSE = 2
DEF J_QUOTE = 3
cdef uint8_t _JSON_CLASS[256]
_JSON_CLASS[:] = [0] * 256
_JSON_CLASS[ord("[")] = J_OPEN
_JSON_CLASS[ord("{")] = J_OPEN
_JSON_CLASS[ord("]")] = J_CLOSE
_JSON_CLASS[ord("}")] = J_CLOSE
_JSON_CLASS[ord('"')] = J_QUOTE


cdef inline Py_ssize_t _string_end(const uint8_t* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The index just past the quote that closes the string whose body starts at i (n if none).

    Most of a request's bytes are inside strings: memchr finds each quote, and a
    quote after an odd run of backslashes is escaped, so the search goes on.
    """
    cdef const uint8_t* q
    cdef Py_ssize_t j, slashes
    while i < n:
        q = <const uint8_t*> memchr(p + i, 34, <size_t> (n - i))
        if q == NULL:
            return n
        j = q - p
        slashes = 0
        while j - 1 - slashes >= i and p[j - 1 - slashes] == 92:
            slashes += 1
        i = j + 1
        if slashes % 2 == 0:
            return i
    return n


def json_depth(const uint8_t[::1] buf, int limit) -> int:
    """The deepest nesting of arrays and objects in JSON text, at most limit + 1."""
    cdef Py_ssize_t i = 0, n = buf.shape[0]
    cdef int depth = 0, deepest = 0
    cdef uint8_t k
    with nogil:
        while i < n:
            k = _JSON_CLASS[buf[i]]
            i += 1
            if k == 0:
                continue
            if k == J_QUOTE:
                i = _string_end(&buf[0], i, n)
            elif k == J_OPEN:
                depth += 1
                if depth > deepest:
                    deepest = depth
                    if deepest > limit:
                        break
            elif k == J_CLOSE:
                depth -= 1
    return deepest


cdef inline Py_ssize_t _skip(uint8_t t, const uint8_t* p, Py_ssize_t left, uint64_t* items,
                             bint* container) noexcept nogil:
    """Bytes of the header and payload of the value starting with type byte t (after t itself);
    container: whether it is an array or a map, items: the values it holds. -1 when the bytes end first."""
    cdef Py_ssize_t k = 0
    cdef uint64_t length = 0
    items[0] = 0
    container[0] = False
    if t <= 0x7F or t >= 0xE0 or t == 0xC0 or t == 0xC2 or t == 0xC3:
        return 0
    if 0x80 <= t <= 0x8F:
        container[0] = True
        items[0] = 2 * (t & 0x0F)
        return 0
    if 0x90 <= t <= 0x9F:
        container[0] = True
        items[0] = t & 0x0F
        return 0
    if 0xA0 <= t <= 0xBF:
        length = t & 0x1F
    elif t == 0xC4 or t == 0xD9:
        k = 1
    elif t == 0xC5 or t == 0xDA:
        k = 2
    elif t == 0xC6 or t == 0xDB:
        k = 4
    elif t == 0xC7:
        k = 1
        length = 1  # the ext type byte
    elif t == 0xC8:
        k = 2
        length = 1
    elif t == 0xC9:
        k = 4
        length = 1
    elif t == 0xCA:
        length = 4
    elif t == 0xCB:
        length = 8
    elif 0xCC <= t <= 0xCF:
        length = 1 << (t - 0xCC)
    elif 0xD0 <= t <= 0xD3:
        length = 1 << (t - 0xD0)
    elif 0xD4 <= t <= 0xD8:
        length = 1 + (1 << (t - 0xD4))
    elif t == 0xDC or t == 0xDE:
        container[0] = True
        if left < 2:
            return -1
        items[0] = _be(p, 2) * (2 if t == 0xDE else 1)
        return 2
    elif t == 0xDD or t == 0xDF:
        container[0] = True
        if left < 4:
            return -1
        items[0] = _be(p, 4) * (2 if t == 0xDF else 1)
        return 4
    else:
        return -1  # 0xC1: never used
    if k:
        if left < k:
            return -1
        length += _be(p, <int> k)
    if <uint64_t> (left - k) < length:
        return -1
    return k + <Py_ssize_t> length


def msgpack_depth(const uint8_t[::1] buf, int limit) -> int:
    """The deepest nesting of arrays and maps in MessagePack, at most limit + 1 (-1: cut short)."""
    if not 0 <= limit < DEPTH_LIMIT_MAX:
        raise ValueError(f"limit must be in [0, {DEPTH_LIMIT_MAX})")
    cdef uint64_t[256] left_at  # values still to read at each open level
    cdef Py_ssize_t i = 0, n = buf.shape[0], step
    cdef int depth = 0, deepest = 0
    cdef uint64_t items
    cdef bint cut = False, container
    with nogil:
        while i < n:
            step = _skip(buf[i], &buf[i + 1] if i + 1 < n else &buf[i], n - i - 1, &items, &container)
            if step < 0:
                cut = True
                break
            i += 1 + step
            if depth > 0:
                left_at[depth - 1] -= 1
            if container:
                depth += 1
                if depth > deepest:
                    deepest = depth
                    if deepest > limit:
                        break
                left_at[depth - 1] = items
            while depth > 0 and left_at[depth - 1] == 0:
                depth -= 1
            if depth == 0:
                break  # the top-level value is complete
    if (cut or depth > 0) and deepest <= limit:
        return -1  # the bytes end inside a value
    return deepest
