"""The store passes that follow a flush: each at most once per its interval, in the gap after a flush,
never two rounds at once (runtime/after_flush.py)."""

from __future__ import annotations

import asyncio

from streamproc.runtime.after_flush import AfterFlush, Pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


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


def test_each_pass_runs_in_the_gaps_its_interval_allows_in_order() -> None:
    async def main() -> list[list[str]]:
        clock, ran, rounds = Clock(), [], []
        af = AfterFlush([Pass("rollup", 2.0, recorder(ran, "rollup")), Pass("changes", 1.0, recorder(ran, "changes"))],
                        slack_s=0.5, clock=clock)
        for _ in range(5):  # one gap after each 1 s flush, each gap a little early (the flush's start drifts)
            af.gap()
            await _settle(af)
            rounds.append(ran[:])
            ran.clear()
            clock.now += 0.98
        return rounds

    rounds = asyncio.run(main())
    # a 2 s pass every second gap (not every third, though each gap comes 20 ms before it is due);
    # the 1 s pass in every gap; the rollup first, so the changes read the minutes it just rolled
    assert rounds == [["rollup", "changes"], ["changes"], ["rollup", "changes"], ["changes"], ["rollup", "changes"]]


def test_a_round_still_running_is_not_started_again_and_the_next_gap_after_it_runs_what_is_due() -> None:
    async def main() -> tuple[list[str], list[str], list[str]]:
        clock, ran, hold = Clock(), [], asyncio.Event()
        af = AfterFlush([Pass("rollup", 1.0, recorder(ran, "rollup", hold=hold))], slack_s=0.5, clock=clock)
        af.gap()
        await asyncio.sleep(0)
        first = ran[:]
        clock.now += 5.0  # long overdue, but the first round has not finished
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
    assert during == ["rollup"]  # not a second concurrent pass
    assert after == ["rollup", "rollup"]


def test_a_pass_that_raises_does_not_stop_the_passes_after_it(caplog) -> None:
    async def main() -> list[str]:
        ran: list[str] = []
        af = AfterFlush([Pass("rollup", 1.0, recorder(ran, "rollup", fail=True)),
                         Pass("changes", 1.0, recorder(ran, "changes"))], slack_s=0.5, clock=Clock())
        af.gap()
        await _settle(af)
        return ran

    assert asyncio.run(main()) == ["rollup", "changes"]
    assert "rollup pass failed" in caplog.text and "rollup broke" in caplog.text


def test_stop_cancels_a_round_in_progress() -> None:
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
