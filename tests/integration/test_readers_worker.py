"""Readers cannot starve the pipeline (issue 11): a burst of clients against a real worker (embedded
broker, Faust, chDB) fed while the clients hammer it gets exact boards or a quick 429, while the worker
keeps flushing on cadence; a reader that holds connections gets a bound (also against a burst queued
while the worker was stopped), 503s and idle closes, and the worker stays exact. The store lock and the
API gate alone: tests/unit/test_readers.py.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from support.helpers import assert_exact, isolated_settings, recent_log, started
from support.leaderboard_data import START_MS, Oracle, build_log, get_json, settled_worker
from support.sockets import established, read_to_end

from streamproc.verify.chaos import Feeder, consumed, frozen, metric_values, wait_for
from streamproc.verify.demo import reconcile
from streamproc.verify.stack import Stack, wait_flushed

MID = START_MS + 97 * 60_000 + 20_000
QUEUE_TIMEOUT_S = 0.5
FLUSH_INTERVAL_S = 1.0


# -- (b), (c) a real worker under a burst ---------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp: Path = tmp_path_factory.mktemp("readers")
    settings = isolated_settings(tmp, flush_interval_s=FLUSH_INTERVAL_S, rollup_interval_s=0.5, api_max_concurrent=2,
                                 api_queue_timeout_s=QUEUE_TIMEOUT_S)
    log = build_log()
    with settled_worker(settings, tmp, log) as (stack, worker):
        yield stack, worker, Oracle(log.events, log.streamers), tmp


async def fetch_all(urls: list[str]) -> list[tuple[int, Any, dict[str, str], float]]:
    """GET every URL at once: (status, JSON body, headers, seconds)."""
    async def one(session: aiohttp.ClientSession, url: str) -> tuple[int, Any, dict[str, str], float]:
        began = time.monotonic()
        async with session.get(url) as r:
            body = await r.json(content_type=None)
            return r.status, body, dict(r.headers), time.monotonic() - began

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await asyncio.gather(*(one(session, u) for u in urls))


def board_urls(base: str) -> list[str]:
    """A mix of boards at a past ``as_of`` (the feed cannot change them), several sizes of each."""
    def url(path: str, **q: Any) -> str:
        return f"{base}{path}?{urllib.parse.urlencode({**q, 'as_of': MID})}"

    out = []
    for limit in (3, 5, 10, 20):
        out += [url("/api/leaderboard", metric="gmv", window="5m", limit=limit),
                url("/api/leaderboard", metric="views", window="today", limit=limit),
                url("/api/regions", metric="gmv", window="today", level="county", limit=limit)]
    out += [url("/api/series", metric="views", window="1h", streamer_id=s) for s in ("s0001", "s0002")]
    return out


def test_a_burst_gets_exact_boards_or_a_quick_429_and_flushing_keeps_its_cadence(served) -> None:
    stack, worker, oracle, tmp = served
    urls = board_urls(worker.url)
    expected = {}
    for u in urls:  # one at a time, nothing else running: the answers the burst must reproduce
        status, body, _, _ = asyncio.run(fetch_all([u]))[0]
        assert status == 200, (u, body)
        expected[u] = body
    start, end = oracle.window("5m", MID)
    gmv5 = expected[urls[3 * 3]]  # limit 20
    assert [(r["streamer_id"], r["score"]) for r in gmv5["rows"]] == oracle.board("gmv", start, end, limit=20)

    feed_log = recent_log(tmp / "feed.jsonl.zst", 30_000, seed=31)
    asked: list[str] = []
    answers: list[tuple[int, Any, dict[str, str], float]] = []
    with Feeder(stack.settings, feed_log, rate=2_000):  # 15 s of events: flushes have rows to write
        base = consumed([worker])
        wait_for(lambda: consumed([worker]) > base + 1_000, 30, "the feed being consumed")
        flushes_before = metric_values(worker)["streamproc_flushes_total"]
        began = time.monotonic()
        while time.monotonic() - began < 4 * FLUSH_INTERVAL_S:  # waves of 100 at once, long enough to count flushes
            asked += [urls[i % len(urls)] for i in range(100)]
            answers += asyncio.run(fetch_all(asked[len(answers):]))
        burst_s = time.monotonic() - began
        flushes = metric_values(worker)["streamproc_flushes_total"] - flushes_before
    statuses = [a[0] for a in answers]
    print(f"\nburst: {len(answers)} requests in {burst_s:.2f}s, {statuses.count(200)} answered, "
          f"{statuses.count(429)} refused, {flushes:.0f} flushes")
    for url, (status, body, headers, seconds) in zip(asked, answers):
        assert status in (200, 429), (status, body)
        if status == 200:
            assert body == expected[url], url
        else:
            assert body["error"].startswith("busy") and headers["Retry-After"] == "1", body
            assert seconds < QUEUE_TIMEOUT_S + 5, seconds  # refused quickly, not after a long queue
    assert statuses.count(200) >= len(urls) // 2  # the bound lets work through, not only refusals
    assert flushes >= burst_s / FLUSH_INTERVAL_S / 2, (flushes, burst_s)
    text = (tmp / "logs" / "worker-0.log").read_text()
    assert "Traceback" not in text


def test_identical_requests_share_one_answer(served) -> None:
    _, worker, _, _ = served
    url = f"{worker.url}/api/leaderboard?" + urllib.parse.urlencode({"metric": "likes", "window": "1h",
                                                                    "as_of": MID, "limit": 7})
    answers = asyncio.run(fetch_all([url] * 10))
    assert all(a[0] == 200 for a in answers), answers
    assert all(a[1] == answers[0][1] for a in answers)
    assert sorted(a[2]["X-Cache"] for a in answers) == ["hit"] * 9 + ["miss"]  # one query for ten requests


def test_boards_of_any_limit_are_cuts_of_one_shared_answer(served) -> None:
    """The limit is not part of a board's identity: one computation, cut to each client's limit, and
    each cut is the oracle's board of that length (ties broken by streamer id: the order is total)."""
    _, worker, oracle, _ = served
    limits = (100, 1, 4, 17)
    urls = [f"{worker.url}/api/leaderboard?" + urllib.parse.urlencode({"metric": "orders", "window": "1h",
                                                                      "as_of": MID, "limit": n}) for n in limits]
    answers = asyncio.run(fetch_all(urls))
    assert all(a[0] == 200 for a in answers), answers
    start, end = oracle.window("1h", MID)
    for n, (_, body, _, _) in zip(limits, answers):
        assert [(r["streamer_id"], r["score"]) for r in body["rows"]] == oracle.board("orders", start, end, limit=n)
        assert [r["rank"] for r in body["rows"]] == list(range(1, len(body["rows"]) + 1))
    assert sorted(a[2]["X-Cache"] for a in answers) == ["hit"] * 3 + ["miss"]


