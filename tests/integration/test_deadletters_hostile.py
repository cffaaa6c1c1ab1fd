"""A hostile producer against the dead-letter path: huge messages, bytes JSON blows up, packs of noise.

Issue 11: a dead letter over the producer's 1 MB limit crashed the agent and lost the dead letters
after it; a message with newlines was split into lines before its size was checked (2 MB of noise
became 8,120 dead letters). Here a dead letter always fits (a bounded prefix plus size and sha256, the
rest in the source topic), a refused send is retried and never ends the agent, and size comes before
any parsing, packs included. Figures are printed (``pytest -s``) and tabled in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from support import helpers
from support.helpers import Rec, assert_exact, report, started

from streamproc import metrics
from streamproc.ingest.deadletter import (
    RECORD_MAX_BYTES,
    VALUE_PREFIX_BYTES,
    Truncated,
    make_record,
    original_key,
    original_value,
    source_unit,
)
from streamproc.ingest.events import Rejection
from streamproc.logs.logfile import LogRecord, write_log
from streamproc.logs.packs import pack_records, unpack_records
from streamproc.logs.produce import publish
from streamproc.logs.redrive import exact_bytes, fetch_sources, redrive, source_coords
from streamproc.runtime.kafka import client_kwargs, read_topic
from streamproc.runtime.processor import Processor
from streamproc.runtime.worker import Worker
from streamproc.settings import Settings
from streamproc.sim.generate import generate
from streamproc.store.chdb import ChdbSink
from streamproc.verify.demo import reconcile
from streamproc.verify.stack import Stack, wait_flushed

NOW = int(time.time() * 1000) - 20_000
MAX_LINES = Settings.max_pack_lines


def view(i: int, streamer: str = "s-hostile", ts: int = NOW) -> bytes:
    return orjson.dumps(helpers.view(event_id=f"h{i}", ts=ts + i, streamer_id=streamer, session_id="live-h",
                                     viewer_id=f"v{i}"))


def noise_with_newlines(n: int, seed: int) -> bytes:
    """Random bytes that are certainly split by newlines (about one every 256 bytes, as found)."""
    raw = bytearray(random.Random(seed).randbytes(n))
    raw[1000] = ord("\n")
    return bytes(raw)


HUGE = {  # hostile values: each one's dead letter must fit, whatever JSON makes of its bytes
    "10 MB JSON": b'{"type":"view","client_log":"' + b"x" * (10 * 1024 * 1024) + b'"}',
    "600 KB of quotes": b'"' * 600_000,  # JSON escaping doubles it
    "1 MB of control characters": bytes(range(32)) * (1024 * 1024 // 32),  # escaping makes each 6 bytes
    "300 KB not UTF-8": random.Random(3).randbytes(300_000),
}

# -- (a) the record: bounded, identified, exact when whole ---------------------------------------------


@pytest.mark.parametrize("name", sorted(HUGE))
def test_a_huge_value_makes_a_bounded_record_with_size_sha256_and_the_truncated_flag(name: str) -> None:
    value = HUGE[name]
    key, encoded = make_record("live.views", 2, 41, b"s1", value, NOW, Rejection("oversized", "too big"))
    rec = orjson.loads(encoded)
    assert len(encoded) < RECORD_MAX_BYTES, len(encoded)
    assert key == b"live.views/2/41/0"
    assert rec["size"] == len(value) and rec["sha256"] == hashlib.sha256(value).hexdigest()
    assert rec["truncated"] is True
    kept = rec["value"].encode() if "value" in rec else base64.b64decode(rec["value_b64"])
    assert value.startswith(kept) and VALUE_PREFIX_BYTES - 3 <= len(kept) <= VALUE_PREFIX_BYTES  # a true prefix
    with pytest.raises(Truncated):
        original_value(rec)
    with pytest.raises(Truncated):
        original_key(rec)
    report("record", case=name, input_bytes=len(value), record_bytes=len(encoded),
           encoding="text" if "value" in rec else "base64")


@pytest.mark.parametrize("value, field", [
    (b'{"type":"view","ts":"soon"}', "value"),
    ("主播辛苦了".encode() + b"\x00\x1f\"\\", "value"),  # UTF-8 with escapes: still text
    (b"\xff\xfe\x00 GBK \xc4\xe3\xba\xc3", "value_b64"),
    (b"", "value"),
])
def test_a_small_value_round_trips_exactly(value: bytes, field: str) -> None:
    _, encoded = make_record("live.orders", 0, 7, b"\xff\x00", value, None, Rejection("wrong_type", "ts"), index=3)
    rec = orjson.loads(encoded)
    assert field in rec and rec["truncated"] is False and rec["size"] == len(value)
    assert rec["sha256"] == hashlib.sha256(value).hexdigest()
    assert original_value(rec) == value and original_key(rec) == b"\xff\x00"


def test_a_huge_key_is_cut_too_and_the_whole_message_comes_from_its_source() -> None:
    key = b"k" * 100_000
    value = b"line one\n" + view(1) + b"\nline three"
    _, encoded = make_record("live.views", 0, 9, key, view(1), NOW, Rejection("key_mismatch", "x"), index=1)
    rec = orjson.loads(encoded)
    assert rec["truncated"] is True and len(encoded) < 4096
    assert source_unit(rec, key, value) == (key, view(1))  # line 1 of the pack, proven by its sha256
    with pytest.raises(Truncated):
        source_unit(rec, key, value.replace(b"h1", b"h2"))  # another message at that offset


# -- (b) the processor: size before parsing, packs bounded ---------------------------------------------


@pytest.fixture(scope="class")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbSink]:
    """One real chDB store for the in-process tests (chDB opens one path per process: closed after them,
    before the end-to-end test reconciles its own)."""
    s = ChdbSink(tmp_path_factory.mktemp("hostile") / "clickhouse", "hostile")
    s.apply_schema()
    yield s
    s.close()


def dead_of(proc: Processor) -> list[dict[str, Any]]:
    out = []
    for key, value in proc.take_dead_letters():
        assert len(value) < RECORD_MAX_BYTES
        rec = orjson.loads(value)
        assert key == f"{rec['topic']}/{rec['partition']}/{rec['offset']}/{rec['index']}".encode()
        out.append(rec)
    return out


class TestInProcess:
    def test_size_comes_before_parsing_and_a_pack_yields_at_most_max_pack_lines_dead_letters(
            self, sink: ChdbSink, settings: Settings) -> None:
        proc = Processor(settings, sink)
        proc.assign([("live.views", 0)])
        noise = noise_with_newlines(2 * 1024 * 1024, seed=11)
        ones = b"\n".join([b"1"] * MAX_LINES)  # at the bound: every line judged (not_object)
        too_long = b"\n".join([b"1"] * (MAX_LINES + 5))
        good_pack = b"\n".join(view(i) for i in range(3))
        bad = [b'{"type":"view", broken', b"\xff\xfe not utf-8", view(9).replace(b'"enter"', b"7")]
        records = [Rec(0, b"s-hostile", noise, NOW), Rec(1, b"s-hostile", too_long, NOW),
                   Rec(2, b"s-hostile", ones, NOW), Rec(3, b"s-hostile", good_pack, NOW)]
        records += [Rec(4 + i, b"s-hostile", v, NOW) for i, v in enumerate(bad)]
        records.append(Rec(7, b"s-hostile", view(20), NOW))
        began = time.perf_counter()
        proc.handle_batch("live.views", 0, records)
        seconds = time.perf_counter() - began
        dead = dead_of(proc)
        by_offset = Counter(d["offset"] for d in dead)
        assert by_offset == {0: 1, 1: 1, 2: MAX_LINES, 4: 1, 5: 1, 6: 1}, by_offset
        first = {d["offset"]: d for d in dead if d["index"] == 0}
        assert (first[0]["reason"], first[0]["size"], first[0]["truncated"]) == ("oversized", len(noise), True)
        assert first[0]["sha256"] == hashlib.sha256(noise).hexdigest()
        assert first[1]["reason"] == "oversized" and f"pack of {MAX_LINES + 5} lines" in first[1]["detail"]
        assert original_value(first[1]) == too_long  # refused whole, kept whole
        assert {d["reason"] for d in dead if d["offset"] == 2} == {"not_object"}
        assert [first[o]["reason"] for o in (4, 5, 6)] == ["malformed_json", "invalid_utf8", "wrong_type"]
        st = proc.states[("live.views", 0)]
        assert st.offset == 7 and not st.half_applied  # the last unit of each message passed last=True
        assert proc.counts["accepted"] == 4 and proc.counts["rejected"] == len(dead) == MAX_LINES + 5
        proc.handle_batch("live.views", 0, records)  # redelivered: nothing twice
        assert proc.take_dead_letters() == [] and proc.counts["accepted"] == 4
        report("processor", messages=len(records), dead_letters=len(dead), seconds=round(seconds, 3),
               noise_2mb_dead_letters=by_offset[0], pack_over_the_bound_dead_letters=by_offset[1])

    def test_a_refused_dead_letter_is_kept_in_order_retried_and_never_passed_by_a_checkpoint(
            self, sink: ChdbSink, settings: Settings) -> None:
        settings = settings.replace(kafka_bootstrap="127.0.0.1:9", sink_retry_max_s=0.2)  # no broker is reached
        failures = metrics.REGISTRY.get_sample_value("streamproc_deadletter_send_failures_total")

        async def run() -> None:
            worker = Worker(settings, sink)
            worker._commit = no_group  # no consumer group here (the checkpoint in the sink is what counts)
            worker.processor.assign([("live.views", 1)])
            values = [b"{broken %d" % i for i in range(5)] + [view(30)]
            worker.processor.handle_batch("live.views", 1, [Rec(i, b"s-hostile", v, NOW) for i, v in enumerate(values)])
            expected = list(worker.processor.dead)
            worker.dlq = RefusingTopic(refusals=10**6)  # the broker takes nothing
            assert await worker.flush() is False
            assert checkpoint(sink, "live.views", 1) == -1  # the checkpoint did not pass them
            assert [d.record for d in worker.dead_outbox] == expected
            worker.dlq = RefusingTopic(refusals=3)  # refuses three sends (before and after they leave)
            await asyncio.wait_for(worker._pass_dead_letters(), 30)  # after a batch: handed over, not awaited
            await asyncio.wait_for(worker._pass_dead_letters(), 30)  # a refusal is known: retry until all are in
            assert worker.dlq.kept == expected and worker.dead_outbox == []  # each once, in order
            assert await worker.flush() is True and checkpoint(sink, "live.views", 1) == 5

        asyncio.run(run())
        assert metrics.REGISTRY.get_sample_value("streamproc_deadletter_send_failures_total") - failures >= 4

    def test_an_agent_passing_dead_letters_never_waits_behind_a_flush_waiting_for_the_broker(
            self, sink: ChdbSink, settings: Settings) -> None:
        settings = settings.replace(kafka_bootstrap="127.0.0.1:9")  # no broker is reached

        async def run() -> None:
            worker = Worker(settings, sink)
            worker._commit = no_group
            worker.processor.assign([("live.views", 2)])
            worker.dlq = held = HeldTopic()  # takes every send; answers only when told to
            broken = [Rec(i, b"s-hostile", b"{broken %d" % i, NOW) for i in range(5)]
            worker.processor.handle_batch("live.views", 2, broken[:3])
            first = list(worker.processor.dead)
            flush = asyncio.create_task(worker.flush())  # hands the three over and waits for their answers
            while len(held.sent) < 3:
                await asyncio.sleep(0.01)
            worker.processor.handle_batch("live.views", 2, broken[3:])
            second = list(worker.processor.dead)
            await asyncio.wait_for(worker._pass_dead_letters(), 2)  # the flush waits; the agent does not
            assert [r for r, _ in held.sent] == first + second and not flush.done()  # in order, all in flight
            held.answer(3)  # the broker takes the flush's three: its checkpoint may pass them, not the rest
            assert await asyncio.wait_for(flush, 5) is True and checkpoint(sink, "live.views", 2) == 2
            assert [d.record for d in worker.dead_outbox] == second
            held.answer(5)
            assert await worker.flush() is True and checkpoint(sink, "live.views", 2) == 4
            assert worker.dead_outbox == [] and [r for r, _ in held.sent] == first + second  # each sent once

        asyncio.run(run())

    def test_packs_never_pass_the_size_limit_and_unpacking_mirrors_the_worker(self) -> None:
        records = [LogRecord("live.views", b"s1", NOW + i, view(i, "s1")) for i in range(40)]
        big = LogRecord("live.views", b"s1", NOW, b'{"pad":"' + b"x" * 70_000 + b'"}')
        packs = list(pack_records(records[:20] + [big] + records[20:], 25, max_bytes=2_000))
        assert all(len(p.value) <= 2_000 for p in packs if p is not big) and big in packs
        assert [r.value for r in unpack_records(packs)] == [r.value for r in records[:20] + [big] + records[20:]]
        noise = LogRecord("live.views", b"s1", NOW, noise_with_newlines(100_000, seed=5))
        too_long = LogRecord("live.views", b"s1", NOW, b"\n".join([view(1)] * 11))
        assert list(unpack_records([noise, too_long], max_lines=10)) == [noise, too_long]  # refused whole


async def no_group(offsets: dict) -> None:
    """Stands for the offset commit to the consumer group, which this in-process worker has not joined."""


class RefusingTopic:
    """Stands for the dead-letter topic: refuses the first ``refusals`` sends, alternately before they
    leave (raised by send) and in the broker (a failed future), then keeps what it is sent."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.kept: list[tuple[bytes, bytes]] = []

    async def send(self, *, key: bytes, value: bytes, force: bool = False) -> asyncio.Future:
        ack = asyncio.get_running_loop().create_future()
        if self.refusals > 0:
            self.refusals -= 1
            if self.refusals % 2:
                raise MessageSizeTooLargeError("the message is too large")
            ack.set_exception(KafkaTimeoutError("no answer"))
        else:
            self.kept.append((key, value))
            ack.set_result(None)
        return ack


