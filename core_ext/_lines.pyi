"""Fee lines to arrays (SETTLEMENT.md sections 1 and 3). Private: use engine.kernels."""
from typing import Any

import numpy as np
import numpy.typing as npt

FEN_PLACES: int
CNT_PLACES: int
MICRO_PLACES: int

def gather_lines(
    lines: list[Any],
    out_codes: list[Any],
    out_sns: list[Any],
    amt_fen: npt.NDArray[np.int64],
    cnt: npt.NDArray[np.int64],
    pric_micro: npt.NDArray[np.int64],
    day: npt.NDArray[np.int32],
    bad: npt.NDArray[np.uint8],
) -> int: ...
def parse_scaled(value: object, places: int) -> int: ...
def parse_scaled_str(s: str, places: int) -> int: ...
def parse_time_day(s: str) -> int: ...
