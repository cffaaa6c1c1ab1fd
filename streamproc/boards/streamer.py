"""One streamer: who, its totals over a window, and its current broadcast."""

from __future__ import annotations

from typing import Any

from streamproc.boards.clock import Clock, clock, not_session
from streamproc.boards.params import DEFAULT_MIN_AUDIENCE, Filters, Request, TimeSpec
from streamproc.boards.ranking import leaderboard
from streamproc.boards.scores import DIM, dimension_of
from streamproc.boards.sessions import session_board
from streamproc.boards.tiles import tally_rows, tile_params, tiles
from streamproc.store import Sink


def streamer(sink: Sink, streamer_id: str, spec: TimeSpec, clk: Clock | None = None,
             min_audience: int = DEFAULT_MIN_AUDIENCE) -> dict[str, Any] | None:
    """One streamer: who, its totals over ``spec``, and its current broadcast; None if unknown."""
    clk = clk or clock(sink)
    f = Filters(streamer_id=streamer_id)
    board = leaderboard(sink, Request(metric="gmv", time=not_session(spec), filters=f, limit=1,
                                      min_audience=min_audience), clk)
    session = session_board(sink, Request(metric="gmv", time=TimeSpec("session", as_of=spec.as_of), filters=f,
                                          limit=1, min_audience=min_audience), clk)
    ranked = board.rows or session.rows  # a ranked row carries the dimension already (joined, '' if absent)
    info = {c: ranked[0][c] for c in DIM} if ranked else dimension_of(sink, [streamer_id]).get(streamer_id)
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


def known(sink: Sink, streamer_id: str, start: int, end: int, clk: Clock) -> bool:
    """Whether ``streamer_id`` is a streamer an answer about it can speak of: in the streamers dimension,
    or with data in [start, end), the range the answer reads. Every answer that names one streamer uses
    this rule (``streamer`` below reads two ranges, its window and its broadcast), so an unknown id is a
    404 everywhere rather than a board of zeros here and a 404 there. "Data anywhere, ever" is not asked:
    it would scan every level of every streamer for each unknown id."""
    t = tiles(start, end, clk)
    params = {**tile_params("c", t), **Filters(streamer_id=streamer_id).params()}
    (n,), = sink.rows("SELECT (SELECT count() FROM streamers WHERE streamer_id = {f_streamer:String}) + "
                      f"(SELECT count() FROM (SELECT 1 FROM ({tally_rows('c', t)}) LIMIT 1))", params)
    return int(n) > 0


_METRIC_KEYS = ("gmv_fen", "gmv_yuan", "orders", "views", "likes", "unique_viewers", "buyers", "concurrent_viewers",
                "conversion")


def _metrics_only(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {**dict.fromkeys(_METRIC_KEYS, 0), "gmv_yuan": "0.00", "conversion": None}
    return {k: row[k] for k in _METRIC_KEYS}
