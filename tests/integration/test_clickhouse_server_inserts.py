"""`streamproc clickhouse-server` takes inserts as a ClickHouse server does: the data of an INSERT ... FORMAT
in the request body, binary formats (the sink's ArrowStream blocks) included, whether the statement comes
in the URL or as the body's first line; a body that is neither an insert nor text is refused clearly."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from streamproc.runtime.broker import free_port
from streamproc.settings import Settings
from streamproc.store import blocks
from streamproc.store.clickhouse import ClickHouseSink
from streamproc.verify.stack import ClickHouseServerProcess

T0 = 1_780_000_000_123
COLUMNS = ("window_start", "streamer_id", "src_partition", "topic", "viewer_ids")
DDL = ("CREATE TABLE t (window_start DateTime64(3, 'UTC'), streamer_id String, src_partition UInt16, "
       "topic LowCardinality(String), viewer_ids Array(String)) ENGINE = MergeTree ORDER BY window_start")
READ = ("SELECT toUnixTimestamp64Milli(window_start), streamer_id, src_partition, topic, viewer_ids "
        "FROM t ORDER BY window_start, streamer_id")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ClickHouseServerProcess]:
    settings = Settings.from_env(env={}, data_dir=str(tmp_path / "data"))
    srv = ClickHouseServerProcess(settings, free_port(), tmp_path / "clickhouse.log").start()
    try:
        yield srv
    finally:
        srv.stop()


def post(url: str, body: bytes, content_type: str = "application/octet-stream", **query: str) -> tuple[int, str]:
    req = urllib.request.Request(f"{url}/?{urllib.parse.urlencode(query)}", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_blocks_land_exactly_with_the_statement_in_the_url_or_in_the_body(server: ClickHouseServerProcess) -> None:
    sink = ClickHouseSink(server.url)
    try:
        sink.command(DDL)
        # through the driver (JSON): clickhouse-connect puts the statement on the body's first line
        sink.insert_columns("t", COLUMNS, [[T0, T0 + 10_000], ["s1", "村播-2"], [3, 65_535], ["live.views"] * 2,
                                           [dict.fromkeys(["a", "b"]), ["é"]]])
        block = blocks.encode(blocks.ARROW, COLUMNS, [[T0 + 20_000], ["s3"], [0], ["live.orders"], [[]]])
        query = f"INSERT INTO t ({', '.join(COLUMNS)}) FORMAT {blocks.ARROW}"
        assert post(server.url, block, query=query)[0] == 200  # Arrow: the statement in the URL, the data alone
        assert sink.rows(READ) == [(T0, "s1", 3, "live.views", ["a", "b"]),
                                   (T0 + 10_000, "村播-2", 65_535, "live.views", ["é"]),
                                   (T0 + 20_000, "s3", 0, "live.orders", [])]
        status, text = post(server.url, b"\xff\xfe not a statement")
        assert status == 400 and "not UTF-8" in text
        status, text = post(server.url, b"\xff\xfe", content_type="application/x-www-form-urlencoded")
        assert status == 400 and "cannot read the form" in text
        assert sink.rows("SELECT count() FROM t") == [(3,)]  # the server still answers, nothing more was written
    finally:
        sink.close()
