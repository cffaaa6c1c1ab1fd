"""Parameters of the leaderboard queries, validated once for every front end (API, CLI, change events).

Everything a caller may pass is declared in ``PARAMS`` (name, kind, help), from which the HTTP API checks
requests, the OpenAPI description is written and the CLI takes its flags, so the three cannot drift.
A bad value raises ``BadParameter`` naming the parameter; nothing here touches SQL: values are bound
by the query layer, and the only identifiers (metric, window, level) come from fixed sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping

from streamproc.ingest.events import TS_MAX, TS_MIN
from streamproc.ingest.ids import RULE_TEXT, is_streamer_id
from streamproc.settings import Settings

METRICS = ("gmv", "orders", "views", "unique_viewers", "buyers", "likes", "concurrent_viewers", "conversion")
DEFAULT_MIN_AUDIENCE = Settings.conversion_min_viewers  # unique viewers below which conversion is not shown
WINDOWS = ("1m", "5m", "1h", "today", "session")
PLACES = ("province", "county", "village", "category", "platform")  # filters, and the levels a board groups by
# the columns that name one place of a level (a county is its province and its name)
LEVEL_COLUMNS = {
    "province": ("province",),
    "county": ("province", "county"),
    "village": ("province", "county", "village"),
    "category": ("category",),
    "platform": ("platform",),
}
RISING_BY = ("value", "rank")

MAX_LIMIT = 100
MAX_RANGE_MS = 400 * 86_400_000  # hours live a year; a longer range has nothing to read
MAX_SERIES_MS = 86_400_000  # one point a minute: at most 1,440 points
MAX_SPARK_MIN = 120
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")  # no daylight saving since 1991

# Place names and categories: letters of any script, digits, spaces and a little punctuation. Quotes,
# semicolons, backslashes and control characters are no part of a place name and are refused outright.
_PLACE = re.compile(r"^[\w .·()\-（）]{1,64}$")


class BadParameter(ValueError):
    """A request parameter that cannot be used; ``name`` is the parameter, the message says why."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "enum", "int", "time", "place", "id"
    help: str
    choices: tuple[str, ...] = ()
    lo: int = 0
    hi: int = 0
    default: str | int | None = None


_TIME_HELP = "epoch milliseconds or ISO 8601 (without an offset: Asia/Shanghai time)"
PARAMS: dict[str, Param] = {p.name: p for p in (
    Param("metric", "enum", "what to rank by; buyers = distinct paying viewers; conversion = buyers per unique viewer "
          "(shown only from a minimum audience)", METRICS, default="gmv"),
    Param("window", "enum", "1m, 5m, 1h of event time ending at as_of; today = the Asia/Shanghai calendar day of "
          "as_of; session = each streamer's current live broadcast (leaderboard only)", WINDOWS, default="5m"),
    Param("start", "time", "explicit range start (with end, instead of window); " + _TIME_HELP),
    Param("end", "time", "explicit range end, exclusive; " + _TIME_HELP),
    Param("as_of", "time", "end of the window; default: the end of the newest 10 s window in the data; " + _TIME_HELP),
    Param("province", "place", "only streamers whose province starts with this (陕西 matches 陕西省)"),
    Param("county", "place", "only streamers whose county starts with this"),
    Param("village", "place", "only streamers whose village starts with this"),
    Param("category", "place", "only streamers of this category (fruit, tea, ...)"),
    Param("platform", "place", "only streamers of this platform (taobao, douyin, kuaishou), exactly"),
    Param("streamer_id", "id", "one streamer"),
    Param("limit", "int", f"rows to return, 1..{MAX_LIMIT}", lo=1, hi=MAX_LIMIT, default=10),
    Param("spark", "int", f"add a per-minute sparkline of the board's metric, this many minutes, to each row (0..{MAX_SPARK_MIN})",
          lo=0, hi=MAX_SPARK_MIN, default=0),
    Param("level", "enum", "region level to group by", PLACES, default="county"),
    Param("by", "enum", "rising: rank by growth of the metric value or by places gained", RISING_BY, default="value"),
)}


@dataclass(frozen=True)
class Filters:
    """Who is on a board; empty means no restriction. Places match by prefix, category and platform exactly."""

    province: str = ""
    county: str = ""
    village: str = ""
    category: str = ""
    streamer_id: str = ""
    platform: str = ""

    def params(self) -> dict[str, str]:
        return {"f_province": self.province, "f_county": self.county, "f_village": self.village,
                "f_category": self.category, "f_streamer": self.streamer_id, "f_platform": self.platform}

    @property
    def any_place(self) -> bool:
        return bool(self.province or self.county or self.village or self.category or self.platform)


