"""The public REES46 multi-category store events: ``event_time,event_type,product_id,category_id,
category_code,brand,price,user_id,user_session`` (a header line; one file per month, ~40-70 M rows).

The mapping:

* room (``streamer_id``) = ``cat-<category_id>``: no streamers in a web shop, and a category is the
  closest thing to a live room selling one kind of goods; the room's category in the dimension and in
  orders is ``category_code`` (``electronics.smartphone``) where the row has one, else the id;
* ``view`` -> a view: the first view of a visit is an ``enter``, the visit ends with a ``leave`` (see
  ``core``; a visit is per ``user_session`` as well as per room); ``cart`` -> a like of count 1;
  ``purchase`` -> a paid order of quantity 1 of ``product_id``; ``remove_from_cart`` has no event
  in the pipeline and is counted as unmapped;
* an order's amount is the row's ``price`` times 100, rounded half up, as fen: the pipeline has one
  currency, so the store's units are read as yuan. A purchase without a valid, non-negative price
  is rejected (``bad_price``);
* ``session_id`` = ``user_session`` (``r46-<user_id>`` when empty), ``viewer_id`` = ``user_id``;
  order ids are a hash of (user, room, product, time).

``event_time`` is ``2019-10-01 00:00:04 UTC``; an ISO-8601 time with an offset is read as well.
"""

from __future__ import annotations

from datetime import datetime, timezone

from streamproc.ingest.events import AMOUNT_MAX_FEN
from streamproc.logs.importers.core import LIKE, PAID, VIEW, Action, Parsed, Reject, RowParser, Skip, check_ids, csv_parser, plain_decimal, yuan_to_fen

NAME = "rees46"
PREFIX = "r46"
COLUMNS = ("event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price",
           "user_id", "user_session")  # fmt: skip
EVENT_TYPES = {"view": VIEW, "cart": LIKE, "purchase": PAID}
UNMAPPED = ("remove_from_cart",)


def parse_time(text: str) -> int | None:
    """Epoch ms of ``2019-10-01 00:00:04 UTC`` (or ISO-8601); None if it is not a time."""
    text = text.strip()
    if text.endswith(" UTC"):
        text = text[:-4]
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def price_fen(text: str) -> int | Reject:
    price = plain_decimal(text)
    if price is None:
        return Reject("bad_price", text[:40])
    fen = yuan_to_fen(price)
    if fen > AMOUNT_MAX_FEN:
        return Reject("bad_price", f"{text[:40]} is over the pipeline's limit of one order")
    return fen


def parser() -> RowParser:
    def parse(line: int, row: dict[str, str]) -> Parsed:
        event_type = row["event_type"]
        kind = EVENT_TYPES.get(event_type)
        if kind is None:
            return Skip(event_type) if event_type in UNMAPPED else Reject("unknown_event_type", event_type[:40])
        ts = parse_time(row["event_time"])
        if ts is None:
            return Reject("bad_timestamp", row["event_time"][:40])
        user, product, cat = row["user_id"], row["product_id"], row["category_id"]
        bad = check_ids((user, "user_id"), (product, "product_id"), (cat, "category_id"))
        if bad is not None:
            return bad
        amount = 0
        if kind == PAID:
            fen = price_fen(row["price"])
            if isinstance(fen, Reject):
                return fen
            amount = fen
        session = row["user_session"] or f"{PREFIX}-{user}"
        category = row["category_code"] or cat
        return Action(ts, line, kind, user, f"cat-{cat}", session, product, category[:64], amount)

    return csv_parser(COLUMNS, parse)
