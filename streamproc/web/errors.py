"""What a client of the worker's web server can rely on in every response: errors are JSON, and every
response is counted.

**Errors.** Every error, whoever produced it, is ``{"error": "<what went wrong>", "status": <HTTP
status>}``, with fields of its own where a client can act on them (``parameter`` on a 400 or 404 that
names one, ``retry_after_s`` on a 429). The producers: the API handlers (400, 404, 429, 500:
``web/server.py``), the bearer token (401: ``web/auth.py``), the router (a path no route serves: 404; a
method the route does not take: 405, with ``Allow``), and aiohttp itself, before any route or middleware
runs, for a request it will not parse (414 for a URL over its limit, 431 for a header over its limit or
too many headers, 400 otherwise: ``refused``, wired in by ``runtime/faust_compat.py``). A dashboard, a
script and the CLI then need one error path, not one per layer, and a text/plain page from a lower
layer can no longer reach a client that parses JSON. An exception in a handler is a 500 whose body says
nothing of it (the traceback goes to the log only).

**Metrics.** The middleware here is the outermost one, so it sees every response a route or the router
gives, the bearer token's 401s included: ``streamproc_api_requests_total{route, status}`` and
``streamproc_api_request_seconds{route}``. The route label is the route's template
(``/api/streamer/{streamer_id}``), never the path a client sent, so the series stay few whatever the
clients ask: a path no route serves is ``unmatched``, a request refused before routing ``malformed``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from prometheus_client import Counter

from streamproc import metrics

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"  # the route label of a request no route serves (404, 405)
MALFORMED = "malformed"  # the route label of a request refused before routing (414, 431, 400)
_SHOWN = 200  # characters of a client's path quoted back in a message

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(status: int, message: str, **more: Any) -> dict[str, Any]:
    """The one shape of every error: the message, the status again (a client that logs bodies keeps
    both together), and any fields of the error's own."""
    return {"error": message, "status": status, **more}


def error_response(status: int, message: str, headers: Any = None, **more: Any) -> web.Response:
    """An error as a JSON response (see ``error_body``)."""
    return web.Response(body=orjson.dumps(error_body(status, message, **more)), status=status,
                        content_type="application/json", headers=headers)


def route_of(request: web.BaseRequest) -> str:
    """The template of the route that took ``request`` (``UNMATCHED`` if none did): a bounded label."""
    match = getattr(request, "match_info", None)  # a request refused before routing has none
    resource = getattr(getattr(match, "route", None), "resource", None)
    return resource.canonical if resource is not None else UNMATCHED


def _kept_headers(response: web.StreamResponse) -> dict[str, str]:
    """The headers of an error worth keeping on its JSON form (``Allow``, ``Retry-After``, ...)."""
    return {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}


def _message(request: web.BaseRequest, status: int, reason: str, allowed: Any = ()) -> str:
    path = request.path[:_SHOWN]
    if status == 404 and route_of(request) == UNMATCHED:
        return f"not found: no route serves {path}; the API is described at /api/openapi.json"
    if status == 404:
        return f"not found: {path}"
    if status == 405:
        return f"method not allowed: {request.method} {path}" + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else "")
    return reason.lower() or f"HTTP {status}"


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON (see the module docstring), every response counted and timed by route.

    Installed first (outermost), so the bearer token's refusals are counted too. A redirect or any
    other non-error the router or a handler raises passes through as raised.
    """
    started = time.perf_counter()
    route = route_of(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            metrics.count_response(route, exc.status, time.perf_counter() - started)
            raise
        message = _message(request, exc.status, exc.reason, getattr(exc, "allowed_methods", ()))
        response = error_response(exc.status, message, _kept_headers(exc))
    except Exception:
        log.exception("%s %s failed", request.method, route)
        response = error_response(500, "internal error")
    else:
        if response.status >= 400 and response.content_type != "application/json":
            # an error page from below the API (a handler of Faust's own, a static file): JSON like the rest
            response = error_response(response.status, _message(request, response.status, response.reason or ""),
                                      _kept_headers(response))
    metrics.count_response(route, response.status, time.perf_counter() - started)
    return response


MAX_URL_BYTES = 8190  # the request target, query string included (aiohttp's default; nginx's is 8 KiB too)
MAX_HEADER_BYTES = 16384  # one header, name and value: room for large cookies. Differs from MAX_URL_BYTES on
# purpose: aiohttp reports both overflows as LineTooLong, and the limit it names tells which one it was.

def refusal(exc: BaseException | None, status: int, max_headers: int) -> tuple[int, str]:
    """The status and message for a request aiohttp refused with ``exc`` (its own ``status``: 400 for a
    parse error, 500 for an exception no middleware caught)."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == MAX_URL_BYTES:
            return 414, (f"URL too long: the request target (path and query string) may be at most "
                         f"{MAX_URL_BYTES} bytes")
        if limit == MAX_HEADER_BYTES:
            return 431, f"request header too long: a header (name and value) may be at most {MAX_HEADER_BYTES} bytes"
        return 400, f"request line or header too long (at most {limit} bytes)"
    if isinstance(exc, HttpProcessingError):
        text = " ".join(w for w in str(exc.message).split() if w != "^")[:200]  # aiohttp's caret line: no use here
        if "too many headers" in text.lower():
            return 431, f"too many request headers: at most {max_headers}"
        return 400, f"malformed request: {text}" if text else "malformed request"
    if status == 504:
        return status, "timed out"
    if status >= 500:
        return status, "internal error"
    return status, "bad request"


def refused(request: web.BaseRequest, status: int, exc: BaseException | None, max_headers: int) -> web.Response:
    """The answer to a request aiohttp refused before routing (wired in by ``runtime/faust_compat.py``):
    the status and message from aiohttp's own reason (``refusal``), the same JSON as every error, one log
    line (a traceback only for a 5xx, which is ours), counted as ``malformed``; the time is that of
    answering, the request was never read whole."""
    started = time.perf_counter()
    code, text = refusal(exc, status, max_headers)
    if code >= 500:
        log.error("answered %s to %s: %s", code, request.remote, text, exc_info=exc)
    elif isinstance(exc, BadHttpMethod):  # TLS or a scanner on an HTTP port: noise, as aiohttp treats it
        log.debug("refused %s from %s: %s", code, request.remote, text)
    else:
        log.warning("refused %s from %s: %s", code, request.remote, text)
    response = error_response(code, text)
    metrics.count_response(MALFORMED, code, time.perf_counter() - started)
    return response


def too_many_connections(limit: int, refused: Counter = metrics.API_CONNECTIONS_REFUSED,
                         server: str = "web server", log_every_s: float = 60.0) -> Callable[[], bytes]:
    """The raw answer to a connection over ``limit`` (``STREAMPROC_API_MAX_CONNECTIONS``, or the metrics
    listener's own bound), sent before its request is read, then closed: 503 with the JSON of every error
    and ``Retry-After``. Each is counted in ``refused``; a WARNING at most every ``log_every_s``, since a
    flood of connections must not become a flood of log lines."""
    body = orjson.dumps(error_body(503, f"busy: the server holds {limit} connections already", retry_after_s=1))
    answer = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    last = {"at": -log_every_s, "refused": 0}

    def full() -> bytes:
        refused.inc()
        last["refused"] += 1
        now = time.monotonic()
        if now - last["at"] >= log_every_s:
            log.warning("%s full (%d connections held): refused %d connection(s) since the last warning",
                        server, limit, last["refused"])
            last.update(at=now, refused=0)
        return answer

    return full
