"""Window assignment, lateness, money arithmetic and snapshot/restore of one partition's state."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from support import helpers
from support.helpers import typed

from streamproc.boards import rollup
from streamproc.core.state import (
    CLOSE,
    DIRTY,
    ENTERS,
    EVENTS,
    GMV,
    ITEMS,
    LEAVES,
    LIKES,
    N_SLOTS,
    PAID,
    PEAK,
    REFUND,
    REFUNDED,
    TALLY_COLUMNS,
    TOUCHED,
    PartitionState,
    Rules,
)
from streamproc.core.windows import is_late, window_closed, window_start
from streamproc.ingest.events import Like, Order, View
from streamproc.store.base import DDL_DIR
from streamproc.store.chdb import ChdbSink

T0 = 1_763_900_000_000  # a window boundary (divisible by 10 s)


def order(ts: int, oid: str, amount: int, qty: int, status: str, streamer: str = "s1") -> Order:
    return typed(helpers.order(event_id=f"e-{oid}-{status}", ts=ts, streamer_id=streamer, order_id=oid,
                               product_id="kiwi", quantity=qty, amount_fen=amount, status=status))


def paid(ts: int, oid: str, amount: int, qty: int = 1, streamer: str = "s1") -> Order:
    return order(ts, oid, amount, qty, "paid", streamer)


def refund(ts: int, oid: str, amount: int, qty: int = 1) -> Order:
    return order(ts, oid, amount, qty, "refunded")


def like(ts: int, streamer: str, count: int) -> Like:
    return typed(helpers.like(event_id=f"l{ts}", ts=ts, streamer_id=streamer, count=count))


def view(ts: int, streamer: str, viewer: str, enter: bool) -> View:
    return typed(helpers.view(event_id=f"v{ts}", ts=ts, streamer_id=streamer, viewer_id=viewer,
                              action="enter" if enter else "leave"))


def test_window_assignment_is_by_event_time() -> None:
    assert window_start(T0, 10_000) == T0
    assert window_start(T0 + 9_999, 10_000) == T0
    assert window_start(T0 + 10_000, 10_000) == T0 + 10_000
    assert window_start(T0 - 1, 10_000) == T0 - 10_000


def test_lateness_is_relative_to_the_streamers_own_watermark() -> None:
    assert not is_late(T0, None, 30_000)  # first event of a key
    assert not is_late(T0 - 30_000, T0, 30_000)  # exactly at the bound: accepted
    assert is_late(T0 - 30_001, T0, 30_000)
    assert window_closed(T0, T0 + 40_000, 10_000, 30_000)
    assert not window_closed(T0, T0 + 39_999, 10_000, 30_000)


def test_late_events_are_refused_and_do_not_move_state() -> None:
    st = PartitionState("live.likes", 0, Rules())
    assert st.apply(0, like(T0 + 60_000, "s1", 1))
    assert st.apply(1, like(T0 + 31_000, "s1", 2))  # 29 s behind: out of order, accepted
    assert not st.apply(2, like(T0 + 29_000, "s1", 4))  # 31 s behind: late
    assert st.apply(3, like(T0, "s2", 8))  # another streamer has its own watermark
    assert st.offset == 3
    assert st.windows[(T0 + 60_000, "s1")][LIKES] == 1
    assert st.windows[(T0 + 30_000, "s1")][LIKES] == 2
    assert (T0 + 20_000, "s1") not in st.windows
    assert st.windows[(T0, "s2")][LIKES] == 8


def test_orders_count_once_and_refunds_subtract_in_fen() -> None:
    st = PartitionState("live.orders", 0, Rules())
    st.apply(0, paid(T0 + 1, "o1", 3990, qty=2))
    st.apply(1, paid(T0 + 1, "o1", 3990, qty=2))  # payment callback retried
    st.apply(2, paid(T0 + 2, "o2", 12_800))
    st.apply(3, refund(T0 + 3, "o1", 3990, qty=2))
    st.apply(4, refund(T0 + 4, "o1", 3990, qty=2))  # refund notice retried
    acc = st.windows[(T0, "s1")]
    assert (acc[PAID], acc[REFUNDED], acc[ITEMS], acc[GMV], acc[REFUND], acc[EVENTS]) == (2, 1, 1, 12_800, 3990, 5)
    assert all(type(v) is int for v in acc[:N_SLOTS])  # fen stay integers, never floats
    assert len(st.pending_orders) == 3  # first occurrences only


def test_concurrent_viewers_run_in_log_order() -> None:
    st = PartitionState("live.views", 0, Rules())
    for off, (dt, viewer, enter) in enumerate([(0, "a", True), (1, "b", True), (2, "c", True), (3, "a", False),
                                               (10_001, "d", True), (10_002, "b", False), (10_003, "c", False)]):
        st.apply(off, view(T0 + dt, "s1", viewer, enter))
    w0, w1 = st.windows[(T0, "s1")], st.windows[(T0 + 10_000, "s1")]
    assert (w0[ENTERS], w0[LEAVES], w0[PEAK], w0[CLOSE]) == (3, 1, 3, 2)
    assert (w1[ENTERS], w1[LEAVES], w1[PEAK], w1[CLOSE]) == (1, 2, 3, 1)
    assert st.viewer_sets == {(T0, "s1"): dict.fromkeys("abc"), (T0 + 10_000, "s1"): {"d": None}}
    assert st.new_viewers == 4


def test_a_viewer_goes_to_the_store_once_per_flush_and_the_state_keeps_no_viewer_past_a_snapshot() -> None:
    st = PartitionState("live.views", 0, Rules())
    for off, viewer in enumerate(["a", "a", "b", "a"]):  # repeated enters: one row each per flush
        st.apply(off, view(T0 + off, "s1", viewer, True))
    first = st.snapshot()
    assert first.viewers == {(T0, "s1"): dict.fromkeys("ab")} and first.viewer_ids == 2  # one row per window
    assert st.viewer_sets == {} and st.new_viewers == 0  # the store holds them now, a set (uniqExact)
    st.flush_done(first)
    for off, viewer in enumerate(["a", "c", "c"], start=4):
        st.apply(off, view(T0 + off, "s1", viewer, True))
    assert st.snapshot().viewers == {(T0, "s1"): dict.fromkeys("ac")}  # "a" again: harmless to a set
    assert st.windows[(T0, "s1")][ENTERS] == 7  # the tallies count every enter


def test_failed_flush_keeps_everything_for_the_next_one() -> None:
    st = PartitionState("live.orders", 0, Rules())
    st.apply(0, paid(T0, "o1", 100))
    snap = st.snapshot()
    st.apply(1, paid(T0 + 1, "o2", 200))
    st.flush_failed(snap)
    again = st.snapshot()
    assert again.offset == 1
    assert [r[4] for r in again.orders] == ["o1", "o2"]
    assert len(again.tallies) == 1 and again.tallies[0][4] == 1  # version = last applied offset


def test_a_failed_flush_gives_its_viewers_back_merged_with_the_new_ones() -> None:
    st = PartitionState("live.views", 0, Rules())
    for off, viewer in enumerate(["a", "b"]):
        st.apply(off, view(T0 + off, "s1", viewer, True))
    snap = st.snapshot()
    for off, viewer in enumerate(["b", "c"], start=2):  # "b" again after the snapshot, "c" new
        st.apply(off, view(T0 + off, "s1", viewer, True))
    st.flush_failed(snap)
    assert st.new_viewers == st.buffered_rows - len(st.dirty) == 3  # a, b, c once each
    again = st.snapshot()
    assert again.viewers == {(T0, "s1"): dict.fromkeys("abc")} and again.viewer_ids == 3 and again.rows == 4
    st.flush_failed(again)
    st.apply(4, view(T0 + 4, "s1", "d", True))  # the sets given back are copies: the snapshot stays as taken
    assert again.viewers == {(T0, "s1"): dict.fromkeys("abc")}
    assert st.snapshot().viewers == {(T0, "s1"): dict.fromkeys("abcd")}


@pytest.fixture
def sink(tmp_path: Path) -> ChdbSink:
    s = ChdbSink(tmp_path / "ch", "t")
    s.apply_schema()
    yield s
    s.close()


def test_snapshot_restore_round_trip_through_chdb(sink: ChdbSink) -> None:
    rules = Rules()
    st = PartitionState("live.orders", 3, rules, sink.load_window)
    st.apply(10, paid(T0 + 5, "o1", 3990))
    st.apply(11, paid(T0 + 15_000, "o2", 1000))
    snap = st.snapshot()
    sink.write([snap])
    st.flush_done(snap)
    st.apply(12, paid(T0 + 15_001, "o3", 500))  # applied but never flushed: lost with the process
    snap2 = st.snapshot()  # taken, then the process "dies" before writing it
    assert snap2 is not None

    r = sink.restore("live.orders", 3, rules.window_ms, rules.lateness_ms, rules.order_dedupe_horizon_ms)
    assert r.offset == 11
    fresh = PartitionState("live.orders", 3, rules, sink.load_window)
    fresh.restore(r.offset, r.windows, r.streamers, r.orders)
    assert set(fresh.orders_seen) == {("o1", "paid"), ("o2", "paid")}
    assert fresh.windows[(T0 + 10_000, "s1")][GMV] == 1000
    # replaying from checkpoint + 1 reproduces the lost event exactly once; a duplicate stays out
    fresh.apply(12, paid(T0 + 15_001, "o3", 500))
    fresh.apply(13, paid(T0 + 5, "o1", 3990))
    assert fresh.windows[(T0 + 10_000, "s1")][GMV] == 1500
    assert fresh.windows[(T0, "s1")][GMV] == 3990


def test_viewer_sets_and_the_previous_rows_per_viewer_make_one_exact_audience(sink: ChdbSink) -> None:
    """Flushes send a window's new viewers as one array row; a writer of the previous version sends a
    row per viewer to viewers_in during an upgrade. Every level counts each viewer once, from both: the
    10 s level as written, the minute and the hour after rollup passes, however many."""
    st = PartitionState("live.views", 0, Rules())
    for off, (dt, viewer) in enumerate([(0, "a"), (1, "b"), (2, "a"), (10_000, "c")]):
        st.apply(off, view(T0 + dt, "s1", viewer, True))
    first = st.snapshot()
    sink.write([first])
    st.flush_done(first)
    assert st.apply(4, view(T0 + 3, "s1", "d", True)) and st.apply(5, view(T0 + 3_600_000, "s1", "a", True))
    sink.write([st.snapshot()])  # a second row for the window T0: "d" joins a, b
    sink.insert("viewers_in", ("window_start", "streamer_id", "viewer_id"), [(T0, "s1", "b"), (T0, "s1", "e")])

    def audience(table: str, key: str) -> dict[int, int]:
        return {int(k): int(n) for k, n in sink.rows(
            f"SELECT toUnixTimestamp({key}), uniqExactMerge(viewers) FROM {table} GROUP BY {key}")}

    t = T0 // 1000  # 20 s into its minute, 800 s into its hour: T0 and T0 + 10 s share both
    assert audience("audience_10s", "window_start") == {t: 4, t + 10: 1, t + 3600: 1}  # a b d e; c; a
    assert audience("audience_1m", "bucket") == {} == audience("audience_1h", "bucket")  # not rolled yet
    rollup.run_once(sink)
    assert audience("audience_1m", "bucket") == {t - 20: 5, t - 20 + 3600: 1}
    assert audience("audience_1h", "bucket") == {t - 800: 5, t - 800 + 3600: 1}
    st.apply(6, view(T0 + 3_600_001, "s1", "f", True))  # after the pass: the next one adds "f" and only it
    sink.write([st.snapshot()])
    rollup.run_once(sink)
    rollup.run_once(sink)
    assert audience("audience_1m", "bucket") == {t - 20: 5, t - 20 + 3600: 2}
    assert audience("audience_1h", "bucket") == {t - 800: 5, t - 800 + 3600: 2}


def test_a_store_upgraded_to_rolled_audiences_keeps_every_level_exact(tmp_path: Path) -> None:
    """Audiences written while views fed every level (migrations up to 004), then the migration that hands
    the minute and hour to the rollup pass, then more writes: each level counts each viewer once."""
    before = tmp_path / "ddl"
    before.mkdir()
    for ddl in sorted(DDL_DIR.glob("*.sql"))[:4]:
        (before / ddl.name).write_text(ddl.read_text())
    assert (before / "004_viewer_sets.sql").exists()
    store = ChdbSink(tmp_path / "ch", "u")
    try:
        store.apply_schema(before)
        st = PartitionState("live.views", 0, Rules())
        for off, viewer in enumerate(["a", "b"]):
            st.apply(off, view(T0 + off, "s1", viewer, True))
        store.write([st.snapshot()])  # the views put a, b into every level
        assert store.apply_schema() == ["005_audience_rollup.sql"]
        for off, viewer in enumerate(["b", "c"], start=2):
            st.apply(off, view(T0 + 10_000 + off, "s1", viewer, True))
        store.write([st.snapshot()])
        rollup.run_once(store)
        assert store.rows("SELECT count() FROM audience_10s WHERE written_at = 0")[0][0] == 1  # a, b: old
        for table in ("audience_1m", "audience_1h"):
            assert store.rows(f"SELECT uniqExactMerge(viewers) FROM {table}")[0][0] == 3, table  # a b c
    finally:
        store.close()


def test_restore_trusts_rows_written_after_the_last_checkpoint(sink: ChdbSink) -> None:
    """A crash between the window rows and the checkpoint: the rows' version is the resume point."""
    st = PartitionState("live.likes", 0, Rules())
    st.apply(0, like(T0, "s1", 5))
    snap = st.snapshot()
    sink.insert("tallies_10s", TALLY_COLUMNS, snap.tallies)
    r = sink.restore("live.likes", 0, 10_000, 30_000, 3_600_000)
    assert r.offset == 0 and r.windows[(T0, "s1")][LIKES] == 5


