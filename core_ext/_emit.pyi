"""Reply rendering (SETTLEMENT.md section 7). Private: use engine.kernels."""
import numpy as np
import numpy.typing as npt

class RowEmitter:
    def __init__(
        self,
        sns: list[object],
        amt_fen: npt.NDArray[np.int64],
        cnt: npt.NDArray[np.int64],
        pric_micro: npt.NDArray[np.int64],
        row: npt.NDArray[np.int32],
        cat_lv: npt.NDArray[np.int8],
        cat_selfpay_bp: npt.NDArray[np.int32],
        cat_cap_micro: npt.NDArray[np.int64],
        memo: npt.NDArray[np.int8],
        fulamt: npt.NDArray[np.int64],
        overlmt: npt.NDArray[np.int64],
        presel: npt.NDArray[np.int64],
        inscp: npt.NDArray[np.int64],
    ) -> None: ...
    def emit(self, lo: int, hi: int, fmt: int) -> bytes: ...

def format_fen_rows(fen: npt.NDArray[np.int64]) -> list[tuple[str, ...]]: ...
def format_scaled(v: int, places: int) -> str: ...
def format_fen(v: int) -> str: ...
