"""The public Taobao UserBehavior dataset: ``user_id,item_id,category_id,behavior_type,timestamp``.

About 100 million rows of one million users over nine days (2017-11-25 .. 2017-12-03, China time),
usually without a header, grouped by user; ``timestamp`` is in Unix seconds. The mapping:

* room (``streamer_id``) = ``cat-<category_id>``: the dataset has no streamers, and a category is
  the closest thing to a live room selling one kind of goods;
* ``pv`` -> a view: the first view of a visit is an ``enter``, the visit ends with a ``leave`` (see
  ``core``); ``fav`` and ``cart`` -> a like of count 1 (a nod to the item on show);
  ``buy`` -> a paid order of quantity 1 of ``item_id``, category ``category_id``;
* the dataset has no prices, so an order's amount is a stand-in: a fixed price per item, derived from
  the item id by a stable hash, between 9.90 and 299.90 yuan and ending in .90 like live-room prices.
  The same item always costs the same, so GMV leaderboards have a realistic shape and are
  reproducible, but they are not real money -- count orders for real conclusions;
* ``session_id`` = ``tb-<user>-<category>``, ``viewer_id`` = ``user_id``; event ids carry the input
  line number; order ids are a hash of (user, room, item, time), so an exact duplicate row is the same
  order and counts once.

Rows outside the documented nine days (the file has stray timestamps, some decades off) are
rejected as ``outside_time_window`` unless ``--from``/``--to`` set another window.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from streamproc.logs.importers.core import LIKE, PAID, VIEW, Action, Parsed, Reject, RowParser, check_ids, csv_parser, stable_hash

NAME = "taobao-userbehavior"
PREFIX = "tb"
COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
BEHAVIORS = {"pv": VIEW, "fav": LIKE, "cart": LIKE, "buy": PAID}
_CST = timezone(timedelta(hours=8))
WINDOW = (int(datetime(2017, 11, 25, tzinfo=_CST).timestamp() * 1000),
          int(datetime(2017, 12, 4, tzinfo=_CST).timestamp() * 1000))  # fmt: skip
PRICE_MIN_YUAN, PRICE_STEPS = 9, 291  # 9.90 .. 299.90 yuan


def price_fen(item_id: str) -> int:
    """The stand-in price of an item: stable across runs and machines."""
    return (PRICE_MIN_YUAN + stable_hash("taobao-price", item_id) % PRICE_STEPS) * 100 + 90


def parser() -> RowParser:
    def parse(line: int, row: dict[str, str]) -> Parsed:
        behavior = row["behavior_type"]
        kind = BEHAVIORS.get(behavior)
        if kind is None:
            return Reject("unknown_behavior", behavior[:40])
        user, item, cat = row["user_id"], row["item_id"], row["category_id"]
        bad = check_ids((user, "user_id"), (item, "item_id"), (cat, "category_id"))
        if bad is not None:
            return bad
        ts = row["timestamp"]
        if not ts.lstrip("-").isdigit():
            return Reject("bad_timestamp", ts[:40])
        room = f"cat-{cat}"
        if len(room) > 64:
            return Reject("bad_value", "category_id too long for a room id")
        return Action(int(ts) * 1000, line, kind, user, room, f"{PREFIX}-{user}-{cat}", item, cat,
                      price_fen(item) if kind == PAID else 0)

    return csv_parser(COLUMNS, parse)

