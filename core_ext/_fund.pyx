"""Fund payment of a batch of settlements, in order, against the persons' state.

SETTLEMENT.md section 6 (with eff of section 5). Private: use engine.kernels.

Settlements are processed one at a time in batch order, so a person's later
settlement sees the accumulators left by the earlier committed ones: the
outcome equals running them one by one (section 7). A settlement with commit 0
(pre-settlement) computes from the current state and changes nothing, its year
roll-over included.
"""
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
    BAD_AMOUNT: "needs 0 <= inscp <= medfee",
    BAD_PRE_STATUS: "pre_status not in 0..2",
    BAD_CHRONIC: "chronic settlement without a valid cd_slot and cd_pol",
    BAD_TIERS: "policy tiers outside tier_upper/tier_ratio, or empty",
    BAD_REDUCTION: "reduction_bp not in 0..10000",
}


cdef inline int64_t min64(int64_t a, int64_t b) noexcept nogil:
    return a if a < b else b


cdef inline int64_t max64(int64_t a, int64_t b) noexcept nogil:
    return a if a > b else b


cdef inline int64_t segments(int64_t lo, int64_t hi, const int64_t *upper,
                             const int32_t *ratio, Py_ssize_t start, Py_ssize_t n,
                             int64_t adj) noexcept nogil:
    """segments(lo, hi, tiers, adj) of section 6: the tiers cut [0, inf) at
    their uppers (-1 = unbounded); each portion of [lo, hi) in a tier pays
    mulr(portion, clamp(ratio + adj, 0, 10000))."""
    cdef int64_t total = 0, a = 0, b, portion
    cdef Py_ssize_t j
    for j in range(start, start + n):
        b = upper[j]
        if b < 0:
            b = INT64_MAX
        portion = min64(hi, b) - max64(lo, a)
        if portion > 0:
            total += yidi_mulr(portion, yidi_clamp_bp(ratio[j] + adj))
        if b == INT64_MAX:
            break
        a = b
    return total


cdef inline bint tiers_ok(int64_t start, int64_t n, Py_ssize_t n_tiers) noexcept nogil:
    return start >= 0 and n >= 1 and start + n <= n_tiers


