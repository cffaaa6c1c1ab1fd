"""The leaderboard HTTP API of a real worker (embedded broker, Faust, chDB) against the Python oracle.

One worker is fed the test log; every metric and window the API offers must equal the oracle's batch
computation over the same events. Then bad and hostile parameters: each gets a 400 naming the
parameter, and nothing in the store changes.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from support.helpers import isolated_settings
from support.leaderboard_data import METRICS, START_MS, Oracle, Totals, build_log, get_json, settled_worker
from support.sockets import listening_hosts

from streamproc.settings import Settings
from streamproc.web.openapi import ENDPOINTS

MID = START_MS + 97 * 60_000 + 20_000


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp: Path = tmp_path_factory.mktemp("api")
    settings = isolated_settings(tmp, rollup_interval_s=0.5)
    log = build_log()
    with settled_worker(settings, tmp, log) as (_, worker):
        yield worker.url, log, Oracle(log.events, log.streamers)


def call(url: str, path: str, **q: Any) -> tuple[int, Any]:
    return get_json(url + path + ("?" + urllib.parse.urlencode(q) if q else ""))


def scores(body: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(r["streamer_id"], r["score"]) for r in body["rows"]]


def test_every_metric_and_window_equals_the_oracle(api) -> None:
    url, _, oracle = api
    for as_of in (None, MID):
        extra = {"as_of": as_of} if as_of else {}
        for window in ("1m", "5m", "1h", "today"):
            for metric in METRICS:
                status, body = call(url, "/api/leaderboard", metric=metric, window=window, limit=20, **extra)
                assert status == 200, body
                start, end = oracle.window(window, as_of)
                assert (body["start"], body["end"]) == (start, end)
                assert scores(body) == oracle.board(metric, start, end, limit=20), (metric, window, as_of)
        start, end = START_MS, START_MS + 150 * 60_000
        for metric in METRICS:  # an explicit range over whole hours, minutes and 10 s windows
            _, body = call(url, "/api/leaderboard", metric=metric, start=start + 4_000, end=end + 15_000, limit=30)
            assert scores(body) == oracle.board(metric, start, end + 20_000, limit=30), metric


def test_rows_carry_names_places_and_every_metric(api) -> None:
    url, log, oracle = api
    _, body = call(url, "/api/leaderboard", metric="gmv", window="today", province="陕西", as_of=MID, limit=3)
    dim = {s.streamer_id: s for s in log.streamers}
    totals = oracle.totals(*oracle.window("today", MID))
    assert body["rows"]
    for r in body["rows"]:
        s, t = dim[r["streamer_id"]], totals[r["streamer_id"]]
        assert (r["name"], r["province"], r["county"], r["village"], r["category"]) == \
            (s.name, s.province, s.county, s.village, s.category)
        assert s.province.startswith("陕西")
        assert (r["gmv_fen"], r["orders"], r["views"], r["likes"], r["unique_viewers"], r["concurrent_viewers"]) == \
            (t.gmv, t.orders, t.views, t.likes, len(t.viewers), t.close)
        assert r["gmv_yuan"] == f"{t.gmv // 100}.{t.gmv % 100:02d}"


def test_regions_series_and_one_streamer(api) -> None:
    url, _, oracle = api
    _, body = call(url, "/api/regions", metric="gmv", window="today", level="county", limit=100)
    assert [((r["province"], r["county"]), r["score"]) for r in body["rows"]] == \
        oracle.regions("gmv", *oracle.window("today"), "county")

    _, series = call(url, "/api/series", metric="views", window="1h", streamer_id="s0001", as_of=MID)
    assert [v for _, v in series["points"]] == [
        oracle.totals(m, m + 60_000, ["s0001"]).get("s0001", Totals()).views for m, _ in series["points"]]

    status, one = call(url, "/api/streamer/s0000", window="today", as_of=MID)
    assert status == 200 and one["name"]
    t = oracle.totals(*oracle.window("today", MID), ["s0000"])["s0000"]
    assert (one["window"]["totals"]["gmv_fen"], one["window"]["totals"]["unique_viewers"]) == (t.gmv, len(t.viewers))
    session_start = oracle.sessions(MID).get("s0000")
    if session_start is None:
        assert one["session"] is None
    else:
        st = oracle.totals(session_start, MID, ["s0000"])["s0000"]
        assert (one["session"]["start"], one["session"]["totals"]["gmv_fen"]) == (session_start, st.gmv)
    assert call(url, "/api/streamer/nobody-here")[0] == 404


BAD = [
    ("/api/leaderboard", {"metric": "revenue"}, "metric"),
    ("/api/leaderboard", {"metric": "gmv'; DROP TABLE tallies_10s; --"}, "metric"),
    ("/api/leaderboard", {"limit": "-5"}, "limit"),
    ("/api/leaderboard", {"limit": "100000"}, "limit"),
    ("/api/leaderboard", {"limit": "1e3"}, "limit"),
    ("/api/leaderboard", {"window": "1y"}, "window"),
    ("/api/leaderboard", {"province": "陕西'; DROP TABLE streamers; --"}, "province"),
    ("/api/leaderboard", {"county": "x\\' OR 1=1 --"}, "county"),
    ("/api/leaderboard", {"start": "946684800000", "end": "4102444700000"}, "end"),
    ("/api/leaderboard", {"start": "1794412800000"}, "end"),
    ("/api/leaderboard", {"as_of": "now()"}, "as_of"),
    ("/api/leaderboard", {"as_of": "99999999999999"}, "as_of"),
    ("/api/leaderboard", {"spark": "999"}, "spark"),
    ("/api/leaderboard", {"format": "CSV"}, "format"),
    ("/api/regions", {"level": "street"}, "level"),
    ("/api/rising", {"by": "luck"}, "by"),
    ("/api/series", {"streamer_id": "s1' UNION SELECT 1 --"}, "streamer_id"),
    ("/api/series", {"start": "1794412800000", "end": "1794585600000"}, "end"),
    ("/api/streamer/s0001';DROP TABLE orders;--", {}, "streamer_id"),
    ("/api/freshness", {"metric": "gmv"}, "metric"),
]


def test_bad_and_hostile_parameters_get_400_and_change_nothing(api) -> None:
    url, _, _ = api
    _, before = call(url, "/api/leaderboard", metric="gmv", window="today", limit=100)
    _, before_regions = call(url, "/api/regions", metric="likes", window="today", level="village", limit=100)
    for path, q, bad in BAD:
        status, body = call(url, urllib.parse.quote(path), **q)
        assert status == 400, (path, q, body)
        assert body["parameter"] == bad and body["error"].startswith(bad + ":"), (path, q, body)
    status, body = get_json(url + "/api/leaderboard?metric=gmv&metric=likes")
    assert status == 400 and body["parameter"] == "metric"
    assert call(url, "/api/leaderboard", metric="gmv", window="today", limit=100)[1] == before
    assert call(url, "/api/regions", metric="likes", window="today", level="village", limit=100)[1] == before_regions
    assert all(r["name"] for r in before["rows"])  # the streamers table is still there


def test_openapi_describes_exactly_what_the_server_accepts(api) -> None:
    url, _, _ = api
    status, doc = call(url, "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    for path in ("/api/leaderboard", "/api/streamer/{streamer_id}", "/api/regions", "/api/series"):
        assert path in doc["paths"]
    for path, (_, names) in ENDPOINTS.items():
        documented = {p["name"] for p in doc["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert documented == set(names), path
        probe = path.replace("{streamer_id}", "s0000")
        for name in names:  # every documented parameter is accepted with its documented default
            default = next(p["schema"].get("default") for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name)
            if default is not None:
                assert call(url, probe, **{name: default})[0] == 200, (path, name)


def test_the_web_server_listens_on_loopback_only(api) -> None:
    url, _, _ = api
    assert Settings.from_env(env={}).web_host == "127.0.0.1"
    listening = listening_hosts(int(url.rsplit(":", 1)[1]))
    assert listening == ["0100007F"], listening  # 127.0.0.1, and nothing else
