"""Leaderboard change events through a real worker: a scripted overtake must put exactly one "overtook"
event on live.leaderboard.changes (the confirmation rules alone: tests/unit/test_changes.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from support.helpers import order, record
from support.leaderboard_data import START_MS, get_json, publish_and_settle, start_worker

from streamproc.boards.changes import TOPIC
from streamproc.logs.logfile import LogRecord
from streamproc.runtime.kafka import read_topic
from streamproc.settings import Settings
from streamproc.sim.generate import build_streamers
from streamproc.verify.chaos import metric_values, wait_for
from streamproc.verify.stack import Stack, WorkerProcess


def paid(sid: str, n: int, ts: int, amount_fen: int) -> LogRecord:
    """Order ``n`` of ``sid``, one item paid at ``ts``, on the topic 100 ms later."""
    return record(order(event_id=f"ev-{sid}-{n}", ts=ts, streamer_id=sid, session_id=f"{sid}-live", viewer_id=f"u{n}",
                        order_id=f"o-{sid}-{n}", product_id="p-wugong-kiwi-5kg", quantity=1, amount_fen=amount_fen),
                  ts + 100)


def evaluations(worker: WorkerProcess) -> float:
    return metric_values(worker).get("streamproc_leaderboard_evaluations_total", 0)


def wait_evaluations(worker: WorkerProcess, n: int, timeout_s: float = 30) -> None:
    target = evaluations(worker) + n
    wait_for(lambda: evaluations(worker) >= target, timeout_s, "the watched boards being evaluated")


def test_a_scripted_overtake_publishes_exactly_one_event(settings: Settings, tmp_path: Path) -> None:
    settings = settings.replace(rollup_interval_s=0.5, leaderboard_boards="gmv:today:5",
                                leaderboard_changes_interval_s=0.5)
    a, b, c = build_streamers(3, 4)
    with Stack(settings, tmp_path / "logs") as stack:
        worker = start_worker(stack, tmp_path, [a, b, c])
        try:
            t0 = START_MS + 3_600_000
            publish_and_settle(stack, worker, [paid(a.streamer_id, 1, t0, 10_000), paid(b.streamer_id, 1, t0 + 1_000, 5_000),
                                               paid(c.streamer_id, 1, t0 + 2_000, 2_000)])
            wait_evaluations(worker, 3)
            board = get_json(worker.url + "/api/leaderboard?window=today&limit=5")[1]
            assert [r["streamer_id"] for r in board["rows"]] == [a.streamer_id, b.streamer_id, c.streamer_id]
            before = asyncio.run(read_topic(stack.settings, TOPIC))
            assert all(orjson.loads(m.value)["type"] == "entered" for m in before)

            # b sells 80 yuan more: 130 > a's 100
            publish_and_settle(stack, worker, [paid(b.streamer_id, 2, t0 + 60_000, 8_000)])
            wait_evaluations(worker, 4)
            new = [orjson.loads(m.value) for m in asyncio.run(read_topic(stack.settings, TOPIC))[len(before):]]
            assert len(new) == 1, new
            ev = new[0]
            assert (ev["type"], ev["board"], ev["streamer_id"], ev["rank"], ev["score"]) == \
                ("overtook", "gmv:today:5", b.streamer_id, 1, 13_000)
            assert (ev["overtaken"]["streamer_id"], ev["overtaken"]["rank"], ev["overtaken"]["score"]) == \
                (a.streamer_id, 2, 10_000)
            assert ev["name"] == b.name and ev["overtaken"]["name"] == a.name

            wait_evaluations(worker, 4)  # and nothing more while the board stays as it is
            assert len(asyncio.run(read_topic(stack.settings, TOPIC))) == len(before) + 1
        finally:
            worker.stop()
