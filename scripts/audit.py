"""Audit the installed dependencies for known vulnerabilities with pip-audit; run by `make test`.

Fails on any known vulnerability that is not explained in ``scripts/audit-ignore.txt`` (one
``ID  # why`` per line). pip-audit reports a package it could not look up as skipped, not as safe, and
so does this script: it prints how many packages were actually checked. Where the vulnerability
service is out of reach (an offline mirror), nothing can be checked; that is a loud warning, and an
error with AUDIT_STRICT=1 (set it where the service is reachable, e.g. a release pipeline).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

IGNORE_FILE = Path(__file__).with_name("audit-ignore.txt")


def ignored() -> dict[str, str]:
    out = {}
    if IGNORE_FILE.exists():
        for line in IGNORE_FILE.read_text().splitlines():
            vuln_id, _, why = line.partition("#")
            if vuln_id.strip():
                if not why.strip():
                    sys.exit(f"{IGNORE_FILE}: {vuln_id.strip()} has no explanation")
                out[vuln_id.strip()] = why.strip()
    return out


def _latest_release_fallback(dep: dict, skip: set[str]) -> None:
    """Some PyPI mirrors serve only the project JSON (``/pypi/NAME/json``), whose ``vulnerabilities``
    are those of the latest release: when the installed version is that release, that is the answer."""
    import re
    import urllib.request

    m = re.search(r"\(([^()]+)\)$", dep["skip_reason"])
    if not m:
        return
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{dep['name']}/json", timeout=30) as r:
            doc = json.load(r)
    except (OSError, ValueError):
        return
    if doc.get("info", {}).get("version") != m.group(1) or "vulnerabilities" not in doc:
        return
    del dep["skip_reason"]
    dep["version"] = m.group(1)
    dep["vulns"] = [{"id": v["id"], "fix_versions": v.get("fixed_in", [])} for v in doc["vulnerabilities"]
                    if not v.get("withdrawn") and v["id"] not in skip and not skip & set(v.get("aliases", []))]


def main() -> int:
    skip = ignored()
    args = [sys.executable, "-m", "pip_audit", "--skip-editable", "-f", "json", "--progress-spinner", "off"]
    for vuln_id in skip:
        args += ["--ignore-vuln", vuln_id]
    proc = subprocess.run(args, capture_output=True, text=True)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(proc.stderr, file=sys.stderr)
        print("audit: pip-audit produced no report", file=sys.stderr)
        return 1
    deps = [d for d in report["dependencies"] if "editable" not in d.get("skip_reason", "")]  # not streamproc
    for d in deps:
        if "skip_reason" in d:
            _latest_release_fallback(d, set(skip))
    checked = [d for d in deps if "skip_reason" not in d]
    found = [(d["name"], d["version"], v["id"], v.get("fix_versions", [])) for d in checked for v in d.get("vulns", [])]
    for name, version, vuln_id, fixes in found:
        print(f"audit: {name} {version}: {vuln_id} (fixed in {', '.join(fixes) or 'no release yet'})")
    for vuln_id, why in skip.items():
        print(f"audit: ignoring {vuln_id}: {why}")
    print(f"audit: {len(checked)} of {len(deps)} packages checked, {len(found)} known vulnerabilities")
    if found:
        return 1
    if len(checked) < len(deps):
        names = ", ".join(f"{d['name']}" for d in deps if "skip_reason" in d)
        print(f"audit: WARNING: {len(deps) - len(checked)} packages could not be checked: {names}", file=sys.stderr)
        if os.environ.get("AUDIT_STRICT") == "1":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
