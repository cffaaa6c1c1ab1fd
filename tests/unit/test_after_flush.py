"""The store passes that follow a flush: each at most once per its interval, one per gap after a flush,
never two at once (runtime/after_flush.py)."""

from __future__ import annotations

import asyncio

import pytest
from support.helpers import Clock

from streamproc.runtime.after_flush import AfterFlush, Pass


def recorder(ran: list[str], name: str, fail: bool = False, hold: asyncio.Event | None = None):
    async def run() -> None:
        ran.append(name)
        if hold is not None:
            await hold.wait()
        if fail:
            raise RuntimeError(f"{name} broke")
    return run


async def _settle(af: AfterFlush) -> None:
    if af.task is not None:
        await asyncio.wait_for(asyncio.shield(af.task), 5)


def passes_in_gaps(names_and_intervals: list[tuple[str, float]], gaps: int) -> list[list[str]]:
    """What ran in each of ``gaps`` gaps, one after each 1 s flush, each a little early (a flush's start
    drifts): the pass is due 20 ms after the gap that should run it."""
    async def main() -> list[list[str]]:
        clock, ran, out = Clock(), [], []
        af = AfterFlush([Pass(n, i, recorder(ran, n)) for n, i in names_and_intervals], slack_s=0.5, clock=clock)
        for _ in range(gaps):
            af.gap()
            await _settle(af)
            out.append(ran[:])
            ran.clear()
            clock.now += 0.98
        return out
    return asyncio.run(main())


def test_passes_take_turns_one_per_gap_each_within_its_interval() -> None:
    # never two in one gap (a longer run of writes for the API's readers to wait behind); each every
    # second gap, as its 2 s interval asks, though each gap comes 20 ms before the pass is due
    assert passes_in_gaps([("rollup", 2.0), ("changes", 2.0)], 6) == [
        ["rollup"], ["changes"], ["rollup"], ["changes"], ["rollup"], ["changes"]]


def test_a_pass_runs_in_the_gap_its_interval_allows_not_a_whole_flush_later() -> None:
    assert passes_in_gaps([("rollup", 2.0)], 5) == [["rollup"], [], ["rollup"], [], ["rollup"]]  # not every third gap


def test_a_pass_still_running_is_not_joined_by_another_and_the_next_gap_after_it_runs_what_is_due() -> None:
    async def main() -> tuple[list[str], list[str], list[str]]:
        clock, ran, hold = Clock(), [], asyncio.Event()
        af = AfterFlush([Pass("rollup", 1.0, recorder(ran, "rollup", hold=hold))], slack_s=0.5, clock=clock)
        af.gap()
        await asyncio.sleep(0)
        first = ran[:]
        clock.now += 5.0  # long overdue, but the first pass has not finished
        af.gap()
        await asyncio.sleep(0)
        during = ran[:]
        hold.set()
        await _settle(af)
        af.gap()
        await _settle(af)
        return first, during, ran

    first, during, after = asyncio.run(main())
    assert first == ["rollup"]
    assert during == ["rollup"]  # nothing beside it
    assert after == ["rollup", "rollup"]


def test_a_pass_that_raises_is_logged_and_the_next_gap_goes_on(caplog) -> None:
    async def main() -> list[str]:
        clock, ran = Clock(), []
        af = AfterFlush([Pass("rollup", 1.0, recorder(ran, "rollup", fail=True)),
                         Pass("changes", 1.0, recorder(ran, "changes"))], slack_s=0.5, clock=clock)
        for _ in range(3):
            af.gap()
            await _settle(af)
            clock.now += 1.0
        return ran

    assert asyncio.run(main()) == ["rollup", "changes", "rollup"]
    assert "rollup pass failed" in caplog.text and "rollup broke" in caplog.text


def test_stop_cancels_a_pass_in_progress() -> None:
    async def main() -> tuple[bool, list[str]]:
        ran: list[str] = []
        af = AfterFlush([Pass("rollup", 1.0, recorder(ran, "rollup", hold=asyncio.Event())),
                         Pass("changes", 1.0, recorder(ran, "changes"))], slack_s=0.5, clock=Clock())
        af.gap()
        await asyncio.sleep(0)
        await asyncio.wait_for(af.stop(), 5)
        return af.task.cancelled(), ran

    cancelled, ran = asyncio.run(main())
    assert cancelled and ran == ["rollup"]


def test_a_slow_pass_waits_out_its_share_of_the_time_and_a_quick_one_keeps_its_interval() -> None:
    # share 0.25: a pass that took 1.5 s rests 4.5 s after it ended, though its 2 s interval has passed
    async def main() -> list[tuple[float, float]]:
        clock, ran = Clock(0.0), []
        took = iter([1.5, 0.1, 0.1])

        async def run() -> None:
            start = clock.now
            clock.now += next(took)
            ran.append((start, clock.now))

        af = AfterFlush([Pass("rollup", 2.0, run)], slack_s=0.5, share=0.25, clock=clock)
        while clock.now < 12:
            af.gap()
            await _settle(af)
            clock.now += 1.0
        return ran

    ran = asyncio.run(main())
    assert ran[0] == (0.0, 1.5)
    assert ran[1][0] >= 1.5 + 4.5 - 0.5  # at the first gap from 4.5 s after the end (half a flush of slack)
    assert ran[1][0] < 1.5 + 4.5 + 1.0  # and not a whole flush later
    assert ran[2][0] - ran[1][0] < 2.0 + 1.0  # 0.1 s: its 0.3 s of rest is within the interval, which decides


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        AfterFlush([], slack_s=0.5, share=share)
