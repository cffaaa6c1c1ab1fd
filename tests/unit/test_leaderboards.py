"""The query layer on real chDB, loaded by the real processing core, against a Python oracle.

The log is flushed in chunks (open windows are re-flushed as new snapshot versions) with rollup runs in
between, so these tests also prove that the 1 minute and 1 hour rollups never double count snapshots.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.helpers import ROOT
from support.leaderboard_data import METRICS, START_MS, Log, Oracle, Totals, build_log, process_into

from streamproc.boards import queries, rollup, tiles
from streamproc.boards.params import BadParameter, parse
from streamproc.metrics import REGISTRY
from streamproc.settings import Settings
from streamproc.store.chdb import ChdbSink

WINDOWS = ("1m", "5m", "1h", "today")
MID = START_MS + 97 * 60_000 + 20_000  # mid-broadcast for many rooms: audiences are not zero


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[ChdbSink, Log, Oracle]:
    path: Path = tmp_path_factory.mktemp("lb")
    sink = ChdbSink(path / "clickhouse")
    sink.apply_schema()
    log = build_log()
    process_into(sink, log, Settings.from_env(env={}, data_dir=str(path)))
    rollup.run_once(sink)
    yield sink, log, Oracle(log.events, log.streamers)
    sink.close()


def board(sink: ChdbSink, **q: str) -> list[tuple[str, object]]:
    b = queries.leaderboard(sink, parse(q, q.keys()))
    return [(r["streamer_id"], r["score"]) for r in b.rows]


@pytest.mark.parametrize("as_of", [None, MID])
def test_every_metric_and_window_equals_the_oracle(loaded, as_of) -> None:
    sink, _, oracle = loaded
    clk = queries.clock(sink)
    assert clk.newest_end == oracle.newest_end and clk.hours_upto > START_MS  # rollups are in play
    extra = {"as_of": str(as_of)} if as_of else {}
    concurrent_seen = False
    for window in WINDOWS:
        for metric in METRICS:
            got = board(sink, metric=metric, window=window, limit="15", **extra)
            want = oracle.board(metric, *oracle.window(window, as_of), limit=15)
            assert got == want, (metric, window, as_of)
            concurrent_seen |= metric == "concurrent_viewers" and want[0][1] > 0
    assert concurrent_seen or as_of is None


def test_place_filters_and_a_range_across_hours(loaded) -> None:
    sink, _, oracle = loaded
    for metric in ("gmv", "unique_viewers", "conversion"):
        assert board(sink, metric=metric, window="today", province="陕西", as_of=str(MID)) == \
            oracle.board(metric, *oracle.window("today", MID), province="陕西")
    start, end = START_MS + 5_000, START_MS + 170 * 60_000 + 3_000  # aligned out to whole windows
    t = tiles.tiles(start - 5_000, end + 7_000, queries.clock(sink))
    assert t["1h"] and t["1m"] and t["10s"]  # all three levels are read
    for metric in METRICS:
        assert board(sink, metric=metric, start=str(start), end=str(end), limit="30") == \
            oracle.board(metric, start - 5_000, end + 7_000, limit=30), metric


def test_rollups_hold_each_snapshot_once_and_a_rerun_changes_nothing(loaded) -> None:
    sink, _, oracle = loaded
    everything = oracle.totals(0, 2**62)
    gmv, likes = sum(t.gmv for t in everything.values()), sum(t.likes for t in everything.values())
    minutes = sink.rows("SELECT sum(gmv_fen), sum(likes) FROM tallies_1m FINAL")[0]
    hours_upto = queries.clock(sink).hours_upto
    in_hours = oracle.totals(0, hours_upto)
    hours = sink.rows("SELECT sum(gmv_fen), sum(likes) FROM tallies_1h FINAL")[0]
    assert tuple(map(int, minutes)) == (gmv, likes)
    assert tuple(map(int, hours)) == (sum(t.gmv for t in in_hours.values()), sum(t.likes for t in in_hours.values()))
    versions = sink.rows("SELECT count() FROM tallies_10s")[0][0], sink.rows("SELECT count() FROM tallies_10s FINAL")[0][0]
    assert versions[0] > versions[1], "the log must have been re-flushed for this test to mean anything"
    before = board(sink, metric="gmv", window="today", limit="30")
    sink.command("INSERT INTO rollup_marks SELECT now64(3), toStartOfMinute(window_start) AS m, streamer_id "
                 "FROM tallies_10s GROUP BY m, streamer_id")  # as if everything had been written again
    rollup.run_once(sink)
    assert board(sink, metric="gmv", window="today", limit="30") == before
    assert tuple(map(int, sink.rows("SELECT sum(gmv_fen), sum(likes) FROM tallies_1m FINAL")[0])) == (gmv, likes)


class _Spans:
    """A sink that records, per thread, when each of its statements ran (and makes each one slow)."""

    def __init__(self, sink: ChdbSink) -> None:
        self.sink, self.calls = sink, []

    def _timed(self, fn, *args):
        import threading
        import time

        start = time.monotonic()
        time.sleep(0.01)  # a slow store: passes that could interleave, would
        try:
            return fn(*args)
        finally:
            self.calls.append((threading.get_ident(), start, time.monotonic()))

    def rows(self, sql, params=None):
        return self._timed(self.sink.rows, sql, params)

    def command(self, sql, params=None):
        return self._timed(self.sink.command, sql, params)

    def __getattr__(self, name):
        return getattr(self.sink, name)


def test_rollup_passes_never_overlap(loaded) -> None:
    """Three passes started at once run one after another: each thread's statements form one span,
    and no two spans overlap (the store's own lock would only serialise single statements)."""
    from concurrent.futures import ThreadPoolExecutor

    sink, _, _ = loaded
    spy = _Spans(sink)
    sink.command("INSERT INTO rollup_marks SELECT now64(3), toStartOfMinute(window_start) AS m, streamer_id "
                 "FROM tallies_10s GROUP BY m, streamer_id")  # work for every pass
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: rollup.run_once(spy), range(3)))
    spans = {}
    for tid, a, b in spy.calls:
        lo, hi = spans.get(tid, (a, b))
        spans[tid] = (min(lo, a), max(hi, b))
    ordered = sorted(spans.values())
    assert len(ordered) == 3 and all(x[1] <= y[0] for x, y in zip(ordered, ordered[1:])), ordered
    assert results[0].marks > 0


