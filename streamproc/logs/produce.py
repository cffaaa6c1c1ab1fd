"""Publish recorded-log records to Kafka, optionally paced, keeping key and record timestamp.

Keys go through the client's default partitioner (murmur2, as every Kafka client), so a streamer's
events land in the same partition as in a live run and their order is preserved per key.

Pacing is a ``Pacer``: when, after the start, each record may go. ``RatePacer`` spaces records evenly
(the generator's ``--rate``); ``SpeedPacer`` follows the records' own timestamps divided by a speed
(``replay --speed``). Both are measured from one start instant, so sleeping late never accumulates drift.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from aiokafka import AIOKafkaProducer

from streamproc.logs.logfile import LogRecord
from streamproc.runtime.kafka import client_kwargs, compression
from streamproc.settings import Settings

MIN_SLEEP_S = 0.001  # shorter waits cost more in wake-ups than they add in accuracy


@dataclass
class PublishResult:
    count: int = 0
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (logical topic, partition)
    seconds: float = 0.0


class Pacer(Protocol):
    def due_s(self, index: int, rec: LogRecord) -> float:
        """Seconds after the start at which record number ``index`` (from 0) may be sent."""


@dataclass
class RatePacer:
    """``rate`` records per second, evenly spaced."""

    rate: float

    def due_s(self, index: int, rec: LogRecord) -> float:
        return index / self.rate


class SpeedPacer:
    """The original send pacing (record timestamps) divided by ``speed``.

    Follows the highest timestamp seen so far: a record stamped earlier than one already sent (a
    recording interleaves partitions) goes at once instead of waiting for a moment that has passed.
    """

    def __init__(self, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self.first: int | None = None
        self.high = 0

    def due_s(self, index: int, rec: LogRecord) -> float:
        if self.first is None:
            self.first = self.high = rec.ts
        elif rec.ts > self.high:
            self.high = rec.ts
        return (self.high - self.first) / 1000.0 / self.speed


async def publish(
    records: Iterable[LogRecord],
    settings: Settings,
    *,
    rate: float | None = None,
    pacer: Pacer | None = None,
    batch: int = 2000,
    result: PublishResult | None = None,
    stop: asyncio.Event | None = None,
    on_sent: Callable[[LogRecord], None] | None = None,
) -> PublishResult:
    """Send every record (in order) and wait until all are acknowledged.

    ``rate`` caps events/s (a shorthand for ``RatePacer``). ``stop`` ends the feed early: no record is
    sent after it is set, and every record sent before is still acknowledged before this returns.
    ``on_sent`` is called right after each record is handed to the client, in order.
    """
    result = result or PublishResult()
    if pacer is None and rate:
        pacer = RatePacer(rate)
    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=5, max_batch_size=256 * 1024,
                                max_request_size=4 * 1024 * 1024, acks="all", compression_type=compression(settings))
    await producer.start()
    started = time.monotonic()
    pending: list[tuple[str, asyncio.Future]] = []
    try:
        for index, rec in enumerate(records):
            if stop is not None and stop.is_set():
                break
            if pacer is not None:
                delay = pacer.due_s(index, rec) - (time.monotonic() - started)
                if delay > MIN_SLEEP_S and await _sleep_or_stop(delay, stop):
                    break
            fut = await producer.send(settings.topic(rec.topic), rec.value, key=rec.key, timestamp_ms=rec.ts)
            pending.append((rec.topic, fut))
            if on_sent is not None:
                on_sent(rec)
            if len(pending) >= batch:
                await _settle(pending, result)
        await _settle(pending, result)
    finally:
        await producer.stop()
    result.seconds = time.monotonic() - started
    return result


async def _sleep_or_stop(delay: float, stop: asyncio.Event | None) -> bool:
    """Sleep ``delay`` seconds; True if ``stop`` was set meanwhile."""
    if stop is None:
        await asyncio.sleep(delay)
        return False
    try:
        await asyncio.wait_for(stop.wait(), delay)
        return True
    except asyncio.TimeoutError:
        return False


async def _settle(pending: list[tuple[str, asyncio.Future]], result: PublishResult) -> None:
    for topic, fut in pending:
        md = await fut
        key = (topic, md.partition)
        if md.offset > result.last_offsets.get(key, -1):
            result.last_offsets[key] = md.offset
        result.count += 1
    pending.clear()
