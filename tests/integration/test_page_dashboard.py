"""The dashboard page in a real headless Chromium (Debian's), served by a real worker fed a generated log.

What an operator opening the page relies on: the KPI strip, the charts, the product ranking and the
funnel show exactly what the API answers for the same view (and the API's answers equal the log's truth:
``streamproc demo --until-done`` checks them against ``verify/overview_oracle.py``); category and platform
filters change the URL and the board; a row opens the streamer's detail; a shared URL restores the view;
at 390 px nothing is off-screen; the page polls with one loop however fast it is clicked; and when the
worker stops the page says its data is stale and keeps counting the age. Nothing is mocked.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from support.leaderboard_data import get_json, publish_and_settle, start_worker

from streamproc.logs.logfile import LogRecord
from streamproc.runtime.broker import free_port
from streamproc.settings import Settings
from streamproc.sim.generate import build_streamers, generate, simulated_span_ms
from streamproc.verify.stack import Stack

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SEED, ROOMS, EVENTS = 11, 12, 24_000  # 12 rooms at the simulated rate: about 8 minutes of event time
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("dashboard")
    settings = Settings.from_env(env={}, data_dir=str(tmp / "data"), embedded_broker_port=free_port(),
                                 web_port=free_port(), flush_interval_s=0.5, rollup_interval_s=0.5)
    start = int(time.time() * 1000) - simulated_span_ms(EVENTS, ROOMS) - 120_000  # all of it in the past
    records = list(generate(EVENTS, seed=SEED, start_ms=start, n_streamers=ROOMS))
    with Stack(settings, tmp / "logs") as stack:
        worker = start_worker(stack, tmp, build_streamers(ROOMS, SEED))
        try:
            publish_and_settle(stack, worker, records)
            yield stack, worker, tmp
        finally:
            worker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Watched:
    """A page with every console error, page error, failed request and HTTP error it meets, and every
    request it sends (time, path)."""

    def __init__(self, page: Page) -> None:
        self.page, self.problems, self.requests = page, [], []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        # net::ERR_ABORTED is the browser cancelling what was in flight when the test reloads or leaves
        # the page (the page itself never aborts a request); any other failure is the page's
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}")
                if r.failure != "net::ERR_ABORTED" else None)
        page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.on("request", lambda r: self.requests.append((time.monotonic(), urllib.parse.urlsplit(r.url).path)))


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    w = Watched(context.new_page())
    yield w
    context.close()
    assert not w.problems, w.problems[:10]


def api(url: str, path: str, **params: Any) -> Any:
    q = urllib.parse.urlencode({k: v for k, v in params.items() if v not in ("", None)})
    status, body = get_json(f"{url}{path}?{q}")
    assert status == 200, (path, params, body)
    return body


def yuan_text(fen: int) -> str:
    return ("-" if fen < 0 else "") + f"¥{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


def settled(page: Page, selector: str, **data: str) -> None:
    """Wait until ``selector`` carries these data attributes (the answer of that view is drawn)."""
    cond = " && ".join(f"el.dataset.{k} === {json.dumps(v)}" for k, v in data.items()) or "true"
    page.wait_for_function(f"() => {{ const el = document.querySelector({json.dumps(selector)}); "
                           f"return el && el.dataset.asOf && {cond}; }}", timeout=WAIT_MS)


def kpis(page: Page) -> dict[str, tuple[str, str]]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.kpi')].map(k =>
        [k.dataset.kpi, [k.dataset.value, k.querySelector('.v').textContent]]))""")


def expected_kpis(s: dict[str, Any]) -> dict[str, list[str]]:
    return {"gmv": [str(s["gmv_fen"]), yuan_text(s["gmv_fen"])], "orders": [str(s["orders"]), f"{s['orders']:,}"],
            "buyers": [str(s["buyers"]), f"{s['buyers']:,}"],
            "aov": ["" if s["aov_fen"] is None else str(s["aov_fen"]), "—" if s["aov_fen"] is None else yuan_text(s["aov_fen"])],
            "online": [str(s["concurrent_viewers"]), f"{s['concurrent_viewers']:,}"],
            "refunds": [str(s["refunds"]), f"{s['refunds']:,}"]}


