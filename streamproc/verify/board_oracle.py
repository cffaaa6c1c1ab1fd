"""What every board must say, given the truth at 10 s resolution, and the check of a store against it.

Why: ``verify/oracle.py`` proves that the 10 s tallies equal the event log, but users read boards built from
rollups (``tallies_1m``, ``tallies_1h``), exact audience states (``audience_*``) and the query layer,
and those can be wrong while the 10 s check passes. This module states every board definition a second
time, in plain Python over the 10 s truth (:class:`Truth`), and shares no code with ``boards/queries.py`` or
``boards/rollup.py``: it imports only the request types of ``query_params`` and calls ``queries`` only to get
the answers it compares (in :func:`check_store`).

The definitions (the contract the query layer implements):

* Time. ``as_of`` is rounded up to a multiple of 10 s; by default it is the end of the newest 10 s
  window with a row. ``1m/5m/1h`` are ``[end - length, end)``; ``today`` runs from the Asia/Shanghai
  midnight of ``end - 1`` to ``end``; an explicit range has its start floored, its end ceiled to 10 s.
  A range holds the 10 s windows whose start lies in it.
* A streamer is on a board iff it has a 10 s row in the range. Over the range: sums of ``gmv_fen``
  (paid minus refunded), ``orders_paid``, ``enters`` (views), ``likes``; ``concurrent_viewers`` = the
  ``concurrent_close`` of the latest window with enters + leaves > 0 (0 if none); ``unique_viewers`` and
  ``buyers`` = sizes of the unions of the per-window sets; ``conversion`` = round(buyers / unique
  viewers, 6) from ``min_audience`` unique viewers on (and at least one), else None.
* Ranking: score (the metric's value) descending, then the streamer id (or the group columns)
  ascending; a None conversion ranks after every number.
* Regions sum the per-streamer values of their streamers (``concurrent_viewers`` too) and take the
  union of their viewer and buyer sets; ``streamers`` counts them.
* Session board: a streamer's minutes with rows in the 24 h before ``end``; its broadcast starts at the
  first minute after the last gap of 5 min or more, is live iff its last minute is at or after the start
  of the minute of ``end - 5 min``, and is totalled over ``[start minute, end)``.
* Series: one point per minute ``m`` from the range's floored minute while ``m < end``, over
  ``[m, min(m + 1 min, end))``; per point the sums, the sum over streamers of each one's latest close
  in the point, union sizes, and conversion as above.
* Rising: scores over the range and over the equal range just before it; ranks over every streamer on
  the (filtered) board; ``growth`` = score - previous score. A streamer absent before is ``new``: no
  previous rank, no places gained (both None), previous score 0. ``by=value`` orders by growth;
  ``by=rank`` puts those who gained places first (most first), then the new ones, then those who held
  or lost places (least lost first); both then by rank. A None conversion is a score of 0.0 here.
* Series of one streamer: None if the streamer is neither in the dimension nor has a row in the
  series' range (the API's 404), as for ``streamer()``.
* Rollups: one row per (bucket, streamer) with a 10 s row: sums; ``concurrent_peak`` the max of the
  peaks of windows with enters + leaves > 0, ``concurrent_close`` and ``close_at`` those of the latest
  such window (0 and epoch 0 if none); ``tallies_1h`` holds the hours before the rollup's
  ``hours_upto`` (an hour is rolled once the data has moved past it). Audiences at 10 s / 1 min / 1 h
  are the union sizes.

The cover of :func:`check_store`. Statements are what costs (chDB takes 15-50 ms for one of these
queries, whatever the data size), and one leaderboard query per (as_of, window, filter, metric) would be
4 x 5 x 4 x 8 = 640 calls at the spread points alone. So the stored levels are compared once
(``tallies_10s`` summed over source partitions, ``tallies_1m`` and ``tallies_1h`` in every column,
``audience_10s/1m/1h`` viewers and buyers), and each as_of point asks about 25 calls (about 50
statements), with a rotation so that five consecutive points ask every pair at least once:

* leaderboards: every window (``1m 5m 1h today session``) with one metric each at limit 100, and for
  one window the seven other metrics at limit 10 (which also checks the cut): over five points every
  (window, metric) pair. Filtered by a province prefix, a county and a category taken from the data:
  one window each, over five points every (filter, window) pair;
* region boards by province, county and category: one named window each, over four points every pair;
* rising: one of ``5m 1h today``, by value and by rank alternately;
* four series over ``1h``, for the busiest streamer or for the province: over four points every
  (metric, subject) pair;
* ``streamer()`` for the busiest streamer over one named window, and for an unknown id (with its series);
* the dashboard's answers (summary, products, funnel, sparklines of each metric), restated in
  ``verify/overview_oracle.py``. The filters above include the most common platform.

Every returned row is compared whole (every field the model states; fields it does not, like the
session board's ``session_id``, are not compared), and with it the row count. Measured with chDB on a
2-core machine busy with other work: ``streamproc demo --events 100000 --until-done`` (500 streamers)
checks 93,875 cells with 245 statements in 7.8 s; the 3-hour build_log store of the tests (24
streamers, 25 k events) 178,023 cells with 242 statements in 4.2 s.

Rollup rows (tallies and audiences) that the store itself says are pending (a ``rollup_marks`` write
after the last pass's cursor, for the minute or any minute of the hour) are not compared
(``BoardCheck.skipped``): they are recomputed by the next pass, and the query layer reads around them.
The check assumes a quiescent store: no flush ran during the last rollup pass.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from streamproc.boards import queries
from streamproc.boards.params import (
    DEFAULT_MIN_AUDIENCE,
    LEVEL_COLUMNS,
    MAX_LIMIT,
    PLACES,
    SHANGHAI,
    WINDOWS,
    Filters,
    Request,
    TimeSpec,
)

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
NAMED_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": HOUR_MS}
SESSION_GAP_MS = 5 * MINUTE_MS
SESSION_LOOKBACK_MS = DAY_MS
SH_OFFSET_MS = int(SHANGHAI.utcoffset(None).total_seconds() * 1000)

DIM = ("name", "platform", "province", "county", "village", "category")
# metric -> the row field that is its value (and score)
METRIC_FIELD = {
    "gmv": "gmv_fen", "orders": "orders", "views": "views", "unique_viewers": "unique_viewers",
    "buyers": "buyers", "likes": "likes", "concurrent_viewers": "concurrent_viewers", "conversion": "conversion",
}
METRICS = tuple(METRIC_FIELD)
ROLLUP_SUMS = ("events", "enters", "leaves", "likes", "orders_paid", "orders_refunded", "items", "gmv_fen",
               "refund_fen")
ROLLUP_COLUMNS = (*ROLLUP_SUMS, "concurrent_peak", "concurrent_close", "close_at")
TALLY_COLUMNS = (*ROLLUP_SUMS, "concurrent_peak", "concurrent_close")
ROLLUP_STATE = "default"  # the rollup job's row in rollup_state

Key = tuple[int, str]  # (window or bucket start ms, streamer_id)


@dataclass(eq=False)
class Truth:
    """What the store must hold at 10 s resolution: one ``tallies`` entry per window with an accepted
    event (columns of ``oracle.COLUMNS``), the distinct viewers who entered and the buyers of counted
    paid orders per window, and the streamers dimension (an absent streamer has '' everywhere);
    ``orders``, the counted orders (``overview_oracle.OrderFact``), when known: the products and funnel
    are checked only then."""

    tallies: dict[Key, dict[str, int]]
    viewers: dict[Key, set[str]]
    buyers: dict[Key, set[str]]
    streamers: dict[str, dict[str, str]]
    window_ms: int = 10_000
    min_audience: int = DEFAULT_MIN_AUDIENCE
    orders: tuple[Any, ...] | None = None


@dataclass
class Totals:
    """One streamer's (or a group's) figures over some 10 s windows; sets, so unions stay exact."""

    gmv_fen: int = 0
    orders: int = 0
    views: int = 0
    likes: int = 0
    concurrent_viewers: int = 0
    viewers: set[str] = field(default_factory=set)
    buyers: set[str] = field(default_factory=set)
    streamers: int = 0

    def add_window(self, row: dict[str, int], viewers: Iterable[str], buyers: Iterable[str]) -> None:
        """Windows must come in time order: the latest with a view event sets the audience."""
        self.gmv_fen += row["gmv_fen"]
        self.orders += row["orders_paid"]
        self.views += row["enters"]
        self.likes += row["likes"]
        if row["enters"] + row["leaves"] > 0:
            self.concurrent_viewers = row["concurrent_close"]
        self.viewers.update(viewers)
        self.buyers.update(buyers)

    def add(self, other: "Totals") -> None:
        """Another streamer's totals into a group: audiences at the end add up, viewers unite."""
        self.gmv_fen += other.gmv_fen
        self.orders += other.orders
        self.views += other.views
        self.likes += other.likes
        self.concurrent_viewers += other.concurrent_viewers
        self.viewers |= other.viewers
        self.buyers |= other.buyers
        self.streamers += other.streamers


