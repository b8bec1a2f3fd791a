# The typed buffer groups of the split (core_ext._split), shared with the
# kernels that read a split round back: core_ext._emit (RowEmitter) and
# core_ext._pack (pack_lines).

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t


cdef class CatalogueArrays:
    cdef readonly object lv, selfpay_bp, cap_micro, lmt
    cdef readonly Py_ssize_t n
    cdef const int8_t[::1] _lv
    cdef const int32_t[::1] _selfpay_bp
    cdef const int64_t[::1] _cap_micro
    cdef const int8_t[::1] _lmt


cdef class LineBatch:
    cdef readonly object starts, outpatient, row, pric_micro, cnt_ten_thousandths, amt_fen
    cdef readonly Py_ssize_t n_settlements, n_lines
    cdef const int64_t[::1] _starts
    cdef const uint8_t[::1] _outpatient
    cdef const int32_t[::1] _row
    cdef const int64_t[::1] _pric_micro
    cdef const int64_t[::1] _cnt
    cdef const int64_t[::1] _amt_fen


cdef class SplitResults:
    cdef readonly LineBatch lines
    cdef readonly object memo, fulamt_fen, overlmt_fen, presel_fen, inscp_fen
    cdef readonly object tot_fulamt_fen, tot_overlmt_fen, tot_presel_fen, tot_inscp_fen
    cdef readonly object tot_amt_fen, err, err_line
    cdef readonly Py_ssize_t n_settlements, n_lines
    cdef int8_t[::1] _memo, _err
    cdef int64_t[::1] _ful, _ovr, _pre, _ins, _t_ful, _t_ovr, _t_pre, _t_ins, _t_amt
    cdef int32_t[::1] _err_line