class HeldTopic:
    """Stands for a dead-letter topic on a slow broker: keeps every send, answers them when told."""

    def __init__(self) -> None:
        self.sent: list[tuple[tuple[bytes, bytes], asyncio.Future]] = []

    async def send(self, *, key: bytes, value: bytes, force: bool = False) -> asyncio.Future:
        ack = asyncio.get_running_loop().create_future()
        self.sent.append(((key, value), ack))
        return ack

    def answer(self, upto: int) -> None:
        """Acknowledge the first ``upto`` sends."""
        for _, ack in self.sent[:upto]:
            if not ack.done():
                ack.set_result(None)


def checkpoint(sink: ChdbSink, topic: str, partition: int) -> int:
    return sink.restore(topic, partition, 10_000, 30_000, 3_600_000).offset


# -- (c) end to end: broker, worker process, chDB, oracle ----------------------------------------------


async def send_each(settings: Settings, records: list[LogRecord]) -> list[tuple[int, int]]:
    """Publish one by one, as a hostile producer with a 64 MB request limit would; (partition, offset) each."""
    producer = AIOKafkaProducer(**client_kwargs(settings), max_request_size=64 * 1024 * 1024, acks="all")
    await producer.start()
    try:
        out = []
        for r in records:
            md = await producer.send_and_wait(settings.topic(r.topic), r.value, key=r.key, timestamp_ms=r.ts)
            out.append((md.partition, md.offset))
        return out
    finally:
        await producer.stop()


