"""Every alert links to its runbook section with an absolute URL built from one configurable base.

alerts.yml writes each ``runbook_url`` as ``{{ $externalLabels.runbook_base }}#<anchor>``; prometheus.yml sets
``runbook_base`` once (global.external_labels). promtool expands the templates in alerts_test.yml with the
same external labels, so its expected annotations are the absolute links a notification carries; here we
check that they are, for every alert, and that every anchor is a section of RUNBOOK.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from support.helpers import ROOT

DEPLOY = ROOT / "deploy" / "prometheus"
TEMPLATE = "{{ $externalLabels.runbook_base }}#"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install the Debian packages in scripts/debian-packages.txt (make test does)"
    return path


def runbook_base() -> str:
    return yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["global"]["external_labels"]["runbook_base"]


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def anchor(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub, GitLab, Gitea) gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections() -> dict[str, str]:
    """Anchor -> heading of every '## ' section of RUNBOOK.md."""
    headings = re.findall(r"^## (.+)$", (DEPLOY / "RUNBOOK.md").read_text(), re.MULTILINE)
    return {anchor(h): h.strip() for h in headings}


def test_the_base_is_one_absolute_url_set_in_prometheus_yml() -> None:
    base = runbook_base()
    parts = urlsplit(base)
    assert parts.scheme == "https" and parts.netloc and not parts.fragment and base.endswith("RUNBOOK.md"), base
    # one place: no other file of the deployment spells the base out, and no rule spells out a URL of its own
    for path in (DEPLOY / "alerts.yml", DEPLOY / "alertmanager.yml", ROOT / "deploy" / "docker-compose.yml"):
        assert base not in path.read_text(), path


def test_every_alert_links_to_its_own_runbook_section() -> None:
    found = sections()
    names = [r["alert"] for r in alert_rules()]
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(TEMPLATE), (rule["alert"], url)
        fragment = url[len(TEMPLATE):]
        assert fragment in found, f"{rule['alert']}: no RUNBOOK.md section with the anchor #{fragment}"
        assert found[fragment] == rule["alert"], (rule["alert"], found[fragment])
    assert sorted(found.values()) == sorted(names), "a RUNBOOK.md section for every alert, and only for alerts"


def test_promtool_expands_every_alert_to_its_absolute_runbook_url() -> None:
    base = runbook_base()
    doc = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())
    want = {r["alert"]: base + "#" + anchor(r["alert"]) for r in alert_rules()}
    checked: set[str] = set()
    for group in doc["tests"]:
        assert group.get("external_labels") == {"runbook_base": base}, group["name"]
        for case in group.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                assert alert["exp_annotations"]["runbook_url"] == want[case["alertname"]], case["alertname"]
                checked.add(case["alertname"])
    assert checked == set(want), f"no firing case asserts the runbook_url of {set(want) - checked}"
    res = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], capture_output=True, text=True,
                         timeout=120, cwd=DEPLOY)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_promtool_fails_when_the_expanded_url_differs(tmp_path: Path) -> None:
    """The expected URLs are really compared: the same tests with another base must fail."""
    base = runbook_base()
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    text = (DEPLOY / "alerts_test.yml").read_text()
    assert text.count(f"runbook_base: {base}") == 1
    other = text.replace(f"runbook_base: {base}", "runbook_base: https://docs.example.invalid/streamproc/runbook")
    (tmp_path / "alerts_test.yml").write_text(other)
    res = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "docs.example.invalid/streamproc/runbook#streamprocworkerdown" in out, out
