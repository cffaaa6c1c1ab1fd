"""A ClickHouse server over HTTP(S) through clickhouse-connect (production).

Credentials come from settings (the environment or ``*_FILE``), never from the URL: a URL ends up in
logs, process listings and dashboards, so one that carries a password is refused. ``https://`` URLs
verify the server certificate (system CAs, or ``STREAMPROC_CLICKHOUSE_CA_FILE``). Every request has a
timeout, so a hung server fails a flush (which is then retried) instead of stalling the worker. The
client holds no server session, so the threads of one worker may use it at the same time.
"""

from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import urlparse

from .base import INSERT_FORMAT, Sink


class ClickHouseSink(Sink):
    def __init__(self, url: str, database: str = "streamproc", user: str = "default", password: str = "", *,
                 ca_file: str = "", timeout_s: float = 30.0) -> None:
        import clickhouse_connect

        super().__init__(database)
        u = urlparse(url)
        if u.scheme not in ("http", "https"):
            raise ValueError("STREAMPROC_CLICKHOUSE_URL must start with http:// or https://")
        if u.password is not None:
            raise ValueError("STREAMPROC_CLICKHOUSE_URL must not carry a password: "
                             "use STREAMPROC_CLICKHOUSE_PASSWORD or STREAMPROC_CLICKHOUSE_PASSWORD_FILE")
        secure = u.scheme == "https"
        tls: dict[str, Any] = {"verify": True, "ca_cert": ca_file} if secure and ca_file else {}
        self._client = clickhouse_connect.get_client(
            host=u.hostname or "localhost",
            port=u.port or (8443 if secure else 8123),
            secure=secure,
            username=u.username or user,
            password=password,
            database="default",
            connect_timeout=min(10.0, timeout_s),
            send_receive_timeout=timeout_s,
            query_retries=0,  # the worker retries whole flushes with backoff; no hidden retry storms
            # no server session: the worker's flush thread, its timers and its web handlers share this client,
            # and one session refuses concurrent queries ("Attempt to execute concurrent queries")
            autogenerate_session_id=False,
            settings={"output_format_json_quote_64bit_integers": 0},
            **tls,
        )

    def use_database(self) -> None:
        self._client.database = self.database

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._client.command(sql, parameters=params)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        return [tuple(r) for r in self._client.query(sql, parameters=params).result_rows]

    def insert_encoded(self, table: str, columns: Sequence[str], payload: bytes) -> None:
        self._client.raw_insert(table, list(columns), insert_block=payload, fmt=INSERT_FORMAT)

    def close(self) -> None:
        self._client.close()
