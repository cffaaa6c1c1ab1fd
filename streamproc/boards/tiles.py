"""Tiling a time range over the three levels, and the SQL rows each level gives.

A range is tiled into whole hours from ``tallies_1h``, whole minutes from ``tallies_1m`` and the rest from
``tallies_10s FINAL`` (every 10 s row is a snapshot per source partition; FINAL keeps the latest and the
streamer's partitions are summed here). A coarser level is read only where it is *proven* current
(docs/ARCHITECTURE.md, "Rollup completeness"): a minute only if no write to it is newer than the last
completed rollup pass, an hour only if rolled whole with none of its minutes pending. Everything else
comes from the 10 s rows, so a board is exact as soon as a flush lands. Unique viewers and buyers are
exact (``uniqExact``) states at every level, merged over the same tiles.
"""

from __future__ import annotations

import bisect

from streamproc.boards.clock import HOUR_MS, MINUTE_MS, Clock

# More ranges than this on one level (many scattered pending minutes) and the tiling reads the whole
# pending stretch from 10 s rows instead: the SQL stays small, and reading finer is always exact.
# More ranges than this on one level (many scattered pending minutes) and the tiling reads the whole
# pending stretch from 10 s rows instead: the SQL stays small, and reading finer is always exact.
MAX_RANGES = 24


LEVELS = ("10s", "1m", "1h")


Tiles = dict[str, list[tuple[int, int]]]


def tiles(start: int, end: int, clk: Clock, hours: bool = True) -> Tiles:
    """Cover [start, end) once: whole hours from the hour level where ``clk`` proves them current,
    whole minutes from the minute level where not pending, the rest from 10 s rows."""
    pending = sorted(clk.pending_minutes)
    t = _cover(start, end, clk.hours_upto if hours else 0, pending)
    if max(len(r) for r in t.values()) > MAX_RANGES:
        inside = [m for m in pending if start - MINUTE_MS < m < end]
        t = _cover(start, end, clk.hours_upto if hours else 0, list(range(inside[0], inside[-1] + 1, MINUTE_MS)))
    return t


def _cover(start: int, end: int, hours_upto: int, pending: list[int]) -> Tiles:
    out: Tiles = {level: [] for level in LEVELS}
    pending_set = set(pending)

    def add(level: str, a: int, b: int) -> None:
        ranges = out[level]
        if ranges and ranges[-1][1] == a:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))

    t = start
    while t < end:
        if (t % HOUR_MS == 0 and t + HOUR_MS <= min(end, hours_upto)
                and bisect.bisect_left(pending, t) == bisect.bisect_left(pending, t + HOUR_MS)):
            add("1h", t, t + HOUR_MS)
            t += HOUR_MS
        elif t % MINUTE_MS == 0 and t + MINUTE_MS <= end and t not in pending_set:
            add("1m", t, t + MINUTE_MS)
            t += MINUTE_MS
        else:
            step = min(end, t - t % MINUTE_MS + MINUTE_MS)
            add("10s", t, step)
            t = step
    return out


def tile_params(prefix: str, t: Tiles) -> dict[str, int]:
    p: dict[str, int] = {}
    for level in LEVELS:
        div = 1 if level == "10s" else 1000
        for i, (a, b) in enumerate(t[level]):
            p[f"{prefix}{level}_a{i}"], p[f"{prefix}{level}_b{i}"] = a // div, b // div
    return p


def in_tiles(prefix: str, t: Tiles, level: str, column: str) -> str:
    """``column`` inside one of the level's ranges; the ranges are bound parameters (their count only
    shapes the text), and each is a plain comparison the primary key can use."""
    if level == "10s":
        bound = "fromUnixTimestamp64Milli({{{}:Int64}}, 'UTC')"
    else:
        bound = "toDateTime({{{}:Int64}}, 'UTC')"
    parts = [
        f"({column} >= {bound.format(f'{prefix}{level}_a{i}')} AND {column} < {bound.format(f'{prefix}{level}_b{i}')})"
        for i in range(len(t[level]))
    ]
    return "(" + (" OR ".join(parts) or "0") + ")"


