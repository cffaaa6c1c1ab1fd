"""Decode and validate one Kafka message into an event, or say exactly why not.

The rules live here once, as data (``FIELDS``); ``schemas/events/*.json`` states the same contract as
JSON Schema for producers, and ``verify/oracle.py`` restates it in SQL so that the two can check each other.
Checks run in a fixed order and the first failure is the reason, so every implementation agrees on
the reason code of any message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Union, get_type_hints

import msgspec
import orjson

from streamproc.ingest.ids import ID_MAX_LEN, is_streamer_id

SCHEMA_VERSION = 1
TS_MIN = 946_684_800_000  # 2000-01-01
TS_MAX = 4_102_444_800_000  # 2100-01-01
COUNT_MAX = 10_000
QUANTITY_MAX = 10_000
AMOUNT_MAX_FEN = 10_000_000_000  # 1e8 yuan in one order is not a farm sale

TOPIC_OF_TYPE = {"view": "live.views", "like": "live.likes", "order": "live.orders"}

# Reason codes, in the order the checks run.
REASONS = (
    "oversized",
    "invalid_utf8",
    "malformed_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "unknown_type",
    "wrong_topic",
    "unsupported_version",
    "bad_value",
    "negative_amount",
    "absurd_amount",
    "key_mismatch",
    "future",
    "late",
)

# Refused before any message of it could be read: a record batch that decompresses past
# STREAMPROC_MAX_BATCH_BYTES (runtime/batch_codecs.py) becomes one dead letter with this reason.
TRANSPORT_REASONS = ("batch_too_large",)


class RefusedBatch:
    """The value of the one record that stands for a record batch refused whole, unread (its offset is the
    batch's last). Not bytes, so the worker's fast path hands it to ``decode``, which names the reason;
    empty, so a dead letter holds no bytes of it: the batch stays in the source topic."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail

    def __len__(self) -> int:
        return 0


# (field, kind, lo, hi): kind "id" is a string of 1..64 chars that also passes lo if lo is given (the
# streamer id rule of ingest/ids.py: it is a key the API looks up), "int" an integer in [lo, hi], "enum" a
# string in lo (a tuple). Order matters: the first failing field names the reason.
_COMMON = (
    ("schema_version", "int", SCHEMA_VERSION, SCHEMA_VERSION),
    ("event_id", "id", None, None),
    ("ts", "int", TS_MIN, TS_MAX),
    ("streamer_id", "id", is_streamer_id, None),
    ("session_id", "id", None, None),
    ("viewer_id", "id", None, None),
)
FIELDS = {
    "view": _COMMON + (("action", "enum", ("enter", "leave"), None),),
    "like": _COMMON + (("count", "int", 1, COUNT_MAX),),
    "order": _COMMON
    + (
        ("order_id", "id", None, None),
        ("product_id", "id", None, None),
        ("category", "id", None, None),
        ("quantity", "int", 1, QUANTITY_MAX),
        ("amount_fen", "money", 0, AMOUNT_MAX_FEN),
        ("status", "enum", ("paid", "refunded"), None),
    ),
}


Id = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_LEN)]
Ts = Annotated[int, msgspec.Meta(ge=TS_MIN, le=TS_MAX)]


class _Event(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, tag_field="type"):
    schema_version: Literal[1]
    event_id: Id
    ts: Ts
    streamer_id: Id
    session_id: Id
    viewer_id: Id


class View(_Event, tag="view"):
    action: Literal["enter", "leave"]


class Like(_Event, tag="like"):
    count: Annotated[int, msgspec.Meta(ge=1, le=COUNT_MAX)]


class Order(_Event, tag="order"):
    order_id: Id
    product_id: Id
    category: Id
    quantity: Annotated[int, msgspec.Meta(ge=1, le=QUANTITY_MAX)]
    amount_fen: Annotated[int, msgspec.Meta(ge=0, le=AMOUNT_MAX_FEN)]
    status: Literal["paid", "refunded"]


Event = Union[View, Like, Order]
_TYPES = {"view": View, "like": Like, "order": Order}
# Fast path: typed decoding with validation in C. It accepts a subset of what the rules below accept
# (no unknown fields, so nothing it skips can hide bytes orjson would refuse); anything it refuses is
# judged again by the reference checks, which name the reason. Same verdicts, one path much cheaper.
_FAST = msgspec.json.Decoder(Event)


def _topic_type(kind: type[View] | type[Like] | type[Order]) -> type[msgspec.Struct]:
    """``kind``'s fields with the tag as an ordinary field that must say ``kind``'s type."""
    tag = {View: "view", Like: "like", Order: "order"}[kind]
    hints = get_type_hints(kind, include_extras=True)
    fields = [("type", Literal[tag])] + [(f, hints[f]) for f in kind.__struct_fields__]
    return msgspec.defstruct(f"Topic{kind.__name__}", fields, frozen=True, gc=False, forbid_unknown_fields=True,
                             module=__name__)


# Faster still, for one topic: the events of that topic's own type only, untagged (no search for the tag
# before the fields: a quarter less per event). What it accepts, ``_FAST`` accepts with the same field
# values: every "type" key must say the topic's type here, while ``_FAST`` takes the first and requires
# any other to agree. The objects it gives are not ``View``/``Like``/``Order`` but have their fields
# (and ``type``); the batch loop (core/batch.py) uses them for the topic they were decoded for, and
# sends everything this refuses to ``decode``, so no verdict depends on it.
TOPIC_DECODERS = {TOPIC_OF_TYPE[tag]: msgspec.json.Decoder(_topic_type(kind))
                  for tag, kind in (("view", View), ("like", Like), ("order", Order))}


