"""End to end on real parts: Tansu broker, Faust worker processes, chDB, and the SQL oracle.

Each test ends in a reconcile of everything the sink holds against the oracle computed from the same
recorded log: no loss and no double counting, whatever happened to the workers in between.
"""

from __future__ import annotations

from pathlib import Path

from support.helpers import assert_exact, recent_log, started

from streamproc.runtime.broker import free_port
from streamproc.settings import Settings
from streamproc.verify.chaos import Feeder, consumed, wait_for
from streamproc.verify.demo import reconcile, run_until_done
from streamproc.verify.stack import Stack, event_partitions, wait_flushed


def test_100k_events_match_the_oracle_and_the_dead_letters_are_exactly_the_rejects(settings: Settings) -> None:
    summary = run_until_done(settings, events=100_000, seed=7)
    assert summary["events"] == 100_000
    assert_exact(summary, "dead_letter_match")
    assert summary["windows"] > 1000
    # the generated log carries every kind of trouble; each was dead-lettered under its own reason
    reasons = summary["dead_letter_reasons"]
    for reason in ("late", "malformed_json", "wrong_type", "negative_amount", "future", "key_mismatch", "oversized"):
        assert reasons.get(reason, 0) > 0, reasons


def test_worker_killed_with_sigkill_mid_stream_then_restarted(settings: Settings, tmp_path: Path) -> None:
    n = 60_000
    log = recent_log(tmp_path / "events.jsonl.zst", n, seed=11)
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker())
        with Feeder(stack.settings, log, rate=5_000) as feed:
            wait_for(lambda: consumed([worker]) > n // 4)
            at_kill = consumed([worker])
            worker.kill()
            restarted = started(stack.worker(1))
        assert 0 < at_kill < n, "the kill must land mid-stream"
        wait_flushed([restarted], feed.result.last_offsets)
        restarted.stop()
    assert_exact(reconcile(settings, str(log)))


def test_two_workers_one_leaves_mid_stream_and_its_partitions_move(settings: Settings, tmp_path: Path) -> None:
    n = 60_000
    log = recent_log(tmp_path / "events.jsonl.zst", n, seed=12)
    with Stack(settings, tmp_path / "logs", shared_sink_port=free_port()) as stack:
        a = stack.worker(0).start()
        b = stack.worker(1, web_port=free_port()).start()
        a.wait_assigned()
        b.wait_assigned()
        wait_for(lambda: sum(len((w.status() or {}).get("partitions", {})) for w in (a, b)) == event_partitions())
        with Feeder(stack.settings, log, rate=5_000) as feed:
            wait_for(lambda: consumed([a, b]) > n // 4)
            at_stop = consumed([a, b])
            a.stop()
            wait_for(lambda: len((b.status() or {}).get("partitions", {})) == event_partitions())
        assert 0 < at_stop < n, "the rebalance must happen mid-stream"
        wait_flushed([b], feed.result.last_offsets)
        b.stop()
        summary = reconcile(stack.settings, str(log))
    assert_exact(summary)


def test_boards_are_exact_when_the_worker_dies_right_after_its_last_flush(settings: Settings, tmp_path: Path) -> None:
    """No final rollup pass: the worker is killed the moment its last flush landed. The minutes written
    since the last pass are then stale in tallies_1m; every board must read around them."""
    from streamproc.boards import queries
    from streamproc.store import open_sink

    n = 30_000
    log = recent_log(tmp_path / "events.jsonl.zst", n, seed=13)
    settings = settings.replace(rollup_interval_s=1.0)
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker())
        with Feeder(stack.settings, log, rate=10_000) as feed:
            pass
        wait_flushed([worker], feed.result.last_offsets)
        worker.kill()
    summary = assert_exact(reconcile(settings, str(log)), "tallies_match", "boards_match")
    assert summary["boards_checked"] > 10_000, summary
    sink = open_sink(settings)
    try:
        clk = queries.clock(sink)
        assert clk.rollup_cursor > 0 and clk.pending_minutes, "the kill must leave rolled minutes stale"
    finally:
        sink.close()
