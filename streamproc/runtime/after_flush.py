"""The store passes that read what a flush wrote (the rollup, the watched boards' changes), run in the
gap a flush leaves before the next one.

Why not timers of their own: on two cores a rollup pass running beside a flush made that flush
0.5-1.0 s instead of 0.2-0.4 s, and the slowest flushes are what a board's freshness p99 is made of
(docs/SCALING.md, "The store's other passes"). Neither pass can see anything new until a flush has
written it, so the natural moment for them is right after one: a pass starts when the flush loop's
turn ends, at most once per its own interval, and a pass still running when the next gap comes is not
joined by another.

One pass per gap, the most overdue first, never two chained: the web API's readers wait for whatever
writer holds the store, and serve a board stale only for about a flush interval while its successor is
computed (``web/read_gate.py``), so the longest run of writes they may sit behind is what sets their
p99. The rollup and the change evaluation back to back in one gap made that run about a second longer
and the boards' p99 about four times worse (docs/SCALING.md); with 1 s flushes and both passes every
2 s, they take alternate gaps.

A pass also waits out its share (``store_pass_share``): one that took ``d`` seconds is not due again
until ``d * (1 - share) / share`` after it ended, whatever its interval says. A live feed's passes take
a fraction of their interval and never meet this bound; a backlog's do (at 100k streamers a rollup
pass of 1-2.5 s every 2 s ran beside most flushes of a drain and made them about twice as long), and
each later pass rolls what the skipped ones would have, so the boards, which read the minutes not yet
rolled from the 10 s rows, stay exact (docs/SCALING.md, "The store's share of a drain").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


@dataclass
class Pass:
    """One pass; ``run`` logs and counts its own failures, and is retried when next due."""

    name: str
    interval_s: float
    run: Callable[[], Awaitable[None]]
    due: float = 0.0  # monotonic time from which the pass is due; 0: at the first gap


class AfterFlush:
    """Starts a due pass in the gap after each flush; ``slack_s`` is half the flush interval, so a pass
    due just after a gap runs in it rather than a whole flush later (a 2 s pass, 1 s flushes: every
    second gap, not every third); ``share`` in (0, 1]: the most of the time the passes may take."""

    def __init__(self, passes: list[Pass], slack_s: float, share: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"a share of the time is in (0, 1], not {share}")
        self.passes = passes
        self.slack_s = slack_s
        self.rest = (1 - share) / share  # seconds of rest after each second a pass ran
        self.clock = clock
        self.task: asyncio.Task | None = None

    def gap(self) -> None:
        """Called by the flush loop when a flush (or a quiet turn) is done: starts the most overdue pass."""
        if self.task is not None and not self.task.done():
            return
        now = self.clock()
        due = [p for p in self.passes if now + self.slack_s >= p.due]
        if due:
            p = min(due, key=lambda p: p.due)
            p.due = now + p.interval_s
            self.task = asyncio.ensure_future(self._run(p))

    async def _run(self, p: Pass) -> None:
        started = self.clock()
        try:
            await p.run()
        except Exception:  # a pass's own handling missed it: it is tried again when next due
            log.exception("%s pass failed", p.name)
        finally:
            ended = self.clock()
            p.due = max(p.due, ended + (ended - started) * self.rest)

    async def stop(self) -> None:
        """Cancel a pass in progress (a statement already in the store runs to its end)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
