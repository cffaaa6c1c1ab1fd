"""Prometheus metrics of the worker (served at /metrics). Low cardinality: no per-streamer labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter("streamproc_events_consumed_total", "Messages consumed, by logical topic", ["topic"], registry=REGISTRY)
ACCEPTED = Counter("streamproc_events_accepted_total", "Events applied to a window, by event type", ["type"], registry=REGISTRY)
REJECTED = Counter("streamproc_events_rejected_total", "Messages dead-lettered, by reason", ["reason"], registry=REGISTRY)
LATE = Counter("streamproc_events_late_total", "Events later than the allowed lateness", registry=REGISTRY)
FLUSHES = Counter("streamproc_flushes_total", "Successful flushes to the sink", registry=REGISTRY)
FLUSH_FAILURES = Counter("streamproc_flush_failures_total", "Failed flush attempts", registry=REGISTRY)
FLUSH_ROWS = Counter("streamproc_flush_rows_total", "Window rows written to the sink", registry=REGISTRY)
FLUSH_SECONDS = Histogram("streamproc_flush_duration_seconds", "Time to write one flush", registry=REGISTRY,
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
BUFFERED = Gauge("streamproc_sink_buffered_rows", "Rows waiting for the sink", registry=REGISTRY)
PAUSED = Gauge("streamproc_consumption_paused", "1 while consumption waits for the sink", registry=REGISTRY)
OPEN_WINDOWS = Gauge("streamproc_open_windows", "Window accumulators in memory", registry=REGISTRY)
