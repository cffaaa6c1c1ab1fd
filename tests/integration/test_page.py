"""The live leaderboard page in a real headless Chromium (Debian's), served by a real worker.

The page must show the same top 10 as the API for the same moment (names in Chinese, amounts in
yuan), update by itself after new events arrive, and follow the metric, window and region switchers.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.sync_api import Page, sync_playwright
from support.leaderboard_data import START_MS, Oracle, build_log, get_json, publish_and_settle, start_worker

from streamproc.logs.logfile import LogRecord
from streamproc.runtime.broker import free_port
from streamproc.settings import Settings
from streamproc.verify.stack import Stack

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SPLIT_MS = START_MS + 100 * 60_000

READ_TABLE = """() => {
  const t = document.querySelector('#board');
  return {asOf: t.dataset.asOf, metric: t.dataset.metric, window: t.dataset.window,
          rows: [...t.querySelectorAll('tbody tr')].map(tr => ({
            id: tr.dataset.streamerId, rank: tr.dataset.rank,
            name: tr.querySelector('.streamer-name').textContent,
            region: tr.querySelector('.region').textContent,
            value: tr.querySelector('.value').textContent,
            spark: tr.querySelector('svg.spark').dataset.values}))};
}"""


def yuan_text(fen: int) -> str:
    return ("-" if fen < 0 else "") + f"¥{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


def expected(url: str, metric: str, window: str, as_of: str, **filters: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"metric": metric, "window": window, "limit": 10, "spark": 30, "as_of": as_of, **filters})
    status, body = get_json(f"{url}/api/leaderboard?{q}")
    assert status == 200, body
    out = []
    for r in body["rows"]:
        if metric == "gmv":
            value = yuan_text(r["gmv_fen"])
        elif metric == "conversion":  # null below the minimum audience: a dash, never a percentage
            value = "—" if r["conversion"] is None else f"{r['conversion'] * 100:.1f}%"
        else:
            value = f"{r[metric]:,}"
        out.append({"id": r["streamer_id"], "rank": str(r["rank"]), "name": r["name"],
                    "region": " · ".join(filter(None, (r["province"], r["county"], r["village"]))),
                    # the sparkline follows the metric: a minute without a shown conversion is a gap
                    "value": value, "spark": ",".join("" if v is None else str(v) for v in r["spark"])})
    return out


def settled_table(page: Page, url: str, metric: str, window: str, as_of: int | None = None, **filters: str) -> dict:
    """Wait until the page shows ``metric``/``window`` (and ``as_of`` if given) with rows, then read it."""
    cond = f"t.dataset.metric === '{metric}' && t.dataset.window === '{window}' && t.querySelector('tbody tr')"
    if as_of is not None:
        cond += f" && t.dataset.asOf === '{as_of}'"
    page.wait_for_function(f"() => {{ const t = document.querySelector('#board'); return {cond}; }}", timeout=30_000)
    table = page.evaluate(READ_TABLE)
    assert table["rows"] == expected(url, metric, window, table["asOf"], **filters)
    return table


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp: Path = tmp_path_factory.mktemp("page")
    settings = Settings.from_env(env={}, data_dir=str(tmp / "data"), embedded_broker_port=free_port(),
                                 web_port=free_port(), flush_interval_s=0.5, rollup_interval_s=0.5)
    log = build_log(seed=9, n_streamers=30)
    with Stack(settings, tmp / "logs") as stack:
        worker = start_worker(stack, tmp, log.streamers)
        try:
            first = [r for r in log.records if r.ts < SPLIT_MS]
            publish_and_settle(stack, worker, first)
            yield stack, worker, log, tmp
        finally:
            worker.stop()


def test_page_shows_the_api_top_10_and_follows_new_events_and_switchers(served) -> None:
    stack, worker, log, tmp = served
    url = worker.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url + "/")
            table = settled_table(page, url, "gmv", "5m")
            assert len(table["rows"]) == 10
            assert all(r["value"].startswith("¥") and any("\u4e00" <= ch <= "\u9fff" for ch in r["name"])
                       for r in table["rows"])
            assert any(v != "0" for r in table["rows"] for v in r["spark"].split(","))
            page.screenshot(path=str(tmp / "leaderboard-before.png"))
            before = int(table["asOf"])

            # new events arrive: the page moves on by itself
            publish_and_settle(stack, worker, [r for r in log.records if r.ts >= SPLIT_MS])
            newest = Oracle(log.events, log.streamers).newest_end
            assert newest > before
            after = settled_table(page, url, "gmv", "5m", as_of=newest)
            assert after["rows"] != table["rows"]

            page.click("#metrics button[data-metric=views]")
            page.click("#windows button[data-window=today]")
            settled_table(page, url, "views", "today", as_of=newest)

            page.select_option("#province", "陕西省")
            page.wait_for_function("() => [...document.querySelectorAll('#board tbody tr .region')]"
                                   ".every(td => td.textContent.startsWith('陕西省'))", timeout=30_000)
            shaanxi = settled_table(page, url, "views", "today", as_of=newest, province="陕西省")
            assert shaanxi["rows"]
            page.click("#metrics button[data-metric=buyers]")
            settled_table(page, url, "buyers", "today", as_of=newest, province="陕西省")
            page.select_option("#province", "")
            page.click("#metrics button[data-metric=conversion]")
            page.click('#windows button[data-window="1m"]')  # a minute's audiences: under the minimum
            shown = settled_table(page, url, "conversion", "1m", as_of=newest)
            assert any(r["value"] == "—" for r in shown["rows"]), shown["rows"]
            page.screenshot(path=str(tmp / "leaderboard-after.png"))

            # a payment 10 minutes late is still money: counted in its past window, and the page says so
            assert not page.is_visible("#corrections")
            paid = next(e for e in reversed(log.events) if e["type"] == "order" and e["status"] == "paid")
            late = {**paid, "event_id": "late-payment", "order_id": "late-payment", "ts": paid["ts"] - 600_000}
            publish_and_settle(stack, worker, [LogRecord("live.orders", late["streamer_id"].encode(),
                                                         paid["ts"] + 1_000, orjson.dumps(late))])
            assert get_json(url + "/api/freshness")[1]["late_corrections_total"] == 1
            page.wait_for_selector("#corrections", state="visible", timeout=30_000)
            assert "1" in page.text_content("#corrections")
        finally:
            browser.close()
