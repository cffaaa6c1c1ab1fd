"""Dead-letter records: the original bytes, where they came from and why they were refused.

A record carries enough to fix and re-drive the message (topic, partition, offset, key, timestamp) and
is keyed by its source coordinates, so a consumer can drop the duplicates a crash-and-replay produces.
"""

from __future__ import annotations

import base64
import time

import orjson

from .events import Rejection


def make_record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, record_ts: int | None,
    rejection: Rejection,
    index: int = 0,
) -> tuple[bytes, bytes]:
    """(key, value) of the dead-letter message for one rejected input message (or event of a pack)."""
    rec: dict = {
        "reason": rejection.reason,
        "detail": rejection.detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "index": index,
        "timestamp": record_ts,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "rejected_at": int(time.time() * 1000),
    }
    value = value or b""
    try:
        rec["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        rec["value_b64"] = base64.b64encode(value).decode()
    return f"{topic}/{partition}/{offset}/{index}".encode(), orjson.dumps(rec)


def original_value(rec: dict) -> bytes:
    """The exact bytes that were rejected."""
    return rec["value"].encode() if "value" in rec else base64.b64decode(rec["value_b64"])
