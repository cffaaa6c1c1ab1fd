"""Dead-letter records: the original bytes, where they came from and why they were refused.

A record carries enough to fix and re-drive the message (topic, partition, offset, key, timestamp) and
is keyed by its source coordinates, so a consumer can drop the duplicates a crash-and-replay produces.
"""

from __future__ import annotations

import base64
import time
from typing import Iterable, TypeVar

import orjson

from .events import Rejection

M = TypeVar("M")  # a Kafka message (it has .key)


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
        "rejected_at": int(time.time() * 1000),
    }
    _put_bytes(rec, "key", key)
    _put_bytes(rec, "value", value or b"")
    return f"{topic}/{partition}/{offset}/{index}".encode(), orjson.dumps(rec)


def _put_bytes(rec: dict, name: str, raw: bytes | None) -> None:
    """``name`` as text when the bytes are UTF-8, else ``name_b64``: either way the exact bytes survive."""
    if raw is None:
        rec[name] = None
        return
    try:
        rec[name] = raw.decode("utf-8")
    except UnicodeDecodeError:
        rec[name + "_b64"] = base64.b64encode(raw).decode()


def original_value(rec: dict) -> bytes:
    """The exact bytes that were rejected."""
    return rec["value"].encode() if "value" in rec else base64.b64decode(rec["value_b64"])


def original_key(rec: dict) -> bytes | None:
    """The exact key of the rejected message (None if it had none)."""
    if "key_b64" in rec:
        return base64.b64decode(rec["key_b64"])
    return rec["key"].encode() if rec.get("key") is not None else None


def distinct(messages: Iterable[M]) -> list[M]:
    """Dead-letter messages without the repeats a crash replay adds, oldest first: a message
    dead-lettered twice carries the same key ``topic/partition/offset/index``."""
    seen: set[bytes] = set()
    out = []
    for msg in messages:
        if msg.key not in seen:
            seen.add(msg.key)
            out.append(msg)
    return out
