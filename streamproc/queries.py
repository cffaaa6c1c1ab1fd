"""The leaderboard query layer: every board, series and freshness figure that a front end shows.

The CLI, the HTTP API, the live page, the change events and the Grafana dashboard all ask these
functions (or, for Grafana, the same SQL shapes), so they cannot disagree. All SQL is constant text
with bound parameters; the only identifiers that vary (metric, region level) come from fixed maps.

Reading a time range: it is tiled into whole hours from ``tallies_1h``, whole minutes from
``tallies_1m`` and the rest from ``tallies_10s FINAL`` (every 10 s row is a snapshot per source
partition; FINAL keeps the latest and the streamer's partitions are summed here). The rollup job
(``rollup.py``) says up to where each coarser level is complete; newer time always comes from a finer
level: new time is on the boards as soon as it is flushed, and a late change to a minute already rolled
up reaches them at the next rollup run.
Unique viewers are uniq states at every level, merged over the same tiles.

Time: "now" is ``as_of``, by default the end of the newest 10 s window in the data (not the wall
clock), so a replayed day shows its own boards. ``1m/5m/1h`` are that many whole 10 s windows ending at
``as_of``; ``today`` is the Asia/Shanghai calendar day of ``as_of`` up to ``as_of``.

Definitions: ``views`` = viewer enters; ``unique_viewers`` = distinct viewers who entered;
``concurrent_viewers`` = the audience at the end of the range: the running enters - leaves count
after the streamer's last view event in the range (0 if none); ``conversion`` = paid orders per unique
viewer; ``gmv`` = paid minus refunded, in fen. A broadcast (``session``) is a run of a streamer's
activity without a gap of ``SESSION_GAP_MS`` or more; tallies are kept per streamer, so the session id
shown is the one its latest order carries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from typing import Any, Sequence

from .query_params import MAX_SERIES_MS, METRICS, SHANGHAI, BadParameter, Filters, Request, TimeSpec
from .rollup import OVERLAP_MS, STATE_NAME
from .sink import Sink

BUCKET_MS = 10_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WINDOW_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": HOUR_MS}
SESSION_GAP_MS = 5 * MINUTE_MS
SESSION_LOOKBACK_MS = 24 * HOUR_MS
_SH_OFFSET_MS = int(SHANGHAI.utcoffset(None).total_seconds() * 1000)

LEVEL_SLOTS = {"10s": 4, "1m": 2, "1h": 1}  # ranges per level a tiling can produce
Tiles = dict[str, list[tuple[int, int]]]

# metric -> its score over the per-streamer aggregate t (and u, unique viewers); a fixed whitelist
_SCORE = {
    "gmv": "t.gmv_fen",
    "orders": "t.orders",
    "views": "t.views",
    "likes": "t.likes",
    "concurrent_viewers": "t.concurrent_viewers",
    "unique_viewers": "u.unique_viewers",
    "conversion": "if(u.unique_viewers = 0, 0., t.orders / u.unique_viewers)",
}
_NEEDS_UV = {"unique_viewers", "conversion"}
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
    """Where the data and the rollups stand; epoch ms, 0 when there is nothing yet."""

    newest_end: int
    newest_event: int
    newest_flush: int
    minutes_upto: int
    hours_upto: int
    rollup_cursor: int


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
    (nw, ne, nf, n, mu, hu, cur), = sink.rows(
        "SELECT toUnixTimestamp64Milli(max(newest_window)), toUnixTimestamp64Milli(max(newest_event)), "
        "toUnixTimestamp64Milli(max(newest_flush)), count(), "
        "(SELECT toInt64(argMax(minutes_upto, updated_at)) * 1000 FROM rollup_state WHERE name = {n:String}), "
        "(SELECT toInt64(argMax(hours_upto, updated_at)) * 1000 FROM rollup_state WHERE name = {n:String}), "
        "(SELECT toUnixTimestamp64Milli(argMax(cursor, updated_at)) FROM rollup_state WHERE name = {n:String}) "
        "FROM tallies_clock", {"n": STATE_NAME})
    if not int(n):
        return Clock(0, 0, 0, 0, 0, 0)
    return Clock(int(nw) + BUCKET_MS, int(ne), int(nf), int(mu), int(hu), int(cur))


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


def tiles(start: int, end: int, minutes_upto: int, hours_upto: int) -> Tiles:
    """Cover [start, end) with whole hours and minutes where those rollups are complete, else 10 s."""
    out: Tiles = {"10s": [], "1m": [], "1h": []}

    def fine(a: int, b: int) -> None:
        ms, me = _ceil(a, MINUTE_MS), min(b - b % MINUTE_MS, minutes_upto)
        if ms < me:
            out["1m"].append((ms, me))
            out["10s"] += [(x, y) for x, y in ((a, ms), (me, b)) if x < y]
        elif a < b:
            out["10s"].append((a, b))

    hs, he = _ceil(start, HOUR_MS), min(end - end % HOUR_MS, hours_upto)
    if hs < he:
        out["1h"].append((hs, he))
        fine(start, hs)
        fine(he, end)
    else:
        fine(start, end)
    return out


def _tile_params(prefix: str, t: Tiles) -> dict[str, int]:
    p: dict[str, int] = {}
    for level, n in LEVEL_SLOTS.items():
        ranges = t[level] + [(0, 0)] * (n - len(t[level]))
        for i, (a, b) in enumerate(ranges):
            div = 1 if level == "10s" else 1000
            p[f"{prefix}{level}_a{i}"], p[f"{prefix}{level}_b{i}"] = a // div, b // div
    return p


def _in_tiles(prefix: str, level: str, column: str) -> str:
    if level == "10s":
        bound = "fromUnixTimestamp64Milli({{{}:Int64}}, 'UTC')"
    else:
        bound = "toDateTime({{{}:Int64}}, 'UTC')"
    parts = [
        f"({column} >= {bound.format(f'{prefix}{level}_a{i}')} AND {column} < {bound.format(f'{prefix}{level}_b{i}')})"
        for i in range(LEVEL_SLOTS[level])
    ]
    return "(" + " OR ".join(parts) + ")"


# -- sources: rows of every level over a tiling, one streamer or all ---------------------------------

_ONE = "({f_streamer:String} = '' OR streamer_id = {f_streamer:String})"


def _tally_rows(prefix: str, hours: bool = True) -> str:
    """Rows (streamer_id, lvl = 0/1/2 for 10 s/minute/hour, m = minute or hour start, counts,
    concurrent_close, close_at) over the tiles."""
    cols = "enters, likes, orders_paid, gmv_fen, concurrent_close"
    parts = [
        f"SELECT streamer_id, 0 AS lvl, toStartOfMinute(window_start) AS m, {cols}, "
        "if(enters + leaves > 0, window_start, toDateTime64(0, 3, 'UTC')) AS close_at "
        f"FROM tallies_10s FINAL WHERE {_ONE} AND {_in_tiles(prefix, '10s', 'window_start')}",
        f"SELECT streamer_id, 1 AS lvl, bucket AS m, {cols}, close_at FROM tallies_1m FINAL "
        f"WHERE {_ONE} AND {_in_tiles(prefix, '1m', 'bucket')}",
    ]
    if hours:
        parts.append(f"SELECT streamer_id, 2 AS lvl, bucket AS m, {cols}, close_at FROM tallies_1h FINAL "
                     f"WHERE {_ONE} AND {_in_tiles(prefix, '1h', 'bucket')}")
    return " UNION ALL ".join(parts)


def _viewer_rows(prefix: str, hours: bool = True, only_ids: bool = False) -> str:
    """Rows (streamer_id, lvl, m, viewers uniq state) over the tiles."""
    ids = " AND has(JSONExtract({ids:String}, 'Array(String)'), streamer_id)" if only_ids else ""
    parts = [
        f"SELECT streamer_id, 0 AS lvl, toStartOfMinute(window_start) AS m, viewers FROM unique_viewers_10s "
        f"WHERE {_ONE}{ids} AND {_in_tiles(prefix, '10s', 'window_start')}",
        f"SELECT streamer_id, 1 AS lvl, bucket AS m, viewers FROM unique_viewers_1m "
        f"WHERE {_ONE}{ids} AND {_in_tiles(prefix, '1m', 'bucket')}",
    ]
    if hours:
        parts.append(f"SELECT streamer_id, 2 AS lvl, bucket AS m, viewers FROM unique_viewers_1h "
                     f"WHERE {_ONE}{ids} AND {_in_tiles(prefix, '1h', 'bucket')}")
    return " UNION ALL ".join(parts)


def _per_streamer(prefix: str) -> str:
    return (
        "SELECT streamer_id, sum(gmv_fen) AS gmv_fen, sum(orders_paid) AS orders, sum(enters) AS views, "
        "sum(likes) AS likes, argMax(concurrent_close, close_at) AS concurrent_viewers "
        f"FROM ({_tally_rows(prefix)}) GROUP BY streamer_id"
    )


def _uv_per_streamer(prefix: str, state: bool = False, only_ids: bool = False) -> str:
    agg = "uniqMergeState(viewers) AS uv_state" if state else "toUInt64(uniqMerge(viewers)) AS unique_viewers"
    return f"SELECT streamer_id, {agg} FROM ({_viewer_rows(prefix, only_ids=only_ids)}) GROUP BY streamer_id"


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


def _conversion(orders: int, uv: int) -> float:
    return round(orders / uv, 6) if uv else 0.0


def _row(rank: int, r: Sequence[Any], cols: Sequence[str]) -> dict[str, Any]:
    d = dict(zip(cols, r))
    d["rank"] = rank
    for k in ("gmv_fen", "orders", "views", "likes", "concurrent_viewers", "unique_viewers"):
        if k in d:
            d[k] = int(d[k])
    if "gmv_fen" in d:
        d["gmv_yuan"] = yuan(d["gmv_fen"])
    if "unique_viewers" in d and "orders" in d:
        d["conversion"] = _conversion(d["orders"], d["unique_viewers"])
    return d


def yuan(fen: int) -> str:
    """Fen as an exact yuan string: 123456 -> '1234.56' (money is never a float here)."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


