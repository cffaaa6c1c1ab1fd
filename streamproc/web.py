"""Pages of the worker's web server (Faust's, bound to 127.0.0.1 by default): status, metrics, the
leaderboard API and the live leaderboard page.

Every API handler validates its query string against ``api_spec.ENDPOINTS`` (unknown, repeated or bad
parameters are a 400 naming the parameter) and then asks ``queries``; the sink's blocking calls run in
a thread, so the event loop keeps consuming. The page is plain files from ``static/``, no build step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics, queries, webauth
from .api_spec import ENDPOINTS, openapi
from .query_params import BadParameter, Request, parse

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def _json(view: Any, value: Any, status: int = 200) -> Any:
    return view.bytes(orjson.dumps(value), content_type="application/json", status=status)


def _request(path: str, request: Any, min_audience: int) -> Request:
    raw: dict[str, str] = {}
    for k, v in urllib.parse.parse_qsl(request.query_string, keep_blank_values=True):
        if k in raw:
            raise BadParameter(k, "given more than once")
        raw[k] = v
    return dataclasses.replace(parse(raw, ENDPOINTS[path][1]), min_audience=min_audience)


def register(app: faust.App, worker: "Worker") -> None:
    s = worker.settings
    webauth.install(app, s.web_token)  # every route below needs the bearer token when one is set

    @app.page("/status")
    async def status(self: Any, request: Any) -> Any:
        return self.json(worker.processor.status())

    @app.page("/metrics")
    async def prometheus(self: Any, request: Any) -> Any:
        return self.bytes(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    def api(path: str, answer: Callable[[Request, dict[str, str]], Any]) -> None:
        async def handler(self: Any, request: Any, **match: str) -> Any:
            try:
                req = _request(path, request, s.conversion_min_viewers)
                for name, value in match.items():
                    parse({name: value}, (name,))
                result = await asyncio.to_thread(answer, req, match)
            except BadParameter as exc:
                return _json(self, {"error": str(exc), "parameter": exc.name}, 400)
            except Exception:
                log.exception("%s failed", path)
                return _json(self, {"error": "internal error"}, 500)
            if result is None:
                return _json(self, {"error": "not found"}, 404)
            return _json(self, result)

        handler.__name__ = "api_" + path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
        app.page(path)(handler)

    sink = worker.sink
    age = min(0.5, s.flush_interval_s / 2)  # requests within this share one reading of the data clock

    def clk() -> queries.Clock:
        return queries.clock(sink, max_age_s=age)

    api("/api/leaderboard", lambda req, _: queries.leaderboard(sink, req, clk()).to_json())
    api("/api/rising", lambda req, _: queries.rising(sink, req, clk()).to_json())
    api("/api/regions", lambda req, _: queries.regions(sink, req, clk()).to_json())
    api("/api/series", lambda req, _: queries.series(sink, req, clk()))
    api("/api/streamer/{streamer_id}",
        lambda req, m: queries.streamer(sink, m["streamer_id"], req.time, clk(), req.min_audience))
    api("/api/freshness", lambda req, _: {**queries.freshness(sink, int(time.time() * 1000)),
                                          "late_corrections_total": worker.processor.counts["late_corrections"]})

    spec = orjson.dumps(openapi())

    @app.page("/api/openapi.json")
    async def openapi_json(self: Any, request: Any) -> Any:
        return self.bytes(spec, content_type="application/json")

    files = {p.name: (p.read_bytes(), _CONTENT_TYPES.get(p.suffix, "application/octet-stream"))
             for p in STATIC_DIR.iterdir() if p.is_file()}

    @app.page("/static/{name}")
    async def static(self: Any, request: Any, name: str) -> Any:
        if name not in files:  # only the files shipped in static/, never a path
            return self.bytes(b"not found", content_type="text/plain", status=404)
        body, ctype = files[name]
        return self.bytes(body, content_type=ctype, headers={"Cache-Control": "no-cache"})

    @app.page("/")
    async def index(self: Any, request: Any) -> Any:
        body, _ = files["index.html"]
        return self.bytes(body, content_type="text/html", headers={"Cache-Control": "no-cache"})