def board_rows(page: Page) -> list[dict[str, str]]:
    return page.evaluate("""() => [...document.querySelectorAll('#board tbody tr')].map(tr => ({
        id: tr.dataset.streamerId, rank: tr.dataset.rank, value: tr.querySelector('.value').textContent,
        spark: tr.querySelector('svg.spark').dataset.values}))""")


def expected_board(url: str, metric: str, window: str, as_of: str, **filters: str) -> list[dict[str, str]]:
    body = api(url, "/api/leaderboard", metric=metric, window=window, limit=10, spark=30, as_of=as_of, **filters)
    out = []
    for r in body["rows"]:
        value = yuan_text(r["gmv_fen"]) if metric == "gmv" else (
            ("—" if r["conversion"] is None else f"{r['conversion'] * 100:.1f}%") if metric == "conversion"
            else f"{r[metric]:,}")
        out.append({"id": r["streamer_id"], "rank": str(r["rank"]), "value": value,
                    "spark": ",".join("" if v is None else str(v) for v in r["spark"])})
    return out


def stroke_pixels(page: Page, selector: str, rgb: tuple[int, int, int]) -> int:
    """Pixels of a chart's canvas near the series colour: the line is really drawn."""
    return page.evaluate("""([sel, [r, g, b]]) => {
        const c = document.querySelector(sel + ' canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
          if (Math.abs(d[i] - r) < 24 && Math.abs(d[i + 1] - g) < 32 && Math.abs(d[i + 2] - b) < 32 && d[i + 3] > 200) n++;
        return n; }""", [selector, list(rgb)])


def test_kpis_charts_products_and_funnel_show_the_api_answers(served: Any, watched: Watched) -> None:
    _, worker, tmp = served
    url, page = worker.url, watched.page
    page.goto(url + "/?window=1h")
    settled(page, "#overview", window="1h", filters="|||")
    as_of = page.get_attribute("#overview", "data-as-of")
    summary = api(url, "/api/summary", window="1h", as_of=as_of)
    assert summary["orders"] > 0 and summary["refunds"] > 0  # a strip of real numbers, refunds included
    assert kpis(page) == expected_kpis(summary)

    for fig, metric, rgb in (("#trend", "gmv", (228, 57, 60)), ("#online", "concurrent_viewers", (26, 115, 232))):
        settled(page, fig, metric=metric)
        series = api(url, "/api/series", metric=metric, window="1h", as_of=page.get_attribute(fig, "data-as-of")
                     or as_of)
        assert json.loads(page.get_attribute(fig, "data-points")) == series["points"]
        assert page.get_attribute(fig, "data-drawn") == str(len(series["points"]))
        assert page.get_attribute(fig, "data-partial") == str(series["end"] % 60_000 != 0).lower()
        assert any(v for _, v in series["points"]) and stroke_pixels(page, fig, rgb) > 50

    settled(page, "#products", window="1h", metric="gmv")
    products = api(url, "/api/products", metric="gmv", window="1h", limit=10, as_of=page.get_attribute("#products", "data-as-of"))
    shown = page.evaluate("""() => [...document.querySelectorAll('#products tbody tr')].map(tr =>
        [tr.dataset.productId, tr.querySelector('.orders').textContent, tr.querySelector('.gmv').textContent,
         tr.querySelector('.buyers').textContent])""")
    assert len(products["rows"]) > 3
    assert shown == [[r["product_id"], f"{r['orders']:,}", yuan_text(r["gmv_fen"]), f"{r['buyers']:,}"]
                     for r in products["rows"]]

    settled(page, "#funnel", window="1h")
    funnel = api(url, "/api/funnel", window="1h", as_of=page.get_attribute("#funnel", "data-as-of"))
    stages = page.evaluate("""() => [...document.querySelectorAll('#funnel li')].map(li =>
        [li.dataset.stage, Number(li.dataset.people), Number(li.dataset.count)])""")
    assert stages == [[s["stage"], s["people"], s["count"]] for s in funnel["stages"]]
    assert funnel["stages"][1]["people"] == summary["buyers"] and funnel["stages"][1]["count"] == summary["orders"]
    page.screenshot(path=str(tmp / "dashboard-desktop.png"), full_page=True)


