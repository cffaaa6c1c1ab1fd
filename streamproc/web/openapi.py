"""The leaderboard HTTP API, declared once: which parameters each endpoint takes, and its OpenAPI text.

``web/server.py`` accepts exactly the parameters listed here for each path (anything else is a 400), and
``/api/openapi.json`` is rendered from the same table and from ``query_params.PARAMS``, so the
description cannot drift from what the server does.
"""

from __future__ import annotations

from typing import Any

from streamproc import __version__
from streamproc.boards.params import PARAMS, PLACES, Param

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
}
BOARDS = {"/api/leaderboard", "/api/rising", "/api/regions"}


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


_ERROR = {
    "description": "A bad parameter; the message names it",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["error", "parameter"],
        "properties": {"error": {"type": "string"}, "parameter": {"type": "string"}}}}},
}
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
        "spark": {"type": "array", "items": {"type": "integer"}, "description": "GMV per minute, fen, oldest first"},
    },
}
_BOARD = {
    "type": "object",
    "properties": {"metric": {"type": "string"}, "window": {"type": "string"}, "start": {"type": "integer"},
                   "end": {"type": "integer"}, "as_of": {"type": "integer"}, "rows": {"type": "array", "items": _ROW}},
}


def openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, (summary, names) in ENDPOINTS.items():
        parameters = [
            {"name": n, "in": "query", "required": False, "description": PARAMS[n].help, "schema": _schema(PARAMS[n])}
            for n in names
        ]
        if "{streamer_id}" in path:
            parameters.insert(0, {"name": "streamer_id", "in": "path", "required": True,
                                  "description": PARAMS["streamer_id"].help, "schema": _schema(PARAMS["streamer_id"])})
        schema = _BOARD if path in BOARDS else {"type": "object"}
        responses: dict[str, Any] = {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
            "400": _ERROR,
        }
        if "{streamer_id}" in path:
            responses["404"] = {"description": "No such streamer"}
        paths[path] = {"get": {"summary": summary, "parameters": parameters, "responses": responses}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "streamproc leaderboards", "version": __version__,
                 "description": "Live leaderboards of livestream commerce. Times are epoch milliseconds; money is "
                                "integer fen (gmv_yuan is the same amount as an exact decimal string). Unknown "
                                "parameters, repeated parameters and bad values are answered with 400."},
        "paths": paths,
    }
