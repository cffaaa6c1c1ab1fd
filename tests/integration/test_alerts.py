"""The shipped Prometheus files: valid for promtool and amtool, every alert unit-tested and documented.

promtool and amtool come from the Debian packages ``prometheus`` and ``prometheus-alertmanager``
(scripts/debian-packages.txt; `make test` installs them).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from support.helpers import ROOT

from streamproc import metrics
from streamproc.boards import changes, rollup  # noqa: F401  their metrics join REGISTRY on import, as in the worker

DEPLOY = ROOT / "deploy" / "prometheus"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: install the Debian packages in scripts/debian-packages.txt (make test does)"
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=DEPLOY)


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    res = run(tool("promtool"), "check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    res = run(tool("promtool"), "check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    res = run(tool("promtool"), "test", "rules", "alerts_test.yml")
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_every_alert_fires_in_a_unit_test_and_has_a_summary_and_a_runbook_section() -> None:
    tests = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    quiet = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if not c.get("exp_alerts")}
    sections = set(re.findall(r"^## (\w+)$", (DEPLOY / "RUNBOOK.md").read_text(), re.MULTILINE))
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names)) >= 8
    for rule in alert_rules():
        name = rule["alert"]
        assert name in fired and name in quiet, f"{name}: needs a unit test where it fires and one where it does not"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert rule["annotations"]["runbook_url"] == "{{ $externalLabels.runbook_base }}#" + name.lower(), name
        assert name in sections, f"{name}: no '## {name}' section in RUNBOOK.md"
        assert rule["labels"]["severity"] in ("page", "ticket"), name


def test_the_rules_read_only_metrics_the_worker_exports() -> None:
    exported = {s.name for fam in metrics.REGISTRY.collect() for s in fam.samples} | set(metrics.StateCollector._NAMES)
    text = (DEPLOY / "alerts.yml").read_text()
    used = set(re.findall(r"(?<![:\w])streamproc_[a-z0-9_]+", text))  # not recording rules (job:...)
    assert used and used <= exported, used - exported


@pytest.mark.parametrize("labels, receivers", [
    ({"alertname": "StreamprocGmvCollapse", "severity": "page", "team": "commerce"},
     "commerce-oncall,streamproc-pager"),
    ({"alertname": "StreamprocSinkFailing", "severity": "page"}, "streamproc-pager"),
    ({"alertname": "StreamprocDeadLetterSpike", "severity": "ticket"}, "streamproc-tickets"),
])
def test_alertmanager_routes_pages_tickets_and_business_alerts(labels: dict[str, str], receivers: str) -> None:
    amtool = tool("amtool")
    res = run(amtool, "check-config", "alertmanager.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    # the labels each alert really carries, so a relabelled rule cannot drift from its route
    rule = next(r for r in alert_rules() if r["alert"] == labels["alertname"])
    assert {k: v for k, v in labels.items() if k != "alertname"} == rule["labels"]
    res = run(amtool, "config", "routes", "test", "--config.file=alertmanager.yml",
              *(f"{k}={v}" for k, v in labels.items()))
    assert res.returncode == 0 and res.stdout.strip() == receivers, res.stdout + res.stderr
