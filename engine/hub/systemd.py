"""Telling systemd how the hub is doing (`Type=notify` in deploy/yidi.service; README, "Running a hub in production").

sd_notify's protocol: one datagram of `KEY=value` lines to the unix socket named
by $NOTIFY_SOCKET (an abstract one when it starts with "@"). Without that
variable (not under systemd, or another Type=) nothing is sent. A failure to send
is not the hub's: it is logged once and the hub goes on.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("yidi.server")


def notify(*states: str) -> bool:
    """Send `states` ("READY=1", "STOPPING=1", "STATUS=...") to systemd; False when there is no one to tell."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall("\n".join(states).encode())
    except OSError as e:
        log.warning("NOTIFY_SOCKET %s: cannot tell systemd %s (%s)", address, ", ".join(states), e)
        return False
    return True
