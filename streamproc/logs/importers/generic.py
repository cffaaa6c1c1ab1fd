"""Any clickstream as CSV or JSON lines, mapped by a small field-map file (TOML).

Example (every key is described in docs/LOGS.md)::

    input = "csv"              # or "jsonl"
    header = true              # csv: true, false, or leave out to detect it
    # columns = ["time", "user", "shop", "action", "sku", "price"]   # csv without a header
    id_prefix = "shop"

    [fields]                   # event field = input column (csv) or key (jsonl)
    ts = "time"
    viewer_id = "user"
    streamer_id = "shop"       # the room
    behavior = "action"
    product_id = "sku"         # orders need it
    amount = "price"           # orders need it, unless amount.default_fen is set
    # session_id, category, quantity, order_id: optional

    [time]
    unit = "iso"               # s, ms, us or iso (an ISO time without offset is UTC)

    [amount]
    unit = "yuan"              # yuan (decimal, x100, half up) or fen (integer)

    [behaviors]                # input value -> view | like | order | refund | skip
    click = "view"
    heart = "like"
    pay = "order"

Views become visits (enter, then leave) exactly as for the public datasets; ``skip`` behaviours are
counted as unmapped; a behaviour the map does not name is rejected with its line number.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from streamproc.ingest.events import AMOUNT_MAX_FEN
from streamproc.logs.importers.core import (
    LIKE,
    PAID,
    REFUNDED,
    VIEW,
    Action,
    CsvTable,
    ImportFailed,
    Parsed,
    Reject,
    RowParser,
    Skip,
    check_id,
    check_ids,
    plain_decimal,
    yuan_to_fen,
)

NAME = "generic"
TARGETS = {"view": VIEW, "like": LIKE, "order": PAID, "refund": REFUNDED, "skip": None}
REQUIRED = ("ts", "viewer_id", "streamer_id", "behavior")
OPTIONAL = ("session_id", "product_id", "category", "amount", "quantity", "order_id")
TIME_UNITS = {"s": 1000, "ms": 1, "us": 0.001, "iso": None}
AMOUNT_UNITS = ("yuan", "fen")


@dataclass(frozen=True)
class FieldMap:
    input: str
    fields: dict[str, str]
    behaviors: dict[str, str | None]
    time_unit: str = "ms"
    amount_unit: str = "yuan"
    default_fen: int | None = None
    header: bool | None = None
    columns: tuple[str, ...] = ()
    delimiter: str = ","
    id_prefix: str = "gen"


def load_map(path: str | Path) -> FieldMap:
    """Read and check a field-map file; every mistake is named before any input is read."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ImportFailed(f"field map {path}: {exc}") from None

    def fail(msg: str) -> ImportFailed:
        return ImportFailed(f"field map {path}: {msg}")

    kind = doc.get("input", "csv")
    if kind not in ("csv", "jsonl"):
        raise fail(f"input must be csv or jsonl, not {kind!r}")
    fields = doc.get("fields", {})
    unknown = sorted(set(fields) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise fail(f"unknown event field(s) in [fields]: {', '.join(unknown)}")
    missing = [f for f in REQUIRED if not isinstance(fields.get(f), str) or not fields[f]]
    if missing:
        raise fail(f"[fields] must name the input column of: {', '.join(missing)}")
    behaviors = doc.get("behaviors", {})
    if not behaviors:
        raise fail("[behaviors] must map at least one input value to view, like, order, refund or skip")
    bad = {k: v for k, v in behaviors.items() if v not in TARGETS}
    if bad:
        raise fail(f"[behaviors] targets must be one of {', '.join(TARGETS)}: {bad}")
    time_unit = doc.get("time", {}).get("unit", "ms")
    if time_unit not in TIME_UNITS:
        raise fail(f"time.unit must be one of {', '.join(TIME_UNITS)}")
    amount = doc.get("amount", {})
    amount_unit = amount.get("unit", "yuan")
    if amount_unit not in AMOUNT_UNITS:
        raise fail(f"amount.unit must be one of {', '.join(AMOUNT_UNITS)}")
    default_fen = amount.get("default_fen")
    if default_fen is not None and (type(default_fen) is not int or not 0 <= default_fen <= AMOUNT_MAX_FEN):
        raise fail(f"amount.default_fen must be an integer in 0..{AMOUNT_MAX_FEN}")
    targets = {TARGETS[v] for v in behaviors.values()}
    if targets & {PAID, REFUNDED}:
        if "product_id" not in fields:
            raise fail("orders need [fields] product_id")
        if "amount" not in fields and default_fen is None:
            raise fail("orders need [fields] amount or amount.default_fen")
    header = doc.get("header")
    columns = tuple(doc.get("columns", ()))
    if kind == "csv" and header is False and not columns:
        raise fail("a CSV without a header needs columns = [...] in file order")
    prefix = str(doc.get("id_prefix", "gen"))
    if not 0 < len(prefix) <= 16:
        raise fail("id_prefix must be 1..16 characters")
    return FieldMap(kind, dict(fields), {str(k): TARGETS[v] for k, v in behaviors.items()}, time_unit,
                    amount_unit, default_fen, header, columns, str(doc.get("delimiter", ",")), prefix)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _ts(value: Any, unit: str) -> int | None:
    if unit == "iso":
        if not isinstance(value, str):
            return None
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return int((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp() * 1000)
    try:
        number = Decimal(_text(value))
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return int(number * Decimal(str(TIME_UNITS[unit])))


def _amount(value: Any, unit: str) -> int | Reject:
    text = _text(value)
    number = plain_decimal(text)
    if number is None:
        return Reject("bad_amount", text[:40])
    if unit == "fen":
        if number != number.to_integral_value():
            return Reject("bad_amount", f"{text[:40]} is not a whole number of fen")
        return int(number)
    return yuan_to_fen(number)


def parser(fmap: FieldMap) -> RowParser:
    f = fmap.fields
    if fmap.input == "csv":
        if fmap.columns:
            table = CsvTable(tuple(c.strip().lower() for c in fmap.columns), header=fmap.header,
                             delimiter=fmap.delimiter)  # fmt: skip
        else:
            table = CsvTable(tuple(sorted({v.strip().lower() for v in f.values()})), header=True,
                             delimiter=fmap.delimiter)  # fmt: skip
        col = {k: v.strip().lower() for k, v in f.items()}

        def read(raw: bytes) -> dict[str, Any] | Reject | Skip:
            row = table.row(raw)
            if not isinstance(row, dict):
                return row
            return {k: row.get(c, "") for k, c in col.items()}
    else:

        def read(raw: bytes) -> dict[str, Any] | Reject | Skip:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return Reject("malformed_json", str(exc)[:80])
            if type(obj) is not dict:
                return Reject("not_object")
            return {k: obj.get(c) for k, c in f.items()}

    def parse(line: int, raw: bytes) -> Parsed:
        row = read(raw)
        if not isinstance(row, dict):
            return row
        behavior = _text(row["behavior"])
        if behavior not in fmap.behaviors:
            return Reject("unknown_behavior", behavior[:40])
        kind = fmap.behaviors[behavior]
        if kind is None:
            return Skip(behavior)
        ts = _ts(row["ts"], fmap.time_unit)
        if ts is None:
            return Reject("bad_timestamp", _text(row["ts"])[:40])
        viewer, room = _text(row["viewer_id"]), _text(row["streamer_id"])
        bad = check_ids((viewer, "viewer_id"), (room, "streamer_id"))
        if bad is not None:
            return bad
        session = _text(row.get("session_id")) or f"{fmap.id_prefix}-{viewer}-{room}"
        category = _text(row.get("category")) or room
        if kind in (VIEW, LIKE):
            return Action(ts, line, kind, viewer, room, session, "", category)
        product = _text(row.get("product_id"))
        bad = check_id(product, "product_id")
        if bad is not None:
            return bad
        raw_amount = row.get("amount")
        if _text(raw_amount) == "" and fmap.default_fen is not None:
            amount: int | Reject = fmap.default_fen
        else:
            amount = _amount(raw_amount, fmap.amount_unit)
        if isinstance(amount, Reject):
            return amount
        qty_text = _text(row.get("quantity")) or "1"
        if not qty_text.isdigit():
            return Reject("bad_quantity", qty_text[:40])
        return Action(ts, line, kind, viewer, room, session, product, category, amount, int(qty_text),
                      _text(row.get("order_id")))

    return parse
