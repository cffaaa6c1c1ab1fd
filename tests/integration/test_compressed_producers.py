"""Producers that compress: one log sent in five parts, each in another of Kafka's batch codecs, through a
running worker. The tallies, boards and dead letters are the oracle's for the whole log.

Kafka's producers compress by default in many fleets (lz4, zstd), and a broker hands the batches on as
sent: without the codec a consumer stops at the first such batch (aiokafka raises UnsupportedCodecError
from its fetcher). The broker is read raw first, so this run cannot pass on batches nobody compressed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from benchmarks.procstat import peak_rss_bytes
from support.helpers import assert_exact, recent_log, send_zeros, started

from streamproc.logs.logfile import read_log
from streamproc.logs.produce import publish
from streamproc.runtime.kafka import CODECS, compression, read_topic
from streamproc.runtime.topics import EVENT_TOPICS, partitions_of
from streamproc.settings import Settings
from streamproc.verify.demo import reconcile
from streamproc.verify.stack import Stack, wait_flushed

# Kafka's codec ids in a record batch's attributes, by name
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


async def codecs_on_broker(settings: Settings) -> set[int]:
    """The codecs of every record batch the broker holds on the event topics, read with raw fetches."""
    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap)
    await client.bootstrap()
    seen: set[int] = set()
    try:
        for logical in EVENT_TOPICS:
            topic = settings.topic(logical)
            await client.force_metadata_update()
            for part in range(partitions_of(logical)):
                node = client.cluster.leader_for_partition(TopicPartition(topic, part))
                offset = 0
                while True:
                    want = [(topic, [(part, offset, 4 * 2**20)])]
                    resp = await client.send(node, FetchRequest(100, 1, 4 * 2**20, 0, want))
                    answer = resp.topics[0][1][0]  # (partition, error, high watermark, ..., records)
                    high, raw = answer[2], answer[-1]
                    records = MemoryRecords(raw)
                    while (batch := records.next_batch()) is not None:
                        seen.add(batch.compression_type)
                        offset = batch.next_offset
                    if offset >= high or not raw:
                        break
    finally:
        await client.close()
    return seen


def test_a_log_sent_in_every_codec_is_counted_exactly(settings: Settings, tmp_path: Path) -> None:
    log = recent_log(tmp_path / "log.jsonl", 20_000, seed=17)
    records = list(read_log(log))
    part = -(-len(records) // len(CODECS))
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker())
        last: dict = {}
        for i, codec in enumerate(CODECS):  # in log order: each partition gets every codec, one after another
            chunk = records[i * part:(i + 1) * part]
            sent = asyncio.run(publish(chunk, stack.settings.replace(produce_compression=codec)))
            last.update(sent.last_offsets)
        assert asyncio.run(codecs_on_broker(stack.settings)) == set(CODEC_IDS.values())
        wait_flushed([worker], last)
        dead = asyncio.run(read_topic(stack.settings, "live.deadletter"))
        worker.stop()
    assert_exact(reconcile(settings, str(log), dead_letters=dead), "dead_letter_match")


def test_a_batch_that_decompresses_past_the_bound_is_one_dead_letter_in_every_codec_and_memory_stays_bounded(
        settings: Settings, tmp_path: Path) -> None:
    """A producer's batch is checked by the broker at its compressed size only: zeros compress to almost
    nothing, and a 40 KB batch held a 1.2 GB value, which took a worker from 366 MB to 2.8 GB resident
    (a crash loop wherever memory is limited: the restarted worker fetches the same batch). Between two
    halves of a log, one such batch per codec, each far past STREAMPROC_MAX_BATCH_BYTES: each is one
    dead letter (batch_too_large, at its offset), the worker's peak memory grows by less than half of
    one, and the log's tallies, boards and dead letters are the oracle's."""
    limit = 8 << 20
    sizes = dict.fromkeys(("gzip", "snappy", "lz4", "zstd"), 96 << 20)  # snappy: ~4.6 MB on the wire (Tansu takes it)
    log = recent_log(tmp_path / "log.jsonl", 6_000, seed=19)
    records = list(read_log(log))
    settings = settings.replace(max_batch_bytes=limit)
    with Stack(settings, tmp_path / "logs") as stack:
        worker = started(stack.worker())
        first = asyncio.run(publish(records[:3_000], stack.settings))
        wait_flushed([worker], first.last_offsets)
        peak_before = peak_rss_bytes(worker.proc.pid)
        landed = {codec: send_zeros(stack.settings, codec, size) for codec, size in sizes.items()}
        rest = asyncio.run(publish(records[3_000:], stack.settings))
        last = {**first.last_offsets}
        for tp, offset in [*rest.last_offsets.items(), *((("live.views", p), o) for p, o in landed.values())]:
            last[tp] = max(offset, last.get(tp, -1))
        wait_flushed([worker], last)
        grew_mb = (peak_rss_bytes(worker.proc.pid) - peak_before) / 2**20
        page = worker.get("/metrics", 5).decode()
        dead = asyncio.run(read_topic(stack.settings, "live.deadletter"))
        worker.stop()
    refused = [orjson.loads(d.value) for d in dead if orjson.loads(d.value)["reason"] == "batch_too_large"]
    assert sorted((r["partition"], r["offset"]) for r in refused) == sorted(landed.values())
    for r in refused:
        (codec,) = [c for c, where in landed.items() if where == (r["partition"], r["offset"])]
        assert r["topic"] == stack.settings.topic("live.views") and r["detail"].startswith(f"{codec} record batch of ")
        assert f"past {limit} bytes" in r["detail"] and r["size"] == 0, r
    assert 'streamproc_events_rejected_total{reason="batch_too_large"} 4.0' in page
    assert grew_mb < 48, f"peak resident memory grew {grew_mb:.0f} MB"  # half a bomb; the bound's work is < 20
    others = [d for d in dead if orjson.loads(d.value)["reason"] != "batch_too_large"]
    assert_exact(reconcile(settings, str(log), dead_letters=others), "tallies_match", "boards_match",
                 "dead_letter_match")
    print(f"bombs {sizes}: peak RSS grew {grew_mb:.1f} MB (bound {limit >> 20} MiB)")


def test_an_unknown_codec_is_refused_by_name(settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"STREAMPROC_PRODUCE_COMPRESSION='brotli': expected one of none, gzip, "):
        compression(settings.replace(produce_compression="brotli"))
    assert compression(settings.replace(produce_compression="LZ4")) == "lz4"
    assert compression(settings) is None
