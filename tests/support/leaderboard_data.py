"""A small, exact event log for the leaderboard tests, and the boards it must give, computed in Python.

The log spans three hours across midnight in Asia/Shanghai (so ``today``, whole-hour rollups, minute
rollups and 10 s windows all take part), with broadcasts separated by long gaps, viewers entering and
leaving, like bursts, paid orders, payment-callback duplicates, refunds and events a few seconds out of
order (never late). The oracle shares no code with the query layer or the worker: it reads the events
this module made, in log order, and applies the documented definitions.
"""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from dataclasses import astuple, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

import orjson
from support.helpers import TOPIC, Rec, started

from streamproc.boards.dimension import Streamer
from streamproc.logs.logfile import LogRecord
from streamproc.sim.generate import build_streamers

SH = timezone(timedelta(hours=8))
START_MS = int(datetime(2026, 11, 11, 22, 30, tzinfo=SH).timestamp() * 1000)
SPAN_MS = 3 * 3_600_000
METRICS = ("gmv", "orders", "views", "unique_viewers", "buyers", "likes", "concurrent_viewers", "conversion")
MIN_AUDIENCE = 10  # Settings.conversion_min_viewers


@dataclass
class Log:
    records: list[LogRecord]
    events: list[dict[str, Any]]  # valid events in log order (duplicates included, as sent)
    streamers: list[Streamer]


def build_log(seed: int = 5, n_streamers: int = 24, start_ms: int = START_MS, span_ms: int = SPAN_MS,
              rate_per_s: float = 3.0) -> Log:
    """Events of ``n_streamers`` rooms (``rate_per_s`` in all, Zipf-like shares); each room broadcasts in
    sessions of 20..70 min with 8..40 min off."""
    rng = random.Random(seed)
    streamers = build_streamers(n_streamers, seed)
    weights = [1.0 / (i + 1) ** 0.8 for i in range(n_streamers)]
    pending: list[tuple[int, int, dict[str, Any]]] = []  # (send ts, seq, event)
    seq = 0
    for idx, s in enumerate(streamers):
        t = start_ms + rng.randrange(0, 20 * 60_000)
        sess = 0
        while t < start_ms + span_ms - 60_000:
            sess += 1
            end = min(t + rng.randrange(20, 70) * 60_000, start_ms + span_ms - 1_000)
            room: list[str] = []
            n = int((end - t) / 1000 * rate_per_s * weights[idx] / sum(weights)) + 5
            times = sorted(rng.randrange(t, end) for _ in range(n))
            for ts in times:
                base = {"schema_version": 1, "ts": ts, "streamer_id": s.streamer_id,
                        "session_id": f"{s.streamer_id}-b{sess}"}
                r = rng.random()
                if r < 0.55 or not room:
                    if room and rng.random() < 0.35:
                        v = room.pop(rng.randrange(len(room)))
                        ev = {**base, "type": "view", "viewer_id": v, "action": "leave"}
                    else:
                        v = f"u{rng.randrange(0, 400)}"
                        room.append(v)
                        ev = {**base, "type": "view", "viewer_id": v, "action": "enter"}
                elif r < 0.85:
                    ev = {**base, "type": "like", "viewer_id": rng.choice(room), "count": rng.randrange(1, 30)}
                else:
                    seq += 1
                    ev = {**base, "type": "order", "viewer_id": rng.choice(room), "order_id": f"o{seed}-{seq}",
                          "product_id": "p-wugong-kiwi-5kg", "category": s.category,
                          "quantity": rng.randrange(1, 4), "amount_fen": rng.randrange(990, 25_000),
                          "status": "paid"}
                    if rng.random() < 0.1:  # a refund a little later, in the same broadcast
                        later = min(ts + rng.randrange(5_000, 60_000), end)
                        pending.append((later + 300, seq * 10 + 1, {**ev, "ts": later, "status": "refunded"}))
                    if rng.random() < 0.1:  # the payment callback is delivered twice
                        pending.append((ts + 1_500, seq * 10 + 2, dict(ev)))
                delay = 200
                if rng.random() < 0.03:  # held back by the client: out of order, within lateness
                    delay = rng.randrange(2_000, 6_000)
                pending.append((ts + delay, len(pending) * 100 + 3, ev))
            for v in room:  # the broadcast ends: everyone leaves
                ev = {"schema_version": 1, "ts": end, "streamer_id": s.streamer_id,
                      "session_id": f"{s.streamer_id}-b{sess}", "type": "view", "viewer_id": v, "action": "leave"}
                pending.append((end + 200, len(pending) * 100 + 4, ev))
            t = end + rng.randrange(8, 40) * 60_000
    pending.sort(key=lambda x: (x[0], x[1]))
    records, events = [], []
    for i, (send_ts, _, ev) in enumerate(pending):
        ev = {"event_id": f"e{seed}-{i}", **ev}
        records.append(LogRecord(TOPIC[ev["type"]], ev["streamer_id"].encode(), send_ts, orjson.dumps(ev)))
        events.append(ev)
    return Log(records, events, streamers)


