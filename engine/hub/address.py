"""Listening and connecting addresses as an operator writes them: 'HOST:PORT'."""
from __future__ import annotations


def parse_address(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """'HOST:PORT' -> (host, port); port 0 means any free port, '[::1]:80' is IPv6, an empty
    host is `default_host` (a server listens on every interface, a client calls this host)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {text!r}: want HOST:PORT")
    return host.strip("[]") or default_host, int(port)
