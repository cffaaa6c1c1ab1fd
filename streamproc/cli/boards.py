"""`streamproc leaderboard` and `streamproc streamers load`: the boards in a terminal, the dimension in.

The board comes from the same query layer as the HTTP API: straight from the sink, or, when a running
worker holds the embedded store (chDB allows one process per data path), from that worker's API, which
answers with the same rows. Who holds the store, and at which address its API answers, is read from the
store's lock file (``store_lock``), never guessed from chDB's error text. A readable table by default,
``--json`` for scripts. What cannot be shown (no data, a worker that does not answer) is one line on
stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from streamproc.boards import queries
from streamproc.boards.params import METRICS, PARAMS, PLACES, WINDOWS, BadParameter, parse
from streamproc.boards.queries import yuan
from streamproc.settings import Settings
from streamproc.store import Sink
from streamproc.store.lock import StoreBusy

AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
_QUERY_FLAGS = ("metric", "window", "start", "end", "as_of", *PLACES, "limit")


def add_commands(add: AddCommand, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Register the commands on the main parser (``add`` is cli.build_parser's helper)."""
    lb = add("leaderboard", lambda a: cmd_leaderboard(a, settings_of(a)), "top streamers (or places) by a metric")
    lb.add_argument("--metric", default=PARAMS["metric"].default, choices=METRICS, help=PARAMS["metric"].help)
    lb.add_argument("--window", default=None, choices=WINDOWS, help=PARAMS["window"].help)
    for name in ("start", "end", "as_of", *PLACES):
        lb.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=PARAMS[name].help)
    lb.add_argument("--limit", default="10", help=PARAMS["limit"].help)
    lb.add_argument("--group-by", choices=PLACES, default=None, help="rank places or categories instead of streamers")
    lb.add_argument("--rising", action="store_true", help="streamers that grew most against the previous window")
    lb.add_argument("--json", action="store_true", help="print the board as JSON")
    lb.add_argument("--api", default=None, help="a worker's URL to ask (default: the sink, or the worker holding it)")

    st = add("streamers", lambda a: cmd_streamers(a, settings_of(a)), "manage the streamers dimension")
    st.add_argument("action", choices=["load"], help="load: upsert the rooms of FILE into the store")
    st.add_argument("file", help="CSV with a header, a JSON array or JSON lines: streamer_id, name, platform, "
                                 "province, county, village, category")


class Unavailable(Exception):
    """Why the command cannot do its job, said in one line; the command exits with status 1."""


def _raw_query(args: argparse.Namespace) -> dict[str, str]:
    raw = {k: str(getattr(args, k)) for k in _QUERY_FLAGS if getattr(args, k, None) is not None}
    if args.group_by:
        raw["level"] = args.group_by
    return raw


def _endpoint(args: argparse.Namespace) -> str:
    return "/api/regions" if args.group_by else "/api/rising" if args.rising else "/api/leaderboard"


