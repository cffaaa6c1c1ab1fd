"""Leaderboard latency at platform scale on the embedded engine (chDB).

Fills the tables directly (no broker, no worker): ``--streamers`` rooms × ``--hours`` of 10 s windows,
one row per window, streamer and source topic (views, likes, orders, as the worker writes them), plus
``--viewers`` distinct viewers per window and streamer through ``viewers_in`` (so the 10 s audience
view runs as in production; the rollup unions the minutes and hours). Then runs the rollup job once over everything
(the backfill a fresh rollup does), then one live-sized rollup run, then each leaderboard query
``--repeat`` times, and prints p50 / p99 per query, as a table and as one JSON line.

    .venv/bin/python benchmarks/leaderboard_bench.py                    # 10,000 streamers x 24 h
    .venv/bin/python benchmarks/leaderboard_bench.py --streamers 1000 --hours 2 --repeat 20   # quick

The data starts at midnight Asia/Shanghai, so ``today`` at the end spans the whole day (its worst case).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamproc.boards import (
    queries,
    rollup,  # noqa: E402
)
from streamproc.boards.params import METRICS, parse  # noqa: E402
from streamproc.store.chdb import ChdbSink  # noqa: E402

DAY0 = 1_794_326_400_000  # 2026-11-11 00:00 Asia/Shanghai

FILL_TALLIES = """
INSERT INTO tallies_10s (window_start, streamer_id, src_topic, src_partition, version, last_offset, max_ts, events,
                         enters, leaves, concurrent_peak, concurrent_close, likes, orders_paid, orders_refunded, items,
                         gmv_fen, refund_fen)
SELECT ws, sid, topic, toUInt16(cityHash64(sid) % 4), n, n, ws + toIntervalMillisecond(9000), ev,
       if(topic = 'live.views', ev - intDiv(ev, 3), 0), if(topic = 'live.views', intDiv(ev, 3), 0),
       if(topic = 'live.views', aud + 5, 0), if(topic = 'live.views', aud, 0),
       if(topic = 'live.likes', ev * 7, 0), if(topic = 'live.orders', ev, 0), 0,
       if(topic = 'live.orders', ev * 2, 0), if(topic = 'live.orders', ev * (1990 + h % 9000), 0), 0
FROM (
    SELECT fromUnixTimestamp64Milli(toInt64({start:Int64} + intDiv(number, {streamers:UInt32}) * 10000), 'UTC') AS ws,
           concat('s', leftPad(toString(number % {streamers:UInt32}), 5, '0')) AS sid,
           number AS n, cityHash64(number) AS h,
           1000. / pow((number % {streamers:UInt32}) + 1, 0.8) AS pop,
           toInt32(pop * 40 * (0.5 + (h % 1000) / 1000.)) AS aud,
           toUInt32(1 + (h % 7) * pop / 40) AS ev
    FROM numbers({offset:UInt64}, {count:UInt64})
)
ARRAY JOIN ['live.views', 'live.likes', 'live.orders'] AS topic
"""

FILL_VIEWERS = """
INSERT INTO viewers_in (window_start, streamer_id, viewer_id)
SELECT fromUnixTimestamp64Milli(toInt64({start:Int64} + intDiv(number, {streamers:UInt32}) * 10000), 'UTC'),
       concat('s', leftPad(toString(number % {streamers:UInt32}), 5, '0')) AS sid,
       concat('u', toString(cityHash64(number, k) % (500 + 200000 / ((number % {streamers:UInt32}) + 1))))
