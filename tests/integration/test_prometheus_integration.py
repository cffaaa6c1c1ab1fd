"""A real Prometheus scraping a real worker: counters read back exactly, the sink alert lives, and a
reader who fills the web port is alerted on while the scrapes go on.

Prometheus (Debian package ``prometheus``) scrapes the worker's metrics port every second with the
shipped scrape job and evaluates the shipped alert rules, with only their ``for:`` durations shortened.
In the first test the worker writes through HTTP to a separate ``streamproc clickhouse-server`` process,
which the test stops and restarts to take the sink away and give it back. Each run ends in an exact
reconcile against the SQL oracle.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import select
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.helpers import ROOT, assert_exact
from support.sockets import read_to_end

from streamproc.logs.logfile import read_log, write_log
from streamproc.logs.produce import PublishResult, publish
from streamproc.runtime.broker import free_port
from streamproc.settings import Settings
from streamproc.sim.generate import generate
from streamproc.store import open_sink
from streamproc.verify.chaos import wait_for
from streamproc.verify.demo import reconcile
from streamproc.verify.oracle import RuleSet, expected_deadletters, expected_tallies
from streamproc.verify.stack import Stack, event_partitions, wait_flushed

DEPLOY = ROOT / "deploy" / "prometheus"
SINK_ALERT = "StreamprocSinkFailing"
FULL_ALERT = "StreamprocApiConnectionsFull"


class Prometheus:
    """A Prometheus server process on a free loopback port, with its own TSDB directory."""

    def __init__(self, config: Path, workdir: Path) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: install the Debian package (scripts/debian-packages.txt, make test)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}"]
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Prometheus":
        self.proc = subprocess.Popen(self.args, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: self._get("/-/ready") is not None, 30, "Prometheus ready")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(20)

    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                body = r.read()
        except OSError:
            return None
        return json.loads(body) if body.startswith(b"{") else body

    def query(self, expr: str) -> dict[tuple, float]:
        """Instant vector: {sorted label items (without __name__): value}."""
        doc = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert doc and doc["status"] == "success", doc
        return {tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(r["value"][1])
                for r in doc["data"]["result"]}

    def value(self, expr: str) -> float | None:
        res = self.query(expr)
        assert len(res) <= 1, res
        return next(iter(res.values()), None)

    def scraped_after(self, wall_s: float) -> bool:
        """Whether Prometheus holds a scrape of the worker taken after ``wall_s`` (time.time())."""
        at = self.value('timestamp(up{job="streamproc"})')
        return at is not None and at > wall_s

    def alert_state(self, name: str) -> str:
        doc = self._get("/api/v1/rules?type=alert")
        rules = [r for g in doc["data"]["groups"] for r in g["rules"] if r["name"] == name]
        assert len(rules) == 1, doc
        return rules[0]["state"]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["data"]["alerts"]


def prometheus_config(tmp_path: Path, target: str) -> Path:
    """The shipped scrape job pointed at ``target``, 1 s intervals, and the shipped rules with short ``for:``."""
    rules, n = re.subn(r"^(\s+)for: \S+$", r"\1for: 3s", (DEPLOY / "alerts.yml").read_text(), flags=re.MULTILINE)
    assert n >= 8
    (tmp_path / "alerts.yml").write_text(rules)
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("alerting")
    (job,) = config["scrape_configs"]
    job.update(scrape_timeout="1s", static_configs=[{"targets": [target]}])
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def merge(*results: PublishResult) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for r in results:
        for tp, o in r.last_offsets.items():
            out[tp] = max(o, out.get(tp, -1))
    return out


def test_prometheus_reads_exact_counters_and_the_sink_alert_fires_and_resolves(settings: Settings,
                                                                              tmp_path: Path) -> None:
    # Two stretches of a day, the second 60 s of event time after the first, so that no window of the
    # second was open (or closed) in the first: the outage starts on fresh windows.
    n_a, n_b1, n_b2 = 10_000, 3_000, 3_000
    start = int(time.time() * 1000) - 180_000
    part_a = list(generate(n_a, seed=21, start_ms=start))
    part_b = list(generate(n_b1 + n_b2, seed=22, start_ms=max(r.ts for r in part_a) + 60_000))
    log_a, log = tmp_path / "a.jsonl.zst", tmp_path / "events.jsonl.zst"
    write_log(log_a, part_a)
    write_log(log, itertools.chain(part_a, part_b))
    # Idle windows stay in memory through the outage (idle_close_ms), so no event needs the sink to reopen
    # one: this test watches the flush path and what Prometheus makes of it.
    settings = settings.replace(max_buffered_rows=1_000, sink_retry_max_s=1.0, idle_close_ms=600_000,
                                log_format="json", metrics_port=free_port())

    with Stack(settings, tmp_path / "logs", shared_sink_port=free_port()) as stack:
        worker = stack.worker().start()
        target = f"{settings.metrics_host}:{settings.metrics_port}"  # as shipped: the metrics port
        try:
            with Prometheus(prometheus_config(tmp_path, target), tmp_path) as prom:
                worker.wait_assigned(event_partitions())
                sent_a = asyncio.run(publish(read_log(log_a), stack.settings))
                wait_flushed([worker], sent_a.last_offsets)
                flushed_at = time.time()

                # -- what Prometheus read equals what was produced, and what the oracle says --------------
                # events are counted as consumed before the flush that counts their orders: a scrape showing
                # every event consumed can predate that flush, so the figures are read from a later one
                wait_for(lambda: prom.scraped_after(flushed_at), 30, "a scrape after the last flush")
                wait_for(lambda: prom.value('sum(streamproc_events_consumed_total{job="streamproc"})') == n_a, 30,
                         "consumed count in Prometheus")
                consumed = prom.query("sum by (topic) (streamproc_events_consumed_total)")
                by_topic = {dict(k)["topic"]: v for k, v in consumed.items()}
                assert by_topic == dict(Counter(r.topic for r in part_a))
                assert worker.status()["counts"]["consumed"] == n_a
                sink = open_sink(stack.settings)
                try:
                    rules = RuleSet.from_settings(stack.settings)
                    want_reasons = Counter()
                    for (_, _, reason), n in expected_deadletters(sink.rows, str(log_a), rules).items():
                        want_reasons[reason] += n
                    tallies = expected_tallies(sink.rows, str(log_a), rules).values()
                finally:
                    sink.close()
                rejected = prom.query("streamproc_events_rejected_total > 0")
                got_reasons = {dict(k)["reason"]: v for k, v in rejected.items()}
                assert got_reasons == dict(want_reasons) and "late" in got_reasons
                assert prom.value("streamproc_events_late_total") == want_reasons["late"]
                paid_fen = sum(t["gmv_fen"] + t["refund_fen"] for t in tallies)
                assert prom.value("streamproc_orders_paid_total") == sum(t["orders_paid"] for t in tallies) > 0
                assert prom.value("streamproc_gmv_paid_fen_total") == paid_fen > 0
                assert prom.value("streamproc_gmv_refunded_fen_total") == sum(t["refund_fen"] for t in tallies)
                lag = prom.query("streamproc_consumer_lag_messages")
                assert len(lag) == event_partitions() and set(lag.values()) == {0.0}
                assert prom.value("streamproc_assigned_partitions") == event_partitions()
                assert prom.value("streamproc_flush_failures_total") == 0, "a flush failed with the sink up"
                assert prom.value("streamproc_freshness_seconds_count") >= prom.value("streamproc_flush_rows_total") > 0
                assert prom.value('streamproc_build_info{version!=""}') == 1
                assert prom.alert_state(SINK_ALERT) == "inactive"

                # -- the sink goes away while events keep coming -------------------------------------------
                paused_before = prom.value("streamproc_consumption_paused_seconds_total")  # part A may have paused
                stack.clickhouse.stop()
                outage_began = time.monotonic()
                records_b = iter(part_b)
                sent_b1 = asyncio.run(publish(itertools.islice(records_b, n_b1), stack.settings))
                wait_for(lambda: prom.value("streamproc_consumption_paused") == 1, 30, "consumption paused")
                seen_paused = time.monotonic()
                sent_b2 = asyncio.run(publish(records_b, stack.settings))
                states: list[str] = []

                def firing() -> bool:
                    states.append(prom.alert_state(SINK_ALERT))
                    return states[-1] == "firing"

                wait_for(firing, 90, f"{SINK_ALERT} firing")
                assert "pending" in states and states.index("pending") < states.index("firing"), states
                (alert,) = [a for a in prom.alerts() if a["labels"]["alertname"] == SINK_ALERT]
                assert alert["labels"]["instance"] == target and alert["labels"]["severity"] == "page"
                assert alert["annotations"]["summary"] == f"ClickHouse refuses the flushes of {target}"
                assert prom.value("streamproc_flush_failures_total") > 0
                assert prom.value("sum(streamproc_consumer_lag_messages)") > 0  # B2 waits in the topic
                assert prom.value("streamproc_sink_buffered_rows") >= settings.max_buffered_rows

                # -- the sink returns: the alert resolves, the backlog drains ----------------------------------
                held_at_least = time.monotonic() - seen_paused  # nothing resumes while the sink is away
                stack.clickhouse.start()
                wait_for(lambda: prom.alert_state(SINK_ALERT) == "inactive", 30, f"{SINK_ALERT} inactive again")
                wait_flushed([worker], merge(sent_a, sent_b1, sent_b2))
                total = n_a + n_b1 + n_b2
                wait_for(lambda: prom.value('sum(streamproc_events_consumed_total{job="streamproc"})') == total, 30,
                         "every event counted in Prometheus")
                wait_for(lambda: prom.value("streamproc_consumption_paused") == 0
                         and set(prom.query("streamproc_consumer_lag_messages").values()) == {0.0}, 30, "caught up")
                # the pause, read back once it ended: as long as it was seen to hold, shorter than the outage
                wait_for(lambda: prom.value("streamproc_consumption_paused_seconds_total") > paused_before, 30,
                         "pause counted")
                paused_s = prom.value("streamproc_consumption_paused_seconds_total") - paused_before
                assert held_at_least <= paused_s <= time.monotonic() - outage_began, (held_at_least, paused_s)
        finally:
            worker.stop()

        # JSON logs: Faust's lines and ours, one object per line, the outage told with metric names
        lines = [json.loads(line) for line in (tmp_path / "logs" / "worker-0.log").read_text().splitlines() if line]
        events = Counter(r.get("event") for r in lines)
        assert events["flush_failed"] > 0 and events["consumption_paused"] > 0, events
        assert any(r["logger"].startswith("faust") for r in lines)

        summary = reconcile(stack.settings, str(log))  # nothing lost or doubled across the outage
    assert_exact(summary)


def test_a_reader_who_fills_the_web_port_is_alerted_on_while_prometheus_scrapes_on_and_the_boards_stay_exact(
        settings: Settings, tmp_path: Path) -> None:
    """A reader holds every connection the web port may hold (STREAMPROC_API_MAX_CONNECTIONS) and keeps
    opening more. Scraped on the web port, as it was before the metrics port, a Prometheus that has to
    connect (it started, or the worker did, during the flood) gets 503 like anyone else: the worker reads
    as down (StreamprocWorkerDown) while it consumes, and every other alert is blind. Scraped on the
    metrics port, Prometheus reads the whole feed consumed during the flood, counts each refusal
    exactly, fires StreamprocApiConnectionsFull and not StreamprocWorkerDown; the boards reconcile
    exactly afterwards."""
    limit = 40
    settings = settings.replace(api_max_connections=limit, api_idle_timeout_s=300, metrics_port=free_port())
    records = list(generate(20_000, seed=43, start_ms=int(time.time() * 1000) - 120_000))
    log = tmp_path / "events.jsonl.zst"
    write_log(log, records)
    web = (settings.web_host, settings.web_port)

    def refused_once() -> None:
        answer = read_to_end(socket.create_connection(web, timeout=5), timeout_s=5)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]

    with Stack(settings, tmp_path / "logs") as stack:
        worker = stack.worker().start()
        try:
            worker.wait_assigned(event_partitions())
            # Held before Prometheus starts: a scrape needs a connection of its own only when it has none (the
            # first, or after a restart of either side); then, on a full web port, it would get a 503.
            held = [socket.create_connection(web, timeout=5) for _ in range(limit)]
            time.sleep(1)  # every held connection accepted before the flood's first refusal
            assert not [s for s in held if select.select([s], [], [], 0)[0]], "a held connection was refused"
            flood_began = time.time()
            target = f"{settings.metrics_host}:{settings.metrics_port}"
            with Prometheus(prometheus_config(tmp_path, target), tmp_path) as prom:
                wait_for(lambda: prom.value('up{job="streamproc"}') == 1, 30, "a first scrape")
                try:  # the web port's own /metrics: what a scrape there gets now
                    with urllib.request.urlopen(f"http://{web[0]}:{web[1]}/metrics", timeout=5):
                        pytest.fail("the web port answered while full")
                except urllib.error.HTTPError as exc:
                    assert exc.code == 503 and exc.headers["Retry-After"] == "1"
                refused = 1
                sent = asyncio.run(publish(read_log(log), stack.settings))  # the feed runs during the flood

                def alerted() -> bool:
                    nonlocal refused
                    for _ in range(5):
                        refused_once()
                        refused += 1
                    return prom.alert_state(FULL_ALERT) == "firing"

                wait_for(alerted, 60, f"{FULL_ALERT} firing")
                wait_for(lambda: prom.value('sum(streamproc_events_consumed_total{job="streamproc"})') == len(records),
                         60, "the whole feed consumed, read by Prometheus during the flood")
                wait_for(lambda: prom.value("streamproc_api_connections_refused_total") == refused, 10,
                         "every refusal counted")
                flooded_s = int(time.time() - flood_began)
                assert prom.value(f'min_over_time(up{{job="streamproc"}}[{flooded_s}s])') == 1
                assert prom.value(f'count_over_time(up{{job="streamproc"}}[{flooded_s}s])') >= flooded_s // 3
                assert prom.alert_state("StreamprocWorkerDown") == "inactive"
                (alert,) = [a for a in prom.alerts() if a["labels"]["alertname"] == FULL_ALERT]
                assert alert["labels"]["instance"] == target and alert["labels"]["severity"] == "ticket"
                assert prom.value("streamproc_api_connections") == limit
                for s in held:
                    s.close()
            wait_flushed([worker], sent.last_offsets)
        finally:
            worker.stop()
        assert_exact(reconcile(stack.settings, str(log)), "tallies_match", "boards_match")
