"""Connection parameters for every Kafka client of the project, in one place."""

from __future__ import annotations

from typing import Any

from .settings import Settings


def bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise RuntimeError("no Kafka bootstrap servers: set STREAMPROC_KAFKA_BOOTSTRAP or start the embedded broker")
    return settings.kafka_bootstrap


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka producers, consumers and admin clients."""
    return {"bootstrap_servers": bootstrap(settings)}


def faust_broker_url(settings: Settings) -> str:
    return ";".join("kafka://" + h.strip() for h in bootstrap(settings).split(","))