def is_pack(value: bytes) -> bool:
    """A pack: several events in one message, as JSON lines. Producers batch to save per-message cost.

    A value with newlines that parses as ONE JSON document (a pretty-printed event) is not a pack;
    anything else with several lines is, and each line is then judged on its own.
    """
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.strip().count(b"\n") > 0
    return False


def split_pack(value: bytes) -> list[bytes]:
    return [line for line in value.split(b"\n") if line.strip()]


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


def decode(
    value: bytes | RefusedBatch | None,
    topic: str,
    key: bytes | None,
    record_ts: int | None,
    *,
    max_bytes: int,
    max_future_ms: int,
    now_ms: int | None = None,
) -> Event | Rejection:
    """Turn raw message bytes into a typed event; never raises on any input.

    ``topic`` is the logical topic name (without prefix). ``record_ts`` is the Kafka record timestamp:
    an event more than ``max_future_ms`` after its record is ``future``, a rule of the log alone, so a
    replay gets the verdict of the live run. The producer sets the record timestamp too (unless the
    broker stamps append time), so it is also held against the reader's clock ``now_ms`` (epoch ms;
    None: no such check): a record more than ``max_future_ms`` after the machine that reads it cannot
    be honest, and an honest log, live or replayed later, never is.
    """
    if value is None:
        return Rejection("malformed_json", "empty message")
    if type(value) is RefusedBatch:
        return Rejection("batch_too_large", value.detail)
    if len(value) > max_bytes:
        return Rejection("oversized", f"{len(value)} bytes > {max_bytes}")
    try:
        event = _FAST.decode(value)
    except Exception:  # DecodeError, or UnicodeDecodeError from a string field: the reference decides
        return _decode_checked(value, topic, key, record_ts, max_future_ms, now_ms)
    if TOPIC_OF_TYPE[_KIND[type(event)]] != topic:
        return Rejection("wrong_topic", f"{_KIND[type(event)]} on {topic}")
    if not is_streamer_id(event.streamer_id):  # the one field rule the typed decoder cannot state
        return Rejection("bad_value", "streamer_id")
    return _context_checks(event, key, record_ts, max_future_ms, now_ms)


_KIND = {View: "view", Like: "like", Order: "order"}


def _context_checks(event: Event, key: bytes | None, record_ts: int | None, max_future_ms: int,
                    now_ms: int | None) -> Event | Rejection:
    """The checks of the message's context (key, record time); ``decode`` says why each exists."""
    if key is None:  # a keyless event lands in a random partition, away from its streamer's state
        return Rejection("key_mismatch", "no key: events are keyed by streamer_id")
    if key != event.streamer_id.encode():
        return Rejection("key_mismatch", "key differs from streamer_id")
    if record_ts is not None and record_ts > 0:
        if event.ts > record_ts + max_future_ms:
            return Rejection("future", f"ts {event.ts} is {event.ts - record_ts} ms after its record")
        if now_ms is not None and record_ts > now_ms + max_future_ms:
            return Rejection("future", f"record time {record_ts} is {record_ts - now_ms} ms after the reader's clock")
    return event


def _decode_checked(value: bytes, topic: str, key: bytes | None, record_ts: int | None,
                    max_future_ms: int, now_ms: int | None) -> Event | Rejection:
    """The reference checks, in their fixed order: the first failure names the reason."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("invalid_utf8", "value is not UTF-8")
        return Rejection("malformed_json", str(exc)[:200])
    if type(obj) is not dict:
        return Rejection("not_object", f"top level is {type(obj).__name__}")
    kind = obj.get("type")
    if kind is None:
        return Rejection("missing_field", "type")
    if type(kind) is not str:
        return Rejection("wrong_type", "type")
    spec = FIELDS.get(kind)
    if spec is None:
        return Rejection("unknown_type", kind[:64])
    if TOPIC_OF_TYPE[kind] != topic:
        return Rejection("wrong_topic", f"{kind} on {topic}")
    for name, check, lo, hi in spec:
        v = obj.get(name)
        if v is None:
            return Rejection("missing_field", name)
        if check == "id":
            if type(v) is not str:
                return Rejection("wrong_type", name)
            if not 0 < len(v) <= ID_MAX_LEN or (lo is not None and not lo(v)):
                return Rejection("bad_value", name)
        elif check == "enum":
            if type(v) is not str:
                return Rejection("wrong_type", name)
            if v not in lo:
                return Rejection("bad_value", name)
        else:  # int / money
            if type(v) is not int:
                return Rejection("wrong_type", name)
            if v < lo:
                if check == "money":
                    return Rejection("negative_amount", f"{name}={v}")
                if name == "schema_version":
                    return Rejection("unsupported_version", str(v))
                return Rejection("bad_value", name)
            if v > hi:
                if check == "money":
                    return Rejection("absurd_amount", f"{name}={v}")
                if name == "schema_version":
                    return Rejection("unsupported_version", str(v))
                return Rejection("bad_value", name)
    fields = {name: obj[name] for name, *_ in spec}
    return _context_checks(_TYPES[kind](**fields), key, record_ts, max_future_ms, now_ms)