# -- (d) a reader that holds connections ------------------------------------------------------------------

MAX_CONNECTIONS = 40
IDLE_TIMEOUT_S = 15.0  # longer than the test takes to fill the bound and be refused


def test_held_connections_are_bounded_refused_with_503_closed_when_idle_and_the_pipeline_stays_exact(
        tmp_path: Path) -> None:
    """A reader opens connections and sends nothing, or half a request. Unbounded, every one is a file
    descriptor of the worker's process: at its limit the consumer and the store could open nothing more
    and consumption stopped (a probe: 19,000 idle connections plus 1,059 more, nothing flushed in 90 s,
    434k "Too many open files" in the log). Now the web server holds at most
    STREAMPROC_API_MAX_CONNECTIONS, answers one more 503 and closes it, closes the idle ones after
    STREAMPROC_API_IDLE_TIMEOUT_S, and the worker consumes and reconciles exactly throughout."""
    settings = isolated_settings(tmp_path, api_max_connections=MAX_CONNECTIONS, api_idle_timeout_s=IDLE_TIMEOUT_S)
    log = recent_log(tmp_path / "events.jsonl.zst", 20_000, seed=41)
    address = (settings.web_host, settings.web_port)
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker(0))
        with Feeder(stack.settings, log, rate=20_000 / 12) as feed:
            held = [socket.create_connection(address, timeout=5) for _ in range(MAX_CONNECTIONS // 2)]
            for s in held[: MAX_CONNECTIONS // 4]:
                s.sendall(b"GET /api/leaderboard?metric=gmv HTTP/1.1\r\nHost: x\r\n")  # half a request
            held += [socket.create_connection(address, timeout=5) for _ in range(MAX_CONNECTIONS - len(held))]
            time.sleep(1)  # accepted in order: every held connection before any of the next
            early = [i for i, s in enumerate(held) if select.select([s], [], [], 0)[0]]
            assert not early, f"held connections {early} closed before their idle time"
            refused = []
            for _ in range(60):  # each answered at once, before it sends anything, and closed
                with socket.create_connection(address, timeout=5) as s:
                    refused.append(read_to_end(s, timeout_s=5))
            assert established(settings.web_port) == MAX_CONNECTIONS
            assert all(r.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in r for r in refused), refused[:2]
            body = orjson.loads(refused[0].split(b"\r\n\r\n", 1)[1])
            assert body == {"error": f"busy: the server holds {MAX_CONNECTIONS} connections already",
                            "status": 503, "retry_after_s": 1}
            # closed by the server, idle or half sent
            assert all(read_to_end(s, IDLE_TIMEOUT_S + 10) == b"" for s in held)
            status, board = get_json(worker.url + "/api/leaderboard?metric=gmv&window=today")
            assert status == 200 and board["rows"], (status, board)
        wait_flushed([worker], feed.result.last_offsets)
        after = metric_values(worker)
        assert after["streamproc_api_connections_refused_total"] == 60
        assert after["streamproc_api_connections"] == 1  # this scrape's
        worker.stop()
        assert_exact(reconcile(stack.settings, str(tmp_path / "events.jsonl.zst")), "tallies_match", "boards_match")


def test_a_burst_of_connections_queued_while_the_worker_was_stopped_is_held_to_the_bound(tmp_path: Path) -> None:
    """The worker is stopped (SIGSTOP), and 100 connections complete in the kernel's listen backlog meanwhile.
    Continued, its event loop accepts them in one burst, before any of them has joined the server's
    connections (a handler joins at the loop's next turn): counted by the connections alone, the bound
    let the whole burst in. Now exactly the bound is held, every other connection gets the 503 and is
    closed, and the worker reconciles exactly."""
    settings = isolated_settings(tmp_path, api_max_connections=MAX_CONNECTIONS, api_idle_timeout_s=IDLE_TIMEOUT_S)
    log = recent_log(tmp_path / "events.jsonl.zst", 5_000, seed=42)
    address = (settings.web_host, settings.web_port)
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker(0))
        with Feeder(stack.settings, log, rate=5_000 / 6) as feed:  # stopped while it consumes
            time.sleep(1)
            with frozen(worker.proc.pid):
                burst = [socket.create_connection(address, timeout=5) for _ in range(100)]  # the kernel completes them
            time.sleep(2)  # accepted in one burst, the refused answered and closed
            refused = [s for s in burst if select.select([s], [], [], 0)[0]]
            assert established(settings.web_port) == MAX_CONNECTIONS
            assert len(refused) == 100 - MAX_CONNECTIONS
            assert all(read_to_end(s, timeout_s=5).startswith(b"HTTP/1.1 503 ") for s in refused)
            for s in burst:
                s.close()
        wait_flushed([worker], feed.result.last_offsets)
        assert metric_values(worker)["streamproc_api_connections_refused_total"] == 100 - MAX_CONNECTIONS
        worker.stop()
        assert_exact(reconcile(stack.settings, str(tmp_path / "events.jsonl.zst")), "tallies_match", "boards_match")