@dataclass
class Totals:
    gmv: int = 0
    orders: int = 0
    views: int = 0
    likes: int = 0
    viewers: set[str] = field(default_factory=set)
    buyers: set[str] = field(default_factory=set)
    close_window: int = -1
    close: int = 0

    def value(self, metric: str) -> float | int | None:
        if metric == "unique_viewers":
            return len(self.viewers)
        if metric == "buyers":
            return len(self.buyers)
        if metric == "concurrent_viewers":
            return self.close
        if metric == "conversion":
            return round(len(self.buyers) / len(self.viewers), 6) if len(self.viewers) >= MIN_AUDIENCE else None
        return getattr(self, metric)

    def rank_key(self, metric: str, sid: str) -> tuple:
        """Best first; a conversion under the minimum audience ranks after every shown one."""
        v = self.value(metric)
        return (v is None, -(v or 0), sid)


class Oracle:
    """Boards from the events in log order: orders once per (order_id, status), refunds subtract,
    the audience is a running enters - leaves count in log order that a leave never takes below zero,
    windows are 10 s of event time."""

    def __init__(self, events: Iterable[dict[str, Any]], streamers: list[Streamer]) -> None:
        self.dim = {s.streamer_id: s for s in streamers}
        self.facts: list[tuple[str, int, str, Any]] = []  # (streamer, ts, kind, payload)
        seen: set[tuple[str, str]] = set()
        running: dict[str, int] = defaultdict(int)
        for ev in events:
            sid, ts = ev["streamer_id"], ev["ts"]
            if ev["type"] == "view":
                running[sid] = running[sid] + 1 if ev["action"] == "enter" else max(0, running[sid] - 1)
                self.facts.append((sid, ts, ev["action"], (ev["viewer_id"], running[sid])))
            elif ev["type"] == "like":
                self.facts.append((sid, ts, "like", ev["count"]))
            elif (ev["order_id"], ev["status"]) not in seen:
                seen.add((ev["order_id"], ev["status"]))
                self.facts.append((sid, ts, ev["status"], (ev["amount_fen"], ev["viewer_id"])))
        self.newest_end = (max(ts for _, ts, _, _ in self.facts) // 10_000 + 1) * 10_000

    def totals(self, start: int, end: int, who: Iterable[str] | None = None) -> dict[str, Totals]:
        keep = set(who) if who is not None else None
        out: dict[str, Totals] = {}
        for sid, ts, kind, payload in self.facts:
            if not start <= ts < end or (keep is not None and sid not in keep):
                continue
            t = out.setdefault(sid, Totals())
            if kind in ("enter", "leave"):
                viewer, running = payload
                if kind == "enter":
                    t.views += 1
                    t.viewers.add(viewer)
                w = ts // 10_000
                if w >= t.close_window:  # the last view event (in log order) of the newest window
                    t.close_window, t.close = w, running
            elif kind == "like":
                t.likes += payload
            elif kind == "paid":
                t.orders += 1
                t.gmv += payload[0]
                t.buyers.add(payload[1])
            else:
                t.gmv -= payload[0]
        return out

    def window(self, window: str, as_of: int | None = None) -> tuple[int, int]:
        end = as_of if as_of is not None else self.newest_end
        if window == "today":
            day = datetime.fromtimestamp((end - 1) / 1000, SH).replace(hour=0, minute=0, second=0, microsecond=0)
            return int(day.timestamp() * 1000), end
        return end - {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}[window], end

    def board(self, metric: str, start: int, end: int, limit: int = 10, province: str = "") -> list[tuple[str, Any]]:
        who = [s for s, d in self.dim.items() if d.province.startswith(province)] if province else None
        totals = self.totals(start, end, who)
        ranked = sorted(totals.items(), key=lambda kv: kv[1].rank_key(metric, kv[0]))
        return [(sid, t.value(metric)) for sid, t in ranked[:limit]]

    def regions(self, metric: str, start: int, end: int, level: str = "county") -> list[tuple[tuple[str, ...], Any]]:
        cols = {"province": ("province",), "county": ("province", "county"), "category": ("category",)}[level]
        groups: dict[tuple[str, ...], Totals] = {}
        for sid, t in self.totals(start, end).items():
            d = self.dim[sid]
            g = groups.setdefault(tuple(getattr(d, c) for c in cols), Totals())
            g.gmv += t.gmv
            g.orders += t.orders
            g.views += t.views
            g.likes += t.likes
            g.viewers |= t.viewers
            g.buyers |= t.buyers
            g.close += t.close
        return [(k, g.value(metric)) for k, g in sorted(groups.items(), key=lambda kv: kv[1].rank_key(metric, kv[0]))]

    def sessions(self, as_of: int, gap_ms: int = 300_000) -> dict[str, int]:
        """Start (minute) of each streamer's live broadcast at ``as_of``: activity with no 5-min gap."""
        minutes: dict[str, set[int]] = defaultdict(set)
        for sid, ts, _, _ in self.facts:
            if as_of - 86_400_000 <= ts < as_of:
                minutes[sid].add(ts - ts % 60_000)
        out = {}
        for sid, ms in minutes.items():
            ms_sorted = sorted(ms)
            if ms_sorted[-1] < (as_of - gap_ms) - (as_of - gap_ms) % 60_000:
                continue
            start = ms_sorted[0]
            for prev, cur in zip(ms_sorted, ms_sorted[1:]):
                if cur - prev >= gap_ms:
                    start = cur
            out[sid] = start
        return out


def process_into(sink: Any, log: Log, settings: Any, chunk: int = 3_000, rollup_every: int = 3) -> None:
    """Run the log through the real processing core into ``sink`` (no broker): a flush after every
    ``chunk`` records, so open windows are re-flushed as new versions, and a rollup run every
    ``rollup_every`` flushes, so rollups see windows before and after they change."""
    n = len(log.records)

    def plan(i: int) -> bool | None:
        if (i + 1) % chunk and i + 1 != n:
            return None
        return ((i + 1 + chunk - 1) // chunk) % rollup_every == 0

    proc = drive(sink, settings, log.streamers, log.records, 4, plan)
    assert proc.counts["rejected"] == 0, proc.counts


def partition_of(record: LogRecord, partitions: int) -> tuple[str, int]:
    """(topic, partition) of a record in ``drive``: by its key, as a producer's partitioner would."""
    import zlib

    return record.topic, zlib.crc32(record.key) % partitions


def drive(sink: Any, settings: Any, streamers: list[Streamer], records: list[LogRecord], partitions: int,
          plan: Any, restart: bool = False) -> Any:
    """Records through the processing core into ``sink`` as a worker would take them: per (topic,
    partition by key) in log order, from where the store says each partition resumes (its start on an
    empty store). ``plan(i)`` after record i says: None, go on; False, flush (a batch per partition,
    ``sink.write`` of the snapshots, ``flush_done``); True, flush and run a rollup pass. The last record
    always flushes. ``restart``: a worker started again on a store that holds the streamers already.
    Returns the processor."""
    from streamproc.boards import dimension, rollup
    from streamproc.runtime.processor import Processor

    if not restart:
        sink.insert("streamers", dimension.COLUMNS, [astuple(s) for s in streamers])
    proc = Processor(settings, sink)
    resume = proc.assign([(t, p) for t in TOPIC.values() for p in range(partitions)])
    offsets: dict[tuple[str, int], int] = {}
    batches: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for i, r in enumerate(records):
        tp = partition_of(r, partitions)
        offsets[tp] = offsets.get(tp, -1) + 1
        if offsets[tp] >= resume[tp]:
            batches[tp].append(Rec(offsets[tp], r.key, r.value, r.ts))
        step = plan(i)
        if step is None and i + 1 < len(records):
            continue
        for (topic, part), recs in batches.items():
            proc.handle_batch(topic, part, recs)
        batches.clear()
        snaps = proc.snapshot()
        sink.write(snaps)
        proc.flush_done(snaps)
        if step:
            rollup.run_once(sink)
    return proc


def get_json(url: str) -> tuple[int, Any]:
    """GET a URL; (status, parsed JSON body), errors included."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def publish_and_settle(stack: Any, worker: Any, records: list[LogRecord], timeout_s: float = 120) -> None:
    """Publish records, wait until the worker flushed all of them and the rollups include them."""
    import asyncio
    import time
    from concurrent.futures import ThreadPoolExecutor

    from streamproc.logs.produce import publish
    from streamproc.verify.stack import wait_flushed

    with ThreadPoolExecutor(1) as pool:  # its own thread: the caller may be running an event loop (Playwright)
        sent = pool.submit(lambda: asyncio.run(publish(records, stack.settings))).result()
    wait_flushed([worker], sent.last_offsets, timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    while not get_json(worker.url + "/api/freshness")[1]["rollup_caught_up"]:
        if time.monotonic() > deadline:
            raise TimeoutError("rollups did not catch up")
        time.sleep(0.2)


def start_worker(stack: Any, tmp: Any, streamers: list[Streamer], **overrides: Any) -> Any:
    """A worker of ``stack`` that loads ``streamers`` at start, once it owns every event partition."""
    from streamproc.boards.dimension import streamers_to_jsonl

    path = tmp / "streamers.jsonl"
    streamers_to_jsonl(streamers, path)
    return started(stack.worker(streamers_file=str(path), **overrides))


@contextlib.contextmanager
def settled_worker(settings: Any, tmp: Any, log: Log) -> Iterator[tuple[Any, Any]]:
    """(stack, worker): a fresh stack of ``settings`` whose worker loaded the log's streamers and has flushed
    and rolled up all of its records; the worker is stopped, the stack closed, on the way out."""
    from streamproc.verify.stack import Stack

    with Stack(settings, tmp / "logs") as stack:
        worker = start_worker(stack, tmp, log.streamers)
        try:
            publish_and_settle(stack, worker, log.records)
            yield stack, worker
        finally:
            worker.stop()
