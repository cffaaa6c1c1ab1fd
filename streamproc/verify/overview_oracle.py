"""The dashboard's answers restated over the log's truth, and their part of the board check.

Why: the page opens with totals (``/api/summary``), products (``/api/products``), a funnel
(``/api/funnel``) and per-row sparklines of the chosen metric, and an operator acts on them, so they must
be as exact as the boards. ``board_oracle`` states the boards over the 10 s truth; this module states
these answers a second time, in plain Python, over the same truth plus the log's counted orders
(:class:`OrderFact`, from ``oracle.expected_orders``), and ``exact.check_store`` asks the query layer
for them at every as_of point (:func:`check_point`). Like ``board_oracle`` it shares no code with
``boards/`` (it imports only the request types, and ``queries`` to get the answers it compares).

The definitions (the contract ``boards/overview.py`` and ``boards/series.py`` implement):

* Range, filters, the streamers on a board and their totals: as in ``board_oracle``.
* Summary: over the board's streamers, ``streamers`` (their number); sums of ``gmv_fen``, ``orders``,
  ``views``, ``likes``, ``concurrent_viewers`` and, from their windows, ``refunds`` (orders refunded) and
  ``refund_fen``; ``paid_fen`` = gmv + refunds' amount; ``aov_fen`` = paid_fen / orders rounded half up
  (None without orders); ``buyers`` and ``unique_viewers`` = sizes of the unions over the streamers;
  ``conversion`` as on the boards; the ``_yuan`` texts of each amount.
* Products: the counted orders whose 10 s window lies in the range, of streamers that match the filter,
  by product: paid ``orders``, ``refunds``, ``items`` (paid minus refunded quantity), ``gmv_fen`` (paid
  minus refunded amount), ``refund_fen``, ``buyers`` (viewers of its paid orders), ``streamers`` (with any
  order of it), ``category`` of the greatest (ts, category); ranked by the metric's field descending, then
  product id; ``score`` is that field.
* Funnel: ``entered`` = union of the board's viewers (count: their enters); ``paid`` = viewers with a
  paid order in the range (count: those orders); ``repeat`` = viewers with two or more (count: their
  orders); ``rate`` = people / the previous stage's people, rounded to 6 places, None if that is 0.
* Sparkline of a board row: the streamer's series of the board's metric from the minute ``minutes - 1``
  before the minute holding ``end - 1`` up to ``end`` (one value per minute, the newest clipped at end).
"""

from __future__ import annotations

from fractions import Fraction
from math import floor
from typing import Any, NamedTuple

from streamproc.boards import queries
from streamproc.boards.params import WINDOWS, Filters, Request, TimeSpec
from streamproc.verify.board_oracle import METRICS, MINUTE_MS, MISSING, Model, conversion, yuan

SPARK_MINUTES = 30  # what the page asks for
PRODUCT_METRICS = {"gmv": "gmv_fen", "orders": "orders", "buyers": "buyers"}  # metric -> the field ranked by
NAMED = tuple(w for w in WINDOWS if w != "session")


class OrderFact(NamedTuple):
    """One counted order: the first accepted occurrence of its (order_id, status)."""

    ts: int
    streamer_id: str
    viewer_id: str
    product_id: str
    category: str
    status: str
    quantity: int
    amount_fen: int


def _head(model: Model, req: Request) -> tuple[int, int, dict[str, Any]]:
    start, end = model.resolve(req.time)
    label = "range" if req.time.start is not None else req.time.window
    return start, end, {"window": label, "start": start, "end": end, "as_of": end}


def unknown(model: Model, req: Request) -> bool:
    """A request about one streamer that is in neither the dimension nor the range's data: no answer."""
    sid = req.filters.streamer_id
    start, end = model.resolve(req.time)
    return bool(sid) and sid not in model.truth.streamers and not model.windows_in(sid, start, end)


