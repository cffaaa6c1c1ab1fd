"""Pages of the worker's web server (Faust's, bound to 127.0.0.1 by default): status, metrics, the
leaderboard API and the live leaderboard page.

Every API handler validates its query string against ``api_spec.ENDPOINTS`` (unknown, repeated or bad
parameters are a 400 naming the parameter) and then asks ``queries`` through the read gate
(``read_gate``): the sink's blocking calls run in a thread, so the event loop keeps consuming; identical
requests share one answer for half a flush interval (``X-Cache: hit``), and a board's ``limit`` is not
part of that identity (every board is computed ``MAX_LIMIT`` rows long and cut to the limit asked: its
order is total, so the cut is the shorter board); past that age the answer is served at once while its
successor is computed (``X-Cache: stale``), for one more flush interval or, if it took long to compute,
twice its computing time (never more than ten intervals: ``read_gate.py``); a few answers are computed at
once and a request that finds no slot in time gets 429 with Retry-After, so readers never starve the
flush. The page is plain files from ``static/``, no build step. Every error is JSON with its status
(``web/errors.py``); an answer about one streamer that is unknown is a 404 naming ``streamer_id``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Protocol

import faust
import orjson

from streamproc import metrics
from streamproc.boards import queries
from streamproc.boards.params import MAX_LIMIT, BadParameter, Request, parse
from streamproc.settings import Settings
from streamproc.store import Sink
from streamproc.web.errors import error_body
from streamproc.web.openapi import ENDPOINTS, choices, openapi
from streamproc.web.read_gate import RETRY_AFTER_S, Busy, ReadGate

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                  ".txt": "text/plain"}  # .txt: the licence of a vendored file, served beside it


def _json(view: Any, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    return view.bytes(orjson.dumps(value), content_type="application/json", status=status, headers=headers)


def _request(path: str, request: Any, min_audience: int) -> Request:
    raw: dict[str, str] = {}
    for k, v in urllib.parse.parse_qsl(request.query_string, keep_blank_values=True):
        if k in raw:
            raise BadParameter(k, "given more than once")
        raw[k] = v
    return dataclasses.replace(parse(raw, ENDPOINTS[path][1], choices(path)), min_audience=min_audience)


def _unknown(streamer_id: str) -> dict[str, Any]:
    """The 404 of an answer about one streamer that is unknown: neither in the streamers dimension nor
    with data in the range the request reads (the same rule for every endpoint that names one)."""
    return error_body(404, f"unknown streamer {streamer_id!r}: not in the streamers dimension and no data in the "
                           "range asked for", parameter="streamer_id")


class Counting(Protocol):
    """The processor as the pages see it: its status and its running counts."""

    counts: dict[str, int]

    def status(self) -> dict[str, Any]: ...


class Served(Protocol):
    """What the pages read from the worker that serves them (the worker registers the pages and the
    bearer-token middleware; the pages never import the runtime)."""

    settings: Settings
    sink: Sink
    processor: Counting


def register(app: faust.App, worker: Served) -> None:
    s = worker.settings

    @app.page("/status")
    async def status(self: Any, request: Any) -> Any:
        return self.json(worker.processor.status())

    @app.page("/metrics")
    async def prometheus(self: Any, request: Any) -> Any:
        return self.bytes(metrics.exposition(), content_type=metrics.EXPOSITION_TYPE)

    age = min(0.5, s.flush_interval_s / 2)  # requests within this share one answer and one data clock
    # past its age an answer is served while its successor is computed: for one more interval, or half an
    # interval plus twice its computing time, never more than ten intervals (read_gate.py)
    gate = ReadGate(s.api_max_concurrent, s.api_queue_timeout_s, max_age_s=age, stale_s=age + s.flush_interval_s,
                    stale_cap_s=10 * s.flush_interval_s)

    def api(path: str, answer: Callable[[Request, dict[str, str]], Any], stale: bool = True) -> None:
        ranked = "limit" in ENDPOINTS[path][1]  # a board: its rows are cut to the limit asked (module docstring)

        async def handler(self: Any, request: Any, **match: str) -> Any:
            try:
                req = _request(path, request, s.conversion_min_viewers)
                for name, value in match.items():
                    parse({name: value}, (name,))
                shared_req = dataclasses.replace(req, limit=MAX_LIMIT) if ranked else req
                key = (path, shared_req, tuple(sorted(match.items())))  # the query's normal form
                result, served = await gate.answer(key, lambda: answer(shared_req, match), stale)
            except BadParameter as exc:
                return _json(self, error_body(400, str(exc), parameter=exc.name), 400)
            except Busy:
                return _json(self, error_body(429, f"busy: too many API requests at once; retry in {RETRY_AFTER_S} s",
                                              retry_after_s=RETRY_AFTER_S), 429, {"Retry-After": str(RETRY_AFTER_S)})
            except Exception:
                log.exception("%s failed", path)
                return _json(self, error_body(500, "internal error"), 500)
            cache = {"X-Cache": served}
            if result is None:  # the answer names one streamer, and it is unknown (openapi.takes_streamer)
                return _json(self, _unknown(match.get("streamer_id") or req.filters.streamer_id), 404, cache)
            if ranked and len(result["rows"]) > req.limit:
                result = {**result, "rows": result["rows"][: req.limit]}
            return _json(self, result, headers=cache)

        handler.__name__ = "api_" + path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
        app.page(path)(handler)

    sink = worker.sink

    clk = queries.ClockCache(sink, max_age_s=age)

    api("/api/leaderboard", lambda req, _: queries.leaderboard(sink, req, clk()).to_json())
    api("/api/rising", lambda req, _: queries.rising(sink, req, clk()).to_json())
    api("/api/regions", lambda req, _: queries.regions(sink, req, clk()).to_json())
    api("/api/series", lambda req, _: queries.series(sink, req, clk()))
    api("/api/streamer/{streamer_id}",
        lambda req, m: queries.streamer(sink, m["streamer_id"], req.time, clk(), req.min_audience))
    api("/api/freshness", lambda req, _: {**queries.freshness(sink, int(time.time() * 1000)),
                                          "late_corrections_total": worker.processor.counts["late_corrections"]},
        stale=False)  # about now, with no as_of of its own: shared for half an interval, never served older
    # the dashboard's answers (boards/overview.py): the page's KPI strip, product ranking and funnel
    api("/api/summary", lambda req, _: queries.summary(sink, req, clk()))
    api("/api/products", lambda req, _: queries.products(sink, req, clk()))
    api("/api/funnel", lambda req, _: queries.funnel(sink, req, clk()))

    spec = orjson.dumps(openapi())

    @app.page("/api/openapi.json")
    async def openapi_json(self: Any, request: Any) -> Any:
        return self.bytes(spec, content_type="application/json")

    files = {p.name: (p.read_bytes(), _CONTENT_TYPES.get(p.suffix, "application/octet-stream"))
             for p in STATIC_DIR.iterdir() if p.is_file()}

    @app.page("/static/{name}")
    async def static(self: Any, request: Any, name: str) -> Any:
        if name not in files:  # only the files shipped in static/, never a path
            return _json(self, error_body(404, f"not found: no static file {name[:64]!r}"), 404)
        body, ctype = files[name]
        return self.bytes(body, content_type=ctype, headers={"Cache-Control": "no-cache"})

    @app.page("/")
    async def index(self: Any, request: Any) -> Any:
        body, _ = files["index.html"]
        return self.bytes(body, content_type="text/html", headers={"Cache-Control": "no-cache"})
