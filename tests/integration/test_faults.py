"""The faults a sales-day on-call engineer meets, each on real parts and each ending in an oracle match.

Tansu broker, Faust worker processes, chDB (behind `streamproc clickhouse-server` where the sink itself
must fail). The faults are real: a detached table, a SIGSTOPped or stopped server, a broker that does
not exist yet or hangs, SIGKILL at random moments, an exit between the window rows and the checkpoint
of a flush, a log played twice over itself, clocks that lie. Figures are printed (``pytest -s``) and
tabled in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import orjson
import pytest
from support.helpers import Rec, assert_exact, feed_and_flush, like, order, recent_log, record, report, started

from streamproc.logs.logfile import LogRecord, read_log, write_log
from streamproc.runtime.broker import EmbeddedBroker, free_port
from streamproc.runtime.topics import create_topics
from streamproc.settings import Settings
from streamproc.store import open_sink
from streamproc.verify.chaos import Feeder, consumed, frozen, kill_and_restart, metric_values, sink_outage, wait_for
from streamproc.verify.demo import reconcile
from streamproc.verify.oracle import COLUMNS, RuleSet, expected_reasons, expected_tallies
from streamproc.verify.stack import Stack, WorkerProcess, event_partitions, wait_flushed


def exact(settings: Settings, log: Path) -> dict:
    return assert_exact(reconcile(settings.replace(clickhouse_timeout_s=300), str(log)))


# -- 1. the sink fails: refuses writes, hangs, is gone --------------------------------------------------

MAX_ROWS = 20_000
# The memory a worker may use with MAX_ROWS buffered: 120 MB of runtime plus 8 kB per buffered row,
# the sizing rule docs/RELIABILITY.md gives for STREAMPROC_MAX_BUFFERED_ROWS (measured: 3 to 6.3 kB a row).
MEMORY_LIMIT_MB = 120 + MAX_ROWS * 8 / 1024


def test_sink_outage_keeps_rows_pauses_at_the_bound_and_reconciles_exactly(settings: Settings, tmp_path: Path) -> None:
    n = 60_000
    log = recent_log(tmp_path / "events.jsonl.zst", n, seed=21)
    settings = settings.replace(max_buffered_rows=MAX_ROWS, clickhouse_timeout_s=2, sink_retry_max_s=2)
    with Stack(settings, tmp_path / "logs", shared_sink_port=free_port()) as stack:
        worker = started(stack.worker())
        with Feeder(stack.settings, log, rate=5_000) as feed:
            wait_for(lambda: consumed([worker]) > n // 6, what="a sixth of the log consumed")
            figures = sink_outage(stack, worker, 15, phases=("refuse", "hang", "down"))
        wait_flushed([worker], feed.result.last_offsets)
        assert worker.alive()
        timeouts = metric_values(worker)["streamproc_sink_timeouts_total"]
        worker.stop()
        summary = exact(stack.settings, log)
    report("sink_outage", **asdict(figures), windows=summary["windows"], sink_timeouts=timeouts)
    text = (tmp_path / "logs" / "worker-0.log").read_text()
    # the hung (SIGSTOPped) server: calls fail at the timeout, each with a warning and a count
    assert timeouts >= 1 and "got no answer within 2s" in text, timeouts
    assert "flush failed" in text and "pausing consumption" in text and "resuming consumption" in text
    assert figures.flush_failures >= 3, figures  # each phase failed flushes, none was dropped
    # consumption paused: at the buffer bound, or earlier, when a batch needed a window reopened from
    # its snapshot (a late payment) and waited for the sink; either way the buffer stays bounded
    assert figures.paused and figures.max_buffered_rows < MAX_ROWS * 1.25, figures
    assert figures.rss_peak_mb < MEMORY_LIMIT_MB, figures


# -- 2. the broker is not there at start, then hangs mid-run --------------------------------------------


def test_broker_absent_at_start_then_hung_mid_run_no_crash_loop_and_exact(settings: Settings, tmp_path: Path) -> None:
    n = 30_000
    log = recent_log(tmp_path / "events.jsonl.zst", n, seed=22)
    port = free_port()
    settings = settings.replace(kafka_bootstrap=f"127.0.0.1:{port}")
    (tmp_path / "logs").mkdir()
    worker_log = tmp_path / "logs" / "worker.log"
    worker = WorkerProcess(settings, worker_log).start()
    pid = worker.proc.pid
    try:
        wait_for(lambda: worker_log.read_text().count("not ready") >= 3, 30, what="three retries logged")
        assert worker.alive()
        with EmbeddedBroker(port, tmp_path / "logs" / "broker.log") as broker:
            asyncio.run(create_topics(settings))
            worker.wait_assigned(event_partitions())
            with Feeder(settings, log, rate=4_000) as feed:
                wait_for(lambda: consumed([worker]) > n // 4, what="a quarter of the log consumed")
                with frozen(broker.proc.pid):
                    hung_at = time.monotonic()
                    time.sleep(12)
                back_at = time.monotonic()
            done_at = wait_flushed([worker], feed.result.last_offsets)
            assert worker.alive() and worker.proc.pid == pid  # one process throughout: no crash loop
            worker.stop()
    finally:
        worker.kill()
    text = worker_log.read_text()
    assert "Kafka brokers 127.0.0.1:%d not ready" % port in text
    assert "not answering" in text and "answering again" in text
    summary = exact(settings, log)
    report("broker_unavailable", hung_s=round(back_at - hung_at, 1), recover_s=round(done_at - back_at, 2),
           retries_at_start=text.count("not ready"), windows=summary["windows"])


# -- 3 and 4. crashes: inside a flush, between the window rows and the checkpoint; ten in a row ---------


def partitions_ahead_of_checkpoint(settings: Settings) -> int:
    """Source partitions whose newest window rows are newer than their checkpoint: the mark a crash
    between the two inserts of a flush leaves."""
    sink = open_sink(settings)
    try:
        sink.use_database()
        return sink.rows(
            "SELECT count() FROM (SELECT src_topic, src_partition, max(version) AS v FROM tallies_10s GROUP BY 1, 2) "
            "AS t LEFT JOIN (SELECT src_topic, src_partition, max(last_offset) AS c FROM checkpoints GROUP BY 1, 2) "
            "AS k USING (src_topic, src_partition) WHERE t.v > k.c")[0][0]
    finally:
        sink.close()


def test_ten_crashes_at_random_points_some_inside_a_flush_then_exact(settings: Settings, tmp_path: Path) -> None:
    """Ten crashes on one log: SIGKILL at random moments, and exits armed by the fault hook between the
    window rows and the checkpoint of a flush (verify/faulty_worker.py)."""
    n = 20_000
    log = recent_log(tmp_path / "events.jsonl.zst", n, seed=24)
    rng = random.Random(24)
    settings = settings.replace(group_instance_id="worker-a")  # static membership: restarts rejoin at once
    ahead: list[int] = []
    with Stack(settings, tmp_path / "logs", shared_sink_port=free_port()) as stack:

        def after_crash(how: str) -> None:
            if how == "in-flush":  # the crash landed where it was meant to: rows newer than the checkpoint
                ahead.append(partitions_ahead_of_checkpoint(stack.settings))

        worker = started(stack.worker(0))
        began = time.monotonic()
        with Feeder(stack.settings, log, rate=n / 150) as feed:  # the feed spans the ten crash cycles
            worker, kills = kill_and_restart(stack, worker, 10, rng=rng, n_partitions=event_partitions(),
                                             max_delay_s=2.0, in_flush_share=0.4, started=began,
                                             on_crash=after_crash)
        wait_flushed([worker], feed.result.last_offsets)
        worker.stop()
        summary = exact(stack.settings, log)
    report("ten_crashes", kills=[asdict(k) for k in kills], partitions_ahead_of_checkpoint=ahead,
           windows=summary["windows"])
    assert len(kills) == 10 and {k.how for k in kills} == {"sigkill", "in-flush"}, kills
    assert ahead and all(a > 0 for a in ahead), ahead
    assert sum(k.in_flight for k in kills) > 0, kills  # crashes lost work held in memory, and it came back


# -- 5 and 6. the same log played twice over itself, reordered; clocks that lie ---------------------------


def doubled(live: list[LogRecord], rng: random.Random) -> list[LogRecord]:
    """The live log with a replay of itself interleaved: each copy lands 1..300 records after its
    original, so copies also arrive out of order among themselves."""
    out = [(float(i), 0, rec) for i, rec in enumerate(live)]
    out += [(i + rng.uniform(1, 300), 1, rec) for i, rec in enumerate(live)]
    out.sort(key=lambda t: (t[0], t[1]))
    return [rec for _, _, rec in out]


def lying_clocks(live: list[LogRecord], rng: random.Random, n: int = 600) -> list[LogRecord]:
    """Events of streamers of their own ("clock-…", so they leave the live tallies alone) from
    producers whose clocks lie in every way a clock can."""
    out = []
    for rec in rng.sample(live, n):
        try:
            obj = orjson.loads(rec.value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("streamer_id"), str) or not isinstance(obj.get("ts"), int):
            continue
        obj["streamer_id"] = "clock-" + obj["streamer_id"][:50]
        if isinstance(obj.get("order_id"), str):  # an order id belongs to one streamer (docs/RELIABILITY.md)
            obj["order_id"] = "clock-" + obj["order_id"][:50]
        kind, ts = rng.randrange(5), rec.ts
        if kind == 1:  # the event claims a time a day ahead of its record: "future"
            obj["ts"] = ts + 86_400_000
        elif kind == 2:  # a producer two minutes fast stamps record and event alike: accepted, and it
            ts = obj["ts"] = ts + 120_000  # moves its streamer's watermark, so honest events after it are late
        elif kind == 3:  # a producer an hour slow: behind its streamer's watermark, "late"
            ts = obj["ts"] = ts - 3_600_000
        elif kind == 4:  # a clock reset to 1970: outside the contract's time range, "bad_value"
            ts = obj["ts"] = 1_000
        out.append(LogRecord(rec.topic, obj["streamer_id"].encode(), ts, orjson.dumps(obj)))
    return out


def open_windows(worker: WorkerProcess) -> int:
    st = worker.status()
    return sum(p["open_windows"] for p in st["partitions"].values()) if st else -1


def test_duplicate_reordered_replay_and_lying_clocks_then_exact(settings: Settings, tmp_path: Path) -> None:
    live_log = recent_log(tmp_path / "live.jsonl.zst", 15_000, seed=25)
    live = list(read_log(live_log))
    rng = random.Random(25)
    twice = doubled(live, rng)
    clocks = lying_clocks(live, rng)
    for rec in clocks:  # mixed in over the second half of the run
        twice.insert(rng.randrange(len(twice) // 2, len(twice)), rec)
    log = tmp_path / "doubled.jsonl.zst"
    write_log(log, twice)
    settings = settings.replace(idle_close_ms=3_000)
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker())
        feed_and_flush(stack.settings, worker, log)
        # windows never stay open: once idle they leave memory, whatever the clocks said
        wait_for(lambda: open_windows(worker) == 0, 30, what="every window closed")
        worker.stop()
    summary = exact(settings, log)

    from streamproc.store.chdb import ChdbSink

    sink = ChdbSink(settings.chdb_path, settings.clickhouse_database)
    try:
        rules = RuleSet.from_settings(settings)
        once = expected_tallies(sink.rows, str(live_log.resolve()), rules)
        both = expected_tallies(sink.rows, str(log.resolve()), rules)
        lying = {id(r) for r in clocks}
        verdicts = expected_reasons(sink.rows, str(log.resolve()), rules)
        reasons = Counter(v or "accepted" for v, r in zip(verdicts, twice) if id(r) in lying)
    finally:
        sink.close()
    live_keys = [k for k in both if not k[1].startswith("clock-")]
    assert sorted(live_keys) == sorted(once)
    totals = {c: (sum(w[c] for w in once.values()), sum(both[k][c] for k in live_keys)) for c in COLUMNS}
    report("duplicates_and_clocks", totals_live_vs_doubled=totals, clock_records=len(clocks),
           clock_verdicts=reasons, windows=summary["windows"])
    # idempotent under duplicate delivery: order money and unique viewers, window by window
    for key, w in once.items():
        for c in ("orders_paid", "orders_refunded", "items", "gmv_fen", "refund_fen", "unique_viewers"):
            assert both[key][c] == w[c], (key, c, w[c], both[key][c])
    # not idempotent (counted per delivery, as docs/RELIABILITY.md says): likes and view enters/leaves
    assert totals["likes"][1] > totals["likes"][0] and totals["enters"][1] > totals["enters"][0]
    # every kind of lie about time met its rule (the fast producer's events are accepted)
    assert min(reasons[r] for r in ("future", "late", "bad_value", "accepted")) > 50, reasons


# -- a window reopened while the sink is away -----------------------------------------------------------


def test_a_window_reopened_while_the_sink_is_down_is_retried_whole_and_drops_nothing(settings: Settings,
                                                                                     tmp_path: Path) -> None:
    """An event within lateness for a window that already left memory needs the window's snapshot.
    With the sink gone, applying raises (the worker retries the batch asynchronously, so its event loop
    keeps serving): nothing of the failed unit is in the state, a pack stopped half way is never
    snapshotted, and the retry resumes at the first unit not applied, counting each event once."""
    from streamproc.core.state import EVENTS, LIKES
    from streamproc.logs.packs import pack_records
    from streamproc.runtime.processor import Processor
    from streamproc.verify.stack import ClickHouseServerProcess

    ts = int(time.time() * 1000) - 20_000
    ts -= ts % 10_000

    def one_like(n: int, at: int, count: int = 1) -> dict:
        return like(event_id=f"e{n}", ts=at, session_id="l1", count=count)

    server = ClickHouseServerProcess(settings, free_port(), tmp_path / "clickhouse.log").start()
    # closed windows not kept in memory: every reopen reads the store
    settings = settings.replace(clickhouse_url=server.url, idle_close_ms=0, closed_windows_kept=0, clickhouse_timeout_s=2)
    sink = open_sink(settings)
    try:
        sink.apply_schema()
        proc = Processor(settings, sink)
        proc.assign([("live.likes", 0)])
        proc.handle_batch("live.likes", 0, [Rec(0, b"s1", orjson.dumps(one_like(0, ts)), ts),
                                            Rec(1, b"s1", orjson.dumps(one_like(1, ts + 12_000)), ts)])  # two windows
        snaps = proc.snapshot()
        sink.write(snaps)
        proc.flush_done(snaps)  # idle for 0 ms: both windows leave memory
        st = proc.states[("live.likes", 0)]
        assert not st.windows
        # one message, a pack of three likes: the first opens a new window, the second and third
        # belong to the evicted window at ts and need its snapshot
        (packed,) = pack_records([record(one_like(n, at, 10 ** n), ts)
                                  for n, at in ((2, ts + 25_000), (3, ts + 1_000), (4, ts + 2_000))], 3)
        batch = [Rec(2, b"s1", packed.value, ts)]
        server.stop()
        with pytest.raises(Exception):
            proc.handle_batch("live.likes", 0, batch)
        assert st.offset == 1 and st.half_applied and proc.snapshot() == []  # never a checkpoint mid-message
        server.start()
        proc.handle_batch("live.likes", 0, batch)  # the retry: resumes at the unit that failed
        assert st.offset == 2 and not st.half_applied
        assert st.windows[(ts, "s1")][EVENTS] == 3 and st.windows[(ts, "s1")][LIKES] == 1 + 1_000 + 10_000
        assert st.windows[(ts + 20_000, "s1")][LIKES] == 100  # applied once, before the failure
    finally:
        sink.close()
        server.stop()


def test_a_window_to_reopen_is_read_outside_the_hot_path_and_the_batch_resumes_at_its_unit(settings: Settings) -> None:
    """The worker's processor defers reopens: instead of querying the store in the hot path (on the worker's
    event loop, where an embedded store's reopen would wait behind a board's query and stall every API
    answer) it raises WindowNotLoaded naming the window; the worker reads it in a thread, and the batch
    applied again resumes at the unit that needed it, counting each event once."""
    from streamproc.core.state import EVENTS, LIKES
    from streamproc.logs.packs import pack_records
    from streamproc.runtime.processor import Processor, WindowNotLoaded

    ts = int(time.time() * 1000) - 20_000
    ts -= ts % 10_000

    def one_like(n: int, at: int, count: int = 1) -> dict:
        return like(event_id=f"e{n}", ts=at, session_id="l1", count=count)

    settings = settings.replace(idle_close_ms=0, closed_windows_kept=0)  # every reopen reads the store
    sink = open_sink(settings)  # embedded chDB: one statement at a time, the case this is for
    try:
        sink.apply_schema()
        proc = Processor(settings, sink, defer_reopen=True)
        proc.assign([("live.likes", 0)])
        proc.handle_batch("live.likes", 0, [Rec(0, b"s1", orjson.dumps(one_like(0, ts)), ts),
                                            Rec(1, b"s1", orjson.dumps(one_like(1, ts + 12_000)), ts)])
        snaps = proc.snapshot()
        sink.write(snaps)
        proc.flush_done(snaps)  # idle for 0 ms: both windows leave memory
        st = proc.states[("live.likes", 0)]
        (packed,) = pack_records([record(one_like(n, at, 10 ** n), ts)
                                  for n, at in ((2, ts + 25_000), (3, ts + 1_000), (4, ts + 2_000))], 3)
        batch = [Rec(2, b"s1", packed.value, ts)]
        with pytest.raises(WindowNotLoaded) as raised:
            proc.handle_batch("live.likes", 0, batch)
        need = raised.value
        assert (need.topic, need.partition, need.key) == ("live.likes", 0, (ts, "s1"))
        assert st.offset == 1 and st.half_applied and proc.snapshot() == []  # never a checkpoint mid-message
        assert st.windows[(ts + 20_000, "s1")][LIKES] == 100  # the unit before it is in
        asyncio.run(asyncio.to_thread(proc.reopen, need))  # as the worker does, off its event loop
        proc.handle_batch("live.likes", 0, batch)
        assert st.offset == 2 and not st.half_applied and not proc.reopened
        assert st.windows[(ts, "s1")][EVENTS] == 3 and st.windows[(ts, "s1")][LIKES] == 1 + 1_000 + 10_000
        assert st.windows[(ts + 20_000, "s1")][LIKES] == 100  # applied once
        # two messages, the second for another evicted window: the first is in when the batch stops
        batch = [Rec(3, b"s1", orjson.dumps(one_like(5, ts + 26_000)), ts),
                 Rec(4, b"s1", orjson.dumps(one_like(6, ts + 13_000)), ts)]
        with pytest.raises(WindowNotLoaded) as raised:
            proc.handle_batch("live.likes", 0, batch)
        assert raised.value.key == (ts + 10_000, "s1") and st.offset == 3
        proc.reopen(raised.value)
        proc.handle_batch("live.likes", 0, batch)
        assert st.offset == 4 and st.windows[(ts + 10_000, "s1")][EVENTS] == 2
        assert st.windows[(ts + 20_000, "s1")][EVENTS] == 2
        # the append clock of freshness counts every message once, stopped batches too
        assert sum(n for n, _, _ in proc.take_appended(proc.snapshot())) == 5
    finally:
        sink.close()


def test_the_windows_a_batch_reopens_are_read_in_one_query_and_one_read_for_nothing_is_dropped(settings: Settings) -> None:
    """Late orders come in runs (a payment system catching up). The first that needs an evicted window stops
    the batch; the worker reads that window and every other evicted window the rest of the batch touches in
    one query (found in the profile of a live feed: one query per late order, each waiting behind the
    flush's inserts, held the orders agent and with it the fetcher of every topic). Each order counts once.
    A window read for an order that turns out too late is dropped when the batch ends: kept, it would be
    taken in place of the window's newer snapshot when a later order reopens it."""
    from streamproc.core.state import GMV, PAID
    from streamproc.runtime.processor import Processor, WindowNotLoaded

    ts = int(time.time() * 1000) - 120_000
    ts -= ts % 10_000
    settings = settings.replace(idle_close_ms=0, order_dedupe_horizon_ms=60_000, closed_windows_kept=0)
    sink = open_sink(settings)
    queries: list[str] = []
    rows = sink.rows
    sink.rows = lambda sql, params=None: queries.append(sql) or rows(sql, params)  # type: ignore[method-assign]

    def paid(n: int, at: int, streamer: str = "s1") -> Rec:
        ev = order(event_id=f"e{n}", order_id=f"o{n}", ts=at, streamer_id=streamer, amount_fen=100 * n)
        return Rec(n, streamer.encode(), orjson.dumps(ev), at)

    try:
        sink.apply_schema()
        proc = Processor(settings, sink, defer_reopen=True)
        proc.assign([("live.orders", 0)])
        st = proc.states[("live.orders", 0)]
        proc.handle_batch("live.orders", 0, [paid(0, ts), paid(1, ts + 10_000), paid(2, ts + 20_000),
                                             paid(3, ts + 12_000, "s2"), paid(4, ts + 70_000)])
        snaps = proc.snapshot()
        sink.write(snaps)
        proc.flush_done(snaps)  # idle for 0 ms: every window leaves memory
        assert not st.windows
        # s1's watermark is ts + 70 s: window ts is past the 60 s horizon, ts + 10 s and ts + 20 s are not
        batch = [paid(5, ts + 10_001), paid(6, ts + 20_001), paid(7, ts + 5), paid(8, ts + 12_001, "s2"),
                 paid(9, ts + 10_002)]
        with pytest.raises(WindowNotLoaded) as raised:
            proc.handle_batch("live.orders", 0, batch)
        keys = proc.windows_to_reopen(raised.value, batch)
        assert keys == [(ts + 10_000, "s1"), (ts + 20_000, "s1"), (ts, "s1"), (ts + 10_000, "s2")]
        queries.clear()
        asyncio.run(asyncio.to_thread(proc.reopen, raised.value, keys))
        assert len(queries) == 1
        proc.handle_batch("live.orders", 0, batch)  # no other window to wait for
        assert st.offset == 9
        assert st.windows[(ts + 10_000, "s1")][PAID] == 3 and st.windows[(ts + 10_000, "s1")][GMV] == 100 + 500 + 900
        assert st.windows[(ts + 20_000, "s1")][PAID] == 2 and st.windows[(ts + 10_000, "s2")][PAID] == 2
        assert list(proc.reopened) == [("live.orders", 0, (ts, "s1"))]  # read for the order that was too late
        proc.drop_reopened("live.orders", 0)  # the worker's _finish_batch, as the batch ends
        snaps = proc.snapshot()
        sink.write(snaps)
        proc.flush_done(snaps)
        assert {k: acc[GMV] for k, acc in sink.load_windows("live.orders", 0, keys).items()} == {
            (ts, "s1"): 0, (ts + 10_000, "s1"): 1_500, (ts + 20_000, "s1"): 800, (ts + 10_000, "s2"): 1_100}
        assert not proc.reopened
    finally:
        sink.close()
