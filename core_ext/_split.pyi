"""Line limits and split (SETTLEMENT.md sections 1 and 3). Private: use engine.kernels."""
import numpy as np
import numpy.typing as npt

PRIC_MICRO_MAX: int
CNT_MAX: int
AMT_FEN_MAX: int
MEMO_NONE: int
MEMO_NOT_IN_CATALOGUE: int
MEMO_CLASS_C: int
MEMO_LIMITED_USE: int
ERR_OK: int
ERR_LIMIT: int
ERR_AMOUNT_MISMATCH: int

def ext(pric_micro: int, cnt: int) -> int: ...
def mulr(amount_fen: int, ratio_bp: int) -> int: ...
def split_batch(
    starts: npt.NDArray[np.int64],
    outpatient: npt.NDArray[np.uint8],
    row: npt.NDArray[np.int32],
    pric_micro: npt.NDArray[np.int64],
    cnt: npt.NDArray[np.int64],
    amt_fen: npt.NDArray[np.int64],
    cat_lv: npt.NDArray[np.int8],
    cat_selfpay_bp: npt.NDArray[np.int32],
    cat_cap_micro: npt.NDArray[np.int64],
    cat_lmt: npt.NDArray[np.int8],
    memo: npt.NDArray[np.int8],
    fulamt: npt.NDArray[np.int64],
    overlmt: npt.NDArray[np.int64],
    presel: npt.NDArray[np.int64],
    inscp: npt.NDArray[np.int64],
    tot_fulamt: npt.NDArray[np.int64],
    tot_overlmt: npt.NDArray[np.int64],
    tot_presel: npt.NDArray[np.int64],
    tot_inscp: npt.NDArray[np.int64],
    tot_amt: npt.NDArray[np.int64],
    err: npt.NDArray[np.int8],
    err_line: npt.NDArray[np.int32],
) -> None: ...
