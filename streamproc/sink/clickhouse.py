"""A ClickHouse server over HTTP(S) through clickhouse-connect (production)."""

from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import urlparse

from .base import Sink


class ClickHouseSink(Sink):
    def __init__(self, url: str, database: str = "streamproc", user: str = "default", password: str = "") -> None:
        import clickhouse_connect

        super().__init__(database)
        u = urlparse(url)
        self._client = clickhouse_connect.get_client(
            host=u.hostname or "localhost",
            port=u.port or (8443 if u.scheme == "https" else 8123),
            secure=u.scheme == "https",
            username=u.username or user,
            password=password,
            database="default",
            settings={"output_format_json_quote_64bit_integers": 0},
        )

    def use_database(self) -> None:
        self._client.database = self.database

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._client.command(sql, parameters=params)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        return [tuple(r) for r in self._client.query(sql, parameters=params).result_rows]

    def insert_encoded(self, table: str, columns: Sequence[str], payload: bytes) -> None:
        self._client.raw_insert(table, list(columns), insert_block=payload, fmt="JSONCompactEachRow")

    def close(self) -> None:
        self._client.close()
