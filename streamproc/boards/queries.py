"""The leaderboard query layer: every board, series and freshness figure that a front end shows.

The CLI, the HTTP API, the live page, the change events and the Grafana dashboard all ask these
functions (or, for Grafana, the same SQL shapes), so they cannot disagree. All SQL is constant text
with bound parameters; the only identifiers that vary (metric, region level) come from fixed maps.

Reading a time range: it is tiled into whole hours from ``tallies_1h``, whole minutes from
``tallies_1m`` and the rest from ``tallies_10s FINAL`` (every 10 s row is a snapshot per source
partition; FINAL keeps the latest and the streamer's partitions are summed here). A coarser level is read
only where it is *proven* current (docs/ARCHITECTURE.md, "Rollup completeness"): a minute is read from
``tallies_1m`` only if no write to it is newer than the last completed rollup pass (no ``rollup_marks``
row after the pass's cursor, less the sink's visibility lag), and an hour from ``tallies_1h`` only if it was rolled as a
whole and none of its minutes is pending. Everything else comes from the 10 s rows, so a board is exact
as soon as a flush lands, whether or not the rollup has run since.
Unique viewers and buyers are exact (``uniqExact``) states at every level, merged over the same tiles.

Time: "now" is ``as_of``, by default the end of the newest 10 s window in the data (not the wall
clock), so a replayed day shows its own boards. ``1m/5m/1h`` are that many whole 10 s windows ending at
``as_of``; ``today`` is the Asia/Shanghai calendar day of ``as_of`` up to ``as_of``.

Definitions: ``views`` = viewer enters; ``unique_viewers`` = distinct viewers who entered;
``concurrent_viewers`` = the audience at the end of the range: the running enters - leaves count
(a leave when nobody is counted does not decrement, so it is never negative) after the streamer's last
view event in the range (0 if none); ``buyers`` = distinct viewers with a paid order; ``conversion`` =
buyers / unique viewers, shown (and ranked) only from ``Request.min_audience`` unique viewers on (null
below it, ranked last); ``gmv`` = paid minus refunded, in fen. A broadcast (``session``) is a run of a streamer's
activity without a gap of ``SESSION_GAP_MS`` or more; tallies are kept per streamer, so the session id
shown is the one its latest order carries.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from typing import Any, Sequence

import orjson

from streamproc.boards.params import (
    DEFAULT_MIN_AUDIENCE,
    MAX_SERIES_MS,
    METRICS,
    SHANGHAI,
    BadParameter,
    Filters,
    Request,
    TimeSpec,
)
from streamproc.boards.rollup import STATE_NAME
from streamproc.core.windows import WINDOW_MS
from streamproc.store import Sink

BUCKET_MS = WINDOW_MS  # the tallies' window: the finest tile
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WINDOW_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": HOUR_MS}
SESSION_GAP_MS = 5 * MINUTE_MS
SESSION_LOOKBACK_MS = 24 * HOUR_MS
_SH_OFFSET_MS = int(SHANGHAI.utcoffset(None).total_seconds() * 1000)

# More ranges than this on one level (many scattered pending minutes) and the tiling reads the whole
# pending stretch from 10 s rows instead: the SQL stays small, and reading finer is always exact.
MAX_RANGES = 24
LEVELS = ("10s", "1m", "1h")
Tiles = dict[str, list[tuple[int, int]]]

# metric -> its score over the per-streamer aggregate t (and u, the audience); a fixed whitelist
_CONVERSION = ("if(u.unique_viewers >= greatest({min_audience:UInt32}, 1), "
               "round(u.buyers / u.unique_viewers, 6), -1.)")
_SCORE = {
    "gmv": "t.gmv_fen",
    "orders": "t.orders",
    "views": "t.views",
    "likes": "t.likes",
    "concurrent_viewers": "t.concurrent_viewers",
    "unique_viewers": "u.unique_viewers",
    "buyers": "u.buyers",
    "conversion": _CONVERSION,
}
_NEEDS_AUDIENCE = {"unique_viewers", "buyers", "conversion"}
_LEVEL_COLUMNS = {
    "province": ("province",),
    "county": ("province", "county"),
    "village": ("province", "county", "village"),
    "category": ("category",),
}
assert set(_SCORE) == set(METRICS)

_DIM = ("name", "platform", "province", "county", "village", "category")
_PLACE_FILTER = (
    "({f_province:String} = '' OR startsWith(s.province, {f_province:String})) AND "
    "({f_county:String} = '' OR startsWith(s.county, {f_county:String})) AND "
    "({f_village:String} = '' OR startsWith(s.village, {f_village:String})) AND "
    "({f_category:String} = '' OR s.category = {f_category:String})"
)
_STREAMERS = "(SELECT streamer_id, " + ", ".join(_DIM) + " FROM streamers FINAL)"


# -- the data clock and time ranges -----------------------------------------------------------------


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


_CLOCKS: dict[int, tuple[float, Clock]] = {}


def clock(sink: Sink, max_age_s: float = 0.0) -> Clock:
    """The data clock; ``max_age_s`` > 0 lets a busy front end share one reading for that long (the
    API does, for a fraction of the flush interval: it saves a query per request)."""
    if max_age_s > 0:
        at, clk = _CLOCKS.get(id(sink), (0.0, None))
        if clk is not None and time.monotonic() - at < max_age_s:
            return clk
    clk = _read_clock(sink)
    _CLOCKS[id(sink)] = (time.monotonic(), clk)
    return clk


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
    return end - WINDOW_MS[spec.window], end


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


def _tile_params(prefix: str, t: Tiles) -> dict[str, int]:
    p: dict[str, int] = {}
    for level in LEVELS:
        div = 1 if level == "10s" else 1000
        for i, (a, b) in enumerate(t[level]):
            p[f"{prefix}{level}_a{i}"], p[f"{prefix}{level}_b{i}"] = a // div, b // div
    return p


def _in_tiles(prefix: str, t: Tiles, level: str, column: str) -> str:
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


# -- sources: rows of every level over a tiling, one streamer or all ---------------------------------

_ONE = "({f_streamer:String} = '' OR streamer_id = {f_streamer:String})"
_LEVEL_NUMBER = {"10s": 0, "1m": 1, "1h": 2}


def _union(t: Tiles, select: dict[str, str]) -> str:
    """One SELECT per level that has ranges, UNION ALL, each with its level number where it says
    ``@lvl``; a tiling with no ranges at all still yields valid, empty SQL."""
    levels = [lv for lv in LEVELS if t[lv]] or ["10s"]
    return " UNION ALL ".join(select[lv].replace("@lvl", str(_LEVEL_NUMBER[lv])) for lv in levels)


def _tally_rows(prefix: str, t: Tiles) -> str:
    """Rows (streamer_id, lvl = 0/1/2 for 10 s/minute/hour, m = minute or hour start, counts,
    concurrent_close, close_at) over the tiles."""
    cols = "enters, likes, orders_paid, gmv_fen, concurrent_close"
    rolled = "SELECT streamer_id, @lvl AS lvl, bucket AS m, {cols}, close_at FROM tallies_{level} FINAL " \
             "WHERE {one} AND {where}"
    return _union(t, {
        "10s": f"SELECT streamer_id, @lvl AS lvl, toStartOfMinute(window_start) AS m, {cols}, "
               "if(enters + leaves > 0, window_start, toDateTime64(0, 3, 'UTC')) AS close_at "
               f"FROM tallies_10s FINAL WHERE {_ONE} AND {_in_tiles(prefix, t, '10s', 'window_start')}",
        **{lv: rolled.format(cols=cols, level=lv, one=_ONE, where=_in_tiles(prefix, t, lv, "bucket"))
           for lv in ("1m", "1h")},
    })


def _audience_rows(prefix: str, t: Tiles, only_ids: bool = False) -> str:
    """Rows (streamer_id, lvl, m, viewers and buyers uniqExact states) over the tiles."""
    ids = " AND has(JSONExtract({ids:String}, 'Array(String)'), streamer_id)" if only_ids else ""
    return _union(t, {
        "10s": "SELECT streamer_id, @lvl AS lvl, toStartOfMinute(window_start) AS m, viewers, buyers "
               f"FROM audience_10s WHERE {_ONE}{ids} AND {_in_tiles(prefix, t, '10s', 'window_start')}",
        **{lv: f"SELECT streamer_id, @lvl AS lvl, bucket AS m, viewers, buyers FROM audience_{lv} "
               f"WHERE {_ONE}{ids} AND {_in_tiles(prefix, t, lv, 'bucket')}" for lv in ("1m", "1h")},
    })




def _totals(r: str = "") -> str:
    """Per-streamer sums over tally rows (``r``: the rows' table alias with its dot, or none)."""
    return (f"sum({r}gmv_fen) AS gmv_fen, sum({r}orders_paid) AS orders, sum({r}enters) AS views, "
            f"sum({r}likes) AS likes, argMax({r}concurrent_close, {r}close_at) AS concurrent_viewers")


def _audience(r: str = "") -> str:
    return f"toUInt64(uniqExactMerge({r}viewers)) AS unique_viewers, toUInt64(uniqExactMerge({r}buyers)) AS buyers"


def _per_streamer(prefix: str, t: Tiles) -> str:
    return f"SELECT streamer_id, {_totals()} FROM ({_tally_rows(prefix, t)}) GROUP BY streamer_id"


def _audience_per_streamer(prefix: str, t: Tiles, state: bool = False, only_ids: bool = False) -> str:
    agg = "uniqExactMergeState(viewers) AS viewers, uniqExactMergeState(buyers) AS buyers" if state else _audience()
    return f"SELECT streamer_id, {agg} FROM ({_audience_rows(prefix, t, only_ids=only_ids)}) GROUP BY streamer_id"


# -- boards ------------------------------------------------------------------------------------------


@dataclass
class Board:
    metric: str
    window: str
    start: int
    end: int
    rows: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "window": self.window, "start": self.start, "end": self.end,
                "as_of": self.end, "rows": self.rows}


