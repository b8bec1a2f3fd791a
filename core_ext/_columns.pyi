"""World columns validated and converted in one pass (docs/contract.md section 2). Private: use engine.world."""
import numpy as np
import numpy.typing as npt

def parse_decimal_column(
    offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8], valid: npt.NDArray[np.uint8],
    places: int, int_digits_max: int, optional: bool, out: npt.NDArray[np.int64],
) -> int: ...
def parse_date_column(
    offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8], valid: npt.NDArray[np.uint8],
    optional: bool, absent: int, out: npt.NDArray[np.int32],
) -> int: ...
def check_token_column(
    offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8], valid: npt.NDArray[np.uint8], len_max: int,
) -> int: ...
def catalogue_order(
    prov: npt.NDArray[np.int16], offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8],
    begn: npt.NDArray[np.int32],
) -> int: ...
def catalogue_overlap(
    prov: npt.NDArray[np.int16], offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8],
    begn: npt.NDArray[np.int32], end: npt.NDArray[np.int32],
) -> int: ...
