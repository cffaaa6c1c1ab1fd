"""One typed settings object, read from ``STREAMPROC_*`` environment variables.

Every field here is also a CLI flag of the same name (``--window-ms`` for ``STREAMPROC_WINDOW_MS``) and
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
    # where tallies go
    clickhouse_url: str = field(default="", metadata={"help": "ClickHouse HTTP URL; empty uses embedded chDB"})
    clickhouse_user: str = field(default="default", metadata={"help": "ClickHouse user"})
    clickhouse_password: str = field(default="", metadata={"help": "ClickHouse password (or STREAMPROC_CLICKHOUSE_PASSWORD_FILE)", "secret": True})
    clickhouse_database: str = field(default="streamproc", metadata={"help": "ClickHouse database"})
    streamers_file: str = field(default="", metadata={"help": "streamers dimension (JSON lines) loaded when the worker starts"})
    data_dir: str = field(default=".streamproc", metadata={"help": "local state: chDB data lives in DATA_DIR/clickhouse"})
    # event-time rules
    window_ms: int = field(default=10_000, metadata={"help": "tumbling window length, ms"})
    lateness_ms: int = field(default=30_000, metadata={"help": "allowed lateness behind the streamer's own watermark, ms"})
    max_future_ms: int = field(default=300_000, metadata={"help": "reject events this far ahead of their Kafka timestamp, ms"})
    order_dedupe_horizon_ms: int = field(default=3_600_000, metadata={"help": "event-time span over which order ids are remembered"})
    max_message_bytes: int = field(default=65_536, metadata={"help": "larger messages are dead-lettered as oversized"})
    idle_close_ms: int = field(default=15_000, metadata={"help": "wall time a window may sit untouched before it is closed"})
    # flushing and backpressure
    flush_interval_s: float = field(default=1.0, metadata={"help": "seconds between flushes of open windows"})
    max_buffered_rows: int = field(default=200_000, metadata={"help": "pause consumption when this many rows await the sink"})
    sink_retry_max_s: float = field(default=10.0, metadata={"help": "cap of the exponential backoff between sink retries"})
    # worker process
    web_host: str = field(default="127.0.0.1", metadata={"help": "bind address of the worker web server"})
    web_port: int = field(default=6066, metadata={"help": "port of the worker web server"})
    log_level: str = field(default="info", metadata={"help": "log level"})

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
