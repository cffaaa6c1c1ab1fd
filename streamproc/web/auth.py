"""Bearer-token access to the worker's web server, as one aiohttp middleware over every route.

With ``STREAMPROC_WEB_TOKEN`` (or ``_FILE``) set, every request (API, page, /status and /metrics alike)
must carry ``Authorization: Bearer <token>``; Prometheus sends one with ``authorization:
credentials_file`` in its scrape config. A browser opens the page once as ``/?token=<token>``, which
sets an HttpOnly cookie the page's own API calls then carry. Comparison is constant-time, and a
refused request learns nothing but 401. Without a token the server is open, which is why it binds to
127.0.0.1 unless ``STREAMPROC_WEB_HOST`` says otherwise.
"""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable

from aiohttp import web

COOKIE = "streamproc_token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_credentials(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None.

    The scheme is matched case-insensitively (RFC 7235, 2.1: ``bearer`` and ``BEARER`` are Bearer too)
    and may be followed by more than one space.
    """
    scheme, _, credentials = header.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def bearer_middleware(token: str) -> Any:
    expected = token.encode()

    def matches(candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), expected)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if matches(bearer_credentials(request.headers.get("Authorization", ""))):
            return await handler(request)
        if matches(request.cookies.get(COOKIE)):
            return await handler(request)
        if request.path == "/" and matches(request.query.get("token")):
            response = web.HTTPFound("/")  # drop the token from the address bar and history
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            return response
        return web.json_response({"error": "unauthorized: send Authorization: Bearer <STREAMPROC_WEB_TOKEN>",
                                  "status": 401}, status=401, headers={"WWW-Authenticate": 'Bearer realm="streamproc"'})

    return require_token
