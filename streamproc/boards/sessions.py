"""The session board: each live streamer's current broadcast, ranked over that broadcast.

A broadcast (``session``) is a run of a streamer's activity without a gap of ``SESSION_GAP_MS`` or more;
tallies are kept per streamer, so the session id shown is the one its latest order carries.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamproc.boards.clock import HOUR_MS, SESSION_GAP_MS, Clock, clock, resolve
from streamproc.boards.params import Filters, Request, TimeSpec
from streamproc.boards.ranking import BOARD_COLS, Board, board_row, query_params, ranked_rows
from streamproc.boards.scores import ids_param
from streamproc.boards.tiles import (
    ONE,
    audience,
    audience_rows,
    in_tiles,
    tally_rows,
    tile_params,
    tiles,
    totals,
    union,
)
from streamproc.store import Sink


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
    params = query_params(req, **tile_params("c", t), starts=orjson.dumps(sorted(began.items())).decode())
    # a minute row counts unless its hour was read whole and lies inside the streamer's broadcast
    keep = (f"r.m >= st.began AND (r.lvl != 1 OR NOT (toStartOfHour(r.m) >= st.began AND "
            f"{in_tiles('c', t, '1h', 'toStartOfHour(r.m)')}))")
    starts = ("SELECT tupleElement(x, 1) AS streamer_id, toDateTime(intDiv(tupleElement(x, 2), 1000), 'UTC') AS began "
              "FROM (SELECT arrayJoin(JSONExtract({starts:String}, 'Array(Tuple(String, Int64))')) AS x)")
    totals_sql = (f"SELECT r.streamer_id AS streamer_id, {totals('r.')} "
              f"FROM ({tally_rows('c', t)}) AS r INNER JOIN ({starts}) AS st ON st.streamer_id = r.streamer_id "
              f"WHERE {keep} GROUP BY r.streamer_id")
    audience_sql = (f"SELECT r.streamer_id AS streamer_id, {audience('r.')} "
                f"FROM ({audience_rows('c', t)}) AS r INNER JOIN ({starts}) AS st ON st.streamer_id = r.streamer_id "
                f"WHERE {keep} GROUP BY r.streamer_id")

    def audience_of(ids: list[str]) -> tuple[str, dict[str, Any]]:
        return audience_sql, {**params, "starts": orjson.dumps(sorted((sid, began[sid]) for sid in ids)).decode()}

    rows = ranked_rows(sink, req, totals_sql, audience_sql, params, audience_of)
    sessions = _session_ids(sink, [r[0] for r in rows], start, end)
    out = []
    for i, r in enumerate(rows):
        d = board_row(i + 1, r, BOARD_COLS, req)
        d["session_start"] = began[d["streamer_id"]]
        d["session_id"] = sessions.get(d["streamer_id"], "")
        out.append(d)
    return Board(req.metric, "session", start, end, out)


def _session_starts(sink: Sink, filters: Filters, start: int, end: int, clk: Clock) -> dict[str, int]:
    """streamer -> start (ms) of its live broadcast at ``end``: its minutes with rows, after the last gap."""
    t = tiles(start, end, clk, hours=False)
    params = {**tile_params("c", t), **filters.params(),
              "gap": SESSION_GAP_MS // 1000, "live_from": (end - SESSION_GAP_MS) // 1000}
    minutes = union(t, {
        "1m": f"SELECT streamer_id, bucket AS m FROM tallies_1m WHERE {ONE} AND {in_tiles('c', t, '1m', 'bucket')}",
        "10s": "SELECT streamer_id, toStartOfMinute(window_start) AS m FROM tallies_10s "
               f"WHERE {ONE} AND {in_tiles('c', t, '10s', 'window_start')}",
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
        {"lo": start, "hi": end, "ids": ids_param(ids)}))
