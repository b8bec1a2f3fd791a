"""Fund payment (SETTLEMENT.md section 6). Private: use engine.kernels."""
import numpy as np
import numpy.typing as npt

KIND_INPATIENT: int
KIND_OUTPATIENT: int
KIND_CHRONIC: int
STATUS_OK: int
STATUS_FILING_REQUIRED: int
STATUS_NO_QUALIFICATION: int
STATUS_DATE: int

def fund_batch(
    kind: npt.NDArray[np.int8],
    pol: npt.NDArray[np.int32],
    lv: npt.NDArray[np.int8],
    psn: npt.NDArray[np.int32],
    year: npt.NDArray[np.int32],
    inscp: npt.NDArray[np.int64],
    medfee: npt.NDArray[np.int64],
    reduction_bp: npt.NDArray[np.int32],
    retired310: npt.NDArray[np.uint8],
    acct_ok: npt.NDArray[np.uint8],
    cd_slot: npt.NDArray[np.int32],
    cd_pol: npt.NDArray[np.int32],
    pre_status: npt.NDArray[np.int8],
    commit: npt.NDArray[np.uint8],
    annual_cap: npt.NDArray[np.int64],
    ip_ded: npt.NDArray[np.int64],
    ip_tier_start: npt.NDArray[np.int32],
    ip_tier_len: npt.NDArray[np.int32],
    ip_bonus: npt.NDArray[np.int32],
    op_ded: npt.NDArray[np.int64],
    op_ratio: npt.NDArray[np.int32],
    op_cap: npt.NDArray[np.int64],
    op_bonus: npt.NDArray[np.int32],
    sl_threshold: npt.NDArray[np.int64],
    sl_tier_start: npt.NDArray[np.int32],
    sl_tier_len: npt.NDArray[np.int32],
    sl_cap: npt.NDArray[np.int64],
    tier_upper: npt.NDArray[np.int64],
    tier_ratio: npt.NDArray[np.int32],
    cd_ratio: npt.NDArray[np.int32],
    cd_cap: npt.NDArray[np.int64],
    acc_year: npt.NDArray[np.int32],
    hifp_ip: npt.NDArray[np.int64],
    hifp_op: npt.NDArray[np.int64],
    ded_op: npt.NDArray[np.int64],
    burden2: npt.NDArray[np.int64],
    second_paid: npt.NDArray[np.int64],
    balc: npt.NDArray[np.int64],
    cd_val: npt.NDArray[np.int64],
    cd_year: npt.NDArray[np.int32],
    status: npt.NDArray[np.int8],
    act_pay_dedc: npt.NDArray[np.int64],
    hifp_pay: npt.NDArray[np.int64],
    second_pay: npt.NDArray[np.int64],
    fund_pay_sumamt: npt.NDArray[np.int64],
    psn_part_amt: npt.NDArray[np.int64],
    acct_pay: npt.NDArray[np.int64],
    psn_cash_pay: npt.NDArray[np.int64],
    balc_after: npt.NDArray[np.int64],
    burden: npt.NDArray[np.int64],
    pool_prop_bp: npt.NDArray[np.int32],
) -> None: ...
