"""The Faust worker: agents for the three event topics, a flush loop, restore on assignment, web pages.

Kafka offsets are not the source of truth here: ClickHouse checkpoints are. On assignment the worker
restores each partition from the sink and commits checkpoint + 1 to the group, so that Faust's own
seek-to-committed (which runs after recovery) lands exactly there. The event topics are consumed with
acks off, so Faust never commits on its own; the worker commits after each flush, which also keeps
consumer-group lag meaningful for tools that read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import faust
from faust.types import TP as FaustTP

from streamproc import metrics
from streamproc.boards import changes, dimension, rollup
from streamproc.core.state import PartitionState
from streamproc.logging_setup import logging_config
from streamproc.runtime import heap, lifecycle, loop_lag
from streamproc.runtime.after_flush import AfterFlush, Pass
from streamproc.runtime.faust_compat import (
    App,
    Batch,
    ConnectionBound,
    add_middleware,
    answer_refused_requests,
    bound_batches,
    commit,
    web_connections,
)
from streamproc.runtime.kafka import BrokerWatch, faust_broker_url, faust_credentials, wait_for_broker
from streamproc.runtime.metrics_listener import MetricsListener
from streamproc.runtime.processor import Processor, WindowNotLoaded
from streamproc.runtime.topics import DEADLETTER, EVENT_TOPICS
from streamproc.settings import Settings
from streamproc.store import Sink, open_sink
from streamproc.web import auth, server
from streamproc.web import errors as web_errors

log = logging.getLogger(__name__)


DEADLETTER_BATCH_BYTES = 512 * 1024  # a producer batch: a burst of dead letters goes in a few requests


class DeadLettersUnsent(Exception):
    """A flush stops before its checkpoint: some dead letter it would pass is not in the broker yet."""


@dataclass
class OutgoingDeadLetter:
    """A dead letter taken from the processor, with the producer's future once handed over (None: to send)."""

    record: tuple[bytes, bytes]
    ack: asyncio.Future | None = None
    refused: bool = False  # refused once: sent again on its own, and nothing after it overtakes it
    acked: bool = False  # the broker has it (it has left the outbox)


