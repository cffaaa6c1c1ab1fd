"""Every ClickHouse panel of the shipped Grafana dashboard, run on a real chDB store that the real processing
core filled, against the project's own query layer (boards/queries.py) and the leaderboard oracle.

The store is made to hold what a live one holds, and the old panels got wrong:

* three streamers are missing from the ``streamers`` dimension table (a room that went live before the
  dimension was loaded): under "All" every panel counts them, as the API does;
* the log ends in the middle of a minute: that minute is still filling, so the GMV-per-minute series
  ends before it (a partial minute would show as a false dip), where the API's series shows it as
  "the minute so far";
* the last rollup pass ran well before the last flush: minutes written since are pending and their
  ``tallies_1m`` rows are stale or missing, so a panel that read them there would be wrong (checked).

The panels' SQL is expanded as the ClickHouse data source plugin expands it (time macros, the quoted
province variable). The dashboard treats marks up to 5 s older than the rollup cursor as pending (the
visibility lag of a ClickHouse server, ``ClickHouseSink.visibility_lag_ms``); each check also runs with
the embedded store's 0 s, so that minutes really are read from ``tallies_1m`` too.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from support.helpers import ROOT
from support.leaderboard_data import START_MS, Log, Oracle, build_log, drive

from streamproc.boards import queries
from streamproc.boards.params import Request, parse
from streamproc.settings import Settings
from streamproc.store.chdb import ChdbSink
from streamproc.store.clickhouse import ClickHouseSink

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "leaderboards.json"
CH = "grafana-clickhouse-datasource"
CUT = START_MS + 170 * 60_000 + 37_000  # the log is cut here (send time): its newest minute is partial
DROPPED = 3  # the first streamers of the log (the busiest) are left out of the dimension table
AS_OF = START_MS + 131 * 60_000 + 25_000  # a dashboard end inside the data, mid-minute, not on 10 s
OVERLAPS = (ClickHouseSink.visibility_lag_ms // 1000, ChdbSink.visibility_lag_ms // 1000)  # 5 s as shipped; 0 s
SHAANXI = "陕西省"
KPIS = ("GMV today", "Paid orders today", "Paying buyers today", "Average order value today", "Online now",
        "Refunds today")


def panels() -> dict[str, dict[str, Any]]:
    dash = json.loads(DASHBOARD.read_text())
    return {p["title"]: p for p in dash["panels"]}


def expand(sql: str, start_ms: int, end_ms: int, province: str = "__all", overlap_s: int = OVERLAPS[0]) -> str:
    """A panel's SQL as the ClickHouse Grafana plugin sends it, with the pending-mark overlap ``overlap_s``."""
    shipped = f"INTERVAL {OVERLAPS[0]} SECOND"
    assert shipped in sql or "rollup_marks" not in sql
    quoted = "'" + province.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return (sql.replace("$__fromTime", f"toDateTime({start_ms // 1000})")
            .replace("$__toTime", f"toDateTime({end_ms // 1000})")
            .replace("${province:sqlstring}", quoted).replace("${top_n}", "10")
            .replace(shipped, f"INTERVAL {overlap_s} SECOND"))


def run(sink: ChdbSink, title: str, start_ms: int, end_ms: int, **kw: Any) -> list[tuple]:
    return sink.rows(expand(panels()[title]["targets"][0]["rawSql"], start_ms, end_ms, **kw))