def test_a_rollup_lagging_toward_the_10s_ttl_stops_it_until_caught_up(loaded) -> None:
    """10 s rows expire after 6 h: a pass that finds writes older than half of that unrolled stops TTL
    merges on the 10 s tables before rolling them, and starts them again once it has."""
    sink, _, _ = loaded
    spy = _Spans(sink)
    commands: list[str] = []
    spy.command = lambda sql, params=None: (commands.append(sql), sink.command(sql, params))[1]
    sink.command("INSERT INTO rollup_state (name, cursor, minutes_upto, hours_upto) SELECT 'default', "
                 "now64(3) - INTERVAL 5 HOUR, toDateTime(0, 'UTC'), "
                 "(SELECT argMax(hours_upto, updated_at) FROM rollup_state WHERE name = 'default')")
    sink.command("INSERT INTO rollup_marks SELECT now64(3) - INTERVAL 4 HOUR, toStartOfMinute(window_start) AS m, "
                 "streamer_id FROM tallies_10s GROUP BY m, streamer_id LIMIT 5")  # written 4 h ago, never rolled
    result = rollup.run_once(spy)
    assert result.lag_s > rollup.TTL_GUARD_S
    stops = [i for i, c in enumerate(commands) if c.startswith("SYSTEM STOP TTL MERGES")]
    starts = [i for i, c in enumerate(commands) if c.startswith("SYSTEM START TTL MERGES")]
    rolled = [i for i, c in enumerate(commands) if c.lstrip().startswith("INSERT INTO tallies_1m")]
    assert len(stops) == len(starts) == 2 and max(stops) < rolled[0] < min(starts), commands
    value = REGISTRY.get_sample_value
    assert value("streamproc_rollup_ttl_paused") == 0 and value("streamproc_rollup_lag_seconds") == 0


def test_regions_rank_places_like_the_oracle(loaded) -> None:
    sink, _, oracle = loaded
    for level, cols in (("province", ("province",)), ("county", ("province", "county")), ("category", ("category",))):
        for metric in ("gmv", "unique_viewers", "concurrent_viewers", "conversion"):
            b = queries.regions(sink, parse({"metric": metric, "window": "today", "level": level, "limit": "100",
                                             "as_of": str(MID)}, ("metric", "window", "level", "limit", "as_of")))
            got = [(tuple(r[c] for c in cols), r["score"]) for r in b.rows]
            assert got == oracle.regions(metric, *oracle.window("today", MID), level), (level, metric)


