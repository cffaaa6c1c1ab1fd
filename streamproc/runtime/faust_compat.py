"""Every use of a Faust or aiokafka private name, in one place, written against pinned versions.

The worker needs three things Faust has no public door for: a fetch loop that hands agents whole
per-partition batches, committing offsets it chose itself (checkpoints in ClickHouse are the truth;
Faust never commits on its own here), and a middleware on the web server (the bearer token). Each is
done here and nowhere else, and ``tests/test_faust_compat.py`` checks every name this module touches,
so an upgrade of faust-streaming or aiokafka fails a test instead of production.

Written against faust-streaming ``PINNED["faust"]`` and aiokafka ``PINNED["aiokafka"]`` (pyproject.toml).

**Batches.** Faust's fetch loop awaits once per message (``wait_first`` on the callback and the flow
signal) and wraps each record in a Message and an Event before an agent sees it; at livestream-peak
rates that per-message machinery costs more than the work itself. ``BatchConsumer`` keeps everything
else of Faust — group membership, the assignor, rebalance signals, pausing, seeking, read offsets — and
replaces only the drain loop: each fetch's records for one partition go to that topic's agent as one
``Batch``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

import faust
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP

PINNED = {"faust": "0.15.3", "aiokafka": "0.14.0"}
# The private names used below, by owner; the contract test checks each one exists.
PRIVATE_NAMES = {
    AIOKafkaConsumer: ("_drain_messages", "_stopped", "_read_offset", "_wait_next_records", "_commit"),
    faust.App: ("_new_transport", "_new_consumer"),
}


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive records of one partition, as aiokafka returned them (offset, key, value, timestamp)."""

    tp: TP
    records: Sequence[Any]


Deliver = Callable[[Batch], Awaitable[None]]


class BatchConsumer(AIOKafkaConsumer):
    """A Faust consumer whose fetch loop delivers batches to ``deliver`` (set by the worker)."""

    deliver: Deliver | None = None

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
                    await self.deliver(Batch(tp, recs))
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


class BatchTransport(AIOKafkaTransport):
    Consumer = BatchConsumer


class App(faust.App):
    """Faust, with a consumer that hands agents whole batches (``BatchConsumer``)."""

    deliver: Deliver | None = None  # where the consumer sends each batch; set by the worker

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        consumer.deliver = self.deliver
        return consumer


async def commit(app: faust.App, offsets: Mapping[TP, int]) -> None:
    """Commit ``offsets`` (the next offset to read, per partition) for the group, now.

    Faust commits only what its own acks track; the worker acks nothing and commits its checkpoints
    after each flush, so that tools reading consumer-group lag see the truth.
    """
    await app.consumer._commit(dict(offsets))


def add_middleware(app: faust.App, middleware: Any) -> None:
    """Put an aiohttp middleware in front of every route of Faust's web server."""
    app.web.web_app.middlewares.append(middleware)
