"""The worker's metrics: Prometheus naming, and counts equal to what the input was (its JSON logs:
tests/integration/test_metrics_json_logs.py).

Expected counts come from the simulator's labels (what each generated record was meant to be: valid,
duplicate, late, or the rejection reason) and from the raw records, never from the processor itself.
"""

from __future__ import annotations

import platform
import re
from collections import Counter, defaultdict

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from streamproc import __version__, metrics
from streamproc.core.state import PartitionState
from streamproc.core.windows import WINDOW_MS, window_start
from streamproc.runtime.processor import Processor
from streamproc.settings import Settings
from streamproc.sim.generate import LABEL_LATE, MALFORMED_REASONS, generate_labeled

START_MS = 1_763_900_000_000
# Label names that would make one series per streamer, viewer, order or event.
UNBOUNDED = re.compile(r"streamer|viewer|session|order|product|event_id|offset")


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_names_follow_prometheus_conventions() -> None:
    families = list(metrics.REGISTRY.collect())
    assert len(families) >= 15
    for fam in families:
        # ours are streamproc_*; the process_* and python_info families are the client library's standard ones
        assert fam.name.startswith(("streamproc_", "process_", "python_")), fam.name
        names = {s.name for s in fam.samples}
        if fam.type == "counter":
            assert names <= {fam.name + "_total"}, names  # no _created series
        if fam.type == "histogram":
            assert fam.name.endswith(("_seconds", "_bytes", "_records")), fam.name  # a base unit, or what is counted
        labels = {k for s in fam.samples for k in s.labels} - {"le"}
        assert not any(UNBOUNDED.search(k) for k in labels), (fam.name, labels)
    assert sample("streamproc_build_info", version=__version__, python=platform.python_version()) == 1


def records_by_topic(labeled: list) -> dict[str, list[ConsumerRecord]]:
    """The generated log as each topic's partition 0 would deliver it (one streamer stays in order)."""
    out: dict[str, list[ConsumerRecord]] = defaultdict(list)
    for rec, _ in labeled:
        part = out[rec.topic]
        part.append(ConsumerRecord(rec.topic, 0, len(part), rec.ts, 0, rec.key, rec.value, None,
                                   len(rec.key or b""), len(rec.value), ()))
    return out


def test_batch_counts_and_flush_metrics_equal_the_input() -> None:
    labeled = list(generate_labeled(6000, seed=5, start_ms=START_MS))
    settings = Settings.from_env(env={})
    # The sink is only used to restore partitions; these start empty, so no sink is involved.
    proc = Processor(settings, sink=None)  # type: ignore[arg-type]
    parts = records_by_topic(labeled)
    for topic in parts:
        proc.states[(topic, 0)] = PartitionState(topic, 0, proc.rules)

    # what the log holds, from the labels and the raw bytes
    valid, invalid, reasons = Counter(), Counter(), Counter()
    first_orders: dict[tuple[str, str], int] = {}
    rows: dict[tuple[str, int, str], int] = {}  # (topic, window, streamer) -> newest event time
    for rec, label in labeled:
        if label in MALFORMED_REASONS:
            invalid[rec.topic] += 1
            reasons[label] += 1
            continue
        valid[rec.topic] += 1
        if label == LABEL_LATE:
            reasons["late"] += 1
            continue
        ev = orjson.loads(rec.value)
        key = (rec.topic, window_start(ev["ts"], WINDOW_MS), ev["streamer_id"])
        rows[key] = max(rows.get(key, 0), ev["ts"])
        if ev["type"] == "order":
            first_orders.setdefault((ev["order_id"], ev["status"]), ev["amount_fen"])
    assert set(reasons) >= {"late", "malformed_json", "negative_amount"} and first_orders

    names = ["streamproc_flushes_total", "streamproc_flush_rows_total", "streamproc_freshness_seconds_count",
             "streamproc_freshness_seconds_sum", "streamproc_flush_duration_seconds_count",
             "streamproc_orders_paid_total", "streamproc_orders_refunded_total", "streamproc_gmv_paid_fen_total",
             "streamproc_gmv_refunded_fen_total", "streamproc_events_late_total"]
    before = {n: sample(n) for n in names}
    before_consumed = {(t, ty): sample("streamproc_events_consumed_total", topic=t, type=ty)
                       for t in parts for ty in (metrics.TYPE_OF_TOPIC[t], metrics.INVALID)}
    before_rejected = {r: sample("streamproc_events_rejected_total", reason=r) for r in reasons}
    bounds = ("1.0", "60.0", "3600.0", "+Inf")
    before_buckets = {le: sample("streamproc_freshness_seconds_bucket", le=le) for le in bounds}

    for topic, recs in parts.items():
        for i in range(0, len(recs), 500):
            proc.handle_batch(topic, 0, recs[i:i + 500])
    now = START_MS / 1000 + 3600.0
    metrics.record_flush(proc.snapshot(), 0.25, now=now)

    def delta(name: str) -> float:
        return sample(name) - before[name]

    for topic in parts:
        kind = metrics.TYPE_OF_TOPIC[topic]
        assert sample("streamproc_events_consumed_total", topic=topic, type=kind) - before_consumed[(topic, kind)] \
            == valid[topic]
        assert sample("streamproc_events_consumed_total", topic=topic, type=metrics.INVALID) \
            - before_consumed[(topic, metrics.INVALID)] == invalid[topic]
    for reason, n in reasons.items():
        assert sample("streamproc_events_rejected_total", reason=reason) - before_rejected[reason] == n, reason
    assert delta("streamproc_events_late_total") == reasons["late"]

    assert delta("streamproc_flushes_total") == 1
    assert delta("streamproc_flush_duration_seconds_count") == 1
    assert sample("streamproc_flush_last_success_timestamp_seconds") == now
    assert delta("streamproc_flush_rows_total") == len(rows)
    assert delta("streamproc_freshness_seconds_count") == len(rows)
    assert delta("streamproc_freshness_seconds_sum") == pytest.approx(sum(now - ts / 1000 for ts in rows.values()))
    for le in bounds:  # every row in the bucket its age falls in (le: less than or equal)
        assert sample("streamproc_freshness_seconds_bucket", le=le) - before_buckets[le] == \
            sum(1 for ts in rows.values() if max(0.0, now - ts / 1000) <= float(le)), le
    paid = [amount for (_, status), amount in first_orders.items() if status == "paid"]
    refunded = [amount for (_, status), amount in first_orders.items() if status == "refunded"]
    assert delta("streamproc_orders_paid_total") == len(paid) and delta("streamproc_gmv_paid_fen_total") == sum(paid)
    assert delta("streamproc_orders_refunded_total") == len(refunded)
    assert delta("streamproc_gmv_refunded_fen_total") == sum(refunded)