def fund_batch(
    # per settlement (n)
    const int8_t[::1] kind not None,
    const int32_t[::1] pol not None,
    const int8_t[::1] lv not None,
    const int32_t[::1] psn not None,
    const int32_t[::1] year not None,
    const int64_t[::1] inscp not None,
    const int64_t[::1] medfee not None,
    const int32_t[::1] reduction_bp not None,
    const uint8_t[::1] retired310 not None,
    const uint8_t[::1] acct_ok not None,
    const int32_t[::1] cd_slot not None,
    const int32_t[::1] cd_pol not None,
    const int8_t[::1] pre_status not None,
    const uint8_t[::1] commit not None,
    # policies (P), tiers (T), chronic diseases (C)
    const int64_t[::1] annual_cap not None,
    const int64_t[:, ::1] ip_ded not None,
    const int32_t[:, ::1] ip_tier_start not None,
    const int32_t[:, ::1] ip_tier_len not None,
    const int32_t[::1] ip_bonus not None,
    const int64_t[::1] op_ded not None,
    const int32_t[:, ::1] op_ratio not None,
    const int64_t[::1] op_cap not None,
    const int32_t[::1] op_bonus not None,
    const int64_t[::1] sl_threshold not None,
    const int32_t[::1] sl_tier_start not None,
    const int32_t[::1] sl_tier_len not None,
    const int64_t[::1] sl_cap not None,
    const int64_t[::1] tier_upper not None,
    const int32_t[::1] tier_ratio not None,
    const int32_t[::1] cd_ratio not None,
    const int64_t[::1] cd_cap not None,
    # state: persons (N), chronic slots (S); changed only by commit settlements
    int32_t[::1] acc_year not None,
    int64_t[::1] hifp_ip not None,
    int64_t[::1] hifp_op not None,
    int64_t[::1] ded_op not None,
    int64_t[::1] burden2 not None,
    int64_t[::1] second_paid not None,
    int64_t[::1] balc not None,
    int64_t[::1] cd_val not None,
    int32_t[::1] cd_year not None,
    # outputs (n)
    int8_t[::1] status not None,
    int64_t[::1] act_pay_dedc not None,
    int64_t[::1] hifp_pay not None,
    int64_t[::1] second_pay not None,
    int64_t[::1] fund_pay_sumamt not None,
    int64_t[::1] psn_part_amt not None,
    int64_t[::1] acct_pay not None,
    int64_t[::1] psn_cash_pay not None,
    int64_t[::1] balc_after not None,
    int64_t[::1] burden not None,
    int32_t[::1] pool_prop_bp not None,
) -> None:
    """Compute the fund payment of each settlement and commit it to the state (SETTLEMENT.md section 6).

    status: 0 ok; 3 E_DATE when year < the person's acc_year at that point;
    else pre_status (1 E_FILING_REQUIRED, 2 E_NO_QUALIFICATION) when nonzero.
    A settlement with status != 0 changes nothing and gets zeros, except
    balc_after = the unchanged balance. Inputs that break the shapes or
    indices raise ValueError before any state changes.
    """
    cdef Py_ssize_t n = kind.shape[0]
    cdef Py_ssize_t n_pol = annual_cap.shape[0]
    cdef Py_ssize_t n_psn = acc_year.shape[0]
    cdef Py_ssize_t n_slot = cd_val.shape[0]
    per_settlement = {
        "pol": pol, "lv": lv, "psn": psn, "year": year, "inscp": inscp, "medfee": medfee,
        "reduction_bp": reduction_bp, "retired310": retired310, "acct_ok": acct_ok,
        "cd_slot": cd_slot, "cd_pol": cd_pol, "pre_status": pre_status, "commit": commit,
        "status": status, "act_pay_dedc": act_pay_dedc, "hifp_pay": hifp_pay,
        "second_pay": second_pay, "fund_pay_sumamt": fund_pay_sumamt,
        "psn_part_amt": psn_part_amt, "acct_pay": acct_pay, "psn_cash_pay": psn_cash_pay,
        "balc_after": balc_after, "burden": burden, "pool_prop_bp": pool_prop_bp,
    }
    per_policy = {
        "ip_ded": ip_ded, "ip_tier_start": ip_tier_start, "ip_tier_len": ip_tier_len,
        "ip_bonus": ip_bonus, "op_ded": op_ded, "op_ratio": op_ratio, "op_cap": op_cap,
        "op_bonus": op_bonus, "sl_threshold": sl_threshold, "sl_tier_start": sl_tier_start,
        "sl_tier_len": sl_tier_len, "sl_cap": sl_cap,
    }
    per_person = {"hifp_ip": hifp_ip, "hifp_op": hifp_op, "ded_op": ded_op,
                  "burden2": burden2, "second_paid": second_paid, "balc": balc}
    for group, want, arrays in (("settlements", n, per_settlement),
                                ("policies", n_pol, per_policy),
                                ("persons", n_psn, per_person)):
        for name, arr in arrays.items():
            if arr.shape[0] != want:
                raise ValueError(f"{name} has {arr.shape[0]} rows, expected {want} ({group})")
    for name, arr in (("ip_ded", ip_ded), ("ip_tier_start", ip_tier_start),
                      ("ip_tier_len", ip_tier_len), ("op_ratio", op_ratio)):
        if arr.shape[1] != LEVELS:
            raise ValueError(f"{name} must have {LEVELS} columns (hospital levels)")
    if tier_ratio.shape[0] != tier_upper.shape[0]:
        raise ValueError("tier_upper and tier_ratio differ in length")
    if cd_cap.shape[0] != cd_ratio.shape[0]:
        raise ValueError("cd_ratio and cd_cap differ in length")
    if cd_year.shape[0] != n_slot:
        raise ValueError("cd_val and cd_year differ in length")

    cdef Py_ssize_t bad_at = -1
    cdef int reason = BAD_NONE
    with nogil:
        bad_at, reason = _check(kind, pol, lv, psn, inscp, medfee, reduction_bp, cd_slot,
                                cd_pol, pre_status, ip_tier_start, ip_tier_len,
                                sl_tier_start, sl_tier_len, tier_upper.shape[0],
                                cd_ratio.shape[0], n_pol, n_psn, n_slot)
    if bad_at >= 0:
        raise ValueError(f"settlement {bad_at}: {BAD_TEXT[reason]}")

    cdef const int64_t *upper = &tier_upper[0] if tier_upper.shape[0] > 0 else NULL
    cdef const int32_t *ratio = &tier_ratio[0] if tier_ratio.shape[0] > 0 else NULL
    cdef Py_ssize_t i, p, k, L, ts, slot = -1, cp
    cdef int32_t y, ay
    cdef int64_t I, bal, adj, ded, R, raw, hifp, second, brd, t, lo, hi, dedc
    cdef int64_t c_hip, c_hop, c_ded, c_b2, c_sp, c_cd = 0, fund, part, acct
    cdef int32_t e, pool
    cdef int8_t kd
    cdef bint roll
    with nogil:
        for i in range(n):
            p = psn[i]
            k = pol[i]
            y = year[i]
            ay = acc_year[p]
            bal = balc[p]
            act_pay_dedc[i] = 0
            hifp_pay[i] = 0
            second_pay[i] = 0
            fund_pay_sumamt[i] = 0
            psn_part_amt[i] = 0
            acct_pay[i] = 0
            psn_cash_pay[i] = 0
            balc_after[i] = bal
            burden[i] = 0
            pool_prop_bp[i] = 0
            if y < ay:
                status[i] = ST_DATE
                continue
            if pre_status[i] != 0:
                status[i] = pre_status[i]
                continue
            status[i] = 0

            # Bring the year forward: a later year starts every accumulator
            # (and every chronic value, through cd_year) again from 0.
            roll = y > ay
            if roll:
                c_hip = c_hop = c_ded = c_b2 = c_sp = 0
            else:
                c_hip = hifp_ip[p]
                c_hop = hifp_op[p]
                c_ded = ded_op[p]
                c_b2 = burden2[p]
                c_sp = second_paid[p]

            I = inscp[i]
            kd = kind[i]
            L = lv[i] - 1
            dedc = 0
            second = 0
            brd = 0
            if kd == K_INPATIENT:
                adj = (ip_bonus[k] if retired310[i] else 0) - reduction_bp[i]
                ded = ip_ded[k, L]
                dedc = min64(I, ded)
                R = I - dedc
                ts = ip_tier_start[k, L]
                raw = segments(0, R, upper, ratio, ts, ip_tier_len[k, L], adj)
                hifp = min64(raw, max64(0, annual_cap[k] - c_hip))
                # Second layer: the in-scope burden above the threshold.
                brd = I - hifp
                t = sl_threshold[k]
                lo = max64(0, c_b2 - t)
                hi = max64(0, c_b2 + brd - t)
                raw = segments(lo, hi, upper, ratio, sl_tier_start[k], sl_tier_len[k], 0)
                second = min64(raw, max64(0, sl_cap[k] - c_sp))
                pool = yidi_clamp_bp(ratio[ts] + adj)
            elif kd == K_OUTPATIENT:
                e = yidi_clamp_bp(op_ratio[k, L] + (op_bonus[k] if retired310[i] else 0)
                                  - reduction_bp[i])
                dedc = min64(I, max64(0, op_ded[k] - c_ded))
                R = I - dedc
                hifp = min64(yidi_mulr(R, e), max64(0, op_cap[k] - c_hop))
                pool = e
            else:
                # Chronic: no retiree bonus, the reduction still applies.
                slot = cd_slot[i]
                cp = cd_pol[i]
                c_cd = cd_val[slot] if cd_year[slot] == y else 0
                e = yidi_clamp_bp(cd_ratio[cp] - reduction_bp[i])
                hifp = min64(yidi_mulr(I, e), max64(0, cd_cap[cp] - c_cd))
                pool = e

            fund = hifp + second
            part = medfee[i] - fund
            acct = 0
            if acct_ok[i]:
                acct = max64(0, min64(bal, part))
            act_pay_dedc[i] = dedc
            hifp_pay[i] = hifp
            second_pay[i] = second
            fund_pay_sumamt[i] = fund
            psn_part_amt[i] = part
            acct_pay[i] = acct
            psn_cash_pay[i] = part - acct
            balc_after[i] = bal - acct
            burden[i] = brd
            pool_prop_bp[i] = pool

            if commit[i]:
                if roll:
                    acc_year[p] = y
                    hifp_ip[p] = 0
                    hifp_op[p] = 0
                    ded_op[p] = 0
                    burden2[p] = 0
                    second_paid[p] = 0
                if kd == K_INPATIENT:
                    hifp_ip[p] = c_hip + hifp
                    burden2[p] = c_b2 + brd
                    second_paid[p] = c_sp + second
                elif kd == K_OUTPATIENT:
                    ded_op[p] = c_ded + dedc
                    hifp_op[p] = c_hop + hifp
                else:
                    cd_val[slot] = c_cd + hifp
                    cd_year[slot] = y
                balc[p] = bal - acct


