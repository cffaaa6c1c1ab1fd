"""Leaderboard change events: the confirmation rules on their own (a scripted overtake through a real
worker: tests/integration/test_changes_worker.py)."""

from __future__ import annotations

import pytest

from streamproc.boards.changes import BoardWatch, parse_boards
from streamproc.boards.params import BadParameter


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
