"""Embedded ClickHouse: the chDB engine in-process, MergeTree data on local disk.

chDB holds a lock on its data path, so one process owns it; other processes read through the worker's
HTTP API. Calls are serialised with a lock because the worker flushes from a thread while its web
server answers queries.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import orjson

from .base import Sink


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

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._conn.query(sql, "CSV", params=params or None)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        with self._lock:
            res = self._conn.query(sql, "JSONCompact", params=params or None)
            raw = res.bytes()
        if not raw:
            return []
        return [tuple(r) for r in orjson.loads(raw)["data"]]

    def insert_encoded(self, table: str, columns: Sequence[str], payload: bytes) -> None:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) FORMAT JSONCompactEachRow\n" + payload.decode()
        with self._lock:
            self._conn.query(sql, "CSV")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
