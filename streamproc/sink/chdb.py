"""Embedded ClickHouse: the chDB engine in-process, MergeTree data on local disk.

chDB lets one process own a data path; other processes read through the worker's HTTP API. Which
process that is, and where its API is, comes from our own lock file (``store_lock``), taken before chDB
is touched, so a second opener gets StoreBusy naming the holder instead of chDB's error text. Calls are
serialised with a lock because the worker flushes from a thread while its web server answers queries.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Sequence

import orjson

from ..store_lock import StoreLock
from .base import INSERT_FORMAT, Sink


def escape_param(value: str) -> str:
    """ClickHouse reads a bound parameter's text in TSV escaping (as the HTTP interface's ``param_x``):
    a backslash starts an escape and a raw tab or newline is an error. chDB passes the text through as
    is, so it is escaped here (clickhouse-connect does this on its own for a server)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def bind(params: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: escape_param(v) if isinstance(v, str) else v for k, v in params.items()} if params else None


class ChdbSink(Sink):
    visibility_lag_ms = 0  # one process, statements one at a time: a write is visible when its call returns

    def __init__(self, path: str | Path, database: str = "streamproc") -> None:
        """Open the store at ``path``; StoreBusy if another process holds it.

        The database is used if it exists but not created: a reader must not leave an empty store
        behind (``apply_schema`` creates it for writers).
        """
        import chdb

        super().__init__(database)
        Path(path).mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._lock = threading.Lock()
        self._hold = StoreLock(path)
        try:
            self._conn = chdb.connect(self.path)
        except BaseException:
            self._hold.release()
            raise
        self._conn.query("SET output_format_json_quote_64bit_integers = 0")
        if self.rows("SELECT count() FROM system.databases WHERE name = {d:String}", {"d": database})[0][0]:
            self.use_database()

    def announce(self, info: dict[str, Any]) -> None:
        """Tell other processes where this one can be reached (the worker: its web address)."""
        self._hold.announce(info)

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
            self._hold.release()