def _not_session(spec: TimeSpec) -> TimeSpec:
    """``session`` is a board of its own (each streamer has its own range); elsewhere it has no meaning."""
    if spec.start is None and spec.window == "session":
        raise BadParameter("window", "session is only a leaderboard window (/api/leaderboard)")
    return spec


def _window_label(spec: TimeSpec) -> str:
    return "range" if spec.start is not None else spec.window


def _ids(ids: list[str]) -> str:
    """A list of ids as one bound JSON string (read back with JSONExtract): the same for every driver."""
    return orjson.dumps(ids).decode()


def conversion(buyers: int, unique_viewers: int, min_audience: int) -> float | None:
    """Buyers per unique viewer, or None below the minimum audience: one viewer and one buyer is no
    100 % conversion worth ranking."""
    return round(buyers / unique_viewers, 6) if unique_viewers >= max(min_audience, 1) else None


_INTS = ("gmv_fen", "orders", "views", "likes", "concurrent_viewers", "unique_viewers", "buyers")


def _row(rank: int, r: Sequence[Any], cols: Sequence[str], req: Request) -> dict[str, Any]:
    d = dict(zip(cols, r))
    d["rank"] = rank
    for k in _INTS:
        if k in d:
            d[k] = int(d[k])
    if "gmv_fen" in d:
        d["gmv_yuan"] = yuan(d["gmv_fen"])
    d["conversion"] = conversion(d["buyers"], d["unique_viewers"], req.min_audience)
    d["score"] = d["conversion"] if req.metric == "conversion" else d[_score_key(req.metric)]
    return d


