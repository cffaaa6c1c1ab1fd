"""The dashboard's answers: totals for a filter (the KPI strip), products ranked, and the funnel.

An operator opens the page to see where the room or the region stands before who leads: the seller
dashboards of the platforms open with totals and trends. These answers cover the same streamers as a
board with the same filters (place, category, platform, or one streamer) and the same range (a named
window ending at ``as_of``, or ``start``/``end``; not ``session``, which is a range per streamer), so the
strip always sums what the board lists. Every figure is exact: sums and ``uniqExact`` audiences over the
tiles of ``tiles.py`` (read around anything not yet rolled up), and order facts from ``orders FINAL``.

Definitions (restated independently by ``verify/overview_oracle.py``, which the demo's check compares):

* **Summary.** ``streamers`` on the board; ``gmv_fen`` = paid minus refunded (the boards' GMV);
  ``paid_fen`` = the amount of paid orders; ``orders`` = paid orders; ``aov_fen`` (average order
  value) = ``paid_fen / orders`` rounded half up to a whole fen, null without paid orders (gross, because
  a refund in the range may be of an order paid before it, which would make a net average meaningless);
  ``buyers`` = distinct viewers with a paid order, across the streamers (one person buying in two rooms
  is one buyer); ``unique_viewers`` likewise; ``views``, ``likes``; ``concurrent_viewers`` ("online now")
  = the sum of each streamer's audience at the end of the range (its ``concurrent_viewers``);
  ``refunds`` = refunded orders and ``refund_fen`` their amount, both in the range; ``conversion`` =
  buyers / unique viewers from the minimum audience on (as on the boards).
* **Products.** Orders of the range (an order is in the range when its event time is: the range is
  whole 10 s windows) of the filter's streamers, grouped by ``product_id``: ``orders`` paid, ``refunds``,
  ``items`` = paid minus refunded quantity, ``gmv_fen`` = paid minus refunded amount, ``refund_fen``,
  ``buyers`` = distinct viewers with a paid order of it, ``streamers`` = distinct streamers with an order
  of it, ``category`` = that of its latest order (by event time, then the larger category). Ranked by
  ``metric`` (``gmv``, ``orders`` or ``buyers``) descending, then ``product_id``.
* **Funnel.** Stages of people, each with its event count: ``entered`` = distinct viewers who entered
  (count: enters); ``paid`` = distinct viewers with a paid order (count: paid orders); ``repeat`` =
  those with two or more paid orders in the range (count: their paid orders). An order event is a
  payment or a refund (the log carries no unpaid orders), so "ordered" and "paid" are one stage. Each
  stage's ``rate`` = its people / the previous stage's, rounded to 6 places, null when that is 0; no
  minimum audience (a funnel ranks nothing). Stages count their own sets: a buyer may have entered
  before the range, so ``paid`` can exceed ``entered`` for a short window.

Naming one streamer that is unknown (not in the dimension, no data in the range) gives None: the API's 404.
"""

from __future__ import annotations

from typing import Any

from streamproc.boards.clock import Clock, clock, not_session, resolve, window_label
from streamproc.boards.params import BadParameter, Request
from streamproc.boards.scores import PLACE_FILTER, STREAMERS, conversion, yuan
from streamproc.boards.streamer import known
from streamproc.boards.tiles import ONE, Tiles, audience_rows, tally_rows, tile_params, tiles, totals
from streamproc.store import Sink

PRODUCT_METRICS = ("gmv", "orders", "buyers")
_PRODUCT_SCORE = {"gmv": "gmv_fen", "orders": "orders", "buyers": "buyers"}  # a fixed whitelist

# the filter's streamers: everyone when no place is asked (a streamer missing from the dimension too)
_WHO = f"({{any_place:UInt8}} = 0 OR streamer_id IN (SELECT streamer_id FROM {STREAMERS} AS s WHERE {PLACE_FILTER}))"

# the orders of the range and the filter; each (order_id, status) is one row of orders FINAL
_ORDERS = ("SELECT * FROM orders FINAL WHERE ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
           f"AND ts < fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC') AND {ONE} AND {_WHO}")


def _range(sink: Sink, req: Request, clk: Clock | None) -> tuple[int, int, Tiles] | None:
    """[start, end) and its tiling; None when the request names one streamer that is unknown (the rule of
    every answer about one streamer, ``streamer.known``: a 404 rather than zeros for a typo)."""
    clk = clk or clock(sink)
    start, end = resolve(not_session(req.time), clk)
    if req.filters.streamer_id and not known(sink, req.filters.streamer_id, start, end, clk):
        return None
    return start, end, tiles(start, end, clk)


def _head(req: Request, start: int, end: int) -> dict[str, Any]:
    return {"window": window_label(req.time), "start": start, "end": end, "as_of": end}


def _params(req: Request, start: int, end: int, **more: Any) -> dict[str, Any]:
    return {**req.filters.params(), "any_place": int(req.filters.any_place), "lo": start, "hi": end, **more}


