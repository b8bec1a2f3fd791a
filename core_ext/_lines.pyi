"""Fee lines to arrays (docs/contract.md sections 1 and 3). Private: use engine.core.kernels."""
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
class FeeBuffer:
    codes: list[Any]
    sns: list[Any]
    n: int
    n_bad: int
    def __init__(self, capacity: int = ...) -> None: ...
    def parse(self, raw: Any, json: bool) -> int: ...
    def gather(self, lines: list[Any]) -> int: ...
    def extend(self, codes: list[Any], sns: list[Any], amt: Any, cnt: Any, pric: Any, day: Any) -> None: ...
    def truncate(self, n: int) -> None: ...
    def arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
                              npt.NDArray[np.int32], npt.NDArray[np.uint8]]: ...

def parse_scaled(value: object, places: int) -> int: ...
def parse_scaled_str(s: str, places: int) -> int: ...
def parse_time_day(s: str) -> int: ...
