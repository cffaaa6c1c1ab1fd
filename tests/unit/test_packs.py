"""Packs (several events per message, as JSON lines): each event counts as if sent alone (on a running
worker, against the oracle: tests/integration/test_packs_worker.py)."""

from __future__ import annotations

import orjson
from support.helpers import TS, Rec, like

from streamproc.core.state import LIKES, PartitionState
from streamproc.runtime.processor import Processor
from streamproc.settings import Settings


def like_at(ts: int, count: int) -> bytes:
    return orjson.dumps(like(event_id=f"l{ts}", ts=ts, count=count))


def test_a_pack_is_read_as_its_events_and_a_bad_line_is_dead_lettered_alone(settings: Settings) -> None:
    proc = Processor(settings, sink=None)  # type: ignore[arg-type]  # no flush in this test
    proc.states[("live.likes", 0)] = PartitionState("live.likes", 0, proc.rules)
    pack = b"\n".join([like_at(TS, 2), b'{"type": "like", broken', like_at(TS + 1, 3)])
    pretty = orjson.dumps(orjson.loads(like_at(TS + 2, 5)), option=orjson.OPT_INDENT_2)  # one event, many lines
    proc.handle_batch("live.likes", 0, [Rec(7, b"s1", pack, TS), Rec(8, b"s1", pretty, TS)])
    assert proc.states[("live.likes", 0)].windows[(TS, "s1")][LIKES] == 10
    (key, value), = proc.take_dead_letters()
    rec = orjson.loads(value)
    assert key == b"live.likes/0/7/1" and (rec["reason"], rec["offset"], rec["index"]) == ("malformed_json", 7, 1)
    assert rec["value"] == '{"type": "like", broken'
