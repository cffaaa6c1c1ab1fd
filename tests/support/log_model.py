"""The truth at 10 s resolution from an event log, in plain Python: the input of ``board_oracle``.

Independent of the worker (``core/state.py``) and of the SQL oracle (``verify/oracle.py``): it reads valid event
dicts in log order and applies the contract as written, rule by rule:

* an event's topic is that of its type; the watermark of (topic, streamer) is the highest ``ts`` of the
  earlier *accepted* events of that topic and streamer;
* a view or like is late if ``ts < watermark - lateness``; an order only if ``ts < watermark -
  dedupe horizon`` (money is not dropped for being merely late). A late event has no effect at all;
* every accepted event counts in ``events`` of its window, order duplicates included;
* the audience of a streamer is a running count over its accepted views in log order: +1 per enter, -1
  per leave but never below zero. A window's peak is the highest count after one of its view events,
  its close the count after its last one (in log order); its viewers are those of its enters;
* likes add their count; an order counts on the first accepted occurrence of (order_id, status): paid
  adds an order, items, GMV and a buyer; refunded adds a refund, removes items and GMV.
"""

from __future__ import annotations

from typing import Any, Iterable

from support.leaderboard_data import TOPIC

from streamproc.boards.dimension import Streamer
from streamproc.verify.board_oracle import DIM, Truth
from streamproc.verify.oracle import COLUMNS


def truth_from_events(events: list[dict[str, Any]], dim: Iterable[Streamer], *, lateness_ms: int = 30_000,
                      dedupe_horizon_ms: int = 3_600_000, window_ms: int = 10_000, min_audience: int = 10) -> Truth:
    """The tallies, viewer and buyer sets every window must hold after ``events`` (valid, in log order)."""
    tallies: dict[tuple[int, str], dict[str, int]] = {}
    viewers: dict[tuple[int, str], set[str]] = {}
    buyers: dict[tuple[int, str], set[str]] = {}
    watermark: dict[tuple[str, str], int] = {}
    audience: dict[str, int] = {}
    counted: set[tuple[str, str]] = set()
    for ev in events:
        kind, sid, ts = ev["type"], ev["streamer_id"], ev["ts"]
        wm = watermark.get((TOPIC[kind], sid))
        allowed = dedupe_horizon_ms if kind == "order" else lateness_ms
        if wm is not None and ts < wm - allowed:
            continue
        watermark[(TOPIC[kind], sid)] = ts if wm is None else max(wm, ts)
        key = (ts - ts % window_ms, sid)
        row = tallies.setdefault(key, dict.fromkeys(COLUMNS, 0))
        row["events"] += 1
        if kind == "view":
            _view(row, ev, audience)
            if ev["action"] == "enter":
                viewers.setdefault(key, set()).add(ev["viewer_id"])
        elif kind == "like":
            row["likes"] += ev["count"]
        elif (ev["order_id"], ev["status"]) not in counted:
            counted.add((ev["order_id"], ev["status"]))
            _order(row, ev)
            if ev["status"] == "paid":
                buyers.setdefault(key, set()).add(ev["viewer_id"])
    for key, row in tallies.items():
        row["unique_viewers"] = len(viewers.get(key, ()))
    streamers = {s.streamer_id: {c: getattr(s, c) for c in DIM} for s in dim}
    return Truth(tallies, viewers, buyers, streamers, window_ms, min_audience)


def _view(row: dict[str, int], ev: dict[str, Any], audience: dict[str, int]) -> None:
    """An accepted enter or leave: the running audience, and the window's peak and close after it."""
    sid = ev["streamer_id"]
    first = row["enters"] + row["leaves"] == 0
    if ev["action"] == "enter":
        c = audience[sid] = audience.get(sid, 0) + 1
        row["enters"] += 1
    else:
        c = audience[sid] = max(0, audience.get(sid, 0) - 1)
        row["leaves"] += 1
    row["concurrent_peak"] = c if first else max(row["concurrent_peak"], c)
    row["concurrent_close"] = c


def _order(row: dict[str, int], ev: dict[str, Any]) -> None:
    """The first accepted occurrence of (order_id, status)."""
    if ev["status"] == "paid":
        row["orders_paid"] += 1
        row["items"] += ev["quantity"]
        row["gmv_fen"] += ev["amount_fen"]
    else:
        row["orders_refunded"] += 1
        row["items"] -= ev["quantity"]
        row["gmv_fen"] -= ev["amount_fen"]
        row["refund_fen"] += ev["amount_fen"]
