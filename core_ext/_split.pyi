"""Line limits and split (docs/contract.md sections 1 and 3). Private: use engine.core.kernels."""
import numpy as np
import numpy.typing as npt

PRIC_MICRO_MAX: int
CNT_MAX_TEN_THOUSANDTHS: int
AMT_FEN_MAX: int
MEMO_NONE: int
MEMO_NOT_IN_CATALOGUE: int
MEMO_CLASS_C: int
MEMO_LIMITED_USE: int
ERR_OK: int
ERR_LIMIT: int
ERR_AMOUNT_MISMATCH: int

def ext(pric_micro: int, cnt_ten_thousandths: int) -> int: ...
def mulr(amount_fen: int, ratio_bp: int) -> int: ...

class CatalogueArrays:
    lv: npt.NDArray[np.int8]
    selfpay_bp: npt.NDArray[np.int32]
    cap_micro: npt.NDArray[np.int64]
    lmt: npt.NDArray[np.int8]
    n: int
    def __init__(
        self,
        *,
        lv: npt.NDArray[np.int8],
        selfpay_bp: npt.NDArray[np.int32],
        cap_micro: npt.NDArray[np.int64],
        lmt: npt.NDArray[np.int8],
    ) -> None: ...

class LineBatch:
    starts: npt.NDArray[np.int64]  # (n_settlements + 1,)
    outpatient: npt.NDArray[np.uint8]  # (n_settlements,)
    row: npt.NDArray[np.int32]  # (n_lines,)
    pric_micro: npt.NDArray[np.int64]
    cnt_ten_thousandths: npt.NDArray[np.int64]
    amt_fen: npt.NDArray[np.int64]
    n_settlements: int
    n_lines: int
    def __init__(
        self,
        *,
        starts: npt.NDArray[np.int64],
        outpatient: npt.NDArray[np.uint8],
        row: npt.NDArray[np.int32],
        pric_micro: npt.NDArray[np.int64],
        cnt_ten_thousandths: npt.NDArray[np.int64],
        amt_fen: npt.NDArray[np.int64],
    ) -> None: ...

class SplitResults:
    lines: LineBatch
    memo: npt.NDArray[np.int8]  # per line
    fulamt_fen: npt.NDArray[np.int64]
    overlmt_fen: npt.NDArray[np.int64]
    presel_fen: npt.NDArray[np.int64]
    inscp_fen: npt.NDArray[np.int64]
    tot_fulamt_fen: npt.NDArray[np.int64]  # per settlement
    tot_overlmt_fen: npt.NDArray[np.int64]
    tot_presel_fen: npt.NDArray[np.int64]
    tot_inscp_fen: npt.NDArray[np.int64]
    tot_amt_fen: npt.NDArray[np.int64]
    err: npt.NDArray[np.int8]  # 0 ok, 1 E_LIMIT, 2 E_AMOUNT_MISMATCH
    err_line: npt.NDArray[np.int32]
    n_lines: int
    n_settlements: int
    def __init__(self, lines: LineBatch) -> None: ...

def split_batch(lines: LineBatch, catalogue: CatalogueArrays, results: SplitResults) -> None: ...
