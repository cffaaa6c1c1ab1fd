"""Quix Streams as a peer: the same job written the way its documentation shows.

The three event topics are concatenated into one StreamingDataFrame, windowed by each event's own
``ts`` in 10 s tumbling windows per key (streamer) and aggregated (events, likes, amount) with its
RocksDB-backed state, emitting the current value of each window. It runs in a separate virtualenv
(``benchmarks/.venv-quix``): the project does not depend on Quix Streams. Time and CPU start at the
first message and stop after ``--events`` messages; the process prints one JSON line.
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

from benchmarks.procstat import self_cpu_seconds, self_peak_rss_bytes  # run with PYTHONPATH at the repo (run.child)


def main(argv: list[str] | None = None) -> int:
    from quixstreams import Application
    from quixstreams.dataframe.windows import aggregations as agg

    p = argparse.ArgumentParser(prog="quix_peer.py")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topics", nargs="+", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--window-ms", type=int, default=10_000)
    a = p.parse_args(argv)

    def skip_bad(*_: Any, **__: Any) -> bool:
        return True  # a malformed message is skipped (logged), as a dead letter would be

    def event_time(value: Any, headers: Any, timestamp: int, kind: Any) -> int:
        return value["ts"] if type(value) is dict and type(value.get("ts")) is int else timestamp

    app = Application(broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
                      state_dir=tempfile.mkdtemp(prefix="quix-state-"), on_consumer_error=skip_bad,
                      on_processing_error=skip_bad, loglevel="WARNING")
    frames = [app.dataframe(app.topic(t, value_deserializer="json", timestamp_extractor=event_time))
              for t in a.topics]
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)
    mark: dict[str, float] = {"n": 0}

    def count(value: Any) -> None:
        if mark["n"] == 0:
            mark["t0"], mark["cpu0"] = time.perf_counter(), self_cpu_seconds()
        mark["n"] += 1
        if mark["n"] >= a.events:
            result = {"events": int(mark["n"]), "seconds": time.perf_counter() - mark["t0"],
                      "cpu_s": self_cpu_seconds() - mark["cpu0"],
                      "peak_rss_bytes": self_peak_rss_bytes()}
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
            os._exit(0)

    sdf = sdf.update(count)
    sdf = sdf.filter(lambda v: type(v) is dict and type(v.get("ts")) is int)
    sdf = sdf.tumbling_window(timedelta(milliseconds=a.window_ms)).agg(
        events=agg.Count(), likes=agg.Sum("count"), amount_fen=agg.Sum("amount_fen")).current()
    app.run()
    return 1


if __name__ == "__main__":
    sys.exit(main())
