"""Event-time rules: which window an event belongs to, and whether it is too late.

Both are pure functions of the log, never of the wall clock, so that a replay at any speed reaches the
same verdicts as the live run (docs/ARCHITECTURE.md, invariant 3).
"""

from __future__ import annotations

# The tumbling window: a constant of the schema (tallies_10s, the query layer's 10 s tiles, the rollups
# to whole minutes), not a setting: a different length would need other tables, not another number.
WINDOW_MS = 10_000


def window_start(ts: int, window_ms: int) -> int:
    """Start (epoch ms) of the tumbling window holding ``ts``."""
    return ts - ts % window_ms


def is_late(ts: int, watermark: int | None, lateness_ms: int) -> bool:
    """Late if older than the streamer's own highest event time seen so far minus the allowed lateness.

    ``watermark`` is per key (streamer) and per source partition, advanced in log order, which Kafka
    preserves per key. ``None`` means the key has no events yet: its first event is never late.
    """
    return watermark is not None and ts < watermark - lateness_ms


def window_closed(start: int, watermark: int, window_ms: int, lateness_ms: int) -> bool:
    """True once no event of this key can be accepted into the window any more."""
    return start + window_ms <= watermark - lateness_ms