@pytest.mark.parametrize("kept", [0, 16], ids=["read-from-the-store", "kept-in-memory"])
def test_idle_closed_window_reopens_from_its_snapshot(sink: ChdbSink, kept: int) -> None:
    rules = Rules(idle_close_ms=0, closed_windows_kept=kept)
    st = PartitionState("live.likes", 0, rules, sink.load_window)
    st.apply(0, like(T0 + 1, "s1", 3))
    snap = st.snapshot()
    sink.write([snap])
    assert st.flush_done(snap, now=10**9) == 1  # idle: closed and evicted
    assert not st.windows
    st.apply(1, like(T0 + 2, "s1", 4))  # still within lateness: the window comes back, not from zero
    assert st.windows[(T0, "s1")][LIKES] == 7
    assert st.reopens == ([1, 0] if kept else [0, 1]) and not st.closed


def test_closed_windows_are_kept_as_the_store_holds_them_while_an_event_can_reach_them(sink: ChdbSink) -> None:
    """A window kept after closing stands in for a read of the store, so it must be exactly the store's
    snapshot; kept only while an event could still reach it (orders: the dedupe horizon; views and likes:
    the lateness), at most ``closed_windows_kept`` per partition, the oldest dropped first."""
    rules = Rules(idle_close_ms=0, closed_windows_kept=5)
    orders = PartitionState("live.orders", 0, rules, sink.load_window)
    likes = PartitionState("live.likes", 0, rules, sink.load_window)
    for i in range(8):  # eight windows of orders, one per 10 s, then an order an hour later
        orders.apply(i, paid(T0 + i * 10_000 + 7, f"o{i}", 100 + i))
        likes.apply(i, like(T0 + i * 10_000 + 7, "s1", i + 1))
    for st in (orders, likes):
        snap = st.snapshot()
        sink.write([snap])
        st.flush_done(snap)  # idle for 0 ms: every window closes
    assert not orders.windows and not likes.windows
    # a like can reach back 30 s behind its watermark (T0 + 70 s), so the four newest windows
    assert sorted(k[0] for k in likes.closed) == [T0 + i * 10_000 for i in range(4, 8)]
    # an order an hour: all eight could be reached, five are kept, the oldest gone first
    assert sorted(k[0] for k in orders.closed) == [T0 + i * 10_000 for i in range(3, 8)]
    for st in (orders, likes):
        for key, acc in st.closed.items():
            assert acc[:N_SLOTS] == sink.load_window(st.topic, 0, key)
    orders.apply(8, paid(T0 + 3_600_000 + 30_000, "o8", 1))
    snap = orders.snapshot()
    sink.write([snap])
    orders.flush_done(snap)
    assert sorted(k[0] for k in orders.closed) == [T0 + i * 10_000 for i in range(4, 8)] + [T0 + 3_630_000]
    orders.apply(9, paid(T0 + 40_001, "o9", 1_000))  # a late payment, within the horizon: from memory
    assert orders.reopens == [1, 0] and orders.windows[(T0 + 40_000, "s1")][GMV] == 104 + 1_000
    orders.apply(10, paid(T0 + 30_001, "o10", 1_000))  # its window was dropped: read from the store
    assert orders.reopens == [1, 1] and orders.windows[(T0 + 30_000, "s1")][GMV] == 103 + 1_000


