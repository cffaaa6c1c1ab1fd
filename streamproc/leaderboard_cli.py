"""`streamproc leaderboard` and `streamproc streamers load`: the boards in a terminal, the dimension in.

The board comes from the same query layer as the HTTP API: straight from the sink, or, when a running
worker holds the embedded store (chDB allows one process per data path), from that worker's API, which
answers with the same rows. A readable table by default, ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from .queries import yuan
from .query_params import METRICS, PARAMS, PLACES, WINDOWS, BadParameter, parse
from .settings import Settings

AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
_QUERY_FLAGS = ("metric", "window", "start", "end", "as_of", *PLACES, "limit")


def add_commands(add: AddCommand, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Register the commands on the main parser (``add`` is cli.build_parser's helper)."""
    lb = add("leaderboard", lambda a: cmd_leaderboard(a, settings_of(a)), "top streamers (or places) by a metric")
    lb.add_argument("--metric", default="gmv", choices=METRICS)
    lb.add_argument("--window", default=None, choices=WINDOWS, help=PARAMS["window"].help)
    for name in ("start", "end", "as_of", *PLACES):
        lb.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=PARAMS[name].help)
    lb.add_argument("--limit", default="10", help=PARAMS["limit"].help)
    lb.add_argument("--group-by", choices=PLACES, default=None, help="rank places or categories instead of streamers")
    lb.add_argument("--rising", action="store_true", help="streamers that grew most against the previous window")
    lb.add_argument("--json", action="store_true", help="print the board as JSON")
    lb.add_argument("--api", default=None, help="a worker's URL to ask (default: the sink, else the local worker)")

    st = add("streamers", lambda a: cmd_streamers(a, settings_of(a)), "manage the streamers dimension")
    st.add_argument("action", choices=["load"])
    st.add_argument("file", help="CSV with a header, a JSON array or JSON lines: streamer_id, name, platform, "
                                 "province, county, village, category")


def _raw_query(args: argparse.Namespace) -> dict[str, str]:
    raw = {k: str(getattr(args, k)) for k in _QUERY_FLAGS if getattr(args, k, None) is not None}
    if args.group_by:
        raw["level"] = args.group_by
    return raw


def _endpoint(args: argparse.Namespace) -> str:
    return "/api/regions" if args.group_by else "/api/rising" if args.rising else "/api/leaderboard"


def fetch_board(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The board, from the sink or (if a worker holds it, or --api is given) from the worker's API."""
    from .api_spec import ENDPOINTS

    raw = _raw_query(args)
    path = _endpoint(args)
    req = parse(raw, ENDPOINTS[path][1])  # a bad flag fails here, before anything is opened
    if args.api:
        return _from_api(args.api, path, raw)
    from . import queries
    from .sink import open_sink

    try:
        sink = open_sink(settings)
    except RuntimeError as exc:
        if "Cannot lock" not in str(exc):
            raise
        return _from_api(f"http://{settings.web_host}:{settings.web_port}", path, raw)
    try:
        sink.apply_schema()  # a store no worker has written yet: empty boards, not an error
        fn = queries.regions if args.group_by else queries.rising if args.rising else queries.leaderboard
        return fn(sink, req).to_json()
    finally:
        sink.close()


def _from_api(base: str, path: str, raw: dict[str, str]) -> dict[str, Any]:
    url = base.rstrip("/") + path + "?" + urllib.parse.urlencode(raw)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        raise BadParameter(body.get("parameter", "?"), body.get("error", str(exc))) from None


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _pad(s: str, width: int, right: bool = False) -> str:
    fill = " " * max(0, width - _width(s))
    return fill + s if right else s + fill


def _value(row: dict[str, Any], metric: str) -> str:
    if metric == "gmv":
        whole, _, frac = row["gmv_yuan"].partition(".")
        return f"¥{int(whole):,}.{frac}"
    if metric == "conversion":
        return f"{row['conversion'] * 100:.1f}%"
    return f"{int(row[metric]):,}"


def _growth(v: float, metric: str) -> str:
    if metric == "gmv":
        return ("+" if v >= 0 else "-") + _value({"gmv_yuan": yuan(abs(int(v)))}, metric)
    return f"{v:+.4f}" if metric == "conversion" else f"{int(v):+,}"


def render(board: dict[str, Any], args: argparse.Namespace) -> str:
    """A plain table: rank, who (or which place), where, the metric; CJK text aligned by display width."""
    metric = board["metric"]
    from datetime import datetime

    from .query_params import SHANGHAI

    when = datetime.fromtimestamp(board["end"] / 1000, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"{metric} · {board['window']} · until {when} (Asia/Shanghai)"]
    if args.group_by:
        header = ["#", args.group_by, "streamers", metric]
        cells = [[str(r["rank"]), " ".join(r[c] for c in PLACES if c in r) or "(unknown)",
                  str(r["streamers"]), _value(r, metric)] for r in board["rows"]]
    elif args.rising:
        header = ["#", "streamer", "region", "rank", "places", "growth"]
        cells = [[str(i + 1), r["name"] or r["streamer_id"], " ".join(filter(None, (r["province"], r["county"]))),
                  str(r["rank"]), f"{r['places_gained']:+d}", _growth(r["growth"], metric)]
                 for i, r in enumerate(board["rows"])]
    else:
        header = ["#", "streamer", "id", "region", "category", metric]
        cells = [[str(r["rank"]), r["name"] or "", r["streamer_id"],
                  " ".join(filter(None, (r["province"], r["county"], r["village"]))), r["category"], _value(r, metric)]
                 for r in board["rows"]]
    widths = [max(_width(x) for x in col) for col in zip(header, *cells)]
    numeric = {0, len(header) - 1} | ({2} if args.group_by else set())
    for row in [header, *cells]:
        lines.append("  ".join(_pad(x, w, i in numeric) for i, (x, w) in enumerate(zip(row, widths))).rstrip())
    if not cells:
        lines.append("(no data in this window)")
    return "\n".join(lines)


def cmd_leaderboard(args: argparse.Namespace, settings: Settings) -> int:
    try:
        board = fetch_board(args, settings)
    except BadParameter as exc:
        print(f"streamproc leaderboard: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(board, ensure_ascii=False) if args.json else render(board, args))
    return 0


def cmd_streamers(args: argparse.Namespace, settings: Settings) -> int:
    from .sink import open_sink
    from .streamers_dim import DimensionError, load

    try:
        sink = open_sink(settings)
    except RuntimeError as exc:
        if "Cannot lock" in str(exc):
            print("streamproc streamers load: a running worker holds the embedded store; stop it, or let it load the "
                  "file at start (STREAMPROC_STREAMERS_FILE), or share the store (streamproc clickhouse-server)",
                  file=sys.stderr)
            return 1
        raise
    try:
        sink.apply_schema()
        n = load(sink, args.file)
    except (DimensionError, OSError) as exc:
        print(f"streamproc streamers load: {args.file}: {exc}", file=sys.stderr)
        return 1
    finally:
        sink.close()
    print(f"loaded {n} streamers from {args.file}", file=sys.stderr)
    return 0
