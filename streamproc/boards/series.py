"""Per-minute series: one streamer's or a region's metric minute by minute, and the boards' sparklines."""

from __future__ import annotations

from typing import Any

from streamproc.boards.clock import HOUR_MS, MINUTE_MS, Clock, clock, not_session, resolve
from streamproc.boards.params import DEFAULT_MIN_AUDIENCE, MAX_SERIES_MS, BadParameter, Filters, Request
from streamproc.boards.ranking import Board, query_params
from streamproc.boards.scores import NEEDS_AUDIENCE, PLACE_FILTER, STREAMERS, conversion, ids_param
from streamproc.boards.streamer import known
from streamproc.boards.tiles import audience, audience_rows, tally_rows, tile_params, tiles
from streamproc.store import Sink

# -- per-minute series

_SERIES_VALUE = {
    "gmv": "sum(gmv_fen)", "orders": "sum(orders_paid)", "views": "sum(enters)", "likes": "sum(likes)",
    "concurrent_viewers": "argMax(concurrent_close, close_at)",
}


def series(sink: Sink, req: Request, clk: Clock | None = None) -> dict[str, Any] | None:
    """Per-minute values of ``req.metric`` for one streamer or for everyone matching the place filters
    (a region), over ``req.time`` (a named window or a range of at most a day), zeros included. Each
    point covers its minute up to the range's end: the newest point is the minute so far. None for a
    streamer that is unknown (``streamer.known`` over the series' range): a row of zeros would say
    "quiet" of an id that may be a typo."""
    clk = clk or clock(sink)
    start, end = resolve(not_session(req.time), clk)
    if end - start > MAX_SERIES_MS:
        raise BadParameter("end", f"a series spans at most {MAX_SERIES_MS // HOUR_MS} hours (one point a minute)")
    first = start - start % MINUTE_MS
    if req.filters.streamer_id and not known(sink, req.filters.streamer_id, first, end, clk):
        return None
    t = tiles(first, end, clk, hours=False)
    params = query_params(req, **tile_params("c", t), any_place=int(req.filters.any_place))
    who = f"({{any_place:UInt8}} = 0 OR streamer_id IN (SELECT streamer_id FROM {STREAMERS} AS s WHERE {PLACE_FILTER}))"
    values: dict[int, dict[str, int]] = {}
    if req.metric in NEEDS_AUDIENCE:
        sql = (f"SELECT toInt64(toUnixTimestamp(m)) * 1000, {audience()} FROM ({audience_rows('c', t)}) "
               f"WHERE {who} GROUP BY m")
        for m, uv, b in sink.rows(sql, params):
            values.setdefault(int(m), {}).update(unique_viewers=int(uv), buyers=int(b))
    if req.metric in _SERIES_VALUE:
        sql = (f"SELECT toInt64(toUnixTimestamp(m)) * 1000, sum(v) FROM (SELECT m, streamer_id, "
               f"{_SERIES_VALUE[req.metric]} AS v FROM ({tally_rows('c', t)}) WHERE {who} GROUP BY m, streamer_id) "
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


def add_sparklines(sink: Sink, board: Board, minutes: int, clk: Clock, metric: str = "gmv",
                   min_audience: int = DEFAULT_MIN_AUDIENCE) -> None:
    """Per-minute values of ``metric`` (the board's) over the last ``minutes`` minutes for each row,
    the newest being the minute that holds the board's end. Each point is what :func:`series` gives for
    that streamer and minute, so a sparkline and the streamer's series agree, and like there the newest
    point is the minute so far: partial unless the end falls on a minute (the page marks it)."""
    end = board.end
    first = end - end % MINUTE_MS - (minutes - 1) * MINUTE_MS
    if end % MINUTE_MS == 0:
        first -= MINUTE_MS  # end on a minute: the last point is the whole minute before it
    t = tiles(first, end, clk, hours=False)
    params = {**tile_params("c", t), **Filters().params(), "ids": ids_param([r["streamer_id"] for r in board.rows])}
    got: dict[tuple[str, int], dict[str, int]] = {}
    if metric in NEEDS_AUDIENCE:
        sql = (f"SELECT streamer_id, toInt64(toUnixTimestamp(m)) * 1000, {audience()} "
               f"FROM ({audience_rows('c', t, only_ids=True)}) GROUP BY streamer_id, m")
        for sid, m, uv, b in sink.rows(sql, params):
            got.setdefault((sid, int(m)), {}).update(unique_viewers=int(uv), buyers=int(b))
    if metric in _SERIES_VALUE:
        sql = (f"SELECT streamer_id, toInt64(toUnixTimestamp(m)) * 1000, {_SERIES_VALUE[metric]} "
               f"FROM ({tally_rows('c', t)}) WHERE has(JSONExtract({{ids:String}}, 'Array(String)'), streamer_id) "
               "GROUP BY streamer_id, m")
        for sid, m, v in sink.rows(sql, params):
            got.setdefault((sid, int(m)), {})[metric] = int(v)

    def point(values: dict[str, int]) -> int | float | None:
        if metric == "conversion":
            return conversion(values.get("buyers", 0), values.get("unique_viewers", 0), min_audience)
        return values.get(metric, 0)

    for r in board.rows:
        r["spark"] = [point(got.get((r["streamer_id"], m), {})) for m in range(first, end, MINUTE_MS)]
