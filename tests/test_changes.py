"""Leaderboard change events: the confirmation rules on their own, then a scripted overtake through a
real worker that must put exactly one "overtook" event on live.leaderboard.changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from leaderboard_data import START_MS, get_json, publish_and_settle, start_worker

from streamproc.boards.changes import TOPIC, BoardWatch, parse_boards
from streamproc.boards.params import BadParameter
from streamproc.logs.logfile import LogRecord
from streamproc.runtime.kafka import read_topic
from streamproc.settings import Settings
from streamproc.sim.generate import build_streamers
from streamproc.verify.chaos import metric_values, wait_for
from streamproc.verify.stack import Stack, WorkerProcess


def kinds(changes) -> list[tuple]:
    return [(c.kind, c.streamer_id, c.overtaken) for c in changes]


def test_a_change_is_announced_once_and_only_when_it_holds() -> None:
    w = BoardWatch()
    assert w.observe(["a", "b", "c"]) == []  # the baseline is not news
    assert w.observe(["b", "a", "c"]) == []  # seen once: not yet
    assert kinds(w.observe(["b", "a", "c"])) == [("overtook", "b", "a")]
    assert w.observe(["b", "a", "c"]) == [] and w.observe(["b", "a", "c"]) == []
    assert w.observe(["a", "b", "c"]) == []  # a flicker back for one evaluation...
    assert w.observe(["b", "a", "c"]) == []  # ...that is undone: nothing to say
    assert kinds(w.observe(["d", "b", "a"])) == [] and kinds(w.observe(["d", "b", "a"])) == [
        ("entered", "d", None)]  # d entered at the top; passing on the way in is not an overtake
    assert kinds(w.observe(["b", "d", "a"])) == [] and kinds(w.observe(["b", "d", "a"])) == [("overtook", "b", "d")]
    ch = w.observe(["c", "b", "d"])
    assert ch == [] and kinds(w.observe(["c", "b", "d"])) == [("entered", "c", None)]


def test_a_jump_over_several_is_one_event_per_streamer_passed() -> None:
    w = BoardWatch()
    w.observe(["a", "b", "c", "d"])
    w.observe(["d", "a", "b", "c"])
    assert sorted(kinds(w.observe(["d", "a", "b", "c"]))) == [("overtook", "d", x) for x in "abc"]


def test_watched_boards_are_validated_like_api_requests() -> None:
    boards = parse_boards("gmv:today:10, views:5m:20:province=陕西")
    assert [(b.request.metric, b.request.time.window, b.request.limit, b.request.filters.province) for b in boards] == \
        [("gmv", "today", 10, ""), ("views", "5m", 20, "陕西")]
    for bad in ("gmv:today", "gmv:week:10", "gmv:today:0", "gmv:today:10:street=x", "gmv:5m:10:province=a'b"):
        with pytest.raises(BadParameter):
            parse_boards(bad)


def order(sid: str, n: int, ts: int, amount_fen: int) -> LogRecord:
    ev = {"type": "order", "schema_version": 1, "event_id": f"ev-{sid}-{n}", "ts": ts, "streamer_id": sid,
          "session_id": f"{sid}-live", "viewer_id": f"u{n}", "order_id": f"o-{sid}-{n}",
          "product_id": "p-wugong-kiwi-5kg", "category": "fruit", "quantity": 1, "amount_fen": amount_fen,
          "status": "paid"}
    return LogRecord("live.orders", sid.encode(), ts + 100, orjson.dumps(ev))


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
            publish_and_settle(stack, worker, [order(a.streamer_id, 1, t0, 10_000), order(b.streamer_id, 1, t0 + 1_000, 5_000),
                                               order(c.streamer_id, 1, t0 + 2_000, 2_000)])
            wait_evaluations(worker, 3)
            board = get_json(worker.url + "/api/leaderboard?window=today&limit=5")[1]
            assert [r["streamer_id"] for r in board["rows"]] == [a.streamer_id, b.streamer_id, c.streamer_id]
            before = asyncio.run(read_topic(stack.settings, TOPIC))
            assert all(orjson.loads(m.value)["type"] == "entered" for m in before)

            # b sells 80 yuan more: 130 > a's 100
            publish_and_settle(stack, worker, [order(b.streamer_id, 2, t0 + 60_000, 8_000)])
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
