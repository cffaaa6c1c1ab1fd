"""The benchmark harness runs end to end on a tiny corpus and writes the result file readers rely on.

No timing is asserted (this machine is shared and noisy); what is checked is that every consumer ran
against the same topic contents, counted every event, and that the JSON carries the agreed keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("python_limit_eps", "transport_eps", "faust_naive_eps", "worker_eps_single", "worker_eps_batched",
        "freshness_p99_s")


def test_bench_harness_writes_every_agreed_key(tmp_path: Path) -> None:
    events = 4000
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--events", str(events), "--streamers", "200", "--repeat", "1",
         "--peer-repeat", "1", "--worker-repeat", "1", "--faust-events", "2000", "--faust-table-events", "0",
         "--quix-events", "0", "--freshness-seconds", "3", "--sections", "consumers,freshness",
         "--results-dir", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    latest = json.loads((tmp_path / "results" / "latest.json").read_text())
    dated = [p for p in (tmp_path / "results").glob("*.json") if p.name != "latest.json"]
    assert len(dated) == 1 and json.loads(dated[0].read_text()) == latest
    for key in KEYS:
        assert key in latest, key
    assert all(isinstance(latest[k], (int, float)) and latest[k] > 0 for k in KEYS), latest
    consumers = latest["consumers"]
    # every consumer saw the whole corpus (the Faust baseline stops at its own count)
    for name in ("transport", "python_limit", "worker_single"):
        assert consumers[name]["events"] == events, consumers[name]
    assert consumers["worker_single"]["counts"]["consumed"] == events
    assert latest["freshness"]["events"] > 0 and latest["freshness"]["p50_s"] <= latest["freshness"]["p99_s"]
    assert "python_limit" in out.stdout and "worker_single" in out.stdout  # the printed table
