"""The journal's bodies as LZ4 blocks, a batch per call, without the GIL. Private: use engine.store."""
from collections.abc import Sequence

BODY_BYTES_MAX: int

def compress_bodies(bodies: Sequence[bytes]) -> list[bytes]: ...
