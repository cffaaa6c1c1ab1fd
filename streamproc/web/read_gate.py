"""Readers cannot starve the pipeline: a bound on the API's concurrent answers, one shared answer per
board for a moment, and a slightly older answer rather than a wait.

The web server shares the worker's process, event loop and store with the flush loop. Unbounded, 200
pollers put 200 queries into the default thread pool (which the flush and the rollup use too) and at
the store, in front of every flush (issue 11: flushes fell from 1/s to 3 in 75 s). So:

- **Single flight, short cache.** Identical requests (same endpoint, same parsed parameters: the
  query's normal form, in which a board's ``limit`` is widened to the largest, see ``web/server.py``)
  share one answer while it is being computed and for ``max_age_s`` after it started, so 200 pollers
  of one board cost one query per ``max_age_s``. The web server uses half a flush interval (at most
  0.5 s), as for the data clock (``queries.ClockCache``): nothing newer can have landed meanwhile but
  one flush.
- **Stale while revalidating** (RFC 5861's rule). Past ``max_age_s``, a good answer is still served at
  once (``X-Cache: stale``) while one new computation runs for everybody, for ``stale_s`` after it
  started or, for an answer that takes long to compute, ``max_age_s`` plus twice its computing time
  (at most ``stale_cap_s``). A crowd of pollers keeps its boards renewed and never waits; a lone
  client polling slower than that gets a fresh answer, not the one it saw last time; and a stuck
  store makes readers wait rather than see old data. Every answer carries its own ``as_of``, so an
  older one is exact for its time, never a mix.
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
from typing import Any, Callable, Hashable, Literal, TypeVar

from streamproc.store.base import reading

T = TypeVar("T")

RETRY_AFTER_S = 1  # a busy API has a new answer to share after about one flush interval (1 s by default)

Served = Literal["miss", "hit", "stale"]  # computed for this request / shared while young / older, being renewed


class Busy(Exception):
    """No slot freed up within the queue timeout: the caller should retry after ``RETRY_AFTER_S``."""


@dataclass
class _Flight:
    started: float  # monotonic time the computation was asked for
    answer: asyncio.Future[Any]


@dataclass
class _Good:
    started: float  # when the computation that gave it was asked for
    took: float  # how long it took to come back
    value: Any


class ReadGate:
    """Admission, single flight, a short cache and stale-while-revalidate for the web API's answers
    (see the module docstring)."""

    def __init__(self, max_concurrent: int, queue_timeout_s: float, max_age_s: float, stale_s: float = 0.0,
                 stale_cap_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock`` dates the answers (monotonic seconds): ages are decided by it alone, so a test can step
        it instead of sleeping on a loaded machine. The queue timeout is the event loop's own time."""
        self.clock = clock
        self.queue_timeout_s = queue_timeout_s
        self.max_age_s = max_age_s
        self.stale_s = max(stale_s, max_age_s)
        self.stale_cap_s = max(stale_cap_s, self.stale_s)
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent > 0 else None
        self._pool = ThreadPoolExecutor(max_concurrent, "api-read") if max_concurrent > 0 else None
        self._flights: dict[Hashable, _Flight] = {}
        self._good: dict[Hashable, _Good] = {}  # the newest successful answer of each key

    async def answer(self, key: Hashable, compute: Callable[[], T], stale: bool = True) -> tuple[T, Served]:
        """``compute()``'s result for ``key``, and how it was served.

        A computation in flight is joined, unless an older answer can still be served meanwhile
        (``_servable``): starting a second one would not finish sooner. A finished one is reused until
        ``max_age_s`` after it started; then it is served stale while a new one runs. A failed one is
        forgotten at once (and a refusal is never cached), so the next request tries again. ``stale``
        False: never an answer past its age (a figure about now, not a board with its own ``as_of``).
        """
        now = self.clock()
        flight = self._flights.get(key)
        if flight is not None and flight.answer.done() and now - flight.started < self.max_age_s:
            return await asyncio.shield(flight.answer), "hit"  # shielded: a hang-up must not cancel it
        if flight is None or flight.answer.done():
            self._forget_old(now)
            flight = _Flight(now, asyncio.ensure_future(self._compute(compute)))
            self._flights[key] = flight
            flight.answer.add_done_callback(lambda done: self._settle(key, flight))
            fresh = True
        else:
            fresh = False
        good = self._good.get(key)
        if stale and good is not None and now - good.started < self._servable(good):
            return good.value, "stale"
        return await asyncio.shield(flight.answer), "miss" if fresh else "hit"

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

    def _servable(self, good: _Good) -> float:
        """How long after its start a good answer may still be served stale (module docstring)."""
        return min(self.stale_cap_s, max(self.stale_s, self.max_age_s + 2 * good.took))

    def _settle(self, key: Hashable, flight: _Flight) -> None:
        """Keep a good answer for stale serving; forget a failed flight (also marks its error retrieved)."""
        failed = flight.answer.cancelled() or flight.answer.exception() is not None
        if not failed:
            good = self._good.get(key)
            if good is None or good.started < flight.started:
                took = self.clock() - flight.started
                self._good[key] = _Good(flight.started, took, flight.answer.result())
        elif self._flights.get(key) is flight:
            del self._flights[key]

    def _forget_old(self, now: float) -> None:
        """Drop answers past serving, so distinct requests cannot grow the cache for long."""
        for k in [k for k, f in self._flights.items() if f.answer.done() and now - f.started >= self.stale_cap_s]:
            del self._flights[k]
        for k in [k for k, g in self._good.items() if now - g.started >= self._servable(g)]:
            del self._good[k]


def _read(compute: Callable[[], T]) -> T:
    with reading():
        return compute()
