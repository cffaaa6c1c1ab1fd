"""The sink: snapshot rows, checkpoints and restore, as SQL shared by every ClickHouse driver.

Drivers (``chdb.py`` in-process, ``clickhouse.py`` over HTTP) only know how to run a statement, fetch
rows and send an insert block (``blocks.py``); everything that decides what is written and read back lives
here once, so the embedded default and a production server behave the same.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from streamproc.core.state import (
    CLOSE,
    ENTERS,
    EVENTS,
    GMV,
    ITEMS,
    LAST_OFFSET,
    LEAVES,
    LIKES,
    MAX_TS,
    N_SLOTS,
    ORDER_COLUMNS,
    PAID,
    PEAK,
    REFUND,
    REFUNDED,
    TALLY_COLUMNS,
    VIEWER_COLUMNS,
    Snapshot,
    WindowKey,
)
from streamproc.resources import data_path
from streamproc.store import blocks

log = logging.getLogger(__name__)

DDL_DIR = data_path("schemas/clickhouse")
# The ledger of applied migrations; store/cluster.py turns this same statement into its cluster form.
MIGRATIONS_TABLE_DDL = ("CREATE TABLE IF NOT EXISTS schema_migrations (name String, applied_at DateTime DEFAULT now()) "
                        "ENGINE = ReplacingMergeTree ORDER BY name")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ACC_SELECT = (
    "events, enters, leaves, concurrent_peak, concurrent_close, likes, orders_paid, orders_refunded, items, "
    "gmv_fen, refund_fen, toUnixTimestamp64Milli(max_ts), last_offset"
)
_ACC_SLOTS = (EVENTS, ENTERS, LEAVES, PEAK, CLOSE, LIKES, PAID, REFUNDED, ITEMS, GMV, REFUND, MAX_TS, LAST_OFFSET)


# No two rows of a flush share a sorting key in one insert (one row per window, partition and flush; the
# views group by their key), so the merge ClickHouse runs on every inserted block of a Replacing or
# Aggregating table finds nothing to collapse. Skipped, a drain held back by the sink (100k streamers)
# ran 3-15 % faster in each of three interleaved pairs (docs/SCALING.md).
FLUSH_INSERT_SETTINGS = {"optimize_on_insert": 0}

_READING: contextvars.ContextVar[bool] = contextvars.ContextVar("streamproc_sink_reading", default=False)


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Mark the sink calls made inside as a front end's reads (the web API's boards).

    The pipeline (flush, restore, rollup) shares the store with the API; drivers serve its calls first:
    chDB's lock lets a waiting writer go before waiting readers, a server gets the reads on a client and
    connection pool of their own. A context variable, so ``asyncio.to_thread`` carries it along.
    """
    token = _READING.set(True)
    try:
        yield
    finally:
        _READING.reset(token)


def is_reading() -> bool:
    """Whether the current call is a front end's read (inside ``reading()``)."""
    return _READING.get()


def tally_columns(snaps: Sequence[Snapshot]) -> list[Sequence[Any]]:
    """The window rows of a flush as columns in TALLY_COLUMNS order, every partition's in one block."""
    if len(snaps) == 1:
        return snaps[0].tally_columns()
    return [list(itertools.chain.from_iterable(c)) for c in zip(*(s.tally_columns() for s in snaps))]


def viewer_columns(snaps: Sequence[Snapshot]) -> list[list[Any]]:
    """The new viewers of a flush as columns in VIEWER_COLUMNS order: the ids of each window as the
    snapshot holds them (a dict used as a set), which ``blocks.encode`` turns into arrays."""
    keys = [k for s in snaps for k in s.viewers]
    return [[k[0] for k in keys], [k[1] for k in keys], [ids for s in snaps for ids in s.viewers.values()]]


@dataclass
class PartitionRestore:
    """What the sink holds for one source partition: enough to resume exactly where it left off."""

    offset: int  # last applied offset; -1 if the partition was never flushed
    windows: dict[WindowKey, list[int]]
    streamers: dict[str, tuple[int, int]]  # streamer -> (watermark, running concurrency)
    orders: dict[tuple[str, str], tuple[int, str]]  # (order_id, status) -> (event time, streamer)


def split_statements(sql: str) -> list[str]:
    """Split a DDL file on ';' at line ends (the DDL files keep semicolons out of strings)."""
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


