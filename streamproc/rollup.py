"""Roll the 10 s tallies up to minutes and hours, exactly, by recomputing what changed.

tallies_10s holds snapshots that are re-flushed while a window is open, so rolling up inserts (a
SummingMergeTree behind a materialized view) would count every re-flush again. Instead a materialized
view marks each (minute, streamer) written (``rollup_marks``), and each run of this job recomputes those
minutes from ``tallies_10s FINAL`` (summed across source partitions) into ``tallies_1m``, then the hours
they touch from ``tallies_1m FINAL`` into ``tallies_1h``. Recomputing from the source is idempotent:
overlapping runs, several workers running it, or a crash half-way never double count.

Hours are only rolled once complete (the newest window has moved past them) or when late data touches
an hour that already was; ``rollup_state`` records up to where each level is complete, and the query
layer reads anything newer from the finer level. The marks are read with an overlap (``OVERLAP_MS``)
so that a flush still being written when a run reads the marks is picked up by the next run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from .metrics import REGISTRY
from .sink import Sink

log = logging.getLogger(__name__)

OVERLAP_MS = 5_000
STATE_NAME = "default"

RUNS = Counter("streamproc_rollup_runs_total", "Runs of the rollup job", ["outcome"], registry=REGISTRY)
RUN_SECONDS = Histogram("streamproc_rollup_duration_seconds", "Wall time of one rollup run",
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120), registry=REGISTRY)
for _outcome in ("ok", "failed"):
    RUNS.labels(_outcome)

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


@dataclass(frozen=True)
class RollupState:
    """How far the rollups are complete; all epoch milliseconds (0: never ran)."""

    cursor: int = 0
    minutes_upto: int = 0
    hours_upto: int = 0


@dataclass(frozen=True)
class RunResult:
    marks: int
    seconds: float
    state: RollupState


def load_state(sink: Sink) -> RollupState:
    rows = sink.rows(
        "SELECT toUnixTimestamp64Milli(argMax(cursor, updated_at)), toInt64(argMax(minutes_upto, updated_at)) * 1000, "
        "toInt64(argMax(hours_upto, updated_at)) * 1000, count() FROM rollup_state WHERE name = {n:String}",
        {"n": STATE_NAME})
    cursor, minutes, hours, n = rows[0]
    return RollupState(int(cursor), int(minutes), int(hours)) if int(n) else RollupState()


def newest_window_end(sink: Sink, window_ms: int) -> int:
    """End of the newest 10 s window in the data (epoch ms); 0 if there is none."""
    (newest, n), = sink.rows("SELECT toUnixTimestamp64Milli(max(newest_window)), count() FROM tallies_clock")
    return int(newest) + window_ms if int(n) else 0


def run_once(sink: Sink, window_ms: int = 10_000) -> RunResult:
    """One rollup pass: minutes marked since the last pass, then the hours that are due."""
    started = time.perf_counter()
    old = load_state(sink)
    newest_end = newest_window_end(sink, window_ms)  # read before the marks: every mark of it is seen below
    (upto,), = sink.rows("SELECT toUnixTimestamp64Milli(now64(3))")
    upto = int(upto)
    since = max(0, old.cursor - OVERLAP_MS)
    marks = {"since": since, "upto": upto}
    (n, lo, hi), = sink.rows(
        "SELECT count(), toInt64(min(minute)) * 1000, toInt64(max(minute)) * 1000 FROM rollup_marks "
        "WHERE marked_at > fromUnixTimestamp64Milli({since:Int64}, 'UTC') "
        "AND marked_at <= fromUnixTimestamp64Milli({upto:Int64}, 'UTC')", marks)
    n = int(n)
    if n:
        sink.command(_MINUTES_SQL, {**marks, "lo": int(lo), "hi": int(hi) + 60_000})
    minutes_upto = newest_end - newest_end % 60_000
    hours_upto = newest_end - newest_end % 3_600_000
    if hours_upto > old.hours_upto or n:
        lowest = min(old.hours_upto, int(lo) if n else old.hours_upto)
        sink.command(_HOURS_SQL, {**marks, "lo": (lowest - lowest % 3_600_000) // 1000, "done": hours_upto // 1000,
                                  "old_done": old.hours_upto // 1000})
    state = RollupState(upto, max(minutes_upto, old.minutes_upto), max(hours_upto, old.hours_upto))
    sink.command(
        "INSERT INTO rollup_state (name, cursor, minutes_upto, hours_upto) SELECT {n:String}, "
        "fromUnixTimestamp64Milli({c:Int64}, 'UTC'), toDateTime({m:Int64}, 'UTC'), toDateTime({h:Int64}, 'UTC')",
        {"n": STATE_NAME, "c": state.cursor, "m": state.minutes_upto // 1000, "h": state.hours_upto // 1000})
    seconds = time.perf_counter() - started
    RUN_SECONDS.observe(seconds)
    return RunResult(n, seconds, state)


def register(app: Any, worker: Any, interval_s: float) -> None:
    """Run the rollup every ``interval_s`` seconds inside the worker (which owns an embedded store)."""
    import asyncio

    async def rollup_tick() -> None:
        try:
            result = await asyncio.to_thread(run_once, worker.sink, worker.settings.window_ms)
        except Exception as exc:  # the next run recomputes everything still marked
            RUNS.labels("failed").inc()
            log.error("rollup failed (%s: %s); retrying at the next tick", type(exc).__name__, exc)
            return
        RUNS.labels("ok").inc()
        if result.marks:
            log.debug("rollup: %d marks in %.3fs", result.marks, result.seconds)

    app.timer(interval_s, name="streamproc.rollup")(rollup_tick)