def yuan(fen: int) -> str:
    """Fen as the exact yuan text boards show: 123456 -> '1234.56', -50 -> '-0.50'."""
    whole, cents = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{whole}.{cents:02d}"


def conversion(buyers: int, unique_viewers: int, min_audience: int) -> float | None:
    """Buyers per unique viewer, shown only from the minimum audience on (and never over nobody)."""
    if unique_viewers == 0 or unique_viewers < min_audience:
        return None
    return round(buyers / unique_viewers, 6)


def values(t: Totals, min_audience: int) -> dict[str, Any]:
    """The metric fields every board row carries."""
    uv, b = len(t.viewers), len(t.buyers)
    return {"gmv_fen": t.gmv_fen, "gmv_yuan": yuan(t.gmv_fen), "orders": t.orders, "views": t.views,
            "likes": t.likes, "concurrent_viewers": t.concurrent_viewers, "unique_viewers": uv, "buyers": b,
            "conversion": conversion(b, uv, min_audience)}


def rank(rows: list[dict[str, Any]], metric: str, tie: Callable[[dict[str, Any]], tuple]) -> list[dict[str, Any]]:
    """Set ``score`` and ``rank``: best first, a None score after every number, then ``tie``."""
    name = METRIC_FIELD[metric]
    for r in rows:
        r["score"] = r[name]
    rows.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0), tie(r)))
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows


