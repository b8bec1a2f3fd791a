"""The journal's bodies as LZ4 blocks, a batch per call, without the GIL. Private: use engine.store."""
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

BODY_BYTES_MAX: int

class Compression:
    def __init__(
        self, bodies: Sequence[bytes], first_seq: int | None = None, fmts: Sequence[str] | None = None,
        chunk: int = 64,
    ) -> None: ...
    def work(self) -> None: ...
    def blocks(self) -> list[bytes]: ...
    def rows(self) -> list[tuple[int, str, bytes, int]]: ...

def compress_bodies(
    bodies: Sequence[bytes], first_seq: int | None = None, fmts: Sequence[str] | None = None,
) -> list: ...
def crc32(data: bytes) -> int: ...

LINE_RECORD_BYTES: int

def pack_lines(
    row: npt.NDArray[np.int32], cat_lv: npt.NDArray[np.int8], cat_selfpay_bp: npt.NDArray[np.int32],
    cat_cap_micro: npt.NDArray[np.int64], memo: npt.NDArray[np.int8], fulamt: npt.NDArray[np.int64],
    overlmt: npt.NDArray[np.int64], presel: npt.NDArray[np.int64], inscp: npt.NDArray[np.int64],
) -> bytes: ...
