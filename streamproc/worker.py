"""The Faust worker: agents for the three event topics, a flush timer, restore on assignment, web pages.

Kafka offsets are not the source of truth here: ClickHouse checkpoints are. On assignment the worker
restores each partition from the sink and commits checkpoint + 1 to the group, so that Faust's own
seek-to-committed (which runs after recovery) lands exactly there. The event topics are consumed with
acks off, so Faust never commits on its own; the worker commits after each flush, which also keeps
consumer-group lag meaningful for tools that read it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import TP as FaustTP

from . import metrics, web
from .fetch import Batch, BatchTransport, Deliver
from .kafka import faust_broker_url
from .processor import Processor
from .settings import Settings
from .sink import Sink, open_sink
from .topics import DEADLETTER, EVENT_TOPICS

log = logging.getLogger(__name__)


class App(faust.App):
    """Faust, with a consumer that hands agents whole batches (fetch.BatchConsumer)."""

    deliver: Deliver | None = None  # where the consumer sends each batch; set by the Worker

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        consumer.deliver = self.deliver
        return consumer


class Worker:
    """Binds a Processor to a Faust app: consumption, flushing, rebalances and the web server."""

    def __init__(self, settings: Settings, sink: Sink | None = None) -> None:
        self.settings = settings
        self.sink = sink or open_sink(settings)
        self.sink.apply_schema()
        if settings.streamers_file:
            n = load_streamers(self.sink, settings.streamers_file)
            log.info("loaded %d streamers from %s", n, settings.streamers_file)
        self.processor = Processor(settings, self.sink)
        self.flush_lock = asyncio.Lock()
        self.retry_at = 0.0
        self.backoff = 0.0
        self.app = self._build_app()

    # -- wiring ---------------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        app = App(
            s.group_id,
            broker=faust_broker_url(s),
            value_serializer="raw",
            key_serializer="raw",
            store="memory://",
            web_host=s.web_host,
            web_bind=s.web_host,
            web_port=s.web_port,
            consumer_auto_offset_reset="earliest",
            broker_rebalance_timeout=5,
            broker_session_timeout=10,
            broker_heartbeat_interval=1,
            topic_allow_declare=False,
            topic_disable_leader=True,
            producer_linger_ms=5,
        )
        app.deliver = self._deliver
        self.logical = {s.topic(name): name for name in EVENT_TOPICS}
        self.channels: dict[str, Any] = {}
        self.dlq = app.topic(s.topic(DEADLETTER), key_type=bytes, value_type=bytes, acks=False)
        for name in EVENT_TOPICS:
            self._add_agent(app, name)
        app.timer(s.flush_interval_s, name="streamproc.flush")(self._flush_tick)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)
        web.register(app, self)
        return app

    def _add_agent(self, app: faust.App, name: str) -> None:
        """One agent per event topic; it receives whole fetched batches (see fetch.py)."""
        app.topics.add(app.topic(self.settings.topic(name), acks=False))  # subscribe the consumer
        channel = app.channel(maxsize=4)  # a few batches in flight: the fetcher waits on a slow agent
        self.channels[self.settings.topic(name)] = channel
        handle = self.processor.handle_batch
        limit = self.settings.max_buffered_rows

        async def consume(stream: faust.StreamT) -> None:
            async for batch in stream:
                handle(name, batch.tp.partition, batch.records)
                if self.processor.dead:
                    await self._send_dead_letters()
                if self.processor.buffered_rows >= limit:
                    await self._wait_for_sink(limit)

        consume.__name__ = consume.__qualname__ = f"consume_{name.replace('.', '_')}"
        app.agent(channel, name=f"streamproc.{name}")(consume)

    async def _deliver(self, batch: Batch) -> None:
        await self.channels[batch.tp.topic].put(batch)

    # -- dead letters ---------------------------------------------------------------------------

    async def _send_dead_letters(self) -> None:
        for key, value in self.processor.take_dead_letters():
            await self.dlq.send(key=key, value=value)

    # -- flushing and backpressure ---------------------------------------------------------------

    async def _wait_for_sink(self, limit: int) -> None:
        """Hold the agent (and so the fetcher) while the sink is behind; never drop rows."""
        metrics.PAUSED.set(1)
        log.warning("sink is behind: %d rows buffered, pausing consumption", self.processor.buffered_rows)
        while self.processor.buffered_rows >= limit:
            await asyncio.sleep(0.1)
        metrics.PAUSED.set(0)
        log.info("sink caught up, resuming consumption")

    async def _flush_tick(self) -> None:
        if time.monotonic() >= self.retry_at:
            await self.flush()

    async def flush(self) -> bool:
        """Write every changed window and the checkpoints; on failure keep everything and back off."""
        async with self.flush_lock:
            snaps = self.processor.snapshot()
            metrics.BUFFERED.set(self.processor.buffered_rows + sum(len(s.tallies) for s in snaps))
            if not snaps:
                return True
            started = time.perf_counter()
            try:
                await self._send_dead_letters()
                await self.app.producer.flush()  # dead letters must be durable before the checkpoint passes them
                await asyncio.to_thread(self.sink.write, snaps)
            except Exception as exc:
                self.processor.flush_failed(snaps)
                metrics.FLUSH_FAILURES.inc()
                self.backoff = min(self.settings.sink_retry_max_s, max(0.2, self.backoff * 2))
                self.retry_at = time.monotonic() + self.backoff
                log.error("flush failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, self.backoff)
                return False
            self.backoff = 0.0
            self.processor.flush_done(snaps)
            metrics.FLUSHES.inc()
            metrics.FLUSH_ROWS.inc(sum(len(s.tallies) for s in snaps))
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
            metrics.BUFFERED.set(self.processor.buffered_rows)
            await self._commit({(s.topic, s.partition): s.offset + 1 for s in snaps if s.offset >= 0})
            return True

    async def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        s = self.settings
        tps = {FaustTP(s.topic(t), p): o for (t, p), o in offsets.items()}
        if tps:
            try:
                await self.app.consumer._commit(tps)
            except Exception as exc:  # the checkpoint in ClickHouse is what counts; this is for lag tools
                log.warning("offset commit failed: %r", exc)

    # -- rebalances -----------------------------------------------------------------------------

    def _ours(self, tps: Any) -> list[tuple[str, int]]:
        return [(self.logical[tp.topic], tp.partition) for tp in tps if tp.topic in self.logical]

    async def _on_assigned(self, app: Any, assigned: Any, **_: Any) -> None:
        new = [tp for tp in self._ours(assigned) if tp not in self.processor.states]
        if not new:
            return
        # Restore synchronously, on purpose: Faust's recovery runs concurrently with this signal and
        # resumes fetching when it ends; if we awaited here, messages could arrive for a partition whose
        # state is not restored yet. Blocking the loop for the restore closes that window.
        resume = self.processor.assign(new)
        # Faust seeks to the committed offsets once recovery ends: make those our checkpoints + 1.
        await self._commit(resume)

    async def _on_revoked(self, app: Any, revoked: Any, **_: Any) -> None:
        mine = self._ours(revoked)
        if mine:
            await self.flush()
            self.processor.revoke(mine)


def load_streamers(sink: Sink, path: str) -> int:
    """Load the streamers dimension from JSON lines (the generator's output or a user's file)."""
    import orjson

    cols = ("streamer_id", "name", "platform", "province", "county", "village", "category")
    with open(path, "rb") as f:
        rows = [tuple(str(o.get(c, "")) for c in cols) for o in map(orjson.loads, filter(bytes.strip, f))]
    sink.insert("streamers", cols, rows)
    return len(rows)


def run_worker(settings: Settings) -> None:
    """Run the worker until stopped (SIGINT/SIGTERM); used by `streamproc worker`."""
    from faust.worker import Worker as FaustWorker

    worker = Worker(settings)
    FaustWorker(worker.app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
