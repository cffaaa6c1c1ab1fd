"""Leaderboard queries over the sink. All SQL uses bound parameters; metric names come from a whitelist.

Rows of one streamer from different source partitions are summed here, at query time (FINAL keeps only
the latest snapshot of each window and partition).
"""

from __future__ import annotations

from typing import Any

from .sink import Sink

METRICS = {
    "gmv": "sum(t.gmv_fen)",
    "orders": "sum(t.orders_paid)",
    "views": "sum(t.enters)",
    "likes": "sum(t.likes)",
}


def top(sink: Sink, metric: str = "gmv", seconds: int = 300, limit: int = 10) -> list[dict[str, Any]]:
    """Top streamers over the last ``seconds`` of event time, ending at the newest window."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    sql = f"""
        WITH (SELECT max(window_start) FROM tallies_10s) AS newest
        SELECT t.streamer_id, any(s.name), any(s.province), any(s.county),
               sum(t.gmv_fen), sum(t.orders_paid), sum(t.enters), sum(t.likes), {METRICS[metric]} AS score
        FROM tallies_10s AS t FINAL
        LEFT JOIN streamers AS s ON s.streamer_id = t.streamer_id
        WHERE t.window_start > newest - toIntervalSecond({{seconds:UInt32}})
        GROUP BY t.streamer_id
        ORDER BY score DESC, t.streamer_id
        LIMIT {{limit:UInt32}}
    """
    cols = ("streamer_id", "name", "province", "county", "gmv_fen", "orders", "views", "likes", "score")
    return [dict(zip(cols, r)) for r in sink.rows(sql, {"seconds": seconds, "limit": limit})]