def test_category_and_platform_filters_change_the_url_and_the_board(served: Any, watched: Watched) -> None:
    _, worker, _ = served
    url, page = worker.url, watched.page
    platforms = api(url, "/api/regions", level="platform", window="1h", limit=100)["rows"]
    categories = api(url, "/api/regions", level="category", window="1h", limit=100)["rows"]
    assert len(platforms) >= 2 and len(categories) >= 2, (platforms, categories)  # a filter that leaves some out
    platform, category = platforms[0]["platform"], categories[0]["category"]
    page.goto(url + "/?window=1h")
    settled(page, "#board", window="1h", filters="|||")

    page.wait_for_selector(f"#platform option[value='{platform}']", state="attached", timeout=WAIT_MS)
    page.select_option("#platform", platform)
    page.wait_for_url(f"**platform={platform}**", timeout=WAIT_MS)
    settled(page, "#board", window="1h", filters=f"{platform}|||")
    as_of = page.get_attribute("#board", "data-as-of")
    rows = board_rows(page)
    assert rows == expected_board(url, "gmv", "1h", as_of, platform=platform)
    assert {r["platform"] for r in api(url, "/api/leaderboard", window="1h", platform=platform, limit=100)["rows"]} == {platform}
    settled(page, "#overview", filters=f"{platform}|||")
    assert kpis(page) == expected_kpis(api(url, "/api/summary", window="1h", platform=platform,
                                           as_of=page.get_attribute("#overview", "data-as-of")))

    page.select_option("#category", category)
    page.wait_for_url(f"**category={category}**", timeout=WAIT_MS)
    assert f"platform={platform}" in page.url
    settled(page, "#board", window="1h", filters=f"{platform}|{category}||")
    as_of = page.get_attribute("#board", "data-as-of")
    assert board_rows(page) == expected_board(url, "gmv", "1h", as_of, platform=platform, category=category)
    settled(page, "#products", filters=f"{platform}|{category}||")
    products = api(url, "/api/products", window="1h", platform=platform, category=category,
                   as_of=page.get_attribute("#products", "data-as-of"))
    assert page.evaluate("() => [...document.querySelectorAll('#products tbody tr')].map(tr => tr.dataset.productId)") \
        == [r["product_id"] for r in products["rows"]]
    page.select_option("#platform", "")
    page.wait_for_function(f"() => !location.search.includes('platform=') && location.search.includes('category={category}')",
                           timeout=WAIT_MS)
    settled(page, "#board", filters=f"|{category}||")
    assert board_rows(page) == expected_board(url, "gmv", "1h", page.get_attribute("#board", "data-as-of"),
                                              category=category)


