"""How late the worker's event loop runs what is due: the one figure for a stalled loop.

The consumer, the flushes, the timers and the web API share one event loop, so anything that holds it
(a blocking call in the hot path, a long pass of Python work, a thread hogging the GIL) delays all of
them at once: API answers, /metrics, heartbeats. A probe sleeps a fixed interval and records by how much
it woke late, in ``streamproc_event_loop_lag_seconds`` (docs/OPERATIONS.md). It costs a few wake-ups a
second.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from prometheus_client import Histogram

INTERVAL_S = 0.1


async def watch(histogram: Histogram, interval_s: float = INTERVAL_S,
                should_stop: Callable[[], bool] = lambda: False) -> None:
    """Record each wake-up's delay past ``interval_s`` until ``should_stop``."""
    clock = time.monotonic
    while not should_stop():
        due = clock() + interval_s
        await asyncio.sleep(interval_s)
        histogram.observe(max(0.0, clock() - due))
