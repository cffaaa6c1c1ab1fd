"""One forged timestamp must not black out a streamer (issue 11, item 1): on the broker.

The event topics ask the broker to stamp append time (``message.timestamp.type=LogAppendTime``; Kafka
honours it, the embedded Tansu 0.6 does not); whatever the broker does, a record forged ten years ahead
does not get through: the worker's own clock refuses it (tests/unit/test_forged_time.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from support.helpers import assert_ok, decode_record, order, run_cli

from streamproc.ingest.events import Rejection
from streamproc.logs.logfile import LogRecord
from streamproc.runtime.broker import EmbeddedBroker
from streamproc.runtime.kafka import client_kwargs, read_topic
from streamproc.runtime.topics import EVENT_TOPICS, load_specs
from streamproc.settings import Settings

TEN_YEARS_MS = 10 * 365 * 86_400_000


def test_event_topics_ask_for_broker_time_and_a_forged_record_time_is_refused_either_way(settings: Settings,
                                                                                       tmp_path: Path) -> None:
    specs = {s.name: s for s in load_specs()}
    assert all(specs[t].config["message.timestamp.type"] == "LogAppendTime" for t in EVENT_TOPICS)
    with EmbeddedBroker(settings.embedded_broker_port, tmp_path / "broker.log") as broker:
        s = settings.replace(kafka_bootstrap=broker.bootstrap)
        res = assert_ok(run_cli("topics", "create", env=s.to_env(), timeout=120))
        assert json.loads(res.stdout) == {s.topic(name): "created" for name in specs}
        now = int(time.time() * 1000)
        configs, records = asyncio.run(_forge(s, now + TEN_YEARS_MS))
    assert configs["message.timestamp.type"] == "LogAppendTime"  # the broker took the topic config
    (rec,) = records
    broker_stamped = rec.timestamp_type == 1 and rec.timestamp <= int(time.time() * 1000)  # Kafka
    # Tansu 0.6 hands on the producer's time: the reader's clock refuses it
    refused = decode_record(LogRecord("live.orders", b"X", rec.timestamp, rec.value), now)
    assert broker_stamped or (isinstance(refused, Rejection) and refused.reason == "future"), (rec, refused)


async def _forge(settings: Settings, forged_ts: int) -> tuple[dict[str, str], list]:
    """Send one order stamped ``forged_ts``; the topic's configs as the broker describes them, and what a
    consumer then reads."""
    topic = settings.topic("live.orders")
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        forged = order(event_id="e-x-forged-paid", ts=forged_ts, streamer_id="X", session_id="X-live",
                       order_id="x-forged", quantity=1, amount_fen=100)
        await producer.send_and_wait(topic, orjson.dumps(forged), key=b"X", timestamp_ms=forged_ts)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        (resp,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    (resource,) = resp.resources
    configs = {entry[0]: entry[1] for entry in resource[4]}
    return configs, await read_topic(settings, "live.orders")