class Worker:
    """Binds a Processor to a Faust app: consumption, flushing, rebalances and the web server."""

    def __init__(self, settings: Settings, sink: Sink | None = None) -> None:
        self.settings = settings
        bound_batches(settings.max_batch_bytes)  # before any fetch: a batch may not decompress past it
        self.sink = sink or open_sink(settings)
        self.sink.apply_schema()
        announce = getattr(self.sink, "announce", None)  # an embedded store: tell readers where our API is
        if announce:
            announce({"web": f"http://{settings.web_host}:{settings.web_port}"})
        if settings.streamers_file:
            n = dimension.load(self.sink, settings.streamers_file)
            log.info("loaded %d streamers from %s", n, settings.streamers_file)
        self.processor = Processor(settings, self.sink, defer_reopen=True)  # the event loop never waits on the store
        self.flush_lock = asyncio.Lock()
        self.flush_wanted = asyncio.Event()  # set by an agent: a flush now, before the interval is up
        self.catching_up = False  # reading a backlog: flush once all the broker holds is read
        self.dead_outbox: list[OutgoingDeadLetter] = []  # in order; leaves only once the broker has it
        self.dead_lock = asyncio.Lock()  # one hand-over or reap at a time; nobody holds it while waiting
        self.retry_at = 0.0
        self.backoff = 0.0
        self.in_flight_rows = 0  # rows of the flush being written: still buffered, not in the processor
        self.pausing = 0  # agents holding consumption (see _pause)
        self.paused_at = 0.0  # monotonic time the current pause began
        # bound now: a port already taken stops the worker here, not later with nobody scraping it
        self.metrics_listener = MetricsListener(settings, self.processor.status) if settings.metrics_port else None
        self.app = self._build_app()
        metrics.STATE.source = self

    # -- wiring ---------------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        app = App(
            s.group_id,
            broker=faust_broker_url(s),
            broker_credentials=faust_credentials(s),
            value_serializer="raw",
            key_serializer="raw",
            store="memory://",
            datadir=str(Path(s.data_dir) / "faust"),  # Faust's own files, not a directory in the cwd
            web_host=s.web_host,
            web_bind=s.web_host,
            web_port=s.web_port,
            consumer_auto_offset_reset="earliest",
            broker_rebalance_timeout=5,
            broker_session_timeout=10,
            consumer_group_instance_id=s.group_instance_id or None,
            broker_heartbeat_interval=1,
            topic_allow_declare=False,
            topic_disable_leader=True,
            producer_linger_ms=5,
            # dead letters run to deadletter.RECORD_MAX_BYTES: at the default 16 KiB a burst of them left
            # as one request each, one after another (one partition), and a flush waited for all of them
            producer_max_batch_size=DEADLETTER_BATCH_BYTES,
            broker_max_poll_records=s.max_poll_records or None,
        )
        app.deliver = self._deliver
        app.fetch_max_wait_ms = s.fetch_max_wait_ms
        self.logical = {s.topic(name): name for name in EVENT_TOPICS}
        self.channels: dict[str, Any] = {}
        self.dlq = app.topic(s.topic(DEADLETTER), key_type=bytes, value_type=bytes, acks=False)
        for name in EVENT_TOPICS:
            self._add_agent(app, name)
        app.task(self._flush_loop)
        app.task(self._watch_loop_lag)
        app.timer(5.0, name="streamproc.broker_watch")(BrokerWatch(s).check)  # a hung broker is otherwise silent
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_before_shutdown.connect(self._on_shutdown)
        # outermost: every error JSON, every response counted by route; then what aiohttp refuses itself
        add_middleware(app, web_errors.middleware)
        bound = ConnectionBound(s.api_max_connections, web_errors.too_many_connections(s.api_max_connections))
        answer_refused_requests(app, web_errors.refused, web_errors.MAX_URL_BYTES, web_errors.MAX_HEADER_BYTES,
                                bound, s.api_idle_timeout_s)
        metrics.API_CONNECTIONS.set_function(lambda: web_connections(app))
        if s.web_token:  # every route needs the bearer token when one is set
            add_middleware(app, auth.bearer_middleware(s.web_token))
            log.info("web server requires a bearer token")
        server.register(app, self)
        passes = []  # what keeps the boards fresh, in the gap after each flush
        if s.rollup_interval_s > 0:
            passes.append(Pass("rollup", s.rollup_interval_s, lambda: rollup.tick(self.sink)))
        if s.leaderboard_boards and s.leaderboard_changes_interval_s > 0:
            passes.append(Pass("changes", s.leaderboard_changes_interval_s, changes.watcher(app, self)))
        self.after_flush = AfterFlush(passes, slack_s=s.flush_interval_s / 2, share=s.store_pass_share)
        return app

    def _add_agent(self, app: faust.App, name: str) -> None:
        """One agent per event topic; it receives whole fetched batches (see runtime/faust_compat.py)."""
        app.topics.add(app.topic(self.settings.topic(name), acks=False))  # subscribe the consumer
        channel = app.channel(maxsize=4)  # a few batches in flight: the fetcher waits on a slow agent
        self.channels[self.settings.topic(name)] = channel
        handle = self.processor.handle_batch
        limit = self.settings.max_buffered_rows
        full_poll = self.settings.max_poll_records  # a batch this large: a backlog behind it (0: no bound)
        batch_records = metrics.BATCH_RECORDS.labels(name)

        async def consume(stream: faust.StreamT) -> None:
            async for batch in stream:
                batch_records.observe(len(batch.records))
                if full_poll and len(batch.records) >= full_poll:
                    self.catching_up = True
                if self._stale(batch):
                    continue
                try:
                    handle(name, batch.tp.partition, batch.records)
                except Exception as exc:  # never let Faust restart the agent and drop the rest of the batch
                    await self._finish_batch(name, batch, exc)
                if self.processor.dead or self.dead_outbox:
                    await self._pass_dead_letters()
                if self.buffered_rows >= limit:
                    await self._wait_for_sink(limit)
                elif self.catching_up and self._caught_up():
                    self.catching_up = False
                    self.flush_wanted.set()

        consume.__name__ = consume.__qualname__ = f"consume_{name.replace('.', '_')}"
        app.agent(channel, name=f"streamproc.{name}")(consume)

    def _caught_up(self) -> bool:
        """Whether every partition held has been read to the high watermark of its last fetch."""
        lags = (self._lag(topic, part, st) for (topic, part), st in self.processor.states.items())
        return all(lag is not None and lag <= 0 for lag in lags)

    def _stale(self, batch: Batch) -> bool:
        """Whether a rebalance ran since ``batch`` was fetched (it is then counted and left alone). Applied to
        the state restored since, it could jump past records the seek fetches again, which would then be
        skipped as applied."""
        if batch.generation == self.app.consumer_generation_id:
            return False
        self.processor.counts["stale"] += len(batch.records)
        return True

    async def _finish_batch(self, name: str, batch: Batch, exc: Exception) -> None:
        """Apply a batch again until it goes through, resuming each time at the first unit not applied.

        A window to reopen (``WindowNotLoaded``) is read from the store in a thread, with every other evicted
        window the rest of the batch touches: the event loop goes on serving the API, flushes and /metrics,
        and the batch goes on as soon as the windows are in. Any other
        failure (typically the store away while a window is read) pauses consumption — the agent waits,
        and with it the fetcher, as at the buffer bound — and is retried with capped backoff. A rebalance
        meanwhile ends the batch here: its partition was flushed or restored since, and the seek fetches
        what it has not applied again.
        """
        backoff, paused = 0.5, False
        try:
            while True:
                if isinstance(exc, WindowNotLoaded):
                    keys = self.processor.windows_to_reopen(exc, batch.records)
                    try:
                        await asyncio.to_thread(self.processor.reopen, exc, keys)
                    except Exception as failed:
                        exc = failed
                if not isinstance(exc, WindowNotLoaded):
                    if not paused:
                        paused = True
                        self._pause(+1)
                        log.warning("pausing consumption: a batch of %s/%d needs the sink", name, batch.tp.partition,
                                    extra={"event": "consumption_paused"})
                    log.error("applying a batch of %s/%d failed; retrying in %.1fs", name, batch.tp.partition,
                              backoff, exc_info=exc)
                    await asyncio.sleep(backoff)
                    backoff = min(self.settings.sink_retry_max_s, backoff * 2)
                if self._stale(batch):
                    return
                try:
                    self.processor.handle_batch(name, batch.tp.partition, batch.records)
                    return
                except Exception as again:
                    exc = again
        finally:
            self.processor.drop_reopened(name, batch.tp.partition)
            if paused:
                self._pause(-1)
                log.info("resuming consumption: the batch of %s/%d is applied", name, batch.tp.partition,
                         extra={"event": "consumption_resumed"})

    async def _deliver(self, batch: Batch) -> None:
        await self.channels[batch.tp.topic].put(batch)

    # -- dead letters ---------------------------------------------------------------------------

    async def _pass_dead_letters(self) -> None:
        """After a batch: hand its dead letters to the producer, without waiting for the broker.

        Never raises. Once a send has failed, the agent (and so consumption of its topic) waits here,
        retrying with capped backoff until the broker has taken every dead letter: none is dropped, the
        queue does not grow while the broker refuses, and the rest of the batch was already applied.
        """
        if await self._send_dead_letters(wait=False):
            return
        backoff = 0.5
        while True:
            await asyncio.sleep(backoff)
            if await self._send_dead_letters(wait=True):
                return
            backoff = min(self.settings.sink_retry_max_s, backoff * 2)

    async def _send_dead_letters(self, wait: bool = True) -> bool:
        """Hand the queued dead letters to the producer, in order; with ``wait``, until the broker has
        acknowledged each one queued at the call (what a checkpoint needs). Never raises.

        Returns False if a send failed: the dead letter stays queued, in its place, for the next try,
        and the failure is counted and logged with its reason. True means no failure, and with ``wait``
        every dead letter queued at the call acknowledged.

        The lock is held to hand over and to reap, never across the wait for the broker: an agent
        passing its batch's dead letters does not stall behind a flush waiting for acknowledgements.
        """
        async with self.dead_lock:
            self.dead_outbox.extend(OutgoingDeadLetter(r) for r in self.processor.take_dead_letters())
            errors = await self._exchange_dead_letters()
        owed = list(self.dead_outbox) if wait and not errors else []
        while owed and not errors:
            in_flight = [d.ack for d in owed if d.ack is not None and not d.ack.done()]
            if in_flight:
                await asyncio.wait(in_flight)
            async with self.dead_lock:
                errors = await self._exchange_dead_letters()
            owed = [d for d in owed if not d.acked]
            if owed and not errors and not any(d.ack is not None for d in owed):
                break  # nothing of its own in flight after a hand-over: left for the next try
        if errors:
            metrics.DEADLETTER_SEND_FAILURES.inc(len(errors))
            reasons = sorted({f"{type(e).__name__}: {e}"[:300] for e in errors})
            log.error("%d dead letters not taken by the broker (%s); kept in order and sent again (%d queued)",
                      len(errors), "; ".join(reasons[:3]), len(self.dead_outbox),
                      extra={"event": "deadletter_send_failed", "error": type(errors[0]).__name__,
                             "deadletter_queued": len(self.dead_outbox)})
        return not errors and not owed

    async def _exchange_dead_letters(self) -> list[BaseException]:
        """Reap what the broker answered, then hand over what is to send (under ``dead_lock``)."""
        errors = self._reap_dead_letters()
        return errors or await self._hand_over_dead_letters()

    def _reap_dead_letters(self) -> list[BaseException]:
        """Drop the dead letters the broker acknowledged; mark the refused ones to be sent again."""
        errors: list[BaseException] = []
        kept = []
        for d in self.dead_outbox:
            if d.ack is not None and d.ack.done():
                error = asyncio.CancelledError() if d.ack.cancelled() else d.ack.exception()
                if error is None:
                    d.acked = True
                    continue
                errors.append(error)
                d.ack, d.refused = None, True
            kept.append(d)
        self.dead_outbox = kept
        return errors

    async def _hand_over_dead_letters(self) -> list[BaseException]:
        """Give the producer, in order, each queued dead letter not in flight; stop at a refusal.

        One refused before goes alone, once nothing else is in flight, and the ones after it wait for
        its acknowledgement: a retry never lets later dead letters overtake it. (Those already in
        flight when a refusal is learnt may land first: pipelined sends cannot promise more.)
        """
        flying = any(d.ack is not None for d in self.dead_outbox)
        for d in self.dead_outbox:
            if d.ack is not None:
                continue
            if d.refused and flying:
                break
            key, value = d.record
            try:
                d.ack = await self.dlq.send(key=key, value=value, force=True)  # force: now, not held for the event
            except Exception as exc:  # refused before it left: too large, buffer full, producer stopped
                d.refused = True
                return [exc]
            if d.refused:
                break
            flying = True
        return []

    # -- flushing and backpressure ---------------------------------------------------------------

    def _pause(self, step: int) -> None:
        """Count the agents holding consumption (one per topic may wait at once, for either reason): the
        gauge says paused until the last of them goes on, and the counter adds the pause when it ends."""
        was_paused = self.pausing > 0
        self.pausing += step
        metrics.PAUSED.set(int(self.pausing > 0))
        if self.pausing > 0 and not was_paused:
            self.paused_at = time.monotonic()
        elif was_paused and self.pausing == 0:
            metrics.PAUSED_SECONDS.inc(time.monotonic() - self.paused_at)

    @property
    def buffered_rows(self) -> int:
        """Rows waiting for the sink: in the processor, plus those of a flush being written."""
        return self.processor.buffered_rows + self.in_flight_rows

    async def _wait_for_sink(self, limit: int) -> None:
        """Hold the agent (and so the fetcher) while the sink is behind; never drop rows. A flush starts
        now if none is running, rather than at the next tick (see ``_flush_loop``)."""
        self.catching_up = True
        self.flush_wanted.set()
        self._pause(+1)
        log.warning("sink is behind: %d rows buffered, pausing consumption", self.buffered_rows,
                    extra={"event": "consumption_paused", "sink_buffered_rows": self.buffered_rows})
        # Rows of a flush being written count too: a flush hanging on a dead sink must not let the
        # buffer refill behind it (it would come back to twice the limit when the flush fails).
        while self.buffered_rows >= limit:
            await asyncio.sleep(0.1)
        self._pause(-1)
        log.info("sink caught up, resuming consumption", extra={"event": "consumption_resumed"})

    async def _flush_loop(self) -> None:
        """Flush every ``flush_interval_s``, start to start, and sooner when asked (``flush_wanted``);
        then start the store pass due in the gap before the next flush, if any (``runtime/after_flush.py``).

        Faust's timers sleep the whole interval after each run, so a flush of 0.3 s would make the
        cadence 1.3 s and every row that much older when it becomes visible. The flushes asked for are
        a backlog's (a replay, a catch-up after an outage): one when the buffer reaches its bound, where
        consumption used to wait for the next tick (a quarter of a drain's time in packs), and one as
        soon as the worker has read all the broker holds after a full poll or the bound, so the end of a
        backlog is written when it is read, not up to an interval later (docs/SCALING.md, "Flushing a
        backlog"). A live feed, in polls below the bound, is flushed on the interval alone, as before.
        """
        interval = self.settings.flush_interval_s
        next_at = time.monotonic() + interval
        while not self.app.should_stop:
            wait = max(0.0, next_at - time.monotonic())
            if time.monotonic() < self.retry_at:  # backing off after a failed flush: only the interval counts
                await self.app.sleep(wait)
            elif wait > 0:
                await self.app.wait_first(self.flush_wanted, timeout=wait)
            self.flush_wanted.clear()
            now = time.monotonic()
            next_at = now + interval
            if now >= self.retry_at:  # after a failed flush, the backoff decides
                try:
                    await self.flush()
                except Exception:  # flush() handles sink errors itself; nothing else may end the loop
                    log.exception("flush loop")
            self.after_flush.gap()

    async def _watch_loop_lag(self) -> None:
        await loop_lag.watch(metrics.EVENT_LOOP_LAG, should_stop=lambda: self.app.should_stop)

    async def flush(self) -> bool:
        """Write every changed window and the checkpoints; on failure keep everything and back off."""
        async with self.flush_lock:
            snaps = self.processor.snapshot()
            if not snaps:
                self.processor.flush_done([])  # quiet partitions still close their idle windows
                return True
            self.in_flight_rows = sum(s.rows for s in snaps)
            started = time.perf_counter()
            try:
                if not await self._send_dead_letters():  # acknowledged before the checkpoint passes them
                    raise DeadLettersUnsent(f"{len(self.dead_outbox)} dead letters not yet taken by the broker")
                await asyncio.to_thread(self.sink.write, snaps)
            except Exception as exc:
                self.processor.flush_failed(snaps)
                self.in_flight_rows = 0
                metrics.FLUSH_FAILURES.inc()
                self.backoff = min(self.settings.sink_retry_max_s, max(0.2, self.backoff * 2))
                self.retry_at = time.monotonic() + self.backoff
                log.error("flush failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, self.backoff,
                          extra={"event": "flush_failed", "error": type(exc).__name__, "retry_in_seconds": self.backoff,
                                 "sink_buffered_rows": self.buffered_rows})
                return False
            self.backoff = 0.0
            self.in_flight_rows = 0
            duration = time.perf_counter() - started
            rows = metrics.record_flush(snaps, duration,  # before the eviction work: freshness ends when the write did
                                        appended=self.processor.take_appended(snaps))
            self.processor.flush_done(snaps)
            log.debug("flush", extra={"event": "flush", "flush_rows": rows, "flush_duration_seconds": round(duration, 6)})
            await self._commit({(s.topic, s.partition): s.offset + 1 for s in snaps if s.offset >= 0})
            return True

    async def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        s = self.settings
        tps = {FaustTP(s.topic(t), p): o for (t, p), o in offsets.items()}
        if tps:
            try:
                await commit(self.app, tps)
            except Exception as exc:  # the checkpoint in ClickHouse is what counts; this is for lag tools
                log.warning("offset commit failed: %r", exc)

    # -- metrics --------------------------------------------------------------------------------

    def metric_state(self) -> metrics.StateView:
        """What /metrics reports about memory and lag, computed only when Prometheus scrapes."""
        view = metrics.StateView(assigned_partitions=len(self.processor.states),
                                 buffered_rows=self.buffered_rows)
        streamers: set[str] = set()
        for (topic, part), st in self.processor.states.items():
            view.open_windows += len(st.windows)
            streamers.update(key[1] for key in st.windows)
            if st.max_ts:
                view.newest_event_ms[topic] = max(st.max_ts, view.newest_event_ms.get(topic, 0))
            lag = self._lag(topic, part, st)
            if lag is not None:
                view.consumer_lag[(topic, part)] = lag
        view.active_streamers = len(streamers)
        return view

    def _lag(self, topic: str, partition: int, st: PartitionState) -> int | None:
        """Messages between ``st`` and the high watermark of the partition's last fetch (ListOffsets is
        wrong on some brokers); None while unknown."""
        try:
            hw = self.app.consumer.highwater(FaustTP(self.settings.topic(topic), partition))
        except Exception:  # consumer not started, or the partition is moving in a rebalance
            return None
        return None if hw is None else hw - (st.offset + 1)

    # -- rebalances -----------------------------------------------------------------------------

    def _ours(self, tps: Any) -> list[tuple[str, int]]:
        return [(self.logical[tp.topic], tp.partition) for tp in tps if tp.topic in self.logical]

    async def _on_assigned(self, app: Any, assigned: Any, **_: Any) -> None:
        metrics.REBALANCES.labels("assigned").inc()
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
        if revoked:  # the first join revokes nothing
            metrics.REBALANCES.labels("revoked").inc()
        mine = self._ours(revoked)
        if mine:
            await self.flush()
            self.processor.revoke(mine)

    async def _on_shutdown(self, app: Any, **_: Any) -> None:
        """A graceful stop writes what was applied, so a restart replays nothing it need not, then rolls
        it up, so the rollup tables hold everything written (boards read pending minutes from 10 s rows
        either way; this keeps a stopped store's rollups whole).

        Fetching has stopped when this runs; the snapshot is of a prefix of the log, like any flush.
        Bounded in time, and on a stop signal by the stop budget (``lifecycle``): the flush until
        ``_FLUSH_KEEP_S`` before the forced stop, the rollup pass until ``_ROLLUP_KEEP_S`` before it. A
        flush that cannot finish in time (a hung store) is abandoned and the process may then be forced
        out while its write is still running: nothing accepted is lost, because the checkpoint and the
        committed offsets only ever follow a completed flush, so a restart replays from the last one.
        """
        stop = lifecycle.stopper
        started = time.monotonic()
        await self.after_flush.stop()
        try:
            await asyncio.wait_for(self.flush(), timeout=stop.bound(10, _FLUSH_KEEP_S))
            flushed = True
            log.info("final flush done in %.2fs", time.monotonic() - started)
        except Exception as exc:
            flushed = False
            log.warning("final flush on shutdown did not complete (%s); the next start replays from the checkpoint",
                        type(exc).__name__)
        if self.settings.rollup_interval_s > 0 and flushed:  # not behind a write still running in its thread
            try:
                await asyncio.wait_for(asyncio.to_thread(rollup.run_once, self.sink), stop.bound(20, _ROLLUP_KEEP_S))
            except Exception as exc:
                log.warning("final rollup pass on shutdown did not complete (%s); the next pass rolls it",
                            type(exc).__name__)
        if self.metrics_listener is not None:  # scraped through the last flush and pass, closed before Faust stops
            try:
                await asyncio.wait_for(self.metrics_listener.stop(), stop.bound(1, _FAUST_STOP_KEEP_S))
            except Exception as exc:
                log.warning("metrics listener did not close (%s)", type(exc).__name__)