def summary(model: Model, req: Request) -> dict[str, Any] | None:
    """The answer of ``queries.summary``."""
    if unknown(model, req):
        return None
    start, end, head = _head(model, req)
    n = gmv = orders = views = likes = online = refunds = refund_fen = 0
    viewers: set[str] = set()
    buyers: set[str] = set()
    for sid, t in model.totals(start, end).items():
        if not model.matches(sid, req.filters):
            continue
        n += 1
        gmv, orders, views, likes, online = (gmv + t.gmv_fen, orders + t.orders, views + t.views,
                                             likes + t.likes, online + t.concurrent_viewers)
        viewers |= t.viewers
        buyers |= t.buyers
        for w in model.windows_in(sid, start, end):
            row = model.truth.tallies[(w, sid)]
            refunds += row["orders_refunded"]
            refund_fen += row["refund_fen"]
    paid = gmv + refund_fen
    aov = floor(Fraction(paid, orders) + Fraction(1, 2)) if orders else None
    return {**head, "streamers": n, "gmv_fen": gmv, "gmv_yuan": yuan(gmv), "paid_fen": paid, "paid_yuan": yuan(paid),
            "orders": orders, "aov_fen": aov, "aov_yuan": None if aov is None else yuan(aov),
            "buyers": len(buyers), "unique_viewers": len(viewers), "views": views, "likes": likes,
            "concurrent_viewers": online, "refunds": refunds, "refund_fen": refund_fen, "refund_yuan": yuan(refund_fen),
            "conversion": conversion(len(buyers), len(viewers), model.min_audience)}


def _orders_in(model: Model, req: Request, start: int, end: int) -> list[OrderFact]:
    w = model.truth.window_ms
    facts: tuple[OrderFact, ...] = getattr(model.truth, "orders", None) or ()
    return [f for f in facts if start <= f.ts - f.ts % w < end and model.matches(f.streamer_id, req.filters)]


def products(model: Model, req: Request) -> list[dict[str, Any]]:
    """Rows of ``queries.products`` (of a known streamer, if one is named)."""
    start, end, _ = _head(model, req)
    groups: dict[str, dict[str, Any]] = {}
    for f in _orders_in(model, req, start, end):
        g = groups.setdefault(f.product_id, {"orders": 0, "refunds": 0, "items": 0, "gmv_fen": 0, "refund_fen": 0,
                                             "buyers": set(), "streamers": set(), "latest": (-1, "")})
        paid = f.status == "paid"
        g["orders" if paid else "refunds"] += 1
        g["items"] += f.quantity if paid else -f.quantity
        g["gmv_fen"] += f.amount_fen if paid else -f.amount_fen
        if paid:
            g["buyers"].add(f.viewer_id)
        else:
            g["refund_fen"] += f.amount_fen
        g["streamers"].add(f.streamer_id)
        g["latest"] = max(g["latest"], (f.ts, f.category))
    rows = [{"product_id": pid, "category": g["latest"][1], "orders": g["orders"], "refunds": g["refunds"],
             "items": g["items"], "gmv_fen": g["gmv_fen"], "gmv_yuan": yuan(g["gmv_fen"]), "refund_fen": g["refund_fen"],
             "buyers": len(g["buyers"]), "streamers": len(g["streamers"])} for pid, g in groups.items()]
    field = PRODUCT_METRICS[req.metric]
    rows.sort(key=lambda r: (-r[field], r["product_id"]))
    for i, r in enumerate(rows):
        r["rank"], r["score"] = i + 1, r[field]
    return rows[: req.limit]


def funnel(model: Model, req: Request) -> dict[str, Any] | None:
    """The answer of ``queries.funnel``."""
    if unknown(model, req):
        return None
    start, end, head = _head(model, req)
    viewers: set[str] = set()
    views = 0
    for sid, t in model.totals(start, end).items():
        if model.matches(sid, req.filters):
            viewers |= t.viewers
            views += t.views
    paid: dict[str, int] = {}
    for f in _orders_in(model, req, start, end):
        if f.status == "paid":
            paid[f.viewer_id] = paid.get(f.viewer_id, 0) + 1
    repeat = [n for n in paid.values() if n >= 2]
    people = [("entered", len(viewers), views), ("paid", len(paid), sum(paid.values())), ("repeat", len(repeat), sum(repeat))]
    stages = []
    for i, (name, n, count) in enumerate(people):
        before = people[i - 1][1] if i else 0
        stages.append({"stage": name, "people": n, "count": count, "rate": round(n / before, 6) if before else None})
    return {**head, "stages": stages}


def spark(model: Model, sid: str, metric: str, end: int, minutes: int) -> list[Any]:
    """A board row's sparkline: the streamer's per-minute series ending with the minute of ``end - 1``."""
    last = (end - 1) - (end - 1) % MINUTE_MS
    first = last - (minutes - 1) * MINUTE_MS
    req = Request(metric=metric, time=TimeSpec(start=first, end=end), filters=Filters(streamer_id=sid))
    got = model.series(req)
    if got is None:  # no dimension row and no data in these minutes: the row's sparkline is still drawn, empty
        return [None if metric == "conversion" else 0] * len(range(first, end, MINUTE_MS))
    return [v for _, v in got["points"]]


