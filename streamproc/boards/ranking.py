"""Ranked boards: streamers (leaderboard), places and categories (regions), and movers (rising)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from streamproc.boards.clock import Clock, clock, not_session, resolve, window_label
from streamproc.boards.params import LEVEL_COLUMNS, Request
from streamproc.boards.scores import (
    DIM,
    NEEDS_AUDIENCE,
    PLACE_FILTER,
    SCORE,
    STREAMERS,
    conversion,
    dimension_of,
    ids_param,
    yuan,
)
from streamproc.boards.tiles import Tiles, audience_per_streamer, per_streamer, tile_params, tiles
from streamproc.store import Sink


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


_INTS = ("gmv_fen", "orders", "views", "likes", "concurrent_viewers", "unique_viewers", "buyers")


def board_row(rank: int, r: Sequence[Any], cols: Sequence[str], req: Request) -> dict[str, Any]:
    d = dict(zip(cols, r))
    d["rank"] = rank
    for k in _INTS:
        if k in d:
            d[k] = int(d[k])
    if "gmv_fen" in d:
        d["gmv_yuan"] = yuan(d["gmv_fen"])
    d["conversion"] = conversion(d["buyers"], d["unique_viewers"], req.min_audience)
    d["score"] = d["conversion"] if req.metric == "conversion" else d[score_key(req.metric)]
    return d


BOARD_COLS = ("streamer_id", *DIM, "gmv_fen", "orders", "views", "likes", "concurrent_viewers", "unique_viewers",
               "buyers")


def query_params(req: Request, **more: Any) -> dict[str, Any]:
    return {**req.filters.params(), "limit": req.limit, "min_audience": req.min_audience, **more}


def ranked_rows(sink: Sink, req: Request, totals: str, audience: str, params: dict[str, Any],
            audience_of: Any) -> list[tuple]:
    """The top ``req.limit`` of per-streamer ``totals`` by the metric, dimension joined, audience
    attached: in the ranking query when the metric needs it, else read for the top rows only
    (``audience_of(ids)`` gives that query and its parameters)."""
    needs = req.metric in NEEDS_AUDIENCE
    sql = f"""
        SELECT t.streamer_id, {", ".join("s." + c for c in DIM)}, t.gmv_fen, t.orders, t.views, t.likes,
               t.concurrent_viewers, {"u.unique_viewers, u.buyers" if needs else "toUInt64(0), toUInt64(0)"},
               {SCORE[req.metric]} AS score
        FROM ({totals}) AS t
        {f"LEFT JOIN ({audience}) AS u ON u.streamer_id = t.streamer_id" if needs else ""}
        LEFT JOIN {STREAMERS} AS s ON s.streamer_id = t.streamer_id
        WHERE {PLACE_FILTER}
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
    """Top ``req.limit`` streamers by ``req.metric`` over ``req.time`` (not ``session``: see
    ``sessions.py``), filtered by place."""
    clk = clk or clock(sink)
    start, end = resolve(req.time, clk)
    t = tiles(start, end, clk)
    params = query_params(req, **tile_params("c", t))
    rows = ranked_rows(sink, req, per_streamer("c", t), audience_per_streamer("c", t), params,
                   lambda ids: (audience_per_streamer("c", t, only_ids=True), {**params, "ids": ids_param(ids)}))
    out = [board_row(i + 1, r, BOARD_COLS, req) for i, r in enumerate(rows)]
    return Board(req.metric, window_label(req.time), start, end, out)


def score_key(metric: str) -> str:
    return "gmv_fen" if metric == "gmv" else metric


def regions(sink: Sink, req: Request, clk: Clock | None = None) -> Board:
    """Places (or categories) ranked by ``req.metric``: which county sells most."""
    clk = clk or clock(sink)
    start, end = resolve(not_session(req.time), clk)
    t = tiles(start, end, clk)
    params = query_params(req, **tile_params("c", t))
    cols = LEVEL_COLUMNS[req.level]
    group = ", ".join(f"s.{c}" for c in cols)
    score = SCORE[req.metric].replace("u.", "").replace("t.", "")  # the column aliases selected below
    sql = f"""
        SELECT {group}, count() AS streamers, sum(t.gmv_fen) AS gmv_fen, sum(t.orders) AS orders,
               sum(t.views) AS views, sum(t.likes) AS likes, sum(t.concurrent_viewers) AS concurrent_viewers,
               toUInt64(uniqExactMerge(u.viewers)) AS unique_viewers, toUInt64(uniqExactMerge(u.buyers)) AS buyers,
               {score} AS score
        FROM ({per_streamer('c', t)}) AS t
        LEFT JOIN ({audience_per_streamer('c', t, state=True)}) AS u ON u.streamer_id = t.streamer_id
        LEFT JOIN {STREAMERS} AS s ON s.streamer_id = t.streamer_id
        WHERE {PLACE_FILTER}
        GROUP BY {group}
        ORDER BY score DESC, {group}
        LIMIT {{limit:UInt32}}
    """
    names = (*cols, "streamers", "gmv_fen", "orders", "views", "likes", "concurrent_viewers", "unique_viewers", "buyers")
    out = []
    for i, r in enumerate(sink.rows(sql, params)):
        d = board_row(i + 1, r[:-1], names, req)
        d["streamers"] = int(d["streamers"])
        out.append(d)
    return Board(req.metric, window_label(req.time), start, end, out)


