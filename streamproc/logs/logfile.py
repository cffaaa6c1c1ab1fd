"""The recorded event log: JSON lines, optionally ``.gz`` or ``.zst``, one Kafka record per line.

A line is ``{"topic": "live.views", "key": "s0042", "ts": 1700000000123, "value": "<raw message>"}``.
``ts`` is the Kafka record timestamp (when the producer sent it), not the event time inside the value:
keeping both is what lets replay reproduce lateness and future-time verdicts exactly. The raw value is
kept as a string, byte for byte; a value that is not UTF-8 is stored as ``value_b64`` instead. This one
format is written by ``generate`` and ``record`` and read by ``replay``, ``reconcile`` and ``demo``.
"""

from __future__ import annotations

import base64
import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

import orjson


@dataclass(frozen=True, slots=True)
class LogRecord:
    topic: str
    key: bytes | None
    ts: int
    value: bytes


class LogLineError(ValueError):
    """A line of a recorded log that cannot be read; carries its line number."""

    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(f"line {line_no}: {reason}")
        self.line_no = line_no
        self.reason = reason


def open_log(path: str | Path, mode: str = "rb") -> IO[bytes]:
    """Open a log file, compressed by extension; ``mode`` is "rb" or "wb"."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, mode)  # type: ignore[return-value]
    if path.suffix == ".zst":
        import zstandard

        raw = open(path, mode)
        if "r" in mode:
            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
        return zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=True)  # type: ignore[return-value]
    return open(path, mode)


def encode_line(rec: LogRecord) -> bytes:
    line: dict = {"topic": rec.topic, "key": rec.key.decode() if rec.key is not None else None, "ts": rec.ts}
    try:
        line["value"] = rec.value.decode("utf-8")
    except UnicodeDecodeError:
        line["value_b64"] = base64.b64encode(rec.value).decode()
    return orjson.dumps(line) + b"\n"


def decode_line(raw: bytes, line_no: int = 0) -> LogRecord:
    try:
        obj = orjson.loads(raw)
        value = obj["value"].encode() if "value" in obj else base64.b64decode(obj["value_b64"], validate=True)
        key = obj.get("key")
        return LogRecord(str(obj["topic"]), key.encode() if key is not None else None, int(obj["ts"]), value)
    except Exception as exc:  # any malformed line is reported with its number
        raise LogLineError(line_no, f"{type(exc).__name__}: {exc}") from None


def write_log(path: str | Path, records: Iterable[LogRecord]) -> int:
    n = 0
    with open_log(path, "wb") as out:
        for rec in records:
            out.write(encode_line(rec))
            n += 1
    return n


def read_log(path: str | Path, *, strict: bool = True, errors: list[LogLineError] | None = None) -> Iterator[LogRecord]:
    """Yield the records of a log; a bad line raises (strict) or is appended to ``errors`` and skipped."""
    return (rec for _, rec in read_numbered(path, strict=strict, errors=errors))


def read_numbered(path: str | Path, *, strict: bool = True, errors: list[LogLineError] | None = None,
                  start_at: int = 1) -> Iterator[tuple[int, LogRecord]]:
    """``read_log`` with each record's line number, from line ``start_at`` on (earlier lines unread)."""
    with open_log(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if line_no < start_at or not raw.strip():
                continue
            try:
                yield line_no, decode_line(raw, line_no)
            except LogLineError as exc:
                if strict:
                    raise
                if errors is not None:
                    errors.append(exc)
