"""The worker's allocator rule (runtime/heap.py): with the mmap threshold fixed, large blocks freed leave
resident memory; with glibc's sliding threshold they stay, pinned by what was allocated after them.

Each side runs in a process of its own (mallopt is process-wide), doing what the worker does between two
flushes: a large fetch answer freed, then a hundred 1 MiB blocks (more answers, a flush's large lists)
while long-lived state of ~2 KB objects is allocated around them, then the blocks freed. The figure is
the resident memory (VmRSS) still held after that.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from streamproc.runtime import heap

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

if sys.argv[1] == "fixed":
    assert heap.fix_mmap_threshold(262_144)
answer = bytearray(8 << 20)
del answer
before = rss()
blocks, state = [], []
for _ in range(100):
    blocks.append(bytearray(1 << 20))
    state.append(bytes(2000))
del blocks
print((rss() - before) / 2**20)
"""


def held_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, check=True)
    return float(out.stdout.strip())


def test_a_fixed_mmap_threshold_gives_freed_large_blocks_back_and_the_sliding_one_does_not() -> None:
    sliding, fixed = held_mb("default"), held_mb("fixed")
    assert fixed < 10, f"{fixed:.1f} MB still resident after the blocks were freed"
    assert sliding - fixed > 50, (sliding, fixed)  # what the setting is for: ~100 MB kept without it
