"""Bytewax as a peer: the job of ``benchmarks/peerjob.py`` written the way its documentation shows.

``KafkaSource`` reads the three event topics from the beginning (``tail=False``: the dataflow ends at
the end of each partition); ``filter_map`` decodes each message (orjson, as Quix Streams does) and
applies the job's typed rule, keyed by streamer; ``fold_window`` with an ``EventClock`` on the event's
own ``ts`` and a 10 s ``TumblingWindower`` keeps (events, likes, amount) per window and emits each
window when it closes into the sink (a dict, ``peerjob.Sink``). The clock's waiting duration covers
the corpus, so no event is late; every window still open closes at the end of the input.

Runs in a separate virtualenv (``benchmarks/.venv-bytewax``): the project does not depend on Bytewax.
The clock starts at the first message the job holds and stops when the sink holds every event of the
corpus (its totals then equal ``--expect``'s, checked); the process prints one JSON line and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from benchmarks.peerjob import LATENESS_MS, Clock, Sink, fields, report  # PYTHONPATH at the repo (run.child)


def main(argv: list[str] | None = None) -> int:
    import bytewax.operators as op
    import orjson
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.run import cli_main

    p = argparse.ArgumentParser(prog="bytewax_peer.py")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topics", nargs="+", required=True)
    p.add_argument("--expect", required=True, help="the job's totals over the topics (peerjob.expected)")
    p.add_argument("--window-ms", type=int, default=10_000)
    a = p.parse_args(argv)
    clock, sink = Clock(), Sink(json.loads(a.expect))
    loads, utc = orjson.loads, timezone.utc

    def parse(msg: Any) -> tuple[str, tuple[int, int, int]] | None:
        clock.first_message()
        try:
            f = fields(loads(msg.value), msg.timestamp[1])
        except orjson.JSONDecodeError:
            return None
        return None if f is None else (f[0], (f[1], f[2], f[3]))

    def fold(acc: list[int], v: tuple[int, int, int]) -> list[int]:
        acc[0] += 1
        acc[1] += v[1]
        acc[2] += v[2]
        return acc

    def merge(x: list[int], y: list[int]) -> list[int]:
        return [x[0] + y[0], x[1] + y[1], x[2] + y[2]]

    class Partition(StatelessSinkPartition[Any]):
        def write_batch(self, items: list[Any]) -> None:
            for key, (window_id, acc) in items:
                sink.put((window_id, key), acc[0], acc[1], acc[2])
            if sink.done():
                report(clock.result(sink, framework="bytewax"))

    class DictSink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Partition:
            return Partition()

    flow = Dataflow("streamproc_peer")
    msgs = op.input("kafka", flow, KafkaSource([a.bootstrap], a.topics, tail=False,
                                               add_config={"group.id": a.group}))
    events = op.filter_map("parse", msgs, parse)
    ticks = EventClock(lambda v: datetime.fromtimestamp(v[0] / 1000, tz=utc),
                       wait_for_system_duration=timedelta(milliseconds=LATENESS_MS))
    windows = TumblingWindower(length=timedelta(milliseconds=a.window_ms),
                               align_to=datetime(1970, 1, 1, tzinfo=utc))
    tallies = fold_window("tally", events, ticks, windows, lambda: [0, 0, 0], fold, merge)
    op.output("sink", tallies.down, DictSink())
    cli_main(flow, workers_per_process=1)
    report(clock.result(sink, framework="bytewax", stopped="the dataflow ended"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
