"""Connection parameters for every Kafka client of the project, in one place: servers, TLS and SASL.

Producers, consumers, the admin client and Faust all take their security from here, so a cluster that
needs SASL/SCRAM over TLS is configured once (``STREAMPROC_KAFKA_*``), and the password is read from the
environment or a ``*_FILE``, handed to the client and never formatted into a log line or a URL.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

from streamproc.settings import Settings

log = logging.getLogger(__name__)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Kafka's batch codecs; aiokafka compresses and decompresses them through cramjam (a dependency: without
# it a consumer stops at the first compressed batch a producer sends, with UnsupportedCodecError)
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise RuntimeError("no Kafka bootstrap servers: set STREAMPROC_KAFKA_BOOTSTRAP or start the embedded broker")
    return settings.kafka_bootstrap


def _protocol(settings: Settings) -> str:
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in PROTOCOLS:
        raise ValueError(f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if protocol.startswith("SASL"):
        if settings.kafka_sasl_mechanism.upper() not in SASL_MECHANISMS:
            raise ValueError(f"STREAMPROC_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism!r}: "
                             f"expected one of {', '.join(SASL_MECHANISMS)}")
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
            raise ValueError(f"{protocol} needs STREAMPROC_KAFKA_SASL_USERNAME and STREAMPROC_KAFKA_SASL_PASSWORD[_FILE]")
    return protocol


def compression(settings: Settings) -> str | None:
    """The codec producers compress with (``STREAMPROC_PRODUCE_COMPRESSION``), as aiokafka names it."""
    codec = settings.produce_compression.lower()
    if codec not in CODECS:
        raise ValueError(f"STREAMPROC_PRODUCE_COMPRESSION={settings.produce_compression!r}: "
                         f"expected one of {', '.join(CODECS)}")
    return None if codec == "none" else codec


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context for SSL and SASL_SSL (hostname checked, the CA file or system CAs)."""
    if not _protocol(settings).endswith("SSL"):
        return None
    ctx = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        ctx.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
    return ctx


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka producers, consumers and admin clients."""
    protocol = _protocol(settings)
    kwargs: dict[str, Any] = {"bootstrap_servers": bootstrap(settings), "security_protocol": protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if protocol.startswith("SASL"):
        kwargs.update(sasl_mechanism=settings.kafka_sasl_mechanism.upper(),
                      sasl_plain_username=settings.kafka_sasl_username,
                      sasl_plain_password=settings.kafka_sasl_password)
    return kwargs


def faust_broker_url(settings: Settings) -> str:
    return ";".join("kafka://" + h.strip() for h in bootstrap(settings).split(","))


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for the Faust app (None for PLAINTEXT)."""
    import faust

    protocol = _protocol(settings)
    ctx = ssl_context(settings)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                     ssl_context=ctx, mechanism=settings.kafka_sasl_mechanism.upper())
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


async def _probe(settings: Settings, topics: list[str]) -> list[str]:
    """Connect once, authenticate, and return which of ``topics`` the broker does not have."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        existing = set(await asyncio.wait_for(admin.list_topics(), 10))
        return [t for t in topics if t not in existing]
    finally:
        await admin.close()


def wait_for_broker(settings: Settings, topics: list[str], max_backoff_s: float = 10.0,
                    timeout_s: float | None = None) -> float:
    """Block until the brokers answer and hold ``topics``, retrying with capped exponential backoff.

    A worker started before its brokers (or while they are down) waits here and says so once per try,
    instead of crashing and being restarted in a loop by its supervisor. Returns the seconds waited.
    """
    started = time.monotonic()
    backoff = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            missing = asyncio.run(_probe(settings, topics))
            if not missing:
                if attempt > 1:
                    log.info("Kafka brokers %s are reachable after %.1fs", settings.kafka_bootstrap,
                             time.monotonic() - started)
                return time.monotonic() - started
            problem = f"topics missing: {', '.join(missing)}"
        except Exception as exc:  # unreachable, refused, timed out, authentication failed
            problem = _describe(exc)
            if settings.kafka_security_protocol.upper().startswith("SASL") and not _is_network(exc):
                problem = (f"SASL {settings.kafka_sasl_mechanism} authentication as {settings.kafka_sasl_username!r} "
                           f"failed: {problem}")
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise TimeoutError(f"Kafka brokers {settings.kafka_bootstrap} not ready in {timeout_s}s ({problem})")
        log.warning("Kafka brokers %s not ready (%s); retry %d in %.1fs", settings.kafka_bootstrap, problem,
                    attempt, backoff, extra={"event": "broker_unavailable", "retry_in_seconds": backoff})
        time.sleep(backoff)
        backoff = min(max_backoff_s, backoff * 2)


def _is_network(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaConnectionError

    return isinstance(exc, (KafkaConnectionError, OSError, asyncio.TimeoutError))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}".rstrip(": ")


async def topic_partitions(consumer: Any, name: str) -> list[Any]:
    """The TopicPartitions of topic ``name``, sorted; empty if the broker does not know the topic."""
    from aiokafka import TopicPartition

    ids = consumer.partitions_for_topic(name)
    if not ids:
        await consumer._client.force_metadata_update()  # a fresh client may not know the topic yet
        ids = consumer.partitions_for_topic(name)
    return [TopicPartition(name, i) for i in sorted(ids or ())]


class BrokerWatch:
    """Says in the log, once a check, when the brokers stop answering and when they answer again.

    A hung broker is otherwise silent: fetches just return nothing and requests wait for their long
    timeouts. A metadata request with a short deadline, on a connection of its own that lives only for
    the check, tells the operator within seconds, while consumption and dead letters simply wait.
    """

    def __init__(self, settings: Settings, timeout_s: float = 4.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        # Settings are frozen: build the client arguments (and any TLS context, which reads the CA
        # bundle) once, not on every check.
        self.client_kwargs = {**client_kwargs(settings), "request_timeout_ms": int(timeout_s * 1000)}
        self.down_since: float | None = None

    async def check(self) -> bool:
        from aiokafka.client import AIOKafkaClient

        started = time.monotonic()
        client = AIOKafkaClient(**self.client_kwargs)
        try:
            await asyncio.wait_for(client.bootstrap(), self.timeout_s)
        except Exception as exc:
            self.down_since = self.down_since or started
            down = time.monotonic() - self.down_since
            log.warning("Kafka brokers %s not answering for %.0fs (%s); consumption waits, nothing is dropped",
                        self.settings.kafka_bootstrap, down, _describe(exc),
                        extra={"event": "broker_unavailable", "down_seconds": round(down, 1)})
            return False
        finally:
            await client.close()
        if self.down_since is not None:
            down = time.monotonic() - self.down_since
            log.info("Kafka brokers %s answering again after %.1fs", self.settings.kafka_bootstrap, down,
                     extra={"event": "broker_available", "down_seconds": round(down, 1)})
            self.down_since = None
        return True


async def read_topic(settings: Settings, topic: str, timeout_s: float = 30) -> list[Any]:
    """Every record of a topic, from the beginning to the high watermark the fetches report."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, settings.topic(topic))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                out.extend(msgs)
            caught_up = True
            for tp in tps:
                hw = consumer.highwater(tp)
                caught_up = caught_up and hw is not None and await consumer.position(tp) >= hw
            quiet = quiet + 1 if not batch else 0
            if caught_up or quiet >= 4:  # an empty partition reports no high watermark until it has data
                break
        return out
    finally:
        await consumer.stop()
