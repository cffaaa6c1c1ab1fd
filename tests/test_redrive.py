"""Dead letters an operator can act on: export them, fix them, re-drive them, and the tallies come out
exactly as if the fixed events had been sent right the first time (oracle over the log plus the fixes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import orjson

from streamproc.ingest.deadletter import original_key, original_value
from streamproc.logs.logfile import LogRecord, read_log, write_log
from streamproc.settings import Settings
from streamproc.sim.generate import generate
from streamproc.verify.chaos import Feeder, consumed, wait_for
from streamproc.verify.demo import reconcile
from streamproc.verify.stack import Stack, event_partitions, wait_flushed


def order(i: int, ts: int, amount: str) -> LogRecord:
    """An order whose amount is written by a producer that sends yuan as a float (refused: wrong_type)."""
    text = (f'{{"schema_version":1,"type":"order","event_id":"fix-{i}","ts":{ts},"streamer_id":"s0007",'
            f'"session_id":"live-fix","viewer_id":"v-fix-{i}","order_id":"o-fix-{i}","product_id":"kiwi-5kg",'
            f'"category":"fruit","quantity":1,"amount_fen":{amount},"status":"paid"}}')
    return LogRecord("live.orders", b"s0007", ts, text.encode())


def cli(settings: Settings, *args: str) -> str:
    env = {**settings.to_env(), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "streamproc", "deadletter", *args], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_export_fix_and_redrive_dead_letters_then_exact(settings: Settings, tmp_path: Path) -> None:
    now = int(time.time() * 1000) - 30_000
    records = list(generate(3_000, seed=41, start_ms=now - 30_000))
    broken = [order(i, now + i, f"{79 + i}.8") for i in range(5)]
    records += broken + [LogRecord("live.views", b"s0007", now, b'{"type":"view","viewer_id":"\xff\xfe"}')]
    log = tmp_path / "events.jsonl.zst"
    write_log(log, records)
    with Stack(settings, tmp_path / "logs") as stack:
        worker = stack.worker().start()
        worker.wait_assigned(event_partitions())
        with Feeder(stack.settings, log, rate=None) as feed:
            pass
        wait_flushed([worker], feed.result.last_offsets)

        # export the refused orders, fix them as an operator would (yuan 79.8 -> 7980 fen), re-drive them
        exported = tmp_path / "wrong_type.jsonl"
        cli(stack.settings, "export", "--reason", "wrong_type", "--out", str(exported))
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
        held = json.loads(cli(stack.settings, "redrive", "--reason", "invalid_utf8", "--dry-run"))
        assert held["held_back"].get("invalid_utf8", 0) >= 1 and held["sent"] == 0, held

        before = consumed([worker])
        summary = json.loads(cli(stack.settings, "redrive", "--from", str(fixed)))
        assert summary["sent"] == 5 and summary["by_topic"] == {"live.orders": 5}, summary
        wait_for(lambda: consumed([worker]) >= before + 5, 60, what="re-driven orders consumed")
        wait_for(lambda: all(p["flushed_offset"] == p["offset"] for p in worker.status()["partitions"].values()),
                 60, what="re-driven orders flushed")
        worker.stop()
    # the oracle over the original log followed by the fixed records: the fixes count, exactly once
    fixes = [LogRecord(d["topic"], original_key(d), d["timestamp"], original_value(d)) for d in ours]
    both = tmp_path / "with_fixes.jsonl.zst"
    write_log(both, list(read_log(log)) + fixes)
    result = reconcile(settings, str(both))
    assert result["oracle_match"] and result["mismatches"] == 0, result
