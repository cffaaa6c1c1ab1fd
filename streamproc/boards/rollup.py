"""Roll the 10 s tallies up to minutes and hours, exactly, by recomputing what changed.

tallies_10s holds snapshots that are re-flushed while a window is open, so rolling up inserts (a
SummingMergeTree behind a materialized view) would count every re-flush again. Instead a materialized
view marks each (minute, streamer) written (``rollup_marks``), and each run of this job recomputes those
minutes from ``tallies_10s FINAL`` (summed across source partitions) into ``tallies_1m``, then the hours
they touch from ``tallies_1m FINAL`` into ``tallies_1h``. Recomputing from the source is idempotent:
overlapping runs, several workers running it, or a crash half-way never double count.

Hours are rolled as a whole once the newest window has moved past them, and again whenever a write
touches a minute of an hour already rolled. ``rollup_state`` records the pass's ``cursor`` (every mark
written up to it, less the sink's ``visibility_lag_ms``, has been rolled) and ``hours_upto`` (hours
before it were rolled as a whole at least once). Neither is a claim that a minute is *complete*: event
time cannot prove that (a streamer seen for the first time may arrive with an old timestamp). The query
layer therefore reads every minute with a mark newer than the cursor from the 10 s level
(docs/ARCHITECTURE.md, "Rollup completeness"). The marks are read with an overlap
(``Sink.visibility_lag_ms``: how long a server may take to make a started insert visible; none for the
embedded store, whose statements run one at a time) so that a flush still being written when a pass
reads the marks is picked up by the next pass.

Audiences are rolled differently: their states are sets, so each pass unions the 10 s states *written*
since its cursor (``written_at``, migration 005) into the minute and the hour, and a state rolled twice
changes nothing. Every audience write of a flush precedes the window rows that mark its minute, so a
minute whose marks are all rolled has its audience rolled too, and readers take both from one tiling.

Passes never overlap within a process (one lock: a slow pass delays the next, it does not race it).
10 s rows live ``TTL_10S_HOURS``; should rolling fall behind toward that, the pass stops TTL merges
on the 10 s tables until it has caught up, so a minute is never deleted before it is rolled.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from streamproc.core.windows import WINDOW_MS
from streamproc.metrics import REGISTRY
from streamproc.store import Sink

log = logging.getLogger(__name__)

STATE_NAME = "default"
TTL_10S_HOURS = 6  # schemas/clickhouse/001_core.sql and 003: tallies_10s, audience_10s
TTL_GUARD_S = TTL_10S_HOURS * 3600 / 2  # rolling this far behind stops the 10 s TTL until caught up
_TTL_TABLES = ("tallies_10s", "audience_10s")

_PASS = threading.Lock()  # one pass at a time in this process
_ttl_stopped: bool | None = None  # unknown at start: the first pass sets the switch either way
_last_ok = time.time()

RUNS = Counter("streamproc_rollup_runs_total", "Runs of the rollup job", ["outcome"], registry=REGISTRY)
RUN_SECONDS = Histogram("streamproc_rollup_duration_seconds", "Wall time of one rollup run",
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120), registry=REGISTRY)
for _outcome in ("ok", "failed"):
    RUNS.labels(_outcome)
LAG = Gauge("streamproc_rollup_lag_seconds",
            "Age of the oldest write not yet rolled up (0: caught up); 10 s rows expire after 6 h",
            registry=REGISTRY)
TTL_PAUSED = Gauge("streamproc_rollup_ttl_paused", "1 while the 10 s TTL is stopped because rolling lags",
                   registry=REGISTRY)

# Sums and the audience at the end of the bucket, from any finer level with the same columns.
_SUMS = ("events", "enters", "leaves", "likes", "orders_paid", "orders_refunded", "items", "gmv_fen", "refund_fen")
_ROLLED_COLUMNS = ", ".join(_SUMS) + ", concurrent_peak, concurrent_close, close_at, version"

_MINUTES_SQL = f"""
INSERT INTO tallies_1m (bucket, streamer_id, {_ROLLED_COLUMNS})
SELECT toStartOfMinute(window_start) AS b, streamer_id,
       {", ".join(f"sum({c})" for c in _SUMS)},
       maxIf(concurrent_peak, enters + leaves > 0),
       argMaxIf(concurrent_close, window_start, enters + leaves > 0),
       maxIf(window_start, enters + leaves > 0),
       toUnixTimestamp64Micro(now64(6))