ONE = "({f_streamer:String} = '' OR streamer_id = {f_streamer:String})"


_LEVEL_NUMBER = {"10s": 0, "1m": 1, "1h": 2}


def union(t: Tiles, select: dict[str, str]) -> str:
    """One SELECT per level that has ranges, UNION ALL, each with its level number where it says
    ``@lvl``; a tiling with no ranges at all still yields valid, empty SQL."""
    levels = [lv for lv in LEVELS if t[lv]] or ["10s"]
    return " UNION ALL ".join(select[lv].replace("@lvl", str(_LEVEL_NUMBER[lv])) for lv in levels)


def tally_rows(prefix: str, t: Tiles, extra: tuple[str, ...] = ()) -> str:
    """Rows (streamer_id, lvl = 0/1/2 for 10 s/minute/hour, m = minute or hour start, counts,
    concurrent_close, close_at) over the tiles; ``extra`` names more tally columns every level has
    (``orders_refunded``, ``refund_fen``: the dashboard's refunds), from a fixed list of the caller."""
    cols = ", ".join(("enters", "likes", "orders_paid", "gmv_fen", "concurrent_close", *extra))
    rolled = "SELECT streamer_id, @lvl AS lvl, bucket AS m, {cols}, close_at FROM tallies_{level} FINAL " \
             "WHERE {one} AND {where}"
    return union(t, {
        "10s": f"SELECT streamer_id, @lvl AS lvl, toStartOfMinute(window_start) AS m, {cols}, "
               "if(enters + leaves > 0, window_start, toDateTime64(0, 3, 'UTC')) AS close_at "
               f"FROM tallies_10s FINAL WHERE {ONE} AND {in_tiles(prefix, t, '10s', 'window_start')}",
        **{lv: rolled.format(cols=cols, level=lv, one=ONE, where=in_tiles(prefix, t, lv, "bucket"))
           for lv in ("1m", "1h")},
    })


def audience_rows(prefix: str, t: Tiles, only_ids: bool = False) -> str:
    """Rows (streamer_id, lvl, m, viewers and buyers uniqExact states) over the tiles."""
    ids = " AND has(JSONExtract({ids:String}, 'Array(String)'), streamer_id)" if only_ids else ""
    return union(t, {
        "10s": "SELECT streamer_id, @lvl AS lvl, toStartOfMinute(window_start) AS m, viewers, buyers "
               f"FROM audience_10s WHERE {ONE}{ids} AND {in_tiles(prefix, t, '10s', 'window_start')}",
        **{lv: f"SELECT streamer_id, @lvl AS lvl, bucket AS m, viewers, buyers FROM audience_{lv} "
               f"WHERE {ONE}{ids} AND {in_tiles(prefix, t, lv, 'bucket')}" for lv in ("1m", "1h")},
    })


def totals(r: str = "") -> str:
    """Per-streamer sums over tally rows (``r``: the rows' table alias with its dot, or none)."""
    return (f"sum({r}gmv_fen) AS gmv_fen, sum({r}orders_paid) AS orders, sum({r}enters) AS views, "
            f"sum({r}likes) AS likes, argMax({r}concurrent_close, {r}close_at) AS concurrent_viewers")


def audience(r: str = "") -> str:
    return f"toUInt64(uniqExactMerge({r}viewers)) AS unique_viewers, toUInt64(uniqExactMerge({r}buyers)) AS buyers"


def per_streamer(prefix: str, t: Tiles) -> str:
    return f"SELECT streamer_id, {totals()} FROM ({tally_rows(prefix, t)}) GROUP BY streamer_id"


def audience_per_streamer(prefix: str, t: Tiles, state: bool = False, only_ids: bool = False) -> str:
    agg = "uniqExactMergeState(viewers) AS viewers, uniqExactMergeState(buyers) AS buyers" if state else audience()
    return f"SELECT streamer_id, {agg} FROM ({audience_rows(prefix, t, only_ids=only_ids)}) GROUP BY streamer_id"
