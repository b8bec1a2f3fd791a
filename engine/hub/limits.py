"""Every bound of the hub, by name, checked when the limits are made (STYLE.md: put a limit on everything).

docs/contract.md section 7, "Transports"; what each bound does under load is told in engine.hub.hub,
and what a misbehaving client gets in docs/server.md, "Bounds and what a misbehaving client gets".
"""
from __future__ import annotations

import dataclasses

from engine.contract.protocol import FRAME_BYTES_MAX, FRAME_HEADER_BYTES

# What one connection or HTTP body may hold of partial frames without ever being refused by the
# hub-wide budget (partial_frame_bytes_total_max): an ordinary request is a few KiB, and a read
# hands over at most 256 KiB at once. Not a field of Limits: it protects ordinary clients, and
# no operator has a reason to change it.
PARTIAL_FREE_BYTES = 256 * 1024

# Fields that are durations: (lowest allowed, excluded; highest allowed). Every other field is a
# positive integer.
_DURATIONS = {
    "batch_window_ms": (None, 1000.0),  # 0 allowed: no window
    "drain_timeout_s": (0.0, 3600.0),
    "queue_wait_ms_max": (0.0, 60_000.0),
    "idle_timeout_s": (0.0, 86_400.0),
    "frame_deadline_s": (0.0, 3600.0),
    "http_body_deadline_s": (0.0, 3600.0),
    "store_lease_ms": (None, 1000.0),  # 0 allowed: the lock taken and released with each batch
}


@dataclasses.dataclass(frozen=True)
class Limits:
    """Every bound of the server, by name."""

    batch_max: int = 256  # requests in one engine batch and one store commit
    batch_window_ms: float = 1.0  # how long the first request of a burst waits for company
    queue_max: int = 4096  # admitted requests waiting for a batch; beyond: E_BUSY
    # The oldest queued request's wait when a new one is read; beyond: the new one gets E_BUSY at
    # once (and its connection's requests still queued with it). 500 ms is above the slowest reply
    # of the sustained latency campaign (273 ms, a fold beside the commits) and well above the
    # saturation campaign's p99 (56 ms), so a hub at capacity, or one whose disk stalls for a
    # moment, admits everything; one at twice its capacity refuses instead of letting every
    # client's wait grow towards its timeout (seconds, for hospital systems).
    queue_wait_ms_max: float = 500.0
    inflight_per_connection_max: int = 256  # replies one TCP connection may owe; beyond: stop reading
    # What one TCP connection holds of the hub's memory before the socket takes it: the bodies of
    # its requests read and not yet computed, and the encoded replies not yet handed to the socket.
    # Beyond: stop reading it until it is below half. A hospital system pipelining 256 ordinary
    # settlements (about 5 KiB of reply each) holds about 1.3 MiB; the largest reply (10,000
    # lines, about 3 MiB) still passes, alone. 1,024 connections at the bound hold 4 GiB at most.
    reply_bytes_per_connection_max: int = 4 * 1024 * 1024
    frame_bytes_max: int = FRAME_BYTES_MAX  # TCP frame body; beyond: E_LIMIT and close
    # Bytes read and not yet cut into whole frames, summed over every TCP connection and every
    # HTTP body being read; a connection holding more than PARTIAL_FREE_BYTES of it when the sum
    # passes the bound is refused (E_BUSY, then closed). 16 whole frames of the largest size at
    # once; ordinary requests are a few KiB and never reach the bound.
    partial_frame_bytes_total_max: int = 16 * FRAME_BYTES_MAX
    http_body_bytes_max: int = FRAME_BYTES_MAX  # HTTP body; beyond: E_LIMIT (413)
    connections_max: int = 1024  # open TCP connections; beyond: E_BUSY and close
    # Open TCP connections from one client address; beyond: E_BUSY and close. A quarter of
    # connections_max: a hospital, or a province's platform behind one address, may hold many, but
    # it takes four addresses to fill the hub.
    tcp_connections_per_address_max: int = 256
    # A TCP connection with nothing owed and nothing read for this long is closed (a client whose
    # unread replies make no progress for this long too). Two minutes is above the idle timeouts of
    # common load balancers (60 s) and HTTP servers (75 s), which hospital connection pools already
    # reconnect after.
    idle_timeout_s: float = 120.0
    # Once the first byte of a frame is read, the rest must arrive within this; beyond: E_LIMIT and
    # close. The largest frame (16 MiB) over a 1 MB/s county line takes 17 s.
    frame_deadline_s: float = 30.0
    http_requests_max: int = 1024  # HTTP requests whose body is read, waiting for their reply; beyond: E_BUSY (503)
    # The whole body of an HTTP request must arrive within this once its headers came; beyond: 408
    # and the connection closes. The same 16 MiB at 1 MB/s as frame_deadline_s.
    http_body_deadline_s: float = 30.0
    write_buffer_bytes_max: int = 4 * 1024 * 1024  # unsent reply bytes per connection; beyond: stop reading
    commits_inflight_max: int = 2  # batches computed and waiting for their write (the next one overlaps)
    drain_timeout_s: float = 30.0  # at shutdown, how long to wait for clients to take their replies
    # A store on PostgreSQL (several nodes): how long this node may keep the store's lock over its
    # consecutive batches while more wait here; another node's batch waits that long at most. 0 (the
    # default): the lock is each batch's transaction's (docs/store.md, "The lease": not yet the default).
    store_lease_ms: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in _DURATIONS:
                low, high = _DURATIONS[f.name]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"{f.name} must be a number")
                if low is None and not 0 <= v <= high:
                    raise ValueError(f"{f.name} must be within 0..{high:g}")
                if low is not None and not low < v <= high:
                    raise ValueError(f"{f.name} must be within ({low:g}, {high:g}]")
            elif not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{f.name} must be a positive integer")
        if self.frame_bytes_max >= 1 << (8 * FRAME_HEADER_BYTES):
            raise ValueError(f"frame_bytes_max must fit the {FRAME_HEADER_BYTES}-byte length")
        if self.tcp_connections_per_address_max > self.connections_max:
            raise ValueError("tcp_connections_per_address_max must not exceed connections_max")
