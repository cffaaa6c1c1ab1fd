"""The streamproc worker end to end — Kafka → tallies → ClickHouse — timed until the flush is complete.

A single-worker run starts at the first message the worker holds (its ``/status`` counts the first
batch consumed; it owned every partition just before), the clock rule of every contestant in
``run.py``, and ends when ``/status`` shows every partition flushed up to the last offset produced:
the rows are then in ClickHouse, visible to queries. Scale-out runs start when the settled group's
records begin to be produced. CPU seconds and peak RSS are read from /proc for the worker processes
(and the ClickHouse server process where one is used), over exactly that span.
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
from streamproc.runtime.broker import free_port
from streamproc.runtime.kafka import read_topic
from streamproc.runtime.topics import DEADLETTER, EVENT_TOPICS, create_topics, partitions_of
from streamproc.settings import Settings
from streamproc.verify.stack import ClickHouseServerProcess, Stack, WorkerProcess, event_partitions, flushed_offsets

from .corpus import Filled, fill
from .feed import Feed
from .procstat import available_bytes, cpu_seconds, peak_rss_bytes, rss_bytes, self_cpu_seconds

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


def wait_first_message(workers: list[WorkerProcess], timeout_s: float = 180) -> float:
    """Until a worker's ``/status`` counts a consumed message: the first message it holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"worker exited with {w.proc.returncode if w.proc else None}; see its log")
            st = _status(w)
            if (st.get("counts") or {}).get("consumed", 0) + (st.get("counts") or {}).get("rejected", 0) > 0:
                return time.monotonic()
        time.sleep(POLL_S / 2)
    raise TimeoutError(f"no message consumed in {timeout_s}s")


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


def single_worker(base: Settings, filled: Filled, work: Path, name: str, timeout_s: float = 600,
                  external_store: bool = False) -> Measured:
    """One worker drains what ``filled`` put on the topics of its prefix: with embedded chDB, or with
    ``external_store`` through a ClickHouse server of its own (``streamproc clickhouse-server``, chDB
    behind the ClickHouse HTTP interface in another process), so that its RSS is the worker's alone."""
    settings = run_settings(base, work, name, topic_prefix=filled.prefix)
    server = None
    if external_store:
        server = ClickHouseServerProcess(settings, free_port(), work / name / "clickhouse.log").start()
        settings = settings.replace(clickhouse_url=server.url)
    worker = WorkerProcess(settings, work / name / "worker.log").start()
    try:
        with FlushLog([worker]) as flushes:
            owned = wait_assigned([worker])
            t0 = wait_first_message([worker])
            pids = [worker.proc.pid] + ([server.proc.pid] if server else [])
            cpu0 = [cpu_seconds(p) for p in pids]
            t1 = flushes.wait_flushed(filled.last_offsets, timeout_s)
            cpu1 = [cpu_seconds(p) for p in pids]
        rss = peak_rss_bytes(worker.proc.pid)
        server_rss = peak_rss_bytes(server.proc.pid) if server else None
        status = _status(worker)
        metrics_text = _get(worker.url + "/metrics")
    finally:
        worker.stop(timeout_s=STOP_S)
        if server:
            server.stop()
    open_windows = sum(p.get("open_windows", 0) for p in status.get("partitions", {}).values())
    extra: dict[str, Any] = {"messages": filled.messages, "open_windows_at_end": open_windows,
                             "counts": status.get("counts", {}), "flushes": _flush_figures(metrics_text),
                             "paused_for_sink_s": round(_metric(metrics_text, "streamproc_consumption_paused_seconds_total")
                                                        or 0.0, 2),
                             "rollups": rollup_figures(metrics_text, settings.rollup_interval_s),
                             "first_message_after_s": round(t0 - owned, 3)}
    if server:
        extra["store"] = "external (streamproc clickhouse-server)"
        extra["sink_server_peak_rss_mb"] = round(server_rss / 2**20, 1)
        extra["sink_server_cpu_s"] = round(cpu1[1] - cpu0[1], 2)
    return Measured(filled.events, t1 - t0, cpu1[0] - cpu0[0], rss, extra)


