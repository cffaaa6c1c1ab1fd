"""Prometheus metrics of the worker, served at /metrics from ``REGISTRY``.

Names follow Prometheus conventions: base units (seconds), ``_total`` on counters, ``_seconds`` on
durations; money is integer fen (``_fen_total``) as everywhere in streamproc. Labels are bounded (topic,
event type, reason, partition, a web route's template and status): nothing per streamer, viewer, order or
client path, so the series count does not grow with the platform. Besides ``streamproc_*``, the
registry carries the standard ``process_*`` and ``python_info`` of prometheus-client.

None of this runs per event. The processor counts a fetched batch in plain ints and adds it here once
(``count_batch``); everything about a flush is recorded after the flush (``record_flush``); gauges that
describe the state in memory (open windows, lag, watermarks) are computed only when Prometheus scrapes
(``STATE``). Counters for every label value exist from the start at 0, so ``rate()`` and ``increase()``
see the first event, and an absent series means a missing worker, not a quiet one.
"""

from __future__ import annotations

import bisect
import math
import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streamproc import __version__
from streamproc.core.state import MAX_TS, ORDER_COLUMNS, Snapshot
from streamproc.ingest.events import REASONS, TOPIC_OF_TYPE, TRANSPORT_REASONS

REGISTRY = CollectorRegistry(auto_describe=True)
EXPOSITION_TYPE = CONTENT_TYPE_LATEST.split(";")[0]  # the text format's media type, as /metrics answers it


def exposition() -> bytes:
    """Every metric in Prometheus's text format: the body of ``/metrics`` on the web and metrics ports."""
    return generate_latest(REGISTRY)

disable_created_metrics()  # a `_created` twin of every counter doubles the series and no rule reads it

TYPE_OF_TOPIC = {topic: kind for kind, topic in TOPIC_OF_TYPE.items()}
INVALID = "invalid"  # the type label of a message that failed validation (it has no trustworthy type)

# -- input --------------------------------------------------------------------------------------------
CONSUMED = Counter(
    "streamproc_events_consumed_total",
    "Messages taken from an event topic, by logical topic and event type (type=invalid: failed validation)",
    ["topic", "type"], registry=REGISTRY)
REJECTED = Counter("streamproc_events_rejected_total", "Messages dead-lettered, by reason code", ["reason"],
                   registry=REGISTRY)
BATCH_RECORDS = Histogram(
    "streamproc_batch_records", "Records of one partition handed to the windows at once, by logical topic: one poll's "
    "share of a fetch, at most STREAMPROC_MAX_POLL_RECORDS; large while the worker catches up", ["topic"],
    buckets=(1, 10, 100, 250, 500, 1000, 2500, 5000, 10_000, 20_000, 50_000), registry=REGISTRY)
LATE = Counter("streamproc_events_late_total",
               "Valid events older than their streamer's watermark minus the allowed lateness (dead-lettered)",
               registry=REGISTRY)
LATE_CORRECTIONS = Counter("streamproc_late_corrections_total",
                           "Orders counted although later than the lateness (within the dedupe horizon): each "
                           "corrects a past window", registry=REGISTRY)

# -- output -------------------------------------------------------------------------------------------
WINDOWS_REOPENED = Counter(
    "streamproc_windows_reopened_total", "Closed windows reopened by a late event (a late payment, mostly), by where "
    "their last snapshot came from: memory (kept after closing, STREAMPROC_CLOSED_WINDOWS_KEPT) or store (a read)",
    ["source"], registry=REGISTRY)
_REOPENED = (WINDOWS_REOPENED.labels("memory"), WINDOWS_REOPENED.labels("store"))
FLUSHES = Counter("streamproc_flushes_total", "Flushes that reached the sink", registry=REGISTRY)
FLUSH_FAILURES = Counter("streamproc_flush_failures_total",
                         "Flush attempts the sink refused or that failed; the rows are kept and retried",
                         registry=REGISTRY)
