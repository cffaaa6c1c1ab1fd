"""The leaderboard HTTP API, declared once: which parameters each endpoint takes, and its OpenAPI text.

``web/server.py`` accepts exactly the parameters listed here for each path (anything else is a 400), and
``/api/openapi.json`` is rendered from the same table and from ``query_params.PARAMS``, so the
description cannot drift from what the server does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from streamproc import __version__
from streamproc.boards.overview import PRODUCT_METRICS
from streamproc.boards.params import PARAMS, PLACES, WINDOWS, Param

TIME = ("window", "start", "end", "as_of")

# path -> (summary, query parameters)
ENDPOINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "/api/leaderboard": ("Top streamers by a metric over a window, optionally within a place or category",
                         ("metric", *TIME, *PLACES, "limit", "spark")),
    "/api/rising": ("Streamers whose metric or rank grew most against the previous window of equal length",
                    ("metric", *TIME, *PLACES, "limit", "by")),
    "/api/regions": ("Provinces, counties, villages or categories ranked by a metric",
                     ("metric", *TIME, *PLACES, "limit", "level")),
    "/api/streamer/{streamer_id}": ("One streamer: who, totals over a window, and the current broadcast", TIME),
    "/api/series": ("Per-minute values of a metric for one streamer or a region (at most one day)",
                    ("metric", *TIME, *PLACES, "streamer_id")),
    "/api/freshness": ("Newest data, last flush and rollup progress", ()),
    "/api/summary": ("Totals of the streamers a board with these filters lists: GMV, paid orders, buyers, average "
                     "order value, online now, refunds", (*TIME, *PLACES, "streamer_id")),
    "/api/products": ("Products ranked by GMV, paid orders or buyers, from the orders of the filter's streamers",
                      ("metric", *TIME, *PLACES, "streamer_id", "limit")),
    "/api/funnel": ("Entered, paid and repeat buyers: people and events per stage, for a filter or one streamer",
                    (*TIME, *PLACES, "streamer_id")),
}
BOARDS = {"/api/leaderboard", "/api/rising", "/api/regions"}
# ``window=session`` ranks each live streamer over its own broadcast: a leaderboard of its own, which the
# other answers (one range for everyone, or a previous window of equal length) refuse (boards/clock.py,
# not_session). An endpoint not listed here is offered the windows without it.
SESSION_WINDOW = {"/api/leaderboard"}


def choices(path: str) -> dict[str, tuple[str, ...]]:
    """The enum values ``path`` answers where they are fewer than ``PARAMS`` declares: the server parses
    with these (``params.parse``) and the description lists them, so it offers nothing that gets a 400."""
    out = {"metric": PRODUCT_METRICS} if path == "/api/products" else {}  # what a product is ranked by
    if "window" in ENDPOINTS[path][1] and path not in SESSION_WINDOW:
        out["window"] = tuple(w for w in WINDOWS if w != "session")
    return out


def param(path: str, name: str) -> Param:
    """Parameter ``name`` as ``path`` takes it (its enum narrowed by ``choices``)."""
    narrowed = choices(path).get(name)
    return replace(PARAMS[name], choices=narrowed) if narrowed else PARAMS[name]


def takes_streamer(path: str) -> bool:
    """Whether ``path`` names one streamer (in the path or as ``streamer_id``): it answers 404 for one
    that is unknown."""
    return "{streamer_id}" in path or "streamer_id" in ENDPOINTS[path][1]


def _schema(p: Param) -> dict[str, Any]:
    if p.kind == "enum":
        s: dict[str, Any] = {"type": "string", "enum": list(p.choices)}
    elif p.kind == "int":
        s = {"type": "integer", "minimum": p.lo, "maximum": p.hi}
    elif p.kind == "time":
        s = {"type": "string", "description": "epoch ms or ISO 8601"}
    else:
        s = {"type": "string", "minLength": 1, "maxLength": 64}
    if p.default is not None:
        s["default"] = p.default
    return s


_ERROR_BODY = {
    "type": "object", "required": ["error", "status"],
    "properties": {"error": {"type": "string", "description": "what went wrong, for a person"},
                   "status": {"type": "integer", "description": "the HTTP status again"},
                   "parameter": {"type": "string", "description": "the parameter at fault (400, 404)"},
                   "retry_after_s": {"type": "integer", "description": "when to ask again (429)"}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_BODY}}}


_ERROR = _error("A bad parameter: unknown, repeated, or a value this endpoint does not take; the message and "
                "`parameter` name it")
_ERRORS = {
    "401": _error("No or a wrong bearer token (only when the server has one, STREAMPROC_WEB_TOKEN)"),
    "429": _error("Too many API requests at once; retry after `retry_after_s` (also in Retry-After)"),
    "500": _error("An internal error; the body says nothing more (the server's log does)"),
}
_UNKNOWN_STREAMER = _error("Unknown streamer: not in the streamers dimension and without data in the range the "
                           "request reads (for /api/streamer: its window or its current broadcast)")
_ROW = {
    "type": "object",
    "properties": {
        "rank": {"type": "integer"}, "streamer_id": {"type": "string"}, "name": {"type": "string"},
        "platform": {"type": "string"}, "province": {"type": "string"}, "county": {"type": "string"},
        "village": {"type": "string"}, "category": {"type": "string"},
        "gmv_fen": {"type": "integer", "description": "paid minus refunded, fen"},
        "gmv_yuan": {"type": "string", "description": "the same in yuan, exact, e.g. 1234.50"},
        "orders": {"type": "integer"}, "views": {"type": "integer"}, "likes": {"type": "integer"},
        "unique_viewers": {"type": "integer", "description": "distinct viewers who entered (exact)"},
        "buyers": {"type": "integer", "description": "distinct viewers with a paid order (exact)"},
        "concurrent_viewers": {"type": "integer", "description": "audience at the end of the range, never negative"},
        "conversion": {"type": ["number", "null"],
                       "description": "buyers / unique_viewers; null below the minimum audience"},
        "score": {"type": ["number", "null"]},
        "spark": {"type": "array", "items": {"type": ["number", "null"]},
                  "description": "the board's metric per minute (as /api/series gives it for the streamer), oldest "
                                 "first, ending with the minute that holds as_of: partial unless as_of is on a minute"},
    },
}
_BOARD = {
    "type": "object",
    "properties": {"metric": {"type": "string"}, "window": {"type": "string"}, "start": {"type": "integer"},
                   "end": {"type": "integer"}, "as_of": {"type": "integer"}, "rows": {"type": "array", "items": _ROW}},
}
_RISING_ROW = {
    "type": "object",
    "properties": {
        "streamer_id": {"type": "string"}, "name": {"type": "string"}, "platform": {"type": "string"},
        "province": {"type": "string"}, "county": {"type": "string"}, "village": {"type": "string"},
        "category": {"type": "string"},
        "rank": {"type": "integer", "description": "rank over this window, among every streamer on the (filtered) board"},
        "new": {"type": "boolean", "description": "true: no data on the previous window's board (a newcomer)"},
        "prev_rank": {"type": ["integer", "null"], "description": "rank over the previous window; null for a newcomer"},
        "places_gained": {"type": ["integer", "null"],
                          "description": "prev_rank - rank (negative: places lost); null for a newcomer"},
        "score": {"type": "number", "description": "the metric over this window (a conversion not shown counts 0)"},
        "prev_score": {"type": "number", "description": "the same over the previous window; 0 for a newcomer"},
        "growth": {"type": "number", "description": "score - prev_score: a newcomer grows from 0"},
    },
}
_RISING = {**_BOARD, "properties": {**_BOARD["properties"], "rows": {
    "type": "array", "items": _RISING_ROW,
    "description": "by=value: by growth, then rank. by=rank: those who gained places (most first), then the "
                   "newcomers, then those who held or lost places, each then by rank"}}}


_INT, _YUAN = {"type": "integer"}, {"type": "string", "description": "the amount before it in yuan, exact"}
_RANGE = {"window": {"type": "string"}, "start": {"type": "integer"}, "end": {"type": "integer"},
          "as_of": {"type": "integer"}}
# the dashboard's answers (boards/overview.py states the definitions; verify/overview_oracle.py checks them)
_OVERVIEW: dict[str, dict[str, Any]] = {
    "/api/summary": {"type": "object", "properties": {
        **_RANGE,
        "streamers": {"type": "integer", "description": "streamers with data in the range matching the filter"},
        "gmv_fen": {"type": "integer", "description": "paid minus refunded, fen (the boards' GMV)"}, "gmv_yuan": _YUAN,
        "paid_fen": {"type": "integer", "description": "amount of the paid orders, fen"}, "paid_yuan": _YUAN,
        "orders": {"type": "integer", "description": "paid orders"},
        "aov_fen": {"type": ["integer", "null"],
                    "description": "average order value: paid_fen / orders, rounded half up; null without orders"},
        "aov_yuan": {"type": ["string", "null"]},
        "buyers": {"type": "integer", "description": "distinct viewers with a paid order, across the streamers"},
        "unique_viewers": {"type": "integer", "description": "distinct viewers who entered, across the streamers"},
        "views": _INT, "likes": _INT,
        "concurrent_viewers": {"type": "integer",
                               "description": "online now: the sum of each streamer's audience at the end of the range"},
        "refunds": {"type": "integer", "description": "refunded orders in the range"},
        "refund_fen": {"type": "integer", "description": "their amount"}, "refund_yuan": _YUAN,
        "conversion": {"type": ["number", "null"], "description": "buyers / unique_viewers, from the minimum audience"},
    }},
    "/api/products": {"type": "object", "properties": {**_RANGE, "metric": {"type": "string"}, "rows": {
        "type": "array", "description": "by the metric's value, then product_id", "items": {"type": "object", "properties": {
            "rank": _INT, "product_id": {"type": "string"},
            "category": {"type": "string", "description": "the category of its latest order"},
            "orders": {"type": "integer", "description": "paid orders"}, "refunds": {"type": "integer"},
            "items": {"type": "integer", "description": "paid minus refunded quantity"},
            "gmv_fen": {"type": "integer", "description": "paid minus refunded, fen"}, "gmv_yuan": _YUAN,
            "refund_fen": _INT, "buyers": {"type": "integer", "description": "distinct viewers with a paid order of it"},
            "streamers": {"type": "integer", "description": "streamers with an order of it"}, "score": _INT}}}}},
    "/api/funnel": {"type": "object", "properties": {**_RANGE, "stages": {
        "type": "array", "description": "entered (viewers who entered; count: enters), paid (viewers with a paid "
                                        "order; count: paid orders), repeat (viewers with two or more; count: "
                                        "their orders). The log has no unpaid orders: ordered and paid are one stage",
        "items": {"type": "object", "properties": {
            "stage": {"type": "string", "enum": ["entered", "paid", "repeat"]}, "people": _INT, "count": _INT,
            "rate": {"type": ["number", "null"],
                     "description": "people / the previous stage's people (6 places); null for the first or over 0"}}}}}},
}


def openapi() -> dict[str, Any]:
    """The OpenAPI document of the API, from ``ENDPOINTS``, ``PARAMS`` and ``choices``."""
    from streamproc.web.errors import MAX_HEADER_BYTES, MAX_URL_BYTES  # the limits the server runs with

    paths: dict[str, Any] = {}
    for path, (summary, names) in ENDPOINTS.items():
        parameters = [
            {"name": n, "in": "query", "required": False, "description": PARAMS[n].help,
             "schema": _schema(param(path, n))}
            for n in names
        ]
        if "{streamer_id}" in path:
            parameters.insert(0, {"name": "streamer_id", "in": "path", "required": True,
                                  "description": PARAMS["streamer_id"].help, "schema": _schema(PARAMS["streamer_id"])})
        schema = _OVERVIEW.get(path) or (_RISING if path == "/api/rising" else _BOARD if path in BOARDS
                                         else {"type": "object"})
        responses: dict[str, Any] = {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
            "400": _ERROR,
            **({"404": _UNKNOWN_STREAMER} if takes_streamer(path) else {}),
            **_ERRORS,
        }
        paths[path] = {"get": {"summary": summary, "parameters": parameters, "responses": responses}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "streamproc leaderboards", "version": __version__,
                 "description": "Live leaderboards of livestream commerce. Times are epoch milliseconds; money is "
                                "integer fen (gmv_yuan is the same amount as an exact decimal string). Unknown "
                                "parameters, repeated parameters and bad values are answered with 400. Every error, "
                                "on any path, is JSON: {\"error\": message, \"status\": HTTP status}: besides "
                                "those listed per operation, 404 for a path no route serves, 405 for a method "
                                f"other than GET or HEAD, 414 for a URL over {MAX_URL_BYTES} bytes, 431 for a "
                                f"header over {MAX_HEADER_BYTES} bytes or too many headers."},
        "paths": paths,
    }