FROM tallies_10s FINAL
WHERE window_start >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')
  AND window_start < fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')
  AND (toStartOfMinute(window_start), streamer_id) IN (
      SELECT minute, streamer_id FROM rollup_marks
      WHERE marked_at > fromUnixTimestamp64Milli({{since:Int64}}, 'UTC')
        AND marked_at <= fromUnixTimestamp64Milli({{upto:Int64}}, 'UTC'))
GROUP BY b, streamer_id
"""

# Hours: those that just became complete (all streamers) and complete ones that late data touched.
_HOURS_SQL = f"""
INSERT INTO tallies_1h (bucket, streamer_id, {_ROLLED_COLUMNS})
SELECT toStartOfHour(bucket) AS b, streamer_id,
       {", ".join(f"sum({c})" for c in _SUMS)},
       max(concurrent_peak),
       argMax(concurrent_close, close_at),
       max(close_at),
       toUnixTimestamp64Micro(now64(6))
FROM tallies_1m FINAL
WHERE bucket >= toDateTime({{lo:Int64}}, 'UTC') AND bucket < toDateTime({{done:Int64}}, 'UTC')
  AND (bucket >= toDateTime({{old_done:Int64}}, 'UTC') OR (toStartOfHour(bucket), streamer_id) IN (
      SELECT toStartOfHour(minute), streamer_id FROM rollup_marks
      WHERE marked_at > fromUnixTimestamp64Milli({{since:Int64}}, 'UTC')
        AND marked_at <= fromUnixTimestamp64Milli({{upto:Int64}}, 'UTC')))
GROUP BY b, streamer_id
"""


# Audiences: the 10 s states written since the pass's lower bound, unioned into one level, an hour of
# windows per statement (a backfill of a day holds one hour's groups at a time, not the day's). No upper
# bound on the write time: a state written while the pass runs may be rolled now and again by the next
# pass, harmless to a set, and one written after the pass read its hours was written after its cursor,
# so the next pass, which starts there, takes it.
_AUDIENCE_SQL = """
INSERT INTO audience_{level} (bucket, streamer_id, viewers, buyers, seen_at)
SELECT {start}(window_start) AS b, streamer_id, uniqExactMergeState(viewers), uniqExactMergeState(buyers), now()
FROM audience_10s
WHERE written_at > fromUnixTimestamp64Milli({{since:Int64}}, 'UTC')
  AND window_start >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')
  AND window_start < fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')
