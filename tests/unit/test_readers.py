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
from support.helpers import Clock

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
# Ages are read from a clock the test steps (``Clock``), never from sleeps: on a loaded machine a sleep of
# 0.05 s can take 0.3 s, and an age test that depends on it fails for the wrong reason. Computations still
# run in the gate's real threads.


async def settled(gate: ReadGate, key: str) -> None:
    """Wait until the computation in flight for ``key`` has come back (and the gate has filed it)."""
    flight = gate._flights.get(key)
    if flight is not None:
        await asyncio.wait([flight.answer], timeout=10)
        await asyncio.sleep(0)  # its done callback


def test_identical_requests_within_the_age_share_one_computation() -> None:
    calls = 0
    clock = Clock()

    def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        time.sleep(0.05)  # long enough for all 50 requests to arrive while it runs
        return {"answer": calls}

    async def run() -> None:
        gate = ReadGate(max_concurrent=2, queue_timeout_s=5, max_age_s=0.3, clock=clock)
        together = await asyncio.gather(*(gate.answer("board", compute) for _ in range(50)))
        assert calls == 1 and together == [({"answer": 1}, "miss")] + [({"answer": 1}, "hit")] * 49, together
        clock.advance(0.29)
        assert await gate.answer("board", compute) == ({"answer": 1}, "hit")  # done, still young: shared
        assert (await gate.answer("other", compute))[0] == {"answer": 2}  # another query is its own
        clock.advance(0.02)
        assert await gate.answer("board", compute) == ({"answer": 3}, "miss")  # too old, none stale: asked again

    asyncio.run(run())


def test_past_its_age_an_answer_is_served_stale_while_one_new_computation_runs() -> None:
    calls = 0
    clock = Clock()
    release = threading.Event()

    def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            release.wait(10)  # the renewal is slow: the crowd must not wait for it
        return {"answer": calls}

    async def run() -> None:
        gate = ReadGate(max_concurrent=2, queue_timeout_s=5, max_age_s=0.5, stale_s=1.5, clock=clock)
        assert await gate.answer("board", compute) == ({"answer": 1}, "miss")
        clock.advance(0.55)  # past the age, within the stale bound
        crowd = await asyncio.wait_for(asyncio.gather(*(gate.answer("board", compute) for _ in range(20))), 5)
        assert crowd == [({"answer": 1}, "stale")] * 20, crowd  # at once: the renewal is held for 10 s
        for _ in range(200):  # the renewal's thread starts
            if calls == 2:
                break
            await asyncio.sleep(0.01)
        assert calls == 2  # one renewal for the crowd, still running
        release.set()
        await settled(gate, "board")
        assert await gate.answer("board", compute) == ({"answer": 2}, "hit")  # the renewal, young
        clock.advance(1.6)  # past the stale bound: no old answer is served, the request waits
        assert await gate.answer("board", compute) == ({"answer": 3}, "miss")

    asyncio.run(run())


def test_a_failed_renewal_keeps_serving_the_last_good_answer_within_the_bound() -> None:
    answers = iter([{"answer": 1}, RuntimeError("store down"), {"answer": 3}])
    clock = Clock()

    def compute() -> dict[str, int]:
        got = next(answers)
        if isinstance(got, Exception):
            raise got
        return got

    async def run() -> None:
        gate = ReadGate(max_concurrent=1, queue_timeout_s=5, max_age_s=0.3, stale_s=5, clock=clock)
        assert await gate.answer("board", compute) == ({"answer": 1}, "miss")
        clock.advance(0.35)
        assert await gate.answer("board", compute) == ({"answer": 1}, "stale")  # renewal started, and fails
        await settled(gate, "board")
        assert await gate.answer("board", compute) == ({"answer": 1}, "stale")  # failure forgotten: renewed again
        await settled(gate, "board")
        assert await gate.answer("board", compute) == ({"answer": 3}, "hit")

    asyncio.run(run())


def test_past_the_bound_a_request_is_refused_within_the_queue_timeout() -> None:
    # the queue timeout is real time: the slot stays taken for 3 s, the refusal must come long before
    async def run() -> None:
        gate = ReadGate(max_concurrent=1, queue_timeout_s=0.2, max_age_s=0.5)
        slow = asyncio.ensure_future(gate.answer("slow", lambda: time.sleep(3.0)))
        await asyncio.sleep(0.05)
        began = time.monotonic()
        with pytest.raises(Busy):
            await gate.answer("other", lambda: "never")
        assert time.monotonic() - began < 2.0
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
    clock = Clock()

    def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        clock.advance(0.3)  # slower than the stale window of 0.2 s: a crowd would wait at every renewal
        return {"answer": calls}

    async def run() -> None:
        gate = ReadGate(max_concurrent=2, queue_timeout_s=5, max_age_s=0.1, stale_s=0.2, stale_cap_s=5, clock=clock)
        assert await gate.answer("board", compute) == ({"answer": 1}, "miss")  # took 0.3 s
        clock.advance(0.35)  # 0.65 s after it started: past stale_s, within 0.1 + 2 x 0.3
        assert await gate.answer("board", compute) == ({"answer": 1}, "stale")
        await settled(gate, "board")  # the renewal: 0.65 s to 0.95 s
        clock.advance(1.0)  # now past its window (0.1 + 2 x 0.3)
        before = calls
        assert await gate.answer("board", compute) == ({"answer": 3}, "miss")  # a lone late poller: fresh
        assert calls == before + 1  # it waited for a computation of its own

    asyncio.run(run())


def test_an_answer_about_now_is_never_served_past_its_age() -> None:
    calls = 0
    clock = Clock()

    def compute() -> int:
        nonlocal calls
        calls += 1
        return calls

    async def run() -> None:
        gate = ReadGate(max_concurrent=1, queue_timeout_s=1, max_age_s=0.1, stale_s=5, clock=clock)
        assert await gate.answer("freshness", compute, stale=False) == (1, "miss")
        clock.advance(0.15)
        assert await gate.answer("freshness", compute, stale=False) == (2, "miss")  # computed again, not stale
        assert await gate.answer("freshness", compute, stale=False) == (2, "hit")

    asyncio.run(run())
