"""Reading an operator's small text file (the keys file, the maintenance file) whole, or one clear line."""
from __future__ import annotations

import os
import stat


class TextFileError(Exception):
    """The file cannot be read as UTF-8 text: one line naming it and why."""


def read_text(path: str, bytes_max: int) -> tuple[str, os.stat_result]:
    """The whole text of a regular UTF-8 file of at most `bytes_max` bytes (a BOM dropped), and its stat."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise TextFileError(f"{path}: not a regular file")
        if st.st_size > bytes_max:
            raise TextFileError(f"{path}: larger than {bytes_max} bytes")
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise TextFileError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise TextFileError(f"{path}: {e.strerror or e}") from None
    return text.removeprefix("\ufeff"), st
