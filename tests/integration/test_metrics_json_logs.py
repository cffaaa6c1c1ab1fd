"""The worker's JSON logs, in child processes with a bare environment: one object per line with metric
names, and an unknown log format refused by name."""

from __future__ import annotations

import json

from support.helpers import assert_ok, run_cli, run_python

BARE = {"PATH": "/usr/bin:/bin"}  # the child's whole environment: no STREAMPROC_ setting leaks in


def test_json_logs_are_one_object_per_line_with_metric_names() -> None:
    code = """
import logging
from streamproc.logging_setup import configure
configure("info", "json")
log = logging.getLogger("streamproc.runtime.worker")
log.info("flush", extra={"event": "flush", "flush_rows": 42, "flush_duration_seconds": 0.0125})
logging.getLogger("faust.app").warning("a library's own line")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("flush failed", extra={"event": "flush_failed"})
log.debug("below the level")
"""
    res = assert_ok(run_python("-c", code, env=BARE, clean_env=True, timeout=60))
    lines = [json.loads(line) for line in res.stderr.splitlines()]
    assert [r["message"] for r in lines] == ["flush", "a library's own line", "flush failed"]
    flush = lines[0]
    assert flush["event"] == "flush" and flush["flush_rows"] == 42 and flush["flush_duration_seconds"] == 0.0125
    assert flush["level"] == "info" and flush["logger"] == "streamproc.runtime.worker" and flush["ts"].endswith("+00:00")
    assert lines[1]["logger"] == "faust.app" and lines[1]["level"] == "warning"
    assert "ZeroDivisionError" in lines[2]["exc_info"] and lines[2]["event"] == "flush_failed"


def test_an_unknown_log_format_is_refused_by_name() -> None:
    res = run_cli("schema", "apply", env={**BARE, "STREAMPROC_LOG_FORMAT": "xml"}, clean_env=True, timeout=60)
    assert res.returncode != 0
    assert "STREAMPROC_LOG_FORMAT='xml'" in res.stderr and "text, json" in res.stderr