# A stop signal's budget (lifecycle.FORCE_AFTER_S, 2.5 s), as what each step leaves before the forced stop:
# the last flush, the last rollup pass, Faust's own stop (consumer, producer, web server), the loop's
# remaining tasks. The sink is closed after these and the process exits well before the force.
_FLUSH_KEEP_S = 1.1
_ROLLUP_KEEP_S = 0.8
_FAUST_STOP_KEEP_S = 0.5
_DRAIN_KEEP_S = 0.3
_IDLE_STOP_S = 0.5  # Faust's stop, for a worker that owns no partition yet (_run_faust)


def run_worker(settings: Settings, sink: Sink | None = None) -> int:
    """Run the worker until a stop signal (SIGINT, SIGTERM, SIGHUP); used by `streamproc worker`.

    Returns the exit status: 128 + the signal's number after a stop by signal (docs/OPERATIONS.md, "Stopping"), 1 if
    Faust crashed. A signal before Faust runs (waiting for the broker, opening the store) raises
    ``lifecycle.StopSignal`` out of here once the store is closed; one while it runs stops it
    gracefully (``_on_shutdown``), all within the stop budget.

    ``sink`` is the one door for anything that must stand between the worker and its store: the
    verification harness passes a store it has armed with a fault (``verify/faulty_worker.py``), so no
    fault hook lives in the runtime. None opens the store the settings name.
    """
    lifecycle.install()  # `streamproc worker` did already; the fault harness's entry point did not
    wait_for_broker(settings, [settings.topic(t) for t in EVENT_TOPICS])
    sink = sink or open_sink(settings)
    try:
        worker = Worker(settings, sink)
        # embedded chDB allocates large blocks all the time and reuses them under glibc's sliding rule: a
        # fixed threshold mapped each one anew and cost the worker a quarter of its throughput there
        heap.settle(settings.malloc_mmap_threshold_bytes if settings.clickhouse_url else 0)
        # Faust resets the root logger when it starts: hand it ours when JSON is asked for (text keeps Faust's).
        config = logging_config(settings.log_level, settings.log_format) if settings.log_format == "json" else None
        return _run_faust(_faust_worker(worker.app, loglevel=settings.log_level, quiet=True, logging_config=config),
                          owns_partitions=lambda: bool(worker.processor.states),
                          first=worker.metrics_listener.start if worker.metrics_listener else None)
    finally:
        sink.close()  # before interpreter teardown: an embedded chDB left open crashes the exit


