"""Every use of a Faust, aiokafka or aiohttp private name, in one place, written against pinned versions.

The worker needs six things Faust and aiokafka have no public door for: a fetch loop that hands agents
whole per-partition batches, the consumer's fetch wait (Faust fixes it at 1,500 ms), committing offsets
it chose itself (checkpoints in ClickHouse are the truth; Faust never commits on its own here), a bound
on how far a fetched record batch may decompress, middlewares on the web server (the bearer token, JSON
errors and request metrics), and an answer of its own to the requests aiohttp refuses before any
middleware runs (and to connections past its bound). Each is done here and nowhere else, and the
contract tests check every name this module touches (``PRIVATE_NAMES``, ``FETCHER_PRIVATE_NAMES``,
``RECORD_MODULES`` and ``WEB_PRIVATE_NAMES``: ``tests/unit/test_faust_compat.py``), so an upgrade of
faust-streaming, aiokafka or aiohttp fails a test instead of production.

Written against faust-streaming ``PINNED["faust"]``, aiokafka ``PINNED["aiokafka"]`` (pyproject.toml)
and aiohttp ``PINNED["aiohttp"]`` (constraints.txt).

**Batches.** Faust's fetch loop awaits once per message (``wait_first`` on the callback and the flow
signal) and wraps each record in a Message and an Event before an agent sees it; at livestream-peak
rates that per-message machinery costs more than the work itself. ``BatchConsumer`` keeps everything
else of Faust — group membership, the assignor, rebalance signals, pausing, seeking, read offsets — and
replaces only the drain loop: each fetch's records for one partition go to that topic's agent as one
``Batch``.

**Batches too large.** aiokafka decompresses a fetched record batch whole, with no bound, before a
record of it reaches us. ``bound_batches`` puts bounded decoders (``runtime/batch_codecs.py``) in place
of its codec functions and has its fetcher stand one record for a batch that passes the bound: its
value an ``ingest.events.RefusedBatch``, its offset the batch's last, so the batch becomes one dead
letter and the partition moves on past it.

**Refused requests.** A request aiohttp cannot parse — a URL or a header over its limits, too many
headers, bad syntax — never reaches the application: aiohttp's connection handler answers it with a
text/plain 400 and logs an ERROR with a traceback, and does the same (500) for an exception that escaped
every middleware. ``answer_refused_requests`` gives Faust's web server a connection handler whose
``handle_error`` asks the web layer for the answer instead (JSON, like every error of the API), with a
status that says what was wrong (414 URL too long, 431 header too long or too many, 400 otherwise), and
logs one WARNING line without a traceback: a client's mistake is no fault of the server.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Awaitable, Callable, Iterator, Mapping, Sequence

import faust
from aiohttp import web
from aiokafka.consumer import fetcher as aiokafka_fetcher
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from streamproc.ingest.events import RefusedBatch
from streamproc.runtime.batch_codecs import BatchTooLarge, decoders

PINNED = {"faust": "0.15.3", "aiokafka": "0.14.0", "aiohttp": "3.14.5"}
# The private names used below, by owner; the contract test checks each one exists.
PRIVATE_NAMES = {
    AIOKafkaConsumer: ("_drain_messages", "_stopped", "_read_offset", "_wait_next_records", "_commit",
                       "_new_consumer_thread"),
    faust.App: ("_new_transport", "_new_consumer"),
}
# Set on the aiokafka consumer Faust builds, between its construction and its start (see FetchWaitThread,
# which overrides Faust's ``AIOKafkaConsumerThread._create_worker_consumer``): an instance attribute, so the
# contract test builds a consumer as Faust does and reads it (tests/unit/test_faust_compat.py).
FETCH_WAIT_ATTRIBUTE = "_fetch_max_wait_ms"
# The same for the web server's refusals (``answer_refused_requests``): on the Faust web driver an
# instance attribute, on aiohttp's classes methods (``handle_error`` and ``_make_server`` are overridden)
# and the server's instance attributes read to build a handler as aiohttp's own ``Server.__call__`` does.
WEB_PRIVATE_NAMES = {
    AiohttpWeb: ("_runner",),
    web.AppRunner: ("_make_server",),
    web.Server: ("_loop", "_kwargs"),
    web.RequestHandler: ("handle_error",),
}


# aiokafka's record modules (compiled, and the pure-Python ones it falls back to) and the codec functions
# each calls by its module-level name; the fetcher's class of one partition's fetched records.
RECORD_MODULES = ("aiokafka.record._crecords.default_records", "aiokafka.record._crecords.legacy_records",
                  "aiokafka.record.default_records", "aiokafka.record.legacy_records")
CODEC_NAMES = ("gzip_decode", "snappy_decode", "lz4_decode", "zstd_decode")
FETCHER_PRIVATE_NAMES = {aiokafka_fetcher: ("PartitionRecords",)}


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive records of one partition, as aiokafka returned them (offset, key, value, timestamp)."""

    tp: TP
    records: Sequence[Any]
    # the consumer group's generation when it was fetched: a batch still queued for its agent when a
    # rebalance ran is stale (the partition was revoked and restored meanwhile, and the seek after the
    # rebalance fetches it again)
    generation: int