def test_a_row_opens_the_streamer_and_a_shared_url_restores_the_view(served: Any, watched: Watched,
                                                                      browser: Browser) -> None:
    _, worker, _ = served
    url, page = worker.url, watched.page
    page.goto(url + "/?metric=orders&window=1h")
    settled(page, "#board", metric="orders", window="1h")
    sid = page.get_attribute("#board tbody tr:nth-child(2)", "data-streamer-id")
    page.click("#board tbody tr:nth-child(2) td.value")
    page.wait_for_url(f"**streamer={sid}**", timeout=WAIT_MS)
    settled(page, "#detail", streamerId=sid, window="1h")
    assert page.is_visible("#detail")

    def check_detail(p: Page) -> None:
        settled(p, "#detail", streamerId=sid, window="1h")
        d = api(url, f"/api/streamer/{sid}", window="1h", as_of=p.get_attribute("#detail", "data-as-of"))
        t = d["window"]["totals"]
        shown = p.evaluate("() => Object.fromEntries([...document.querySelectorAll('#detail-totals dd')]"
                           ".map(dd => [dd.dataset.key, dd.textContent]))")
        assert shown == {"gmv": yuan_text(t["gmv_fen"]), "orders": f"{t['orders']:,}", "buyers": f"{t['buyers']:,}",
                         "unique_viewers": f"{t['unique_viewers']:,}", "views": f"{t['views']:,}",
                         "likes": f"{t['likes']:,}", "concurrent_viewers": f"{t['concurrent_viewers']:,}",
                         "conversion": "—" if t["conversion"] is None else f"{t['conversion'] * 100:.1f}%"}
        assert p.text_content("#detail-name") == d["name"]
        settled(p, "#detail-funnel", window="1h")
        f = api(url, "/api/funnel", window="1h", streamer_id=sid, as_of=p.get_attribute("#detail-funnel", "data-as-of"))
        assert p.evaluate("() => [...document.querySelectorAll('#detail-funnel li')].map(li => Number(li.dataset.people))") \
            == [s["people"] for s in f["stages"]]
        settled(p, "#detail-trend", metric="orders")
        series = api(url, "/api/series", metric="orders", window="1h", streamer_id=sid,
                     as_of=p.get_attribute("#detail-trend", "data-end"))
        assert json.loads(p.get_attribute("#detail-trend", "data-points")) == series["points"]

    check_detail(page)
    page.click("#windows button[data-window=today]")
    page.wait_for_url("**window=today**", timeout=WAIT_MS)
    shared = page.url
    assert all(x in shared for x in ("metric=orders", "window=today", f"streamer={sid}"))

    page.reload()  # the same view after a reload ...
    settled(page, "#board", metric="orders", window="today")
    settled(page, "#detail", streamerId=sid, window="today")
    assert page.get_attribute("#metrics button.on", "data-metric") == "orders"
    assert page.get_attribute("#windows button.on", "data-window") == "today"

    other = browser.new_context(viewport={"width": 1280, "height": 800})  # ... and for whoever gets the link
    try:
        p2 = Watched(other.new_page())
        p2.page.goto(shared.replace("window=today", "window=1h"))
        settled(p2.page, "#board", metric="orders", window="1h")
        check_detail(p2.page)
        p2.page.click("#detail-close")
        p2.page.wait_for_function("() => !location.search.includes('streamer=')", timeout=WAIT_MS)
        assert not p2.page.is_visible("#detail")
        assert not p2.problems, p2.problems
    finally:
        other.close()


def test_at_390_px_rank_name_and_value_stay_on_screen(served: Any, browser: Browser) -> None:
    _, worker, tmp = served
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        w = Watched(context.new_page())
        page = w.page
        page.goto(worker.url + "/?window=1h")
        settled(page, "#board", window="1h")
        settled(page, "#overview", window="1h")
        settled(page, "#products", window="1h")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        cells = page.evaluate("""() => [...document.querySelectorAll('#board tbody tr')].map(tr =>
            ['rank', 'name', 'value'].map(c => { const td = tr.querySelector('td.' + c); const r = td.getBoundingClientRect();
              return [c, r.left, r.right, r.width, td.checkVisibility(), td.textContent]; }))""")
        want = api(worker.url, "/api/leaderboard", window="1h", limit=10, as_of=page.get_attribute("#board", "data-as-of"))
        assert len(cells) == len(want["rows"]) >= 5
        for row in cells:
            for name, left, right, width, visible, text in row:
                assert visible and width > 0 and left >= 0 and right <= 390 and text.strip(), (name, left, right, text)
        names = page.evaluate("() => [...document.querySelectorAll('#board .streamer-name')].map(a => a.textContent)")
        assert any("\u4e00" <= ch <= "\u9fff" for n in names for ch in n)  # Chinese names, in a CJK font
        page.screenshot(path=str(tmp / "dashboard-390.png"), full_page=True)
        assert not w.problems, w.problems
    finally:
        context.close()


