"""Dead-letter redrive: take what was refused, let an operator fix it, publish it again.

A dead letter keeps the exact bytes, key and record time of a refused message and where it came from
(``deadletter.py``). ``streamproc deadletter export`` writes them as JSON lines to inspect and fix
(edit ``value``, or replace ``value_b64`` by a ``value``); ``streamproc deadletter redrive`` publishes
records, from such a file or straight from the topic, to their original topics with their original key
and record time. Each is first judged by the current rules: one that would be refused again is
reported with its reason and skipped (``--force`` sends it anyway, to be dead-lettered again).

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
from typing import Any, Iterable

import orjson

from .deadletter import distinct, original_key, original_value
from .events import Rejection, decode
from .logfile import LogRecord
from .settings import Settings
from .topics import DEADLETTER, EVENT_TOPICS


def load_topic(settings: Settings) -> list[dict[str, Any]]:
    """Every dead-letter record on the broker, oldest first, without the repeats a crash replay adds."""
    from .stack import read_topic

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


def plan(records: Iterable[dict[str, Any]], settings: Settings, *, force: bool = False) -> Plan:
    """Judge every record with the rules the worker runs (lateness aside: that depends on the stream)."""
    out = Plan()
    for i, rec in enumerate(records):
        topic = rec.get("topic")
        if topic not in EVENT_TOPICS:
            out.invalid.append(f"record {i}: topic {topic!r} is not an event topic")
            continue
        try:
            value, key = original_value(rec), original_key(rec)
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
    from .produce import publish

    p = plan(records, settings, force=force)
    sent = 0
    if p.ready and not dry_run:
        sent = asyncio.run(publish(p.ready, settings)).count
    return {"ready": len(p.ready), "sent": sent, "held_back": dict(p.refused), "invalid": p.invalid,
            "by_topic": dict(Counter(r.topic for r in p.ready)), "dry_run": dry_run}
