"""Create the topics declared in ``topics/topics.toml`` on any Kafka-protocol broker, idempotently."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamproc.resources import data_path
from streamproc.runtime.kafka import client_kwargs
from streamproc.settings import Settings

log = logging.getLogger(__name__)

SPEC_FILE = data_path("topics/topics.toml")
EVENT_TOPICS = ("live.views", "live.likes", "live.orders")
DEADLETTER = "live.deadletter"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


def load_specs(path: str | Path | None = None) -> list[TopicSpec]:
    """The topic declarations: ``path``, else STREAMPROC_TOPICS_FILE (``Settings.topics_file``), else the bundled file."""
    path = Path(path or Settings.from_env().topics_file or SPEC_FILE)
    doc = tomllib.loads(path.read_text())
    rf = int(doc.get("defaults", {}).get("replication_factor", 1))
    return [
        TopicSpec(name, int(t["partitions"]), int(t.get("replication_factor", rf)), {k: str(v) for k, v in t.get("config", {}).items()})
        for name, t in doc["topics"].items()
    ]


def partitions_of(name: str) -> int:
    return next(s.partitions for s in load_specs() if s.name == name)


async def create_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> dict[str, str]:
    """Create missing topics; an existing topic is left alone. Returns name -> "created" | "exists"."""
    specs = specs or load_specs(settings.topics_file or None)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        todo = [s for s in specs if settings.topic(s.name) not in existing]
        result = {settings.topic(s.name): "exists" for s in specs if settings.topic(s.name) in existing}
        if todo:
            resp = await admin.create_topics(
                [NewTopic(settings.topic(s.name), s.partitions, s.replication_factor, topic_configs=s.config) for s in todo]
            )
            for name, code, message in ((e[0], e[1], e[2]) for e in resp.topic_errors):
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (a racing creator)
                    raise RuntimeError(f"creating topic {name} failed: error {code} {message}")
                result[name] = "created" if code == 0 else "exists"
        log.info("topics: %s", result)
        return result
    finally:
        await admin.close()
