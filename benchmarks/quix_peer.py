"""Quix Streams as a peer: the job of ``benchmarks/peerjob.py`` written the way its documentation shows.

The three event topics are concatenated into one StreamingDataFrame; each message is decoded by its
JSON deserializer (orjson), checked against the job's typed rule (the record timestamp comes from the
timestamp extractor) and reduced to (likes, amount); then it is
windowed by the event's own ``ts`` in 10 s tumbling windows per key (streamer) and aggregated (events,
likes, amount) with its RocksDB-backed state, emitting the current value of each window into the sink
(a dict, ``peerjob.Sink``). The grace period covers the corpus, so no event is dropped as late.

Runs in a separate virtualenv (``benchmarks/.venv-quix``): the project does not depend on Quix Streams.
The clock starts at the first message the job holds and stops when the sink holds every event of the
corpus (its totals then equal ``--expect``'s, checked); the process prints one JSON line and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import timedelta
from typing import Any

from benchmarks.peerjob import (  # PYTHONPATH at the repo (run.child)
    LATENESS_MS,
    MAX_FUTURE_MS,
    MAX_PAST_MS,
    Clock,
    Sink,
    fields,
    report,
)


def main(argv: list[str] | None = None) -> int:
    from quixstreams import Application
    from quixstreams.dataframe.windows import aggregations as agg

    p = argparse.ArgumentParser(prog="quix_peer.py")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topics", nargs="+", required=True)
    p.add_argument("--expect", required=True, help="the job's totals over the topics (peerjob.expected)")
    p.add_argument("--window-ms", type=int, default=10_000)
    p.add_argument("--idle-s", type=float, default=60, help="give up when the sink saw nothing new this long")
    a = p.parse_args(argv)
    clock, sink = Clock(), Sink(json.loads(a.expect))

    def skip_bad(*_: Any, **__: Any) -> bool:
        return True  # a message that does not deserialize is skipped (logged)

    def event_time(value: Any, headers: Any, timestamp: int, kind: Any) -> int:
        """The event's ``ts``; the record timestamp for a message that is no event of the job (which
        ``job`` then drops), so that no such message moves the window watermark."""
        if type(value) is dict:
            value["_record_ts"] = timestamp
            ts = value.get("ts")
            if type(ts) is int and timestamp - MAX_PAST_MS <= ts <= timestamp + MAX_FUTURE_MS:
                return ts
        return timestamp

    app = Application(broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
                      state_dir=tempfile.mkdtemp(prefix="quix-state-"), on_consumer_error=skip_bad,
                      on_processing_error=skip_bad, loglevel="WARNING")
    frames = [app.dataframe(app.topic(t, value_deserializer="json", timestamp_extractor=event_time))
              for t in a.topics]
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)

    def job(value: Any) -> dict[str, int] | None:
        clock.first_message()
        f = fields(value, value.get("_record_ts", 0)) if type(value) is dict else None
        return None if f is None else {"likes": f[2], "amount": f[3]}

    def put(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> None:
        sink.put((value["start"], key), value["events"], value["likes"], value["amount"])
        if sink.done():
            report(clock.result(sink, framework="quixstreams"))

    sdf = sdf.apply(job).filter(lambda v: v is not None)
    sdf = sdf.tumbling_window(timedelta(milliseconds=a.window_ms), grace_ms=LATENESS_MS).agg(
        events=agg.Count(), likes=agg.Sum("likes"), amount=agg.Sum("amount")).current()
    sdf = sdf.update(put, metadata=True)

    def watchdog() -> None:  # a peer that loses events would otherwise wait for ever
        while True:
            time.sleep(1)
            if clock.t0 is not None and time.monotonic() - sink.last_update > a.idle_s:
                report(clock.result(sink, framework="quixstreams", stopped="idle: the sink stopped short"))

    threading.Thread(target=watchdog, daemon=True).start()
    app.run()
    report(clock.result(sink, framework="quixstreams", stopped="the application stopped"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
