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


def run_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """``make bench``'s harness with ``args``, results in ``tmp_path``; its output and latest.json."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args,
         "--results-dir", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out, json.loads((tmp_path / "results" / "latest.json").read_text())


def test_bench_harness_writes_every_agreed_key(tmp_path: Path) -> None:
    events = 4000
    out, latest = run_bench(tmp_path, "--events", str(events), "--streamers", "200", "--repeat", "1",
                            "--peer-repeat", "1", "--worker-repeat", "1", "--faust-events", "2000",
                            "--faust-table-events", "0", "--quix-events", "0", "--freshness-seconds", "3",
                            "--sections", "consumers,freshness")
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


READER_KEYS = ("readers_api_p99_s", "readers_share_429", "readers_flushes_per_s", "readers_freshness_p99_s",
               "readers_lag_p99_events")
READER_RUN_KEYS = ("api_p50_s", "api_p99_s", "share_429", "statuses", "quiet", "load")


def test_bench_readers_section_runs_and_reports_its_keys(tmp_path: Path) -> None:
    """A few clients against a fed worker, bounded and unbounded: it runs and reports, nothing timed."""
    out, latest = run_bench(tmp_path, "--events", "4000", "--streamers", "200", "--sections", "readers",
                            "--readers-clients", "10", "--readers-requests", "60", "--readers-rate", "400",
                            "--readers-variants", "2", "--readers-bounds", "2,0", "--readers-warmup-s", "3",
                            "--readers-quiet-s", "2")
    for key in READER_KEYS:
        assert key in latest, key
    assert [r["api_max_concurrent"] for r in latest["readers"]] == [2, 0]
    for run in latest["readers"]:
        assert all(key in run for key in READER_RUN_KEYS), run
        assert sum(run["statuses"].values()) == run["requests"] == 60, run
        for phase in ("quiet", "load"):
            assert {"flushes_per_s", "freshness", "lag"} <= set(run[phase]), run[phase]
    assert "readers, api_max_concurrent=2" in out.stdout  # the printed table
