"""Publish recorded-log records to Kafka, optionally paced, keeping key and record timestamp.

Keys go through the client's default partitioner (murmur2, as every Kafka client), so a streamer's
events land in the same partition as in a live run and their order is preserved per key.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Iterable

from aiokafka import AIOKafkaProducer

from .kafka import client_kwargs
from .logfile import LogRecord
from .settings import Settings


@dataclass
class PublishResult:
    count: int = 0
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (logical topic, partition)
    seconds: float = 0.0


async def publish(
    records: Iterable[LogRecord],
    settings: Settings,
    *,
    rate: float | None = None,
    batch: int = 2000,
    result: PublishResult | None = None,
) -> PublishResult:
    """Send every record (in order) and wait until all are acknowledged; ``rate`` caps events/s."""
    result = result or PublishResult()
    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=5, max_batch_size=256 * 1024,
                                max_request_size=4 * 1024 * 1024, acks="all")
    await producer.start()
    started = time.monotonic()
    pending: list[tuple[str, asyncio.Future]] = []
    try:
        for rec in records:
            fut = await producer.send(settings.topic(rec.topic), rec.value, key=rec.key, timestamp_ms=rec.ts)
            pending.append((rec.topic, fut))
            if len(pending) >= batch:
                await _settle(pending, result)
            if rate:
                ahead = result.count + len(pending) - rate * (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead / rate)
        await _settle(pending, result)
    finally:
        await producer.stop()
    result.seconds = time.monotonic() - started
    return result


async def _settle(pending: list[tuple[str, asyncio.Future]], result: PublishResult) -> None:
    for topic, fut in pending:
        md = await fut
        key = (topic, md.partition)
        if md.offset > result.last_offsets.get(key, -1):
            result.last_offsets[key] = md.offset
        result.count += 1
    pending.clear()
