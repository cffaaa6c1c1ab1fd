"""Raw aiokafka consumers: the transport ceiling and the Python limit of this job.

``transport``: ``getmany`` and count, nothing decoded — what the client and the broker can deliver to one
Python process. ``python_limit``: the same plus ``orjson.loads`` of every value and a dict of per
(10 s window, streamer) tallies — the least work this job can do in Python, with no validation, state
rules or sink. Both run in a child process of their own (``python -m benchmarks.baselines KIND``) so their
CPU time and peak memory are theirs alone; the child assigns every partition, seeks to the beginning
and stops at the last offset the fill produced. It prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Callable, Sequence

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from .procstat import self_cpu_seconds, self_peak_rss_bytes

Handler = Callable[[Sequence[Any]], int]  # records -> events they held


def count_only(records: Sequence[Any]) -> int:
    return len(records)


def tallier(window_ms: int) -> Callable[[Any], None]:
    """Per (window, streamer): events, likes, net GMV — a dict update per event, as plain as it gets.
    The Python limit and the naive Faust agent both do exactly this (a closure: the cheapest call)."""
    tallies: dict[tuple[int, str], list[int]] = {}

    def add(ev: Any) -> None:
        ts = ev["ts"]
        key = (ts - ts % window_ms, ev["streamer_id"])
        acc = tallies.get(key)
        if acc is None:
            acc = tallies[key] = [0, 0, 0]
        acc[0] += 1
        kind = ev["type"]
        if kind == "like":
            acc[1] += ev["count"]
        elif kind == "order":
            acc[2] += ev["amount_fen"] if ev["status"] == "paid" else -ev["amount_fen"]

    return add


def aggregator(window_ms: int) -> Handler:
    """``tallier`` over every event of each batch (packs included)."""
    add = tallier(window_ms)
    loads = orjson.loads

    def handle(records: Sequence[Any]) -> int:
        n = 0
        for rec in records:
            value = rec.value or b""
            lines = value.split(b"\n") if b"\n" in value else (value,)  # a pack (streamproc.ingest.pack): JSON lines
            for line in lines:
                n += 1
                try:
                    add(loads(line))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    pass  # malformed input: skipped, as a dead letter would be
        return n

    return handle


async def consume(bootstrap: str, last_offsets: dict[str, int], handle: Handler) -> dict[str, Any]:
    """Read every partition from the beginning to its last offset; time and CPU from the first fetch."""
    tps = {}
    for name, last in last_offsets.items():
        topic, part = name.rsplit("/", 1)
        tps[TopicPartition(topic, int(part))] = last
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(list(tps))
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp, last in tps.items() if last >= 0}
        events = messages = 0
        started, cpu0 = time.perf_counter(), self_cpu_seconds()
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                events += handle(records)
                messages += len(records)
                if records[-1].offset >= tps[tp]:
                    remaining.discard(tp)
        seconds, cpu = time.perf_counter() - started, self_cpu_seconds() - cpu0
    finally:
        await consumer.stop()
    return {"events": events, "messages": messages, "seconds": seconds, "cpu_s": cpu,
            "peak_rss_bytes": self_peak_rss_bytes()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines")
    p.add_argument("kind", choices=("transport", "python_limit"))
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--offsets", required=True, help='JSON {"topic/partition": last offset}')
    p.add_argument("--window-ms", type=int, default=10_000)
    a = p.parse_args(argv)
    handle = count_only if a.kind == "transport" else aggregator(a.window_ms)
    result = asyncio.run(consume(a.bootstrap, json.loads(a.offsets), handle))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