DEADLETTER_SEND_FAILURES = Counter(
    "streamproc_deadletter_send_failures_total",
    "Dead letters the broker did not take (refused, unreachable, timed out); each is kept and sent again, and no "
    "checkpoint passes it until it is", registry=REGISTRY)
FLUSH_ROWS = Counter("streamproc_flush_rows_total", "Window rows written to the sink", registry=REGISTRY)
FLUSH_SECONDS = Histogram("streamproc_flush_duration_seconds", "Wall time of one successful flush",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
FLUSH_LAST_SUCCESS = Gauge("streamproc_flush_last_success_timestamp_seconds",
                           "Unix time of the last successful flush (0: none yet)", registry=REGISTRY)
SINK_TIMEOUTS = Counter("streamproc_sink_timeouts_total",
                        "Calls to a ClickHouse server with no answer within STREAMPROC_CLICKHOUSE_TIMEOUT_S "
                        "(a hung server; embedded chDB has no timeout)", registry=REGISTRY)


class FlushHistogram(Collector):
    """A histogram observed a whole flush at a time.

    ``Histogram.observe`` takes a lock and walks the buckets per call; with 100k active streamers a
    flush carries 100k+ window rows and that cost a few per cent of the worker. Here one flush is
    bucketed in a plain loop and added under one lock. Exposed exactly as a prometheus-client histogram.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        counts, total, bounds, where = [0] * len(self.counts), 0.0, self.bounds, bisect.bisect_left
        for v in values:
            counts[where(bounds, v)] += 1  # le is "less than or equal": the first bound >= v
            total += v
        with self._lock:
            self.counts = [a + b for a, b in zip(self.counts, counts)]
            self.total += total

    def observe_spans(self, spans: Iterable[tuple[int, int, int]], now: float) -> None:
        """``(n, first_ms, last_ms)``: ``n`` observations of ``now`` minus timestamps spread evenly from
        ``first_ms`` to ``last_ms`` (a fetched batch of messages), bucketed by arithmetic, not one by one."""
        bounds = self.bounds
        counts, total = [0] * len(self.counts), 0.0
        for n, first_ms, last_ms in spans:
            lo, hi = sorted((max(0.0, now - last_ms / 1000), max(0.0, now - first_ms / 1000)))
            width, below = hi - lo, 0
            total += n * (lo + hi) / 2
            for i, bound in enumerate(bounds):
                if bound < lo:
                    continue
                # how many of the n evenly spread values (lo + width * (j + 0.5) / n) are <= bound
                k = n if width == 0 or bound >= hi else min(n, max(0, math.floor(n * (bound - lo) / width - 0.5) + 1))
                counts[i] += k - below
                below = k
                if k == n:
                    break
            counts[-1] += n - below
        with self._lock:
            self.counts = [a + b for a, b in zip(self.counts, counts)]
            self.total += total

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self.counts), self.total
        cumulative, buckets = 0, []
        for bound, n in zip([*self.bounds, float("inf")], counts):
            cumulative += n
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


FRESHNESS = FlushHistogram(
    "streamproc_freshness_seconds",
    "Event clock, per window row written: flush completion (row visible) minus the newest event time in the row "
    "(producer delay included)",
    buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300, 900, 3600), registry=REGISTRY)
APPEND_FRESHNESS = FlushHistogram(
    "streamproc_append_freshness_seconds",
    "Append clock, per message: flush completion (visible on the boards) minus its record timestamp (the broker's "
    "append time on topics with LogAppendTime); spread evenly within each fetched batch",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 30, 60, 120, 300, 900, 3600),
    registry=REGISTRY)
PAUSED = Gauge("streamproc_consumption_paused", "1 while consumption waits for the sink to drain its buffer",
               registry=REGISTRY)
PAUSED_SECONDS = Counter("streamproc_consumption_paused_seconds_total",
                         "Wall time consumption waited for the sink, added when each pause ends", registry=REGISTRY)

# -- group membership ---------------------------------------------------------------------------------
REBALANCES = Counter("streamproc_rebalances_total",
                     "Partition assignments and revocations received from the consumer group", ["phase"],
                     registry=REGISTRY)

# -- business: what the platform sells, once visible in the sink ---------------------------------------
ORDERS_PAID = Counter("streamproc_orders_paid_total", "Paid orders counted (first occurrence of each order id)",
                      registry=REGISTRY)
ORDERS_REFUNDED = Counter("streamproc_orders_refunded_total", "Refunds counted (first occurrence of each order id)",
                          registry=REGISTRY)
GMV_PAID = Counter("streamproc_gmv_paid_fen_total", "Amount of counted paid orders, fen", registry=REGISTRY)
GMV_REFUNDED = Counter("streamproc_gmv_refunded_fen_total", "Amount of counted refunds, fen", registry=REGISTRY)

# -- the web server (counted by web/errors.py, which sees every response) -------------------------------
API_REQUESTS = Counter(
    "streamproc_api_requests_total",
    "Responses of the worker's web server (API, page, /status, /metrics), by route template and HTTP status; "
    "route=unmatched: no route serves the path, route=malformed: refused before routing", ["route", "status"],
    registry=REGISTRY)
API_SECONDS = Histogram(
    "streamproc_api_request_seconds", "Time to answer a request of the worker's web server, by route template",
    ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
API_CONNECTIONS = Gauge("streamproc_api_connections", "Connections the worker's web server holds open",
                        registry=REGISTRY)
API_CONNECTIONS_REFUSED = Counter(
    "streamproc_api_connections_refused_total",
    "Connections answered 503 and closed at once: the web server held STREAMPROC_API_MAX_CONNECTIONS already",
    registry=REGISTRY)
METRICS_CONNECTIONS_REFUSED = Counter(
    "streamproc_metrics_connections_refused_total",
    "Connections the metrics listener (STREAMPROC_METRICS_PORT) answered 503 and closed: it held its bound already",
    registry=REGISTRY)
EVENT_LOOP_LAG = Histogram(
    "streamproc_event_loop_lag_seconds", "How late the worker's event loop woke a probe due every 0.1 s: the "
    "consumer, flushes, timers and API share that loop, so a stall delays them all",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY)


def count_response(route: str, status: int, seconds: float) -> None:
    """One response of the web server. ``route`` is a route's template, never a client's path: the
    label must stay bounded whatever clients ask."""
    API_REQUESTS.labels(route, str(status)).inc()
    API_SECONDS.labels(route).observe(seconds)


# -- the process: process_* (CPU, memory, open files; Linux) and python_info, as on the default registry,
# which this custom registry would otherwise go without
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

BUILD_INFO = Gauge("streamproc_build_info", "Version of streamproc and Python; always 1", ["version", "python"],
                   registry=REGISTRY)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)

# Children resolved once: labels() costs a lock and a dict lookup per call.
_CONSUMED = {topic: (CONSUMED.labels(topic, kind), CONSUMED.labels(topic, INVALID))
             for topic, kind in TYPE_OF_TOPIC.items()}
_REJECTED = {reason: REJECTED.labels(reason) for reason in REASONS + TRANSPORT_REASONS}
for _phase in ("assigned", "revoked"):
    REBALANCES.labels(_phase)

_STATUS = ORDER_COLUMNS.index("status")
_AMOUNT = ORDER_COLUMNS.index("amount_fen")


def count_batch(topic: str, accepted: int, rejected: int, late: int) -> None:
    """Add one batch of ``topic``: ``rejected`` includes the ``late`` ones, which are valid events."""
    valid, invalid = _CONSUMED[topic]
    valid.inc(accepted + late)
    if rejected > late:
        invalid.inc(rejected - late)
    if late:
        LATE.inc(late)


def count_reopens(from_memory: int, from_store: int) -> None:
    _REOPENED[0].inc(from_memory)
    _REOPENED[1].inc(from_store)


def count_rejection(reason: str) -> None:
    _REJECTED[reason].inc()


def record_flush(snaps: Sequence[Snapshot], duration_s: float, now: float | None = None,
                 appended: Iterable[tuple[int, int, int]] = ()) -> int:
    """Everything a successful flush tells: rows, duration, freshness and the orders it made visible.

    Two clocks (docs/OPERATIONS.md, "Observability"). Append clock: once per message this flush made visible, ``now``
    minus its record timestamp; ``appended`` holds ``(messages, first_ms, last_ms)`` per applied batch
    (``Processor.take_appended``), spread evenly between its first and last record timestamp. Event
    clock: once per window row, ``now`` (the flush has completed, the row is visible) minus the newest
    event time in that row, i.e. how old the newest data of each updated window was when readers could
    first see it. Clock skew that puts a timestamp ahead of ``now`` counts as 0.
    Orders are counted here rather than when applied, so the counters say what the sink holds.
    Returns the number of window rows written.
    """
    now = time.time() if now is None else now
    FRESHNESS.observe_many([max(0.0, now - ms / 1000) for snap in snaps for ms in snap.slots[MAX_TS]])
    APPEND_FRESHNESS.observe_spans(appended, now)
    rows = 0
    paid = refunded = paid_fen = refunded_fen = 0
    for snap in snaps:
        rows += len(snap.keys)
        for order in snap.orders:
            if order[_STATUS] == "paid":
                paid += 1
                paid_fen += order[_AMOUNT]
            else:
                refunded += 1
                refunded_fen += order[_AMOUNT]
    FLUSHES.inc()
    FLUSH_ROWS.inc(rows)
    FLUSH_SECONDS.observe(duration_s)
    FLUSH_LAST_SUCCESS.set(now)
    for counter, n in ((ORDERS_PAID, paid), (ORDERS_REFUNDED, refunded), (GMV_PAID, paid_fen),
                       (GMV_REFUNDED, refunded_fen)):
        if n:
            counter.inc(n)
    return rows


# -- state read at scrape time --------------------------------------------------------------------------


@dataclass
class StateView:
    """What the worker holds in memory right now; built only when Prometheus scrapes."""

    open_windows: int = 0
    active_streamers: int = 0
    assigned_partitions: int = 0
    buffered_rows: int = 0
    newest_event_ms: dict[str, int] = field(default_factory=dict)  # logical topic -> newest accepted event time
    consumer_lag: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> messages


class StateSource(Protocol):
    def metric_state(self) -> StateView: ...


class StateCollector(Collector):
    """Gauges computed from a ``StateSource`` (the running worker) at each scrape."""

    _NAMES = ("streamproc_open_windows", "streamproc_active_streamers", "streamproc_assigned_partitions",
              "streamproc_sink_buffered_rows", "streamproc_watermark_lag_seconds",
              "streamproc_consumer_lag_messages")

    def __init__(self) -> None:
        self.source: StateSource | None = None

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, "") for name in self._NAMES]

    def collect(self) -> Iterator[Metric]:
        if self.source is None:
            return
        v = self.source.metric_state()
        yield GaugeMetricFamily("streamproc_open_windows", "Window accumulators in memory", value=v.open_windows)
        yield GaugeMetricFamily("streamproc_active_streamers", "Streamers with at least one open window",
                                value=v.active_streamers)
        yield GaugeMetricFamily("streamproc_assigned_partitions", "Event-topic partitions this worker owns",
                                value=v.assigned_partitions)
        yield GaugeMetricFamily("streamproc_sink_buffered_rows",
                                "Rows waiting for the sink (window rows, viewer rows, order rows)",
                                value=v.buffered_rows)
        now = time.time()
        wm = GaugeMetricFamily("streamproc_watermark_lag_seconds",
                               "Wall clock minus the newest accepted event time, by topic", labels=["topic"])
        for topic, ms in sorted(v.newest_event_ms.items()):
            wm.add_metric([topic], now - ms / 1000)
        yield wm
        lag = GaugeMetricFamily("streamproc_consumer_lag_messages",
                                "Partition high watermark (from fetches) minus the next offset to apply",
                                labels=["topic", "partition"])
        for (topic, part), n in sorted(v.consumer_lag.items()):
            lag.add_metric([topic, str(part)], n)
        yield lag


STATE = StateCollector()
REGISTRY.register(STATE)
