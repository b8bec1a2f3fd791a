"""Catalogue index (docs/contract.md sections 2 and 3). Private: use engine.core.kernels."""
from typing import Any

import numpy as np
import numpy.typing as npt

class CatalogueIndex:
    """Hash index of a catalogue sorted by (prov, code, begndate)."""

    def __init__(
        self,
        prov: npt.NDArray[np.int16],
        offsets: npt.NDArray[np.int64],
        data: npt.NDArray[np.uint8],
        *,
        hash_bits: int = 64,
    ) -> None: ...
    @property
    def n_rows(self) -> int: ...
    @property
    def n_groups(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_probe(self) -> int: ...
    def group(self, prov: int, code: object) -> tuple[int, int]: ...
    def lookup(self, prov: int, code: object) -> int: ...
    def match(
        self,
        codes: list[Any],
        line_prov: npt.NDArray[np.int16],
        line_day: npt.NDArray[np.int32],
        begn: npt.NDArray[np.int32],
        end: npt.NDArray[np.int32],
        out_row: npt.NDArray[np.int32],
    ) -> None: ...
