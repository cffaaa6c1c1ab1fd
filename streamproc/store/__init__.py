"""Sinks: one interface (``base.Sink``), an embedded chDB and a ClickHouse server implementation."""

from __future__ import annotations

from streamproc.settings import Settings
from streamproc.store.base import PartitionRestore, Sink


def open_sink(settings: Settings) -> Sink:
    """A ClickHouse server when STREAMPROC_CLICKHOUSE_URL is set, else embedded chDB under DATA_DIR."""
    if settings.clickhouse_url:
        from streamproc.store.clickhouse import ClickHouseSink

        return ClickHouseSink(settings.clickhouse_url, settings.clickhouse_database, settings.clickhouse_user,
                              settings.clickhouse_password, ca_file=settings.clickhouse_ca_file,
                              timeout_s=settings.clickhouse_timeout_s)
    from streamproc.store.chdb import ChdbSink

    return ChdbSink(settings.chdb_path, settings.clickhouse_database)


__all__ = ["Sink", "PartitionRestore", "open_sink"]
