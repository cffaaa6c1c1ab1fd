"""Insert blocks: columns of Python values as one block in the format the driver sends.

Two formats, one per driver, chosen by where the parsing runs (docs/SCALING.md, "Snapshots as columns,
inserts as Arrow"):

* ``ArrowStream`` for embedded chDB, which parses in the worker's own process: ClickHouse reads Arrow
  column by column with no text to parse, less than half the CPU it spent on the same window rows as
  JSON, for a little more than orjson cost to build. chDB imports pyarrow and numpy itself, so they
  cost no memory.
* ``JSONCompactColumns`` for a ClickHouse server, which parses on its own machine: one orjson call, and
  the worker does not load pyarrow and numpy (43 MB of resident memory) to save the server work.

Event times are epoch milliseconds (``TIME_COLUMNS``); arrays of ids come as one collection of ids per
row (``LIST_COLUMNS``: a dict used as a set, or a list). Other types are read from the values
(int64, string), and ClickHouse casts them to the table's (UInt16, LowCardinality(String), ...).
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import orjson

ARROW = "ArrowStream"
JSON = "JSONCompactColumns"
TIME_COLUMNS = frozenset({"window_start", "max_ts", "ts"})  # epoch ms -> DateTime64(3, 'UTC')
LIST_COLUMNS = frozenset({"viewer_ids"})  # a collection of strings per row -> Array(String)


def encode(fmt: str, columns: Sequence[str], values: Sequence[Sequence[Any]]) -> bytes:
    """``values`` (one non-empty sequence per name in ``columns``, all of one length) as one block.

    Runs in the flush thread, which shares the GIL with the consuming event loop: each column is one
    conversion in C, or one pass, never a call per value.
    """
    if fmt == ARROW:
        return _arrow(columns, values)
    if fmt == JSON:
        return _json(columns, values)
    raise ValueError(f"no encoder for insert format {fmt!r}")


def _json(columns: Sequence[str], values: Sequence[Sequence[Any]]) -> bytes:
    """DateTime64(3) values travel as seconds with a fraction, because ClickHouse reads a bare integer
    as seconds; ms / 1000 is exact here (13 significant digits round-trip through a double)."""
    cols = list(values)
    for i, name in enumerate(columns):
        if name in TIME_COLUMNS:
            cols[i] = [ms / 1000 for ms in cols[i]]
        elif name in LIST_COLUMNS:
            cols[i] = [list(ids) for ids in cols[i]]
    return orjson.dumps(cols)


def _arrow(columns: Sequence[str], values: Sequence[Sequence[Any]]) -> bytes:
    import pyarrow as pa

    batch = pa.RecordBatch.from_arrays([_array(name, v) for name, v in zip(columns, values, strict=True)],
                                       names=list(columns))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _array(name: str, values: Sequence[Any]) -> Any:
    import numpy as np
    import pyarrow as pa

    if name in LIST_COLUMNS:  # one flat array of ids and their offsets, not a list per row
        offsets = pa.array([0, *itertools.accumulate(map(len, values))], pa.int32())
        return pa.ListArray.from_arrays(offsets, pa.array([v for ids in values for v in ids], pa.string()))
    first = values[0]
    if type(first) is int:  # counts, offsets, money in fen, epoch ms: numpy reads Python ints twice as fast
        ints = pa.array(np.fromiter(values, np.int64, len(values)))
        return ints.view(pa.timestamp("ms", "UTC")) if name in TIME_COLUMNS else ints
    return pa.array(values, pa.string() if type(first) is str else None)
