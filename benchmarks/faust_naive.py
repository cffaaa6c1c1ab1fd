"""The naive Faust baseline: what a team gets from Faust written the way its documentation shows.

One agent on the event topics takes up to 10,000 events or 1 s at a time (``stream.take``), decodes
each with orjson and adds it to a local dict of per (window, streamer) tallies — no windowed table, no
sink. With ``--table`` it instead updates a Faust tumbling windowed table per event (the textbook way,
changelogged to Kafka), which is far slower, so it is measured on a small number of events.

Runs as its own process (``python -m benchmarks.faust_naive``): time and CPU start when the group
assigns it partitions and stop when it has consumed ``--events`` messages; it prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any

import faust
import orjson

from .baselines import tallier
from .procstat import self_cpu_seconds, self_peak_rss_bytes


def build(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.group, broker=";".join("kafka://" + h for h in args.bootstrap.split(",")),
        value_serializer="raw", key_serializer="raw", store="memory://", web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="faust-naive-"),
        consumer_auto_offset_reset="earliest", broker_rebalance_timeout=5, broker_session_timeout=10,
        broker_heartbeat_interval=1, topic_disable_leader=True, topic_partitions=4,
    )
    topic = app.topic(*args.topics)
    mark: dict[str, float] = {}
    window_ms = args.window_ms

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: Any, **_: Any) -> None:
        if assigned and "t0" not in mark:
            mark["t0"], mark["cpu0"] = time.perf_counter(), self_cpu_seconds()

    def done(n: int) -> None:
        result = {"events": n, "seconds": time.perf_counter() - mark["t0"],
                  "first_batch_after_s": mark.get("first", mark["t0"]) - mark["t0"],
                  "cpu_s": self_cpu_seconds() - mark["cpu0"], "peak_rss_bytes": self_peak_rss_bytes()}
        sys.__stdout__.write(json.dumps(result) + "\n")  # Faust redirects sys.stdout into its log
        sys.__stdout__.flush()
        os._exit(0)  # the measurement is over; a graceful Faust shutdown would only add seconds

    if args.table:
        table = app.Table("tallies", default=int, partitions=4).tumbling(timedelta(milliseconds=window_ms),
                                                                          expires=timedelta(hours=1))

        @app.agent(topic)
        async def per_event(stream: faust.StreamT) -> None:
            n = 0
            async for value in stream:
                try:
                    table[orjson.loads(value)["streamer_id"]] += 1
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    pass
                n += 1
                if n >= args.events:
                    done(n)
    else:
        add, _ = tallier(window_ms)  # the same dict update as the Python limit (benchmarks/baselines.py)

        @app.agent(topic)
        async def batched(stream: faust.StreamT) -> None:
            n = 0
            async for values in stream.take(10_000, within=1):
                for value in values:
                    try:
                        ev = orjson.loads(value)  # stream.take yields values only: the sample skips the
                        add(ev, ev["ts"] if type(ev) is dict and type(ev.get("ts")) is int else 0)  # time bounds
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        pass
                if n == 0:
                    mark["first"] = time.perf_counter()
                n += len(values)
                if n >= args.events:
                    done(n)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.faust_naive")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topics", nargs="+", required=True)
    p.add_argument("--events", type=int, required=True, help="stop after this many messages")
    p.add_argument("--window-ms", type=int, default=10_000)
    p.add_argument("--table", action="store_true", help="a windowed table updated per event instead")
    args = p.parse_args(argv)
    from faust.worker import Worker

    sys.argv = sys.argv[:1]  # Faust's worker reads the command line too
    Worker(build(args), loglevel="warning", quiet=True).execute_from_commandline()
    return 1  # only reached if the worker stopped before the count


if __name__ == "__main__":
    sys.exit(main())
