"""Every board the query layer answers equals the board model of ``board_oracle``, given the truth that
``log_model`` computes from the event log: on random small logs full of edge cases, and on the 3-hour
leaderboard log; and the check is shown to fail when one rolled-up cell is wrong. A worker killed
between a flush's window rows and the views of the same insert leaves boards that the check catches,
and that its restart puts right; so does a kill at any step of any flush of the random logs.

The logs go through the real processing core into a real chDB store. chDB allows one open store per
process, so the module opens one, applies the schema once and empties its tables before every example
(40 ms, where a fresh database with the schema costs a second).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from hypothesis import event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from support.leaderboard_data import SH, TOPIC, build_log, drive, partition_of, process_into
from support.log_model import truth_from_events

from streamproc.boards import rollup
from streamproc.boards.dimension import Streamer
from streamproc.logs.logfile import LogRecord
from streamproc.runtime.processor import Processor
from streamproc.settings import Settings
from streamproc.sim.generate import build_streamers
from streamproc.store.base import Sink
from streamproc.store.chdb import ChdbSink
from streamproc.verify.board_oracle import HOUR_MS, MINUTE_MS
from streamproc.verify.exact import check_store

MIN_AUDIENCE = 3  # small logs: some conversions shown, some under the minimum
MIDNIGHT = int(datetime(2026, 11, 12, tzinfo=SH).timestamp() * 1000)  # Asia/Shanghai midnight, an hour edge
PARTITIONS = 1  # per topic; a window is still summed over the rows of its three topics


@dataclass
class Store:
    sink: ChdbSink
    settings: Settings


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("boards")
    sink = ChdbSink(path / "clickhouse", database="boards")
    sink.apply_schema()
    yield Store(sink, Settings.from_env(env={}, data_dir=str(path)))
    sink.close()


def empty(sink: ChdbSink) -> None:
    """Every table of the store emptied (the Null input tables hold nothing, the views stay)."""
    for table, in sink.rows("SELECT name FROM system.tables WHERE database = currentDatabase() "
                            "AND engine LIKE '%MergeTree'"):
        sink.command(f"TRUNCATE TABLE {table}")


# -- random logs ---------------------------------------------------------------------------------------


@dataclass
class Scenario:
    streamers: list[Streamer]
    events: list[dict[str, Any]]  # in log order, duplicates and late ones included
    records: list[LogRecord]
    flushes: dict[int, bool]  # flush after record i; True: a rollup pass after that flush
    final_rollup: bool
    as_of: int | None  # the one as_of point checked; None: the default
    rotate: int  # which share of check_store's rotating cover this example asks


_SECOND = st.one_of(st.integers(50_000, 59_999), st.integers(0, 9_999), st.integers(0, 59_999))  # minute edges
_DELAY = st.one_of(st.just(200), st.just(200), st.integers(1_000, 25_000), st.integers(35_000, 900_000))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A few rooms over 15 minutes around midnight: enters and leaves of a small viewer pool (leaves
    without enters too), likes, paid orders (some 70 minutes old), refunds, exact re-sends of orders,
    and arrival delays within and far beyond the lateness."""
    streamers = build_streamers(draw(st.integers(3, 6)), draw(st.integers(0, 99)))
    ids = [s.streamer_id for s in streamers]
    sent: list[tuple[int, int, dict[str, Any]]] = []  # (arrival, seq, event)
    orders: dict[str, list[dict[str, Any]]] = {}
    for i in range(draw(st.integers(5, 70))):
        sid = draw(st.sampled_from(ids))
        ts = MIDNIGHT + draw(st.integers(-8, 6)) * MINUTE_MS + draw(_SECOND)
        base = {"schema_version": 1, "event_id": f"e{i}", "ts": ts, "streamer_id": sid, "session_id": f"{sid}-b",
                "viewer_id": f"u{draw(st.integers(0, 7))}"}
        kind = draw(st.sampled_from(("view", "view", "like", "order", "refund", "resend", "old_order")))
        mine = orders.setdefault(sid, [])
        if kind == "view":
            ev = {**base, "type": "view", "action": draw(st.sampled_from(("enter", "enter", "leave")))}
        elif kind == "like":
            ev = {**base, "type": "like", "count": draw(st.integers(1, 50))}
        elif kind == "resend" and mine:
            ev = draw(st.sampled_from(mine))  # the same payload, sent again
        elif kind == "refund" and mine:
            ev = {**draw(st.sampled_from(mine)), "event_id": f"e{i}", "ts": ts, "status": "refunded"}
        else:  # an old order is sent now but happened 70 minutes ago: dropped only behind a watermark
            ev = {**base, "ts": ts - HOUR_MS - 10 * MINUTE_MS if kind == "old_order" else ts, "type": "order",
                  "order_id": f"o{i}", "product_id": "p-1", "category": "fruit", "quantity": draw(st.integers(1, 3)),
                  "amount_fen": draw(st.integers(0, 50_000)), "status": "paid"}
            mine.append(ev)
        sent.append(((ts if kind == "old_order" else ev["ts"]) + draw(_DELAY), i, ev))
    sent.sort(key=lambda x: (x[0], x[1]))
    records = [LogRecord(TOPIC[ev["type"]], ev["streamer_id"].encode(), at, orjson.dumps(ev)) for at, _, ev in sent]
    flushes: dict[int, bool] = {}
    for at, roll in draw(st.lists(st.tuples(st.integers(0, len(records) - 1), st.booleans()), max_size=6)):
        flushes[at] = flushes.get(at, False) or roll
    as_of = draw(st.none() | st.integers(MIDNIGHT - 9 * MINUTE_MS, MIDNIGHT + 8 * MINUTE_MS))
    return Scenario(streamers, [ev for _, _, ev in sent], records, flushes, draw(st.booleans()), as_of,
                    draw(st.integers(0, 39)))


