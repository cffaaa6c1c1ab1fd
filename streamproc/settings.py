"""One typed settings object, read from ``STREAMPROC_*`` environment variables.

Every field here is also a CLI flag of the same name (``--lateness-ms`` for ``STREAMPROC_LATENESS_MS``) on
the commands that read it, and is listed in docs/SETTINGS.md (generated from this file by
``streamproc settings --markdown``), so that an operator finds one name everywhere. A default is written
here and nowhere else: code that needs one reads it from ``Settings`` (a class attribute holds it).
Secrets have no flag (it would show in ``ps`` and shell history): ``STREAMPROC_X`` or ``STREAMPROC_X_FILE``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

PREFIX = "STREAMPROC_"


# The groups a setting belongs to, in the order help and docs list them. A command's --help shows the
# groups it reads (COMMAND_GROUPS in streamproc/cli/settings_cli.py), so a group is part of a setting's meaning.
GROUPS: dict[str, str] = {
    "kafka": "Kafka connection",
    "topics": "topic creation",
    "consumer": "worker on Kafka (embedded broker, consumer group)",
    "store": "ClickHouse store",
    "rules": "event-time and size rules",
    "processing": "worker processing (flushes, backpressure, rollups, change events)",
    "boards": "leaderboards",
    "web": "worker web API (address, token)",
    "api": "worker web API load limits",
    "logging": "logging",
}


def setting(default: Any, group: str, help: str, *, secret: bool = False) -> Any:
    """A Settings field: its default (written here only), its group and the help every listing shows."""
    return field(default=default, metadata={"group": group, "help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    # Kafka: where events come from
    kafka_bootstrap: str = setting("", "kafka", "Kafka bootstrap servers; empty: the worker and the demo start the embedded Tansu broker")
    topic_prefix: str = setting("", "kafka", "prefix for every topic name (tests use it to isolate runs)")
    kafka_security_protocol: str = setting("PLAINTEXT", "kafka", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str = setting("PLAIN", "kafka", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)")
    kafka_sasl_username: str = setting("", "kafka", "SASL user name")
    kafka_sasl_password: str = setting("", "kafka", "SASL password", secret=True)
    kafka_ssl_cafile: str = setting("", "kafka", "CA bundle that signed the brokers' certificates (empty: system CAs)")
    kafka_ssl_certfile: str = setting("", "kafka", "client certificate for mutual TLS (optional)")
    kafka_ssl_keyfile: str = setting("", "kafka", "key of the client certificate (optional)")
    produce_compression: str = setting("none", "kafka", "codec of the batches this project sends (replay, generate, redrive, the demo's feed): none, gzip, snappy, lz4 or zstd; a broker keeps batches as sent, so lz4 holds a JSON log in about a third of the memory and disk. The worker reads batches in every one of these codecs, from any producer")
    topics_file: str = setting("", "topics", "topic declarations (TOML: partitions, replication, config); empty: the bundled topics/topics.toml")
    embedded_broker_port: int = setting(19092, "consumer", "port of the embedded Tansu broker (when no bootstrap servers are set)")
    group_id: str = setting("streamproc", "consumer", "consumer group and Faust app id")
    group_instance_id: str = setting("", "consumer", "static group membership id (e.g. the pod name): a restarted worker takes its partitions back without waiting for its old session to expire")
    fetch_max_wait_ms: int = setting(100, "consumer", "longest the broker may hold a fetch that finds nothing new (Kafka's fetch.max.wait.ms): every record arriving meanwhile waits with it before the windows see it; Faust's fixed 1,500 cost 0.6 s of freshness p99 on a broker that holds fetches (docs/SCALING.md); lower: more empty fetches while idle")
    max_poll_records: int = setting(5_000, "consumer", "records the worker takes from what it has fetched at a time (Kafka's max.poll.records): it bounds the records decoded and held between the fetch and the windows (up to four batches per topic waiting, about 300 bytes a record), which a broker that answers with more than a fetch asked for would otherwise fill; 0: everything fetched")
    # ClickHouse: where tallies go
    clickhouse_url: str = setting("", "store", "ClickHouse HTTP(S) URL; empty: embedded chDB in DATA_DIR/clickhouse")
    clickhouse_user: str = setting("default", "store", "ClickHouse user (also the user `clickhouse-server` accepts)")
    clickhouse_password: str = setting("", "store", "ClickHouse password", secret=True)
    clickhouse_database: str = setting("streamproc", "store", "ClickHouse database")
    clickhouse_ca_file: str = setting("", "store", "CA bundle to verify an https:// ClickHouse server (empty: system CAs)")
    clickhouse_timeout_s: float = setting(5.0, "store", "seconds before a ClickHouse server request that got no answer fails (a flush is then retried), with a warning naming the statement and streamproc_sink_timeouts_total; embedded chDB runs in-process and has none")
    data_dir: str = setting(".streamproc", "store", "local state: chDB data in DATA_DIR/clickhouse, Faust's files in DATA_DIR/faust, demo runs in DATA_DIR/demo")
    # event-time rules
    lateness_ms: int = setting(30_000, "rules", "allowed lateness behind the streamer's own watermark, ms")
    max_future_ms: int = setting(300_000, "rules", "an event this far ahead of its record timestamp, or a record this far ahead of the reading worker's clock, is refused as future, ms")
    order_dedupe_horizon_ms: int = setting(3_600_000, "rules", "event-time span over which order ids are remembered (and how late an order may still count), ms")
    max_message_bytes: int = setting(65_536, "rules", "larger messages are dead-lettered as oversized")
    max_batch_bytes: int = setting(64 << 20, "rules", "most bytes a compressed record batch may decompress to; one past it is refused whole, unread, as one dead letter (batch_too_large): a batch of zeros 40 KB on the wire can hold a value of 1 GB")
    max_pack_lines: int = setting(1_000, "rules", "a pack (JSON lines in one message) with more lines is dead-lettered whole as oversized, so one message never yields more dead letters than this")
    # the worker's processing: windows, flushes, backpressure, rollups, change events
    streamers_file: str = setting("", "processing", "streamers dimension (CSV, JSON array or JSON lines) the worker loads when it starts")
    idle_close_ms: int = setting(15_000, "processing", "wall time a window may sit untouched in memory before it is closed, ms")
    closed_windows_kept: int = setting(4_096, "processing", "windows per partition kept in memory after they are closed while a late event could still reach them (a late payment, within the dedupe horizon), so that reopening one needs no read of the store; 0: every reopen reads the store")
    flush_interval_s: float = setting(1.0, "processing", "seconds between the starts of two flushes of open windows (a graceful stop flushes once more)")
    max_buffered_rows: int = setting(200_000, "processing", "consumption pauses while this many rows await the sink")
    malloc_mmap_threshold_bytes: int = setting(262_144, "processing", "blocks of this size or more get a mapping of their own, returned to the system when freed (glibc's M_MMAP_THRESHOLD, fixed): glibc otherwise raises its threshold to the largest block freed, and the broker's fetch answers and the flush's large lists then stay resident in the heap after use (docs/SCALING.md, \"Memory\"); with a ClickHouse server store only: embedded chDB reuses large blocks all the time and keeps glibc's rule; 0: glibc's own sliding threshold")
    sink_retry_max_s: float = setting(10.0, "processing", "cap of the exponential backoff between sink retries, s")
    rollup_interval_s: float = setting(2.0, "processing", "seconds between rollup runs (10 s -> 1 min -> 1 h) in the worker, each started as a flush ends, one pass per flush; 0: none")
    store_pass_share: float = setting(0.25, "processing", "most of the time the store passes after a flush (rollup, watched boards) may take, in (0, 1]: a pass that took d seconds is next due no sooner than d * (1 - share) / share after it ended, whatever its interval; a live feed's passes stay well under it, a backlog's slow passes are spaced out instead of running beside every flush (docs/SCALING.md); 1: the intervals alone")
    leaderboard_boards: str = setting("gmv:today:10", "processing", "boards whose changes go to live.leaderboard.changes: metric:window:N[:place=value],...")
    leaderboard_changes_interval_s: float = setting(2.0, "processing", "seconds between evaluations of the watched boards, each started as a flush ends, one pass per flush; 0: none")
    # leaderboards
    conversion_min_viewers: int = setting(10, "boards", "unique viewers a room needs before its conversion is shown and ranked")
    # the worker's web server
    web_host: str = setting("127.0.0.1", "web", "bind address of the worker web server (and where `leaderboard` asks a worker that holds the store)")
    web_port: int = setting(6066, "web", "port of the worker web server")
    web_token: str = setting("", "web", "bearer token every web route then requires; empty: none", secret=True)
    metrics_host: str = setting("127.0.0.1", "web", "bind address of the metrics listener (STREAMPROC_METRICS_PORT): an interface Prometheus reaches and readers of the API need not")
    metrics_port: int = setting(0, "web", "port of a listener of its own for /metrics and /status, with its own small connection bound, so Prometheus still scrapes a worker whose web port readers have filled; 0: none (/metrics on the web port only)")
    api_max_concurrent: int = setting(4, "api", "API answers computed at once (store queries in flight for the API); more wait; 0: no bound")
    api_queue_timeout_s: float = setting(1.0, "api", "seconds an API request waits for a free slot before it gets 429 with Retry-After")
    api_max_connections: int = setting(512, "api", "connections the worker's web server holds at once; one more gets 503 and is closed, so readers cannot take the file descriptors the consumer and the store need (a worker out of them stops consuming); 0: no bound")
    api_idle_timeout_s: float = setting(30.0, "api", "a connection of the web server that has not sent a whole request for this long is closed (a reader that opens connections and sends nothing, or half a request, held each one an hour at aiohttp's default)")
    # logging
    log_level: str = setting("info", "logging", "log level: debug, info, warning, error")
    log_format: str = setting("text", "logging", "text, or json: one object per line, fields named like the metrics")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from the environment; ``overrides`` (CLI flags) win over it."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None and f.metadata.get("secret"):
                path = env.get(name + "_FILE")
                if path:
                    raw = Path(path).read_text().strip()
            if raw is not None:
                values[f.name] = _coerce(f.type, raw, name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    @property
    def chdb_path(self) -> Path:
        return Path(self.data_dir) / "clickhouse"

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    def __repr__(self) -> str:  # secrets never reach logs
        shown = ", ".join(
            f"{f.name}={'***' if f.metadata.get('secret') and getattr(self, f.name) else getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"Settings({shown})"


def env_name(f: Field[Any]) -> str:
    """``STREAMPROC_LATENESS_MS`` for ``lateness_ms``: the variable that sets a field."""
    return PREFIX + f.name.upper()


def flag_name(f: Field[Any]) -> str | None:
    """``--lateness-ms`` for ``lateness_ms``; None for a secret, which no command line may carry."""
    return None if is_secret(f) else "--" + f.name.replace("_", "-")


def is_secret(f: Field[Any]) -> bool:
    return bool(f.metadata.get("secret"))


def type_name(f: Field[Any]) -> str:
    """``int``, ``float`` or ``str`` (the annotations are strings under ``from __future__``)."""
    return f.type if isinstance(f.type, str) else f.type.__name__


def fields_in(group: str) -> list[Field[Any]]:
    """The fields of one group, in declaration order."""
    return [f for f in fields(Settings) if f.metadata["group"] == group]


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    kind = type_name if isinstance(type_name, str) else type_name.__name__
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind}") from None
    return raw