def half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, in integers (money is never a float here)."""
    return (2 * numerator + denominator) // (2 * denominator)


def summary(sink: Sink, req: Request, clk: Clock | None = None) -> dict[str, Any] | None:
    """The KPI strip: totals of the filter's streamers over ``req.time`` (module docstring), in one
    statement: per-streamer tallies over the tiles, summed, beside the merged audience states."""
    got = _range(sink, req, clk)
    if got is None:
        return None
    start, end, t = got
    per = (f"SELECT streamer_id, {totals()}, sum(orders_refunded) AS refunds, sum(refund_fen) AS refund_fen "
           f"FROM ({tally_rows('c', t, extra=('orders_refunded', 'refund_fen'))}) WHERE {_WHO} GROUP BY streamer_id")
    sql = (f"SELECT a.*, b.* FROM (SELECT count(), sum(gmv_fen), sum(orders), sum(refunds), sum(refund_fen), "
           f"sum(views), sum(likes), sum(concurrent_viewers) FROM ({per})) AS a "
           f"CROSS JOIN (SELECT toUInt64(uniqExactMerge(viewers)), toUInt64(uniqExactMerge(buyers)) "
           f"FROM ({audience_rows('c', t)}) WHERE {_WHO}) AS b")
    (n, gmv, orders, refunds, refund_fen, views, likes, online, uv, buyers), = sink.rows(
        sql, _params(req, start, end, **tile_params("c", t)))
    gmv, orders, refund_fen, uv, buyers = int(gmv), int(orders), int(refund_fen), int(uv), int(buyers)
    paid = gmv + refund_fen
    aov = half_up(paid, orders) if orders else None
    return {
        **_head(req, start, end),
        "streamers": int(n), "gmv_fen": gmv, "gmv_yuan": yuan(gmv), "paid_fen": paid, "paid_yuan": yuan(paid),
        "orders": orders, "aov_fen": aov, "aov_yuan": None if aov is None else yuan(aov), "buyers": buyers,
        "unique_viewers": uv, "views": int(views), "likes": int(likes), "concurrent_viewers": int(online),
        "refunds": int(refunds), "refund_fen": refund_fen, "refund_yuan": yuan(refund_fen),
        "conversion": conversion(buyers, uv, req.min_audience),
    }


def products(sink: Sink, req: Request, clk: Clock | None = None) -> dict[str, Any] | None:
    """Products of the filter's streamers ranked by ``req.metric`` (gmv, orders or buyers) over
    ``req.time``: what sells, from the order facts (module docstring)."""
    if req.metric not in PRODUCT_METRICS:
        raise BadParameter("metric", f"products are ranked by {', '.join(PRODUCT_METRICS)}; got {req.metric!r}")
    got = _range(sink, req, clk)
    if got is None:
        return None
    start, end, _ = got
    sql = f"""
        SELECT product_id, argMax(category, (ts, category)) AS category,
               countIf(status = 'paid') AS orders, countIf(status = 'refunded') AS refunds,
               toInt64(sumIf(quantity, status = 'paid')) - toInt64(sumIf(quantity, status = 'refunded')) AS items,
               sumIf(amount_fen, status = 'paid') - sumIf(amount_fen, status = 'refunded') AS gmv_fen,
               sumIf(amount_fen, status = 'refunded') AS refund_fen,
               uniqExactIf(viewer_id, status = 'paid') AS buyers, uniqExact(streamer_id) AS streamers
        FROM ({_ORDERS})
        GROUP BY product_id
        ORDER BY {_PRODUCT_SCORE[req.metric]} DESC, product_id
        LIMIT {{limit:UInt32}}
    """
    rows = []
    for i, (pid, cat, orders, refunds, items, gmv, refund_fen, buyers, streamers) in enumerate(
            sink.rows(sql, _params(req, start, end, limit=req.limit))):
        r = {"rank": i + 1, "product_id": pid, "category": cat, "orders": int(orders), "refunds": int(refunds),
             "items": int(items), "gmv_fen": int(gmv), "gmv_yuan": yuan(int(gmv)), "refund_fen": int(refund_fen),
             "buyers": int(buyers), "streamers": int(streamers)}
        r["score"] = r[_PRODUCT_SCORE[req.metric]]
        rows.append(r)
    return {"metric": req.metric, **_head(req, start, end), "rows": rows}


def funnel(sink: Sink, req: Request, clk: Clock | None = None) -> dict[str, Any] | None:
    """Entered -> paid -> repeat for the filter's streamers over ``req.time`` (module docstring), in one
    statement: enters and the viewers' states over the tiles, and the paying viewers from the orders."""
    got = _range(sink, req, clk)
    if got is None:
        return None
    start, end, t = got
    sql = (f"SELECT a.*, b.*, c.* "
           f"FROM (SELECT sum(enters) FROM ({tally_rows('c', t)}) WHERE {_WHO}) AS a "
           f"CROSS JOIN (SELECT toUInt64(uniqExactMerge(viewers)) FROM ({audience_rows('c', t)}) WHERE {_WHO}) AS b "
           f"CROSS JOIN (SELECT count(), sum(n), countIf(n >= 2), sumIf(n, n >= 2) FROM "
           f"(SELECT viewer_id, count() AS n FROM ({_ORDERS}) WHERE status = 'paid' GROUP BY viewer_id)) AS c")
    (views, uv, buyers, orders, repeat, repeat_orders), = sink.rows(
        sql, _params(req, start, end, **tile_params("c", t)))
    stages = [("entered", int(uv), int(views)), ("paid", int(buyers), int(orders)),
              ("repeat", int(repeat), int(repeat_orders))]
    out, before = [], None
    for name, people, count in stages:
        rate = None if before is None or before == 0 else round(people / before, 6)
        out.append({"stage": name, "people": people, "count": count, "rate": rate})
        before = people
    return {**_head(req, start, end), "stages": out}
