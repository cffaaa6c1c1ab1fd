"""The streamers dimension (one ``Streamer`` per room) and loading it from a user's file: CSV with a header, a JSON array, or JSON lines.

Boards are filtered and grouped by the place and category a room has here, so a file is checked whole
before anything is written: a row without a ``streamer_id``, an unknown column or a value that is not
text is an error naming the row, and nothing is loaded. Loading again replaces a streamer's row (the
table is a ReplacingMergeTree on ``updated_at``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import orjson

from streamproc.store import Sink

COLUMNS = ("streamer_id", "name", "platform", "province", "county", "village", "category")


@dataclass(frozen=True)
class Streamer:
    """One livestream room; the fields are exactly the columns of the ``streamers`` dimension table."""

    streamer_id: str
    name: str
    platform: str
    province: str
    county: str
    village: str
    category: str


def streamers_to_jsonl(streamers: Iterable[Streamer], path: str | Path) -> None:
    """Write the dimension as JSON lines (keys = field names, Chinese kept readable) for loading."""
    with open(path, "wb") as f:
        for s in streamers:
            f.write(orjson.dumps(asdict(s)) + b"\n")


class DimensionError(ValueError):
    pass


def read_file(path: str | Path) -> list[tuple[str, ...]]:
    """Rows in ``COLUMNS`` order; raises DimensionError (with the row number) on any bad row."""
    raw = Path(path).read_bytes().decode("utf-8-sig")
    if Path(path).suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or "streamer_id" not in reader.fieldnames:
            raise DimensionError("CSV header must name streamer_id (and any of: " + ", ".join(COLUMNS[1:]) + ")")
        records: Iterable[tuple[int, Any]] = enumerate(reader, start=2)
    elif raw.lstrip().startswith("["):
        try:
            records = enumerate(orjson.loads(raw), start=1)
        except orjson.JSONDecodeError as exc:
            raise DimensionError(f"not valid JSON: {exc}") from None
    else:
        records = _json_lines(raw)
    rows, seen = [], set()
    for n, rec in records:
        row = _row(n, rec)
        if row[0] in seen:
            raise DimensionError(f"row {n}: streamer_id {row[0]!r} appears twice")
        seen.add(row[0])
        rows.append(row)
    if not rows:
        raise DimensionError("no streamers in the file")
    return rows


def _json_lines(raw: str) -> Iterable[tuple[int, Any]]:
    for n, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            try:
                yield n, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DimensionError(f"line {n}: not valid JSON: {exc}") from None


def _row(n: int, rec: Any) -> tuple[str, ...]:
    if not isinstance(rec, dict):
        raise DimensionError(f"row {n}: expected an object with {', '.join(COLUMNS)}")
    unknown = set(rec) - set(COLUMNS)
    if unknown:
        raise DimensionError(f"row {n}: unknown column(s) {', '.join(sorted(unknown))}")
    values = []
    for c in COLUMNS:
        v = rec.get(c, "")
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise DimensionError(f"row {n}: {c} must be text")
        v = v.strip()
        if len(v) > 128 or any(ch < " " for ch in v):
            raise DimensionError(f"row {n}: {c} is longer than 128 characters or holds control characters")
        values.append(v)
    if not values[0] or len(values[0]) > 64:
        raise DimensionError(f"row {n}: streamer_id must be 1..64 characters")
    return tuple(values)


def load(sink: Sink, path: str | Path) -> int:
    """Check the whole file, then write it in one insert; returns the number of streamers."""
    rows = read_file(path)
    sink.insert("streamers", COLUMNS, rows)
    return len(rows)
