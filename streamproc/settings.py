"""One typed settings object, read from ``STREAMPROC_*`` environment variables.

Every field here is also a CLI flag of the same name (``--lateness-ms`` for ``STREAMPROC_LATENESS_MS``) and
is listed in the README, so that an operator finds one name everywhere.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

PREFIX = "STREAMPROC_"


@dataclass(frozen=True)
class Settings:
    # where events come from
    kafka_bootstrap: str = field(default="", metadata={"help": "Kafka bootstrap servers; empty starts the embedded broker"})
    embedded_broker_port: int = field(default=19092, metadata={"help": "port of the embedded Tansu broker"})
    topic_prefix: str = field(default="", metadata={"help": "prefix for every topic name (tests use it to isolate runs)"})
    group_id: str = field(default="streamproc", metadata={"help": "consumer group / Faust app id"})
    group_instance_id: str = field(default="", metadata={"help": "static group membership id (e.g. the pod name): a restarted worker takes its partitions back without waiting for its old session to expire"})
    kafka_security_protocol: str = field(default="PLAINTEXT", metadata={"help": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"})
    kafka_sasl_mechanism: str = field(default="PLAIN", metadata={"help": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)"})
    kafka_sasl_username: str = field(default="", metadata={"help": "SASL user name"})
    kafka_sasl_password: str = field(default="", metadata={"help": "SASL password (or STREAMPROC_KAFKA_SASL_PASSWORD_FILE)", "secret": True})
    kafka_ssl_cafile: str = field(default="", metadata={"help": "CA bundle that signed the brokers' certificates (empty: system CAs)"})
    kafka_ssl_certfile: str = field(default="", metadata={"help": "client certificate for mutual TLS (optional)"})
    kafka_ssl_keyfile: str = field(default="", metadata={"help": "key of the client certificate (optional)"})
    # where tallies go
    clickhouse_url: str = field(default="", metadata={"help": "ClickHouse HTTP URL; empty uses embedded chDB"})
    clickhouse_user: str = field(default="default", metadata={"help": "ClickHouse user"})
    clickhouse_password: str = field(default="", metadata={"help": "ClickHouse password (or STREAMPROC_CLICKHOUSE_PASSWORD_FILE)", "secret": True})
    clickhouse_database: str = field(default="streamproc", metadata={"help": "ClickHouse database"})
    clickhouse_ca_file: str = field(default="", metadata={"help": "CA bundle to verify an https:// ClickHouse server (empty: system CAs)"})
    clickhouse_timeout_s: float = field(default=5.0, metadata={"help": "seconds before a ClickHouse server request that got no answer fails (a flush is then retried), with a warning and streamproc_sink_timeouts_total; embedded chDB has none"})
    streamers_file: str = field(default="", metadata={"help": "streamers dimension (CSV, JSON or JSON lines) loaded when the worker starts"})
    data_dir: str = field(default=".streamproc", metadata={"help": "local state: chDB data in DATA_DIR/clickhouse, Faust files in DATA_DIR/faust"})
    # event-time rules
    lateness_ms: int = field(default=30_000, metadata={"help": "allowed lateness behind the streamer's own watermark, ms"})
    max_future_ms: int = field(default=300_000, metadata={"help": "reject events this far ahead of their Kafka timestamp, ms"})
    order_dedupe_horizon_ms: int = field(default=3_600_000, metadata={"help": "event-time span over which order ids are remembered"})
    max_message_bytes: int = field(default=65_536, metadata={"help": "larger messages are dead-lettered as oversized"})
    max_pack_lines: int = field(default=1_000, metadata={"help": "a pack (JSON lines in one message) with more lines is dead-lettered whole as oversized, so one message never yields more dead letters than this"})
    idle_close_ms: int = field(default=15_000, metadata={"help": "wall time a window may sit untouched before it is closed"})
    # flushing and backpressure
    flush_interval_s: float = field(default=1.0, metadata={"help": "seconds between flushes of open windows"})
    max_buffered_rows: int = field(default=200_000, metadata={"help": "pause consumption when this many rows await the sink"})
    sink_retry_max_s: float = field(default=10.0, metadata={"help": "cap of the exponential backoff between sink retries"})
    # leaderboards
    rollup_interval_s: float = field(default=2.0, metadata={"help": "seconds between rollup runs (10 s -> 1 min -> 1 h) in the worker; 0: none"})
    conversion_min_viewers: int = field(default=10, metadata={"help": "unique viewers a room needs before its conversion is shown and ranked"})
    leaderboard_boards: str = field(default="gmv:today:10", metadata={"help": "boards whose changes go to live.leaderboard.changes: metric:window:N[:place=value],..."})
    leaderboard_changes_interval_s: float = field(default=2.0, metadata={"help": "seconds between evaluations of the watched boards; 0: none"})
    # worker process
    web_host: str = field(default="127.0.0.1", metadata={"help": "bind address of the worker web server"})
    web_port: int = field(default=6066, metadata={"help": "port of the worker web server"})
    api_max_concurrent: int = field(default=4, metadata={"help": "API answers computed at once (store queries in flight for the API); more wait, 0: no bound"})
    api_queue_timeout_s: float = field(default=1.0, metadata={"help": "seconds an API request waits for a free slot before it gets 429 with Retry-After"})
    web_token: str = field(default="", metadata={"help": "bearer token the web API requires (or STREAMPROC_WEB_TOKEN_FILE); empty: none", "secret": True})
    log_level: str = field(default="info", metadata={"help": "log level"})
    log_format: str = field(default="text", metadata={"help": "text, or json: one object per line, fields named like the metrics"})

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
