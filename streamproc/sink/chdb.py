"""Embedded ClickHouse: the chDB engine in-process, MergeTree data on local disk.

chDB holds a lock on its data path, so one process owns it; other processes read through the worker's
HTTP API. Calls are serialised with a lock because the worker flushes from a thread while its web
server answers queries.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Sequence

import orjson

from .base import INSERT_FORMAT, Sink


def escape_param(value: str) -> str:
    """ClickHouse reads a bound parameter's text in TSV escaping (as the HTTP interface's ``param_x``):
    a backslash starts an escape and a raw tab or newline is an error. chDB passes the text through as
    is, so it is escaped here (clickhouse-connect does this on its own for a server)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def bind(params: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: escape_param(v) if isinstance(v, str) else v for k, v in params.items()} if params else None


class ChdbSink(Sink):
    def __init__(self, path: str | Path, database: str = "streamproc") -> None:
        import chdb

        super().__init__(database)
        Path(path).mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn = chdb.connect(self.path)
        self._conn.query("SET output_format_json_quote_64bit_integers = 0")
        self._conn.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self.use_database()

    def use_database(self) -> None:
        with self._lock:
            self._conn.query(f"USE {self.database}")

    def _query(self, sql: str, fmt: str, params: dict[str, Any] | None) -> Any:
        try:
            return self._conn.query(sql, fmt, params=bind(params))
        except Exception:
            # chDB hands the partial output of a query that failed mid-stream to the *next* query on
            # the connection; a throwaway query absorbs it so later results stay clean.
            with contextlib.suppress(Exception):
                self._conn.query("SELECT 1", "CSV")
            raise

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._query(sql, "CSV", params)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        with self._lock:
            raw = self._query(sql, "JSONCompact", params).bytes()
        if not raw:
            return []
        return [tuple(r) for r in orjson.loads(raw)["data"]]

    def insert_encoded(self, table: str, columns: Sequence[str], payload: bytes) -> None:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) FORMAT {INSERT_FORMAT}\n" + payload.decode()
        with self._lock:
            self._query(sql, "CSV", None)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
