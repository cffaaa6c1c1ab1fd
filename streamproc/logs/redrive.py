"""Dead-letter redrive: take what was refused, let an operator fix it, publish it again.

A dead letter keeps the exact bytes, key and record time of a refused message and where it came from
(``ingest/deadletter.py``). ``streamproc deadletter export`` writes them as JSON lines to inspect and fix
(edit ``value``, or replace ``value_b64`` by a ``value``); ``streamproc deadletter redrive`` publishes
records, from such a file or straight from the topic, to their original topics with their original key
and record time. Each is first judged by the current rules: one that would be refused again is
reported with its reason and skipped (``--force`` sends it anyway, to be dead-lettered again).

A record of a big message holds only its first bytes (``"truncated": true``, with the original
``size`` and ``sha256``). The redrive reads the original from the source topic at the record's
topic/partition/offset and sends it only if its sha256 matches; one gone past the source topic's
retention is reported, not sent. To send your own fix of such a record instead, give it the whole
``value`` and set ``"truncated": false``. A record of a batch refused whole (``batch_too_large``: it
decompressed past ``STREAMPROC_MAX_BATCH_BYTES``) holds none of its bytes and is reported, never sent.

A redriven event is a new message at the end of its topic and counts like any other. Redriving the
same record twice publishes it twice: orders are still counted once (order-id dedupe), views and likes
would count twice, so redrive a record once (``--dry-run`` shows what would go).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import orjson

from streamproc.ingest.deadletter import Truncated, distinct, original_key, original_value, source_unit
from streamproc.ingest.events import Rejection, decode
from streamproc.logs.logfile import LogRecord
from streamproc.runtime.topics import DEADLETTER, EVENT_TOPICS
from streamproc.settings import Settings

Coords = tuple[str, int, int]  # (logical topic, partition, offset) of a source message


def load_topic(settings: Settings) -> list[dict[str, Any]]:
    """Every dead-letter record on the broker, oldest first, without the repeats a crash replay adds."""
    from streamproc.runtime.kafka import read_topic

    return [orjson.loads(msg.value) for msg in distinct(asyncio.run(read_topic(settings, DEADLETTER)))]


def load_file(path: str | Path) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def write_file(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "wb") as f:
        for rec in records:
            f.write(orjson.dumps(rec) + b"\n")
            n += 1
    return n


def select(records: Iterable[dict[str, Any]], reasons: Iterable[str] = ()) -> list[dict[str, Any]]:
    wanted = set(reasons)
    return [r for r in records if not wanted or r.get("reason") in wanted]


@dataclass
class Plan:
    """What a redrive would send, and what it holds back because the current rules refuse it."""

    ready: list[LogRecord] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)  # reason -> records held back
    invalid: list[str] = field(default_factory=list)  # records that are not redrivable at all, and why


def source_coords(rec: dict[str, Any]) -> Coords | None:
    """Where the message of a truncated record is to be read, if the record says so in a usable way."""
    where = (rec.get("topic"), rec.get("partition"), rec.get("offset"))
    if not rec.get("truncated") or where[0] not in EVENT_TOPICS or not all(type(x) is int for x in where[1:]):
        return None
    return where  # type: ignore[return-value]


async def fetch_sources(settings: Settings, wanted: Iterable[Coords], timeout_s: float = 10) -> dict[Coords, Any]:
    """The source messages at these coordinates (aiokafka records: key, value), read by assign + seek.

    One that is not there (past retention, compacted away, or never written) is left out.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streamproc.runtime.kafka import client_kwargs

    by_partition: dict[tuple[str, int], set[int]] = {}
    for topic, partition, offset in wanted:
        by_partition.setdefault((topic, partition), set()).add(offset)
    found: dict[Coords, Any] = {}
    if not by_partition:
        return found
    # earliest: a seek below the log start lands on the first message kept, so a gone one shows
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        for (topic, partition), offsets in sorted(by_partition.items()):
            tp = TopicPartition(settings.topic(topic), partition)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]  # an offset not written yet is not waited for
            for offset in sorted(o for o in offsets if o < end):
                msg = await _read_at(consumer, tp, offset, timeout_s)
                if msg is not None:
                    found[(topic, partition, offset)] = msg
        return found
    finally:
        await consumer.stop()


