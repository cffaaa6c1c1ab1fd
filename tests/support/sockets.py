"""What the kernel says of a port's sockets, read from /proc (no tool to install)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

LISTEN, ESTABLISHED = "0A", "01"  # the st column of /proc/net/tcp


def _local(port: int) -> Iterator[tuple[str, str]]:
    """(local address in hex, as /proc/net/tcp writes it: 0100007F is 127.0.0.1; state) of every socket
    whose local end is ``port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if int(hex_port, 16) == port:
                yield address, state


def listening_hosts(port: int) -> list[str]:
    """Local addresses listening on ``port``."""
    return [address for address, state in _local(port) if state == LISTEN]


def established(port: int) -> int:
    """Established connections whose local end is ``port``: a server's ends of its connections."""
    return sum(state == ESTABLISHED for _, state in _local(port))


def read_to_end(s: socket.socket, timeout_s: float) -> bytes:
    """Everything a server sends on ``s`` until it closes the connection; ``s`` is closed then."""
    s.settimeout(timeout_s)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out
