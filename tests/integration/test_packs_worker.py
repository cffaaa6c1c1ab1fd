"""Packs (several events per message, as JSON lines) through a running worker: the tallies, boards and
dead letters are the oracle's for the same events sent one by one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from support.helpers import assert_exact, started

from streamproc.logs.logfile import write_log
from streamproc.logs.packs import pack_records, unpack_records
from streamproc.logs.produce import publish
from streamproc.runtime.kafka import read_topic
from streamproc.settings import Settings
from streamproc.sim.generate import generate
from streamproc.verify.demo import reconcile
from streamproc.verify.stack import Stack, wait_flushed


def test_packed_run_matches_the_oracle_of_the_same_events_sent_one_by_one(settings: Settings, tmp_path: Path) -> None:
    packs = list(pack_records(generate(40_000, seed=5, start_ms=int(time.time() * 1000) - 60_000), 25))
    equivalent = tmp_path / "unpacked.jsonl"
    n = write_log(equivalent, unpack_records(packs))
    assert len(packs) < n / 5
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker())
        sent = asyncio.run(publish(packs, stack.settings))
        wait_flushed([worker], sent.last_offsets)
        dead = asyncio.run(read_topic(stack.settings, "live.deadletter"))
        worker.stop()
    summary = reconcile(settings, str(equivalent), dead_letters=dead)
    assert_exact(summary, "dead_letter_match")
