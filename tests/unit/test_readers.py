"""Readers cannot starve the pipeline (issue 11): the store serves writers first, and the API bounds its
concurrent answers and shares identical ones.

The lock and the gate are tested alone (threads, an event loop, counting callables); a burst of clients
against a real worker: tests/integration/test_readers_worker.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from streamproc.store.base import is_reading
from streamproc.store.chdb import WriterFirstLock
from streamproc.verify.chaos import wait_for
from streamproc.web.read_gate import Busy, ReadGate

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
        assert calls == 1 and together == [({"answer": 1}, "miss")] + [({"answer": 1}, "hit")] * 49, together
        assert await gate.answer("board", compute) == ({"answer": 1}, "hit")  # done, still young: shared
        assert (await gate.answer("other", compute))[0] == {"answer": 2}  # another query is its own
        await asyncio.sleep(0.35)
        assert await gate.answer("board", compute) == ({"answer": 3}, "miss")  # too old, none stale: asked again

    asyncio.run(run())


def test_past_its_age_an_answer_is_served_stale_while_one_new_computation_runs() -> None:
    calls = 0
    release = threading.Event()

    def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            release.wait(5)  # the renewal is slow: the crowd must not wait for it
        return {"answer": calls}

    async def run() -> None:
        gate = ReadGate(max_concurrent=2, queue_timeout_s=1, max_age_s=0.5, stale_s=1.5)
        assert await gate.answer("board", compute) == ({"answer": 1}, "miss")
        await asyncio.sleep(0.55)  # past the age, within the stale bound
        began = time.monotonic()
        crowd = await asyncio.gather(*(gate.answer("board", compute) for _ in range(20)))
        assert crowd == [({"answer": 1}, "stale")] * 20 and time.monotonic() - began < 0.1, crowd
        await asyncio.sleep(0.05)  # the renewal's thread starts
        assert calls == 2  # one renewal for the crowd, still running
        release.set()
        await asyncio.sleep(0.2)
        assert await gate.answer("board", compute) == ({"answer": 2}, "hit")  # the renewal, young
        await asyncio.sleep(1.6)  # past the stale bound: no old answer is served, the request waits
        assert await gate.answer("board", compute) == ({"answer": 3}, "miss")

    asyncio.run(run())


def test_a_failed_renewal_keeps_serving_the_last_good_answer_within_the_bound() -> None:
    answers = iter([{"answer": 1}, RuntimeError("store down"), {"answer": 3}])

    def compute() -> dict[str, int]:
        got = next(answers)
        if isinstance(got, Exception):
            raise got
        return got

    async def run() -> None:
        gate = ReadGate(max_concurrent=1, queue_timeout_s=1, max_age_s=0.3, stale_s=5)
        assert await gate.answer("board", compute) == ({"answer": 1}, "miss")
        await asyncio.sleep(0.35)
        assert await gate.answer("board", compute) == ({"answer": 1}, "stale")  # renewal started, and fails
        await asyncio.sleep(0.05)
        assert await gate.answer("board", compute) == ({"answer": 1}, "stale")  # failure forgotten: renewed again
        await asyncio.sleep(0.05)
        assert await gate.answer("board", compute) == ({"answer": 3}, "hit")

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
        assert await gate.answer("other", lambda: "now") == ("now", "miss")  # a refusal is not cached

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


def test_a_slow_answer_is_served_stale_for_twice_its_computing_time_and_a_lone_late_poller_gets_a_fresh_one() -> None:
    calls = 0

    def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        time.sleep(0.3)  # slower than the stale window of 0.2 s: a crowd would wait at every renewal
        return {"answer": calls}

    async def run() -> None:
        gate = ReadGate(max_concurrent=2, queue_timeout_s=1, max_age_s=0.1, stale_s=0.2, stale_cap_s=5)
        assert await gate.answer("board", compute) == ({"answer": 1}, "miss")
        await asyncio.sleep(0.35)  # 0.65 s after it started: past stale_s, within 0.1 + 2 x 0.3
        assert await gate.answer("board", compute) == ({"answer": 1}, "stale")
        await asyncio.sleep(1.0)  # the renewal (0.65 s to 0.95 s) is done, and now past its window (0.1 + 2 x 0.3)
        began = time.monotonic()
        assert await gate.answer("board", compute) == ({"answer": 3}, "miss")  # a lone late poller: fresh
        assert time.monotonic() - began >= 0.3

    asyncio.run(run())


def test_an_answer_about_now_is_never_served_past_its_age() -> None:
    calls = 0

    def compute() -> int:
        nonlocal calls
        calls += 1
        return calls

    async def run() -> None:
        gate = ReadGate(max_concurrent=1, queue_timeout_s=1, max_age_s=0.1, stale_s=5)
        assert await gate.answer("freshness", compute, stale=False) == (1, "miss")
        await asyncio.sleep(0.15)
        assert await gate.answer("freshness", compute, stale=False) == (2, "miss")  # computed again, not stale
        assert await gate.answer("freshness", compute, stale=False) == (2, "hit")

    asyncio.run(run())