def request(**q: str) -> Request:
    return parse(q, q.keys())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path: Path = tmp_path_factory.mktemp("grafana")
    full = build_log()
    n = sum(1 for r in full.records if r.ts < CUT)
    assert all(r.ts >= CUT for r in full.records[n:])  # records are in send order: the cut keeps a prefix
    log = Log(full.records[:n], full.events[:n], full.streamers)
    sink = ChdbSink(path / "clickhouse")
    sink.apply_schema()
    chunk, quiet_tail = 1_500, 4_000

    def plan(i: int) -> bool | None:  # a flush every chunk records; a rollup every third, none near the end
        if (i + 1) % chunk and i + 1 != n:
            return None
        return ((i + 1) // chunk) % 3 == 0 and i + 1 < n - quiet_tail

    proc = drive(sink, Settings.from_env(env={}, data_dir=str(path)), log.streamers[DROPPED:], log.records, 4, plan)
    assert proc.counts["rejected"] == 0, proc.counts
    yield sink, Oracle(log.events, log.streamers), {s.streamer_id for s in log.streamers[:DROPPED]}
    sink.close()


def test_the_store_holds_what_the_panels_must_get_right(store) -> None:
    sink, oracle, dropped = store
    clk = queries.clock(sink)
    assert clk.newest_end == oracle.newest_end and clk.newest_end % 60_000, "the newest minute must be partial"
    day = queries.leaderboard(sink, request(metric="gmv", window="today")).start
    pending_today = [m for m in clk.pending_minutes if m >= day]
    assert pending_today and clk.rollup_cursor > 0
    # reading tallies_1m alone would be wrong today: pending minutes there are stale or missing
    (naive,), = sink.rows(f"SELECT sum(gmv_fen) FROM tallies_1m FINAL WHERE bucket >= toDateTime({day // 1000}) "
                          f"AND bucket < toDateTime({clk.newest_end // 1000})")
    today = oracle.totals(day, clk.newest_end)
    assert int(naive) != sum(t.gmv for t in today.values())
    # the streamers missing from the dimension sell today and in the last hour
    assert not sink.rows("SELECT streamer_id FROM streamers FINAL WHERE streamer_id IN ('" + "','".join(dropped) + "')")
    assert all(today[s].gmv > 0 for s in dropped)
    assert sum(t.gmv for s, t in oracle.totals(clk.newest_end - 3_600_000, clk.newest_end).items() if s in dropped) > 0


@pytest.mark.parametrize("overlap_s", OVERLAPS)
def test_every_clickhouse_panel_runs(store, overlap_s: int) -> None:
    sink, _, _ = store
    end = queries.clock(sink).newest_end
    found = {t: p for t, p in panels().items() if p["datasource"]["type"] == CH}
    assert set(KPIS) <= set(found) and "GMV per minute (yuan)" in found
    for title in found:
        for province in ("__all", SHAANXI, "O'Brien \\ county"):  # a quote and a backslash stay inside the string
            rows = run(sink, title, end - 3 * 3_600_000, end + 7_200_000, province=province, overlap_s=overlap_s)
            assert rows is not None, title
            if province == "__all":
                assert rows, title


def gmv_minutes(rows: list[tuple]) -> list[tuple[int, int]]:
    """(minute start ms, fen) of the GMV-per-minute panel's rows."""
    utc = datetime.fromisoformat  # the panel's time is DateTime('UTC'), read back as 'YYYY-MM-DD hh:mm:ss'
    return [(int(utc(str(t)).replace(tzinfo=timezone.utc).timestamp() * 1000), round(float(yuan) * 100))
            for t, yuan in rows]


@pytest.mark.parametrize("overlap_s", OVERLAPS)
@pytest.mark.parametrize("dashboard_end", ["after the data", "inside the data"])
@pytest.mark.parametrize("province", ["__all", SHAANXI])
def test_gmv_per_minute_is_the_api_series_without_the_unfinished_minute(store, overlap_s: int, dashboard_end: str,
                                                                         province: str) -> None:
    sink, oracle, dropped = store
    newest = queries.clock(sink).newest_end
    # Grafana's end is the wall clock (long after a replayed log's data) or a range the user picked
    to = newest + 7_200_000 if dashboard_end == "after the data" else AS_OF
    end = min(to, newest)
    start = end - 95 * 60_000 + 13_000
    got = gmv_minutes(run(sink, "GMV per minute (yuan)", start, to, province=province, overlap_s=overlap_s))

    place = {} if province == "__all" else {"province": province}
    api = queries.series(sink, request(metric="gmv", start=str(start), end=str(end), **place))["points"]
    unfinished = end - end % 60_000
    assert end % 60_000 and api[-1][0] == unfinished  # the API shows the minute so far ...
    assert got == [(m, v) for m, v in api if m < unfinished]  # ... the panel ends before it, zeros included
    assert got[0][0] == start - start % 60_000 and len(got) == 95
    who = None if province == "__all" else [s for s, d in oracle.dim.items()
                                            if d.province == province and s not in dropped]
    assert got == [(m, sum(t.gmv for t in oracle.totals(m, m + 60_000, who).values())) for m, _ in got]
    if province == "__all":  # the streamers missing from the dimension are in it
        assert sum(t.gmv for s, t in oracle.totals(got[0][0], unfinished).items() if s in dropped) > 0


def kpis(sink: ChdbSink, to: int, province: str, overlap_s: int) -> dict[str, tuple]:
    out = {}
    for title in KPIS:
        (row,) = run(sink, title, to - 3_600_000, to, province=province, overlap_s=overlap_s)
        out[title] = row
    return out


@pytest.mark.parametrize("overlap_s", OVERLAPS)
@pytest.mark.parametrize("dashboard_end", ["after the data", "inside the data"])
def test_kpis_equal_the_query_layer_and_the_oracle_for_today(store, overlap_s: int, dashboard_end: str) -> None:
    sink, oracle, _ = store
    newest = queries.clock(sink).newest_end
    to = newest + 7_200_000 if dashboard_end == "after the data" else AS_OF
    as_of = {} if dashboard_end == "after the data" else {"as_of": str(AS_OF)}
    k = kpis(sink, to, "__all", overlap_s)

    board = queries.leaderboard(sink, request(metric="gmv", window="today", limit="100", **as_of))
    rows = board.rows
    assert 0 < len(rows) < 100  # every streamer of the day is on it
    truth = oracle.totals(board.start, board.end)
    gmv, orders = sum(r["gmv_fen"] for r in rows), sum(r["orders"] for r in rows)
    online = sum(r["concurrent_viewers"] for r in rows)
    assert gmv == sum(t.gmv for t in truth.values()) and orders == sum(t.orders for t in truth.values()) > 0

    assert round(float(k["GMV today"][0]) * 100) == gmv
    assert int(k["Paid orders today"][0]) == orders
    assert float(k["Average order value today"][0]) == gmv / orders / 100
    assert int(k["Online now"][0]) == online == sum(t.close for t in truth.values())
    if as_of:
        assert online > 0  # mid-broadcast for many rooms
    buyers = set().union(*(t.buyers for t in truth.values()))
    assert int(k["Paying buyers today"][0]) == len(buyers) < sum(r["buyers"] for r in rows)  # distinct across rooms
    refunds = [(sid, ts, p) for sid, ts, kind, p in oracle.facts
               if kind == "refunded" and board.start <= ts < board.end]
    assert refunds
    assert int(k["Refunds today"][0]) == len(refunds)
    assert round(float(k["Refunds today"][1]) * 100) == sum(amount for _, _, (amount, _) in refunds)


@pytest.mark.parametrize("overlap_s", OVERLAPS)
def test_kpis_of_a_province_equal_its_board(store, overlap_s: int) -> None:
    sink, _, _ = store
    newest = queries.clock(sink).newest_end
    k = kpis(sink, newest + 7_200_000, SHAANXI, overlap_s)
    rows = queries.leaderboard(sink, request(metric="gmv", window="today", limit="100", province=SHAANXI)).rows
    assert rows
    assert round(float(k["GMV today"][0]) * 100) == sum(r["gmv_fen"] for r in rows)
    assert int(k["Paid orders today"][0]) == sum(r["orders"] for r in rows)
    assert int(k["Online now"][0]) == sum(r["concurrent_viewers"] for r in rows)
    region = queries.regions(sink, request(metric="buyers", window="today", level="province", province=SHAANXI,
                                           limit="100")).rows
    assert [int(k["Paying buyers today"][0])] == [r["buyers"] for r in region]
