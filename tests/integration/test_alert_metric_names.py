"""Every metric the alert rules and the Grafana Prometheus panels read is one a real worker exposes.

A worker (embedded broker, chDB) takes a few thousand events, so that every gauge computed at scrape time
has samples too (consumer lag, watermark lag); its /metrics page is parsed, and each metric name in the
expressions of alerts.yml (alerts and recording rules) and of the dashboards' Prometheus targets must be
on it, or be a series Prometheus makes itself (``up``) or a recording rule of alerts.yml. A renamed or
removed metric fails here instead of leaving an alert that can never fire.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from support.helpers import ROOT, feed_and_flush, recent_log, started

from streamproc.settings import Settings
from streamproc.verify.stack import Stack

DEPLOY = ROOT / "deploy"
PROMETHEUS_MADE = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                   "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
            "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, aggregations,
    keywords, label names (in braces or grouping lists), durations or numbers."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"#[^\n]*", "", e)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    return {m.group(1) for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", e)
            if not m.group(2) and m.group(1).lower() not in KEYWORDS}


def rules() -> list[dict]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def grafana_prometheus_exprs() -> dict[str, str]:
    out = {}
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource") or {}
                if ds.get("type") == "prometheus":
                    out[f"{path.name}: {panel['title']} ({target['refId']})"] = target["expr"]
    return out


def sample_names(text: str) -> set[str]:
    return {re.match(r"[^\s{]+", line).group(0) for line in text.splitlines() if line and not line.startswith("#")}


def exposed(text: str) -> set[str]:
    """Metric names of a Prometheus text exposition: its samples, and each declared family with the series
    names of its type (a family without samples yet still counts)."""
    names = sample_names(text)
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {f"{name}_sum", f"{name}_count"}
    return names


def test_the_name_reader_reads_promql() -> None:
    rule = next(r for r in rules() if r.get("alert") == "StreamprocNotFlushing")
    assert metric_names(rule["expr"]) == {"streamproc_flush_last_success_timestamp_seconds",
                                          "streamproc_events_consumed_total", "streamproc_consumer_lag_messages"}
    assert metric_names('sum by (le) (rate(a_bucket{job="x", le=~"1|2"}[5m] offset 1h)) * 0.6 > bool 1e3 '
                        'and on (job) group_left (instance) b:rec:rate5m unless c') == {"a_bucket", "b:rec:rate5m", "c"}


def test_alert_rules_and_grafana_panels_read_metrics_a_real_worker_exposes(settings: Settings, tmp_path: Path) -> None:
    used = {f"alerts.yml: {r.get('alert') or r.get('record')}": metric_names(r["expr"]) for r in rules()}
    used.update({where: metric_names(expr) for where, expr in grafana_prometheus_exprs().items()})
    recorded = {r["record"] for r in rules() if "record" in r}
    every = set().union(*used.values())
    assert len(every) >= 12 and any(w.startswith("leaderboards.json") for w in used)

    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker())
        try:
            feed_and_flush(stack.settings, worker, recent_log(tmp_path / "events.jsonl.zst", 3_000, seed=7))
            text = worker.get("/metrics", timeout_s=10).decode()
        finally:
            worker.stop()

    names = exposed(text)
    # the gauges computed at scrape time are there with samples, not only declared
    assert {"streamproc_consumer_lag_messages", "streamproc_watermark_lag_seconds",
            "streamproc_rollup_lag_seconds"} <= sample_names(text)
    missing = {where: sorted(n - names - recorded - PROMETHEUS_MADE) for where, n in used.items()}
    assert not {w: m for w, m in missing.items() if m}, "metrics read but not exposed by the worker"