def test_session_board_sums_each_live_broadcast(loaded) -> None:
    sink, log, oracle = loaded
    b = queries.leaderboard(sink, parse({"window": "session", "limit": "100", "as_of": str(MID)},
                                        ("window", "limit", "as_of")))
    starts = oracle.sessions(MID)
    assert {r["streamer_id"] for r in b.rows} == set(starts)
    for r in b.rows:
        sid = r["streamer_id"]
        want = oracle.totals(starts[sid], MID, [sid])[sid]
        assert (r["session_start"], r["gmv_fen"], r["orders"], r["views"], r["unique_viewers"]) == \
            (starts[sid], want.gmv, want.orders, want.views, len(want.viewers)), sid
        if want.orders:  # the id its orders carry: the broadcast that is on
            latest = max((e for e in log.events if e["type"] == "order" and e["streamer_id"] == sid
                          and starts[sid] <= e["ts"] < MID), key=lambda e: e["ts"])
            assert r["session_id"] == latest["session_id"]


def test_series_and_rising_follow_the_oracle(loaded) -> None:
    sink, _, oracle = loaded
    for metric in ("gmv", "unique_viewers", "concurrent_viewers"):
        s = queries.series(sink, parse({"metric": metric, "window": "1h", "streamer_id": "s0000", "as_of": str(MID)},
                                       ("metric", "window", "streamer_id", "as_of")))
        assert len(s["points"]) == 61
        # a point is its minute up to the series' end: the newest one is the minute so far
        want = [oracle.totals(m, min(m + 60_000, s["end"]), ["s0000"]).get("s0000", Totals()).value(metric)
                for m, _ in s["points"]]
        assert [v for _, v in s["points"]] == want, metric
    region = queries.series(sink, parse({"metric": "gmv", "window": "today", "province": "陕西"},
                                        ("metric", "window", "province")))
    shaanxi = [s.streamer_id for s in oracle.dim.values() if s.province == "陕西省"]
    assert sum(v for _, v in region["points"]) == sum(t.gmv for t in oracle.totals(*oracle.window("today"), shaanxi).values())

    start, end = oracle.window("5m", MID)
    cur, prev = oracle.totals(start, end), oracle.totals(2 * start - end, start)
    growth = sorted(((-(t.gmv - (prev[s].gmv if s in prev else 0)), s) for s, t in cur.items()))
    b = queries.rising(sink, parse({"metric": "gmv", "window": "5m", "as_of": str(MID)}, ("metric", "window", "as_of")))
    assert [(r["streamer_id"], r["growth"]) for r in b.rows] == [(s, -g) for g, s in growth[:10]]
    by_rank = queries.rising(sink, parse({"metric": "gmv", "window": "5m", "as_of": str(MID), "by": "rank"},
                                         ("metric", "window", "as_of", "by")))
    rank_now = {sid: i + 1 for i, (sid, _) in enumerate(sorted(cur.items(), key=lambda kv: (-kv[1].gmv, kv[0])))}
    rank_before = {sid: i + 1 for i, (sid, _) in enumerate(sorted(prev.items(), key=lambda kv: (-kv[1].gmv, kv[0])))}
    # climbers first (most places first), then newcomers (no previous rank: no places to count), then
    # those who held or lost places; ties by the current rank
    def order(sid: str) -> tuple:
        r = rank_now[sid]
        if sid not in rank_before:
            return (1, 0, r)
        gained = rank_before[sid] - r
        return (0 if gained > 0 else 2, -gained, r)

    want = sorted(rank_now, key=order)[:10]
    assert [(r["streamer_id"], r["places_gained"], r["new"]) for r in by_rank.rows] == [
        (sid, rank_before[sid] - rank_now[sid] if sid in rank_before else None, sid not in rank_before) for sid in want]
    assert any(r["new"] for r in by_rank.rows) or all(sid in rank_before for sid in rank_now)


def test_every_rollup_level_has_its_lifetime(loaded) -> None:
    sink, _, _ = loaded
    ddl = dict(sink.rows("SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase()"))
    for table, ttl in (("tallies_10s", "toIntervalHour(6)"), ("audience_10s", "toIntervalHour(6)"),
                       ("tallies_1m", "toIntervalDay(8)"), ("audience_1m", "toIntervalDay(8)"),
                       ("tallies_1h", "toIntervalDay(400)"), ("audience_1h", "toIntervalDay(400)")):
        assert "TTL" in ddl[table] and ttl in ddl[table], (table, ddl[table])


