"""Readers cannot starve the pipeline: a bound on the API's concurrent answers, and one shared answer per
request for a moment.

The web server shares the worker's process, event loop and store with the flush loop. Unbounded, 200
pollers put 200 queries into the default thread pool (which the flush and the rollup use too) and at
the store, in front of every flush (issue 11: flushes fell from 1/s to 3 in 75 s). So:

- **Single flight, short cache.** Identical requests (same endpoint, same parsed parameters: the
  query's normal form) share one answer while it is being computed and for ``max_age_s`` after it
  started, so 200 pollers of one board cost one query per ``max_age_s``. The web server uses half a
  flush interval (at most 0.5 s), as for the data clock (``queries.ClockCache``): nothing
  newer can have landed meanwhile but one flush.
- **A bound.** At most ``max_concurrent`` answers are computed at once, in threads of their own; a
  request that finds no free slot within ``queue_timeout_s`` raises ``Busy`` (the API answers 429 with
  Retry-After). ``max_concurrent`` 0 removes the bound (the default thread pool, as before).
- **Reads go last at the store.** Answers are computed inside ``sink.reading()``: chDB's lock serves a
  waiting flush, restore or rollup before them; a server sink reads through its own connection pool.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Hashable, TypeVar

from streamproc.store.base import reading

T = TypeVar("T")

RETRY_AFTER_S = 1  # a busy API has a new answer to share after about one flush interval (1 s by default)


class Busy(Exception):
    """No slot freed up within the queue timeout: the caller should retry after ``RETRY_AFTER_S``."""


@dataclass
class _Flight:
    started: float  # monotonic time the computation was asked for
    answer: asyncio.Future[Any]


class ReadGate:
    """Admission, single flight and a short cache for the web API's answers (see the module docstring)."""

    def __init__(self, max_concurrent: int, queue_timeout_s: float, max_age_s: float) -> None:
        self.queue_timeout_s = queue_timeout_s
        self.max_age_s = max_age_s
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent > 0 else None
        self._pool = ThreadPoolExecutor(max_concurrent, "api-read") if max_concurrent > 0 else None
        self._flights: dict[Hashable, _Flight] = {}

    async def answer(self, key: Hashable, compute: Callable[[], T]) -> tuple[T, bool]:
        """``compute()``'s result for ``key``, and whether it was shared (another request's computation).

        A computation in flight is always joined: starting a second one would not finish sooner. A
        finished one is reused until ``max_age_s`` after it started. A failed one is forgotten at once.
        """
        now = time.monotonic()
        flight = self._flights.get(key)
        shared = flight is not None and (not flight.answer.done() or now - flight.started < self.max_age_s)
        if not shared:
            self._forget_old(now)
            flight = _Flight(now, asyncio.ensure_future(self._compute(compute)))
            self._flights[key] = flight
            flight.answer.add_done_callback(lambda done: self._forget_failed(key, flight))
        # shielded: a client that hangs up must not cancel the answer others are waiting for
        return await asyncio.shield(flight.answer), shared

    async def _compute(self, compute: Callable[[], T]) -> T:
        if self._slots is None:
            return await asyncio.to_thread(_read, compute)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise Busy(f"no free slot in {self.queue_timeout_s:g}s") from None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, _read, compute)
        finally:
            self._slots.release()

    def _forget_failed(self, key: Hashable, flight: _Flight) -> None:
        failed = flight.answer.cancelled() or flight.answer.exception() is not None  # also marks it retrieved
        if failed and self._flights.get(key) is flight:
            del self._flights[key]

    def _forget_old(self, now: float) -> None:
        """Drop finished answers past their age, so distinct requests cannot grow the cache for long."""
        old = [k for k, f in self._flights.items() if f.answer.done() and now - f.started >= self.max_age_s]
        for k in old:
            del self._flights[k]


def _read(compute: Callable[[], T]) -> T:
    with reading():
        return compute()
