"""Pathway as a peer: the job of ``benchmarks/peerjob.py`` written the way its documentation shows.

``pw.io.kafka.read`` reads the three event topics in streaming mode with the JSON format and a typed
schema (its parser drops a message whose field has another type: the job's rule) and the record
metadata (an event time too far from its record timestamp is filtered out); ``windowby`` with a
10 s ``tumbling`` window on the event's own ``ts``, per streamer (``instance``), reduces (events, likes,
amount); ``pw.io.subscribe`` delivers every change of every window into the sink (a dict,
``peerjob.Sink``). Pathway's windows keep every late event by default, so none is dropped.

Streaming mode, not static: on the embedded Tansu broker static mode trusts ListOffsets, whose "latest"
is wrong there, and ends early (it lost ~22k of 1M events when tried). Pathway joins its consumer group
slowly (~23 s here); that is startup, outside the clock like every contestant's.

The clock starts at the first message the job holds. Pathway runs its engine in Rust and calls Python
only at commits, so its first message is seen at its first commit of input rows: at most
``--autocommit-ms`` after it arrived, which favours Pathway by up to that much (200 ms by default, a
shorter commit interval than Pathway's 1.5 s default, for that reason). The clock stops when the sink
holds every event of the corpus (its totals then equal ``--expect``'s, checked); the process prints one
JSON line and exits. Runs in a separate virtualenv (``benchmarks/.venv-pathway``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from benchmarks.peerjob import MAX_FUTURE_MS, MAX_PAST_MS, Clock, Sink, report  # PYTHONPATH at the repo (run.child)


def main(argv: list[str] | None = None) -> int:
    import pathway as pw

    p = argparse.ArgumentParser(prog="pathway_peer.py")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topics", nargs="+", required=True)
    p.add_argument("--expect", required=True, help="the job's totals over the topics (peerjob.expected)")
    p.add_argument("--window-ms", type=int, default=10_000)
    p.add_argument("--autocommit-ms", type=int, default=200)
    p.add_argument("--idle-s", type=float, default=60, help="give up when the sink saw nothing new this long")
    a = p.parse_args(argv)
    clock, sink = Clock(), Sink(json.loads(a.expect))

    class Event(pw.Schema):
        ts: int
        streamer_id: str
        type: str | None = pw.column_definition(default_value=None)
        count: int | None = pw.column_definition(default_value=None)
        amount_fen: int | None = pw.column_definition(default_value=None)
        status: str | None = pw.column_definition(default_value=None)

    def read(i: int, topic: str) -> pw.Table:
        settings = {"bootstrap.servers": a.bootstrap, "group.id": f"{a.group}-{i}", "auto.offset.reset": "earliest",
                    "session.timeout.ms": "6000"}
        return pw.io.kafka.read(settings, topic=topic, format="json", schema=Event, mode="streaming",
                                autocommit_duration_ms=a.autocommit_ms, with_metadata=True)

    # one reader per topic (given the list, it read only the first topic here), concatenated
    ev = pw.Table.concat_reindex(*(read(i, t) for i, t in enumerate(a.topics)))
    record_ts = pw.coalesce(ev._metadata["timestamp_millis"].as_int(), 0)
    ev = ev.filter((ev.ts <= record_ts + MAX_FUTURE_MS) & (ev.ts >= record_ts - MAX_PAST_MS))
    amount = pw.coalesce(ev.amount_fen, 0)
    ev = ev.select(pw.this.ts, pw.this.streamer_id,
                   likes=pw.if_else(ev.type == "like", pw.coalesce(ev.count, 0), 0),
                   amount=pw.if_else(ev.type == "order", pw.if_else(ev.status == "paid", amount, pw.if_else(
                       ev.status == "refunded", -amount, 0)), 0))
    tallies = ev.windowby(ev.ts, window=pw.temporal.tumbling(duration=a.window_ms), instance=ev.streamer_id).reduce(
        start=pw.this._pw_window_start, streamer_id=pw.this._pw_instance, events=pw.reducers.count(),
        likes=pw.reducers.sum(pw.this.likes), amount=pw.reducers.sum(pw.this.amount))
    seen = ev.reduce(n=pw.reducers.count())

    def first(key: Any, row: dict, time: int, is_addition: bool) -> None:
        clock.first_message()

    def put(key: Any, row: dict, time: int, is_addition: bool) -> None:
        k, v = (row["start"], row["streamer_id"]), (row["events"], row["likes"], row["amount"])
        if is_addition:
            sink.put(k, *v)
        elif sink.windows.get(k) == v:  # the retraction of the value held (it may come after its successor)
            sink.remove(k)

    def on_time_end(time: int) -> None:
        if sink.done():
            report(clock.result(sink, framework="pathway"))

    pw.io.subscribe(seen, on_change=first)
    pw.io.subscribe(tallies, on_change=put, on_time_end=on_time_end)

    def watchdog() -> None:  # a peer that loses events would otherwise wait for ever
        while True:
            time.sleep(1)
            if clock.t0 is not None and time.monotonic() - sink.last_update > a.idle_s:
                report(clock.result(sink, framework="pathway", stopped="idle: the sink stopped short"))

    threading.Thread(target=watchdog, daemon=True).start()
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    report(clock.result(sink, framework="pathway", stopped="the computation ended"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
