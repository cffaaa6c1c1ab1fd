"""What a value on a board is: each metric's score in SQL, the dimension join and place filter,
conversion and money. A fixed whitelist: the only identifiers that vary in the SQL come from here.
"""

from __future__ import annotations

import orjson

from streamproc.boards.params import METRICS
from streamproc.store import Sink

# metric -> its score over the per-streamer aggregate t (and u, the audience); a fixed whitelist
# metric -> its score over the per-streamer aggregate t (and u, the audience); a fixed whitelist
_CONVERSION = ("if(u.unique_viewers >= greatest({min_audience:UInt32}, 1), "
               "round(u.buyers / u.unique_viewers, 6), -1.)")


SCORE = {
    "gmv": "t.gmv_fen",
    "orders": "t.orders",
    "views": "t.views",
    "likes": "t.likes",
    "concurrent_viewers": "t.concurrent_viewers",
    "unique_viewers": "u.unique_viewers",
    "buyers": "u.buyers",
    "conversion": _CONVERSION,
}


NEEDS_AUDIENCE = {"unique_viewers", "buyers", "conversion"}



assert set(SCORE) == set(METRICS)


DIM = ("name", "platform", "province", "county", "village", "category")


PLACE_FILTER = (
    "({f_province:String} = '' OR startsWith(s.province, {f_province:String})) AND "
    "({f_county:String} = '' OR startsWith(s.county, {f_county:String})) AND "
    "({f_village:String} = '' OR startsWith(s.village, {f_village:String})) AND "
    "({f_category:String} = '' OR s.category = {f_category:String}) AND "
    "({f_platform:String} = '' OR s.platform = {f_platform:String})"
)


STREAMERS = "(SELECT streamer_id, " + ", ".join(DIM) + " FROM streamers FINAL)"


def ids_param(ids: list[str]) -> str:
    """A list of ids as one bound JSON string (read back with JSONExtract): the same for every driver."""
    return orjson.dumps(ids).decode()


def conversion(buyers: int, unique_viewers: int, min_audience: int) -> float | None:
    """Buyers per unique viewer, or None below the minimum audience: one viewer and one buyer is no
    100 % conversion worth ranking."""
    return round(buyers / unique_viewers, 6) if unique_viewers >= max(min_audience, 1) else None


def yuan(fen: int) -> str:
    """Fen as an exact yuan string: 123456 -> '1234.56' (money is never a float here)."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def dimension_of(sink: Sink, ids: list[str]) -> dict[str, dict[str, str]]:
    if not ids:
        return {}
    rows = sink.rows(f"SELECT streamer_id, {', '.join(DIM)} FROM streamers FINAL WHERE has(JSONExtract({{ids:String}}, 'Array(String)'), streamer_id)",
                     {"ids": ids_param(ids)})
    return {r[0]: dict(zip(DIM, r[1:])) for r in rows}
