"""Dead letters an operator can act on: export them, fix them, re-drive them, and the tallies come out
exactly as if the fixed events had been sent right the first time (oracle over the log plus the fixes).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
from support.helpers import assert_exact, assert_ok, feed_and_flush, order, record, run_cli, started

from streamproc.ingest.deadletter import original_key, original_value
from streamproc.logs.logfile import LogRecord, read_log, write_log
from streamproc.settings import Settings
from streamproc.sim.generate import generate
from streamproc.verify.chaos import consumed, wait_for
from streamproc.verify.demo import reconcile
from streamproc.verify.stack import Stack


def in_yuan(i: int, ts: int, yuan: float) -> LogRecord:
    """An order whose amount is written by a producer that sends yuan as a float (refused: wrong_type)."""
    return record(order(event_id=f"fix-{i}", ts=ts, streamer_id="s0007", session_id="live-fix", viewer_id=f"v-fix-{i}",
                        order_id=f"o-fix-{i}", quantity=1, amount_fen=yuan))


def deadletter(settings: Settings, *args: str) -> str:
    """`streamproc deadletter ARGS` with the settings' environment only; its stdout."""
    res = run_cli("deadletter", *args, env={**settings.to_env(), "PATH": "/usr/bin:/bin"}, clean_env=True, timeout=120)
    return assert_ok(res).stdout


def test_export_fix_and_redrive_dead_letters_then_exact(settings: Settings, tmp_path: Path) -> None:
    now = int(time.time() * 1000) - 30_000
    records = list(generate(3_000, seed=41, start_ms=now - 30_000))
    broken = [in_yuan(i, now + i, float(f"{79 + i}.8")) for i in range(5)]
    records += broken + [LogRecord("live.views", b"s0007", now, b'{"type":"view","viewer_id":"\xff\xfe"}')]
    log = tmp_path / "events.jsonl.zst"
    write_log(log, records)
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker())
        feed_and_flush(stack.settings, worker, log)

        # export the refused orders, fix them as an operator would (yuan 79.8 -> 7980 fen), re-drive them
        exported = tmp_path / "wrong_type.jsonl"
        deadletter(stack.settings, "export", "--reason", "wrong_type", "--out", str(exported))
        dead = [orjson.loads(line) for line in exported.read_bytes().splitlines()]
        ours = [d for d in dead if d["key"] == "s0007" and "o-fix-" in d.get("value", "")]
        assert len(ours) == 5, dead
        for d in ours:
            assert d["topic"] == "live.orders" and d["reason"] == "wrong_type" and d["detail"] == "amount_fen"
            assert {"partition", "offset", "timestamp", "rejected_at"} <= set(d)
            fen = round(float(json.loads(d["value"])["amount_fen"]) * 100)
            d["value"] = d["value"].replace(f'"amount_fen":{json.loads(d["value"])["amount_fen"]}',
                                            f'"amount_fen":{fen}')
        fixed = tmp_path / "fixed.jsonl"
        fixed.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in ours))

        # what cannot be fixed is held back with its reason, and a dry run sends nothing
        held = json.loads(deadletter(stack.settings, "redrive", "--reason", "invalid_utf8", "--dry-run"))
        assert held["held_back"].get("invalid_utf8", 0) >= 1 and held["sent"] == 0, held

        before = consumed([worker])
        summary = json.loads(deadletter(stack.settings, "redrive", "--from", str(fixed)))
        assert summary["sent"] == 5 and summary["by_topic"] == {"live.orders": 5}, summary
        wait_for(lambda: consumed([worker]) >= before + 5, 60, what="re-driven orders consumed")
        wait_for(lambda: all(p["flushed_offset"] == p["offset"] for p in worker.status()["partitions"].values()),
                 60, what="re-driven orders flushed")
        worker.stop()
    # the oracle over the original log followed by the fixed records: the fixes count, exactly once
    fixes = [LogRecord(d["topic"], original_key(d), d["timestamp"], original_value(d)) for d in ours]
    both = tmp_path / "with_fixes.jsonl.zst"
    write_log(both, list(read_log(log)) + fixes)
    assert_exact(reconcile(settings, str(both)))