GROUP BY b, streamer_id
"""
_AUDIENCE_LEVELS = (_AUDIENCE_SQL.format(level="1m", start="toStartOfMinute"),
                    _AUDIENCE_SQL.format(level="1h", start="toStartOfHour"))


@dataclass(frozen=True)
class RollupState:
    """How far the rollups went; all epoch milliseconds (0: never ran)."""

    cursor: int = 0
    hours_upto: int = 0


@dataclass(frozen=True)
class RunResult:
    marks: int
    seconds: float
    state: RollupState
    lag_s: float = 0.0


def load_state(sink: Sink) -> RollupState:
    rows = sink.rows(
        "SELECT toUnixTimestamp64Milli(argMax(cursor, updated_at)), "
        "toInt64(argMax(hours_upto, updated_at)) * 1000, count() FROM rollup_state WHERE name = {n:String}",
        {"n": STATE_NAME})
    cursor, hours, n = rows[0]
    return RollupState(int(cursor), int(hours)) if int(n) else RollupState()


def newest_window_end(sink: Sink, window_ms: int = WINDOW_MS) -> int:
    """End of the newest 10 s window in the data (epoch ms); 0 if there is none."""
    (newest, n), = sink.rows("SELECT toUnixTimestamp64Milli(max(newest_window)), count() FROM tallies_clock")
    return int(newest) + window_ms if int(n) else 0


def run_once(sink: Sink, window_ms: int = WINDOW_MS) -> RunResult:
    """One rollup pass: minutes marked since the last pass, then the hours that are due. Waits for a
    pass already running in this process instead of racing it."""
    with _PASS:
        return _pass(sink, window_ms)


def _pass(sink: Sink, window_ms: int) -> RunResult:
    started = time.perf_counter()
    old = load_state(sink)
    newest_end = newest_window_end(sink, window_ms)  # read before the marks: every mark of it is seen below
    (upto,), = sink.rows("SELECT toUnixTimestamp64Milli(now64(3))")
    upto = int(upto)
    since = max(0, old.cursor - sink.visibility_lag_ms)
    marks = {"since": since, "upto": upto}
    (n, lo, hi, oldest), = sink.rows(
        "SELECT count(), toInt64(min(minute)) * 1000, toInt64(max(minute)) * 1000, "
        "toUnixTimestamp64Milli(min(marked_at)) FROM rollup_marks "
        "WHERE marked_at > fromUnixTimestamp64Milli({since:Int64}, 'UTC') "
        "AND marked_at <= fromUnixTimestamp64Milli({upto:Int64}, 'UTC')", marks)
    n = int(n)
    lag_s = max(0.0, (upto - int(oldest)) / 1000) if n else 0.0
    _guard_ttl(sink, lag_s)
    if n:
        sink.command(_MINUTES_SQL, {**marks, "lo": int(lo), "hi": int(hi) + 60_000})
    _roll_audiences(sink, since)  # not only when marked: a flush's audience lands before its marks
    hours_upto = newest_end - newest_end % 3_600_000
    if hours_upto > old.hours_upto or n:
        lowest = min(old.hours_upto, int(lo) if n else old.hours_upto)
        sink.command(_HOURS_SQL, {**marks, "lo": (lowest - lowest % 3_600_000) // 1000, "done": hours_upto // 1000,
                                  "old_done": old.hours_upto // 1000})
    state = RollupState(upto, max(hours_upto, old.hours_upto))
    sink.command(
        "INSERT INTO rollup_state (name, cursor, minutes_upto, hours_upto) SELECT {n:String}, "
        "fromUnixTimestamp64Milli({c:Int64}, 'UTC'), toDateTime(0, 'UTC'), toDateTime({h:Int64}, 'UTC')",
        {"n": STATE_NAME, "c": state.cursor, "h": state.hours_upto // 1000})
    _guard_ttl(sink, 0.0)
    global _last_ok
    _last_ok = time.time()
    seconds = time.perf_counter() - started
    RUN_SECONDS.observe(seconds)
    return RunResult(n, seconds, state, lag_s)


def _roll_audiences(sink: Sink, since: int) -> None:
    """Union the 10 s audience states written after ``since`` into the minute and hour levels, hour by
    hour of the hours that have any (an old timestamp of a new streamer makes a far hour, not a long
    stretch of empty ones)."""
    hours = sink.rows(
        "SELECT DISTINCT toInt64(toUnixTimestamp(toStartOfHour(window_start))) * 1000 FROM audience_10s "
        "WHERE written_at > fromUnixTimestamp64Milli({since:Int64}, 'UTC')", {"since": since})
    for (hour,) in sorted(hours):
        for sql in _AUDIENCE_LEVELS:
            sink.command(sql, {"since": since, "lo": int(hour), "hi": int(hour) + 3_600_000})


def _guard_ttl(sink: Sink, lag_s: float) -> None:
    """Stop the 10 s TTL while rolling lags past half of it, start it again once a pass has caught up.

    A minute deleted from the 10 s level before it was rolled would be lost for good. The pause is the
    server's own switch (SYSTEM STOP TTL MERGES); it lasts until the next successful pass, or until a
    server restart, after which the next pass stops it again if still needed.
    """
    global _ttl_stopped
    LAG.set(lag_s)
    paused = lag_s > TTL_GUARD_S
    if paused == _ttl_stopped:
        return
    for table in _TTL_TABLES:
        sink.command(f"SYSTEM {'STOP' if paused else 'START'} TTL MERGES {table}")
    _ttl_stopped = paused
    TTL_PAUSED.set(int(paused))
    (log.warning if paused else log.info)(
        "rollup lags %.0f s behind the oldest write: 10 s TTL %s", lag_s, "stopped" if paused else "running again")


async def tick(sink: Sink) -> None:
    """One pass off the event loop, as the worker runs it after a flush (``runtime/after_flush.py``)."""
    try:
        result = await asyncio.to_thread(run_once, sink)
    except Exception as exc:  # the next run recomputes everything still marked
        RUNS.labels("failed").inc()
        LAG.set(time.time() - _last_ok)  # an upper bound: every write before the last good pass is rolled
        log.error("rollup failed (%s: %s); retrying at the next run", type(exc).__name__, exc)
        return
    RUNS.labels("ok").inc()
    if result.marks:
        log.debug("rollup: %d marks in %.3fs", result.marks, result.seconds)
