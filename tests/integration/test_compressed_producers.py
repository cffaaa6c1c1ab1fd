"""Producers that compress: one log sent in five parts, each in another of Kafka's batch codecs, through a
running worker. The tallies, boards and dead letters are the oracle's for the whole log.

Kafka's producers compress by default in many fleets (lz4, zstd), and a broker hands the batches on as
sent: without the codec a consumer stops at the first such batch (aiokafka raises UnsupportedCodecError
from its fetcher). The broker is read raw first, so this run cannot pass on batches nobody compressed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from support.helpers import assert_exact, recent_log, started

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


def test_an_unknown_codec_is_refused_by_name(settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"STREAMPROC_PRODUCE_COMPRESSION='brotli': expected one of none, gzip, "):
        compression(settings.replace(produce_compression="brotli"))
    assert compression(settings.replace(produce_compression="LZ4")) == "lz4"
    assert compression(settings) is None
