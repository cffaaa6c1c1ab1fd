"""The streamproc worker end to end — Kafka → tallies → ClickHouse — timed until the flush is complete.

A run starts when every event partition is assigned to the worker(s) (its ``/status`` lists them) and
ends when ``/status`` shows every partition flushed up to the last offset produced: the rows are then
in ClickHouse, visible to queries. CPU seconds and peak RSS are read from /proc for the worker
processes (and the shared ClickHouse server process in scale-out runs), over exactly that span.
"""

from __future__ import annotations

import asyncio
import bisect
import shutil
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamproc.logs.logfile import LogRecord
from streamproc.logs.produce import publish
from streamproc.runtime.broker import free_port
from streamproc.runtime.kafka import read_topic
from streamproc.runtime.topics import DEADLETTER, EVENT_TOPICS, create_topics, partitions_of
from streamproc.settings import Settings
from streamproc.verify.stack import Stack, WorkerProcess, event_partitions, flushed_offsets

from .corpus import Filled, fill, restamped, retimed
from .procstat import cpu_seconds, peak_rss_bytes

POLL_S = 0.05  # /status poll interval: the error of every start and end time below
STOP_S = 5  # a worker stopped after its run has flushed everything: no need to wait long for it


@dataclass
class Measured:
    """One consumer's figures over one run."""

    events: int
    seconds: float
    cpu_s: float
    peak_rss_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def eps(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "seconds": round(self.seconds, 3), "events_per_s": round(self.eps),
                "cpu_s": round(self.cpu_s, 2),
                "cpu_s_per_million": round(self.cpu_s * 1e6 / self.events, 2) if self.events else None,
                "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1), **self.extra}


def _status(w: WorkerProcess) -> dict[str, Any]:
    return (w.status() if w.alive() else None) or {}


def wait_assigned(workers: list[WorkerProcess], timeout_s: float = 180, stable_s: float = 0.0) -> float:
    """Until the workers together own every event partition, each some (and unchanged for ``stable_s``)."""
    want = event_partitions()
    deadline = time.monotonic() + timeout_s
    since, last = None, None
    while time.monotonic() < deadline:
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"worker exited with {w.proc.returncode if w.proc else None}; see its log")
        owned = [sorted(_status(w).get("partitions", {})) for w in workers]
        if all(owned) and sum(map(len, owned)) == want:
            now = time.monotonic()
            if owned != last:
                since, last = now, owned
            if now - since >= stable_s:
                return now
        else:
            since, last = None, None
        time.sleep(POLL_S / 2)
    raise TimeoutError(f"workers did not own all {want} partitions in {timeout_s}s")


