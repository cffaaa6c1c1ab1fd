"""What the kernel says is listening, read from /proc (no tool to install)."""

from __future__ import annotations

from pathlib import Path


def listening_hosts(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp writes them: 0100007F is 127.0.0.1) listening on ``port``."""
    hosts = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                hosts.append(address)
    return hosts
