"""The store passes that read what a flush wrote (the rollup, the watched boards' changes), run in the
gap a flush leaves before the next one.

Why not timers of their own: on two cores a rollup pass running beside a flush made that flush
0.5-1.0 s instead of 0.2-0.4 s, and the slowest flushes are what a board's freshness p99 is made of
(docs/SCALING.md, "The store's other passes"). Neither pass can see anything new until a flush has
written it, so the natural moment for them is right after one: they start when the flush loop's turn
ends, one after the other, each at most once per its own interval, and a round still running when the
next gap comes is not started a second time (the flush after it waits for one statement at most, the
store serving writers one statement at a time).
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
    """Starts the due passes in the gap after each flush; ``slack_s`` is half the flush interval, so a
    pass due just after a gap runs in it rather than a whole flush later (a 2 s pass, 1 s flushes: every
    second gap, not every third)."""

    def __init__(self, passes: list[Pass], slack_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.passes = passes
        self.slack_s = slack_s
        self.clock = clock
        self.task: asyncio.Task | None = None

    def gap(self) -> None:
        """Called by the flush loop when a flush (or a quiet turn) is done."""
        if self.task is not None and not self.task.done():
            return
        now = self.clock()
        due = [p for p in self.passes if now + self.slack_s >= p.due]
        for p in due:
            p.due = now + p.interval_s
        if due:
            self.task = asyncio.ensure_future(self._run(due))

    @staticmethod
    async def _run(due: list[Pass]) -> None:
        for p in due:
            try:
                await p.run()
            except Exception:  # a pass's own handling missed it: the passes after it still run
                log.exception("%s pass failed", p.name)

    async def stop(self) -> None:
        """Cancel a round in progress (a statement already in the store runs to its end)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