class FlushLog:
    """Polls the workers' /status in a thread: when each partition's flushed offset moved, in wall time."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            flushed = flushed_offsets(self.workers)
            self.samples.append((time.time(), flushed))  # stamped once the poll has answered
            self._stop.wait(POLL_S)

    def __enter__(self) -> "FlushLog":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait_flushed(self, last_offsets: dict[tuple[str, int], int], timeout_s: float) -> float:
        """Monotonic time of the first sample that showed every partition flushed to its last offset."""
        want = {f"{t}/{p}": o for (t, p), o in last_offsets.items()}
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            while seen < len(self.samples):
                at, flushed = self.samples[seen]
                seen += 1
                if all(flushed.get(tp, -1) >= o for tp, o in want.items()):
                    return time.monotonic() - (time.time() - at)
            if not any(w.alive() for w in self.workers):
                raise RuntimeError("every worker exited; see their logs")
            time.sleep(POLL_S / 2)
        raise TimeoutError(f"not flushed in {timeout_s}s: want {want}")

    def visible_at(self, tp: str) -> tuple[list[int], list[float]]:
        """For one partition: the flushed offsets seen (non-decreasing) and when each was first seen."""
        offsets, times = [], []
        for at, flushed in self.samples:
            o = flushed.get(tp, -1)
            if not offsets or o > offsets[-1]:
                offsets.append(o)
                times.append(at)
        return offsets, times


def run_settings(base: Settings, work: Path, name: str, **changes: Any) -> Settings:
    """Settings for one run: its own data dir (a fresh chDB), consumer group and web port."""
    data = work / name
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    return base.replace(data_dir=str(data), group_id=f"bench-{name}-{uuid.uuid4().hex[:6]}", web_port=free_port(),
                        **changes)


def single_worker(base: Settings, filled: Filled, work: Path, name: str, timeout_s: float = 600) -> Measured:
    """One worker with embedded chDB drains what ``filled`` put on the topics of its prefix."""
    settings = run_settings(base, work, name, topic_prefix=filled.prefix)
    worker = WorkerProcess(settings, work / name / "worker.log").start()
    try:
        with FlushLog([worker]) as flushes:
            t0 = wait_assigned([worker])
            cpu0 = cpu_seconds(worker.proc.pid)
            t1 = flushes.wait_flushed(filled.last_offsets, timeout_s)
            cpu1 = cpu_seconds(worker.proc.pid)
        rss = peak_rss_bytes(worker.proc.pid)
        status = _status(worker)
        metrics_text = _get(worker.url + "/metrics")
    finally:
        worker.stop(timeout_s=STOP_S)
    open_windows = sum(p.get("open_windows", 0) for p in status.get("partitions", {}).values())
    return Measured(filled.events, t1 - t0, cpu1 - cpu0, rss,
                    {"messages": filled.messages, "open_windows_at_end": open_windows,
                     "counts": status.get("counts", {}), "flushes": _flush_figures(metrics_text)})


def scale_out(base: Settings, n_workers: int, records: list[LogRecord], log_path: Path, work: Path,
              timeout_s: float = 600) -> dict[str, Any]:
    """``n_workers`` processes in one group, sharing one ClickHouse (chDB over HTTP), then reconcile.

    The workers join first (so no rebalance falls inside the measurement); then the records are
    produced as fast as the broker takes them and the clock runs until all are flushed. The reconcile
    compares everything the shared sink holds, and the dead letters, with the SQL oracle of the log.
    """
    from streamproc.verify.demo import reconcile

    name = f"scale{n_workers}"
    settings = run_settings(base, work, name, kafka_bootstrap="", topic_prefix="", embedded_broker_port=free_port())
    with Stack(settings, work / name / "logs", shared_sink_port=free_port()) as stack:
        workers = [stack.worker(i, web_port=free_port()).start() for i in range(n_workers)]
        try:
            with FlushLog(workers) as flushes:
                wait_assigned(workers, stable_s=3.0)
                pids = [w.proc.pid for w in workers] + [stack.clickhouse.proc.pid]
                cpu0 = cpu_seconds(*pids)
                t0 = time.monotonic()
                filled = asyncio.run(fill(stack.settings, records))
                t1 = flushes.wait_flushed(filled.last_offsets, timeout_s)
                cpu1 = cpu_seconds(*pids)
            rss = [peak_rss_bytes(p) for p in pids]
            owned = {f"worker-{i}": len(_status(w).get("partitions", {})) for i, w in enumerate(workers)}
            dead = asyncio.run(read_topic(stack.settings, DEADLETTER))
        finally:
            for w in workers:
                w.stop(timeout_s=STOP_S)
        summary = reconcile(stack.settings, str(log_path), dead_letters=dead)
    m = Measured(filled.events, t1 - t0, cpu1 - cpu0, max(rss[:-1]))
    return {"workers": n_workers, **m.as_dict(), "partitions_per_worker": owned,
            "produce_seconds": round(filled.seconds, 3), "sink_server_peak_rss_mb": round(rss[-1] / 2**20, 1),
            "oracle_match": summary["oracle_match"], "mismatches": summary["mismatches"],
            "windows": summary["windows"], "dead_letter_match": summary.get("dead_letter_match")}


def freshness(base: Settings, records: list[LogRecord], rate: float, work: Path, prefix: str = "fresh.") -> dict[str, Any]:
    """Publish at ``rate`` to one worker; per event: visible time minus its record timestamp.

    The publisher stamps each record with the wall clock as it hands it to the producer; an event is
    visible at the first /status sample that shows its partition flushed past its offset (the insert
    into ClickHouse has returned). Also reported: the worker's own ``streamproc_freshness_seconds``
    histogram (per window row written: flush completion minus the newest event time in the row).
    """
    settings = run_settings(base, work, "freshness", topic_prefix=prefix)
    asyncio.run(create_topics(settings))
    worker = WorkerProcess(settings, work / "freshness" / "worker.log").start()
    try:
        with FlushLog([worker]) as flushes:
            wait_assigned([worker])
            start_ms = int(time.time() * 1000) + 3000  # retiming a few hundred thousand records takes ~1 s
            feed = retimed(records, start_ms, rate)
            time.sleep(max(0.0, start_ms / 1000 - time.time()))
            sent = asyncio.run(publish(restamped(feed), settings, rate=rate))
            flushes.wait_flushed(sent.last_offsets, 120)
        metrics_text = _get(worker.url + "/metrics")
    finally:
        worker.stop(timeout_s=STOP_S)
    lat = asyncio.run(_latencies(settings, flushes))
    lat.sort()
    return {"target_rate": round(rate), "achieved_rate": round(sent.count / sent.seconds), "events": sent.count,
            "publish_seconds": round(sent.seconds, 2), "flush_interval_s": settings.flush_interval_s,
            "p50_s": round(_q(lat, 0.50), 3), "p90_s": round(_q(lat, 0.90), 3), "p99_s": round(_q(lat, 0.99), 3),
            "max_s": round(lat[-1], 3), "poll_interval_s": POLL_S,
            "worker_histogram": _histogram_quantiles(metrics_text, "streamproc_freshness_seconds")}


async def _latencies(settings: Settings, flushes: FlushLog) -> list[float]:
    """Visible time minus record timestamp, for every record on the event topics."""
    out: list[float] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        for topic in EVENT_TOPICS:
            for part in range(partitions_of(topic)):
                offsets, times = flushes.visible_at(f"{topic}/{part}")
                tp = TopicPartition(settings.topic(topic), part)
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                last = offsets[-1] if offsets else -1
                while last >= 0 and await consumer.position(tp) <= last:
                    for rec in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                        i = bisect.bisect_left(offsets, rec.offset)
                        out.append(times[i] - rec.timestamp / 1000)
    finally:
        await consumer.stop()
    return out


def _q(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else float("nan")


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _flush_figures(text: str) -> dict[str, Any]:
    """How hard the sink worked: flushes, rows written, and rows per second of flushing time."""
    n = _metric(text, "streamproc_flush_duration_seconds_count")
    secs = _metric(text, "streamproc_flush_duration_seconds_sum")
    rows = _metric(text, "streamproc_flush_rows_total")
    if not n or secs is None or rows is None:
        return {}
    return {"count": int(n), "rows": int(rows), "seconds": round(secs, 2),
            "rows_per_flush_second": round(rows / secs) if secs else None, "mean_s": round(secs / n, 3)}


def _buckets(text: str, name: str) -> dict[float, float]:
    """A Prometheus histogram's cumulative counts by upper bound (``le``)."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def _histogram_quantiles(text: str, name: str, since: str = "") -> dict[str, Any] | None:
    """p50/p99 of a Prometheus histogram, interpolated within buckets as histogram_quantile does; over
    the observations after the scrape ``since`` if one is given (as ``increase()`` would)."""
    before = _buckets(since, name)
    buckets = sorted((le, n - before.get(le, 0.0)) for le, n in _buckets(text, name).items())
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]

    def quantile(q: float) -> float:
        rank = q * total
        lo_le, lo_n = 0.0, 0.0
        for le, n in buckets:
            if n >= rank:
                if le == float("inf"):
                    return lo_le
                return lo_le + (le - lo_le) * ((rank - lo_n) / (n - lo_n) if n > lo_n else 1.0)
            lo_le, lo_n = le, n
        return lo_le

    return {"observations": int(total), "p50_s": round(quantile(0.5), 3), "p99_s": round(quantile(0.99), 3)}