def test_rapid_metric_clicks_leave_one_polling_loop(served: Any, watched: Watched) -> None:
    _, worker, tmp = served
    page = watched.page
    page.goto(worker.url + "/?window=1h")
    settled(page, "#board", window="1h")
    page.wait_for_timeout(2_500)  # past the first tick (every panel) and the filter options

    def rate(seconds: float) -> tuple[float, float]:
        """API requests per second and loop ticks (board requests) per second, measured."""
        start = time.monotonic()
        page.wait_for_timeout(seconds * 1000)
        sent = [p for t, p in watched.requests if start <= t < start + seconds and p.startswith("/api/")]
        return len(sent) / seconds, sum(p == "/api/leaderboard" for p in sent) / seconds

    idle, idle_ticks = rate(8)
    page.evaluate("""() => { window.__seen = [];
        new MutationObserver(() => window.__seen.push([Date.now(), document.querySelector('#board').dataset.metric]))
          .observe(document.querySelector('#board'), {attributes: true, attributeFilter: ['data-metric']}); }""")
    metrics = page.evaluate("() => [...document.querySelectorAll('#metrics button')].map(b => b.dataset.metric)")
    for i in range(40):  # never the default metric last: the URL then names it
        page.click(f"#metrics button[data-metric={metrics[(i + 2) % len(metrics)]}]", delay=0)
    final = metrics[(39 + 2) % len(metrics)]
    clicked_at = page.evaluate("Date.now()")
    settled(page, "#board", metric=final, window="1h")
    page.wait_for_timeout(2_000)  # whatever was asked during the clicks has been answered
    after, after_ticks = rate(8)
    seen = page.evaluate("window.__seen")
    figures = {"idle_requests_per_s": idle, "idle_ticks_per_s": idle_ticks,
               "after_40_clicks_requests_per_s": after, "after_40_clicks_ticks_per_s": after_ticks}
    (tmp / "polling.json").write_text(json.dumps(figures))
    print("polling", figures)
    # one loop: the same number of ticks, each with the same requests (one tick's worth of slack: the
    # windows start at different points of the loop's rotation)
    assert abs(after_ticks - idle_ticks) <= 1 / 8 + 1e-9, figures
    assert abs(after - idle) <= 4 / 8 + 1e-9, figures
    assert 0.5 <= idle_ticks <= 1.125, figures  # a tick a second (slower only while answers take longer)
    # an answer of an earlier metric that arrived late was never drawn after the last click
    assert all(m == final for t, m in seen if t > clicked_at), seen
    assert page.get_attribute("#board", "data-metric") == final and f"metric={final}" in page.url


def test_stopping_the_worker_marks_the_data_stale_and_the_age_keeps_counting(served: Any, browser: Browser) -> None:
    stack, worker, tmp = served  # last: it stops the module's worker
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(worker.url + "/?window=5m")
        settled(page, "#board", window="5m")
        now = int(time.time() * 1000)  # a fresh flush: the page has no reason to call its data stale
        ev = {"type": "view", "schema_version": 1, "event_id": "fresh-1", "ts": now, "streamer_id": "s0000",
              "session_id": "fresh", "viewer_id": "fresh-viewer", "action": "enter"}
        publish_and_settle(stack, worker, [LogRecord("live.views", b"s0000", now, orjson.dumps(ev))])
        page.wait_for_function("() => !document.body.classList.contains('stale') && "
                               "Number(document.querySelector('#freshness').dataset.age) < 5", timeout=WAIT_MS)
        assert page.get_attribute("#board", "data-stale") == "false" and not page.is_visible("#stale-banner")

        worker.stop()
        page.wait_for_function("() => document.body.classList.contains('stale')", timeout=WAIT_MS)
        assert page.get_attribute("#board", "data-stale") == "true"
        assert page.evaluate("() => [...document.querySelectorAll('#board tbody tr')].every(tr => tr.classList.contains('stale'))")
        assert page.is_visible("#stale-banner") and page.is_visible("#stale-badge")
        assert "unreachable" in page.text_content("#stale-banner")
        first = float(page.get_attribute("#freshness", "data-age"))
        page.wait_for_timeout(3_000)
        second = float(page.get_attribute("#freshness", "data-age"))
        assert second >= first + 2.5, (first, second)  # the age keeps counting with no answer
        shown = re.search(r"updated (\d+) s ago", page.text_content("#freshness"))
        assert shown and abs(int(shown.group(1)) - second) <= 1.5, (shown, second)
        page.screenshot(path=str(tmp / "dashboard-stale.png"), full_page=True)
    finally:
        context.close()