def feed(sink: Any, settings: Settings, sc: Scenario) -> None:
    """The scenario through the processing core with its planned flushes and rollup passes; the last
    flush may come after the last pass, leaving rolled minutes stale for the query layer to read around."""
    last = len(sc.records) - 1
    drive(sink, settings, sc.streamers, sc.records, PARTITIONS,
          lambda i: sc.final_rollup if i == last else sc.flushes.get(i))


def _pending_minutes(sink: ChdbSink) -> int:
    (n,), = sink.rows("SELECT count() FROM rollup_marks WHERE marked_at > "
                      "(SELECT argMax(cursor, updated_at) FROM rollup_state)")
    return int(n)


@hsettings(max_examples=25, deadline=None)
@given(sc=scenarios())
def test_every_board_equals_the_model_on_random_logs(store: Store, sc: Scenario) -> None:
    empty(store.sink)
    feed(store.sink, store.settings, sc)
    s = store.settings
    truth = truth_from_events(sc.events, sc.streamers, lateness_ms=s.lateness_ms,
                              dedupe_horizon_ms=s.order_dedupe_horizon_ms,
                              min_audience=MIN_AUDIENCE)
    event("stale rolled minutes" if _pending_minutes(store.sink) else "rollups current")
    result = check_store(store.sink, truth, as_of_points=[sc.as_of], min_audience=MIN_AUDIENCE, rotate=sc.rotate)
    assert result.ok, "\n".join(result.mismatches)
    assert result.checked > 0


# -- the 3-hour log, and the check failing --------------------------------------------------------------