_BOARD_COLS = ("streamer_id", *_DIM, "gmv_fen", "orders", "views", "likes", "concurrent_viewers", "unique_viewers")


def leaderboard(sink: Sink, req: Request, clk: Clock | None = None) -> Board:
    """Top ``req.limit`` streamers by ``req.metric`` over ``req.time``, filtered by place."""
    clk = clk or clock(sink)
    if req.time.window == "session" and req.time.start is None:
        return session_board(sink, req, clk)
    start, end = resolve(req.time, clk)
    params: dict[str, Any] = {**_tile_params("c", tiles(start, end, clk.minutes_upto, clk.hours_upto)),
                              **req.filters.params(), "limit": req.limit}
    needs_uv = req.metric in _NEEDS_UV
    uv_join = f"LEFT JOIN ({_uv_per_streamer('c')}) AS u ON u.streamer_id = t.streamer_id" if needs_uv else ""
    sql = f"""
        SELECT t.streamer_id, {", ".join("s." + c for c in _DIM)}, t.gmv_fen, t.orders, t.views, t.likes,
               t.concurrent_viewers, {"u.unique_viewers" if needs_uv else "toUInt64(0)"}, {_SCORE[req.metric]} AS score
        FROM ({_per_streamer('c')}) AS t
        {uv_join}
        LEFT JOIN {_STREAMERS} AS s ON s.streamer_id = t.streamer_id
        WHERE {_PLACE_FILTER}
        ORDER BY score DESC, t.streamer_id
        LIMIT {{limit:UInt32}}
    """
    rows = sink.rows(sql, params)
    if rows and not needs_uv:
        uv = dict(sink.rows(_uv_per_streamer("c", only_ids=True), {**params, "ids": _ids([r[0] for r in rows])}))
        rows = [(*r[:-2], uv.get(r[0], 0), r[-1]) for r in rows]
    out = []
    for i, r in enumerate(rows):
        d = _row(i + 1, r[:-1], _BOARD_COLS)
        d["score"] = d["conversion"] if req.metric == "conversion" else d[_score_key(req.metric)]
        out.append(d)
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
    params: dict[str, Any] = {**_tile_params("c", tiles(start, end, clk.minutes_upto, clk.hours_upto)),
                              **req.filters.params(), "limit": req.limit}
    cols = _LEVEL_COLUMNS[req.level]
    group = ", ".join(f"s.{c}" for c in cols)
    score = ("if(unique_viewers = 0, 0., orders / unique_viewers)" if req.metric == "conversion"
             else _score_key(req.metric))  # the column aliases selected below
    sql = f"""
        SELECT {group}, count() AS streamers, sum(t.gmv_fen) AS gmv_fen, sum(t.orders) AS orders,
               sum(t.views) AS views, sum(t.likes) AS likes, sum(t.concurrent_viewers) AS concurrent_viewers,
               toUInt64(uniqMerge(u.uv_state)) AS unique_viewers, {score} AS score
        FROM ({_per_streamer('c')}) AS t
        LEFT JOIN ({_uv_per_streamer('c', state=True)}) AS u ON u.streamer_id = t.streamer_id
        LEFT JOIN {_STREAMERS} AS s ON s.streamer_id = t.streamer_id
        WHERE {_PLACE_FILTER}
        GROUP BY {group}
        ORDER BY score DESC, {group}
        LIMIT {{limit:UInt32}}
    """
    names = (*cols, "streamers", "gmv_fen", "orders", "views", "likes", "concurrent_viewers", "unique_viewers")
    out = []
    for i, r in enumerate(sink.rows(sql, params)):
        d = _row(i + 1, r[:-1], names)
        d["streamers"] = int(d["streamers"])
        d["score"] = d["conversion"] if req.metric == "conversion" else d[_score_key(req.metric)]
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
    params: dict[str, Any] = {
        **_tile_params("c", tiles(start, end, clk.minutes_upto, clk.hours_upto)),
        **_tile_params("p", tiles(start - length, start, clk.minutes_upto, clk.hours_upto)),
        **req.filters.params(),
    }
    needs_uv = req.metric in _NEEDS_UV

    def scores(prefix: str) -> str:
        uv = f"LEFT JOIN ({_uv_per_streamer(prefix)}) AS u ON u.streamer_id = t.streamer_id" if needs_uv else ""
        return (f"SELECT t.streamer_id AS streamer_id, {_SCORE[req.metric]} AS score FROM ({_per_streamer(prefix)}) AS t {uv} "
                f"LEFT JOIN {_STREAMERS} AS s ON s.streamer_id = t.streamer_id WHERE {_PLACE_FILTER}")

    cur = sorted(((float(v), sid) for sid, v in sink.rows(scores("c"), params)), key=lambda x: (-x[0], x[1]))
    prev = sorted(((float(v), sid) for sid, v in sink.rows(scores("p"), params)), key=lambda x: (-x[0], x[1]))
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
    range: whole hours from the start's next hour on, minutes around them, 10 s windows at the end.
    """
    clk = clk or clock(sink)
    start, end = resolve(TimeSpec("session", as_of=req.time.as_of), clk)
    began = _session_starts(sink, req.filters, start, end, clk)
    if not began:
        return Board(req.metric, "session", start, end, [])
    bm = max(start, min(end - end % MINUTE_MS, clk.minutes_upto))
    bh = max(start, min(end - end % HOUR_MS, clk.hours_upto, bm))
    lo = min(began.values())
    hi = max(_ceil(b, HOUR_MS) for b in began.values())
    t: Tiles = {"10s": [(bm, end)] if bm < end else [], "1h": [(_ceil(lo, HOUR_MS), bh)] if _ceil(lo, HOUR_MS) < bh else []}
    t["1m"] = [r for r in ([(lo, bm)] if hi >= bh else [(lo, hi), (bh, bm)]) if r[0] < r[1]]
    params: dict[str, Any] = {**_tile_params("c", t), **req.filters.params(), "limit": req.limit, "bh": bh // 1000,
                              "starts": orjson.dumps(sorted(began.items())).decode()}
    # a minute row counts unless its hour was read whole from the hour level
    keep = ("r.m >= st.began AND (r.lvl != 1 OR NOT (toStartOfHour(r.m) >= st.began "
            "AND toStartOfHour(r.m) < toDateTime({bh:Int64}, 'UTC')))")
    starts = ("SELECT tupleElement(x, 1) AS streamer_id, toDateTime(intDiv(tupleElement(x, 2), 1000), 'UTC') AS began "
              "FROM (SELECT arrayJoin(JSONExtract({starts:String}, 'Array(Tuple(String, Int64))')) AS x)")
    totals = f"""
        SELECT r.streamer_id AS streamer_id, sum(r.gmv_fen) AS gmv_fen, sum(r.orders_paid) AS orders,
               sum(r.enters) AS views, sum(r.likes) AS likes, argMax(r.concurrent_close, r.close_at) AS concurrent_viewers
        FROM ({_tally_rows('c')}) AS r INNER JOIN ({starts}) AS st ON st.streamer_id = r.streamer_id
        WHERE {keep} GROUP BY r.streamer_id
    """
    uv = f"""
        SELECT r.streamer_id AS streamer_id, toUInt64(uniqMerge(r.viewers)) AS unique_viewers
        FROM ({_viewer_rows('c')}) AS r INNER JOIN ({starts}) AS st ON st.streamer_id = r.streamer_id
        WHERE {keep} GROUP BY r.streamer_id
    """
    needs_uv = req.metric in _NEEDS_UV
    sql = f"""
        SELECT t.streamer_id, {", ".join("s." + c for c in _DIM)}, t.gmv_fen, t.orders, t.views, t.likes,
               t.concurrent_viewers, {"u.unique_viewers" if needs_uv else "toUInt64(0)"}, {_SCORE[req.metric]} AS score
        FROM ({totals}) AS t
        {f"LEFT JOIN ({uv}) AS u ON u.streamer_id = t.streamer_id" if needs_uv else ""}
        LEFT JOIN {_STREAMERS} AS s ON s.streamer_id = t.streamer_id
        WHERE {_PLACE_FILTER}
        ORDER BY score DESC, t.streamer_id
        LIMIT {{limit:UInt32}}
    """
    rows = sink.rows(sql, params)
    ids = [r[0] for r in rows]
    if rows and not needs_uv:
        top = orjson.dumps(sorted((sid, began[sid]) for sid in ids)).decode()
        uv_rows = dict(sink.rows(uv, {**params, "starts": top}))
        rows = [(*r[:-2], uv_rows.get(r[0], 0), r[-1]) for r in rows]
    sessions = _session_ids(sink, ids, start, end)
    out = []
    for i, r in enumerate(rows):
        d = _row(i + 1, r[:-1], _BOARD_COLS)
        d["session_start"] = began[d["streamer_id"]]
        d["session_id"] = sessions.get(d["streamer_id"], "")
        d["score"] = d["conversion"] if req.metric == "conversion" else d[_score_key(req.metric)]
        out.append(d)
    return Board(req.metric, "session", start, end, out)


def _session_starts(sink: Sink, filters: Filters, start: int, end: int, clk: Clock) -> dict[str, int]:
    """streamer -> start (ms) of its live broadcast at ``end``: its minutes with rows, after the last gap."""
    params = {**_tile_params("c", tiles(start, end, clk.minutes_upto, 0)), **filters.params(),
              "gap": SESSION_GAP_MS // 1000, "live_from": (end - SESSION_GAP_MS) // 1000}
    sql = f"""
        SELECT streamer_id, toInt64(toUnixTimestamp(
                   arrayLast((x, p) -> x - p >= {{gap:Int64}}, ms, arrayPushFront(arrayPopBack(ms), toDateTime(0, 'UTC'))))) * 1000
        FROM (SELECT streamer_id, arraySort(groupUniqArray(m)) AS ms FROM (
                  SELECT streamer_id, bucket AS m FROM tallies_1m WHERE {_ONE} AND {_in_tiles('c', '1m', 'bucket')}
                  UNION ALL
                  SELECT streamer_id, toStartOfMinute(window_start) AS m FROM tallies_10s
                  WHERE {_ONE} AND {_in_tiles('c', '10s', 'window_start')})
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


def streamer(sink: Sink, streamer_id: str, spec: TimeSpec, clk: Clock | None = None) -> dict[str, Any] | None:
    """One streamer: who, its totals over ``spec``, and its current broadcast; None if unknown."""
    clk = clk or clock(sink)
    f = Filters(streamer_id=streamer_id)
    board = leaderboard(sink, Request(metric="gmv", time=_not_session(spec), filters=f, limit=1), clk)
    session = session_board(sink, Request(metric="gmv", time=TimeSpec("session", as_of=spec.as_of), filters=f,
                                          limit=1), clk)
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


def _metrics_only(row: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("gmv_fen", "gmv_yuan", "orders", "views", "likes", "unique_viewers", "concurrent_viewers", "conversion")
    if row is None:
        return {k: ("0.00" if k == "gmv_yuan" else 0) for k in keys}
    return {k: row[k] for k in keys}


# -- per-minute series -------------------------------------------------------------------------------

_SERIES_VALUE = {
    "gmv": "sum(gmv_fen)", "orders": "sum(orders_paid)", "views": "sum(enters)", "likes": "sum(likes)",
    "concurrent_viewers": "argMax(concurrent_close, close_at)",
}


def series(sink: Sink, req: Request, clk: Clock | None = None) -> dict[str, Any]:
    """Per-minute values of ``req.metric`` for one streamer or for everyone matching the place filters
    (a region), over ``req.time`` (a named window or a range of at most a day), zeros included."""
    clk = clk or clock(sink)
    start, end = resolve(_not_session(req.time), clk)
    if end - start > MAX_SERIES_MS:
        raise BadParameter("end", f"a series spans at most {MAX_SERIES_MS // HOUR_MS} hours (one point a minute)")
    first = start - start % MINUTE_MS
    params: dict[str, Any] = {**_tile_params("c", tiles(first, _ceil(end, MINUTE_MS), clk.minutes_upto, 0)),
                              **req.filters.params(), "any_place": int(req.filters.any_place)}
    who = f"({{any_place:UInt8}} = 0 OR streamer_id IN (SELECT streamer_id FROM {_STREAMERS} AS s WHERE {_PLACE_FILTER}))"
    values: dict[int, dict[str, float]] = {}
    if req.metric in ("unique_viewers", "conversion"):
        uv_sql = (f"SELECT toInt64(toUnixTimestamp(m)) * 1000, toUInt64(uniqMerge(viewers)) FROM ({_viewer_rows('c', hours=False)}) "
                  f"WHERE {who} GROUP BY m")
        for m, n in sink.rows(uv_sql, params):
            values.setdefault(int(m), {})["unique_viewers"] = int(n)
    need = "orders" if req.metric == "conversion" else req.metric
    if need in _SERIES_VALUE:
        sql = (f"SELECT toInt64(toUnixTimestamp(m)) * 1000, sum(v) FROM (SELECT m, streamer_id, {_SERIES_VALUE[need]} AS v "
               f"FROM ({_tally_rows('c', hours=False)}) WHERE {who} GROUP BY m, streamer_id) GROUP BY m")
        for m, v in sink.rows(sql, params):
            values.setdefault(int(m), {})[need] = int(v)
    points = []
    for m in range(first, end, MINUTE_MS):
        got = values.get(m, {})
        if req.metric == "conversion":
            v: float | int = _conversion(int(got.get("orders", 0)), int(got.get("unique_viewers", 0)))
        else:
            v = int(got.get(req.metric, 0))
        points.append([m, v])
    return {"metric": req.metric, "start": first, "end": end, "step_ms": MINUTE_MS, "points": points}


def add_sparklines(sink: Sink, board: Board, minutes: int, clk: Clock) -> None:
    """Per-minute GMV of the last ``minutes`` minutes (ending at the board's end) for each row."""
    end = board.end
    first = end - end % MINUTE_MS - (minutes - 1) * MINUTE_MS
    ids = [r["streamer_id"] for r in board.rows]
    params = {**_tile_params("c", tiles(first, _ceil(end, MINUTE_MS), clk.minutes_upto, 0)),
              **Filters().params(), "ids": _ids(ids)}
    sql = (f"SELECT streamer_id, toInt64(toUnixTimestamp(m)) * 1000, sum(gmv_fen) FROM ({_tally_rows('c', hours=False)}) "
           "WHERE has(JSONExtract({ids:String}, 'Array(String)'), streamer_id) GROUP BY streamer_id, m")
    got: dict[tuple[str, int], int] = {(sid, int(m)): int(v) for sid, m, v in sink.rows(sql, params)}
    for r in board.rows:
        r["spark"] = [got.get((r["streamer_id"], m), 0) for m in range(first, end, MINUTE_MS)]


# -- freshness ---------------------------------------------------------------------------------------


def freshness(sink: Sink, now_ms: int) -> dict[str, Any]:
    """How current the boards are: newest data, last flush, and how far the rollups lag behind it."""
    c = clock(sink)
    return {
        "newest_window_end": c.newest_end, "newest_event": c.newest_event, "newest_flush": c.newest_flush,
        "rollup_cursor": c.rollup_cursor, "minutes_rolled_upto": c.minutes_upto, "hours_rolled_upto": c.hours_upto,
        "rollup_caught_up": c.newest_flush == 0 or c.rollup_cursor - OVERLAP_MS >= c.newest_flush,
        "flush_age_s": round((now_ms - c.newest_flush) / 1000, 3) if c.newest_flush else None,
        "event_age_s": round((now_ms - c.newest_event) / 1000, 3) if c.newest_event else None,
    }