def fetch_board(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The board, from the sink or (if a worker holds the embedded store, or --api is given) from a worker's API."""
    from streamproc.web.openapi import ENDPOINTS, choices

    raw = _raw_query(args)
    path = _endpoint(args)
    # a bad flag fails here, before anything is opened; the audience rule is the setting, as in the API
    req = dataclasses.replace(parse(raw, ENDPOINTS[path][1], choices(path)), min_audience=settings.conversion_min_viewers)
    if args.api:
        return _from_api(args.api, path, raw, settings.web_token)
    try:
        sink = _open_existing(settings)
    except StoreBusy as busy:
        return _from_holder(busy, settings, path, raw)
    try:
        clk = _data_clock(sink)
        if clk is None:
            raise Unavailable(f"no data in {_where(settings)}")
        fn = queries.regions if args.group_by else queries.rising if args.rising else queries.leaderboard
        return fn(sink, req, clk).to_json()
    finally:
        sink.close()


def _where(settings: Settings) -> str:
    """The store, as a user would look for it."""
    if settings.clickhouse_url:
        return f"{settings.clickhouse_url} (database {settings.clickhouse_database})"
    return str(settings.chdb_path)


def _open(settings: Settings) -> Sink:
    """The sink; StoreBusy if a process of ours holds the embedded store. chDB's own refusal (a process
    holding the path without our lock file, such as ``streamproc clickhouse-server``) becomes one line."""
    from streamproc.store import open_sink

    try:
        return open_sink(settings)
    except RuntimeError as exc:
        first_line = str(exc).partition("\n")[0]
        raise Unavailable(f"cannot open {_where(settings)} ({first_line}); if `streamproc clickhouse-server` "
                          "serves it, reach it with STREAMPROC_CLICKHOUSE_URL") from None


def _open_existing(settings: Settings) -> Sink:
    """The sink, if there is one to read. Reading must not create a store: a mistyped --data-dir would
    otherwise leave an empty one behind and show an empty board as if that were the answer."""
    if not settings.clickhouse_url and not settings.chdb_path.is_dir():
        raise Unavailable(f"no data in {_where(settings)}")
    return _open(settings)


def _data_clock(sink: Sink) -> queries.Clock | None:
    """Where the data stands, or None when there is none: no schema (nothing ever wrote here, and this
    read creates none) or no tallies yet."""
    (tables,), = sink.rows("SELECT count() FROM system.tables WHERE database = {d:String} AND name = 'tallies_clock'",
                           {"d": sink.database})
    if not tables:
        return None
    sink.use_database()
    clk = queries.clock(sink)
    return clk if clk.newest_end else None


def _from_holder(busy: StoreBusy, settings: Settings, path: str, raw: dict[str, str]) -> dict[str, Any]:
    """Ask the API of the process holding the store: at the address it published, else at the settings'."""
    base = busy.holder.get("web") or f"http://{settings.web_host}:{settings.web_port}"
    try:
        return _from_api(base, path, raw, settings.web_token)
    except Unavailable as exc:
        raise Unavailable(f"{busy}; {exc}; give a worker's address with --api URL") from None


def _from_api(base: str, path: str, raw: dict[str, str], token: str) -> dict[str, Any]:
    url = base.rstrip("/") + path + "?" + urllib.parse.urlencode(raw)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        if exc.code == 400:
            raise BadParameter(body.get("parameter", "?"), body.get("error", str(exc))) from None
        raise Unavailable(f"{base} answered {exc.code}: {body.get('error', exc.reason)}") from None
    except OSError as exc:  # refused, unknown host, timed out
        raise Unavailable(f"cannot reach {base}: {getattr(exc, 'reason', exc)}") from None


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _pad(s: str, width: int, right: bool = False) -> str:
    fill = " " * max(0, width - _width(s))
    return fill + s if right else s + fill


def _value(row: dict[str, Any], metric: str) -> str:
    if metric == "gmv":
        whole, _, frac = row["gmv_yuan"].partition(".")
        return f"¥{int(whole):,}.{frac}"
    if metric == "conversion":  # None below STREAMPROC_CONVERSION_MIN_VIEWERS: shown as the page shows it
        return "—" if row["conversion"] is None else f"{row['conversion'] * 100:.1f}%"
    return f"{int(row[metric]):,}"


def _growth(v: float, metric: str) -> str:
    if metric == "gmv":
        return ("+" if v >= 0 else "-") + _value({"gmv_yuan": yuan(abs(int(v)))}, metric)
    return f"{v:+.4f}" if metric == "conversion" else f"{int(v):+,}"


def render(board: dict[str, Any], args: argparse.Namespace) -> str:
    """A plain table: rank, who (or which place), where, the metric; CJK text aligned by display width."""
    metric = board["metric"]
    from datetime import datetime

    from streamproc.boards.params import SHANGHAI

    when = datetime.fromtimestamp(board["end"] / 1000, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"{metric} · {board['window']} · until {when} (Asia/Shanghai)"]
    if args.group_by:
        header = ["#", args.group_by, "streamers", metric]
        cells = [[str(r["rank"]), " ".join(r[c] for c in PLACES if c in r) or "(unknown)",
                  str(r["streamers"]), _value(r, metric)] for r in board["rows"]]
    elif args.rising:
        header = ["#", "streamer", "region", "rank", "places", "growth"]
        cells = [[str(i + 1), r["name"] or r["streamer_id"], " ".join(filter(None, (r["province"], r["county"]))),
                  str(r["rank"]), "new" if r["places_gained"] is None else f"{r['places_gained']:+d}", _growth(r["growth"], metric)]
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


def _fail(command: str, message: object) -> int:
    print(f"streamproc {command}: {message}", file=sys.stderr)
    return 1


def cmd_leaderboard(args: argparse.Namespace, settings: Settings) -> int:
    try:
        board = fetch_board(args, settings)
    except BadParameter as exc:
        print(f"streamproc leaderboard: {exc}", file=sys.stderr)
        return 2
    except Unavailable as exc:
        return _fail("leaderboard", exc)
    print(json.dumps(board, ensure_ascii=False) if args.json else render(board, args))
    return 0


def cmd_streamers(args: argparse.Namespace, settings: Settings) -> int:
    """Load the dimension into the sink. A worker holding the embedded store is not asked to do it: it
    loads STREAMPROC_STREAMERS_FILE at start, which is what the refusal says to use."""
    from streamproc.boards.dimension import DimensionError, load

    try:
        sink = _open(settings)
    except StoreBusy as busy:
        return _fail("streamers load", f"{busy}; stop it and load again, or restart it with "
                                       f"STREAMPROC_STREAMERS_FILE={os.path.abspath(args.file)} to load the file at start")
    except Unavailable as exc:
        return _fail("streamers load", exc)
    try:
        sink.apply_schema()
        n = load(sink, args.file)
    except (DimensionError, OSError) as exc:
        return _fail("streamers load", f"{args.file}: {exc}")
    finally:
        sink.close()
    print(f"loaded {n} streamers from {args.file}", file=sys.stderr)
    return 0
