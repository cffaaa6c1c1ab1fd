"""Dead-letter records: the original bytes, where they came from and why they were refused.

A record carries enough to fix and re-drive the message (topic, partition, offset, key, timestamp) and
is keyed by its source coordinates, so a consumer can drop the duplicates a crash-and-replay produces.

A record must always fit the producer's size limit (1 MB by default), whatever came in: a dead letter
the broker refuses is a dead letter lost. So it keeps at most ``VALUE_PREFIX_BYTES`` of the refused
bytes (and ``KEY_PREFIX_BYTES`` of the key), together with the original ``size`` and ``sha256`` and
whether it is ``truncated``. The prefix is twice the default ``max_message_bytes``: every line of a
pack, every message within the limit and oversized ones up to twice it are kept whole, so most records
can be fixed and re-driven from the record alone. The full bytes of a truncated one stay in the source
topic at its topic/partition/offset (3 days for views and likes, 7 for orders: ``topics/topics.toml``);
``streamproc deadletter redrive`` fetches them from there and checks them against ``sha256``.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Iterable, TypeVar

import orjson

from streamproc.ingest.events import Rejection, split_pack

M = TypeVar("M")  # a Kafka message (it has .key)

VALUE_PREFIX_BYTES = 128 * 1024  # the most of a refused value a record carries
KEY_PREFIX_BYTES = 1024  # the most of its key (a valid key is a streamer id of at most 64 characters)
DETAIL_MAX_CHARS = 1024
RECORD_MAX_BYTES = 192 * 1024  # no encoded record is larger (see _encode); far below the 1 MB producer limit


class Truncated(ValueError):
    """The record holds a prefix only; the exact bytes are in the source topic (``source_unit``)."""


def make_record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, record_ts: int | None,
    rejection: Rejection,
    index: int = 0,
) -> tuple[bytes, bytes]:
    """(key, value) of the dead-letter message for one rejected input message (or event of a pack)."""
    value = value or b""
    key_suffix, key_text, key_cut = _encode(key, KEY_PREFIX_BYTES)
    value_suffix, value_text, value_cut = _encode(value, VALUE_PREFIX_BYTES)
    rec: dict = {
        "reason": rejection.reason,
        "detail": rejection.detail[:DETAIL_MAX_CHARS],
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "index": index,
        "timestamp": record_ts,
        "rejected_at": int(time.time() * 1000),
        "key" + key_suffix: key_text,
        "size": len(value),
        "sha256": hashlib.sha256(value).hexdigest(),
        "truncated": key_cut or value_cut,
        "value" + value_suffix: value_text,  # last: the rest of an exported line stays readable
    }
    return f"{topic}/{partition}/{offset}/{index}".encode(), orjson.dumps(rec)


def _encode(raw: bytes | None, limit: int) -> tuple[str, str | None, bool]:
    """(field suffix, text, whether cut) for at most ``limit`` bytes of ``raw``.

    Text when the bytes are UTF-8 and their JSON form is no longer than base64 of ``limit`` bytes, else
    base64 (suffix ``_b64``): either way the bytes kept survive exactly, and the field never takes
    more than base64 would — JSON escapes a control character to 6 bytes, a quote to 2.
    """
    if raw is None:
        return "", None, False
    part = raw[:limit]
    cut = len(part) < len(raw)
    text = _utf8(part, cut)
    budget = 4 * ((limit + 2) // 3)
    if text is not None and (6 * len(part) <= budget or len(orjson.dumps(text)) <= budget + 2):
        return "", text, cut
    return "_b64", base64.b64encode(part).decode(), cut


def _utf8(part: bytes, cut: bool) -> str | None:
    """``part`` as text, or None if it is not UTF-8; a prefix cut inside a character ends before it."""
    try:
        return part.decode("utf-8")
    except UnicodeDecodeError as exc:
        if cut and exc.reason == "unexpected end of data":  # the first error is the cut itself
            return part[:exc.start].decode("utf-8")
        return None


def original_value(rec: dict) -> bytes:
    """The exact bytes that were rejected; ``Truncated`` if the record holds only a prefix of them."""
    _whole(rec)
    return rec["value"].encode() if "value" in rec else base64.b64decode(rec["value_b64"])


def original_key(rec: dict) -> bytes | None:
    """The exact key of the rejected message (None if it had none); ``Truncated`` as above."""
    _whole(rec)
    if "key_b64" in rec:
        return base64.b64decode(rec["key_b64"])
    return rec["key"].encode() if rec.get("key") is not None else None


def _whole(rec: dict) -> None:
    if rec.get("truncated"):  # records written before truncation existed have no flag: they are whole
        raise Truncated(f"{_where(rec)} holds the first bytes only: its source message has the rest")


def _where(rec: dict) -> str:
    return f"{rec.get('topic')}/{rec.get('partition')}/{rec.get('offset')}/{rec.get('index')}"


def source_unit(rec: dict, key: bytes | None, value: bytes | None) -> tuple[bytes | None, bytes]:
    """(key, value) of the refused unit, taken from its source message (the message at the record's
    topic/partition/offset) and proven by the record's sha256: the message itself, or the line
    ``index`` of it when the refused unit was a line of a pack. ``Truncated`` if neither matches (the
    offset now holds another message, e.g. a topic that was deleted and created again)."""
    value, index = value or b"", rec.get("index", 0)
    candidates = [value]
    if b"\n" in value:
        lines = split_pack(value)
        if isinstance(index, int) and 0 <= index < len(lines):
            candidates.append(lines[index])
    for unit in candidates:
        if hashlib.sha256(unit).hexdigest() == rec.get("sha256"):
            return key, unit
    raise Truncated(f"{_where(rec)}: the source message does not match the record's sha256")


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