def test_a_hostile_producer_end_to_end_no_dead_letter_lost_the_worker_lives_and_tallies_are_exact(
        settings: Settings, tmp_path: Path) -> None:
    """Every sequence of issue 11 in one run: huge and escaping-hostile messages followed by ordinary
    bad ones, noise with newlines, a pack past the line bound, a null key, ids no API could look up, and
    an order forged 10 years ahead (event time and record time) followed by 85 genuine orders re-sent.
    Ends in a reconcile of what users read: tallies, boards and every dead letter exactly once."""
    key = b"s-hostile"
    hostile = [  # (value, the dead letter it must make: (index, reason, refused bytes), or None)
        (HUGE["10 MB JSON"], (0, "oversized", HUGE["10 MB JSON"])),
        (HUGE["600 KB of quotes"], (0, "oversized", HUGE["600 KB of quotes"])),
        (noise := noise_with_newlines(2 * 1024 * 1024, seed=7), (0, "oversized", noise)),
        (too_long := b"\n".join([b"1"] * (MAX_LINES + 5)), (0, "oversized", too_long)),
        (b'{"type":"view", broken', (0, "malformed_json", b'{"type":"view", broken')),
        (utf := view(5).replace(b"live-h", b"\xff\xfe"), (0, "invalid_utf8", utf)),
        (b"\n".join([view(6), b"[1]", view(7)]), (1, "not_object", b"[1]")),  # a pack with one bad line
        (wrong := view(8).replace(b'"enter"', b"7"), (0, "wrong_type", wrong)),
        (view(9), None),
    ]
    sent = [LogRecord("live.views", key, NOW + i, v) for i, (v, _) in enumerate(hostile)]
    # keys and ids: no key at all; ids with NUL, a quote, an emoji (refused), one in Chinese (accepted)
    for i, sid, dead in ((10, "s-hostile", "key_mismatch"), (11, "s\x00x", "bad_value"), (12, 'a"b', "bad_value"),
                         (13, "直播🍑", "bad_value"), (14, "五常-稻花香", None)):
        v = view(i, streamer=sid)
        hostile.append((v, (0, dead, v) if dead else None))
        sent.append(LogRecord("live.views", None if dead == "key_mismatch" else sid.encode(), NOW + i, v))
    good = list(generate(3_000, seed=13, start_ms=NOW - 10_000, malformed_share=0, duplicate_share=0, late_share=0))
    # an order of a streamer with real trade, forged 10 years ahead in event time and record time; then
    # 85 of that streamer's genuine paid orders sent again (callbacks retried): each must count once
    paid = [r for r in good if r.topic == "live.orders" and b'"paid"' in r.value]
    victim = Counter(r.key for r in paid).most_common(1)[0][0]
    decade = 10 * 365 * 86_400_000
    forged_event = {**orjson.loads(next(r.value for r in paid if r.key == victim)), "order_id": "forged-1",
                    "ts": NOW + decade}
    forged = LogRecord("live.orders", victim, NOW + decade, orjson.dumps(forged_event))
    hostile.append((forged.value, (0, "future", forged.value)))
    mine = [r for r in paid if r.key == victim]
    resent = (mine * (85 // len(mine) + 1))[:85]
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker())
        began = time.perf_counter()
        coords = asyncio.run(send_each(stack.settings, sent))
        publish_seconds = time.perf_counter() - began
        result = asyncio.run(publish(good, stack.settings))
        coords += asyncio.run(send_each(stack.settings, [forged]))
        sent.append(forged)
        again = asyncio.run(publish(resent, stack.settings))
        last = {tp: max(result.last_offsets.get(tp, -1), again.last_offsets.get(tp, -1))
                for tp in {*result.last_offsets, *again.last_offsets}}
        for r, (partition, offset) in zip(sent, coords):
            last[(r.topic, partition)] = max(last.get((r.topic, partition), -1), offset)
        wait_flushed([worker], last, timeout_s=180)
        assert worker.alive()
        raw = asyncio.run(read_topic(stack.settings, "live.deadletter"))
        records = [orjson.loads(m.value) for m in raw]

        # every expected dead letter exactly once, identified by its source and the sha256 of its bytes
        want = Counter((r.topic, partition, offset, index, reason, hashlib.sha256(unit).hexdigest())
                       for r, (_, dead), (partition, offset) in zip(sent, hostile, coords) if dead
                       for index, reason, unit in [dead])
        got = Counter((r["topic"], r["partition"], r["offset"], r["index"], r["reason"], r["sha256"]) for r in records)
        assert got == want, (got - want, want - got)
        sizes = {f"{r['offset']}/{r['index']}": len(m.value) for r, m in zip(records, raw)}
        assert max(sizes.values()) < RECORD_MAX_BYTES

        # the truncated ones: their originals come back from the source topic, proven by sha256
        truncated = [r for r in records if r["truncated"]]
        assert len(truncated) == 3  # 10 MB, 600 KB of quotes, 2 MB of noise
        began = time.perf_counter()
        sources = asyncio.run(fetch_sources(stack.settings, [source_coords(r) for r in truncated]))
        originals = {(r["partition"], r["offset"]): exact_bytes(r, sources) for r in truncated}
        fetch_seconds = time.perf_counter() - began
        by_coords = {(r.topic, *where): (r.key, v) for r, (v, _), where in zip(sent, hostile, coords)}
        assert all(originals[c] == by_coords[("live.views", *c)] for c in originals)
        began = time.perf_counter()
        summary = redrive(stack.settings, truncated, dry_run=True)  # the CLI's path, judging, sending nothing
        redrive_seconds = time.perf_counter() - began
        assert summary["invalid"] == [] and summary["from_source"] == 3, summary
        assert summary["held_back"] == {"oversized": 3} and summary["sent"] == 0, summary
        failures = [line for line in worker.get("/metrics").decode().splitlines()
                    if line.startswith("streamproc_deadletter_send_failures_total")]
        assert failures == ["streamproc_deadletter_send_failures_total 0.0"], failures
        assert worker.alive()
        worker.stop()
    log_text = (tmp_path / "logs" / "worker-0.log").read_text(errors="replace")
    assert "MessageSizeTooLarge" not in log_text and "ProducerSendError" not in log_text

    log = tmp_path / "sent.jsonl"
    # in the order the broker got them; the oracle knows no packs: it reads them unpacked
    write_log(log, unpack_records(sent[:-1] + good + [forged] + resent))
    result = assert_exact(reconcile(settings, str(log), dead_letters=raw), "tallies_match", "boards_match",
                          "dead_letter_match")
    report("end_to_end", dead_letters=len(records), record_bytes_by_offset=sizes,
           largest_record_bytes=max(sizes.values()), publish_hostile_seconds=round(publish_seconds, 2),
           fetch_and_verify_seconds=round(fetch_seconds, 3), redrive_dry_run_seconds=round(redrive_seconds, 3),
           windows=result["windows"])
