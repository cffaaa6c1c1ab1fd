"""Embedded ClickHouse: the chDB engine in-process, MergeTree data on local disk.

chDB lets one process own a data path; other processes read through the worker's HTTP API. Which
process that is, and where its API is, comes from our own lock file (``store_lock``), taken before chDB
is touched, so a second opener gets StoreBusy naming the holder instead of chDB's error text.

Statements run one at a time (one connection): the worker flushes from a thread while its web server
answers queries from others. The lock lets the pipeline go first (``WriterFirstLock``): 200 queued board
queries must not sit in front of every flush. chDB runs in this process and has no timeout: a statement
runs until it ends (``STREAMPROC_CLICKHOUSE_TIMEOUT_S`` applies to a ClickHouse server only).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import orjson

from streamproc.settings import Settings
from streamproc.store import blocks
from streamproc.store.base import Sink, is_reading
from streamproc.store.lock import StoreLock


def escape_param(value: str) -> str:
    """ClickHouse reads a bound parameter's text in TSV escaping (as the HTTP interface's ``param_x``):
    a backslash starts an escape and a raw tab or newline is an error. chDB passes the text through as
    is, so it is escaped here (clickhouse-connect does this on its own for a server)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def bind(params: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: escape_param(v) if isinstance(v, str) else v for k, v in params.items()} if params else None


class WriterFirstLock:
    """One holder at a time; a waiting writer goes before every waiting reader.

    Readers are the web API's queries (``sink.reading()``), writers everything else: flush, restore,
    rollup. A reader holds the lock for one statement only, so a flush waits for at most the statement
    running when it arrives, however many queries are queued. Writers come a few times a second and
    leave gaps between their statements, so readers still get their turns.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def hold(self, writer: bool) -> Iterator[None]:
        with self._cond:
            if writer:
                self._writers_waiting += 1
                try:
                    self._cond.wait_for(lambda: not self._held)
                finally:
                    self._writers_waiting -= 1
            else:
                self._cond.wait_for(lambda: not self._held and not self._writers_waiting)
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()


class ChdbSink(Sink):
    visibility_lag_ms = 0  # one process, statements one at a time: a write is visible when its call returns
    insert_format = blocks.ARROW  # parsed in this process: Arrow costs it less than half of JSON (store/blocks.py)

    def __init__(self, path: str | Path, database: str = Settings.clickhouse_database) -> None:
        """Open the store at ``path``; StoreBusy if another process holds it.

        The database is used if it exists but not created: a reader must not leave an empty store
        behind (``apply_schema`` creates it for writers).
        """
        import chdb

        super().__init__(database)
        Path(path).mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._lock = WriterFirstLock()
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

    def _turn(self) -> contextlib.AbstractContextManager[None]:
        """The store for one statement: the API's reads wait for every waiting writer."""
        return self._lock.hold(writer=not is_reading())

    def use_database(self) -> None:
        with self._turn():
            self._conn.query(f"USE {self.database}")

    def _query(self, sql: str, fmt: str, params: dict[str, Any] | None) -> Any:
        with self._clean_after_failure():
            return self._conn.query(sql, fmt, params=bind(params))

    @contextlib.contextmanager
    def _clean_after_failure(self) -> Iterator[None]:
        try:
            yield
        except Exception:
            # chDB hands the partial output of a statement that failed mid-stream to the *next* query on
            # the connection; a throwaway query absorbs it so later results stay clean.
            with contextlib.suppress(Exception):
                self._conn.query("SELECT 1", "CSV")
            raise

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._turn():
            self._query(sql, "CSV", params)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        with self._turn():
            raw = self._query(sql, "JSONCompact", params).bytes()
        if not raw:
            return []
        return [tuple(r) for r in orjson.loads(raw)["data"]]

    def insert_encoded(self, table: str, columns: Sequence[str], payload: bytes,
                       settings: Mapping[str, int] | None = None) -> None:
        with_settings = f" SETTINGS {', '.join(f'{k} = {int(v)}' for k, v in settings.items())}" if settings else ""
        sql = f"INSERT INTO {table} ({', '.join(columns)}){with_settings}"
        with self._turn(), self._clean_after_failure(), self._conn.send_insert(sql, self.insert_format) as ins:
            ins.append(payload)
            ins.finish()

    def close(self) -> None:
        with self._turn():
            self._conn.close()
            self._hold.release()
