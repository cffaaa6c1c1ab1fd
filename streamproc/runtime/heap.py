"""The heap of a long-running consumer: the garbage collector's thresholds and glibc's large-block rule.

Both are set once, when the worker has loaded everything it keeps (``settle``), and both are about the
same workload: millions of short-lived objects per second beside a window state that lives for minutes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

GC_THRESHOLD = (50_000, 20, 20)  # young collections every 50,000 net allocations; older ones rarer
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def settle(mmap_threshold_bytes: int) -> None:
    """Set the garbage collector and the allocator for the rest of the process (see ``settle_gc`` and
    ``fix_mmap_threshold``)."""
    settle_gc()
    if mmap_threshold_bytes > 0:
        fix_mmap_threshold(mmap_threshold_bytes)


def settle_gc() -> None:
    """What is loaded by now (Faust, aiokafka, the store's engine, the app and its tables) lives as long as
    the process: frozen (``gc.freeze``), no collection walks it again. The hot loop allocates short-lived
    tuples, strings and dicts by the million, which reference counting frees; at the default threshold
    (700 net allocations) the collector still ran a young collection every few hundred events and an
    old one over the whole window state every few thousand. In one process on the same 1M events
    (``python -m benchmarks.inner_loop --gc default`` / ``--gc worker``, both sides under the same
    setting): the batch loop 215k -> 250k events/s one per message, 426k -> 484k in packs of 10 (CPU
    time), the Python limit unchanged (448k / 466k). docs/SCALING.md, "Where the worker's time goes".
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def fix_mmap_threshold(nbytes: int) -> bool:
    """Serve every block of ``nbytes`` or more with its own mapping, returned to the system when freed.

    glibc starts at 128 KiB and *raises* the threshold to the size of any mapped block freed (up to
    32 MiB): after the first fetch answer (megabytes from the broker) is freed, every later one, and every
    large list a flush builds, comes from the heap instead, where the long-lived window state allocated
    in between pins it. The worker's resident memory then stays at its high-water mark of buffers it no
    longer holds. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also stops the sliding)
    took some 50 MB off the external-store worker's peak on the 1M corpus (docs/SCALING.md, "Memory");
    the price is a mapping per large block, a few per fetch and per flush. False where the C library is
    not glibc (the setting is then without effect, and said so once).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.warning("malloc_mmap_threshold_bytes=%d has no effect here (no glibc mallopt)", nbytes)
    return ok
