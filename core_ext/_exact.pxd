# Exact integer arithmetic shared by the kernels (docs/contract.md section 1).
#
# Everything here is C, inlined into each kernel that cimports it. Money is
# int64 fen; products that can pass 64 bits go through __int128 (gcc, clang).
# No float appears anywhere.

from libc.stdint cimport int32_t, int64_t

cdef extern from *:
    """
    #include <stdint.h>

    typedef __int128 yidi_i128;
    typedef unsigned __int128 yidi_u128;

    #define YIDI_BP_ONE 10000
    #define YIDI_EXT_HALF 50000000
    #define YIDI_EXT_DIV 100000000

    /* mulr(a, r) = floor((a * r + 5000) / 10000), for a >= 0 and r >= 0.
       The 64-bit path covers every amount of the contract (a <= 1e13 fen,
       r <= 10000 bp); wider products fall back to 128 bits. */
    static inline int64_t yidi_mulr(int64_t a, int64_t r) {
        uint64_t prod;
        if (!__builtin_mul_overflow((uint64_t)a, (uint64_t)r, &prod)
                && prod <= UINT64_MAX - 5000u) {
            return (int64_t)((prod + 5000u) / 10000u);
        }
        return (int64_t)(((yidi_u128)(uint64_t)a * (uint64_t)r + 5000u) / 10000u);
    }

    /* ext(p, c) = floor((p * c + 50_000_000) / 100_000_000), for p, c >= 0 and
       a result that fits int64 (the caller bounds p and c). Most products fit
       64 bits, where the division by a constant is a multiplication. */
    static inline int64_t yidi_ext(int64_t p, int64_t c) {
        uint64_t prod;
        if (!__builtin_mul_overflow((uint64_t)p, (uint64_t)c, &prod)
                && prod <= UINT64_MAX - (uint64_t)YIDI_EXT_HALF) {
            return (int64_t)((prod + (uint64_t)YIDI_EXT_HALF) / (uint64_t)YIDI_EXT_DIV);
        }
        return (int64_t)(((yidi_u128)(uint64_t)p * (uint64_t)c + YIDI_EXT_HALF)
                         / YIDI_EXT_DIV);
    }

    /* ext for any int64 p and c, with Python's floor division; 0 when the
       result does not fit int64 (then *ok = 0). For the Python-level helpers. */
    static inline int64_t yidi_ext_checked(int64_t p, int64_t c, int *ok) {
        yidi_i128 n = (yidi_i128)p * (yidi_i128)c + YIDI_EXT_HALF;
        yidi_i128 q = n / YIDI_EXT_DIV;
        if (n % YIDI_EXT_DIV != 0 && n < 0) q -= 1;
        if (q > (yidi_i128)INT64_MAX || q < (yidi_i128)INT64_MIN) { *ok = 0; return 0; }
        *ok = 1;
        return (int64_t)q;
    }

    static inline int64_t yidi_mulr_checked(int64_t a, int64_t r, int *ok) {
        /* a >= 0 and r >= 0 (the caller checks), so the sum is below 2**127. */
        yidi_u128 q = ((yidi_u128)(uint64_t)a * (uint64_t)r + 5000u) / 10000u;
        if (q > (yidi_u128)INT64_MAX) { *ok = 0; return 0; }
        *ok = 1;
        return (int64_t)q;
    }

    static inline int32_t yidi_clamp_bp(int64_t r) {
        return r < 0 ? 0 : (r > YIDI_BP_ONE ? YIDI_BP_ONE : (int32_t)r);
    }

    /* Saturating addition: only sums that are already outside the contract
       (a settlement refused with E_LIMIT) can reach the bounds. */
    static inline int64_t yidi_sat_add(int64_t a, int64_t b) {
        int64_t s;
        if (__builtin_add_overflow(a, b, &s)) return b > 0 ? INT64_MAX : INT64_MIN;
        return s;
    }
    """
    const int64_t YIDI_BP_ONE
    int64_t yidi_mulr(int64_t a, int64_t r) nogil
    int64_t yidi_ext(int64_t p, int64_t c) nogil
    int64_t yidi_ext_checked(int64_t p, int64_t c, int *ok) nogil
    int64_t yidi_mulr_checked(int64_t a, int64_t r, int *ok) nogil
    int32_t yidi_clamp_bp(int64_t r) nogil
    int64_t yidi_sat_add(int64_t a, int64_t b) nogil