def test_the_leaderboard_log_passes_and_a_wrong_rollup_cell_is_caught(store: Store) -> None:
    sink = store.sink
    empty(sink)
    log = build_log()
    process_into(sink, log, store.settings)
    rollup.run_once(sink)  # every minute rolled: none is skipped, so the corrupted one is compared
    truth = truth_from_events(log.events, log.streamers, min_audience=10)
    result = check_store(sink, truth, min_audience=10)
    assert result.ok, "\n".join(result.mismatches)
    assert result.skipped == 0 and result.checked > 100_000

    # a minute of the last, partial hour: boards over it read it from tallies_1m
    newest = max(w for w, _ in truth.tallies)
    minute, sid = max((w - w % MINUTE_MS, s) for (w, s), row in truth.tallies.items()
                      if row["gmv_fen"] and w // HOUR_MS == newest // HOUR_MS and w < newest - MINUTE_MS)
    sink.command("INSERT INTO tallies_1m SELECT * REPLACE (gmv_fen + 1 AS gmv_fen, version + 1 AS version) "
                 "FROM tallies_1m FINAL WHERE bucket = toDateTime({m:Int64}, 'UTC') AND streamer_id = {s:String}",
                 {"m": minute // 1000, "s": sid})
    broken = check_store(sink, truth, as_of_points=[None], min_audience=10, max_mismatches=500)
    assert not broken.ok
    named = [m for m in broken.mismatches if sid in m]
    assert any(m.startswith(f"tallies_1m [{minute} {sid}] gmv_fen") for m in named), broken.mismatches[:5]
    assert any(m.startswith("leaderboard ") and " gmv_fen: " in m for m in named), broken.mismatches[:20]


# -- a worker killed inside a flush, then started again ---------------------------------------------------


class Killed(Exception):
    """The worker process ended here."""


FLUSH_TABLES = ("viewer_sets_in", "orders", "tallies_10s", "checkpoints")  # Sink.write's inserts, in order


class KilledInFlush:
    """The store as a worker killed inside flush number ``at`` leaves it: the flush's inserts before
    ``table`` land and nothing from ``table`` on; with ``views_lost`` the rows of ``table`` land too, and
    the materialized views their insert feeds write nothing (ClickHouse writes a table, then its views,
    so a kill can fall between them: the views are detached for that one insert to put it exactly
    there); ``table=None``: killed after the whole flush, before the worker took note of it."""

    def __init__(self, sink: ChdbSink, at: int, table: str | None, views_lost: bool = False) -> None:
        self.sink, self.at, self.table, self.views_lost, self.writes = sink, at, table, views_lost, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)

    def write(self, snaps: Any) -> None:
        self.writes += 1
        Sink.write(self, snaps)  # type: ignore[arg-type]  # the real flush, through this object's insert
        if self.writes == self.at:
            raise Killed

    insert = Sink.insert  # rows become columns here, then go through insert_columns below

    def insert_columns(self, table: str, columns: Any, values: Any, settings: Any = None) -> None:
        if table != self.table or self.writes != self.at:
            return self.sink.insert_columns(table, columns, values, settings)
        if self.views_lost:
            (views,), = self.sink.rows("SELECT dependencies_table FROM system.tables "
                                       "WHERE database = currentDatabase() AND name = {t:String}", {"t": table})
            assert views, f"{table} feeds no view"
            for view in views:
                self.sink.command(f"DETACH TABLE {view}")
            try:
                self.sink.insert_columns(table, columns, values, settings)
            finally:
                for view in views:
                    self.sink.command(f"ATTACH TABLE {view}")
        raise Killed


def test_a_flush_whose_views_a_kill_lost_is_on_every_board_after_restore(store: Store) -> None:
    """The restarted worker trusts the killed flush's rows (it does not apply their events again), so it
    must write their marks and data clock again: without that, the boards over the minutes the flush
    changed keep what the rollup made of them before it."""
    sink, settings = store.sink, store.settings
    empty(sink)
    log = build_log(seed=11, n_streamers=12, span_ms=40 * MINUTE_MS)
    n, chunk = len(log.records), len(log.records) // 4 + 1
    flushes = len({i for i in range(n) if (i + 1) % chunk == 0} | {n - 1})
    killed = KilledInFlush(sink, at=flushes, table="tallies_10s", views_lost=True)  # every earlier one rolled
    with pytest.raises(Killed):
        drive(killed, settings, log.streamers, log.records, 2, lambda i: True if (i + 1) % chunk == 0 else None)
    truth = truth_from_events(log.events, log.streamers, min_audience=10)
    rollup.run_once(sink)
    lost = check_store(sink, truth, as_of_points=[None], min_audience=10)
    assert not lost.ok, "the simulated kill left every board right: it did not land between rows and views"

    resume = Processor(settings, sink).assign([(t, p) for t in TOPIC.values() for p in range(2)])
    sent = Counter(partition_of(r, 2) for r in log.records)
    assert resume == {tp: sent[tp] for tp in resume}  # the killed flush's events are not applied again
    rollup.run_once(sink)
    result = check_store(sink, truth, min_audience=10)
    assert result.ok, "\n".join(result.mismatches)
    assert result.skipped == 0 and result.checked > 10_000


KILL_POINTS = [(t, False) for t in FLUSH_TABLES] + [("tallies_10s", True), (None, False)]


@hsettings(max_examples=20, deadline=None)
@given(sc=scenarios(), data=st.data())
def test_a_kill_anywhere_in_a_flush_then_a_restart_leaves_every_board_exact(store: Store, sc: Scenario,
                                                                              data: st.DataObject) -> None:
    """Random logs, killed at a random flush before any of its inserts, between the window rows and
    their views, or after it; maybe a rollup pass (another worker's) before the restart; the restarted
    worker reads the rest of the log from where the store says each partition resumes. Every board
    equals the model of the log, each event counted once."""
    empty(store.sink)
    last = len(sc.records) - 1
    at = data.draw(st.integers(1, len({*sc.flushes, last})), label="killed in flush")
    table, views_lost = data.draw(st.sampled_from(KILL_POINTS), label="before the insert into")
    event(f"killed {'after the rows of' if views_lost else 'before'} {table or 'the worker took note'}")
    killed = KilledInFlush(store.sink, at, table, views_lost)
    with pytest.raises(Killed):
        feed(killed, store.settings, sc)
    if data.draw(st.booleans(), label="a rollup pass before the restart"):
        rollup.run_once(store.sink)
    drive(store.sink, store.settings, sc.streamers, sc.records, PARTITIONS,
          lambda i: True if i == last else None, restart=True)
    s = store.settings
    truth = truth_from_events(sc.events, sc.streamers, lateness_ms=s.lateness_ms,
                              dedupe_horizon_ms=s.order_dedupe_horizon_ms, min_audience=MIN_AUDIENCE)
    result = check_store(store.sink, truth, as_of_points=[sc.as_of], min_audience=MIN_AUDIENCE, rotate=sc.rotate)
    assert result.ok, "\n".join(result.mismatches)
    assert result.checked > 0
