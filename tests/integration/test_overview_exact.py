"""The dashboard's answers (summary, products, funnel, sparklines of every metric, the platform filter) are
checked against the log by ``board_oracle.check_store`` as the demo runs it, and the check can fail.

A generated log (products, refunds, three platforms, malformed and late records) goes through the real
processing core into a real chDB store; its truth comes from the SQL oracle over the log file, as in
``streamproc demo --until-done``. The check passes; then each of four faults is caught and named: an order
counted twice in the store, a changed definition (average order value rounded down), sparklines that stay
on GMV whatever the metric, and a platform filter that no longer matches the dimension the log was made
with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from support.leaderboard_data import drive

from streamproc.boards import overview, queries, rollup
from streamproc.logs.logfile import write_log
from streamproc.settings import Settings
from streamproc.sim.generate import DEFAULT_START_MS, build_streamers, generate
from streamproc.store.chdb import ChdbSink
from streamproc.verify.board_oracle import DIM, BoardCheck, Truth
from streamproc.verify.exact import check_store
from streamproc.verify.oracle import RuleSet, expected_audience, expected_orders, expected_tallies
from streamproc.verify.overview_oracle import OrderFact

SEED, ROOMS, EVENTS = 4, 8, 16_000  # a fixed past start: the same log, hence the same verdicts, every run
MIN_AUDIENCE = 10


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChdbSink, Truth]]:
    path: Path = tmp_path_factory.mktemp("overview")
    records = list(generate(EVENTS, seed=SEED, start_ms=DEFAULT_START_MS, n_streamers=ROOMS))
    log = path / "events.jsonl"
    write_log(str(log), records)
    streamers = build_streamers(ROOMS, SEED)
    settings = Settings.from_env(env={}, data_dir=str(path))
    sink = ChdbSink(path / "clickhouse", database="overview")
    sink.apply_schema()
    drive(sink, settings, streamers, records, 2, lambda i: None if (i + 1) % 2_500 else (i // 2_500) % 2 == 0)
    rollup.run_once(sink)  # nothing pending: every rolled row is compared too
    rules = RuleSet.from_settings(settings)
    viewers, buyers = expected_audience(sink.rows, str(log), rules)
    truth = Truth(expected_tallies(sink.rows, str(log), rules), viewers, buyers,
                  {s.streamer_id: {c: getattr(s, c) for c in DIM} for s in streamers},
                  orders=tuple(OrderFact(*o) for o in expected_orders(sink.rows, str(log), rules)))
    yield sink, truth
    sink.close()


def check(sink: ChdbSink, truth: Truth, first_point_only: bool = False) -> BoardCheck:
    """The demo's check; ``first_point_only``: its first as_of point (the default as_of), which asks
    every board metric's sparkline and every filter's board, and no more."""
    return check_store(sink, truth, min_audience=MIN_AUDIENCE, max_mismatches=2_000,
                       as_of_points=[None] if first_point_only else None)


def named(result: BoardCheck, start: str, *parts: str) -> list[str]:
    return [m for m in result.mismatches if m.startswith(start) and all(p in m for p in parts)]


def test_the_dashboard_answers_equal_the_log_and_each_fault_is_named(store: tuple[ChdbSink, Truth],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sink, truth = store
    assert truth.orders and {f.status for f in truth.orders} == {"paid", "refunded"}
    assert len({f.product_id for f in truth.orders}) > 3 and len({d["platform"] for d in truth.streamers.values()}) > 1
    ok = check(sink, truth)
    assert ok.ok, "\n".join(ok.mismatches)
    assert ok.skipped == 0 and ok.checked > 10_000

    # a definition changed: the average order value rounded down instead of half up
    with monkeypatch.context() as m:
        m.setattr(overview, "half_up", lambda n, d: n // d)
        broken = check(sink, truth)
    assert named(broken, "summary ", " aov_fen: expected "), broken.mismatches[:5]
    assert all(x.startswith("summary ") for x in broken.mismatches), broken.mismatches[:5]

    # sparklines that stay on GMV whatever the board's metric (the page's old behaviour)
    gmv_only = queries.add_sparklines
    with monkeypatch.context() as m:
        m.setattr(queries, "add_sparklines", lambda sink, board, minutes, clk, metric, min_audience:
                  gmv_only(sink, board, minutes, clk, "gmv", min_audience))
        broken = check(sink, truth, first_point_only=True)
    assert named(broken, "leaderboard spark orders ", "spark minute"), broken.mismatches[:5]
    assert not named(broken, "leaderboard spark gmv ")

    # the platform filter: a room of the platform the check filters by (the data's most common) moves to
    # another platform in the store, not in the dimension the log was made with
    rows: dict[str, int] = {}
    for _, s in truth.tallies:
        rows[s] = rows.get(s, 0) + 1
    on: dict[str, int] = {}
    for s in rows:
        on[truth.streamers[s]["platform"]] = on.get(truth.streamers[s]["platform"], 0) + 1
    picked = min(on, key=lambda p: (-on[p], p))
    sid = max((s for s in rows if truth.streamers[s]["platform"] == picked), key=lambda s: (rows[s], s))
    dim = truth.streamers[sid]
    other = next(p for p in ("taobao", "douyin", "kuaishou") if p != picked)
    sink.command("INSERT INTO streamers (streamer_id, name, platform, province, county, village, category, updated_at) "
                 "SELECT streamer_id, name, {p:String}, province, county, village, category, updated_at + 1 "
                 "FROM streamers FINAL WHERE streamer_id = {s:String}", {"p": other, "s": sid})
    broken = check(sink, truth, first_point_only=True)
    assert any(f"platform={picked}" in x for x in broken.mismatches), broken.mismatches[:10]
    sink.command("INSERT INTO streamers (streamer_id, name, platform, province, county, village, category, updated_at) "
                 "SELECT streamer_id, name, {p:String}, province, county, village, category, updated_at + 1 "
                 "FROM streamers FINAL WHERE streamer_id = {s:String}", {"p": dim["platform"], "s": sid})
    assert check(sink, truth, first_point_only=True).ok

    # an order counted twice in the store: a copy of the busiest room's latest paid order under another
    # source offset (the check asks products unfiltered, and the funnel of that room, over its minutes)
    busiest = min(rows, key=lambda s: (-rows[s], s))
    last = max((f for f in truth.orders if f.streamer_id == busiest and f.status == "paid"), key=lambda f: f.ts)
    sink.command("INSERT INTO orders SELECT * REPLACE (src_offset + 1000000 AS src_offset) FROM orders FINAL "
                 "WHERE status = 'paid' AND streamer_id = {s:String} ORDER BY ts DESC LIMIT 1", {"s": busiest})
    broken = check(sink, truth)
    assert named(broken, "products ", f"({last.product_id}) orders: expected "), broken.mismatches[:10]
    assert named(broken, "funnel ", f"streamer_id={busiest}", "(paid) count: expected "), broken.mismatches[:10]