@dataclass(frozen=True)
class TimeSpec:
    """A named window (ending at ``as_of``) or an explicit [start, end) range; ms since the epoch."""

    window: str = "5m"
    start: int | None = None
    end: int | None = None
    as_of: int | None = None


@dataclass(frozen=True)
class Request:
    metric: str = "gmv"
    time: TimeSpec = field(default_factory=TimeSpec)
    filters: Filters = field(default_factory=Filters)
    limit: int = 10
    spark: int = 0
    level: str = "county"
    by: str = "value"
    min_audience: int = DEFAULT_MIN_AUDIENCE  # a server setting, not a request parameter


def parse_time(name: str, raw: str) -> int:
    """Epoch ms, or ISO 8601; a time without an offset is Asia/Shanghai time."""
    raw = raw.strip()
    if re.fullmatch(r"-?\d{1,16}", raw):
        ms = int(raw)
    else:
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise BadParameter(name, f"{raw[:40]!r} is neither epoch milliseconds nor an ISO 8601 time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=SHANGHAI)
        ms = int(dt.timestamp() * 1000)
    if not TS_MIN <= ms < TS_MAX:
        raise BadParameter(name, "must lie between 2000-01-01 and 2100-01-01")
    return ms


def _check(p: Param, raw: str) -> str | int:
    if p.kind == "enum":
        if raw not in p.choices:
            raise BadParameter(p.name, f"unknown value {raw[:40]!r}; one of {', '.join(p.choices)}")
        return raw
    if p.kind == "int":
        if not re.fullmatch(r"[+-]?\d{1,9}", raw.strip()):
            raise BadParameter(p.name, f"{raw[:40]!r} is not an integer")
        n = int(raw)
        if not p.lo <= n <= p.hi:
            raise BadParameter(p.name, f"must be between {p.lo} and {p.hi}, got {n}")
        return n
    if p.kind == "time":
        return parse_time(p.name, raw)
    if p.kind == "place":
        if not _PLACE.match(raw):
            raise BadParameter(p.name, "must be 1..64 letters, digits, spaces or . · ( ) -")
        return raw
    if not is_streamer_id(raw):  # the rule ingest applies (ingest/ids.py): every stored streamer can be looked up
        raise BadParameter(p.name, RULE_TEXT)
    return raw


def parse(raw: Mapping[str, str], allowed: Iterable[str],
          choices: Mapping[str, tuple[str, ...]] | None = None) -> Request:
    """Validate ``raw`` (query-string values) against the parameters ``allowed`` for one endpoint.

    ``choices`` narrows an enum parameter to the values this endpoint answers (``window=session`` is a
    leaderboard of its own): the API's description lists the same narrowed sets (``web/openapi.py``),
    so what it offers is what passes here.
    """
    allowed = set(allowed)
    for name in raw:
        if name not in allowed:
            raise BadParameter(name, f"unknown parameter; allowed: {', '.join(sorted(allowed))}")
    narrowed = choices or {}
    v = {name: _check(replace(PARAMS[name], choices=narrowed[name]) if name in narrowed else PARAMS[name], value)
         for name, value in raw.items()}
    start, end, as_of = v.get("start"), v.get("end"), v.get("as_of")
    if (start is None) != (end is None):
        raise BadParameter("start" if start is None else "end", "an explicit range needs both start and end")
    if start is not None:
        if "window" in v:
            raise BadParameter("window", "give either window or start and end, not both")
        if as_of is not None:
            raise BadParameter("as_of", "an explicit range has no as_of")
        if end <= start:
            raise BadParameter("end", "must be after start")
        if end - start > MAX_RANGE_MS:
            raise BadParameter("end", f"the range may span at most {MAX_RANGE_MS // 86_400_000} days")
    spec = TimeSpec(v.get("window", PARAMS["window"].default), start, end, as_of)
    filters = Filters(**{k: v[k] for k in (*PLACES, "streamer_id") if k in v})
    # defaults from PARAMS, the table the OpenAPI text is rendered from, so both say the same
    return Request(time=spec, filters=filters,
                   **{k: v.get(k, PARAMS[k].default) for k in ("metric", "limit", "spark", "level", "by")})
