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

from streamproc.settings import Settings

from .peerjob import MAX_FUTURE_MS, MAX_PAST_MS
from .procstat import self_cpu_seconds, self_peak_rss_bytes

Handler = Callable[[Sequence[Any]], int]  # records -> events they held


def count_only(records: Sequence[Any]) -> int:
    return len(records)


def tallier(window_ms: int) -> tuple[Callable[[Any], None], dict[tuple[int, str], list[int]]]:
    """Per (window, streamer): events, likes, net amount — a dict update per event, as plain as it gets,
    under the typed rule every contestant applies (``benchmarks/peerjob.py``: the same checks, inlined).
    The Python limit and the naive Faust agent both do exactly this (a closure: the cheapest call)."""
    tallies: dict[tuple[int, str], list[int]] = {}

    def add(ev: Any, record_ts: int) -> None:
        ts, sid = ev["ts"], ev["streamer_id"]  # not a dict: TypeError; no such field: KeyError (skipped)
        if type(ts) is not int or type(sid) is not str or not record_ts - MAX_PAST_MS <= ts <= record_ts + MAX_FUTURE_MS:
            return
        kind, count, amount, status = ev.get("type"), ev.get("count"), ev.get("amount_fen"), ev.get("status")
        if (kind is not None and type(kind) is not str) or (status is not None and type(status) is not str) or (
                count is not None and type(count) is not int) or (amount is not None and type(amount) is not int):
            return
        key = (ts - ts % window_ms, sid)
        acc = tallies.get(key)
        if acc is None:
            acc = tallies[key] = [0, 0, 0]
        acc[0] += 1
        if kind == "like":
            if count is not None:
                acc[1] += count
        elif kind == "order" and amount is not None:
            if status == "paid":
                acc[2] += amount
            elif status == "refunded":
                acc[2] -= amount

    return add, tallies


def totals(tallies: dict[tuple[int, str], list[int]]) -> dict[str, int]:
    """The job's totals over every window (``peerjob.expected``'s keys)."""
    return {"events": sum(a[0] for a in tallies.values()), "likes": sum(a[1] for a in tallies.values()),
            "amount": sum(a[2] for a in tallies.values()), "windows": len(tallies)}


def aggregator(window_ms: int, kept: dict | None = None) -> Handler:
    """``tallier`` over every event of each batch (packs included); ``kept["tallies"]``: its windows."""
    add, tallies = tallier(window_ms)
    if kept is not None:
        kept["tallies"] = tallies
    loads = orjson.loads

    def handle(records: Sequence[Any]) -> int:
        n = 0
        for rec in records:
            value, record_ts = rec.value or b"", rec.timestamp
            lines = value.split(b"\n") if b"\n" in value else (value,)  # a pack (streamproc.ingest.pack): JSON lines
            for line in lines:
                n += 1
                try:
                    add(loads(line), record_ts)
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    pass  # malformed input: skipped, as a dead letter would be
        return n

    return handle


async def consume(bootstrap: str, last_offsets: dict[str, int], handle: Handler, from_first: bool = True) -> dict[str, Any]:
    """Read every partition from the beginning to its last offset; time and CPU from the first message held
    (partitions assigned and sought, plus one fetch: the clock rule of every contestant, see run.py), or
    with ``from_first`` False from the assignment (the transport ceiling: fetching is all it does, and the
    client prefetches before the first batch is handed over)."""
    tps = {}
    for name, last in last_offsets.items():
        topic, part = name.rsplit("/", 1)
        tps[TopicPartition(topic, int(part))] = last
    # the worker's fetch wait (Settings.fetch_max_wait_ms), not aiokafka's 500 ms: a broker that holds a fetch
    # for the partitions already read to the end would otherwise slow the yardstick and flatter the worker
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=Settings.fetch_max_wait_ms)
    await consumer.start()
    try:
        consumer.assign(list(tps))
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp, last in tps.items() if last >= 0}
        events = messages = 0
        owned = time.perf_counter()
        started = cpu0 = None
        while remaining:
            if not from_first and started is None:
                started, cpu0 = time.perf_counter(), self_cpu_seconds()
            batch = await consumer.getmany(timeout_ms=1000)
            if started is None and (batch or not from_first):
                started, cpu0 = time.perf_counter(), self_cpu_seconds()
            for tp, records in batch.items():
                events += handle(records)
                messages += len(records)
                if records[-1].offset >= tps[tp]:
                    remaining.discard(tp)
        seconds, cpu = time.perf_counter() - started, self_cpu_seconds() - cpu0
    finally:
        await consumer.stop()
    return {"events": events, "messages": messages, "seconds": seconds, "cpu_s": cpu,
            "peak_rss_bytes": self_peak_rss_bytes(), "first_message_after_s": round((started or owned) - owned, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines")
    p.add_argument("kind", choices=("transport", "python_limit"))
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--offsets", required=True, help='JSON {"topic/partition": last offset}')
    p.add_argument("--window-ms", type=int, default=10_000)
    a = p.parse_args(argv)
    kept: dict[str, Any] = {}
    handle = count_only if a.kind == "transport" else aggregator(a.window_ms, kept)
    result = asyncio.run(consume(a.bootstrap, json.loads(a.offsets), handle, from_first=a.kind != "transport"))
    if "tallies" in kept:
        result["totals"] = totals(kept["tallies"])
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
