"""Imported public clickstreams through the whole pipeline: `streamproc import` of each fixture file
(tests/support/fixtures/), then `streamproc demo --log` over them all, reconciled against the oracle."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from support.helpers import FIXTURES, assert_exact, assert_ok, run_cli, summary_of

from streamproc.logs.importers import core as import_core
from streamproc.logs.logfile import read_log
from streamproc.runtime.broker import free_port


def test_imported_logs_run_through_the_demo_and_match_the_oracle(tmp_path: Path) -> None:
    """`streamproc import` then `streamproc demo --log`: broker, worker, chDB, reconcile, one JSON line."""
    parts = []
    for fmt, src, extra in (("taobao-userbehavior", "taobao_userbehavior.csv", []),
                            ("rees46", "rees46_events.csv", []),
                            ("generic", "generic_clicks.jsonl", ["--map", str(FIXTURES / "generic_clicks.toml")])):
        out = tmp_path / f"{fmt}.jsonl.zst"
        res = assert_ok(run_cli("import", "--format", fmt, str(FIXTURES / src), "--out", str(out), *extra))
        assert json.loads(res.stdout)["events"] > 0
        parts.append(out)
    log = tmp_path / "all.jsonl"  # 2017, 2019, 2026: still in time order when concatenated
    with open(log, "wb") as f:
        for p in parts:
            for rec in read_log(p):
                f.write(import_core.encode_line(rec))
    n = sum(1 for _ in read_log(log))
    env = {"STREAMPROC_DATA_DIR": str(tmp_path / "data"), "STREAMPROC_EMBEDDED_BROKER_PORT": str(free_port()),
           "STREAMPROC_WEB_PORT": str(free_port()), "STREAMPROC_FLUSH_INTERVAL_S": "0.5"}
    res = assert_ok(run_cli("demo", "--log", str(log), "--until-done", env=env, timeout=300))
    summary = assert_exact(summary_of(res))
    assert summary["events"] == n, summary
    assert summary["dead_letter"] == 0 and summary["windows"] > 0
    assert Counter(r.topic for r in read_log(log))["live.orders"] == 4 + 5 + 3
