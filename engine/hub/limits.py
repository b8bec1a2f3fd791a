"""Every bound of the hub, by name, checked when the limits are made (STYLE.md: put a limit on everything).

docs/contract.md section 7, "Transports"; what each bound does under load is told in engine.hub.hub.
"""
from __future__ import annotations

import dataclasses

from engine.contract.protocol import FRAME_BYTES_MAX, FRAME_HEADER_BYTES


@dataclasses.dataclass(frozen=True)
class Limits:
    """Every bound of the server, by name."""

    batch_max: int = 256  # requests in one engine batch and one store commit
    batch_window_ms: float = 1.0  # how long the first request of a burst waits for company
    queue_max: int = 4096  # admitted requests waiting for a batch; beyond: E_BUSY
    inflight_per_connection_max: int = 256  # replies one TCP connection may owe; beyond: stop reading
    frame_bytes_max: int = FRAME_BYTES_MAX  # TCP frame body; beyond: E_LIMIT and close
    http_body_bytes_max: int = FRAME_BYTES_MAX  # HTTP body; beyond: E_LIMIT (413)
    connections_max: int = 1024  # open TCP connections; beyond: E_BUSY and close
    http_requests_max: int = 1024  # HTTP requests being read or waiting for their reply; beyond: E_BUSY (503)
    write_buffer_bytes_max: int = 4 * 1024 * 1024  # unsent reply bytes per connection; beyond: stop reading
    commits_inflight_max: int = 2  # batches computed and waiting for their write (the next one overlaps)
    drain_timeout_s: float = 30.0  # at shutdown, how long to wait for clients to take their replies

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "batch_window_ms":
                if not 0 <= v <= 1000:
                    raise ValueError("batch_window_ms must be within 0..1000")
            elif f.name == "drain_timeout_s":
                if not 0 < v <= 3600:
                    raise ValueError("drain_timeout_s must be within (0, 3600]")
            elif not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{f.name} must be a positive integer")
        if self.frame_bytes_max >= 1 << (8 * FRAME_HEADER_BYTES):
            raise ValueError(f"frame_bytes_max must fit the {FRAME_HEADER_BYTES}-byte length")
