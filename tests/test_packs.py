"""Packs (several events per message, as JSON lines): each event counts as if sent alone."""

from __future__ import annotations

import asyncio
import time
from collections import namedtuple
from pathlib import Path

import orjson

from streamproc.core.state import LIKES, PartitionState
from streamproc.logs.logfile import write_log
from streamproc.logs.packs import pack_records, unpack_records
from streamproc.logs.produce import publish
from streamproc.runtime.kafka import read_topic
from streamproc.runtime.processor import Processor
from streamproc.settings import Settings
from streamproc.sim.generate import generate
from streamproc.verify.demo import reconcile
from streamproc.verify.stack import Stack, event_partitions, wait_flushed

Rec = namedtuple("Rec", "offset key value timestamp")  # the fields of an aiokafka ConsumerRecord used here
T0 = 1_763_900_000_000


def like(ts: int, count: int) -> bytes:
    return orjson.dumps({"type": "like", "schema_version": 1, "event_id": f"l{ts}", "ts": ts, "streamer_id": "s1",
                         "session_id": "live1", "viewer_id": "v1", "count": count})


def test_a_pack_is_read_as_its_events_and_a_bad_line_is_dead_lettered_alone(settings: Settings) -> None:
    proc = Processor(settings, sink=None)  # type: ignore[arg-type]  # no flush in this test
    proc.states[("live.likes", 0)] = PartitionState("live.likes", 0, proc.rules)
    pack = b"\n".join([like(T0, 2), b'{"type": "like", broken', like(T0 + 1, 3)])
    pretty = orjson.dumps(orjson.loads(like(T0 + 2, 5)), option=orjson.OPT_INDENT_2)  # one event, many lines
    proc.handle_batch("live.likes", 0, [Rec(7, b"s1", pack, T0), Rec(8, b"s1", pretty, T0)])
    assert proc.states[("live.likes", 0)].windows[(T0, "s1")][LIKES] == 10
    (key, value), = proc.take_dead_letters()
    rec = orjson.loads(value)
    assert key == b"live.likes/0/7/1" and (rec["reason"], rec["offset"], rec["index"]) == ("malformed_json", 7, 1)
    assert rec["value"] == '{"type": "like", broken'


def test_packed_run_matches_the_oracle_of_the_same_events_sent_one_by_one(settings: Settings, tmp_path: Path) -> None:
    packs = list(pack_records(generate(40_000, seed=5, start_ms=int(time.time() * 1000) - 60_000), 25))
    equivalent = tmp_path / "unpacked.jsonl"
    n = write_log(equivalent, unpack_records(packs))
    assert len(packs) < n / 5
    with Stack(settings, tmp_path / "logs") as stack:
        worker = stack.worker().start()
        worker.wait_assigned(event_partitions())
        sent = asyncio.run(publish(packs, stack.settings))
        wait_flushed([worker], sent.last_offsets)
        dead = asyncio.run(read_topic(stack.settings, "live.deadletter"))
        worker.stop()
    summary = reconcile(settings, str(equivalent), dead_letters=dead)
    assert summary["oracle_match"] and summary["mismatches"] == 0 and summary["dead_letter_match"], summary