def rising_order(by: str) -> Callable[[dict[str, Any]], tuple]:
    """The order of a rising board. ``value``: growth, most first (a newcomer's from 0), then rank.
    ``rank``: those who gained places, most first; then the newcomers; then those who held or lost
    places, least lost first; each then by rank. A newcomer entered the board, which is more than
    holding a place and less than a measured climb."""
    if by == "value":
        return lambda m: (-m["growth"], m["rank"])

    def by_rank(m: dict[str, Any]) -> tuple:
        gained = m["places_gained"]
        if gained is None:
            return (1, 0, m["rank"])
        return (0 if gained > 0 else 2, -gained, m["rank"])

    return by_rank


def rising(sink: Sink, req: Request, clk: Clock | None = None) -> Board:
    """Streamers whose metric (``by=value``) or rank (``by=rank``) grew most against the previous
    window of equal length. Ranks are over every streamer on the (filtered) board.

    A newcomer (absent from the previous board) had no rank to gain places from: ``new`` true,
    ``prev_rank`` and ``places_gained`` null, ``prev_score`` 0 and its growth from 0. Counting it as
    ranked just below the previous last place, as before, gave a newcomer ranked below that a negative
    gain: it showed as falling on its first appearance. Order: ``rising_order``."""
    clk = clk or clock(sink)
    spec = not_session(req.time)
    start, end = resolve(spec, clk)
    length = end - start
    cur_t, prev_t = tiles(start, end, clk), tiles(start - length, start, clk)
    params = query_params(req, **tile_params("c", cur_t), **tile_params("p", prev_t))
    needs = req.metric in NEEDS_AUDIENCE

    def scores(prefix: str, t: Tiles) -> str:
        aud = f"LEFT JOIN ({audience_per_streamer(prefix, t)}) AS u ON u.streamer_id = t.streamer_id" if needs else ""
        return (f"SELECT t.streamer_id AS streamer_id, {SCORE[req.metric]} AS score FROM ({per_streamer(prefix, t)}) "
                f"AS t {aud} LEFT JOIN {STREAMERS} AS s ON s.streamer_id = t.streamer_id WHERE {PLACE_FILTER}")

    def score(v: Any) -> float:
        # a conversion under the minimum audience (-1) is no score to grow from: it counts as 0
        return max(float(v), 0.0) if req.metric == "conversion" else float(v)

    def ranked(prefix: str, t: Tiles) -> list[tuple[float, str]]:
        return sorted(((score(v), sid) for sid, v in sink.rows(scores(prefix, t), params)), key=lambda x: (-x[0], x[1]))

    cur, prev = ranked("c", cur_t), ranked("p", prev_t)
    prev_rank = {sid: i + 1 for i, (_, sid) in enumerate(prev)}
    prev_score = {sid: v for v, sid in prev}
    moves = []
    for i, (v, sid) in enumerate(cur):
        pr = prev_rank.get(sid)
        moves.append({"streamer_id": sid, "rank": i + 1, "new": pr is None, "prev_rank": pr,
                      "places_gained": None if pr is None else pr - (i + 1),
                      "score": v, "prev_score": prev_score.get(sid, 0.0), "growth": v - prev_score.get(sid, 0.0)})
    top = sorted(moves, key=rising_order(req.by))[: req.limit]
    if req.metric != "conversion":
        for m in top:
            for k in ("score", "prev_score", "growth"):
                m[k] = int(m[k])
    dims = dimension_of(sink, [m["streamer_id"] for m in top])
    for m in top:
        m.update(dims.get(m["streamer_id"], dict.fromkeys(DIM, "")))
    return Board(req.metric, window_label(spec), start, end, top)
