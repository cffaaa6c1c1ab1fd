"""Insert blocks: the Arrow block embedded chDB takes and the JSON block a server takes carry the same
rows, edge values included (times to the millisecond, UInt16 and Int64 limits, empty and non-ASCII
arrays), into the same tables."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from streamproc.store import blocks
from streamproc.store.chdb import ChdbSink

COLUMNS = ("window_start", "streamer_id", "src_partition", "src_topic", "gmv_fen", "viewer_ids")
DDL = ("CREATE TABLE t_{f} (window_start DateTime64(3, 'UTC'), streamer_id String, src_partition UInt16, "
       "src_topic LowCardinality(String), gmv_fen Int64, viewer_ids Array(String)) ENGINE = MergeTree ORDER BY tuple()")
T0 = 1_780_000_000_001
VALUES = [
    (T0, T0 + 9_999, 0, 1_000),  # milliseconds kept; the epoch, and a second after it
    ("s1", "乡村-莲藕", "s3", ""),
    (0, 65_535, 7, 1),
    ("live.views", "live.views", "live.orders", "live.likes"),
    (-(2**63), 2**63 - 1, 0, -12_800),
    [dict.fromkeys(["a", "b"]), [], ["村民-1"], dict.fromkeys(["x"])],
]


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ChdbSink]:
    s = ChdbSink(tmp_path / "ch", "t")
    s.apply_schema()
    yield s
    s.close()


def test_arrow_and_json_blocks_carry_the_same_rows(sink: ChdbSink) -> None:
    read = []
    for fmt in (blocks.ARROW, blocks.JSON):
        table = f"t_{fmt.lower()}"
        sink.command(DDL.format(f=fmt.lower()))
        sink.insert_format = fmt
        sink.insert_columns(table, COLUMNS, VALUES)
        read.append(sink.rows(f"SELECT toUnixTimestamp64Milli(window_start), streamer_id, src_partition, src_topic, "
                              f"gmv_fen, viewer_ids FROM {table} ORDER BY window_start"))
    expected = sorted(zip(*VALUES[:5], [sorted(ids) for ids in VALUES[5]]))
    assert [(*r[:5], sorted(r[5])) for r in read[0]] == expected
    assert read[0] == read[1]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="no encoder"):
        blocks.encode("Parquet", ("a",), [[1]])
