"""An independent judge of the event contract, for the property tests and the fuzz harness.

It shares no parsing code with ``streamproc.ingest.events``: the bytes are read by Python's own ``json``
module (strictly: no NaN/Infinity, no BOM, no lone surrogates), and the shape is checked against the
published JSON Schemas in ``schemas/events`` with ``jsonschema``, plus what JSON Schema (as the
``jsonschema`` package evaluates it) cannot say: an integer must be written as an integer literal (12.0
is not 12), and a streamer id is made of Unicode letters, marks, decimal digits and ``. : @ _ -`` with
at least one letter or digit (Python's ``re`` knows no Unicode categories). A message conforms if it
would be a valid event on its topic under its key, its record time and the reader's clock; the worker
must accept exactly those.
"""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "events"
TOPIC_OF_TYPE = {"view": "live.views", "like": "live.likes", "order": "live.orders"}
# What the fuzz harness and the property tests share: the first byte of a fuzz input picks TOPICS[b % 3].
TOPICS = tuple(TOPIC_OF_TYPE.values())
TS = 1_763_900_000_000
MAX_BYTES, MAX_FUTURE = 65_536, 300_000
_SCHEMA = {kind: json.loads((SCHEMAS / f"{kind}.json").read_text()) for kind in TOPIC_OF_TYPE}
_VALIDATORS = {kind: jsonschema.Draft202012Validator(s) for kind, s in _SCHEMA.items()}
_INTEGER_FIELDS = {kind: {name for name, p in s["properties"].items() if p.get("type") == "integer" or
                          isinstance(p.get("const"), int)} for kind, s in _SCHEMA.items()}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(parse: Any) -> Any:
    """A number hook that refuses a literal beyond a double's range (``1e400``, a 400-digit integer):
    JSON sets no limit, but the contract's parser (and the oracle's) reads such a number as an error."""

    def number(text: str) -> Any:
        if math.isinf(float(text)):
            raise ValueError(f"{text[:20]}... is beyond a double")
        return parse(text)

    return number


def _strict_utf8(obj: Any) -> None:
    """Raise if any string (key or value) holds a lone surrogate, which no UTF-8 sink can store."""
    if isinstance(obj, str):
        obj.encode("utf-8")
    elif isinstance(obj, list):
        for x in obj:
            _strict_utf8(x)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _strict_utf8(k)
            _strict_utf8(v)


def parse(value: bytes) -> Any:
    """The JSON document in ``value``; raises ValueError (or RecursionError) if it is not one."""
    text = value.decode("utf-8")  # strict: invalid UTF-8 raises
    if text.startswith("\ufeff"):
        raise ValueError("BOM")
    obj = json.loads(text, parse_constant=_no_constants, parse_int=_finite(int), parse_float=_finite(float))
    _strict_utf8(obj)
    return obj


def _streamer_id_characters(sid: str) -> bool:
    """Letters, marks, decimal digits and . : @ _ - only, and a letter or digit among them."""
    categories = [unicodedata.category(c) for c in sid]
    allowed = all(k[0] in "LM" or k == "Nd" or c in ".:@_-" for c, k in zip(sid, categories))
    return allowed and any(k[0] == "L" or k == "Nd" for k in categories)


def conforms(value: bytes | None, topic: str, key: bytes | None, record_ts: int | None, *,
             max_bytes: int, max_future_ms: int, now_ms: int | None = None) -> bool:
    """True if the message is a valid event for ``topic`` (the worker must accept it), else False.

    ``now_ms`` is the reader's clock: a record time more than ``max_future_ms`` past it is refused.
    """
    if value is None or len(value) > max_bytes:
        return False
    try:
        obj = parse(value)
    except (ValueError, RecursionError):
        return False
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or obj["type"] not in _SCHEMA:
        return False
    kind = obj["type"]
    if TOPIC_OF_TYPE[kind] != topic or not _VALIDATORS[kind].is_valid(obj):
        return False
    if any(type(obj[name]) is not int for name in _INTEGER_FIELDS[kind]):
        return False  # 12.0 and true satisfy "integer"/"const 1" in JSON Schema; they are not integers
    if not _streamer_id_characters(obj["streamer_id"]):
        return False
    if key is None or key != obj["streamer_id"].encode():  # an event must be keyed by its streamer
        return False
    if record_ts is not None and record_ts > 0:
        if obj["ts"] > record_ts + max_future_ms:
            return False
        if now_ms is not None and record_ts > now_ms + max_future_ms:
            return False
    return True