def rollup_figures(text: str, interval_s: float) -> dict[str, Any]:
    """From the worker's rollup metrics: runs, failures, and how many may have taken longer than the
    interval (their duration's bucket reaches past it), i.e. a pass that the next tick would wait for."""
    runs = _metric(text, "streamproc_rollup_duration_seconds_count")
    buckets = _buckets(text, "streamproc_rollup_duration_seconds")
    within = max((n for le, n in buckets.items() if le <= interval_s), default=0.0)
    failed = _labelled(text, "streamproc_rollup_runs_total", 'outcome="failed"')
    longest = min((le for le, n in buckets.items() if n >= (runs or 0)), default=None)
    seconds = _metric(text, "streamproc_rollup_duration_seconds_sum")
    return {"interval_s": interval_s, "runs": int(runs or 0), "failed": int(failed or 0),
            "seconds": None if seconds is None else round(seconds, 2),
            "runs_over_interval_at_most": int((runs or 0) - within),
            "longest_run_at_most_s": None if not runs or longest is None or longest == float("inf") else longest}


def _labelled(text: str, name: str, label: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return None


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
                cpu0 = [cpu_seconds(p) for p in pids]
                t0 = time.monotonic()
                filled = asyncio.run(fill(stack.settings, records))
                t1 = flushes.wait_flushed(filled.last_offsets, timeout_s)
                cpu1 = [cpu_seconds(p) for p in pids]
            rss = [peak_rss_bytes(p) for p in pids]
            owned = {f"worker-{i}": len(_status(w).get("partitions", {})) for i, w in enumerate(workers)}
            dead = asyncio.run(read_topic(stack.settings, DEADLETTER))
        finally:
            for w in workers:
                w.stop(timeout_s=STOP_S)
        summary = reconcile(stack.settings, str(log_path), dead_letters=dead)
    used = [b - a for a, b in zip(cpu0, cpu1)]
    m = Measured(filled.events, t1 - t0, sum(used), max(rss[:-1]))
    workers_cpu = sum(used[:-1])
    return {"workers": n_workers, **m.as_dict(),
            "workers_cpu_s": round(workers_cpu, 2),
            "workers_cpu_s_per_million": round(workers_cpu * 1e6 / filled.events, 2) if filled.events else None,
            "sink_server_cpu_s_per_million": round(used[-1] * 1e6 / filled.events, 2) if filled.events else None,
            "partitions_per_worker": owned,
            "produce_seconds": round(filled.seconds, 3), "sink_server_peak_rss_mb": round(rss[-1] / 2**20, 1),
            "oracle_match": summary["oracle_match"], "mismatches": summary["mismatches"],
            "windows": summary["windows"], "dead_letter_match": summary.get("dead_letter_match")}


def freshness(base: Settings, records: list[LogRecord], rate: float, work: Path, prefix: str = "fresh.") -> dict[str, Any]:
    """Publish at ``rate`` to one worker and time every message from outside, on two clocks.

    The publisher stamps each record with the wall clock as it hands it to the producer (the record
    timestamp: on Kafka's event topics the broker's append time) and moves its event time along with it
    (``corpus.Stamps``: the generator's own send delay kept). A message is visible at the first /status
    sample that shows its partition flushed past its offset (the insert into ClickHouse has returned).
    The probe's append clock is visible minus record timestamp, per message; its event clock is visible
    minus the payload's ``ts``. After the run the worker's /metrics is read: its own
    ``streamproc_append_freshness_seconds`` (per message, flush completion minus record timestamp) must
    agree with the probe's append clock, and ``streamproc_freshness_seconds`` (per window row, flush
    completion minus the newest event time in the row) is shown beside the probe's event clock.
    """
    settings = run_settings(base, work, "freshness", topic_prefix=prefix)
    asyncio.run(create_topics(settings))
    worker = WorkerProcess(settings, work / "freshness" / "worker.log").start()
    try:
        with FlushLog([worker]) as flushes:
            wait_assigned([worker])
            cpu0 = cpu_seconds(worker.proc.pid)
            with Feed(settings, records, rate) as fed:
                sent = fed.join()
            flushes.wait_flushed(sent.last_offsets, 120)
            cpu = cpu_seconds(worker.proc.pid) - cpu0
        metrics_text = _get(worker.url + "/metrics")
    finally:
        worker.stop(timeout_s=STOP_S)
    append, event, delay = asyncio.run(_latencies(settings, flushes))
    append.sort()
    event.sort()
    delay.sort()
    worker_append = _histogram_quantiles(metrics_text, "streamproc_append_freshness_seconds")
    worker_event = _histogram_quantiles(metrics_text, "streamproc_freshness_seconds")
    probe_p50, probe_p99 = _q(append, 0.50), _q(append, 0.99)
    agreement = None
    if worker_append and probe_p99 > 0 and probe_p50 > 0:
        agreement = {"p50_ratio": round(worker_append["p50_s"] / probe_p50, 3),
                     "p99_ratio": round(worker_append["p99_s"] / probe_p99, 3)}
    return {"target_rate": round(rate), "achieved_rate": round(sent.count / sent.seconds), "events": sent.count,
            "publish_seconds": round(sent.seconds, 2), "flush_interval_s": settings.flush_interval_s,
            # the worker's own CPU (its threads and the embedded store's) while fed: what half load costs it
            "worker_cpu_s_per_million": round(cpu * 1e6 / sent.count, 2) if sent.count else None,
            "clock": "append: record timestamp (stamped as sent) -> visible (flushed past its offset)",
            "p50_s": round(probe_p50, 3), "p90_s": round(_q(append, 0.90), 3), "p99_s": round(probe_p99, 3),
            "max_s": round(append[-1], 3), "poll_interval_s": POLL_S,
            "event_clock": {"events": len(event), "p50_s": round(_q(event, 0.5), 3), "p99_s": round(_q(event, 0.99), 3)},
            "producer_delay": {"p50_s": round(_q(delay, 0.5), 3), "p99_s": round(_q(delay, 0.99), 3)},
            "worker_histogram": worker_append, "worker_event_histogram": worker_event,
            "worker_vs_probe": agreement,
            # what a row waits for once taken: the flush (dead letters answered, then the inserts)
            "flushes": {**_flush_figures(metrics_text),
                        "duration": _histogram_quantiles(metrics_text, "streamproc_flush_duration_seconds")},
            "batches": _batch_figures(metrics_text)}


async def _latencies(settings: Settings, flushes: FlushLog) -> tuple[list[float], list[float], list[float]]:
    """For every record on the event topics: visible time minus its record timestamp (append clock),
    and for those whose payload has an integer ``ts``, visible time minus that (event clock) and the
    record timestamp minus it (the producer's delay)."""
    import orjson

    append: list[float] = []
    event: list[float] = []
    delay: list[float] = []
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
                        if rec.offset > last:
                            break
                        seen = times[bisect.bisect_left(offsets, rec.offset)]
                        append.append(seen - rec.timestamp / 1000)
                        try:
                            ts = orjson.loads(rec.value).get("ts")
                        except (orjson.JSONDecodeError, AttributeError):
                            continue
                        if type(ts) is int:
                            event.append(seen - ts / 1000)
                            delay.append((rec.timestamp - ts) / 1000)
    finally:
        await consumer.stop()
    return append, event, delay


def soak(base: Settings, records: list[LogRecord], rate: float, seconds: float, work: Path, broker_pid: int,
         sample_s: float = 1.0, min_available_bytes: int = 2 * 2**30) -> dict[str, Any]:
    """One worker with an external store fed at ``rate`` for ``seconds`` (the corpus over and over, each
    record stamped as sent), its RSS and the store server's sampled every ``sample_s``; the slope of a
    least-squares line over the samples after the first fifth (warm-up: windows, buffers and caches
    fill) says whether memory is flat. The end state (events consumed, order ids remembered, open
    windows, rows waiting for the sink) says what the memory holds, and the events consumed each minute
    say whether the worker kept up: a worker that stalled would look flat too.

    The embedded broker keeps every record in memory and Tansu implements no DeleteRecords (it closes the
    connection), so it grows by the whole feed: ~300 bytes an event as sent, 19 GiB after ten minutes at
    116k events/s, more than this machine can spare. The feed therefore compresses its batches with lz4,
    as producers in production commonly do, and Tansu keeps them as sent: about a third of the memory
    (300k corpus events: 68 MB of broker memory plain, 20 MB lz4, 15 MB zstd), for ~3 % more worker CPU
    in six interleaved freshness runs at 116k (p99 no different within the noise). The soak still stops
    early, and says so, when the machine's available memory falls below ``min_available_bytes``: past
    that the kernel starts reclaiming and the worker is measured on a machine that is swapping its page
    cache, or the OOM killer ends the run."""
    settings = run_settings(base, work, "soak", topic_prefix="soak.", produce_compression="lz4")
    asyncio.run(create_topics(settings))
    server = ClickHouseServerProcess(settings, free_port(), work / "soak" / "clickhouse.log").start()
    settings = settings.replace(clickhouse_url=server.url)
    worker = WorkerProcess(settings, work / "soak" / "worker.log").start()
    samples: list[tuple[float, int, int]] = []
    minutes: list[dict[str, Any]] = []  # at the start and after each minute: a leak climbs from the first
    stopped_early: str | None = None
    try:
        wait_assigned([worker])
        with Feed(settings, records, rate, cycle=True) as fed:
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < seconds:
                samples.append((elapsed, rss_bytes(worker.proc.pid), rss_bytes(server.proc.pid)))
                if elapsed >= 60 * len(minutes):
                    st = _status(worker)
                    minutes.append({"worker_rss_mb": round(samples[-1][1] / 2**20),
                                    "broker_rss_mb": round(rss_bytes(broker_pid) / 2**20),
                                    "sent": fed.result.count,
                                    "consumed": (st.get("counts") or {}).get("consumed"),
                                    # what the worker's memory holds: bounded state fills, a leak climbs
                                    **_held(st),
                                    # who had the two cores: the feed runs in this process
                                    "cpu_s": {k: round(v, 1) for k, v in (
                                        ("worker", cpu_seconds(worker.proc.pid)),
                                        ("store", cpu_seconds(server.proc.pid)),
                                        ("broker", cpu_seconds(broker_pid)), ("feed", self_cpu_seconds()))}})
                if (left := available_bytes()) < min_available_bytes:
                    stopped_early = (f"after {elapsed:.0f} s: {left / 2**30:.1f} GiB of memory left, "
                                     f"the broker holding {rss_bytes(broker_pid) / 2**30:.1f} GiB (every record)")
                    break
                time.sleep(sample_s)
            ran_s = time.monotonic() - began
            sent = fed.result.count
        status = _patient_status(worker)
    finally:
        worker.stop(timeout_s=STOP_S)
        server.stop()
    kept = samples[len(samples) // 5:] or samples
    worker_mb = [r / 2**20 for _, r, _ in kept]
    server_mb = [r / 2**20 for _, _, r in kept]
    t_min = [t / 60 for t, _, _ in kept]
    median = sorted(worker_mb)[len(worker_mb) // 2] if worker_mb else None
    consumed = (status.get("counts") or {}).get("consumed")
    return {"seconds": round(ran_s, 1), "seconds_planned": round(seconds, 1), "stopped_early": stopped_early,
            "rate": round(rate), "feed_compression": settings.produce_compression, "events_sent": sent,
            "events_consumed": consumed,
            "events_behind_at_end": sent - consumed if consumed is not None else None,
            **_held(status),
            "samples": len(samples), "warmup_samples_left_out": len(samples) - len(kept),
            "worker_rss_mb": {"first": round(samples[0][1] / 2**20, 1) if samples else None,
                              "median": round(median, 1) if median else None,
                              "last": round(samples[-1][1] / 2**20, 1) if samples else None},
            "worker_slope_mb_per_min": _slope(t_min, worker_mb),
            "each_minute": minutes,
            "sink_server_rss_mb_last": round(samples[-1][2] / 2**20, 1) if samples else None,
            "sink_server_slope_mb_per_min": _slope(t_min, server_mb)}


def _held(status: dict[str, Any]) -> dict[str, Any]:
    """What a worker's /status says its memory holds: the rows waiting for the sink, and the state, each
    part bounded by a setting (open windows by the watermarks and the idle close, closed windows kept by
    ``closed_windows_kept`` per partition, order ids by the dedupe horizon)."""
    parts = (status.get("partitions") or {}).values()
    return {"buffered_rows": status.get("buffered_rows"),
            **{k: sum(p.get(k, 0) for p in parts) for k in ("open_windows", "closed_windows_kept", "order_ids")}}


def _patient_status(w: WorkerProcess, tries: int = 10) -> dict[str, Any]:
    """The worker's /status after a soak, asked until it answers: on a loaded machine one request of
    2 s can go unanswered, and a soak without its end state cannot say whether the worker kept up."""
    for _ in range(tries):
        st = _status(w)
        if st:
            return st
        time.sleep(1)
    return {}


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs."""
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den, 3) if den else None


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


def _batch_figures(text: str) -> dict[str, Any]:
    """The batches handed to the windows, every topic together: a live feed brings many small ones."""
    def total(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))
    n = total("streamproc_batch_records_count")
    return {"count": int(n), "mean_records": round(total("streamproc_batch_records_sum") / n, 1)} if n else {}


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
