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

This module is the layer's one door: the functions every front end calls. The parts live beside it:
``clock.py`` (data clock, ranges), ``tiles.py`` (levels and their rows), ``scores.py`` (metric SQL,
dimension, conversion, money), ``ranking.py`` (leaderboard, regions, rising), ``sessions.py``,
``series.py`` (series, sparklines), ``streamer.py`` and ``overview.py`` (the dashboard's totals, products
and funnel).
"""

from __future__ import annotations

from streamproc.boards.clock import Clock, ClockCache, clock, freshness, resolve
from streamproc.boards.overview import funnel, products, summary
from streamproc.boards.params import Request
from streamproc.boards.ranking import Board, regions, rising
from streamproc.boards.ranking import leaderboard as _ranked_board
from streamproc.boards.scores import conversion, yuan
from streamproc.boards.series import add_sparklines, series
from streamproc.boards.sessions import session_board
from streamproc.boards.streamer import streamer
from streamproc.store import Sink

__all__ = ["Board", "Clock", "ClockCache", "clock", "conversion", "freshness", "funnel", "leaderboard", "products",
           "regions", "resolve", "rising", "series", "session_board", "streamer", "summary", "yuan"]


def leaderboard(sink: Sink, req: Request, clk: Clock | None = None) -> Board:
    """Top ``req.limit`` streamers by ``req.metric`` over ``req.time``, filtered by place: the session
    board for ``window=session``, with per-minute sparklines of the same metric when ``req.spark`` asks
    for them (session boards too: a sparkline is the last minutes, whatever the window)."""
    clk = clk or clock(sink)
    if req.time.window == "session" and req.time.start is None:
        board = session_board(sink, req, clk)
    else:
        board = _ranked_board(sink, req, clk)
    if req.spark and board.rows:
        add_sparklines(sink, board, req.spark, clk, req.metric, req.min_audience)
    return board