def yuan(fen: int) -> str:
    """Fen as an exact yuan string: 123456 -> '1234.56' (money is never a float here)."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


_BOARD_COLS = ("streamer_id", *_DIM, "gmv_fen", "orders", "views", "likes", "concurrent_viewers", "unique_viewers",
               "buyers")


def _query_params(req: Request, **more: Any) -> dict[str, Any]:
    return {**req.filters.params(), "limit": req.limit, "min_audience": req.min_audience, **more}


def _ranked(sink: Sink, req: Request, totals: str, audience: str, params: dict[str, Any],
            audience_of: Any) -> list[tuple]:
    """The top ``req.limit`` of per-streamer ``totals`` by the metric, dimension joined, audience
    attached: in the ranking query when the metric needs it, else read for the top rows only
    (``audience_of(ids)`` gives that query and its parameters)."""
    needs = req.metric in _NEEDS_AUDIENCE
    sql = f"""
        SELECT t.streamer_id, {", ".join("s." + c for c in _DIM)}, t.gmv_fen, t.orders, t.views, t.likes,
               t.concurrent_viewers, {"u.unique_viewers, u.buyers" if needs else "toUInt64(0), toUInt64(0)"},
               {_SCORE[req.metric]} AS score
        FROM ({totals}) AS t
        {f"LEFT JOIN ({audience}) AS u ON u.streamer_id = t.streamer_id" if needs else ""}
        LEFT JOIN {_STREAMERS} AS s ON s.streamer_id = t.streamer_id
        WHERE {_PLACE_FILTER}
        ORDER BY score DESC, t.streamer_id
        LIMIT {{limit:UInt32}}
    """
    rows = [r[:-1] for r in sink.rows(sql, params)]
    if rows and not needs:
        aud_sql, aud_params = audience_of([r[0] for r in rows])
        aud = {sid: (uv, b) for sid, uv, b in sink.rows(aud_sql, aud_params)}
        rows = [(*r[:-2], *aud.get(r[0], (0, 0))) for r in rows]
    return rows


def leaderboard(sink: Sink, req: Request, clk: Clock | None = None) -> Board:
    """Top ``req.limit`` streamers by ``req.metric`` over ``req.time``, filtered by place."""
    clk = clk or clock(sink)
    if req.time.window == "session" and req.time.start is None:
        return session_board(sink, req, clk)
    start, end = resolve(req.time, clk)
    t = tiles(start, end, clk)
    params = _query_params(req, **_tile_params("c", t))
    rows = _ranked(sink, req, _per_streamer("c", t), _audience_per_streamer("c", t), params,
                   lambda ids: (_audience_per_streamer("c", t, only_ids=True), {**params, "ids": _ids(ids)}))
    out = [_row(i + 1, r, _BOARD_COLS, req) for i, r in enumerate(rows)]
    board = Board(req.metric, _window_label(req.time), start, end, out)
    if req.spark and out:
        add_sparklines(sink, board, req.spark, clk)
    return board


def _score_key(metric: str) -> str:
    return "gmv_fen" if metric == "gmv" else metric


def regions(sink: Sink, req: Request, clk: Clock | None = None) -> Board:
    """Places (or categories) ranked by ``req.metric``: which county sells most."""
    clk = clk or clock(sink)
    start, end = resolve(_not_session(req.time), clk)
    t = tiles(start, end, clk)
    params = _query_params(req, **_tile_params("c", t))
    cols = _LEVEL_COLUMNS[req.level]
    group = ", ".join(f"s.{c}" for c in cols)
    score = _SCORE[req.metric].replace("u.", "").replace("t.", "")  # the column aliases selected below
    sql = f"""
        SELECT {group}, count() AS streamers, sum(t.gmv_fen) AS gmv_fen, sum(t.orders) AS orders,
               sum(t.views) AS views, sum(t.likes) AS likes, sum(t.concurrent_viewers) AS concurrent_viewers,
               toUInt64(uniqExactMerge(u.viewers)) AS unique_viewers, toUInt64(uniqExactMerge(u.buyers)) AS buyers,
               {score} AS score
        FROM ({_per_streamer('c', t)}) AS t
        LEFT JOIN ({_audience_per_streamer('c', t, state=True)}) AS u ON u.streamer_id = t.streamer_id
        LEFT JOIN {_STREAMERS} AS s ON s.streamer_id = t.streamer_id
        WHERE {_PLACE_FILTER}
        GROUP BY {group}
        ORDER BY score DESC, {group}
        LIMIT {{limit:UInt32}}
    """
    names = (*cols, "streamers", "gmv_fen", "orders", "views", "likes", "concurrent_viewers", "unique_viewers", "buyers")
    out = []
    for i, r in enumerate(sink.rows(sql, params)):
        d = _row(i + 1, r[:-1], names, req)
        d["streamers"] = int(d["streamers"])
        out.append(d)
    return Board(req.metric, _window_label(req.time), start, end, out)


def rising(sink: Sink, req: Request, clk: Clock | None = None) -> Board:
    """Streamers whose metric (``by=value``) or rank (``by=rank``) grew most against the previous
    window of equal length. Ranks are over every streamer on the (filtered) board; one absent from
    the previous board counts as ranked just below its last place."""
    clk = clk or clock(sink)
    spec = _not_session(req.time)
    start, end = resolve(spec, clk)
    length = end - start
    cur_t, prev_t = tiles(start, end, clk), tiles(start - length, start, clk)
    params = _query_params(req, **_tile_params("c", cur_t), **_tile_params("p", prev_t))
    needs = req.metric in _NEEDS_AUDIENCE

    def scores(prefix: str, t: Tiles) -> str:
        aud = f"LEFT JOIN ({_audience_per_streamer(prefix, t)}) AS u ON u.streamer_id = t.streamer_id" if needs else ""
        return (f"SELECT t.streamer_id AS streamer_id, {_SCORE[req.metric]} AS score FROM ({_per_streamer(prefix, t)}) "
                f"AS t {aud} LEFT JOIN {_STREAMERS} AS s ON s.streamer_id = t.streamer_id WHERE {_PLACE_FILTER}")

    def score(v: Any) -> float:
        # a conversion under the minimum audience (-1) is no score to grow from: it counts as 0
        return max(float(v), 0.0) if req.metric == "conversion" else float(v)

    def ranked(prefix: str, t: Tiles) -> list[tuple[float, str]]:
        return sorted(((score(v), sid) for sid, v in sink.rows(scores(prefix, t), params)), key=lambda x: (-x[0], x[1]))

    cur, prev = ranked("c", cur_t), ranked("p", prev_t)
    prev_rank = {sid: i + 1 for i, (_, sid) in enumerate(prev)}
    prev_score = {sid: v for v, sid in prev}
    unranked = len(prev) + 1
    moves = []
    for i, (v, sid) in enumerate(cur):
        pr = prev_rank.get(sid, unranked)
        moves.append({"streamer_id": sid, "rank": i + 1, "prev_rank": prev_rank.get(sid), "places_gained": pr - (i + 1),
                      "score": v, "prev_score": prev_score.get(sid, 0.0), "growth": v - prev_score.get(sid, 0.0)})
    key = (lambda m: (-m["growth"], m["rank"])) if req.by == "value" else (lambda m: (-m["places_gained"], m["rank"]))
    top = sorted(moves, key=key)[: req.limit]
    if req.metric != "conversion":
        for m in top:
            for k in ("score", "prev_score", "growth"):
                m[k] = int(m[k])
    dims = _dimension(sink, [m["streamer_id"] for m in top])
    for m in top:
        m.update(dims.get(m["streamer_id"], dict.fromkeys(_DIM, "")))
    return Board(req.metric, _window_label(spec), start, end, top)


def _dimension(sink: Sink, ids: list[str]) -> dict[str, dict[str, str]]:
    if not ids:
        return {}
    rows = sink.rows(f"SELECT streamer_id, {', '.join(_DIM)} FROM streamers FINAL WHERE has(JSONExtract({{ids:String}}, 'Array(String)'), streamer_id)",
                     {"ids": _ids(ids)})
    return {r[0]: dict(zip(_DIM, r[1:])) for r in rows}


# -- sessions ----------------------------------------------------------------------------------------


def session_board(sink: Sink, req: Request, clk: Clock | None = None) -> Board:
    """Each live streamer's current broadcast, ranked by ``req.metric`` over that broadcast.

    A broadcast starts at the first minute after the streamer's last gap of ``SESSION_GAP_MS`` (looking
    back ``SESSION_LOOKBACK_MS``) and is live if the streamer was active within the gap before as_of.
    First the starts (presence of rows is enough, so no FINAL), then the sums over each streamer's own
    range [start, as_of): one tiling from the earliest start, where a row counts for a streamer if it
    begins at or after that streamer's start. An hour read whole that holds some streamer's start is
    also read by its minutes, so that streamer's part of it is there; its other streamers take the hour
    row and skip those minutes.
    """
    clk = clk or clock(sink)
    start, end = resolve(TimeSpec("session", as_of=req.time.as_of), clk)
    began = _session_starts(sink, req.filters, start, end, clk)
    if not began:
        return Board(req.metric, "session", start, end, [])
    t = tiles(min(began.values()), end, clk)
    split = {b - b % HOUR_MS for b in began.values() if b % HOUR_MS}
    hours = t["1h"]
    t = {**t, "1m": sorted(t["1m"] + [(h, h + HOUR_MS) for h in split if any(a <= h < b for a, b in hours)])}
    params = _query_params(req, **_tile_params("c", t), starts=orjson.dumps(sorted(began.items())).decode())
    # a minute row counts unless its hour was read whole and lies inside the streamer's broadcast
    keep = (f"r.m >= st.began AND (r.lvl != 1 OR NOT (toStartOfHour(r.m) >= st.began AND "
            f"{_in_tiles('c', t, '1h', 'toStartOfHour(r.m)')}))")
    starts = ("SELECT tupleElement(x, 1) AS streamer_id, toDateTime(intDiv(tupleElement(x, 2), 1000), 'UTC') AS began "
              "FROM (SELECT arrayJoin(JSONExtract({starts:String}, 'Array(Tuple(String, Int64))')) AS x)")
    totals = (f"SELECT r.streamer_id AS streamer_id, {_totals('r.')} "
              f"FROM ({_tally_rows('c', t)}) AS r INNER JOIN ({starts}) AS st ON st.streamer_id = r.streamer_id "
              f"WHERE {keep} GROUP BY r.streamer_id")
    audience = (f"SELECT r.streamer_id AS streamer_id, {_audience('r.')} "
                f"FROM ({_audience_rows('c', t)}) AS r INNER JOIN ({starts}) AS st ON st.streamer_id = r.streamer_id "
                f"WHERE {keep} GROUP BY r.streamer_id")

    def audience_of(ids: list[str]) -> tuple[str, dict[str, Any]]:
        return audience, {**params, "starts": orjson.dumps(sorted((sid, began[sid]) for sid in ids)).decode()}

    rows = _ranked(sink, req, totals, audience, params, audience_of)
    sessions = _session_ids(sink, [r[0] for r in rows], start, end)
    out = []
    for i, r in enumerate(rows):
        d = _row(i + 1, r, _BOARD_COLS, req)
        d["session_start"] = began[d["streamer_id"]]
        d["session_id"] = sessions.get(d["streamer_id"], "")
        out.append(d)
    return Board(req.metric, "session", start, end, out)


def _session_starts(sink: Sink, filters: Filters, start: int, end: int, clk: Clock) -> dict[str, int]:
    """streamer -> start (ms) of its live broadcast at ``end``: its minutes with rows, after the last gap."""
    t = tiles(start, end, clk, hours=False)
    params = {**_tile_params("c", t), **filters.params(),
              "gap": SESSION_GAP_MS // 1000, "live_from": (end - SESSION_GAP_MS) // 1000}
    minutes = _union(t, {
        "1m": f"SELECT streamer_id, bucket AS m FROM tallies_1m WHERE {_ONE} AND {_in_tiles('c', t, '1m', 'bucket')}",
        "10s": "SELECT streamer_id, toStartOfMinute(window_start) AS m FROM tallies_10s "
               f"WHERE {_ONE} AND {_in_tiles('c', t, '10s', 'window_start')}",
    })
    sql = f"""
        SELECT streamer_id, toInt64(toUnixTimestamp(
                   arrayLast((x, p) -> x - p >= {{gap:Int64}}, ms, arrayPushFront(arrayPopBack(ms), toDateTime(0, 'UTC'))))) * 1000
        FROM (SELECT streamer_id, arraySort(groupUniqArray(m)) AS ms FROM ({minutes})
              GROUP BY streamer_id
              HAVING ms[-1] >= toStartOfMinute(toDateTime({{live_from:Int64}}, 'UTC')))
    """
    return {sid: int(ms) for sid, ms in sink.rows(sql, params)}


def _session_ids(sink: Sink, ids: list[str], start: int, end: int) -> dict[str, str]:
    if not ids:
        return {}
    return dict(sink.rows(
        "SELECT streamer_id, argMax(session_id, ts) FROM orders "
        "WHERE ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({hi:Int64}, 'UTC') "
        "AND has(JSONExtract({ids:String}, 'Array(String)'), streamer_id) GROUP BY streamer_id",
        {"lo": start, "hi": end, "ids": _ids(ids)}))


# -- one streamer ------------------------------------------------------------------------------------


def streamer(sink: Sink, streamer_id: str, spec: TimeSpec, clk: Clock | None = None,
             min_audience: int = DEFAULT_MIN_AUDIENCE) -> dict[str, Any] | None:
    """One streamer: who, its totals over ``spec``, and its current broadcast; None if unknown."""
    clk = clk or clock(sink)
    f = Filters(streamer_id=streamer_id)
    board = leaderboard(sink, Request(metric="gmv", time=_not_session(spec), filters=f, limit=1,
                                      min_audience=min_audience), clk)
    session = session_board(sink, Request(metric="gmv", time=TimeSpec("session", as_of=spec.as_of), filters=f,
                                          limit=1, min_audience=min_audience), clk)
    ranked = board.rows or session.rows  # a ranked row carries the dimension already (joined, '' if absent)
    info = {c: ranked[0][c] for c in _DIM} if ranked else _dimension(sink, [streamer_id]).get(streamer_id)
    if info is None:
        return None
    totals = board.rows[0] if board.rows else None
    return {
        "streamer_id": streamer_id,
        **info,
        "window": {"window": board.window, "start": board.start, "end": board.end, "totals": _metrics_only(totals)},
        "session": ({"start": session.rows[0]["session_start"], "session_id": session.rows[0]["session_id"],
                     "totals": _metrics_only(session.rows[0])} if session.rows else None),
    }


_METRIC_KEYS = ("gmv_fen", "gmv_yuan", "orders", "views", "likes", "unique_viewers", "buyers", "concurrent_viewers",
                "conversion")


def _metrics_only(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {**dict.fromkeys(_METRIC_KEYS, 0), "gmv_yuan": "0.00", "conversion": None}
    return {k: row[k] for k in _METRIC_KEYS}


# -- per-minute series -------------------------------------------------------------------------------

_SERIES_VALUE = {
    "gmv": "sum(gmv_fen)", "orders": "sum(orders_paid)", "views": "sum(enters)", "likes": "sum(likes)",
    "concurrent_viewers": "argMax(concurrent_close, close_at)",
}


def series(sink: Sink, req: Request, clk: Clock | None = None) -> dict[str, Any]:
    """Per-minute values of ``req.metric`` for one streamer or for everyone matching the place filters
    (a region), over ``req.time`` (a named window or a range of at most a day), zeros included. Each
    point covers its minute up to the range's end: the newest point is the minute so far."""
    clk = clk or clock(sink)
    start, end = resolve(_not_session(req.time), clk)
    if end - start > MAX_SERIES_MS:
        raise BadParameter("end", f"a series spans at most {MAX_SERIES_MS // HOUR_MS} hours (one point a minute)")
    first = start - start % MINUTE_MS
    t = tiles(first, end, clk, hours=False)
    params = _query_params(req, **_tile_params("c", t), any_place=int(req.filters.any_place))
    who = f"({{any_place:UInt8}} = 0 OR streamer_id IN (SELECT streamer_id FROM {_STREAMERS} AS s WHERE {_PLACE_FILTER}))"
    values: dict[int, dict[str, int]] = {}
    if req.metric in _NEEDS_AUDIENCE:
        sql = (f"SELECT toInt64(toUnixTimestamp(m)) * 1000, {_audience()} FROM ({_audience_rows('c', t)}) "
               f"WHERE {who} GROUP BY m")
        for m, uv, b in sink.rows(sql, params):
            values.setdefault(int(m), {}).update(unique_viewers=int(uv), buyers=int(b))
    if req.metric in _SERIES_VALUE:
        sql = (f"SELECT toInt64(toUnixTimestamp(m)) * 1000, sum(v) FROM (SELECT m, streamer_id, "
               f"{_SERIES_VALUE[req.metric]} AS v FROM ({_tally_rows('c', t)}) WHERE {who} GROUP BY m, streamer_id) "
               "GROUP BY m")
        for m, v in sink.rows(sql, params):
            values.setdefault(int(m), {})[req.metric] = int(v)
    points = []
    for m in range(first, end, MINUTE_MS):
        got = values.get(m, {})
        if req.metric == "conversion":
            v: float | int | None = conversion(got.get("buyers", 0), got.get("unique_viewers", 0), req.min_audience)
        else:
            v = got.get(req.metric, 0)
        points.append([m, v])
    return {"metric": req.metric, "start": first, "end": end, "step_ms": MINUTE_MS, "points": points}


def add_sparklines(sink: Sink, board: Board, minutes: int, clk: Clock) -> None:
    """Per-minute GMV of the last ``minutes`` minutes (ending at the board's end) for each row."""
    end = board.end
    first = end - end % MINUTE_MS - (minutes - 1) * MINUTE_MS
    if end % MINUTE_MS == 0:
        first -= MINUTE_MS  # end on a minute: the last point is the whole minute before it
    t = tiles(first, end, clk, hours=False)
    params = {**_tile_params("c", t), **Filters().params(), "ids": _ids([r["streamer_id"] for r in board.rows])}
    sql = (f"SELECT streamer_id, toInt64(toUnixTimestamp(m)) * 1000, sum(gmv_fen) FROM ({_tally_rows('c', t)}) "
           "WHERE has(JSONExtract({ids:String}, 'Array(String)'), streamer_id) GROUP BY streamer_id, m")
    got: dict[tuple[str, int], int] = {(sid, int(m)): int(v) for sid, m, v in sink.rows(sql, params)}
    for r in board.rows:
        r["spark"] = [got.get((r["streamer_id"], m), 0) for m in range(first, end, MINUTE_MS)]


# -- freshness ---------------------------------------------------------------------------------------


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
