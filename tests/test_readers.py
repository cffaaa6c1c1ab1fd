"""Readers cannot starve the pipeline (issue 11): the store serves writers first, the API bounds its
concurrent answers and shares identical ones, and a burst of clients gets exact boards or a quick 429
while the worker keeps flushing on cadence.

The lock and the gate are tested alone (threads, an event loop, counting callables); the burst runs
against a real worker (embedded broker, Faust, chDB) fed while the clients hammer it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from leaderboard_data import START_MS, Oracle, build_log, publish_and_settle, start_worker

from streamproc.logs.logfile import write_log
from streamproc.runtime.broker import free_port
from streamproc.settings import Settings
from streamproc.sim.generate import generate
from streamproc.store.base import is_reading
from streamproc.store.chdb import WriterFirstLock
from streamproc.verify.chaos import Feeder, consumed, metric_values, wait_for
from streamproc.verify.stack import Stack
from streamproc.web.read_gate import Busy, ReadGate

MID = START_MS + 97 * 60_000 + 20_000
QUEUE_TIMEOUT_S = 0.5
FLUSH_INTERVAL_S = 1.0


# -- (a) the store lock: a waiting writer goes first ----------------------------------------------------


def test_a_waiting_writer_goes_before_readers_that_queued_around_it() -> None:
    lock = WriterFirstLock()
    order: list[str] = []
    release_first = threading.Event()

    def take(name: str, writer: bool, hold: threading.Event | None = None) -> None:
        with lock.hold(writer):
            order.append(name)
            if hold is not None:
                hold.wait(10)

    def start(name: str, writer: bool, hold: threading.Event | None = None) -> threading.Thread:
        t = threading.Thread(target=take, args=(name, writer, hold))
        t.start()
        return t

    threads = [start("r0", False, release_first)]  # a reader holds the store ...
    wait_for(lambda: order == ["r0"], 5, "the first reader holding the lock")
    threads += [start(f"early{i}", False) for i in range(3)]  # ... readers queue behind it ...
    time.sleep(0.2)
    threads.append(start("writer", True))  # ... then a flush arrives ...
    wait_for(lambda: lock._writers_waiting == 1, 5, "the writer waiting")
    threads += [start(f"late{i}", False) for i in range(5)]  # ... and more readers after it
    time.sleep(0.2)
    release_first.set()
    for t in threads:
        t.join(10)
    assert order[:2] == ["r0", "writer"], order  # before the readers that were there first, too
    assert sorted(order[2:]) == sorted([f"early{i}" for i in range(3)] + [f"late{i}" for i in range(5)])


def test_a_stream_of_readers_never_holds_a_writer_for_more_than_one_statement() -> None:
    lock = WriterFirstLock()
    stop = threading.Event()
    reads_during_wait: list[int] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            with lock.hold(False):
                reads += 1
                time.sleep(0.005)  # one statement

    readers = [threading.Thread(target=reader) for _ in range(8)]
    for t in readers:
        t.start()
    for _ in range(20):
        time.sleep(0.01)
        before = reads
        with lock.hold(True):
            reads_during_wait.append(reads - before)
    stop.set()
    for t in readers:
        t.join(5)
    assert max(reads_during_wait) <= 1, reads_during_wait  # at most the statement running when it came
    assert reads >= 20  # and the readers did get the store between writes


# -- the gate alone: single flight, cache age, the bound ------------------------------------------------


def test_identical_requests_within_the_age_share_one_computation() -> None:
    calls = 0

    def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        return {"answer": calls}

    async def run() -> None:
        gate = ReadGate(max_concurrent=2, queue_timeout_s=1, max_age_s=0.3)
        together = await asyncio.gather(*(gate.answer("board", compute) for _ in range(50)))
        assert calls == 1 and all(r == ({"answer": 1}, i > 0) for i, r in enumerate(together)), together
        assert await gate.answer("board", compute) == ({"answer": 1}, True)  # done, still young: shared
        assert (await gate.answer("other", compute))[0] == {"answer": 2}  # another query is its own
        await asyncio.sleep(0.35)
        assert await gate.answer("board", compute) == ({"answer": 3}, False)  # too old: asked again

    asyncio.run(run())


def test_past_the_bound_a_request_is_refused_within_the_queue_timeout() -> None:
    async def run() -> None:
        gate = ReadGate(max_concurrent=1, queue_timeout_s=0.2, max_age_s=0.5)
        slow = asyncio.ensure_future(gate.answer("slow", lambda: time.sleep(1.0)))
        await asyncio.sleep(0.05)
        began = time.monotonic()
        with pytest.raises(Busy):
            await gate.answer("other", lambda: "never")
        assert time.monotonic() - began < 0.8
        await slow
        assert await gate.answer("other", lambda: "now") == ("now", False)  # a refusal is not cached

    asyncio.run(run())


def test_answers_are_computed_as_reads_in_a_thread() -> None:
    async def run() -> None:
        for bound in (2, 0):
            gate = ReadGate(max_concurrent=bound, queue_timeout_s=1, max_age_s=0.5)
            loop_thread = threading.get_ident()
            (read, thread), _ = await gate.answer("k", lambda: (is_reading(), threading.get_ident()))
            assert read and thread != loop_thread, bound
        assert not is_reading()

    asyncio.run(run())


# -- (b), (c) a real worker under a burst ---------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp: Path = tmp_path_factory.mktemp("readers")
    settings = Settings.from_env(env={}, data_dir=str(tmp / "data"), embedded_broker_port=free_port(),
                                 web_port=free_port(), flush_interval_s=FLUSH_INTERVAL_S, rollup_interval_s=0.5,
                                 api_max_concurrent=2, api_queue_timeout_s=QUEUE_TIMEOUT_S)
    log = build_log()
    with Stack(settings, tmp / "logs") as stack:
        worker = start_worker(stack, tmp, log.streamers)
        try:
            publish_and_settle(stack, worker, log.records)
            yield stack, worker, Oracle(log.events, log.streamers), tmp
        finally:
            worker.stop()


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

    feed_log = tmp / "feed.jsonl.zst"
    write_log(feed_log, generate(30_000, seed=31, start_ms=int(time.time() * 1000) - 60_000))
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
