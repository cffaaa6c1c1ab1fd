"""Hostile readers beside a live feed: does the pipeline keep its cadence while the API is hammered?

One worker (embedded chDB) is fed at a steady rate (corpus events stamped as sent, so event time tracks
the wall clock) for the whole run. After a warm-up the run has two phases, each measured on its own:

  quiet   the feed alone: flush cadence, freshness, lag (the reference)
  load    the same feed, plus ``clients`` concurrent HTTP clients sending ``requests`` in all, each
          client one request at a time, as fast as answers come back (a 429 too: hostile clients
          ignore Retry-After)

Requests cycle through four boards — leaderboard gmv/5m, leaderboard gmv/today, regions (counties,
today) and a per-minute series — in ``variants`` versions each (another metric, then another
sparkline length or region level, for the boards; another streamer for the series: a board's ``limit`` would not do,
as every limit is a cut of one shared answer), so that ``variants`` > 1 defeats the API's short shared
cache the way a hostile or merely diverse crowd of readers would; 1 is 200 identical pollers.

Reported per phase: flushes per second (``streamproc_flushes_total``), the worker's own freshness
histogram over the phase (``streamproc_freshness_seconds``: flush completion minus the newest event
time of each row written) and the lag of the flushed offset behind the produced (acknowledged) offset,
summed over partitions, sampled from ``/status`` every ``LAG_POLL_S``; and for the load: API latency
p50/p99 per request and the share of each status (429: refused by the read gate). ``/status`` polls
that got no answer in 2 s are counted, not sampled. Run once per ``api_max_concurrent`` value; 0 is the
unbounded API (the default thread pool, no admission), for the ratio.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from streamproc.boards.params import LEVEL_COLUMNS, METRICS
from streamproc.logs.logfile import LogRecord
from streamproc.runtime.topics import create_topics
from streamproc.settings import Settings
from streamproc.verify.stack import WorkerProcess

from .endtoend import STOP_S, _get, _histogram_quantiles, _metric, _q, run_settings, wait_assigned
from .feed import Feed

LAG_POLL_S = 0.25
REQUEST_TIMEOUT_S = 120


class LagWatch:
    """Samples, in a thread, how many acknowledged events the worker has not flushed yet."""

    def __init__(self, worker: WorkerProcess, feed: Feed) -> None:
        self.worker, self.feed = worker, feed
        self.samples: list[int] = []
        self.failed_polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            produced = dict(self.feed.result.last_offsets)  # read before /status: never ahead of the truth
            st = self.worker.status()
            if st is None:
                self.failed_polls += 1
            else:
                flushed = {tp: p["flushed_offset"] for tp, p in st["partitions"].items()}
                self.samples.append(sum(max(0, o - flushed.get(f"{t}/{p}", -1)) for (t, p), o in produced.items()))
            self._stop.wait(LAG_POLL_S)

    def __enter__(self) -> "LagWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self, rate: float) -> dict[str, Any]:
        lag = sorted(self.samples)
        return {"samples": len(lag), "failed_status_polls": self.failed_polls,
                "p50_events": round(_q(lag, 0.5)) if lag else None, "p99_events": round(_q(lag, 0.99)) if lag else None,
                "max_events": lag[-1] if lag else None,
                "p99_s_of_feed": round(_q(lag, 0.99) / rate, 2) if lag else None}


LEVELS = tuple(LEVEL_COLUMNS)


def board_paths(records: list[LogRecord], variants: int) -> list[str]:
    """The request mix: four boards in ``variants`` versions each, interleaved (see the module docstring)."""
    keys = (r.key.decode(errors="replace") for r in records[:50_000] if r.key)
    streamers = list(dict.fromkeys(k for k in keys if k.isalnum()))[:variants]
    out = []
    for v in range(variants):
        metric, spark = METRICS[v % len(METRICS)], v // len(METRICS)  # distinct answers, not cuts of one
        out += [f"/api/leaderboard?metric={metric}&window=5m&spark={spark}",
                f"/api/leaderboard?metric={metric}&window=today&spark={spark}",
                f"/api/regions?metric={metric}&window=today&level={LEVELS[spark % len(LEVELS)]}",
                "/api/series?" + urllib.parse.urlencode({"metric": "gmv", "window": "1h",
                                                         "streamer_id": streamers[v % len(streamers)]})]
    return out


async def hammer(url: str, paths: list[str], clients: int, requests: int) -> list[tuple[int, float]]:
    """``clients`` tasks share ``requests``, one at a time each: (HTTP status or 0 on error, seconds)."""
    out: list[tuple[int, float]] = []
    todo = iter(range(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        for i in todo:
            began = time.monotonic()
            try:
                async with session.get(url + paths[i % len(paths)]) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            out.append((status, time.monotonic() - began))

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return out


def _phase(worker: WorkerProcess, before: str, seconds: float) -> dict[str, Any]:
    """Flush cadence and freshness between the scrape ``before`` and now."""
    after = _get(worker.url + "/metrics")
    flushes = (_metric(after, "streamproc_flushes_total") or 0) - (_metric(before, "streamproc_flushes_total") or 0)
    return {"seconds": round(seconds, 2), "flushes": int(flushes), "flushes_per_s": round(flushes / seconds, 2),
            "freshness": _histogram_quantiles(after, "streamproc_freshness_seconds", since=before)}


def reader_load(base: Settings, records: list[LogRecord], rate: float, work: Path, *, max_concurrent: int,
                clients: int, requests: int, variants: int, warmup_s: float, quiet_s: float) -> dict[str, Any]:
    """One worker fed at ``rate``: the quiet phase, then the load phase (module docstring)."""
    name = f"readers-{max_concurrent}"
    settings = run_settings(base, work, name, topic_prefix=f"{name}.", api_max_concurrent=max_concurrent)
    asyncio.run(create_topics(settings))
    worker = WorkerProcess(settings, work / name / "worker.log").start()
    paths = board_paths(records, variants)
    try:
        wait_assigned([worker])
        with Feed(settings, records, rate) as feed:
            time.sleep(warmup_s)  # windows open, boards have data, the first rollups ran
            with LagWatch(worker, feed) as quiet_lag:
                before, began = _get(worker.url + "/metrics"), time.monotonic()
                time.sleep(quiet_s)
                quiet = _phase(worker, before, time.monotonic() - began)
            sent_before = feed.result.count
            with LagWatch(worker, feed) as load_lag:
                before, began = _get(worker.url + "/metrics"), time.monotonic()
                answers = asyncio.run(hammer(worker.url, paths, clients, requests))
                load = _phase(worker, before, time.monotonic() - began)
            fed = (feed.result.count - sent_before) / load["seconds"]
    finally:
        worker.stop(timeout_s=STOP_S)
    latency = sorted(s for _, s in answers)
    statuses = Counter(status for status, _ in answers)
    return {"api_max_concurrent": max_concurrent, "clients": clients, "requests": len(answers),
            "distinct_requests": len(paths), "feed_rate": round(rate), "feed_rate_during_load": round(fed),
            "quiet": {**quiet, "lag": quiet_lag.figures(rate)},
            "load": {**load, "lag": load_lag.figures(rate)},
            "api_p50_s": round(_q(latency, 0.5), 3), "api_p99_s": round(_q(latency, 0.99), 3),
            "api_max_s": round(latency[-1], 3),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "share_429": round(statuses[429] / len(answers), 3)}