Deliver = Callable[[Batch], Awaitable[None]]


class BatchConsumer(AIOKafkaConsumer):
    """A Faust consumer whose fetch loop delivers batches to ``deliver`` (set by the worker)."""

    deliver: Deliver | None = None

    def _new_consumer_thread(self) -> FetchWaitThread:
        return FetchWaitThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        app = self.app
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if not records or self.should_stop or not self.flow_active:
                    continue
                generation = app.consumer_generation_id
                for tp, recs in records.items():
                    if not self.flow_active or app.consumer_generation_id != generation:
                        break  # a rebalance started: what was fetched will be fetched again
                    if active is not None and tp not in active:
                        continue
                    floor = read_offset[tp]
                    if floor is not None and recs[0].offset < floor:
                        recs = [r for r in recs if r.offset >= floor]  # already delivered before a seek
                        if not recs:
                            continue
                    assert self.deliver is not None
                    await self.deliver(Batch(tp, recs, generation))
                    if app.consumer_generation_id != generation:
                        break  # a rebalance ran while it waited: its seek, not this batch, says where to read
                    read_offset[tp] = recs[-1].offset + 1
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


class FetchWaitThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait the worker chose instead of Faust's fixed 1,500 ms.

    A fetch that finds nothing new is held by the broker up to that long; records produced meanwhile
    wait with it. Faust passes no setting for it, so the consumer it builds gets ours before it starts
    (its fetcher is created in ``start`` from this attribute).
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            setattr(consumer, FETCH_WAIT_ATTRIBUTE, wait_ms)
        return consumer


class BatchTransport(AIOKafkaTransport):
    Consumer = BatchConsumer


class App(faust.App):
    """Faust, with a consumer that hands agents whole batches (``BatchConsumer``)."""

    deliver: Deliver | None = None  # where the consumer sends each batch; set by the worker
    fetch_max_wait_ms: int | None = None  # the consumer's fetch wait (FetchWaitThread); None: Faust's

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        consumer.deliver = self.deliver
        return consumer


# -- record batches that decompress past the bound ---------------------------------------------------------


def record_modules() -> list[ModuleType]:
    """The record modules of ``RECORD_MODULES`` this aiokafka has (the compiled ones may be absent)."""
    found = []
    for name in RECORD_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            pass
    return found


@dataclass(frozen=True, slots=True)
class _RefusedRecord:
    """What aiokafka's fetcher reads of a refused batch: one record, at the batch's last offset."""

    offset: int
    timestamp: int
    timestamp_type: int
    value: RefusedBatch
    key: None = None
    checksum: None = None
    headers: tuple = ()


class _BoundedBatch:
    """A fetched record batch whose records are its own, or one ``_RefusedRecord`` if it is too large."""

    __slots__ = ("_batch",)

    def __init__(self, batch: Any) -> None:
        self._batch = batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        batch = self._batch
        try:
            if getattr(batch, "magic", 0) >= 2:
                return iter(batch)  # decompressed here, whole: the records pass at the batch's own speed
            return iter(list(batch))  # the old formats decompress at the first record
        except BatchTooLarge as exc:
            last = batch.next_offset - 1
            first = getattr(batch, "base_offset", last)  # the old formats tell only the last
            detail = f"{exc}; offsets {first}..{last} ({last - first + 1} records) refused whole, unread"
            ts = getattr(batch, "max_timestamp", None)  # the old formats: none; the refusal's time then
            ts = int(time.time() * 1000) if ts is None or ts < 0 else ts
            return iter((_RefusedRecord(last, ts, getattr(batch, "timestamp_type", 0), RefusedBatch(detail)),))


class _BoundedRecords:
    """The fetched records of one partition, their batches as ``_BoundedBatch``."""

    __slots__ = ("_records",)

    def __init__(self, records: Any) -> None:
        self._records = records

    def has_next(self) -> bool:
        return self._records.has_next()

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        return None if batch is None else _BoundedBatch(batch)


class _BoundedPartitionRecords(aiokafka_fetcher.PartitionRecords):
    def __init__(self, tp: Any, records: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tp, _BoundedRecords(records), *args, **kwargs)


def bound_batches(limit: int) -> None:
    """Decompress no fetched record batch past ``limit`` bytes, in every consumer of this process; a batch
    past it is refused whole (the module docstring). Idempotent; the last limit set holds."""
    bounded = decoders(limit)
    for module in record_modules():
        for name, decode in bounded.items():
            if hasattr(module, name):
                setattr(module, name, decode)
    aiokafka_fetcher.PartitionRecords = _BoundedPartitionRecords


