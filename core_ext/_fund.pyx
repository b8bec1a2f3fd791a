"""Fund payment of a batch of settlements, in order, against the persons' state.

docs/contract.md section 6 (with eff of section 5). Private: use engine.core.kernels.

The kernel's buffers come in four typed groups, each built by keyword and
checked once (dtype, shape, lengths that must agree) when it is made:
  PolicyArrays     per policy, level, tier and chronic disease (read only)
  PersonArrays     per person and chronic slot: the state the kernel changes
  SettlementBatch  per settlement: the inputs of one round
  FundResults      per settlement: the outputs, allocated by the class
fund_batch(batch, policies, persons, results) takes exactly these four types,
so two arrays of one dtype cannot trade places unnoticed.

Settlements are processed one at a time in batch order, so a person's later
settlement sees the accumulators left by the earlier committed ones: the
outcome equals running them one by one (section 7). A settlement with commit 0
(pre-settlement) computes from the current state and changes nothing, its year
roll-over included.
"""
import numpy as np

from libc.stdint cimport INT64_MAX, int8_t, int32_t, int64_t, uint8_t

from core_ext._exact cimport yidi_clamp_bp, yidi_mulr

# kind, per settlement
KIND_INPATIENT = 0
KIND_OUTPATIENT = 1
KIND_CHRONIC = 2
# status, per settlement (pre_status takes 1 or 2)
STATUS_OK = 0
STATUS_FILING_REQUIRED = 1
STATUS_NO_QUALIFICATION = 2
STATUS_DATE = 3

cdef enum:
    K_INPATIENT = 0
    K_OUTPATIENT = 1
    K_CHRONIC = 2
    ST_DATE = 3
    LEVELS = 3

# Reasons an input is refused before anything is computed (see _check).
cdef enum:
    BAD_NONE = 0
    BAD_KIND
    BAD_POLICY
    BAD_LEVEL
    BAD_PERSON
    BAD_AMOUNT
    BAD_PRE_STATUS
    BAD_CHRONIC
    BAD_TIERS
    BAD_REDUCTION

BAD_TEXT = {
    BAD_KIND: "kind not in 0..2",
    BAD_POLICY: "pol outside the policy table",
    BAD_LEVEL: "lv not in 1..3",
    BAD_PERSON: "psn outside the person table",
    BAD_AMOUNT: "needs 0 <= inscp_fen <= medfee_fen",
    BAD_PRE_STATUS: "pre_status not in 0..2",
    BAD_CHRONIC: "chronic settlement without a valid cd_slot and cd_pol",
    BAD_TIERS: "policy tiers outside tier_upper_fen/tier_ratio_bp, or empty",
    BAD_REDUCTION: "reduction_bp not in 0..10000",
}


# ------------------------------------------------------------------ raw views
#
# The loop reads the groups' arrays through these structs of raw pointers,
# taken once per batch from arrays the group objects hold (and so keep alive
# and unresizable). Every index is checked by _check before the loop runs.

cdef struct Policies:
    const int64_t *annual_cap_fen
    const int64_t *ip_ded_fen        # [k * LEVELS + L]
    const int32_t *ip_tier_start     # [k * LEVELS + L], a row of tier_*
    const int32_t *ip_tier_len       # [k * LEVELS + L], tiers
    const int32_t *ip_bonus_bp
    const int64_t *op_ded_fen
    const int32_t *op_ratio_bp       # [k * LEVELS + L]
    const int64_t *op_cap_fen
    const int32_t *op_bonus_bp
    const int64_t *sl_threshold_fen
    const int32_t *sl_tier_start
    const int32_t *sl_tier_len
    const int64_t *sl_cap_fen
    const int64_t *tier_upper_fen    # -1: unbounded
    const int32_t *tier_ratio_bp
    const int32_t *cd_ratio_bp       # per chronic disease of a policy
    const int64_t *cd_cap_fen

cdef struct Persons:
    int32_t *acc_year
    int64_t *hifp_ip_fen
    int64_t *hifp_op_fen
    int64_t *ded_op_fen
    int64_t *burden2_fen
    int64_t *second_paid_fen
    int64_t *balc_fen
    int64_t *cd_val_fen              # per chronic slot
    int32_t *cd_year

cdef struct Settlements:
    const int8_t *kind
    const int32_t *pol
    const int8_t *lv
    const int32_t *psn
    const int32_t *year
    const int64_t *inscp_fen
    const int64_t *medfee_fen
    const int32_t *reduction_bp
    const uint8_t *retired310
    const uint8_t *acct_ok
    const int32_t *cd_slot
    const int32_t *cd_pol
    const int8_t *pre_status
    const uint8_t *commit