class Sink(ABC):
    """ClickHouse as the system of record for tallies, checkpoints and restore."""

    # How long after its materialized-view timestamp (now64 at insert) a write may still be invisible
    # to a reader: a server runs inserts concurrently and a slow one commits late. Rollup passes read
    # marks this far back, and readers treat marks this recent as not rolled (see boards/rollup.py).
    visibility_lag_ms = 5_000
    insert_format = blocks.JSON  # what insert_encoded sends (store/blocks.py)

    def __init__(self, database: str) -> None:
        if not _IDENT.match(database):
            raise ValueError(f"invalid ClickHouse database name {database!r}")
        self.database = database

    # -- driver surface --------------------------------------------------------------------------

    @abstractmethod
    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    @abstractmethod
    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]: ...

    @abstractmethod
    def insert_encoded(self, table: str, columns: Sequence[str], payload: bytes,
                       settings: Mapping[str, int] | None = None) -> None: ...

    def close(self) -> None:  # pragma: no cover - drivers override when they hold resources
        pass

    # -- schema ----------------------------------------------------------------------------------

    def apply_schema(self, ddl_dir: Path = DDL_DIR) -> list[str]:
        """Run the numbered migrations not yet applied; safe to call on every start."""
        self.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self.use_database()
        self.command(MIGRATIONS_TABLE_DDL)
        done = {r[0] for r in self.rows("SELECT name FROM schema_migrations")}
        applied = []
        for path in sorted(ddl_dir.glob("*.sql")):
            if path.name in done:
                continue
            for stmt in split_statements(path.read_text()):
                self.command(stmt)
            self.insert("schema_migrations", ("name",), [(path.name,)])
            applied.append(path.name)
        if applied:
            log.info("schema: applied %s", ", ".join(applied))
        return applied

    def use_database(self) -> None:
        """Drivers that keep a session select the database here; HTTP passes it per request."""

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               settings: Mapping[str, int] | None = None) -> None:
        if rows:
            self.insert_columns(table, columns, list(zip(*rows)), settings)

    def insert_columns(self, table: str, columns: Sequence[str], values: Sequence[Sequence[Any]],
                       settings: Mapping[str, int] | None = None) -> None:
        """Insert ``values``, one sequence per column of ``columns``; nothing if they are empty."""
        if values and len(values[0]):
            self.insert_encoded(table, columns, blocks.encode(self.insert_format, columns, values), settings)

    # -- flush -----------------------------------------------------------------------------------

    def write(self, snaps: Sequence[Snapshot]) -> None:
        """Write one flush: facts first, then all window rows in ONE insert, then checkpoints.

        The window rows of a flush share one version per partition and land in one insert, so if any
        row of version V exists, all of them do; restore can then trust max(checkpoint, max version)
        (and writes again what that insert's views derive, which may not have landed: ``_rewrite_views``).
        """
        settings = FLUSH_INSERT_SETTINGS
        self.insert_columns("viewer_sets_in", VIEWER_COLUMNS, viewer_columns(snaps), settings)
        self.insert("orders", ORDER_COLUMNS, [r for s in snaps for r in s.orders], settings)
        self.insert_columns("tallies_10s", TALLY_COLUMNS, tally_columns(snaps), settings)
        self.insert("checkpoints", ("src_topic", "src_partition", "last_offset"),
                    [(s.topic, s.partition, s.offset) for s in snaps if s.offset >= 0], settings)

    # -- restore ---------------------------------------------------------------------------------

    def restore(self, topic: str, partition: int, window_ms: int, lateness_ms: int, horizon_ms: int) -> PartitionRestore:
        p = {"t": topic, "p": partition, "w": window_ms, "l": lateness_ms}
        where = "src_topic = {t:String} AND src_partition = {p:UInt16}"
        (n_cp, cp), = self.rows(f"SELECT count(), max(last_offset) FROM checkpoints WHERE {where}", p)
        (n_rows, top), = self.rows(f"SELECT count(), max(version) FROM tallies_10s WHERE {where}", p)
        offset = max(int(cp) if n_cp else -1, int(top) if n_rows else -1)
        if n_rows:
            self._rewrite_views(where, {**p, "v": int(top)})
        streamers = {
            s: (int(wm), int(conc))
            for s, wm, conc in self.rows(
                "SELECT streamer_id, toUnixTimestamp64Milli(max(max_ts)), argMax(concurrent_close, last_offset) "
                f"FROM tallies_10s FINAL WHERE {where} GROUP BY streamer_id", p)
        }
        windows: dict[WindowKey, list[int]] = {}
        for row in self.rows(
            f"SELECT toUnixTimestamp64Milli(t.window_start), t.streamer_id, {_prefixed_acc('t')} "
            f"FROM (SELECT * FROM tallies_10s FINAL WHERE {where}) AS t "
            f"INNER JOIN (SELECT streamer_id, max(max_ts) AS wm FROM tallies_10s WHERE {where} GROUP BY streamer_id) AS m "
            "USING streamer_id "
            "WHERE toUnixTimestamp64Milli(t.window_start) + {w:Int64} > toUnixTimestamp64Milli(m.wm) - {l:Int64}",
            p,
        ):
            windows[(int(row[0]), row[1])] = _to_acc(row[2:])
        # the orders a copy of which could still be accepted: within the horizon of their streamer's watermark
        orders = {
            (oid, status): (int(ts), sid)
            for oid, status, ts, sid in self.rows(
                f"SELECT o.order_id, o.status, toUnixTimestamp64Milli(o.ts), o.streamer_id "
                f"FROM (SELECT * FROM orders FINAL WHERE {where} AND src_offset <= {{o:Int64}}) AS o "
                f"INNER JOIN (SELECT streamer_id, max(max_ts) AS wm FROM tallies_10s WHERE {where} GROUP BY streamer_id) AS m "
                "USING streamer_id "
                "WHERE toUnixTimestamp64Milli(o.ts) >= toUnixTimestamp64Milli(m.wm) - {h:Int64}",
                {**p, "o": offset, "h": horizon_ms},
            )
        }
        return PartitionRestore(offset, windows, streamers, orders)

    def _rewrite_views(self, where: str, params: dict[str, Any]) -> None:
        """Write again what the views fed by the partition's last flush of window rows derive from it.

        ClickHouse writes an insert's materialized views after the table, not atomically with it: a
        worker killed in between leaves window rows whose version restore trusts (their events are not
        applied again) and no rollup mark, so the minute they changed would stay rolled without them on
        every board that reads minutes (docs/ARCHITECTURE.md, "Rollup completeness"). Every earlier
        flush returned, views included, before the next began, so only the rows of the highest version
        can be in that state. Both rows are idempotent: a mark only asks for a recomputation from
        tallies_10s, and the data clock keeps maxima.
        """
        last = f"{where} AND version = {{v:UInt64}}"
        self.command(
            "INSERT INTO rollup_marks (marked_at, minute, streamer_id) SELECT now64(3), "
            f"toStartOfMinute(window_start) AS minute, streamer_id FROM tallies_10s WHERE {last} "
            "GROUP BY minute, streamer_id", params)
        self.command(
            "INSERT INTO tallies_clock (k, newest_window, newest_event, newest_flush) "
            f"SELECT 0, max(window_start), max(max_ts), max(flushed_at) FROM tallies_10s WHERE {last} "
            "HAVING count() > 0", params)

    def load_window(self, topic: str, partition: int, key: WindowKey) -> list[int] | None:
        """The latest snapshot of one window, to reopen it after it was closed for idleness."""
        return self.load_windows(topic, partition, [key]).get(key)

    def load_windows(self, topic: str, partition: int, keys: Sequence[WindowKey]) -> dict[WindowKey, list[int]]:
        """The latest snapshot of each of ``keys`` the store holds, in one read: late orders come in runs
        (a payment system catching up), and a batch that needs several evicted windows pays for one
        query, not one each behind whatever else holds the store."""
        starts, streamers = sorted({k[0] for k in keys}), sorted({k[1] for k in keys})
        params: dict[str, Any] = {"t": topic, "p": partition}
        params.update((f"w{i}", w) for i, w in enumerate(starts))
        params.update((f"s{i}", s) for i, s in enumerate(streamers))
        in_starts = ", ".join(f"fromUnixTimestamp64Milli({{w{i}:Int64}})" for i in range(len(starts)))
        in_streamers = ", ".join(f"{{s{i}:String}}" for i in range(len(streamers)))
        wanted = set(keys)
        found = {}
        for row in self.rows(
            f"SELECT toUnixTimestamp64Milli(window_start), streamer_id, {_ACC_SELECT} FROM tallies_10s FINAL "
            f"WHERE src_topic = {{t:String}} AND src_partition = {{p:UInt16}} AND window_start IN ({in_starts}) "
            f"AND streamer_id IN ({in_streamers})", params,
        ):
            key = (int(row[0]), row[1])
            if key in wanted:  # the two IN lists also match pairs nobody asked for
                found[key] = _to_acc(row[2:])
        return found


def _prefixed_acc(alias: str) -> str:
    return ", ".join(
        f"toUnixTimestamp64Milli({alias}.max_ts)" if c.startswith("toUnix") else f"{alias}.{c.strip()}"
        for c in _ACC_SELECT.split(", ")
    )


def _to_acc(values: Sequence[Any]) -> list[int]:
    acc = [0] * N_SLOTS
    for slot, v in zip(_ACC_SLOTS, values):
        acc[slot] = int(v)
    return acc
