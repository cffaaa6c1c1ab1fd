"""Memory held per open (window, streamer): the worker's own state code, measured as resident memory.

The corpus is decoded and applied to one ``PartitionState`` per source partition, exactly as the worker
does, with a flush every 20,000 events (pending rows leave memory, closed windows are evicted). The growth of resident
memory while the states fill — accumulators, viewer sets, per-streamer watermarks and counts, order
dedupe, and the allocator's slack, i.e. what the worker pays — divided by the number of open windows
is the figure. Runs as a child process (``python -m benchmarks.memory``) so that what it
allocates is all there is to count; it prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

from aiokafka.partitioner import murmur2

from streamproc.core.state import PartitionState, Rules
from streamproc.ingest.events import Rejection, decode
from streamproc.logs.logfile import read_log
from streamproc.runtime.topics import EVENT_TOPICS, partitions_of
from streamproc.settings import Settings

from .procstat import rss_bytes

FLUSH_EVERY = 20_000  # events between "flushes"; at the worker's rates, about one flush interval


def flush(states: dict) -> None:
    """What a successful flush does to the state: pending rows go, closed windows are evicted."""
    for st in states.values():
        snap = st.snapshot()
        if snap is not None:
            st.flush_done(snap)


def measure(log: str, limit: int) -> dict:
    s = Settings.from_env(env={})
    rules = Rules(lateness_ms=s.lateness_ms, order_dedupe_horizon_ms=s.order_dedupe_horizon_ms,
                  idle_close_ms=s.idle_close_ms, closed_windows_kept=s.closed_windows_kept)
    records = [r for _, r in zip(range(limit), read_log(log))]
    parts = {t: partitions_of(t) for t in EVENT_TOPICS}
    offsets: dict[tuple[str, int], int] = {}
    gc.collect()
    before = rss_bytes(os.getpid())
    states: dict[tuple[str, int], PartitionState] = {}
    for i, rec in enumerate(records, 1):
        if i % FLUSH_EVERY == 0:
            flush(states)
        tp = (rec.topic, (murmur2(rec.key or b"") & 0x7FFFFFFF) % parts[rec.topic])
        st = states.get(tp)
        if st is None:
            st = states[tp] = PartitionState(tp[0], tp[1], rules)
        offset = offsets[tp] = offsets.get(tp, -1) + 1
        event = decode(rec.value, rec.topic, rec.key, rec.ts, max_bytes=s.max_message_bytes,
                       max_future_ms=s.max_future_ms)
        if type(event) is Rejection:
            st.skip(offset)
        else:
            st.apply(offset, event)
    flush(states)
    gc.collect()
    held = rss_bytes(os.getpid()) - before
    windows = sum(len(st.windows) for st in states.values())
    streamers = len({k for st in states.values() for k in st.watermark})
    kept = sum(len(st.closed) for st in states.values())  # held too: closed windows a late event could reopen
    return {"events": len(records), "open_windows": windows, "closed_windows_kept": kept,
            "distinct_streamers": streamers, "state_bytes": held,
            "bytes_per_open_window": round(held / windows) if windows else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    p.add_argument("--log", required=True)
    p.add_argument("--events", type=int, required=True)
    a = p.parse_args(argv)
    sys.stdout.write(json.dumps(measure(a.log, a.events)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