def _old_eviction(st: PartitionState, now: float) -> set:
    """The windows the pass over every window closed, before the start index and the idle floor."""
    rules = st.rules
    idle_before = int((now - rules.idle_close_ms / 1000) * 1e9)
    span = rules.window_ms + rules.lateness_ms
    return {k for k, acc in st.windows.items() if acc[DIRTY] != st.generation
            and (acc[TOUCHED] < idle_before or k[0] + span <= st.watermark[k[1]])}


@pytest.mark.parametrize("seed", range(12))
def test_eviction_by_the_start_index_closes_what_the_pass_over_every_window_closed(seed: int) -> None:
    """Random streams (out of order, late, idle streamers, flushes at any moment, some long after): every
    flush leaves exactly the windows the pass over every window left, the index names exactly the open
    windows, and the orders forgotten are those of the old rule."""
    rng = random.Random(seed)
    topic = "live.orders" if seed % 2 else "live.views"
    rules = Rules(idle_close_ms=rng.choice([0, 20, 60_000]), order_dedupe_horizon_ms=60_000, closed_windows_kept=50)
    st = PartitionState(topic, 0, rules)
    offset, base = 0, T0
    paths = {"every": 0, "index": 0}
    for round_ in range(40):
        active = [f"s{i}" for i in rng.sample(range(30), rng.randint(1, 12))]  # the others sit idle
        for _ in range(rng.randint(0, 120)):
            streamer = rng.choice(active)
            on_boundary = rng.random() < 0.5  # window and lateness boundaries hit exactly, half the time
            ts = base + (rng.randint(-9, 3) * 5_000 if on_boundary else rng.randint(-45_000, 15_000))
            if topic == "live.orders":
                ev: Order | View = paid(ts, f"o{rng.randint(0, 3_000)}", 100, streamer=streamer)
            else:
                ev = view(ts, streamer, f"v{rng.randint(0, 50)}", rng.random() < 0.6)
            st.apply(offset, ev)
            offset += 1
        base += rng.randint(0, 4) * 5_000
        if rng.random() < 0.2:
            time.sleep(0.03)  # past an idle close of 20 ms
        snap = st.snapshot()
        for k in list(st.windows)[:rng.randint(0, 3)]:  # changed after the snapshot: not evicted
            st.windows[k][DIRTY] = st.generation
            st.dirty.append(st.windows[k])
        now = time.monotonic() + rng.choice([0, 0, 0, 3600])
        expected = set(st.windows) - _old_eviction(st, now)
        orders = {k: v for k, v in st.orders_seen.items() if v[0] >= st.watermark[v[1]] - 60_000}
        paths["every" if int((now - rules.idle_close_ms / 1000) * 1e9) > st.idle_floor else "index"] += 1
        many = len(st.orders_seen) > 1024
        st.flush_done(snap, now=now)
        assert set(st.windows) == expected, round_
        assert {(start, s) for start, streamers in st.by_start.items() for s in streamers} == expected
        if many:
            assert st.orders_seen == orders, round_
    assert paths["index"] or rules.idle_close_ms < 60_000, paths  # a long idle close takes the index's way
