"""CPU time and memory of a process, read from /proc (Linux), so any child can be measured from outside.

Figures are per process: a worker's chDB threads count (they run inside it), the broker's CPU does not.
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds the processes have used so far (all their threads)."""
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15 of stat)
    return total


def _status_kb(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_bytes(pid: int) -> int:
    """High-water mark of resident memory (VmHWM) since the process started."""
    return _status_kb(pid, "VmHWM") * 1024


def rss_bytes(pid: int) -> int:
    return _status_kb(pid, "VmRSS") * 1024


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def self_peak_rss_bytes() -> int:
    """VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's at fork, VmHWM from its exec."""
    return peak_rss_bytes(os.getpid())


def available_bytes() -> int:
    """The machine's MemAvailable: what it can still give without reclaiming memory in use."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0
