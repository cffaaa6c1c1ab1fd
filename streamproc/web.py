"""Pages of the worker's web server (Faust's, bound to 127.0.0.1 by default): status, metrics, API.

Handlers that read the sink run its blocking calls in a thread, so the event loop keeps consuming.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics, queries

if TYPE_CHECKING:
    from .worker import Worker


def register(app: faust.App, worker: "Worker") -> None:
    @app.page("/status")
    async def status(self: Any, request: Any) -> Any:
        return self.json(worker.processor.status())

    @app.page("/metrics")
    async def prometheus(self: Any, request: Any) -> Any:
        return self.bytes(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/api/top")
    async def top(self: Any, request: Any) -> Any:
        q = request.query
        try:
            rows = await asyncio.to_thread(
                queries.top, worker.sink, q.get("metric", "gmv"), int(q.get("seconds", 300)), int(q.get("limit", 10)))
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        return self.json(rows)
