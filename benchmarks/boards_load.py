"""Leaderboards under load: 20 pollers against a worker that holds a day of history and takes a live feed.

The store is filled first, in a child process (``python -m benchmarks.boards_load fill``), with
``streamers`` rooms × ``hours`` of 10 s windows ending now (the generator of
``benchmarks/leaderboard_bench.py``: one row per window, streamer and source topic, plus distinct viewers),
and rolled up once (the backfill a fresh rollup does). The history's rows name source topics of their
own (``hist.*``), so the worker's checkpoints, restored per source topic and partition, are not theirs.
Then one worker opens that store (embedded chDB), a feed publishes the corpus at ``rate`` events/s
(stamped as sent), and after a warm-up ``pollers`` concurrent clients poll the leaderboard for 5m, 1h
and today in turn for ``seconds``, each one request at a time, as fast as answers come back. Each
poller asks for its own ``limit`` (the page's 10, a CLI's 20, a panel's 50...): a board's limit is not
part of its identity in the API (``web/server.py``), so the crowd shares one computation per board
and data version, which is what the shared cache is for; a crowd that defeats it on purpose is
``benchmarks/readers.py``'s. Reported per window: requests, p50 / p99 latency (queueing in the API's
admission included), statuses (a 429 is no answer and counts against the board) and how each answer was
served (``X-Cache``: miss, hit, stale); the feed's achieved rate; and the worker's rollup metrics over
the phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from streamproc.logs.logfile import LogRecord
from streamproc.runtime.topics import create_topics
from streamproc.settings import Settings
from streamproc.verify.stack import WorkerProcess

from .endtoend import STOP_S, _get, _histogram_quantiles, _q, rollup_figures, run_settings, wait_assigned
from .feed import Feed

WINDOWS = ("5m", "1h", "today")
ROOT = Path(__file__).resolve().parent.parent


def fill(data_dir: str, streamers: int, hours: float, viewers: int, end_ms: int) -> dict[str, Any]:
    """The history, ending at the 10 s window before ``end_ms``, then one rollup pass over all of it."""
    from streamproc.boards import rollup
    from streamproc.store.chdb import ChdbSink

    from .leaderboard_bench import FILL_TALLIES, FILL_VIEWERS

    tallies_sql = FILL_TALLIES.replace("'live.", "'hist.")  # source topics of its own (module docstring)
    buckets = max(1, int(hours * 360))
    start = end_ms - end_ms % 10_000 - buckets * 10_000
    sink = ChdbSink(Path(data_dir) / "clickhouse")
    try:
        sink.apply_schema()
        t = time.perf_counter()
        total, chunk = buckets * streamers, 360 * streamers  # an hour of windows per insert
        for offset in range(0, total, chunk):
            p = {"start": start, "streamers": streamers, "offset": offset, "count": min(chunk, total - offset),
                 "viewers": viewers}
            sink.command(tallies_sql, p)
            if viewers:
                sink.command(FILL_VIEWERS, p)
        fill_s = time.perf_counter() - t
        backfill = rollup.run_once(sink)
    finally:
        sink.close()
    return {"streamers": streamers, "hours": hours, "tally_rows": total * 3, "viewer_rows": total * viewers,
            "start_ms": start, "fill_s": round(fill_s, 1), "rollup_backfill_s": round(backfill.seconds, 1)}


async def poll(url: str, pollers: int, seconds: float) -> list[tuple[str, int, float, str]]:
    """``pollers`` clients, each cycling through the windows with a ``limit`` of its own, until time is up:
    (window, status, seconds, X-Cache) per request."""
    out: list[tuple[str, int, float, str]] = []
    deadline = time.monotonic() + seconds

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        n = i  # start each client on another board, so that every board is asked at once
        while time.monotonic() < deadline:
            window = WINDOWS[n % len(WINDOWS)]
            n += 1
            began = time.monotonic()
            try:
                async with session.get(f"{url}/api/leaderboard?metric=gmv&window={window}&limit={10 + i}") as r:
                    await r.read()
                    status, cache = r.status, r.headers.get("X-Cache", "")
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status, cache = 0, ""
            out.append((window, status, time.monotonic() - began, cache))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(i, session) for i in range(pollers)))
    return out


def boards_load(base: Settings, records: list[LogRecord], work: Path, *, streamers: int, hours: float,
                viewers: int, rate: float, pollers: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    settings = run_settings(base, work, "boards", topic_prefix="boards.")
    asyncio.run(create_topics(settings))
    out = subprocess.run([sys.executable, "-m", "benchmarks.boards_load", "fill", "--data-dir", settings.data_dir,
                          "--streamers", str(streamers), "--hours", str(hours), "--viewers", str(viewers),
                          "--end-ms", str(int(time.time() * 1000))],
                         cwd=ROOT, capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        raise RuntimeError(f"filling the history failed: {out.stderr.strip()[-1500:]}")
    history = json.loads(out.stdout.strip().splitlines()[-1])
    worker = WorkerProcess(settings, work / "boards" / "worker.log").start()
    try:
        wait_assigned([worker])
        with Feed(settings, records, rate, cycle=True) as feed:
            time.sleep(warmup_s)  # the feed's windows are flushed and rolled up at least once
            before, sent0, began = _get(worker.url + "/metrics"), feed.result.count, time.monotonic()
            answers = asyncio.run(poll(worker.url, pollers, seconds))
            elapsed = time.monotonic() - began
            fed = (feed.result.count - sent0) / elapsed
            after = _get(worker.url + "/metrics")
    finally:
        worker.stop(timeout_s=STOP_S)
    per_window: dict[str, Any] = {}
    for window in WINDOWS:
        got = [(status, s) for w, status, s, _ in answers if w == window]
        ok = sorted(s for status, s in got if status == 200)
        every = sorted(s for _, s in got)
        statuses = Counter(status for status, _ in got)
        per_window[window] = {"requests": len(got), "answered": len(ok),
                              "p50_ms": round(_q(every, 0.5) * 1000, 1) if every else None,
                              "p99_ms": round(_q(every, 0.99) * 1000, 1) if every else None,
                              "max_ms": round(every[-1] * 1000, 1) if every else None,
                              "statuses": {str(k): v for k, v in sorted(statuses.items())},
                              "served": dict(sorted(Counter(c for w, st, _, c in answers
                                                            if w == window and st == 200).items()))}
    interval = settings.rollup_interval_s
    phase_rollups = rollup_figures(_delta_text(before, after), interval)
    return {"history": history, "pollers": pollers, "seconds": round(elapsed, 1), "feed_rate": round(rate),
            "feed_rate_achieved": round(fed), "boards": per_window, "rollups": phase_rollups,
            # the worker's own probe over the polling phase: a stalled loop delays every answer at once
            "event_loop_lag": _histogram_quantiles(after, "streamproc_event_loop_lag_seconds", before),
            "api_max_concurrent": settings.api_max_concurrent}


def _delta_text(before: str, after: str) -> str:
    """The rollup series of ``after`` less those of ``before`` (counters and buckets over the phase)."""
    def values(text: str) -> dict[str, float]:
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("streamproc_rollup_") and not line.startswith("#")}
    b, a = values(before), values(after)
    return "\n".join(f"{k} {v - b.get(k, 0.0)}" for k, v in a.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.boards_load")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill", help="fill a store with the history (run by boards_load in a child process)")
    f.add_argument("--data-dir", required=True)
    f.add_argument("--streamers", type=int, required=True)
    f.add_argument("--hours", type=float, required=True)
    f.add_argument("--viewers", type=int, default=3)
    f.add_argument("--end-ms", type=int, required=True)
    a = p.parse_args(argv)
    print(json.dumps(fill(a.data_dir, a.streamers, a.hours, a.viewers, a.end_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