FROM numbers({offset:UInt64}, {count:UInt64})
ARRAY JOIN range({viewers:UInt32}) AS k
"""


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(statistics.median(samples), 1), "p99_ms": round(percentile(samples, 0.99), 1),
            "max_ms": round(max(samples), 1)}


def fill(sink: ChdbSink, args: argparse.Namespace, buckets: int, total: int, report: dict[str, Any]) -> None:
    """Write the tables as the worker would, then run the rollup over all of it and once more, live-sized."""
    t = time.perf_counter()
    chunk = 360 * args.streamers  # an hour of windows per insert
    for offset in range(0, total, chunk):
        p = {"start": DAY0, "streamers": args.streamers, "offset": offset, "count": min(chunk, total - offset),
             "viewers": args.viewers}
        sink.command(FILL_TALLIES, p)
        if args.viewers:
            sink.command(FILL_VIEWERS, p)
    report["fill_s"] = round(time.perf_counter() - t, 1)
    print(f"filled {total * 3:,} tally rows and {total * args.viewers:,} viewer rows in {report['fill_s']} s",
          file=sys.stderr)

    backfill = rollup.run_once(sink)
    report["rollup_backfill_s"] = round(backfill.seconds, 1)
    # a live-sized run: the newest minute of every streamer written again, as one flush would
    last = DAY0 + (buckets - 1) * 10_000
    sink.command(FILL_TALLIES, {"start": DAY0, "streamers": args.streamers, "offset": (buckets - 1) * args.streamers,
                                "count": args.streamers, "viewers": 0})
    live = rollup.run_once(sink)
    report["rollup_live_run_s"] = round(live.seconds, 3)
    print(f"rollup: backfill {backfill.seconds:.1f} s, a live run {live.seconds:.3f} s "
          f"(newest window {time.strftime('%H:%M:%S', time.gmtime(last / 1000 + 8 * 3600))})", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streamers", type=int, default=10_000)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--viewers", type=int, default=3, help="distinct viewers per 10 s window and streamer")
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--data-dir", default=None, help="chDB path (default: a temporary directory, removed after)")
    ap.add_argument("--reuse", action="store_true", help="the --data-dir was filled by an earlier run: only query it")
    args = ap.parse_args()

    tmp = Path(args.data_dir or tempfile.mkdtemp(prefix="streamproc-bench-"))
    sink = ChdbSink(tmp / "clickhouse")
    sink.apply_schema()
    buckets = int(args.hours * 360)
    total = buckets * args.streamers
    report: dict[str, Any] = {"streamers": args.streamers, "hours": args.hours, "tally_rows": total * 3,
                              "viewer_rows": total * args.viewers}
    try:
        if not args.reuse:
            fill(sink, args, buckets, total, report)
        results: dict[str, dict[str, float]] = {}
        clk = queries.clock(sink)
        boards = [(m, w) for w in ("1m", "5m", "1h", "today") for m in METRICS]
        for metric, window in boards:
            req = parse({"metric": metric, "window": window}, ("metric", "window"))
            results[f"leaderboard {metric} {window}"] = timed(lambda: queries.leaderboard(sink, req), args.repeat)
        few = max(5, args.repeat // 5)
        extra = {
            "leaderboard gmv 5m province=陕西": parse({"window": "5m", "province": "陕西"}, ("window", "province")),
            "leaderboard gmv 5m spark=30": parse({"window": "5m", "spark": "30"}, ("window", "spark")),
        }
        for name, req in extra.items():
            results[name] = timed(lambda: queries.leaderboard(sink, req), args.repeat)
        slow = {
            "regions county gmv today": lambda: queries.regions(sink, parse({"window": "today"}, ("window",))),
            "rising gmv 5m": lambda: queries.rising(sink, parse({"window": "5m"}, ("window",))),
            "session gmv": lambda: queries.leaderboard(sink, parse({"window": "session"}, ("window",))),
            "series gmv 1h one streamer": lambda: queries.series(
                sink, parse({"window": "1h", "streamer_id": "s00042"}, ("window", "streamer_id"))),
            "streamer s00042": lambda: queries.streamer(sink, "s00042", parse({}, ()).time),
        }
        for name, fn in slow.items():
            results[name] = timed(fn, few)
        # the same boards as if there were no rollups: everything from tallies_10s FINAL
        bare = dataclasses.replace(clk, minutes_upto=0, hours_upto=0)
        for window in ("5m", "1h", "today"):
            req = parse({"window": window}, ("window",))
            results[f"without rollups: leaderboard gmv {window}"] = timed(
                lambda: queries.leaderboard(sink, req, bare), 1 if window == "today" else few)
        report["queries"] = results
        width = max(map(len, results))
        print(f"{'query':<{width}}  {'p50 ms':>8}  {'p99 ms':>8}", file=sys.stderr)
        for name, r in results.items():
            print(f"{name:<{width}}  {r['p50_ms']:>8.1f}  {r['p99_ms']:>8.1f}", file=sys.stderr)
        print(json.dumps(report, ensure_ascii=False))
    finally:
        sink.close()
        if not args.data_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