async def commit(app: faust.App, offsets: Mapping[TP, int]) -> None:
    """Commit ``offsets`` (the next offset to read, per partition) for the group, now.

    Faust commits only what its own acks track; the worker acks nothing and commits its checkpoints
    after each flush, so that tools reading consumer-group lag see the truth.
    """
    await app.consumer._commit(dict(offsets))


def add_middleware(app: faust.App, middleware: Any) -> None:
    """Put an aiohttp middleware in front of every route of Faust's web server."""
    app.web.web_app.middlewares.append(middleware)


# -- requests aiohttp refuses before the application sees them --------------------------------------------

Refuse = Callable[[web.BaseRequest, int, "BaseException | None", int], web.StreamResponse]
# (request, aiohttp's status, its exception, its header-count limit) -> the response to send


class _RefusingHandler(web.RequestHandler):
    """aiohttp's connection handler, whose own error answers come from ``refuse``."""

    refuse: Refuse

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: a response is under way, nothing else can be sent
            raise ConnectionError(f"response already started; cannot answer {status}")
        response = self.refuse(request, status, exc, self.max_headers)
        response.force_close()
        return response


class _Full(asyncio.Protocol):
    """A connection over the server's bound: the answer is written, the connection closed, nothing read."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.answer)  # type: ignore[attr-defined]
        transport.close()


@dataclass(frozen=True)
class ConnectionBound:
    """At most ``limit`` connections held (0: no bound); ``full()`` is the raw HTTP answer to one more."""

    limit: int
    full: Callable[[], bytes]


class _RefusingServer(web.Server):
    """aiohttp's server (the protocol factory) as the runner made it, handing out ``_RefusingHandler``s, or
    ``_Full`` while it holds as many connections as its bound allows."""

    def __init__(self, made: web.Server, refuse: Refuse, bound: ConnectionBound) -> None:
        super().__init__(made.request_handler, request_factory=made.request_factory,
                         handler_cancellation=made.handler_cancellation, loop=made._loop, **made._kwargs)
        self.refuse = refuse
        self.bound = bound
        self._accepted = 0  # handlers made in this burst of accepts, not yet in ``connections``

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        # A handler joins ``connections`` in its connection_made, which the loop runs at its next turn: a
        # burst of accepts (up to the listen backlog in one turn: a worker that was stopped, a flood)
        # would pass the bound by its size, counted by ``connections`` alone. The handlers of the burst
        # are counted until that turn; the reset is queued before their connection_made calls, and the
        # next burst's accepts run after all of them.
        if self.bound.limit:
            if not self._accepted:
                self._loop.call_soon(self._burst_over)
            if len(self.connections) + self._accepted >= self.bound.limit:
                return _Full(self.bound.full())
            self._accepted += 1
        handler = _RefusingHandler(self, loop=self._loop, **self._kwargs)
        handler.refuse = self.refuse
        return handler

    def _burst_over(self) -> None:
        self._accepted = 0


class _RefusingRunner(web.AppRunner):
    __slots__ = ("refuse", "bound")

    def __init__(self, app: web.Application, refuse: Refuse, bound: ConnectionBound, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.refuse = refuse
        self.bound = bound

    async def _make_server(self) -> web.Server:
        return _RefusingServer(await super()._make_server(), self.refuse, self.bound)


def bounded_runner(app: web.Application, refuse: Refuse, max_url_bytes: int, max_header_bytes: int,
                   bound: ConnectionBound, idle_timeout_s: float) -> web.AppRunner:
    """A runner for ``app`` whose server answers as ``answer_refused_requests`` says; for a listener of
    the worker's own beside Faust's web server (``runtime/metrics_listener.py``)."""
    return _RefusingRunner(app, refuse, bound, access_log=None, max_line_size=max_url_bytes,
                           max_field_size=max_header_bytes, keepalive_timeout=idle_timeout_s)


def answer_refused_requests(app: faust.App, refuse: Refuse, max_url_bytes: int, max_header_bytes: int,
                            bound: ConnectionBound, idle_timeout_s: float) -> None:
    """Have ``refuse`` answer what aiohttp answers by itself (see the module docstring), with URLs up to
    ``max_url_bytes`` and headers up to ``max_header_bytes``; hold at most ``bound.limit`` connections,
    and close one that has not sent a whole request for ``idle_timeout_s`` (aiohttp's keep-alive timeout,
    which also runs from a connection's start and while half a request is in). The web server shares the
    worker's process: every connection it holds is a file descriptor the consumer and the store cannot
    have, and a worker out of them stops consuming. Call before the worker starts: it replaces the runner
    of Faust's web server, which is made then (``access_log=None``, as Faust's own)."""
    driver = app.web
    driver._runner = bounded_runner(driver.web_app, refuse, max_url_bytes, max_header_bytes, bound, idle_timeout_s)


def web_connections(app: faust.App) -> int:
    """Connections the web server holds now (0 before it started)."""
    server = app.web._runner.server
    return len(server.connections) if server is not None else 0
