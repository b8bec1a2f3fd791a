"""The journal's bodies as LZ4 blocks, a batch per call, without the GIL. Private: use engine.store."""
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from core_ext._split import CatalogueArrays, SplitResults

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

def pack_lines(split: SplitResults, catalogue: CatalogueArrays) -> bytes: ...