@given(st.integers(0, 10**6), st.integers(1, 10**6), st.integers(0, 10**6),
       st.lists(st.integers(-10, 30_000), max_size=60))
def test_tiles_cover_a_range_exactly_once(a: int, length: int, h_off: int, pending_off: list[int]) -> None:
    start, end = (START_MS // 10_000 + a) * 10_000, (START_MS // 10_000 + a + length) * 10_000
    hours_upto = (START_MS // 3_600_000) * 3_600_000 + h_off * 3_600_000 // 50
    hours_upto -= hours_upto % 3_600_000
    pending = tuple(sorted({(START_MS // 60_000 + o) * 60_000 for o in pending_off}))
    t = tiles.tiles(start, end, queries.Clock(end, end, end, hours_upto, 1, pending))
    spans = sorted(r for level in t.values() for r in level)
    assert spans[0][0] == start and spans[-1][1] == end
    assert all(x[1] == y[0] for x, y in zip(spans, spans[1:]))  # contiguous, no overlap
    assert all(a % 60_000 == 0 and b % 60_000 == 0 for a, b in t["1m"])
    assert all(a % 3_600_000 == 0 and b % 3_600_000 == 0 and b <= hours_upto for a, b in t["1h"])
    # a pending minute (written after the last rollup pass) is never read from a rolled level
    assert not any(a <= m < b for m in pending for level in ("1m", "1h") for a, b in t[level])
    assert all(len(t[lv]) <= tiles.MAX_RANGES for lv in t)


@pytest.mark.parametrize("raw, bad", [
    ({"metric": "revenue"}, "metric"),
    ({"metric": "gmv'; DROP TABLE tallies_10s; --"}, "metric"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "1000"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"window": "2d"}, "window"),
    ({"province": "陕西'; DROP TABLE streamers; --"}, "province"),
    ({"start": "1000000000000", "end": "4000000000000"}, "end"),
    ({"start": "2026-11-11T10:00:00"}, "end"),
    ({"start": "2026-11-11T10:00:00", "end": "2026-11-11T09:00:00"}, "end"),
    ({"as_of": "yesterday"}, "as_of"),
    ({"colour": "red"}, "colour"),
])
def test_bad_parameters_name_themselves(raw: dict[str, str], bad: str) -> None:
    allowed = ("metric", "window", "start", "end", "as_of", "province", "limit")
    with pytest.raises(BadParameter) as exc:
        parse(raw, allowed)
    assert exc.value.name == bad and str(exc.value).startswith(bad + ":")


def _grafana_sql(sql: str, start: int, end: int, province: str) -> str:
    """A panel's SQL as the ClickHouse Grafana plugin expands it (time macros, quoted variables)."""
    quoted = "'" + province.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return (sql.replace("$__fromTime", f"toDateTime({start // 1000})").replace("$__toTime", f"toDateTime({end // 1000})")
            .replace("${province:sqlstring}", quoted).replace("${top_n}", "10"))


def test_grafana_panels_run_and_agree_with_the_query_layer(loaded) -> None:
    import json

    sink, _, oracle = loaded
    dash = json.loads((ROOT / "deploy/grafana/dashboards/leaderboards.json").read_text())
    panels = {p["title"]: p for p in dash["panels"]}
    start, end = START_MS + 60 * 60_000, START_MS + 150 * 60_000
    sqls = {t: _grafana_sql(p["targets"][0]["rawSql"], start, end, "__all")
            for t, p in panels.items() if p["datasource"]["type"] == "grafana-clickhouse-datasource"}
    for title, sql in sqls.items():
        assert sink.rows(sql) is not None, title  # every panel runs
    top = sink.rows(sqls["Top streamers by GMV (dashboard range)"])
    want = oracle.board("gmv", start, end)
    assert [(r[1], round(float(r[4]) * 100)) for r in top] == want
    per_minute = sink.rows(sqls["GMV per minute (yuan)"])
    assert round(sum(float(r[1]) for r in per_minute) * 100) == sum(t.gmv for t in oracle.totals(start, end).values())
    shaanxi = sink.rows(_grafana_sql(panels["Counties by GMV"]["targets"][0]["rawSql"], start, end, "陕西省"))
    assert [r[0] for r in shaanxi] == ["陕西省 武功县"]