def _faust_worker(app: faust.App, **kwargs: Any) -> Any:
    """Faust's worker, minus its signal handlers: ``lifecycle`` owns SIGINT/SIGTERM/SIGHUP from the
    moment the command starts, so a signal during startup is seen too, and ``_run_faust`` turns one into
    a bounded stop."""
    from faust.worker import Worker as FaustWorker

    class StreamprocFaustWorker(FaustWorker):
        def install_signal_handlers(self) -> None:
            return None

    return StreamprocFaustWorker(app, **kwargs)


def _run_faust(fw: Any, owns_partitions: Callable[[], bool],
               first: Callable[[], Awaitable[None]] | None = None) -> int:
    """Start Faust's worker and run its loop until a stop signal has stopped it; the exit status.

    Instead of ``execute_from_commandline``, whose teardown alone sleeps 1 to 2 s (a fixed sentinel
    sleep, then up to a second waiting for stray tasks) and which would exit 0 after a signal: every
    step here is bounded by the stop budget, and what is still running at the end is left to the
    process exit (or the forced stop).

    A worker that owns no partition yet (a signal during startup) has applied nothing and has nothing
    to flush; its consumer may be inside a group join, which Faust's stop would wait out (seconds on
    the embedded broker), so it gets only ``_IDLE_STOP_S``.

    ``first`` runs on Faust's loop before Faust starts: the metrics listener, so that Prometheus sees a
    worker from its first moments (a long restore, a group join), not from when Faust runs its tasks.
    """
    loop = fw.loop
    stop = lifecycle.stopper

    async def run() -> None:
        if first is not None:
            await first()
        await fw.start()

    main = asyncio.ensure_future(run(), loop=loop)
    stopping: list[asyncio.Task] = []

    async def stop_faust() -> None:
        fw.on_worker_shutdown()
        budget = stop.bound(30, _FAUST_STOP_KEEP_S)
        if stop.stopping and not owns_partitions():
            budget = min(budget, _IDLE_STOP_S)
        try:  # consumer, then our last flush and rollup (_on_shutdown), producer, web server
            await asyncio.wait_for(asyncio.shield(fw.stop()), budget)
        except asyncio.TimeoutError:
            log.warning("Faust did not stop within the stop budget; exiting without waiting for it")
        main.cancel()

    def begin_stop() -> None:
        if not stopping:
            stopping.append(loop.create_task(stop_faust()))

    def on_signal(signum: int) -> None:  # in a signal handler: only schedule
        with contextlib.suppress(RuntimeError):  # the loop is closed: Faust has stopped already
            loop.call_soon_threadsafe(begin_stop)

    with stop.diverted(on_signal):
        if stop.stopping:  # a signal came before the diversion (its StopSignal was raised and caught)
            begin_stop()
        failed = False
        try:
            loop.run_until_complete(main)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the worker failed to start or run")
            failed = True
        if not stopping:  # start() ended without a signal: Faust crashed or stopped on its own
            begin_stop()
        loop.run_until_complete(stopping[0])
        _drain(loop, stop.bound(5, _DRAIN_KEEP_S))
    if stop.stopping:
        return stop.status
    if failed or fw.crash_reason is not None:
        log.error("worker crashed: %r", fw.crash_reason)
        return 1
    return 0


def _drain(loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
    """Cancel the tasks Faust left and give them ``timeout_s`` to finish; then close the loop."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=max(0.01, timeout_s)))
    with contextlib.suppress(Exception):
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), 0.2))
    loop.close()
