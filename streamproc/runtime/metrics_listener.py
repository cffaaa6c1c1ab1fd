"""A listener of its own for ``/metrics`` and ``/status``, so that alerting still sees a flooded worker.

The web port holds at most ``STREAMPROC_API_MAX_CONNECTIONS`` connections: a reader must not take the
file descriptors the consumer and the store need. A reader that holds all of them also takes the slot
Prometheus scrapes through, so the scrape failed, ``StreamprocWorkerDown`` fired for a worker that was
consuming, and every other alert went blind for as long as the flood lasted (Prometheus keeps one
connection between scrapes, so this struck when it had to open one: it or the worker restarted). With
``STREAMPROC_METRICS_PORT`` set, the worker also serves its metrics and status on that port, bound to
``STREAMPROC_METRICS_HOST`` (an interface Prometheus reaches and the API's readers need not), with a
bound of its own (``MAX_CONNECTIONS``), the same idle timeout, error answers and bearer token as the web
port. The socket is bound when the worker is built, so a port already taken stops the worker at once
instead of leaving it running unscraped. docs/OPERATIONS.md, "Observability".
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable

from aiohttp import web

from streamproc import metrics
from streamproc.runtime.faust_compat import ConnectionBound, bounded_runner
from streamproc.settings import Settings
from streamproc.web import auth, errors

log = logging.getLogger(__name__)

# Prometheus holds one connection per server scraping; a second replica, a probe or a person with curl
# fit many times over. Small, so a flood of this port costs the worker few descriptors either.
MAX_CONNECTIONS = 16


class MetricsListener:
    """``/metrics`` and ``/status`` on ``settings.metrics_host:metrics_port``."""

    def __init__(self, settings: Settings, status: Callable[[], dict[str, Any]]) -> None:
        self.settings = settings
        self.sock = socket.create_server((settings.metrics_host, settings.metrics_port), reuse_port=False)
        self.port = self.sock.getsockname()[1]
        app = web.Application(middlewares=[errors.middleware]
                              + ([auth.bearer_middleware(settings.web_token)] if settings.web_token else []))

        async def prometheus(request: web.Request) -> web.Response:
            return web.Response(body=metrics.exposition(), content_type=metrics.EXPOSITION_TYPE)

        async def status_page(request: web.Request) -> web.Response:
            return web.json_response(status())

        app.router.add_get("/metrics", prometheus)
        app.router.add_get("/status", status_page)
        bound = ConnectionBound(MAX_CONNECTIONS, errors.too_many_connections(
            MAX_CONNECTIONS, metrics.METRICS_CONNECTIONS_REFUSED, "metrics listener"))
        self.runner = bounded_runner(app, errors.refused, errors.MAX_URL_BYTES, errors.MAX_HEADER_BYTES, bound,
                                     settings.api_idle_timeout_s)

    async def start(self) -> None:
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()
        log.info("metrics and status on http://%s:%d", self.settings.metrics_host, self.port)

    async def stop(self) -> None:
        await self.runner.cleanup()
        self.sock.close()
