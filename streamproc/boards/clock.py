"""The data clock and time ranges: where the data and the rollups stand, and what a named window means.

"Now" is ``as_of``, by default the end of the newest 10 s window in the data (not the wall clock), so a
replayed day shows its own boards. ``1m/5m/1h`` are that many whole 10 s windows ending at ``as_of``;
``today`` is the Asia/Shanghai calendar day of ``as_of`` up to ``as_of``; ``session`` looks back a day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streamproc.boards.params import SHANGHAI, BadParameter, TimeSpec
from streamproc.boards.rollup import STATE_NAME
from streamproc.core.windows import WINDOW_MS
from streamproc.store import Sink

BUCKET_MS = WINDOW_MS  # the tallies' window: the finest tile
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
NAMED_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": HOUR_MS}
SESSION_GAP_MS = 5 * MINUTE_MS
SESSION_LOOKBACK_MS = 24 * HOUR_MS
_SH_OFFSET_MS = int(SHANGHAI.utcoffset(None).total_seconds() * 1000)


@dataclass(frozen=True)
class Clock:
    """Where the data and the rollups stand; epoch ms, 0 when there is nothing yet.

    ``pending_minutes`` are the minutes written since the last completed rollup pass (less the
    overlap): their rolled rows may be stale, so they are read from the 10 s level.
    """

    newest_end: int
    newest_event: int
    newest_flush: int
    hours_upto: int
    rollup_cursor: int
    pending_minutes: tuple[int, ...] = ()


def clock(sink: Sink) -> Clock:
    """The data clock, read now."""
    return _read_clock(sink)


class ClockCache:
    """One data clock shared for ``max_age_s`` by a busy front end (the API shares one for a fraction of
    the flush interval: it saves a query per request). One per reader of one store."""

    def __init__(self, sink: Sink, max_age_s: float) -> None:
        self.sink, self.max_age_s = sink, max_age_s
        self._at, self._clock = 0.0, None

    def __call__(self) -> Clock:
        if self._clock is None or time.monotonic() - self._at >= self.max_age_s:
            self._clock, self._at = _read_clock(self.sink), time.monotonic()
        return self._clock


def _read_clock(sink: Sink) -> Clock:
    (nw, ne, nf, n, hu, cur), = sink.rows(
        "SELECT toUnixTimestamp64Milli(max(newest_window)), toUnixTimestamp64Milli(max(newest_event)), "
        "toUnixTimestamp64Milli(max(newest_flush)), count(), "
        "(SELECT toInt64(argMax(hours_upto, updated_at)) * 1000 FROM rollup_state WHERE name = {n:String}), "
        "(SELECT toUnixTimestamp64Milli(argMax(cursor, updated_at)) FROM rollup_state WHERE name = {n:String}) "
        "FROM tallies_clock", {"n": STATE_NAME})
    if not int(n):
        return Clock(0, 0, 0, 0, 0)
    # after the cursor was read: a pass that completes in between only makes this set larger than needed
    pending = tuple(int(m) for m, in sink.rows(
        "SELECT DISTINCT toInt64(toUnixTimestamp(minute)) * 1000 AS m FROM rollup_marks "
        "WHERE marked_at > fromUnixTimestamp64Milli({since:Int64}, 'UTC') ORDER BY m",
        {"since": max(0, int(cur) - sink.visibility_lag_ms)}))
    return Clock(int(nw) + BUCKET_MS, int(ne), int(nf), int(hu), int(cur), pending)


def _ceil(t: int, step: int) -> int:
    return -(-t // step) * step


def resolve(spec: TimeSpec, clk: Clock) -> tuple[int, int]:
    """[start, end) in ms of a named window or explicit range, in whole 10 s windows."""
    if spec.start is not None and spec.end is not None:
        return spec.start - spec.start % BUCKET_MS, _ceil(spec.end, BUCKET_MS)
    end = _ceil(spec.as_of, BUCKET_MS) if spec.as_of is not None else clk.newest_end
    if spec.window == "today":
        local = end - 1 + _SH_OFFSET_MS
        return local - local % DAY_MS - _SH_OFFSET_MS, end
    if spec.window == "session":
        return end - SESSION_LOOKBACK_MS, end
    return end - NAMED_MS[spec.window], end


def not_session(spec: TimeSpec) -> TimeSpec:
    """``session`` is a board of its own (each streamer has its own range); elsewhere it has no meaning."""
    if spec.start is None and spec.window == "session":
        raise BadParameter("window", "session is only a leaderboard window (/api/leaderboard)")
    return spec


def window_label(spec: TimeSpec) -> str:
    return "range" if spec.start is not None else spec.window


def freshness(sink: Sink, now_ms: int) -> dict[str, Any]:
    """How current the boards are: newest data, last flush, and whether every write is rolled up.

    ``rollup_caught_up`` is true when no minute has a write newer than the last completed rollup pass;
    boards are exact either way (pending minutes are read from 10 s rows), this says how much of a
    board comes from the finer, costlier level.
    """
    c = clock(sink)
    pending = c.pending_minutes
    return {
        "newest_window_end": c.newest_end, "newest_event": c.newest_event, "newest_flush": c.newest_flush,
        "rollup_cursor": c.rollup_cursor, "hours_rolled_upto": c.hours_upto,
        "minutes_pending": len(pending), "oldest_pending_minute": pending[0] if pending else None,
        "rollup_caught_up": not pending,
        "flush_age_s": round((now_ms - c.newest_flush) / 1000, 3) if c.newest_flush else None,
        "event_age_s": round((now_ms - c.newest_event) / 1000, 3) if c.newest_event else None,
    }
