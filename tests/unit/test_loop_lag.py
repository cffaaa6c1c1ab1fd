"""The event-loop lag probe (``runtime/loop_lag.py``) on a real asyncio loop: a free loop wakes it on
time, a loop held by blocking work shows as a wake-up late by about the length of the hold."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Histogram

from streamproc.runtime import loop_lag


def test_a_held_loop_shows_as_a_late_wake_up_of_about_the_hold() -> None:
    registry = CollectorRegistry()
    lag = Histogram("lag_seconds", "probe", buckets=(0.05, 0.25, 1.0), registry=registry)
    stop = False

    async def main() -> None:
        nonlocal stop
        probe = asyncio.create_task(loop_lag.watch(lag, 0.02, should_stop=lambda: stop))
        await asyncio.sleep(0.3)  # a free loop
        time.sleep(0.4)  # blocking work on the loop: the probe cannot run
        await asyncio.sleep(0.3)
        stop = True
        await probe

    asyncio.run(main())

    def sample(name: str, **labels: str) -> float:
        value = registry.get_sample_value(name, labels)
        assert value is not None, name
        return value

    count = sample("lag_seconds_count")
    assert count >= 10  # about one wake-up per 0.02 s outside the hold
    assert count - sample("lag_seconds_bucket", le="0.25") >= 1, "the hold was not seen"
    assert sample("lag_seconds_bucket", le="1.0") == count, "a wake-up later than the hold itself"
    assert sample("lag_seconds_bucket", le="0.05") >= count / 2, "a free loop should wake the probe on time"
    assert sample("lag_seconds_sum") >= 0.4 - 0.02  # the hold, less at most one interval
