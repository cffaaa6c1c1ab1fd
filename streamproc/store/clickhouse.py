"""A ClickHouse server over HTTP(S) through clickhouse-connect (production).

Credentials come from settings (the environment or ``*_FILE``), never from the URL: a URL ends up in
logs, process listings and dashboards, so one that carries a password is refused. ``https://`` URLs
verify the server certificate (system CAs, or ``STREAMPROC_CLICKHOUSE_CA_FILE``). Every request has a
timeout (``STREAMPROC_CLICKHOUSE_TIMEOUT_S``, a few seconds), so a hung server fails a flush (which is
then retried) instead of stalling the worker; each timeout is a WARNING line naming the statement and
a count in ``streamproc_sink_timeouts_total``. The clients hold no server session, so the threads of
one worker may use them at the same time. The web API's reads (``sink.reading()``) go through a client
and connection pool of their own: however many queries wait for a connection, a flush never queues
behind them.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlparse

import urllib3.exceptions

from streamproc import metrics
from streamproc.settings import Settings
from streamproc.store.base import Sink, is_reading

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClickHouseSink(Sink):
    def __init__(self, url: str, database: str = Settings.clickhouse_database, user: str = Settings.clickhouse_user,
                 password: str = "", *, ca_file: str = "", timeout_s: float = Settings.clickhouse_timeout_s) -> None:
        super().__init__(database)
        u = urlparse(url)
        if u.scheme not in ("http", "https"):
            raise ValueError("STREAMPROC_CLICKHOUSE_URL must start with http:// or https://")
        if u.password is not None:
            raise ValueError("STREAMPROC_CLICKHOUSE_URL must not carry a password: "
                             "use STREAMPROC_CLICKHOUSE_PASSWORD or STREAMPROC_CLICKHOUSE_PASSWORD_FILE")
        self.timeout_s = timeout_s
        self._client = _client(u.scheme == "https", u.hostname or "localhost", u.port, u.username or user,
                               password, ca_file, timeout_s)
        self._reads = _client(u.scheme == "https", u.hostname or "localhost", u.port, u.username or user,
                              password, ca_file, timeout_s)

    def _call(self, statement: str, do: Callable[[Any], T]) -> T:
        """Run ``do`` on the client of this kind of call; a timeout is logged and counted, then raised."""
        try:
            return do(self._reads if is_reading() else self._client)
        except Exception as exc:
            if _timed_out(exc):
                metrics.SINK_TIMEOUTS.inc()
                log.warning("ClickHouse %s got no answer within %gs (STREAMPROC_CLICKHOUSE_TIMEOUT_S)",
                            statement, self.timeout_s,
                            extra={"event": "sink_timeout", "statement": statement, "timeout_seconds": self.timeout_s})
            raise

    def use_database(self) -> None:
        self._client.database = self._reads.database = self.database

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._call(_kind(sql), lambda c: c.command(sql, parameters=params))

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        return self._call(_kind(sql), lambda c: [tuple(r) for r in c.query(sql, parameters=params).result_rows])

    def insert_encoded(self, table: str, columns: Sequence[str], payload: bytes,
                       settings: Mapping[str, int] | None = None) -> None:
        self._call(f"INSERT {table}", lambda c: c.raw_insert(table, list(columns), insert_block=payload,
                                                             settings=dict(settings or {}), fmt=self.insert_format))

    def close(self) -> None:
        self._client.close()
        self._reads.close()


def _client(secure: bool, host: str, port: int | None, user: str, password: str, ca_file: str,
            timeout_s: float) -> Any:
    """One clickhouse-connect client with a connection pool of its own (not the library's shared one)."""
    import clickhouse_connect

    tls: dict[str, Any] = {"verify": True, "ca_cert": ca_file} if secure and ca_file else {}
    return clickhouse_connect.get_client(
        host=host,
        port=port or (8443 if secure else 8123),
        secure=secure,
        username=user,
        password=password,
        database="default",
        connect_timeout=min(10.0, timeout_s),
        send_receive_timeout=timeout_s,
        query_retries=0,  # the worker retries whole flushes with backoff; no hidden retry storms
        # no server session: the worker's flush thread, its timers and its web handlers share a client,
        # and one session refuses concurrent queries ("Attempt to execute concurrent queries")
        autogenerate_session_id=False,
        dedicated_pool=True,  # the flush's connections never wait behind the API's
        settings={"output_format_json_quote_64bit_integers": 0},
        **tls,
    )


def _kind(sql: str) -> str:
    """The statement's first word (SELECT, ALTER, ...): enough to tell a log reader what hung."""
    return sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "statement"


def _timed_out(exc: BaseException) -> bool:
    """Whether a socket timeout is anywhere in the exception's chain (clickhouse-connect wraps it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (TimeoutError, urllib3.exceptions.TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
