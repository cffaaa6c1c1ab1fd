"""Long-running feeds (replay, record) in front of an operator: progress, and a clean Ctrl-C.

An operator watching a backfill wants to see at a glance how far it is, how fast it goes, where it is
in event time and when it will end; a CI log or a systemd journal wants the same facts as lines, not
carriage-return animation. ``mode="auto"`` picks by whether the stream is a terminal. And a feed that
is stopped must stop between records, not inside one, so that what it reports is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from datetime import datetime, timezone
from typing import Callable, Iterator, TextIO

log = logging.getLogger("streamproc.logs.progress")

MODES = ("auto", "bar", "log", "none")
BAR_WIDTH = 24


def fmt_ts(ms: int | None) -> str:
    """Epoch milliseconds as UTC ISO-8601 to the second; ``-`` when unknown or out of range."""
    if ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Counts, a recent events/s, the event-time position and an ETA, rendered every so often.

    ``eta`` is asked for the seconds left given the current count, position and rate: only the caller
    knows whether it runs paced by event time, at a fixed rate, or as fast as the broker takes.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        mode: str = "auto",
        interval_s: float = 10.0,
        eta: Callable[[int, int | None, float], float | None] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.label, self.total, self.mode, self.eta = label, total, mode, eta
        self.interval_s = 0.2 if mode == "bar" else max(interval_s, 0.1)
        self.count = 0
        self.position: int | None = None
        self.started = time.monotonic()
        self._last_render = self.started
        self._rate_mark = (self.started, 0)
        self._rate = 0.0

    def update(self, count: int, position_ms: int | None = None) -> None:
        """Cheap enough to call per event: it only renders once per interval."""
        self.count = count
        if position_ms is not None:
            self.position = position_ms
        now = time.monotonic()
        if now - self._last_render >= self.interval_s:
            self._render(now)

    def _measure(self, now: float) -> float:
        t0, c0 = self._rate_mark
        if now - t0 >= 1.0:  # a rate over the last second or more, so that pauses show
            self._rate = (self.count - c0) / (now - t0)
            self._rate_mark = (now, self.count)
        elif self._rate == 0.0 and now > self.started:
            self._rate = self.count / (now - self.started)
        return self._rate

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        rate = self._measure(now)
        done = f"{self.count:,}" + (f"/{self.total:,}" if self.total is not None else "")
        pct = ""
        bar = ""
        if self.total:
            frac = min(self.count / self.total, 1.0)
            pct = f" {frac * 100:5.1f}%"
            if self.mode == "bar":
                fill = int(frac * BAR_WIDTH)
                bar = " [" + "#" * fill + "." * (BAR_WIDTH - fill) + "]"
        eta = self.eta(self.count, self.position, rate) if self.eta else None
        return (f"{self.label}{bar}{pct} {done} events, {rate:,.0f} events/s, at {fmt_ts(self.position)}, "
                f"ETA {fmt_duration(eta)}")

    def _render(self, now: float) -> None:
        self._last_render = now
        if self.mode == "bar":
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.stream.flush()
        elif self.mode == "log":
            log.info("%s", self.line(now))

    def finish(self) -> None:
        """End the bar's line so that the summary starts on a fresh one."""
        if self.mode == "bar":
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[asyncio.Event]:
    """Within a running event loop: SIGINT and SIGTERM set ``stop`` instead of raising mid-record.

    Outside the main thread (tests driving a feed from a thread) signals cannot be caught; the caller's
    own ``stop`` still works there.
    """
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        yield stop
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