cdef struct Results:
    int8_t *status
    int64_t *act_pay_dedc
    int64_t *hifp_pay
    int64_t *second_pay_fen
    int64_t *fund_pay_sumamt
    int64_t *psn_part_amt
    int64_t *acct_pay
    int64_t *psn_cash_pay
    int64_t *balc_after_fen
    int64_t *burden_fen
    int32_t *pool_prop_bp

# A person's accumulators as one settlement sees them: brought to its year.
cdef struct Accumulators:
    int64_t hifp_ip_fen
    int64_t hifp_op_fen
    int64_t ded_op_fen
    int64_t burden2_fen
    int64_t second_paid_fen

# What one settlement's setting pays, before the account.
cdef struct Payment:
    int64_t dedc_fen
    int64_t hifp_fen
    int64_t second_fen
    int64_t burden_fen
    int32_t pool_bp


# ------------------------------------------------------------------ the groups

cdef object _array(object value, object dtype, int ndim, str name):
    """value as a C-contiguous array of exactly `dtype` and `ndim`, else TypeError/ValueError."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, not {value.dtype}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), not {value.ndim}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return value


cdef _rows(dict arrays, Py_ssize_t want, str group):
    for name, arr in arrays.items():
        if arr.shape[0] != want:
            raise ValueError(f"{name} has {arr.shape[0]} rows, expected {want} ({group})")


cdef inline const void *_ptr(object arr, bint writable) except? NULL:
    """The data pointer of an array _array accepted (NULL when empty).

    The group keeps a reference to the array, so numpy refuses to resize it
    while the group lives, and the pointer stays valid. A read-only array
    cannot give a pointer that is written (ValueError).
    """
    cdef const int8_t[::1] ro
    cdef int8_t[::1] rw
    if arr.size == 0:
        return NULL
    if writable:
        rw = arr.reshape(-1).view(np.int8)
        return &rw[0]
    ro = arr.reshape(-1).view(np.int8)
    return &ro[0]


cdef class PolicyArrays:
    """The policies flattened for the kernel (docs/contract.md section 5), read only.

    Per policy (P rows): annual_cap_fen, ip_bonus_bp, op_ded_fen, op_cap_fen,
    op_bonus_bp, sl_threshold_fen, sl_tier_start, sl_tier_len, sl_cap_fen;
    per policy and hospital level (P x 3): ip_ded_fen, ip_tier_start,
    ip_tier_len, op_ratio_bp. The tiers (T rows, referred to by *_tier_start
    and *_tier_len): tier_upper_fen (-1 unbounded), tier_ratio_bp. The chronic
    diseases (C rows, referred to by a settlement's cd_pol): cd_ratio_bp, cd_cap_fen.
    """
    cdef readonly object annual_cap_fen, ip_ded_fen, ip_tier_start, ip_tier_len, ip_bonus_bp
    cdef readonly object op_ded_fen, op_ratio_bp, op_cap_fen, op_bonus_bp
    cdef readonly object sl_threshold_fen, sl_tier_start, sl_tier_len, sl_cap_fen
    cdef readonly object tier_upper_fen, tier_ratio_bp, cd_ratio_bp, cd_cap_fen
    cdef Policies c
    cdef readonly Py_ssize_t n_policies, n_tiers, n_diseases
    cdef bint ready

    def __init__(self, *, annual_cap_fen, ip_ded_fen, ip_tier_start, ip_tier_len, ip_bonus_bp,
                 op_ded_fen, op_ratio_bp, op_cap_fen, op_bonus_bp, sl_threshold_fen,
                 sl_tier_start, sl_tier_len, sl_cap_fen, tier_upper_fen, tier_ratio_bp,
                 cd_ratio_bp, cd_cap_fen):
        I32, I64 = np.int32, np.int64
        self.annual_cap_fen = _array(annual_cap_fen, I64, 1, "annual_cap_fen")
        self.ip_ded_fen = _array(ip_ded_fen, I64, 2, "ip_ded_fen")
        self.ip_tier_start = _array(ip_tier_start, I32, 2, "ip_tier_start")
        self.ip_tier_len = _array(ip_tier_len, I32, 2, "ip_tier_len")
        self.ip_bonus_bp = _array(ip_bonus_bp, I32, 1, "ip_bonus_bp")
        self.op_ded_fen = _array(op_ded_fen, I64, 1, "op_ded_fen")
        self.op_ratio_bp = _array(op_ratio_bp, I32, 2, "op_ratio_bp")
        self.op_cap_fen = _array(op_cap_fen, I64, 1, "op_cap_fen")
        self.op_bonus_bp = _array(op_bonus_bp, I32, 1, "op_bonus_bp")
        self.sl_threshold_fen = _array(sl_threshold_fen, I64, 1, "sl_threshold_fen")
        self.sl_tier_start = _array(sl_tier_start, I32, 1, "sl_tier_start")
        self.sl_tier_len = _array(sl_tier_len, I32, 1, "sl_tier_len")
        self.sl_cap_fen = _array(sl_cap_fen, I64, 1, "sl_cap_fen")
        self.tier_upper_fen = _array(tier_upper_fen, I64, 1, "tier_upper_fen")
        self.tier_ratio_bp = _array(tier_ratio_bp, I32, 1, "tier_ratio_bp")
        self.cd_ratio_bp = _array(cd_ratio_bp, I32, 1, "cd_ratio_bp")
        self.cd_cap_fen = _array(cd_cap_fen, I64, 1, "cd_cap_fen")
        self.n_policies = len(self.annual_cap_fen)
        _rows({"ip_ded_fen": self.ip_ded_fen, "ip_tier_start": self.ip_tier_start,
               "ip_tier_len": self.ip_tier_len, "ip_bonus_bp": self.ip_bonus_bp,
               "op_ded_fen": self.op_ded_fen, "op_ratio_bp": self.op_ratio_bp,
               "op_cap_fen": self.op_cap_fen, "op_bonus_bp": self.op_bonus_bp,
               "sl_threshold_fen": self.sl_threshold_fen, "sl_tier_start": self.sl_tier_start,
               "sl_tier_len": self.sl_tier_len, "sl_cap_fen": self.sl_cap_fen},
              self.n_policies, "policies")
        for name in ("ip_ded_fen", "ip_tier_start", "ip_tier_len", "op_ratio_bp"):
            if getattr(self, name).shape[1] != LEVELS:
                raise ValueError(f"{name} must have {LEVELS} columns (hospital levels)")
        self.n_tiers = len(self.tier_upper_fen)
        if len(self.tier_ratio_bp) != self.n_tiers:
            raise ValueError("tier_upper_fen and tier_ratio_bp differ in length")
        self.n_diseases = len(self.cd_ratio_bp)
        if len(self.cd_cap_fen) != self.n_diseases:
            raise ValueError("cd_ratio_bp and cd_cap_fen differ in length")
        self.c.annual_cap_fen = <const int64_t *>_ptr(self.annual_cap_fen, False)
        self.c.ip_ded_fen = <const int64_t *>_ptr(self.ip_ded_fen, False)
        self.c.ip_tier_start = <const int32_t *>_ptr(self.ip_tier_start, False)
        self.c.ip_tier_len = <const int32_t *>_ptr(self.ip_tier_len, False)
        self.c.ip_bonus_bp = <const int32_t *>_ptr(self.ip_bonus_bp, False)
        self.c.op_ded_fen = <const int64_t *>_ptr(self.op_ded_fen, False)
        self.c.op_ratio_bp = <const int32_t *>_ptr(self.op_ratio_bp, False)
        self.c.op_cap_fen = <const int64_t *>_ptr(self.op_cap_fen, False)
        self.c.op_bonus_bp = <const int32_t *>_ptr(self.op_bonus_bp, False)
        self.c.sl_threshold_fen = <const int64_t *>_ptr(self.sl_threshold_fen, False)
        self.c.sl_tier_start = <const int32_t *>_ptr(self.sl_tier_start, False)
        self.c.sl_tier_len = <const int32_t *>_ptr(self.sl_tier_len, False)
        self.c.sl_cap_fen = <const int64_t *>_ptr(self.sl_cap_fen, False)
        self.c.tier_upper_fen = <const int64_t *>_ptr(self.tier_upper_fen, False)
        self.c.tier_ratio_bp = <const int32_t *>_ptr(self.tier_ratio_bp, False)
        self.c.cd_ratio_bp = <const int32_t *>_ptr(self.cd_ratio_bp, False)
        self.c.cd_cap_fen = <const int64_t *>_ptr(self.cd_cap_fen, False)
        self.ready = True


cdef class PersonArrays:
    """The dynamic state of every person (docs/contract.md section 6), changed in place by fund_batch.

    Per person (N rows): acc_year, hifp_ip_fen, hifp_op_fen, ded_op_fen,
    burden2_fen, second_paid_fen, balc_fen; per chronic slot (S rows):
    cd_val_fen (the disease's fund payment in cd_year). The arrays are the
    caller's own (not copies) and must be writable; the attributes cannot be
    rebound, so what the kernel changes is what the caller reads.
    """
    cdef readonly object acc_year, hifp_ip_fen, hifp_op_fen, ded_op_fen, burden2_fen
    cdef readonly object second_paid_fen, balc_fen, cd_val_fen, cd_year
    cdef Persons c
    cdef readonly Py_ssize_t n_persons, n_slots
    cdef bint ready

    def __init__(self, *, acc_year, hifp_ip_fen, hifp_op_fen, ded_op_fen, burden2_fen,
                 second_paid_fen, balc_fen, cd_val_fen, cd_year):
        I32, I64 = np.int32, np.int64
        self.acc_year = _array(acc_year, I32, 1, "acc_year")
        self.hifp_ip_fen = _array(hifp_ip_fen, I64, 1, "hifp_ip_fen")
        self.hifp_op_fen = _array(hifp_op_fen, I64, 1, "hifp_op_fen")
        self.ded_op_fen = _array(ded_op_fen, I64, 1, "ded_op_fen")
        self.burden2_fen = _array(burden2_fen, I64, 1, "burden2_fen")
        self.second_paid_fen = _array(second_paid_fen, I64, 1, "second_paid_fen")
        self.balc_fen = _array(balc_fen, I64, 1, "balc_fen")
        self.cd_val_fen = _array(cd_val_fen, I64, 1, "cd_val_fen")
        self.cd_year = _array(cd_year, I32, 1, "cd_year")
        self.n_persons = len(self.acc_year)
        _rows({"hifp_ip_fen": self.hifp_ip_fen, "hifp_op_fen": self.hifp_op_fen,
               "ded_op_fen": self.ded_op_fen, "burden2_fen": self.burden2_fen,
               "second_paid_fen": self.second_paid_fen, "balc_fen": self.balc_fen},
              self.n_persons, "persons")
        self.n_slots = len(self.cd_val_fen)
        if len(self.cd_year) != self.n_slots:
            raise ValueError("cd_val_fen and cd_year differ in length")
        self.c.acc_year = <int32_t *>_ptr(self.acc_year, True)
        self.c.hifp_ip_fen = <int64_t *>_ptr(self.hifp_ip_fen, True)
        self.c.hifp_op_fen = <int64_t *>_ptr(self.hifp_op_fen, True)
        self.c.ded_op_fen = <int64_t *>_ptr(self.ded_op_fen, True)
        self.c.burden2_fen = <int64_t *>_ptr(self.burden2_fen, True)
        self.c.second_paid_fen = <int64_t *>_ptr(self.second_paid_fen, True)
        self.c.balc_fen = <int64_t *>_ptr(self.balc_fen, True)
        self.c.cd_val_fen = <int64_t *>_ptr(self.cd_val_fen, True)
        self.c.cd_year = <int32_t *>_ptr(self.cd_year, True)
        self.ready = True


cdef class SettlementBatch:
    """One round's settlements for the kernel, n rows each (docs/contract.md sections 5, 6).

    kind (0 inpatient, 1 outpatient, 2 chronic), pol (policy row), lv
    (hospital level 1..3), psn (person row), year, inscp_fen, medfee_fen,
    reduction_bp, retired310, acct_ok, cd_slot and cd_pol (chronic slot and
    disease row, -1 otherwise), pre_status (0, or the status 1/2 decided
    before the kernel), commit (0: pre-settlement, nothing changes).
    """
    cdef readonly object kind, pol, lv, psn, year, inscp_fen, medfee_fen, reduction_bp
    cdef readonly object retired310, acct_ok, cd_slot, cd_pol, pre_status, commit
    cdef Settlements c
    cdef readonly Py_ssize_t n
    cdef bint ready

    def __init__(self, *, kind, pol, lv, psn, year, inscp_fen, medfee_fen, reduction_bp,
                 retired310, acct_ok, cd_slot, cd_pol, pre_status, commit):
        I8, I32, I64, U8 = np.int8, np.int32, np.int64, np.uint8
        self.kind = _array(kind, I8, 1, "kind")
        self.pol = _array(pol, I32, 1, "pol")
        self.lv = _array(lv, I8, 1, "lv")
        self.psn = _array(psn, I32, 1, "psn")
        self.year = _array(year, I32, 1, "year")
        self.inscp_fen = _array(inscp_fen, I64, 1, "inscp_fen")
        self.medfee_fen = _array(medfee_fen, I64, 1, "medfee_fen")
        self.reduction_bp = _array(reduction_bp, I32, 1, "reduction_bp")
        self.retired310 = _array(retired310, U8, 1, "retired310")
        self.acct_ok = _array(acct_ok, U8, 1, "acct_ok")
        self.cd_slot = _array(cd_slot, I32, 1, "cd_slot")
        self.cd_pol = _array(cd_pol, I32, 1, "cd_pol")
        self.pre_status = _array(pre_status, I8, 1, "pre_status")
        self.commit = _array(commit, U8, 1, "commit")
        self.n = len(self.kind)
        _rows({"pol": self.pol, "lv": self.lv, "psn": self.psn, "year": self.year,
               "inscp_fen": self.inscp_fen, "medfee_fen": self.medfee_fen,
               "reduction_bp": self.reduction_bp, "retired310": self.retired310,
               "acct_ok": self.acct_ok, "cd_slot": self.cd_slot, "cd_pol": self.cd_pol,
               "pre_status": self.pre_status, "commit": self.commit}, self.n, "settlements")
        self.c.kind = <const int8_t *>_ptr(self.kind, False)
        self.c.pol = <const int32_t *>_ptr(self.pol, False)
        self.c.lv = <const int8_t *>_ptr(self.lv, False)
        self.c.psn = <const int32_t *>_ptr(self.psn, False)
        self.c.year = <const int32_t *>_ptr(self.year, False)
        self.c.inscp_fen = <const int64_t *>_ptr(self.inscp_fen, False)
        self.c.medfee_fen = <const int64_t *>_ptr(self.medfee_fen, False)
        self.c.reduction_bp = <const int32_t *>_ptr(self.reduction_bp, False)
        self.c.retired310 = <const uint8_t *>_ptr(self.retired310, False)
        self.c.acct_ok = <const uint8_t *>_ptr(self.acct_ok, False)
        self.c.cd_slot = <const int32_t *>_ptr(self.cd_slot, False)
        self.c.cd_pol = <const int32_t *>_ptr(self.cd_pol, False)
        self.c.pre_status = <const int8_t *>_ptr(self.pre_status, False)
        self.c.commit = <const uint8_t *>_ptr(self.commit, False)
        self.ready = True


cdef class FundResults:
    """The kernel's outputs for n settlements, allocated here (docs/contract.md section 6).

    status (0 ok, 1 E_FILING_REQUIRED, 2 E_NO_QUALIFICATION, 3 E_DATE), and in
    fen: act_pay_dedc, hifp_pay, fund_pay_sumamt, psn_part_amt, acct_pay,
    psn_cash_pay (named as the setlinfo fields they become), second_pay_fen
    (the second layer), balc_after_fen (the balance after the settlement),
    burden_fen (the in-scope burden after the basic fund); pool_prop_bp.
    """
    cdef readonly object status, act_pay_dedc, hifp_pay, second_pay_fen, fund_pay_sumamt
    cdef readonly object psn_part_amt, acct_pay, psn_cash_pay, balc_after_fen, burden_fen
    cdef readonly object pool_prop_bp
    cdef Results c
    cdef readonly Py_ssize_t n

    def __init__(self, Py_ssize_t n):
        if n < 0:
            raise ValueError("n must be >= 0")
        self.n = n
        self.status = np.empty(n, np.int8)
        self.act_pay_dedc = np.empty(n, np.int64)
        self.hifp_pay = np.empty(n, np.int64)
        self.second_pay_fen = np.empty(n, np.int64)
        self.fund_pay_sumamt = np.empty(n, np.int64)
        self.psn_part_amt = np.empty(n, np.int64)
        self.acct_pay = np.empty(n, np.int64)
        self.psn_cash_pay = np.empty(n, np.int64)
        self.balc_after_fen = np.empty(n, np.int64)
        self.burden_fen = np.empty(n, np.int64)
        self.pool_prop_bp = np.empty(n, np.int32)
        self.c.status = <int8_t *>_ptr(self.status, True)
        self.c.act_pay_dedc = <int64_t *>_ptr(self.act_pay_dedc, True)
        self.c.hifp_pay = <int64_t *>_ptr(self.hifp_pay, True)
        self.c.second_pay_fen = <int64_t *>_ptr(self.second_pay_fen, True)
        self.c.fund_pay_sumamt = <int64_t *>_ptr(self.fund_pay_sumamt, True)
        self.c.psn_part_amt = <int64_t *>_ptr(self.psn_part_amt, True)
        self.c.acct_pay = <int64_t *>_ptr(self.acct_pay, True)
        self.c.psn_cash_pay = <int64_t *>_ptr(self.psn_cash_pay, True)
        self.c.balc_after_fen = <int64_t *>_ptr(self.balc_after_fen, True)
        self.c.burden_fen = <int64_t *>_ptr(self.burden_fen, True)
        self.c.pool_prop_bp = <int32_t *>_ptr(self.pool_prop_bp, True)


# ------------------------------------------------------------------ the kernel

def fund_batch(SettlementBatch batch not None, PolicyArrays policies not None,
               PersonArrays persons not None, FundResults results not None) -> None:
    """Compute the fund payment of each settlement and commit it to the state (docs/contract.md section 6).

    status: 0 ok; 3 E_DATE when year < the person's acc_year at that point;
    else pre_status (1 E_FILING_REQUIRED, 2 E_NO_QUALIFICATION) when nonzero.
    A settlement with status != 0 changes nothing and gets zeros, except
    balc_after_fen = the unchanged balance. Indices that leave the tables raise
    ValueError before any state changes.
    """
    if not (batch.ready and policies.ready and persons.ready):
        raise ValueError("a kernel group whose __init__ did not run")
    if results.n != batch.n:
        raise ValueError(f"results has {results.n} rows, expected {batch.n} (settlements)")
    cdef Py_ssize_t bad_at = -1
    cdef int reason = BAD_NONE
    with nogil:
        bad_at, reason = _check(&batch.c, batch.n, &policies.c, policies.n_policies,
                                policies.n_tiers, policies.n_diseases,
                                persons.n_persons, persons.n_slots)
    if bad_at >= 0:
        raise ValueError(f"settlement {bad_at}: {BAD_TEXT[reason]}")
    with nogil:
        _fund_loop(&batch.c, batch.n, &policies.c, &persons.c, &results.c)


cdef inline int64_t min64(int64_t a, int64_t b) noexcept nogil:
    return a if a < b else b


cdef inline int64_t max64(int64_t a, int64_t b) noexcept nogil:
    return a if a > b else b


cdef inline int64_t segments(int64_t lo_fen, int64_t hi_fen, const int64_t *upper_fen,
                             const int32_t *ratio_bp, Py_ssize_t start, Py_ssize_t n,
                             int64_t adj_bp) noexcept nogil:
    """segments(lo, hi, tiers, adj) of section 6: the tiers cut [0, inf) at
    their uppers (-1 = unbounded); each portion of [lo, hi) in a tier pays
    mulr(portion, clamp(ratio + adj, 0, 10000))."""
    cdef int64_t total = 0, a = 0, b, portion
    cdef Py_ssize_t j
    for j in range(start, start + n):
        b = upper_fen[j]
        if b < 0:
            b = INT64_MAX
        portion = min64(hi_fen, b) - max64(lo_fen, a)
        if portion > 0:
            total += yidi_mulr(portion, yidi_clamp_bp(ratio_bp[j] + adj_bp))
        if b == INT64_MAX:
            break
        a = b
    return total


cdef inline void pay_inpatient(const Policies *P, Py_ssize_t k, Py_ssize_t L, int64_t inscp_fen,
                               int64_t adj_bp, const Accumulators *acc,
                               Payment *out) noexcept nogil:
    """Inpatient (section 6): deductible by level, tiers by level up to the
    annual cap, then the second layer over the burden above its threshold."""
    cdef Py_ssize_t kl = k * LEVELS + L
    cdef Py_ssize_t ts = P.ip_tier_start[kl]
    cdef int64_t raw, lo, hi, t
    out.dedc_fen = min64(inscp_fen, P.ip_ded_fen[kl])
    raw = segments(0, inscp_fen - out.dedc_fen, P.tier_upper_fen, P.tier_ratio_bp,
                   ts, P.ip_tier_len[kl], adj_bp)
    out.hifp_fen = min64(raw, max64(0, P.annual_cap_fen[k] - acc.hifp_ip_fen))
    # Second layer: the in-scope burden above the threshold.
    out.burden_fen = inscp_fen - out.hifp_fen
    t = P.sl_threshold_fen[k]
    lo = max64(0, acc.burden2_fen - t)
    hi = max64(0, acc.burden2_fen + out.burden_fen - t)
    raw = segments(lo, hi, P.tier_upper_fen, P.tier_ratio_bp,
                   P.sl_tier_start[k], P.sl_tier_len[k], 0)
    out.second_fen = min64(raw, max64(0, P.sl_cap_fen[k] - acc.second_paid_fen))
    out.pool_bp = yidi_clamp_bp(P.tier_ratio_bp[ts] + adj_bp)


cdef inline void pay_outpatient(const Policies *P, Py_ssize_t k, Py_ssize_t L, int64_t inscp_fen,
                                int64_t adj_bp, const Accumulators *acc,
                                Payment *out) noexcept nogil:
    """General outpatient (section 6): the annual deductible left, then eff up to the annual cap."""
    cdef int32_t eff_bp = yidi_clamp_bp(P.op_ratio_bp[k * LEVELS + L] + adj_bp)
    out.dedc_fen = min64(inscp_fen, max64(0, P.op_ded_fen[k] - acc.ded_op_fen))
    out.hifp_fen = min64(yidi_mulr(inscp_fen - out.dedc_fen, eff_bp),
                         max64(0, P.op_cap_fen[k] - acc.hifp_op_fen))
    out.second_fen = 0
    out.burden_fen = 0
    out.pool_bp = eff_bp


cdef inline void pay_chronic(const Policies *P, Py_ssize_t cp, int64_t inscp_fen,
                             int32_t reduction_bp, int64_t used_fen,
                             Payment *out) noexcept nogil:
    """Chronic outpatient (section 6): no deductible and no retiree bonus (the
    reduction still applies), up to the disease's annual cap less `used_fen`."""
    cdef int32_t eff_bp = yidi_clamp_bp(P.cd_ratio_bp[cp] - reduction_bp)
    out.dedc_fen = 0
    out.hifp_fen = min64(yidi_mulr(inscp_fen, eff_bp), max64(0, P.cd_cap_fen[cp] - used_fen))
    out.second_fen = 0
    out.burden_fen = 0
    out.pool_bp = eff_bp


cdef inline int64_t pay_account(const Payment *pay, int64_t medfee_fen, int64_t balc_fen,
                                bint acct_ok, const Results *R, Py_ssize_t i) noexcept nogil:
    """The personal account and the cash (section 6): writes settlement i's
    outputs; returns acct_pay, what the account gives."""
    cdef int64_t fund = pay.hifp_fen + pay.second_fen
    cdef int64_t part = medfee_fen - fund
    cdef int64_t acct = max64(0, min64(balc_fen, part)) if acct_ok else 0
    R.status[i] = 0
    R.act_pay_dedc[i] = pay.dedc_fen
    R.hifp_pay[i] = pay.hifp_fen
    R.second_pay_fen[i] = pay.second_fen
    R.fund_pay_sumamt[i] = fund
    R.psn_part_amt[i] = part
    R.acct_pay[i] = acct
    R.psn_cash_pay[i] = part - acct
    R.balc_after_fen[i] = balc_fen - acct
    R.burden_fen[i] = pay.burden_fen
    R.pool_prop_bp[i] = pay.pool_bp
    return acct


cdef inline void refuse(const Results *R, Py_ssize_t i, int8_t status,
                        int64_t balc_fen) noexcept nogil:
    """A settlement that pays nothing: zeros, its status and the unchanged balance."""
    R.status[i] = status
    R.act_pay_dedc[i] = 0
    R.hifp_pay[i] = 0
    R.second_pay_fen[i] = 0
    R.fund_pay_sumamt[i] = 0
    R.psn_part_amt[i] = 0
    R.acct_pay[i] = 0
    R.psn_cash_pay[i] = 0
    R.balc_after_fen[i] = balc_fen
    R.burden_fen[i] = 0
    R.pool_prop_bp[i] = 0


cdef inline void commit_person(const Persons *S, Py_ssize_t p, int32_t year, bint roll, int8_t kind,
                               const Accumulators *acc, const Payment *pay, int64_t acct_fen,
                               Py_ssize_t slot, int64_t used_fen) noexcept nogil:
    """Keep a committed settlement in the person's state: the year roll-over,
    the accumulator of its setting, the chronic slot, the balance."""
    if roll:
        S.acc_year[p] = year
        S.hifp_ip_fen[p] = 0
        S.hifp_op_fen[p] = 0
        S.ded_op_fen[p] = 0
        S.burden2_fen[p] = 0
        S.second_paid_fen[p] = 0
    if kind == K_INPATIENT:
        S.hifp_ip_fen[p] = acc.hifp_ip_fen + pay.hifp_fen
        S.burden2_fen[p] = acc.burden2_fen + pay.burden_fen
        S.second_paid_fen[p] = acc.second_paid_fen + pay.second_fen
    elif kind == K_OUTPATIENT:
        S.ded_op_fen[p] = acc.ded_op_fen + pay.dedc_fen
        S.hifp_op_fen[p] = acc.hifp_op_fen + pay.hifp_fen
    else:
        S.cd_val_fen[slot] = used_fen + pay.hifp_fen
        S.cd_year[slot] = year
    S.balc_fen[p] -= acct_fen


cdef void _fund_loop(const Settlements *B, Py_ssize_t n, const Policies *P, const Persons *S,
                     const Results *R) noexcept nogil:
    """The loop of fund_batch, in batch order, over inputs _check accepted."""
    cdef Py_ssize_t i, p, k, L, slot
    cdef int32_t y, ay
    cdef int64_t bal, adj, acct, used = 0
    cdef int8_t kd
    cdef bint roll
    cdef Accumulators acc
    cdef Payment pay
    for i in range(n):
        p = B.psn[i]
        y = B.year[i]
        ay = S.acc_year[p]
        bal = S.balc_fen[p]
        if y < ay:
            refuse(R, i, ST_DATE, bal)
            continue
        if B.pre_status[i] != 0:
            refuse(R, i, B.pre_status[i], bal)
            continue
        # Bring the year forward: a later year starts every accumulator
        # (and every chronic value, through cd_year) again from 0.
        roll = y > ay
        if roll:
            acc.hifp_ip_fen = acc.hifp_op_fen = acc.ded_op_fen = 0
            acc.burden2_fen = acc.second_paid_fen = 0
        else:
            acc.hifp_ip_fen = S.hifp_ip_fen[p]
            acc.hifp_op_fen = S.hifp_op_fen[p]
            acc.ded_op_fen = S.ded_op_fen[p]
            acc.burden2_fen = S.burden2_fen[p]
            acc.second_paid_fen = S.second_paid_fen[p]
        kd = B.kind[i]
        k = B.pol[i]
        L = B.lv[i] - 1
        slot = -1
        if kd == K_INPATIENT:
            adj = (P.ip_bonus_bp[k] if B.retired310[i] else 0) - B.reduction_bp[i]
            pay_inpatient(P, k, L, B.inscp_fen[i], adj, &acc, &pay)
        elif kd == K_OUTPATIENT:
            adj = (P.op_bonus_bp[k] if B.retired310[i] else 0) - B.reduction_bp[i]
            pay_outpatient(P, k, L, B.inscp_fen[i], adj, &acc, &pay)
        else:
            slot = B.cd_slot[i]
            used = S.cd_val_fen[slot] if S.cd_year[slot] == y else 0
            pay_chronic(P, B.cd_pol[i], B.inscp_fen[i], B.reduction_bp[i], used, &pay)
        acct = pay_account(&pay, B.medfee_fen[i], bal, B.acct_ok[i] != 0, R, i)
        if B.commit[i]:
            commit_person(S, p, y, roll, kd, &acc, &pay, acct, slot, used)


cdef inline bint tiers_ok(int64_t start, int64_t n, Py_ssize_t n_tiers) noexcept nogil:
    return start >= 0 and n >= 1 and start + n <= n_tiers


cdef (Py_ssize_t, int) _check(
    const Settlements *B, Py_ssize_t n, const Policies *P, Py_ssize_t n_pol,
    Py_ssize_t n_tiers, Py_ssize_t n_dise, Py_ssize_t n_psn, Py_ssize_t n_slot,
) noexcept nogil:
    """Every index the main loop follows, checked first: (settlement, reason) or (-1, 0)."""
    cdef Py_ssize_t i, k, kl
    for i in range(n):
        if B.kind[i] < K_INPATIENT or B.kind[i] > K_CHRONIC:
            return i, BAD_KIND
        k = B.pol[i]
        if k < 0 or k >= n_pol:
            return i, BAD_POLICY
        if B.lv[i] < 1 or B.lv[i] > LEVELS:
            return i, BAD_LEVEL
        if B.psn[i] < 0 or B.psn[i] >= n_psn:
            return i, BAD_PERSON
        if B.inscp_fen[i] < 0 or B.medfee_fen[i] < B.inscp_fen[i]:
            return i, BAD_AMOUNT
        if B.reduction_bp[i] < 0 or B.reduction_bp[i] > 10_000:
            return i, BAD_REDUCTION
        if B.pre_status[i] < 0 or B.pre_status[i] > 2:
            return i, BAD_PRE_STATUS
        kl = k * LEVELS + B.lv[i] - 1
        if B.kind[i] == K_INPATIENT and not (
                tiers_ok(P.ip_tier_start[kl], P.ip_tier_len[kl], n_tiers)
                and tiers_ok(P.sl_tier_start[k], P.sl_tier_len[k], n_tiers)):
            return i, BAD_TIERS
        if B.kind[i] == K_CHRONIC and B.pre_status[i] == 0 and not (
                0 <= B.cd_slot[i] < n_slot and 0 <= B.cd_pol[i] < n_dise):
            return i, BAD_CHRONIC
    return -1, BAD_NONE