cdef (Py_ssize_t, int) _check(
    const int8_t[::1] kind, const int32_t[::1] pol, const int8_t[::1] lv,
    const int32_t[::1] psn, const int64_t[::1] inscp, const int64_t[::1] medfee,
    const int32_t[::1] reduction_bp, const int32_t[::1] cd_slot, const int32_t[::1] cd_pol,
    const int8_t[::1] pre_status, const int32_t[:, ::1] ip_tier_start,
    const int32_t[:, ::1] ip_tier_len, const int32_t[::1] sl_tier_start,
    const int32_t[::1] sl_tier_len, Py_ssize_t n_tiers, Py_ssize_t n_dise,
    Py_ssize_t n_pol, Py_ssize_t n_psn, Py_ssize_t n_slot,
) noexcept nogil:
    """Every index the main loop follows, checked first: (settlement, reason) or (-1, 0)."""
    cdef Py_ssize_t i, k, L
    for i in range(kind.shape[0]):
        if kind[i] < K_INPATIENT or kind[i] > K_CHRONIC:
            return i, BAD_KIND
        k = pol[i]
        if k < 0 or k >= n_pol:
            return i, BAD_POLICY
        if lv[i] < 1 or lv[i] > LEVELS:
            return i, BAD_LEVEL
        if psn[i] < 0 or psn[i] >= n_psn:
            return i, BAD_PERSON
        if inscp[i] < 0 or medfee[i] < inscp[i]:
            return i, BAD_AMOUNT
        if reduction_bp[i] < 0 or reduction_bp[i] > 10_000:
            return i, BAD_REDUCTION
        if pre_status[i] < 0 or pre_status[i] > 2:
            return i, BAD_PRE_STATUS
        L = lv[i] - 1
        if kind[i] == K_INPATIENT and not (
                tiers_ok(ip_tier_start[k, L], ip_tier_len[k, L], n_tiers)
                and tiers_ok(sl_tier_start[k], sl_tier_len[k], n_tiers)):
            return i, BAD_TIERS
        if kind[i] == K_CHRONIC and pre_status[i] == 0 and not (
                0 <= cd_slot[i] < n_slot and 0 <= cd_pol[i] < n_dise):
            return i, BAD_CHRONIC
    return -1, BAD_NONE
