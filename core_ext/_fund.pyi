"""Fund payment (docs/contract.md section 6). Private: use engine.core.kernels."""
import numpy as np
import numpy.typing as npt

KIND_INPATIENT: int
KIND_OUTPATIENT: int
KIND_CHRONIC: int
STATUS_OK: int
STATUS_FILING_REQUIRED: int
STATUS_NO_QUALIFICATION: int
STATUS_DATE: int

class PolicyArrays:
    annual_cap_fen: npt.NDArray[np.int64]  # (P,)
    ip_ded_fen: npt.NDArray[np.int64]  # (P, 3)
    ip_tier_start: npt.NDArray[np.int32]  # (P, 3)
    ip_tier_len: npt.NDArray[np.int32]  # (P, 3)
    ip_bonus_bp: npt.NDArray[np.int32]
    op_ded_fen: npt.NDArray[np.int64]
    op_ratio_bp: npt.NDArray[np.int32]  # (P, 3)
    op_cap_fen: npt.NDArray[np.int64]
    op_bonus_bp: npt.NDArray[np.int32]
    sl_threshold_fen: npt.NDArray[np.int64]
    sl_tier_start: npt.NDArray[np.int32]
    sl_tier_len: npt.NDArray[np.int32]
    sl_cap_fen: npt.NDArray[np.int64]
    tier_upper_fen: npt.NDArray[np.int64]  # (T,), -1 unbounded
    tier_ratio_bp: npt.NDArray[np.int32]  # (T,)
    cd_ratio_bp: npt.NDArray[np.int32]  # (C,)
    cd_cap_fen: npt.NDArray[np.int64]  # (C,)
    n_policies: int
    n_tiers: int
    n_diseases: int
    def __init__(
        self,
        *,
        annual_cap_fen: npt.NDArray[np.int64],
        ip_ded_fen: npt.NDArray[np.int64],
        ip_tier_start: npt.NDArray[np.int32],
        ip_tier_len: npt.NDArray[np.int32],
        ip_bonus_bp: npt.NDArray[np.int32],
        op_ded_fen: npt.NDArray[np.int64],
        op_ratio_bp: npt.NDArray[np.int32],
        op_cap_fen: npt.NDArray[np.int64],
        op_bonus_bp: npt.NDArray[np.int32],
        sl_threshold_fen: npt.NDArray[np.int64],
        sl_tier_start: npt.NDArray[np.int32],
        sl_tier_len: npt.NDArray[np.int32],
        sl_cap_fen: npt.NDArray[np.int64],
        tier_upper_fen: npt.NDArray[np.int64],
        tier_ratio_bp: npt.NDArray[np.int32],
        cd_ratio_bp: npt.NDArray[np.int32],
        cd_cap_fen: npt.NDArray[np.int64],
    ) -> None: ...

class PersonArrays:
    acc_year: npt.NDArray[np.int32]  # (N,)
    hifp_ip_fen: npt.NDArray[np.int64]
    hifp_op_fen: npt.NDArray[np.int64]
    ded_op_fen: npt.NDArray[np.int64]
    burden2_fen: npt.NDArray[np.int64]
    second_paid_fen: npt.NDArray[np.int64]
    balc_fen: npt.NDArray[np.int64]
    cd_val_fen: npt.NDArray[np.int64]  # (S,)
    cd_year: npt.NDArray[np.int32]  # (S,)
    n_persons: int
    n_slots: int
    def __init__(
        self,
        *,
        acc_year: npt.NDArray[np.int32],
        hifp_ip_fen: npt.NDArray[np.int64],
        hifp_op_fen: npt.NDArray[np.int64],
        ded_op_fen: npt.NDArray[np.int64],
        burden2_fen: npt.NDArray[np.int64],
        second_paid_fen: npt.NDArray[np.int64],
        balc_fen: npt.NDArray[np.int64],
        cd_val_fen: npt.NDArray[np.int64],
        cd_year: npt.NDArray[np.int32],
    ) -> None: ...

class SettlementBatch:
    kind: npt.NDArray[np.int8]
    pol: npt.NDArray[np.int32]
    lv: npt.NDArray[np.int8]
    psn: npt.NDArray[np.int32]
    year: npt.NDArray[np.int32]
    inscp_fen: npt.NDArray[np.int64]
    medfee_fen: npt.NDArray[np.int64]
    reduction_bp: npt.NDArray[np.int32]
    retired310: npt.NDArray[np.uint8]
    acct_ok: npt.NDArray[np.uint8]
    cd_slot: npt.NDArray[np.int32]
    cd_pol: npt.NDArray[np.int32]
    pre_status: npt.NDArray[np.int8]
    commit: npt.NDArray[np.uint8]
    n: int
    def __init__(
        self,
        *,
        kind: npt.NDArray[np.int8],
        pol: npt.NDArray[np.int32],
        lv: npt.NDArray[np.int8],
        psn: npt.NDArray[np.int32],
        year: npt.NDArray[np.int32],
        inscp_fen: npt.NDArray[np.int64],
        medfee_fen: npt.NDArray[np.int64],
        reduction_bp: npt.NDArray[np.int32],
        retired310: npt.NDArray[np.uint8],
        acct_ok: npt.NDArray[np.uint8],
        cd_slot: npt.NDArray[np.int32],
        cd_pol: npt.NDArray[np.int32],
        pre_status: npt.NDArray[np.int8],
        commit: npt.NDArray[np.uint8],
    ) -> None: ...

class FundResults:
    status: npt.NDArray[np.int8]
    act_pay_dedc: npt.NDArray[np.int64]
    hifp_pay: npt.NDArray[np.int64]
    second_pay_fen: npt.NDArray[np.int64]
    fund_pay_sumamt: npt.NDArray[np.int64]
    psn_part_amt: npt.NDArray[np.int64]
    acct_pay: npt.NDArray[np.int64]
    psn_cash_pay: npt.NDArray[np.int64]
    balc_after_fen: npt.NDArray[np.int64]
    burden_fen: npt.NDArray[np.int64]
    pool_prop_bp: npt.NDArray[np.int32]
    n: int
    def __init__(self, n: int) -> None: ...

def fund_batch(
    batch: SettlementBatch, policies: PolicyArrays, persons: PersonArrays, results: FundResults
) -> None: ...
