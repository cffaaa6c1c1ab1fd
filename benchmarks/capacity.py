"""Capacity plan from measured figures: partitions, workers and ClickHouse shards for a target load.

``python -m benchmarks.capacity [results.json]`` prints the table of docs/SCALING.md from a
``make bench`` result, so the plan is recomputed whenever the figures change. The model, and which of
its inputs are measured and which are assumed, is spelled out in docs/SCALING.md; in short:

* workers: a worker is one Python process, so at most one core; it is planned at ``HEADROOM`` of the
  throughput measured for that many active streamers, leaving room for a burst above the planned peak,
  for catching up after a rebalance, and for the freshness measured at half load;
* partitions per event topic: a power of two, at least twice the workers (so the group can double
  without repartitioning, which would move streamers between partitions mid-day);
* ClickHouse shards: rows written per second (one row per window changed in a flush interval, plus
  distinct viewers and orders) over a per-shard insert budget derived from the measured sink rate.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
HEADROOM = 0.5  # plan each worker at half its measured maximum
SHARES = {"live.views": 0.60, "live.likes": 0.32, "live.orders": 0.08}  # the generator's mix (sim/generate.py)
VIEWER_ROWS_PER_EVENT = 0.30  # a viewer row per distinct enter per window: at most the enters, half the views
ORDER_ROWS_PER_EVENT = 0.08
OPEN_WINDOWS_PER_ROOM_TOPIC = 4  # 10 s windows stay open until the watermark passes end + 30 s lateness
SHARD_CORES = 8  # cores of one ClickHouse shard node
SHARD_INSERT_SHARE = 0.5  # the rest of a shard's CPU is for merges and leaderboard queries
REPLICATION = 3  # Kafka replication factor in production
SCENARIOS = [(10_000, 100_000), (10_000, 1_000_000), (100_000, 100_000), (100_000, 1_000_000)]


def per_worker_eps(r: dict[str, Any], rooms: int) -> float:
    """Measured worker throughput at the nearest measured count of active streamers not above ``rooms``,
    and never more than the main-corpus run (the generator's skewed rooms) measured."""
    single = float(r["worker_eps_single"])
    curve = sorted((s["streamers"], s["events_per_s"]) for s in r.get("streamers", []))
    below = [eps for n, eps in curve if n <= rooms] or [eps for _, eps in curve[:1]]
    return min([single, *map(float, below[-1:])])


def tally_rows_per_s(rooms: int, eps: float, flush_s: float) -> float:
    """Windows changed per second: a room's topic is written in a flush if it had an event (Poisson)."""
    per_room = sum(1 - math.exp(-eps * share / rooms * flush_s) for share in SHARES.values())
    return rooms * per_room / flush_s


def sink_rows_per_core(r: dict[str, Any]) -> float | None:
    """Rows per second of flushing time into embedded chDB, in the run with the largest flushes (where
    the fixed cost of a flush weighs least): the per-row cost of the sink on one shared core."""
    runs = [c["flushes"] for c in _worker_runs(r) if c.get("flushes", {}).get("rows_per_flush_second")]
    if not runs:
        return None
    return float(max(runs, key=lambda f: f["rows"] / f["count"])["rows_per_flush_second"])


def _worker_runs(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for name, c in r.get("consumers", {}).items() if name.startswith("worker")] + r.get("streamers", [])


def plan(r: dict[str, Any], flush_s: float = 1.0) -> list[dict[str, Any]]:
    core_rows = sink_rows_per_core(r)
    shard_budget = core_rows * SHARD_CORES * SHARD_INSERT_SHARE if core_rows else None
    bpe = r.get("corpus", {}).get("bytes_per_event", 250)
    packed = (r["worker_eps_batched"] / r["worker_eps_single"]) if r.get("worker_eps_batched") else None
    out = []
    for rooms, eps in SCENARIOS:
        cap = per_worker_eps(r, rooms)
        workers = math.ceil(eps / (cap * HEADROOM))
        rows = tally_rows_per_s(rooms, eps, flush_s) + eps * (VIEWER_ROWS_PER_EVENT + ORDER_ROWS_PER_EVENT)
        state = rooms * len(SHARES) * OPEN_WINDOWS_PER_ROOM_TOPIC * r.get("bytes_per_open_window", 2000)
        out.append({
            "rooms": rooms, "events_per_s": eps, "per_worker_eps": round(cap),
            "workers": workers,
            "workers_packed": math.ceil(eps / (cap * packed * HEADROOM)) if packed else None,
            "partitions_per_topic": max(4, 2 ** math.ceil(math.log2(2 * workers))),
            "sink_rows_per_s": round(rows),
            "shards": max(1, math.ceil(rows / shard_budget)) if shard_budget else None,
            "state_gb": round(state / 1e9, 2),
            "kafka_in_mb_s": round(eps * bpe / 1e6), "kafka_write_mb_s": round(eps * bpe * REPLICATION / 1e6),
        })
    return out


def markdown(r: dict[str, Any]) -> str:
    rows = plan(r)
    core_rows = sink_rows_per_core(r)
    head = ("| live rooms | events/s | worker capacity used (events/s) | workers | workers, packed messages "
            "| partitions per event topic | rows/s to ClickHouse | ClickHouse shards | window state, GB | "
            "Kafka in / written with RF 3, MB/s |")
    lines = [head, "|" + "---|" * 10]
    for p in rows:
        lines.append(
            f"| {p['rooms']:,} | {p['events_per_s']:,} | {p['per_worker_eps']:,} | {p['workers']} | "
            f"{p['workers_packed'] if p['workers_packed'] else 'not measured'} | {p['partitions_per_topic']} | "
            f"{p['sink_rows_per_s']:,} | {p['shards'] if p['shards'] else 'n/a'} | {p['state_gb']} | "
            f"{p['kafka_in_mb_s']} / {p['kafka_write_mb_s']} |")
    lines.append("")
    lines.append(f"Inputs from {r.get('date', '?')}: per-worker throughput by active streamers "
                 f"{[(s['streamers'], s['events_per_s']) for s in r.get('streamers', [])]}, single "
                 f"{r.get('worker_eps_single')}, packed {r.get('worker_eps_batched')} events/s; sink "
                 f"{round(core_rows) if core_rows else 'no'} rows per second of flushing; "
                 f"{r.get('bytes_per_open_window')} bytes per open window; "
                 f"{r.get('corpus', {}).get('bytes_per_event')} bytes per event.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.capacity")
    p.add_argument("results", nargs="?", default=str(RESULTS))
    p.add_argument("--json", action="store_true", help="the plan as JSON instead of a markdown table")
    a = p.parse_args(argv)
    r = json.loads(Path(a.results).read_text())
    if not isinstance(r.get("worker_eps_single"), (int, float)):  # a run without the consumers section
        raise SystemExit(f"{a.results}: worker_eps_single is {r.get('worker_eps_single')!r}; the plan needs a full run")
    if not isinstance(r.get("worker_eps_batched"), (int, float)):
        r = {**r, "worker_eps_batched": None}
    print(json.dumps(plan(r), indent=2) if a.json else markdown(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
