"""Leaderboard change events: "X entered the top 10", "X just overtook Y", for apps to push to viewers.

The worker evaluates each watched board (``STREAMPROC_LEADERBOARD_BOARDS``, e.g.
``gmv:today:10,views:5m:10:province=陕西``) every ``STREAMPROC_LEADERBOARD_CHANGES_INTERVAL_S`` and
publishes what changed to ``live.leaderboard.changes``, keyed by the board, as JSON.

A change is announced once, and only when it has held for two evaluations in a row: boards are read
while partitions flush at slightly different moments, and a ranking seen once may be undone a second
later; announcing only confirmed changes, against what was last announced, is what makes one real
overtake one event. The first evaluation after a start is the baseline and announces nothing (a
restart does not replay the board as news). ``event_id`` is derived from the board, the data time
and the streamers, so a consumer can drop repeats if two workers watch the same board.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import orjson
from prometheus_client import Counter

from streamproc.boards import queries
from streamproc.boards.params import PLACES, BadParameter, Request, parse
from streamproc.metrics import REGISTRY

log = logging.getLogger(__name__)

TOPIC = "live.leaderboard.changes"
KINDS = ("entered", "overtook")

CHANGES = Counter("streamproc_leaderboard_changes_total", "Leaderboard change events published", ["kind"],
                  registry=REGISTRY)
for _kind in KINDS:
    CHANGES.labels(_kind)
EVALUATIONS = Counter("streamproc_leaderboard_evaluations_total", "Evaluations of the watched boards",
                      registry=REGISTRY)


@dataclass(frozen=True)
class WatchedBoard:
    name: str
    request: Request


def parse_boards(text: str) -> list[WatchedBoard]:
    """``metric:window:N[:place=value...]`` items separated by commas, validated like API requests."""
    boards = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        parts = item.split(":")
        if len(parts) < 3:
            raise BadParameter("leaderboard_boards", f"{item!r} is not metric:window:N[:place=value...]")
        raw = {"metric": parts[0], "window": parts[1], "limit": parts[2]}
        for extra in parts[3:]:
            key, sep, value = extra.partition("=")
            if not sep or key not in PLACES:
                raise BadParameter("leaderboard_boards", f"{extra!r} in {item!r} is not place=value")
            raw[key] = value
        try:
            boards.append(WatchedBoard(item, parse(raw, raw.keys())))
        except BadParameter as exc:
            raise BadParameter("leaderboard_boards", f"{item!r}: {exc}") from None
    return boards


@dataclass(frozen=True)
class Change:
    kind: str  # "entered" or "overtook"
    streamer_id: str
    rank: int
    overtaken: str | None = None
    overtaken_rank: int | None = None


class BoardWatch:
    """What was last announced for one board, and the previous observation (for confirmation)."""

    def __init__(self) -> None:
        self.members: set[str] | None = None  # None until the baseline is taken
        self.above: set[tuple[str, str]] = set()  # (a, b): a ranked above b when last announced
        self.prev: dict[str, int] = {}

    def observe(self, ranking: list[str]) -> list[Change]:
        """Changes confirmed by ``ranking`` (streamer ids, best first) and the observation before it."""
        pos = {sid: i for i, sid in enumerate(ranking)}
        prev, self.prev = self.prev, pos
        if self.members is None:
            self.members = set(ranking)
            self.above = {(a, b) for a in ranking for b in ranking if pos[a] < pos[b]}
            return []
        changes: list[Change] = []
        both = [sid for sid in ranking if sid in prev]  # present now and in the previous observation
        for sid in both:
            if sid not in self.members:
                self.members.add(sid)
                changes.append(Change("entered", sid, pos[sid] + 1))
                for other in self.members - {sid}:
                    if other in pos:
                        self.above.add((sid, other) if pos[sid] < pos[other] else (other, sid))
        for sid in [m for m in self.members if m not in pos and m not in prev]:  # left the board for good
            self.members.discard(sid)
            self.above = {p for p in self.above if sid not in p}
        for a in both:
            for b in both:
                if (b, a) in self.above and pos[a] < pos[b] and prev[a] < prev[b]:
                    self.above.discard((b, a))
                    self.above.add((a, b))
                    changes.append(Change("overtook", a, pos[a] + 1, b, pos[b] + 1))
        return changes


def event(board: WatchedBoard, as_of: int, change: Change, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON published for one change: who, whom, ranks, scores and names, so an app can say it."""
    ident = "|".join((board.name, str(as_of), change.kind, change.streamer_id, change.overtaken or ""))
    me = rows.get(change.streamer_id, {})
    out: dict[str, Any] = {
        "event_id": hashlib.sha1(ident.encode()).hexdigest()[:20],
        "type": change.kind,
        "board": board.name,
        "metric": board.request.metric,
        "window": board.request.time.window,
        "as_of": as_of,
        "streamer_id": change.streamer_id,
        "name": me.get("name", ""),
        "rank": change.rank,
        "score": me.get("score"),
    }
    if change.overtaken is not None:
        them = rows.get(change.overtaken, {})
        out["overtaken"] = {"streamer_id": change.overtaken, "name": them.get("name", ""),
                            "rank": change.overtaken_rank, "score": them.get("score")}
    return out


def watcher(app: Any, worker: Any) -> Callable[[], Awaitable[None]]:
    """One evaluation of the watched boards, publishing their changes, as the worker runs it after a
    flush every ``STREAMPROC_LEADERBOARD_CHANGES_INTERVAL_S`` (``runtime/after_flush.py``)."""
    s = worker.settings
    boards = [WatchedBoard(b.name, dataclasses.replace(b.request, min_audience=s.conversion_min_viewers))
              for b in parse_boards(s.leaderboard_boards)]
    watches = {b.name: BoardWatch() for b in boards}
    topic = app.topic(s.topic(TOPIC), key_type=bytes, value_type=bytes, acks=False)

    def evaluate() -> list[tuple[WatchedBoard, dict[str, Any]]]:
        out = []
        clk = queries.clock(worker.sink)
        if not clk.newest_end:
            return out
        for b in boards:
            board = queries.leaderboard(worker.sink, b.request, clk)
            rows = {r["streamer_id"]: r for r in board.rows}
            for change in watches[b.name].observe([r["streamer_id"] for r in board.rows]):
                out.append((b, event(b, board.end, change, rows)))
        return out

    async def changes_tick() -> None:
        try:
            found = await asyncio.to_thread(evaluate)
        except Exception as exc:
            log.error("leaderboard changes: evaluation failed (%s: %s)", type(exc).__name__, exc)
            return
        EVALUATIONS.inc()
        for b, ev in found:
            try:
                await topic.send(key=b.name.encode(), value=orjson.dumps(ev))
            except Exception as exc:  # the board state moved on: this change is lost, not retried forever
                log.error("leaderboard changes: publishing to %s failed (%s: %s)", topic.get_topic_name(),
                          type(exc).__name__, exc)
                continue
            CHANGES.labels(ev["type"]).inc()
        if found:
            log.info("leaderboard changes: published %d", len(found))

    return changes_tick