def _rolled(rows: list[tuple[int, dict[str, int]]]) -> dict[str, int]:
    """One rollup row from its 10 s windows in time order: the audience figures come from windows that
    had view events, so a bucket's close is not reset by a window of likes only."""
    out = {c: sum(r[c] for _, r in rows) for c in ROLLUP_SUMS}
    seen = [(w, r) for w, r in rows if r["enters"] + r["leaves"] > 0]
    out["concurrent_peak"] = max((r["concurrent_peak"] for _, r in seen), default=0)
    out["concurrent_close"], out["close_at"] = (seen[-1][1]["concurrent_close"], seen[-1][0]) if seen else (0, 0)
    return out


def _ceil(t: int, step: int) -> int:
    return -(-t // step) * step


class Model:
    """The boards of one :class:`Truth`, indexed by streamer; per-range totals are cached, so asking
    many boards over the same range costs one pass over its windows."""

    def __init__(self, truth: Truth) -> None:
        self.truth = truth
        self.min_audience = truth.min_audience
        self.windows: dict[str, list[int]] = {}
        for w, sid in truth.tallies:
            self.windows.setdefault(sid, []).append(w)
        for ws in self.windows.values():
            ws.sort()
        starts = [w for w, _ in truth.tallies]
        self.first = min(starts, default=0)
        self.newest_end = max(starts) + truth.window_ms if starts else 0
        self._totals: dict[tuple[int, int], dict[str, Totals]] = {}

    # -- building blocks -----------------------------------------------------------------------------

    def resolve(self, spec: TimeSpec) -> tuple[int, int]:
        """[start, end) of a named window or an explicit range, in whole 10 s windows."""
        w = self.truth.window_ms
        if spec.start is not None and spec.end is not None:
            return spec.start - spec.start % w, _ceil(spec.end, w)
        end = _ceil(spec.as_of, w) if spec.as_of is not None else self.newest_end
        if spec.window == "today":
            local = end - 1 + SH_OFFSET_MS
            return local - local % DAY_MS - SH_OFFSET_MS, end
        if spec.window == "session":
            return end - SESSION_LOOKBACK_MS, end
        return end - NAMED_MS[spec.window], end

    def windows_in(self, sid: str, start: int, end: int) -> list[int]:
        ws = self.windows.get(sid, [])
        return ws[bisect.bisect_left(ws, start):bisect.bisect_left(ws, end)]

    def streamer_totals(self, sid: str, start: int, end: int) -> Totals | None:
        """None if the streamer has no row in [start, end): it is not on the board."""
        ws = self.windows_in(sid, start, end)
        if not ws:
            return None
        t = Totals(streamers=1)
        for w in ws:
            self._add(t, w, sid)
        return t

    def _add(self, t: Totals, w: int, sid: str) -> None:
        tr = self.truth
        t.add_window(tr.tallies[(w, sid)], tr.viewers.get((w, sid), ()), tr.buyers.get((w, sid), ()))

    def totals(self, start: int, end: int) -> dict[str, Totals]:
        key = (start, end)
        if key not in self._totals:
            got = {sid: self.streamer_totals(sid, start, end) for sid in self.windows}
            self._totals[key] = {sid: t for sid, t in got.items() if t is not None}
        return self._totals[key]

    def dim(self, sid: str) -> dict[str, str]:
        d = self.truth.streamers.get(sid, {})
        return {c: d.get(c, "") for c in DIM}

    def matches(self, sid: str, f: Filters) -> bool:
        """Places match by prefix, the category, platform and streamer id exactly; '' is no filter."""
        d = self.dim(sid)
        return (all(d[p].startswith(getattr(f, p)) for p in ("province", "county", "village"))
                and f.category in ("", d["category"]) and f.platform in ("", d["platform"])
                and f.streamer_id in ("", sid))

    def _row(self, sid: str, t: Totals) -> dict[str, Any]:
        return {"streamer_id": sid, **self.dim(sid), **values(t, self.min_audience)}

    # -- boards ----------------------------------------------------------------------------------------

    def board(self, req: Request) -> list[dict[str, Any]]:
        """Rows of ``queries.leaderboard`` (the session board for ``window=session``)."""
        if req.time.start is None and req.time.window == "session":
            return self.session_board(req)
        start, end = self.resolve(req.time)
        rows = [self._row(sid, t) for sid, t in self.totals(start, end).items() if self.matches(sid, req.filters)]
        return rank(rows, req.metric, lambda r: (r["streamer_id"],))[: req.limit]

    def session_starts(self, end: int, filters: Filters) -> dict[str, int]:
        """streamer -> first minute of its live broadcast at ``end``."""
        live_from = (end - SESSION_GAP_MS) - (end - SESSION_GAP_MS) % MINUTE_MS
        out = {}
        for sid in self.windows:
            if not self.matches(sid, filters):
                continue
            minutes = sorted({w - w % MINUTE_MS for w in self.windows_in(sid, end - SESSION_LOOKBACK_MS, end)})
            if not minutes or minutes[-1] < live_from:
                continue
            began = minutes[0]
            for prev, cur in zip(minutes, minutes[1:]):
                if cur - prev >= SESSION_GAP_MS:
                    began = cur
            out[sid] = began
        return out

    def session_board(self, req: Request) -> list[dict[str, Any]]:
        end = self.resolve(TimeSpec("session", as_of=req.time.as_of))[1]
        rows = []
        for sid, began in self.session_starts(end, req.filters).items():
            t = self.streamer_totals(sid, began, end)
            assert t is not None  # its minutes with rows are in the broadcast
            rows.append({**self._row(sid, t), "session_start": began})
        return rank(rows, req.metric, lambda r: (r["streamer_id"],))[: req.limit]

    def regions(self, req: Request) -> list[dict[str, Any]]:
        """Rows of ``queries.regions``: the board's streamers grouped by place or category."""
        cols = LEVEL_COLUMNS[req.level]
        groups: dict[tuple[str, ...], Totals] = {}
        for sid, t in self.totals(*self.resolve(req.time)).items():
            if self.matches(sid, req.filters):
                d = self.dim(sid)
                groups.setdefault(tuple(d[c] for c in cols), Totals()).add(t)
        rows = [{**dict(zip(cols, k)), "streamers": g.streamers, **values(g, self.min_audience)}
                for k, g in groups.items()]
        return rank(rows, req.metric, lambda r: tuple(r[c] for c in cols))[: req.limit]

    def _scores(self, start: int, end: int, req: Request) -> list[tuple[Any, str]]:
        """(score, streamer) over a range, best first; a None conversion scores 0.0."""
        name = METRIC_FIELD[req.metric]
        got = [(values(t, self.min_audience)[name], sid) for sid, t in self.totals(start, end).items()
               if self.matches(sid, req.filters)]
        scored = [(0.0 if v is None else v, sid) for v, sid in got]
        return sorted(scored, key=lambda x: (-x[0], x[1]))

    def rising(self, req: Request) -> list[dict[str, Any]]:
        """Rows of ``queries.rising``."""
        start, end = self.resolve(req.time)
        cur, prev = self._scores(start, end, req), self._scores(2 * start - end, start, req)
        prev_rank = {sid: i + 1 for i, (_, sid) in enumerate(prev)}
        prev_score = {sid: v for v, sid in prev}
        zero = 0.0 if req.metric == "conversion" else 0
        moves = []
        for i, (v, sid) in enumerate(cur):
            before = prev_score.get(sid, zero)
            was = prev_rank.get(sid)
            moves.append({"streamer_id": sid, "rank": i + 1, "new": was is None, "prev_rank": was,
                          "places_gained": None if was is None else was - (i + 1),
                          "score": v, "prev_score": before, "growth": v - before, **self.dim(sid)})
        if req.by == "value":
            return sorted(moves, key=lambda m: (-m["growth"], m["rank"]))[: req.limit]
        climbed = [m for m in moves if not m["new"] and m["places_gained"] > 0]
        held_or_fell = [m for m in moves if not m["new"] and m["places_gained"] <= 0]
        newcomers = sorted((m for m in moves if m["new"]), key=lambda m: m["rank"])
        by_gain = lambda m: (-m["places_gained"], m["rank"])  # noqa: E731
        return (sorted(climbed, key=by_gain) + newcomers + sorted(held_or_fell, key=by_gain))[: req.limit]

    def series(self, req: Request) -> dict[str, Any] | None:
        """The answer of ``queries.series``: per-minute points, the newest clipped at ``end``; None for an
        unknown streamer."""
        start, end = self.resolve(req.time)
        first = start - start % MINUTE_MS
        sid = req.filters.streamer_id
        if sid and sid not in self.truth.streamers and not self.windows_in(sid, first, end):
            return None
        points: dict[int, Totals] = {}
        for sid in self.windows:
            if not self.matches(sid, req.filters):
                continue
            mine: dict[int, Totals] = {}
            for w in self.windows_in(sid, first, end):
                self._add(mine.setdefault(w - w % MINUTE_MS, Totals(streamers=1)), w, sid)
            for m, t in mine.items():
                points.setdefault(m, Totals()).add(t)
        name = METRIC_FIELD[req.metric]
        return {"metric": req.metric, "start": first, "end": end, "step_ms": MINUTE_MS,
                "points": [[m, values(points.get(m, Totals()), self.min_audience)[name]]
                           for m in range(first, end, MINUTE_MS)]}

    def streamer(self, sid: str, spec: TimeSpec) -> dict[str, Any] | None:
        """The answer of ``queries.streamer`` without ``session_id`` (the truth has no session ids)."""
        start, end = self.resolve(spec)
        t = self.streamer_totals(sid, start, end)
        session_end = self.resolve(TimeSpec("session", as_of=spec.as_of))[1]
        began = self.session_starts(session_end, Filters(streamer_id=sid)).get(sid)
        if t is None and began is None and sid not in self.truth.streamers:
            return None
        live = self.streamer_totals(sid, began, session_end) if began is not None else None
        return {
            "streamer_id": sid, **self.dim(sid),
            "window": {"window": "range" if spec.start is not None else spec.window, "start": start, "end": end,
                       "totals": values(t or Totals(), self.min_audience)},
            "session": None if live is None else {"start": began, "totals": values(live, self.min_audience)},
        }

    # -- stored levels ---------------------------------------------------------------------------------

    def tallies_10s(self) -> dict[Key, dict[str, int]]:
        return {k: {c: row[c] for c in TALLY_COLUMNS} for k, row in self.truth.tallies.items()}

    def rollup(self, bucket_ms: int) -> dict[Key, dict[str, int]]:
        """Rows of ``tallies_1m`` (bucket_ms = 1 min) or ``tallies_1h`` (1 h)."""
        groups: dict[Key, list[tuple[int, dict[str, int]]]] = {}
        for (w, sid), row in sorted(self.truth.tallies.items()):
            groups.setdefault((w - w % bucket_ms, sid), []).append((w, row))
        return {k: _rolled(rows) for k, rows in groups.items()}

    def audience(self, bucket_ms: int) -> dict[Key, tuple[int, int]]:
        """(unique viewers, buyers) per (bucket, streamer) that has any; bucket_ms = the 10 s window for
        ``audience_10s``."""
        sets: dict[Key, tuple[set[str], set[str]]] = {}
        for src, i in ((self.truth.viewers, 0), (self.truth.buyers, 1)):
            for (w, sid), ids in src.items():
                if ids:
                    sets.setdefault((w - w % bucket_ms, sid), (set(), set()))[i].update(ids)
        return {k: (len(v), len(b)) for k, (v, b) in sets.items()}

    def spread_points(self) -> list[int]:
        """as_of points at 1/4, 1/2, 3/4 and the end of the data (1 ms past, unaligned: the query
        layer must round them up to 10 s as the model does)."""
        span = self.newest_end - self.first
        return [self.first + span * k // 4 + 1 for k in (1, 2, 3)] + [self.newest_end - 1]


def expected_board(truth: Truth, req: Request) -> list[dict[str, Any]]:
    """``queries.leaderboard(...).rows`` (``req.min_audience`` is ignored: the truth's is the setting)."""
    return Model(truth).board(req)


def expected_regions(truth: Truth, req: Request) -> list[dict[str, Any]]:
    return Model(truth).regions(req)


def expected_rising(truth: Truth, req: Request) -> list[dict[str, Any]]:
    return Model(truth).rising(req)


def expected_series(truth: Truth, req: Request) -> dict[str, Any]:
    return Model(truth).series(req)


def expected_streamer(truth: Truth, streamer_id: str, spec: TimeSpec) -> dict[str, Any] | None:
    return Model(truth).streamer(streamer_id, spec)


# -- the check -----------------------------------------------------------------------------------------


@dataclass
class BoardCheck:
    """The verdict: ``mismatches`` names the first few differing cells, ``differences`` counts all."""

    mismatches: list[str] = field(default_factory=list)
    differences: int = 0
    checked: int = 0  # cells compared
    skipped: int = 0  # rollup rows pending recomputation, not compared
    calls: int = 0  # query-layer calls
    queries: int = 0  # SQL statements sent to the store
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.differences == 0


class _Counted:
    """The sink as the query layer sees it, counting statements (the budget is in statements)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.statements = 0

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        self.statements += 1
        return self.sink.rows(sql, params)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.statements += 1
        self.sink.command(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)


def _same(expected: Any, actual: Any) -> bool:
    """Equal; floats (conversion) within 1e-9, far below the 6 decimals they are rounded to."""
    if isinstance(expected, float) or isinstance(actual, float):
        return (isinstance(expected, (int, float)) and isinstance(actual, (int, float))
                and abs(expected - actual) <= 1e-9)
    return expected == actual


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


class _Compare:
    """Cell-by-cell comparison, recording the first ``limit`` differences in words."""

    def __init__(self, sink: _Counted, limit: int) -> None:
        self.sink = sink
        self.limit = limit
        self.result = BoardCheck()

    def fail(self, text: str) -> None:
        self.result.differences += 1
        if len(self.result.mismatches) < self.limit:
            self.result.mismatches.append(text)

    def cell(self, where: str, expected: Any, actual: Any) -> None:
        self.result.checked += 1
        if not _same(expected, actual):
            self.fail(f"{where}: expected {expected!r}, actual {actual!r}")

    def record(self, where: str, expected: dict[str, Any], actual: dict[str, Any]) -> None:
        for k, v in expected.items():
            self.cell(f"{where} {k}", v, actual.get(k, MISSING))

    def rows(self, where: str, expected: list[dict[str, Any]], actual: list[dict[str, Any]],
             label: Callable[[dict[str, Any]], str]) -> None:
        self.cell(f"{where}: number of rows", len(expected), len(actual))
        for i, (e, a) in enumerate(zip(expected, actual)):
            self.record(f"{where} row {i + 1} ({label(e)})", e, a)

    def ask(self, where: str, call: Callable[[], Any]) -> Any:
        """The query layer's answer, or MISSING (recorded) if it raised."""
        self.result.calls += 1
        try:
            return call()
        except Exception as exc:  # the check reports every failure as a difference, never stops
            self.fail(f"{where}: raised {type(exc).__name__}: {str(exc)[:200]}")
            return MISSING

    def keyed(self, what: str, expected: dict[Key, Any], actual: dict[Key, Any], skip: set[Key]) -> None:
        """Stored rows keyed by (time, streamer); rows in ``skip`` are pending and not compared."""
        for key in sorted(expected.keys() | actual.keys()):
            if key in skip:
                self.result.skipped += 1
                continue
            e, a = expected.get(key), actual.get(key)
            where = f"{what} [{key[0]} {key[1]}]"
            if e is None or a is None:
                self.cell(f"{where} row", "absent" if e is None else "present", "absent" if a is None else "present")
            elif isinstance(e, dict):
                self.record(where, e, a)
            else:
                self.cell(where, e, a)


# -- reading the stored levels ---------------------------------------------------------------------------


def _read_keyed(sink: Any, sql: str, names: tuple[str, ...]) -> dict[Key, dict[str, int]]:
    return {(int(r[0]), r[1]): dict(zip(names, map(int, r[2:]))) for r in sink.rows(sql)}


def _stored_tallies(sink: Any) -> dict[Key, dict[str, int]]:
    cols = ", ".join(f"toInt64(sum({c}))" for c in TALLY_COLUMNS)
    return _read_keyed(sink, f"SELECT toUnixTimestamp64Milli(window_start), streamer_id, {cols} "
                             "FROM tallies_10s FINAL GROUP BY window_start, streamer_id", TALLY_COLUMNS)


def _stored_rollup(sink: Any, table: str) -> dict[Key, dict[str, int]]:
    cols = ", ".join(f"toInt64({c})" for c in ROLLUP_COLUMNS[:-1])
    return _read_keyed(sink, f"SELECT toInt64(toUnixTimestamp(bucket)) * 1000, streamer_id, {cols}, "
                             f"toUnixTimestamp64Milli(close_at) FROM {table} FINAL", ROLLUP_COLUMNS)


def _stored_audience(sink: Any, table: str, time_ms: str) -> dict[Key, tuple[int, int]]:
    rows = sink.rows(f"SELECT {time_ms} AS t, streamer_id, toInt64(uniqExactMerge(viewers)), "
                     f"toInt64(uniqExactMerge(buyers)) FROM {table} GROUP BY t, streamer_id")
    return {(int(t), sid): (int(v), int(b)) for t, sid, v, b in rows if int(v) or int(b)}


def _pending(sink: Any) -> set[Key]:
    """(minute, streamer) written after the last rollup pass's cursor: its rolled rows may be stale."""
    rows = sink.rows(
        "SELECT DISTINCT toInt64(toUnixTimestamp(minute)) * 1000, streamer_id FROM rollup_marks "
        "WHERE marked_at > (SELECT argMax(cursor, updated_at) FROM rollup_state WHERE name = {n:String})",
        {"n": ROLLUP_STATE})
    return {(int(m), sid) for m, sid in rows}


def _hours_upto(sink: Any) -> int:
    (h,), = sink.rows("SELECT toInt64(argMax(hours_upto, updated_at)) * 1000 FROM rollup_state "
                      "WHERE name = {n:String}", {"n": ROLLUP_STATE})
    return int(h)


def _check_levels(c: _Compare, model: Model) -> None:
    """tallies_10s (summed over source partitions), the rollups and the audiences against the model; a
    level that cannot be read (a table missing) is one difference, and the others are still compared."""
    sink = c.sink
    try:
        pending, hours_upto = _pending(sink), _hours_upto(sink)
    except Exception as exc:
        c.fail(f"rollup_state / rollup_marks: raised {type(exc).__name__}: {str(exc)[:200]}")
        return
    pending_hours = {(m - m % HOUR_MS, sid) for m, sid in pending}
    bucket = "toInt64(toUnixTimestamp(bucket)) * 1000"
    levels: list[tuple[str, Callable[[], dict[Key, Any]], Callable[[], dict[Key, Any]], set[Key]]] = [
        ("tallies_10s", model.tallies_10s, lambda: _stored_tallies(sink), set()),
        ("tallies_1m", lambda: model.rollup(MINUTE_MS), lambda: _stored_rollup(sink, "tallies_1m"), pending),
        ("tallies_1h", lambda: {k: v for k, v in model.rollup(HOUR_MS).items() if k[0] < hours_upto},
         lambda: _stored_rollup(sink, "tallies_1h"), pending_hours),
        ("audience_10s (viewers, buyers)", lambda: model.audience(model.truth.window_ms),
         lambda: _stored_audience(sink, "audience_10s", "toUnixTimestamp64Milli(window_start)"), set()),
        ("audience_1m (viewers, buyers)", lambda: model.audience(MINUTE_MS),
         lambda: _stored_audience(sink, "audience_1m", bucket), pending),
        # rolled by every pass, the current hour too (unions of sets): every hour not pending is compared
        ("audience_1h (viewers, buyers)", lambda: model.audience(HOUR_MS),
         lambda: _stored_audience(sink, "audience_1h", bucket), pending_hours),
    ]
    for name, expected, stored, skip in levels:
        try:
            actual = stored()
        except Exception as exc:
            c.fail(f"{name}: raised {type(exc).__name__}: {str(exc)[:200]}")
            continue
        c.keyed(name, expected(), actual, skip)


# -- asking the query layer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picks:
    """Filters and subjects taken from the data: the most common place, category and platform of the
    streamers with rows, and the streamer with the most rows."""

    province: str
    county: str
    category: str
    streamer: str
    platform: str = ""

    @classmethod
    def of(cls, model: Model) -> "Picks":
        def common(values: Iterable[str]) -> str:
            counts: dict[str, int] = {}
            for v in values:
                counts[v] = counts.get(v, 0) + 1
            return min(counts, key=lambda v: (-counts[v], v)) if counts else ""

        dims = [model.dim(sid) for sid in model.windows]
        busiest = min(model.windows, key=lambda s: (-len(model.windows[s]), s), default="")
        # a prefix: the query layer matches places by prefix (陕西 matches 陕西省)
        return cls(common(d["province"] for d in dims)[:2], common(d["county"] for d in dims),
                   common(d["category"] for d in dims), busiest, platform=common(d["platform"] for d in dims))

    def filters(self) -> dict[str, Filters]:
        return {"province": Filters(province=self.province), "county": Filters(county=self.county),
                "category": Filters(category=self.category), "platform": Filters(platform=self.platform)}


def _label(req: Request) -> str:
    t = req.time
    when = f"as_of={t.as_of}" if t.start is None else f"{t.start}..{t.end}"
    f = req.filters
    where = " ".join(f"{k}={getattr(f, k)}" for k in (*PLACES, "streamer_id") if getattr(f, k))
    return " ".join(x for x in (req.metric, t.window if t.start is None else "range", when, where,
                                f"limit={req.limit}") if x)


def _sid(r: dict[str, Any]) -> str:
    return r["streamer_id"]


PointCheck = Callable[[Any, "int | None", int], None]  # more answers checked at one as_of point


class _Cover:
    """One as_of point's queries (the cover of the module docstring); ``turn`` rotates the metrics."""

    def __init__(self, c: _Compare, model: Model, picks: Picks, clk: Any, extra: Iterable[PointCheck] = ()) -> None:
        self.c, self.model, self.picks, self.clk = c, model, picks, clk
        self.min_audience = model.min_audience
        self.extra = tuple(extra)

    def req(self, metric: str, window: str, as_of: int | None, limit: int = MAX_LIMIT,
            filters: Filters = Filters(), **more: Any) -> Request:
        return Request(metric=metric, time=TimeSpec(window, as_of=as_of), filters=filters, limit=limit,
                       min_audience=self.min_audience, **more)

    def board(self, req: Request) -> None:
        where = f"leaderboard {_label(req)}"
        got = self.c.ask(where, lambda: queries.leaderboard(self.c.sink, req, self.clk))
        if got is not MISSING:
            if req.time.window != "session":
                self.c.record(where, dict(zip(("start", "end"), self.model.resolve(req.time))),
                              {"start": got.start, "end": got.end})
            self.c.rows(where, self.model.board(req), got.rows, _sid)

    def regions(self, req: Request) -> None:
        where = f"regions level={req.level} {_label(req)}"
        got = self.c.ask(where, lambda: queries.regions(self.c.sink, req, self.clk))
        if got is not MISSING:
            cols = LEVEL_COLUMNS[req.level]
            self.c.rows(where, self.model.regions(req), got.rows, lambda r: "/".join(r[k] for k in cols))

    def rising(self, req: Request) -> None:
        where = f"rising by={req.by} {_label(req)}"
        got = self.c.ask(where, lambda: queries.rising(self.c.sink, req, self.clk))
        if got is not MISSING:
            self.c.rows(where, self.model.rising(req), got.rows, _sid)

    def series(self, req: Request) -> None:
        where = f"series {_label(req)}"
        got = self.c.ask(where, lambda: queries.series(self.c.sink, req, self.clk))
        if got is MISSING:
            return
        want = self.model.series(req)
        if want is None or got is None:
            self.c.cell(f"{where}: known", want is not None, got is not None)
            return
        self.c.record(where, {k: v for k, v in want.items() if k != "points"}, got)
        points = got.get("points", [])
        self.c.cell(f"{where}: number of points", len(want["points"]), len(points))
        for (m, v), (am, av) in zip(want["points"], points):
            self.c.cell(f"{where} point {m}: minute", m, am)
            self.c.cell(f"{where} point {m}", v, av)

    def streamer(self, sid: str, spec: TimeSpec) -> None:
        where = f"streamer {sid} {spec.window} as_of={spec.as_of}"
        got = self.c.ask(where, lambda: queries.streamer(self.c.sink, sid, spec, self.clk,
                                                                  min_audience=self.min_audience))
        if got is MISSING:
            return
        want = self.model.streamer(sid, spec)
        if want is None or got is None:
            self.c.cell(f"{where}: known", want is not None, got is not None)
            return
        self.c.record(where, {k: v for k, v in want.items() if k not in ("window", "session")}, got)
        self.c.record(f"{where} window", {k: v for k, v in want["window"].items() if k != "totals"}, got["window"])
        self.c.record(f"{where} window totals", want["window"]["totals"], got["window"].get("totals", {}))
        self.c.cell(f"{where} session: live", want["session"] is not None, got.get("session") is not None)
        if want["session"] is not None and got.get("session") is not None:
            self.c.cell(f"{where} session start", want["session"]["start"], got["session"].get("start"))
            self.c.record(f"{where} session totals", want["session"]["totals"], got["session"].get("totals", {}))

    def at(self, as_of: int | None, turn: int) -> None:
        """The boards of one as_of point; ``turn`` picks this point's share of the rotation, so that five
        consecutive turns ask every pair of the module docstring at least once."""
        def metric(k: int) -> str:
            return METRICS[(turn + k) % len(METRICS)]

        sweep = WINDOWS[turn % len(WINDOWS)]
        for wi, window in enumerate(WINDOWS):
            self.board(self.req(metric(wi), window, as_of))
            if window == sweep:
                for m in METRICS:
                    if m != metric(wi):
                        self.board(self.req(m, window, as_of, limit=10))
        for fi, f in enumerate(self.picks.filters().values()):
            self.board(self.req(metric(fi + 3), WINDOWS[(turn + fi + 1) % len(WINDOWS)], as_of, filters=f))
        named = [w for w in WINDOWS if w != "session"]
        for li, level in enumerate(("province", "county", "category", "platform")):
            self.regions(self.req(metric(li + 5), named[(turn + li) % len(named)], as_of, level=level))
        self.rising(self.req(metric(2), ("5m", "1h", "today")[turn % 3], as_of, by=("value", "rank")[turn % 2]))
        subjects = (Filters(streamer_id=self.picks.streamer), Filters(province=self.picks.province))
        for i in range(4):
            self.series(self.req(METRICS[(4 * turn + i) % len(METRICS)], "1h", as_of,
                                 filters=subjects[(i + turn // 2) % 2]))
        self.streamer(self.picks.streamer, TimeSpec(named[turn % len(named)], as_of=as_of))
        if turn % len(named) == 0:
            self.streamer("no-such-streamer", TimeSpec("5m", as_of=as_of))
            self.series(self.req("gmv", "1h", as_of, filters=Filters(streamer_id="no-such-streamer")))
        for check in self.extra:  # answers restated in modules built on this one (verify/exact.py)
            check(self, as_of, turn)


def check_store(sink: Any, truth: Truth, *, as_of_points: list[int | None] | None = None, min_audience: int,
                max_mismatches: int = 20, rotate: int = 0, extra: Iterable[PointCheck] = ()) -> BoardCheck:
    """Compare a store with ``truth``: its stored levels, then the query layer's boards at each as_of of
    ``as_of_points`` (None: the default as_of; by default the default as_of, then 1/4, 1/2, 3/4 and the
    end of the data).

    ``min_audience`` is the conversion minimum the query layer is asked with (the store's setting,
    ``Settings.conversion_min_viewers``); the model uses it in place of ``truth.min_audience``.
    ``rotate`` shifts the rotation of the cover: a caller checking one point per store (the property
    test) varies it, so that its examples together ask every pair. ``extra`` checks more answers at
    each point (``extra(cover, as_of, turn)``); ``verify/exact.py`` adds the dashboard's.
    """
    started = time.perf_counter()
    model = Model(replace(truth, min_audience=min_audience))
    c = _Compare(_Counted(sink), max_mismatches)
    _check_levels(c, model)
    clk = c.ask("clock", lambda: queries.clock(c.sink))
    if clk is not MISSING:
        c.cell("clock newest_end", model.newest_end, clk.newest_end)
        cover = _Cover(c, model, Picks.of(model), clk, extra)
        points = [None, *model.spread_points()] if as_of_points is None else as_of_points
        for turn, as_of in enumerate(points, start=rotate):
            cover.at(as_of, turn)
    c.result.queries = c.sink.statements
    c.result.seconds = round(time.perf_counter() - started, 3)
    return c.result
