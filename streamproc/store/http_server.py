"""The embedded ClickHouse engine (chDB) behind ClickHouse's HTTP interface, for more than one process.

chDB is single-writer: one process holds its data path. When several worker processes share one
embedded store (scale-out on one machine, rebalance tests), or when a dashboard or Grafana must poll it,
this process owns chDB and speaks the subset of the ClickHouse HTTP protocol that clickhouse-connect,
curl and the Grafana datasource use: ``/ping``, ``?query=``/body SQL, ``param_*`` bound parameters,
``database``, settings as URL parameters, ``FORMAT`` in the query, compressed request bodies, and
errors as ``Code: N. DB::Exception`` with HTTP 500. Workers then use the production ClickHouse sink.
"""

from __future__ import annotations

import gzip
import logging
import re
import threading
import zlib
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import MultiDict

from streamproc.settings import Settings

log = logging.getLogger(__name__)

# URL parameters that steer the HTTP layer, not the query.
_TRANSPORT = {
    "query", "database", "default_format", "session_id", "session_timeout", "session_check", "compress",
    "decompress", "query_id", "user", "password", "quota_key", "wait_end_of_query", "enable_http_compression",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms", "client_protocol_version",
    "buffer_size", "http_response_buffer_size", "role",
}
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMAT_RE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_INSERT_FORMAT_RE = re.compile(r"^\s*(INSERT\b.*?)\s+FORMAT\s+([A-Za-z0-9_]+)\s*$", re.IGNORECASE | re.DOTALL)
_CODE_RE = re.compile(r"Code:\s*(\d+)")


class ChdbHttpServer:
    """Serve one chDB data path over HTTP on 127.0.0.1 (by default)."""

    def __init__(self, path: str | Path, *, user: str = Settings.clickhouse_user, password: str = "") -> None:
        import chdb

        Path(path).mkdir(parents=True, exist_ok=True)
        self._conn = chdb.connect(str(path))
        self._lock = threading.Lock()
        self._user, self._password = user, password
        self._applied: dict[str, str] = {}
        self._database = "default"

    # -- request handling -----------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        user = request.headers.get("X-ClickHouse-User") or request.query.get("user") or "default"
        password = request.headers.get("X-ClickHouse-Key") or request.query.get("password") or ""
        if request.headers.get("Authorization", "").startswith("Basic "):
            import base64

            user, _, password = base64.b64decode(request.headers["Authorization"][6:]).decode().partition(":")
        return user == self._user and password == self._password

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/ping":
            return web.Response(text="Ok.\n")
        if not self._authorised(request):
            return web.Response(status=401, text="Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)\n",
                                headers={"X-ClickHouse-Exception-Code": "516"})
        q: Any = request.query
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            # the form a client sends when the query or its parameters are too long for a URL: the
            # server reads `query` and `param_*` from the form as from the URL
            q = MultiDict(q)
            try:
                form = await request.post()
            except (UnicodeDecodeError, ValueError) as exc:
                return _refused(27, f"cannot read the form: {exc}")
            q.extend((k, v) for k, v in form.items() if isinstance(v, str))
            body = b""
        else:
            body = await request.read()
        encoding = request.headers.get("Content-Encoding", "").lower()
        try:
            body = _decompress(body, encoding)
        except Exception as exc:  # a body we cannot read is the client's error, not ours
            return _refused(354, f"cannot decompress {encoding}: {exc}")
        sql = q.get("query")
        params = {k[6:]: v for k, v in q.items() if k.startswith("param_")}
        # An INSERT with FORMAT takes its data from the body, in any format (binary ones too): the
        # statement in the URL and the data alone in the body, or the statement as the body's first line
        insert, data = None, body
        if sql and body and not params:
            insert = _INSERT_FORMAT_RE.match(sql)
        elif not sql and body:
            head, newline, data = body.partition(b"\n")
            insert = _INSERT_FORMAT_RE.match(head.decode(errors="replace")) if newline else None
        if insert:
            sql = insert.group(1)
        else:
            try:
                sql = (sql + "\n" + body.decode() if body else sql) if sql else body.decode()
            except UnicodeDecodeError as exc:
                return _refused(27, f"the query is not UTF-8: {exc}")
        settings = {k: v for k, v in q.items() if k not in _TRANSPORT and not k.startswith("param_")}
        database = q.get("database") or request.headers.get("X-ClickHouse-Database") or "default"
        fmt = q.get("default_format") or request.headers.get("X-ClickHouse-Format") or "TabSeparated"
        m = _FORMAT_RE.search(sql) if not sql.lstrip()[:6].upper() == "INSERT" else None
        if m:
            fmt = m.group(1)
        if insert:
            fmt = insert.group(2)
        import asyncio

        try:
            out = await asyncio.to_thread(self._run, sql, params, settings, database, fmt, data if insert else None)
        except Exception as exc:
            text = str(exc)
            code = _CODE_RE.search(text)
            code_s = code.group(1) if code else "1000"
            if not text.startswith("Code:"):
                text = f"Code: {code_s}. DB::Exception: {text}"
            return web.Response(status=500, text=text + "\n", headers={"X-ClickHouse-Exception-Code": code_s})
        return web.Response(body=out, headers={"X-ClickHouse-Format": fmt, "X-ClickHouse-Summary": "{}",
                                               "Content-Type": "text/plain; charset=UTF-8"})

    def _run(self, sql: str, params: dict[str, str], settings: dict[str, str], database: str, fmt: str,
             data: bytes | None = None) -> bytes:
        """Run ``sql``; with ``data``, ``sql`` is an INSERT without its FORMAT clause and ``data`` its rows
        in ``fmt``, streamed into chDB as they came."""
        with self._lock:
            if database != self._database:
                if not _SETTING_NAME.match(database):
                    raise ValueError(f"Code: 81. DB::Exception: Database {database} does not exist")
                self._conn.query(f"USE {database}")
                self._database = database
            for name, value in settings.items():
                if self._applied.get(name) != value and _SETTING_NAME.match(name):
                    self._conn.query(f"SET {name} = {{v:String}}", "CSV", params={"v": value})
                    self._applied[name] = value
            if data is not None:
                with self._conn.send_insert(sql, fmt) as ins:
                    ins.append(data)
                    ins.finish()
                return b""
            res = self._conn.query(sql, fmt, params=params or None)
            return res.bytes() or b""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _refused(code: int, text: str) -> web.Response:
    """A request the client got wrong: 400, in a ClickHouse server's words."""
    return web.Response(status=400, text=f"Code: {code}. DB::Exception: {text}\n",
                        headers={"X-ClickHouse-Exception-Code": str(code)})


def _decompress(body: bytes, encoding: str) -> bytes:
    if not body or encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding}")


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8123, user: str = Settings.clickhouse_user, password: str = "",
          tls_cert: str | None = None, tls_key: str | None = None) -> None:
    """Run until interrupted; `streamproc clickhouse-server` calls this. HTTPS when given a certificate."""
    ssl_context = None
    if tls_cert:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(tls_cert, tls_key)
    server = ChdbHttpServer(path, user=user, password=password)
    log.info("embedded ClickHouse (chDB at %s) on %s://%s:%d", path, "https" if ssl_context else "http", host, port)
    try:
        web.run_app(server.app(), host=host, port=port, print=None, handle_signals=True, access_log=None,
                    ssl_context=ssl_context)
    finally:
        server.close()