def _label(req: Request) -> str:
    t, f = req.time, req.filters
    where = " ".join(f"{k}={getattr(f, k)}" for k in ("province", "county", "village", "category", "platform",
                                                     "streamer_id") if getattr(f, k))
    return " ".join(x for x in (req.metric, t.window, f"as_of={t.as_of}", where, f"limit={req.limit}") if x)


def _known_alike(c: Any, where: str, unknown_to_model: bool, got: Any) -> bool:
    """True when both sides have an answer to compare; else records whether both agree that the streamer
    asked for is unknown (a picked streamer may have no data at an early as_of, and no dimension row)."""
    if unknown_to_model or got is None:
        c.cell(f"{where}: known", not unknown_to_model, got is not None)
        return False
    return True


def check_point(cover: Any, as_of: int | None, turn: int) -> None:
    """This module's share of one as_of point of ``exact.check_store`` (``cover`` is its ``_Cover``):
    the summary unfiltered and under one filter, products, the funnel, and two boards with sparklines.
    The filters (the picks of the data, platform included, and the busiest streamer) and metrics
    rotate with ``turn``, so five consecutive points ask every product metric, every filter for the
    summary, and every board metric's sparkline; products and the funnel need the log's order facts
    and are skipped for a truth without them."""
    c, model = cover.c, cover.model
    subjects = [Filters(), *cover.picks.filters().values(), Filters(streamer_id=cover.picks.streamer)]
    has_orders = getattr(model.truth, "orders", None) is not None

    for i, f in enumerate((Filters(), subjects[1 + turn % (len(subjects) - 1)])):
        req = cover.req("gmv", NAMED[(turn + i) % len(NAMED)], as_of, filters=f)
        where = f"summary {_label(req)}"
        got = c.ask(where, lambda: queries.summary(c.sink, req, cover.clk))
        if got is not MISSING and _known_alike(c, where, unknown(model, req), got):
            c.record(where, summary(model, req), got)
    if turn % 4 == 0:  # an id nobody has: no answer, never a strip of zeros
        req = cover.req("gmv", "5m", as_of, filters=Filters(streamer_id="no-such-streamer"))
        for name in ("summary", "funnel"):
            got = c.ask(f"{name} {_label(req)}", lambda: getattr(queries, name)(c.sink, req, cover.clk))
            if got is not MISSING:
                c.cell(f"{name} {_label(req)}: known", False, got is not None)
    if has_orders:
        metric = tuple(PRODUCT_METRICS)[turn % len(PRODUCT_METRICS)]
        req = cover.req(metric, NAMED[(turn + 1) % len(NAMED)], as_of, limit=(100, 10)[turn % 2],
                        filters=subjects[turn % len(subjects)])
        where = f"products {_label(req)}"
        got = c.ask(where, lambda: queries.products(c.sink, req, cover.clk))
        if got is not MISSING and _known_alike(c, where, unknown(model, req), got):
            _, _, head = _head(model, req)
            c.record(where, {"metric": metric, **head}, got)
            c.rows(where, products(model, req), got.get("rows", []), lambda r: r["product_id"])
        req = cover.req("gmv", NAMED[(turn + 2) % len(NAMED)], as_of, filters=subjects[(turn + 1) % len(subjects)])
        where = f"funnel {_label(req)}"
        got = c.ask(where, lambda: queries.funnel(c.sink, req, cover.clk))
        if got is not MISSING and _known_alike(c, where, unknown(model, req), got):
            want = funnel(model, req)
            c.record(where, {k: v for k, v in want.items() if k != "stages"}, got)
            c.rows(where, want["stages"], got.get("stages", []), lambda r: r["stage"])
    for k in range(2):
        metric = METRICS[(2 * turn + k) % len(METRICS)]
        req = cover.req(metric, WINDOWS[(turn + 3 * k) % len(WINDOWS)], as_of, limit=10, spark=SPARK_MINUTES)
        where = f"leaderboard spark {_label(req)}"
        got = c.ask(where, lambda: queries.leaderboard(c.sink, req, cover.clk))
        if got is MISSING:
            continue
        c.rows(where, model.board(req), got.rows, lambda r: r["streamer_id"])
        for i, row in enumerate(got.rows):
            want = spark(model, row["streamer_id"], metric, got.end, SPARK_MINUTES)
            have = row.get("spark", [])
            c.cell(f"{where} row {i + 1} ({row['streamer_id']}) spark: number of points", len(want), len(have))
            last = (got.end - 1) - (got.end - 1) % MINUTE_MS
            for j, (e, a) in enumerate(zip(want, have)):
                c.cell(f"{where} row {i + 1} ({row['streamer_id']}) spark minute "
                       f"{last - (len(want) - 1 - j) * MINUTE_MS}", e, a)