async def _read_at(consumer: Any, tp: Any, offset: int, timeout_s: float) -> Any | None:
    """The message at ``offset`` of the assigned ``tp``, or None if the partition has none there."""
    consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msg in (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp, []):
            return msg if msg.offset == offset else None  # past it: deleted, or compacted away
    return None


def exact_bytes(rec: dict[str, Any], sources: Mapping[Coords, Any]) -> tuple[bytes | None, bytes]:
    """(key, value) a record stands for: its own bytes, or a truncated one's from its source message,
    proven by the record's sha256. ``Truncated`` says why it cannot be had."""
    if not rec.get("truncated"):
        return original_key(rec), original_value(rec)
    where = source_coords(rec)
    if where is None:
        raise Truncated("the record names no event topic, partition and offset to read the message from")
    msg = sources.get(where)
    if msg is None:
        raise Truncated("{}/{}/{}: the source message is not in the topic (past its retention?)".format(*where))
    return source_unit(rec, msg.key, msg.value)


def plan(records: Iterable[dict[str, Any]], settings: Settings, *, force: bool = False,
         sources: Mapping[Coords, Any] | None = None) -> Plan:
    """Judge every record with the rules the worker runs (lateness aside: that depends on the stream).

    ``sources``: the source messages of the truncated records (``fetch_sources``).
    """
    out = Plan()
    for i, rec in enumerate(records):
        topic = rec.get("topic")
        if topic not in EVENT_TOPICS:
            out.invalid.append(f"record {i}: topic {topic!r} is not an event topic")
            continue
        if rec.get("reason") == "batch_too_large":  # not even --force: the record holds none of the batch's bytes
            out.invalid.append(f"record {i}: a record batch refused whole, unread (batch_too_large); its "
                               f"messages are in {topic} itself: {rec.get('detail', '')}"[:400])
            continue
        try:
            key, value = exact_bytes(rec, sources or {})
        except Truncated as exc:
            out.invalid.append(f"record {i}: truncated, and {exc}")
            continue
        except (KeyError, ValueError, AttributeError) as exc:
            out.invalid.append(f"record {i}: no readable value or key ({type(exc).__name__})")
            continue
        ts = rec.get("timestamp")
        ts = int(ts) if isinstance(ts, int) and ts > 0 else int(time.time() * 1000)
        verdict = decode(value, topic, key, ts, max_bytes=settings.max_message_bytes,
                         max_future_ms=settings.max_future_ms)
        if isinstance(verdict, Rejection) and not force:
            out.refused[verdict.reason] += 1
            continue
        out.ready.append(LogRecord(topic, key, ts, value))
    return out


def redrive(settings: Settings, records: Iterable[dict[str, Any]], *, force: bool = False,
            dry_run: bool = False) -> dict[str, Any]:
    """Publish the redrivable records to their original topics; returns a summary for the operator."""
    from streamproc.logs.produce import publish

    records = list(records)
    wanted = {where for rec in records if (where := source_coords(rec)) is not None}
    sources = asyncio.run(fetch_sources(settings, wanted)) if wanted else {}
    p = plan(records, settings, force=force, sources=sources)
    sent = 0
    if p.ready and not dry_run:
        sent = asyncio.run(publish(p.ready, settings)).count
    return {"ready": len(p.ready), "sent": sent, "held_back": dict(p.refused), "invalid": p.invalid,
            "by_topic": dict(Counter(r.topic for r in p.ready)), "from_source": len(sources), "dry_run": dry_run}
