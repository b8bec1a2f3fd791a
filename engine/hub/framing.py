"""The framed TCP wire (docs/contract.md section 7): a 4-byte big-endian body length, then the body.

Shared by the server (engine.hub.tcp) and the clients (engine.hub.client), so both
frame the same way.
"""
from __future__ import annotations

from engine.contract.protocol import FRAME_HEADER_BYTES


def frame(body: bytes) -> bytes:
    """One frame around an encoded body."""
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body

