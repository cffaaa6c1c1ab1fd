"""The reconciliation oracle: what the tallies of a recorded log must be, computed without the worker.

``streamproc reconcile --log FILE`` proves that the tallies the worker wrote to ClickHouse equal a batch
computation over the same recorded log. That proof is only worth something if the batch side shares no
code with the worker, so nothing here imports the worker, ``events.decode`` or ``logfile.read_log``:
the log is read by ClickHouse itself (the ``file()`` table function, JSONEachRow) and every rule of
``ingest/events.py`` -- validation in its exact check order, lateness, windows, order dedupe, concurrency,
unique viewers -- is restated in SQL. The field table below is a second, hand-written statement of
``events.FIELDS``; the test suite checks the two implementations against each other record by record.

Matching ``orjson`` (what ``events.decode`` parses with) byte for byte needs a few corrections on top
of ClickHouse's JSON functions (simdjson). Each was found by differential testing and is pinned by a
test:

* simdjson skips a leading UTF-8 BOM; orjson rejects it.
* An integer literal that does not fit 64 bits is a float to orjson, but simdjson (as ClickHouse uses
  it) hands it back as a *string*; and an integer literal too large for a double (309+ digits) is an
  error to orjson ("infinity") but again a string to simdjson. Both are found on a copy of the value whose string literals
  are blanked, so digits inside strings never count.
* simdjson's depth limit counts scalar leaves as a level, orjson's counts containers only, so a value
  nested exactly 1024 containers deep with something inside the deepest one is valid JSON to orjson
  but not to simdjson. Such a value is re-checked (and its fields read) on a copy whose innermost
  containers are replaced by ``[]``, which lowers the depth by one without changing validity.
* Duplicate keys: orjson keeps the last value, ClickHouse's key lookup the first, so fields are looked
  up by the index of the last member with that key.

One difference is not corrected, because it cannot be: the streamer id rule ("letters") is judged with
RE2's Unicode tables here and Python's in the worker. RE2 in chDB 26.9 knows Unicode 15.1, Python 3.11
knows 14.0, so an id with a letter encoded since (5,032 code points, CJK Extensions H and I among them)
is refused by the worker and accepted here, and the reconcile reports that as the mismatch it is
(``tests/unit/test_ids.py`` pins the difference to exactly those code points).

Rows come back in file order because every row carries ``_row_number`` (the file() virtual column) and
the queries also run with ``max_threads=1`` and ``input_format_parallel_parsing=0``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

import orjson

from streamproc.settings import Settings
from streamproc.store.chdb import bind

Query = Callable[[str, "dict[str, Any] | None"], "list[tuple]"]
"""Runs one SQL statement with ``{name:Type}`` bound parameters and returns its rows as tuples.

The caller creates it (``chdb_query`` for embedded chDB, or a wrapper around a ClickHouse client),
because chDB allows one open data path per process: the oracle must share whatever connection the
rest of the process already holds instead of opening its own.
"""

COLUMNS = (
    "events",
    "enters",
    "leaves",
    "concurrent_peak",
    "concurrent_close",
    "likes",
    "orders_paid",
    "orders_refunded",
    "items",
    "gmv_fen",
    "refund_fen",
    "unique_viewers",
)

# ---------------------------------------------------------------------------------------------------
# The contract, restated (deliberately not imported from ingest/events.py: the two statements check each other)
# ---------------------------------------------------------------------------------------------------

_TOPIC_OF_TYPE = {"view": "live.views", "like": "live.likes", "order": "live.orders"}
_ID_MAX_LEN = 64

# (field, check, lo, hi) in check order. "id": string of 1..64 characters; "streamer": an "id" that is
# also made of letters, marks, digits and . : @ _ - with a letter or digit among them (_RE_STREAMER_ID);
# "enum": string in lo; "int": integer in [lo, hi] else bad_value; "version": integer in [lo, hi] else
# unsupported_version; "money": integer, < lo is negative_amount, > hi is absurd_amount.
_COMMON_FIELDS: tuple[tuple[str, str, Any, Any], ...] = (
    ("schema_version", "version", 1, 1),
    ("event_id", "id", None, None),
    ("ts", "int", 946_684_800_000, 4_102_444_800_000),
    ("streamer_id", "streamer", None, None),
    ("session_id", "id", None, None),
    ("viewer_id", "id", None, None),
)
_TYPE_FIELDS: dict[str, tuple[tuple[str, str, Any, Any], ...]] = {
    "view": (("action", "enum", ("enter", "leave"), None),),
    "like": (("count", "int", 1, 10_000),),
    "order": (
        ("order_id", "id", None, None),
        ("product_id", "id", None, None),
        ("category", "id", None, None),
        ("quantity", "int", 1, 10_000),
        ("amount_fen", "money", 0, 10_000_000_000),
        ("status", "enum", ("paid", "refunded"), None),
    ),
}
_STRING_CHECKS = ("id", "streamer", "enum")  # the checks of a string field


def _sql_literal(s: str) -> str:
    """A SQL string literal for the oracle's own constants (regexes, names, reasons)."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Regular expressions (RE2). They are constants of the oracle, written into the SQL as literals: as
# bound parameters their backslashes would depend on how a given Query escapes parameter text.
_RE_STR = _sql_literal(r'(?s)"(?:[^"\\]|\\.)*"')  # one JSON string literal, escapes included
_RE_PART = _sql_literal(r'(?s)"(?:[^"\\]|\\.)*"|[^"]+|"')  # string literals and the runs between them
_RE_NUM = _sql_literal(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")  # a number token (strings blanked)
_RE_INT = _sql_literal(r"^-?[0-9]+$")
_RE_INNER = _sql_literal(r"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")  # a container with no container inside
_RE_PLACEHOLDER_PART = _sql_literal(r'"[0-9A-F]*"|[^"]+')  # a "<hex>" placeholder, or the text between
# a streamer id: Unicode letters, marks, decimal digits and . : @ _ -, at least one letter or digit
_RE_STREAMER_ID = _sql_literal(r"^[\p{L}\p{M}\p{Nd}.:@_-]*[\p{L}\p{Nd}][\p{L}\p{M}\p{Nd}.:@_-]*$")
_BOM = "'\\xEF\\xBB\\xBF'"

# File order comes from _row_number; one thread and no parallel parsing make it doubly sure. The
# corrections above are simdjson's, so it is pinned; force_enable evaluates the costly branches of
# if() (the deep-value path) only on the rows that take them.
_SETTINGS = (
    "max_threads = 1, input_format_parallel_parsing = 0, allow_simdjson = 1, "
    "short_circuit_function_evaluation = 'force_enable', input_format_skip_unknown_fields = 1"
)
_LOG_STRUCTURE = "topic String, key Nullable(String), ts Int64, value Nullable(String), value_b64 Nullable(String)"


@dataclass(frozen=True)
class RuleSet:
    """The event-time and size rules the worker ran with; the oracle must be given the same ones.

    ``now_ms`` is the reader's clock for the record-time check (a record more than ``max_future_ms``
    after it is ``future``); None means the time the oracle runs. A reconcile runs after the worker
    read the log, so an honest log gets the worker's verdicts from either clock.
    """

    # The defaults are the settings' own (read, not restated); the rules themselves are the oracle's.
    window_ms: int = 10_000
    lateness_ms: int = Settings.lateness_ms
    max_future_ms: int = Settings.max_future_ms
    max_bytes: int = Settings.max_message_bytes
    order_horizon_ms: int = Settings.order_dedupe_horizon_ms  # orders are late only this far behind
    max_pack_lines: int = Settings.max_pack_lines  # a longer pack is refused whole
    now_ms: int | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> "RuleSet":
        """The rules of a ``Settings`` object (duck-typed, so the oracle imports nothing of the worker)."""
        return cls(
            lateness_ms=int(settings.lateness_ms),
            max_future_ms=int(settings.max_future_ms),
            max_bytes=int(settings.max_message_bytes),
            order_horizon_ms=int(settings.order_dedupe_horizon_ms),
            max_pack_lines=int(settings.max_pack_lines),
        )

    def params(self) -> dict[str, int]:
        names = ("window_ms", "lateness_ms", "max_future_ms", "max_bytes", "order_horizon_ms", "max_pack_lines")
        out = {name: getattr(self, name) for name in names}
        out["now_ms"] = int(time.time() * 1000) if self.now_ms is None else self.now_ms
        for name, value in out.items():
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.window_ms == 0:
            raise ValueError("window_ms must be positive")
        return out


@dataclass(frozen=True)
class Mismatch:
    """One cell where expected and actual differ; ``None`` means the window is missing on that side."""

    window_start_ms: int
    streamer_id: str
    column: str
    expected: int | None
    actual: int | None


# ---------------------------------------------------------------------------------------------------
# Running SQL
# ---------------------------------------------------------------------------------------------------


def chdb_query(conn: Any) -> Query:
    """A ``Query`` over a ``chdb.connect(...)`` connection (its ``query(sql, fmt, params=...)``).

    Results travel as JSONCompact; every value the oracle selects is a number or valid UTF-8 text
    (raw message bytes are selected as hex), so nothing is lost on the way.
    """

    def run(sql: str, params: dict | None = None) -> list[tuple]:
        bound = bind(params) or {}
        try:
            res = conn.query(sql, "JSONCompact", params=bound)
        except Exception:
            # chDB (26.9) hands the partial output of a query that failed mid-stream to the *next*
            # query on the connection; a throwaway query absorbs it so later results stay clean.
            with contextlib.suppress(Exception):
                conn.query("SELECT 1", "JSONCompact")
            raise
        raw = res.bytes() if hasattr(res, "bytes") else res
        if not raw:
            return []
        doc = orjson.loads(raw)
        return [tuple(row) for row in doc.get("data", ())]

    return run


_COMPRESSION_OF_SUFFIX = {".gz": "gzip", ".zst": "zstd"}


@contextlib.contextmanager
def _log_source(log_path: str | os.PathLike[str]) -> Iterator[dict[str, str]]:
    """Bound parameters naming the log for ``file()``: absolute path and compression.

    Compression follows the file name exactly as ``logfile.open_log`` does (``.gz``, ``.zst``, else
    none) instead of ClickHouse's own guess, which would also decompress ``.xz``, ``.br``, ... The path
    is a bound parameter, but ``file()`` still expands glob characters (``* ? { }``) in it, and a
    backslash or control character would depend on how the Query escapes parameter text; such a path
    is read through a symlink with a plain name, so the one file named is the one file read.
    """
    path = os.path.abspath(os.fspath(log_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    compression = _COMPRESSION_OF_SUFFIX.get(os.path.splitext(path)[1], "none")
    if not any(c in "*?{}[]\\" or ord(c) < 32 for c in path):
        yield {"log_path": path, "log_compression": compression}
        return
    tmp = tempfile.mkdtemp(prefix="streamproc-oracle-")
    try:
        link = os.path.join(tmp, "log")
        os.symlink(path, link)
        yield {"log_path": link, "log_compression": compression}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# The classification query: one row per log record with its reason ('' = accepted)
# ---------------------------------------------------------------------------------------------------


_RE_EDGE_SPACE = _sql_literal(r"^[ \t\n\r\x0b\x0c]+|[ \t\n\r\x0b\x0c]+$")  # what bytes.strip() removes


def _strip(expr: str) -> str:
    """``expr`` without leading and trailing ASCII whitespace, as Python's ``bytes.strip()``."""
    return f"replaceRegexpAll({expr}, {_RE_EDGE_SPACE}, '')"


def _sql_str(s: str) -> str:
    """A SQL string literal for our own constant identifiers (field names, enum values, reasons)."""
    if not all(c.isalnum() or c in "._" for c in s):
        raise ValueError(f"not a plain identifier: {s!r}")
    return f"'{s}'"


def _field_checks(name: str, check: str, lo: Any, hi: Any) -> list[tuple[str, str]]:
    t, s, n = f"t_{name}", f"s_{name}", f"n_{name}"
    out = [(f"{t} = 'Null'", "missing_field")]
    if check in _STRING_CHECKS:
        out.append((f"{t} != 'String'", "wrong_type"))
        if check in ("id", "streamer"):
            out.append((f"NOT (lengthUTF8({s}) BETWEEN 1 AND {_ID_MAX_LEN})", "bad_value"))
            if check == "streamer":
                out.append((f"NOT match({s}, {_RE_STREAMER_ID})", "bad_value"))
        else:
            out.append((f"{s} NOT IN ({', '.join(_sql_str(x) for x in lo)})", "bad_value"))
        return out
    out.append((f"{t} NOT IN ('Int64', 'UInt64')", "wrong_type"))
    if check == "money":
        out.append((f"{n} < {int(lo)}", "negative_amount"))
        out.append((f"{n} > {int(hi)}", "absurd_amount"))
    else:
        out.append((f"{n} < {int(lo)} OR {n} > {int(hi)}", "unsupported_version" if check == "version" else "bad_value"))
    return out


def _all_fields() -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for name, check, _, _ in _COMMON_FIELDS + tuple(f for fs in _TYPE_FIELDS.values() for f in fs):
        seen.setdefault(name, check)
    return list(seen.items())


def _classify_sql() -> str:
    """SQL (a subquery) yielding every record of the log in file order with its verdict.

    Built as a stack of subqueries, each adding a few columns, so that every big expression is
    computed once and later ones refer to its column (aliases would be re-expanded at each use).
    """
    fields = [("type", "enum")] + _all_fields()
    index_cols = ",\n    ".join(f"arrayLastIndex(k -> k = {_sql_str(n)}, keys) AS i_{n}" for n, _ in fields)
    value_cols = []
    for name, check in fields:
        i = f"i_{name}"
        # a 64-bit-overflowing integer is a float to orjson but a string to simdjson: on the
        # string-blanked copy a real string reads "" and such a number reads its digits
        value_cols.append(
            f"if({i} = 0, 'Null', if(has_long_digits AND toString(JSONType(skel_d, {i})) = 'String' "
            f"AND JSONExtractString(skel_d, {i}) != '', 'Double', "
            f"toString(JSONType(d, {i})))) AS t_{name}"
        )
        if check in _STRING_CHECKS:
            value_cols.append(f"JSONExtractString(d, {i}) AS s_{name}")
        else:
            value_cols.append(f"JSONExtract(d, {i}, 'Int128') AS n_{name}")
    value_sql = ",\n    ".join(value_cols)

    topic_expr = "multiIf(" + ", ".join(f"s_type = {_sql_str(k)}, {_sql_str(v)}" for k, v in _TOPIC_OF_TYPE.items()) + ", '')"
    checks: list[tuple[str, str]] = [
        ("nbytes > {max_bytes:Int64}", "oversized"),
        # a pack (lines, not one JSON document) of more lines than allowed is refused whole; the oracle
        # reads packs unpacked (logs/packs.unpack_records), and such a message is the one kept whole there
        (f"NOT json_ok AND position({_strip('v')}, '\\n') > 0 AND "
         f"length(arrayFilter(l -> {_strip('l')} != '', splitByChar('\\n', v))) > {{max_pack_lines:Int64}}", "oversized"),
        ("NOT utf8_ok", "invalid_utf8"),
        ("NOT json_ok", "malformed_json"),
        ("root_type != 'Object'", "not_object"),
        ("t_type = 'Null'", "missing_field"),
        ("t_type != 'String'", "wrong_type"),
        ("s_type NOT IN (" + ", ".join(_sql_str(k) for k in _TOPIC_OF_TYPE) + ")", "unknown_type"),
        (f"topic != {topic_expr}", "wrong_topic"),
    ]
    for f in _COMMON_FIELDS:
        checks += _field_checks(*f)
    for kind, fs in _TYPE_FIELDS.items():
        for f in fs:
            checks += [(f"s_type = {_sql_str(kind)} AND ({cond})", reason) for cond, reason in _field_checks(*f)]
    checks += [
        ("key IS NULL OR ifNull(key, '') != s_streamer_id", "key_mismatch"),
        ("rts > 0 AND (n_ts > rts + {max_future_ms:Int64} OR rts > {now_ms:Int64} + {max_future_ms:Int64})", "future"),
    ]
    # The first failing check names the reason. (An array lookup rather than a 60-branch multiIf,
    # which ClickHouse takes a good half second to plan; every check is safe to evaluate on any row.)
    reason0 = (
        "[" + ", ".join(_sql_str(r) for _, r in checks) + "][indexOf([\n        "
        + ",\n        ".join(f"toUInt8({c})" for c, _ in checks) + "], 1)]"
    )

    src = f"""
SELECT toInt64(assumeNotNull(_row_number)) AS rn, topic, key, ts AS rts,
    if(value IS NOT NULL, assumeNotNull(value), base64Decode(assumeNotNull(value_b64))) AS v
FROM file({{log_path:String}}, 'JSONEachRow', '{_LOG_STRUCTURE}', {{log_compression:String}})
-- a line with no value fails the whole run, as it fails logfile.read_log
WHERE throwIf(value IS NULL AND value_b64 IS NULL, 'a log line has neither value nor value_b64') = 0"""

    # simdjson's own verdict, and which values need one of the corrections
    l1 = f"""
SELECT *,
    length(v) AS nbytes,
    isValidUTF8(v) AS utf8_ok,
    utf8_ok AND startsWith(v, {_BOM}) AS bom,
    utf8_ok AND isValidJSON(v) AS sj_ok,
    utf8_ok AND NOT sj_ok AND countSubstrings(v, '[') + countSubstrings(v, '{{') >= 1024 AS deep,
    utf8_ok AND match(v, '[0-9]{{19}}') AS has_long_digits
FROM ({src})"""

    # deep values: split into string literals and the text between them ...
    l2 = f"""
SELECT *, if(deep, extractAll(v, {_RE_PART}), CAST([], 'Array(String)')) AS parts
FROM ({l1})"""
    # ... and replace each literal by its hex in quotes: no bracket, quote or escape is left inside
    # strings. (Hex rather than an index into parts: restoring must not look parts up from inside a
    # lambda, which would copy the whole array once per element.)
    l3 = f"""
SELECT *,
    if(deep, arrayStringConcat(arrayMap(p -> if(length(p) >= 2 AND startsWith(p, '"'),
        concat('"', hex(p), '"'), p), parts)), '') AS skel
FROM ({l2})"""
    # innermost containers -> [] lowers the depth by one; the value is valid iff every literal, every
    # innermost container and the reduced skeleton are. The reduced value, literals restored, is read
    # for fields: only containers changed, and a container is a wrong_type for every field.
    l4 = f"""
SELECT * EXCEPT (parts, skel, reduced),
    if(deep, replaceRegexpAll(skel, {_RE_INNER}, '[]'), '') AS reduced,
    if(deep, arrayAll(p -> NOT (length(p) >= 2 AND startsWith(p, '"')) OR isValidJSON(p), parts)
        AND arrayAll(c -> isValidJSON(c), extractAll(skel, {_RE_INNER}))
        AND isValidJSON(reduced), 0) AS deep_ok,
    if(deep, arrayStringConcat(arrayMap(p -> if(startsWith(p, '"'), unhex(substring(p, 2, length(p) - 2)), p),
        extractAll(reduced, {_RE_PLACEHOLDER_PART}))), v) AS d,
    if(has_long_digits, replaceRegexpAll(v, {_RE_STR}, '""'), '') AS skel_v
FROM ({l3})"""
    l5 = f"""
SELECT * EXCEPT (skel_v),
    if(has_long_digits, replaceRegexpAll(d, {_RE_STR}, '""'), '') AS skel_d,
    has_long_digits AND arrayExists(t -> length(t) >= 309 AND match(t, {_RE_INT})
        AND NOT isFinite(toFloat64OrZero(t)), extractAll(skel_v, {_RE_NUM})) AS inf_int,
    utf8_ok AND NOT bom AND (sj_ok OR deep_ok) AND NOT inf_int AS json_ok
FROM ({l4})"""
    l6 = f"""
SELECT *,
    if(json_ok, toString(JSONType(d)), 'Null') AS root_type,
    if(json_ok AND root_type = 'Object', JSONExtractKeys(d), CAST([], 'Array(String)')) AS keys
FROM ({l5})"""
    l7 = f"""
SELECT *,
    {index_cols}
FROM ({l6})"""
    l8 = f"""
SELECT *,
    {value_sql}
FROM ({l7})"""
    l9 = f"""
SELECT rn, topic, v, reason0,
    if(reason0 = '', s_type, '') AS kind,
    if(reason0 = '', toInt64(n_ts), toInt64(0)) AS ts,
    if(reason0 = '', s_streamer_id, '') AS streamer_id,
    if(reason0 = '', s_viewer_id, '') AS viewer_id,
    if(reason0 = '' AND s_type = 'view', s_action, '') AS action,
    if(reason0 = '' AND s_type = 'like', toInt64(n_count), toInt64(0)) AS cnt,
    if(reason0 = '' AND s_type = 'order', s_order_id, '') AS order_id,
    if(reason0 = '' AND s_type = 'order', s_status, '') AS status,
    if(reason0 = '' AND s_type = 'order', toInt64(n_quantity), toInt64(0)) AS quantity,
    if(reason0 = '' AND s_type = 'order', toInt64(n_amount_fen), toInt64(0)) AS amount_fen,
    if(reason0 = '' AND s_type = 'order', s_product_id, '') AS product_id,
    if(reason0 = '' AND s_type = 'order', s_category, '') AS category
FROM (
    SELECT *, {reason0} AS reason0
    FROM ({l8})
)"""
    # lateness: behind the max ts of the earlier valid events of the same (topic, streamer) by more than
    # the lateness (views, likes) or the order horizon (orders: money is not dropped for being late)
    l10 = f"""
SELECT *,
    max(ts) OVER w AS prev_max,
    count() OVER w AS prev_n
FROM ({l9})
WINDOW w AS (PARTITION BY reason0 = '', topic, streamer_id ORDER BY rn
             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"""
    return f"""
SELECT rn, topic, v,
    if(reason0 != '', reason0, if(prev_n > 0 AND ts < prev_max - if(kind = 'order', {{order_horizon_ms:Int64}},
        {{lateness_ms:Int64}}), 'late', '')) AS reason,
    kind, ts, streamer_id, viewer_id, action, cnt, order_id, status, quantity, amount_fen, product_id, category
FROM ({l10})"""


def _params(rules: RuleSet, source: Mapping[str, str]) -> dict[str, Any]:
    return {**rules.params(), **source}


def expected_reasons(query: Query, log_path: str, rules: RuleSet = RuleSet()) -> list[str | None]:
    """The verdict on every record of the log, in file order: a reason code, or None if accepted.

    This is the per-record face of the oracle, used to cross-check it against ``events.decode``.
    """
    with _log_source(log_path) as src:
        rows = query(f"SELECT rn, reason FROM ({_classify_sql()}) ORDER BY rn SETTINGS {_SETTINGS}", _params(rules, src))
    return [r[1] or None for r in rows]


def expected_deadletters(query: Query, log_path: str, rules: RuleSet = RuleSet()) -> Counter[tuple[str, bytes, str]]:
    """The multiset of (topic, raw value bytes, reason) the worker must have dead-lettered."""
    with _log_source(log_path) as src:
        rows = query(
            f"SELECT topic, hex(v), reason, count() FROM ({_classify_sql()}) WHERE reason != '' "
            f"GROUP BY topic, v, reason SETTINGS {_SETTINGS}",
            _params(rules, src),
        )
    return Counter({(str(t), bytes.fromhex(h), str(r)): int(n) for t, h, r, n in rows})


def _facts_sql() -> str:
    """The accepted events in file order, each with its window ``ws``, the streamer's audience ``c`` after
    it (views) and whether it is the first accepted occurrence of its order (``first_order``).

    The audience is a running count that a leave never takes below zero: c(n) = max(0, c(n-1) + x(n)),
    which in closed form is S(n) - min(0, min over k <= n of S(k)) for the plain running sum S.
    """
    return f"""
SELECT *, s - least(0, min(s) OVER (PARTITION BY kind, streamer_id ORDER BY rn
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) AS c
FROM (
    SELECT rn, kind, ts, streamer_id, viewer_id, action, cnt, status, quantity, amount_fen,
        ts - ts % {{window_ms:Int64}} AS ws,
        sum(toInt64(multiIf(kind != 'view', 0, action = 'enter', 1, -1)))
            OVER (PARTITION BY kind, streamer_id ORDER BY rn ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS s,
        kind = 'order' AND row_number() OVER (PARTITION BY kind, order_id, status ORDER BY rn) = 1 AS first_order
    FROM ({_classify_sql()})
    WHERE reason = ''
)"""


def expected_tallies(query: Query, log_path: str, rules: RuleSet = RuleSet()) -> dict[tuple[int, str], dict[str, int]]:
    """Per (window_start_ms, streamer_id): the tallies of the accepted events of the log.

    Concurrency is a running count per streamer over accepted view events in file order, never below
    zero; an order counts in the money columns only on the first accepted occurrence of its
    (order_id, status).
    """
    sql = f"""
SELECT toInt64(ws), streamer_id,
    toInt64(count()),
    toInt64(countIf(kind = 'view' AND action = 'enter')),
    toInt64(countIf(kind = 'view' AND action = 'leave')),
    toInt64(maxIf(c, kind = 'view')),
    toInt64(argMaxIf(c, rn, kind = 'view')),
    toInt64(sumIf(cnt, kind = 'like')),
    toInt64(countIf(first_order AND status = 'paid')),
    toInt64(countIf(first_order AND status = 'refunded')),
    toInt64(sumIf(quantity, first_order AND status = 'paid') - sumIf(quantity, first_order AND status = 'refunded')),
    toInt64(sumIf(amount_fen, first_order AND status = 'paid') - sumIf(amount_fen, first_order AND status = 'refunded')),
    toInt64(sumIf(amount_fen, first_order AND status = 'refunded')),
    toInt64(uniqExactIf(viewer_id, kind = 'view' AND action = 'enter'))
FROM ({_facts_sql()})
GROUP BY ws, streamer_id
ORDER BY ws, streamer_id
SETTINGS {_SETTINGS}"""
    with _log_source(log_path) as src:
        rows = query(sql, _params(rules, src))
    return {(int(r[0]), str(r[1])): dict(zip(COLUMNS, (int(x) for x in r[2:]))) for r in rows}


def expected_audience(query: Query, log_path: str, rules: RuleSet = RuleSet()
                      ) -> tuple[dict[tuple[int, str], set[str]], dict[tuple[int, str], set[str]]]:
    """Per (window_start_ms, streamer_id): the viewers who entered, and the buyers (viewers of counted
    paid orders). Sets, so that unique viewers over any range can be checked exactly."""
    sql = f"""
SELECT toInt64(ws), streamer_id,
    groupUniqArrayIf(viewer_id, kind = 'view' AND action = 'enter'),
    groupUniqArrayIf(viewer_id, first_order AND status = 'paid')
FROM ({_facts_sql()})
GROUP BY ws, streamer_id
SETTINGS {_SETTINGS}"""
    with _log_source(log_path) as src:
        rows = query(sql, _params(rules, src))
    viewers: dict[tuple[int, str], set[str]] = {}
    buyers: dict[tuple[int, str], set[str]] = {}
    for ws, sid, v, b in rows:
        if v:
            viewers[(int(ws), str(sid))] = set(v)
        if b:
            buyers[(int(ws), str(sid))] = set(b)
    return viewers, buyers


def expected_orders(query: Query, log_path: str, rules: RuleSet = RuleSet()) -> list[tuple[int, str, str, str, str, str, int, int]]:
    """The counted orders of the log: the first accepted occurrence of each (order_id, status), in file
    order, as ``(ts, streamer_id, viewer_id, product_id, category, status, quantity, amount_fen)`` -- the
    facts the dashboard's products and funnel are stated over (``verify/overview_oracle.py``)."""
    sql = f"""
SELECT ts, streamer_id, viewer_id, product_id, category, status, quantity, amount_fen
FROM (
    SELECT rn, kind, ts, streamer_id, viewer_id, product_id, category, status, quantity, amount_fen,
        row_number() OVER (PARTITION BY kind, order_id, status ORDER BY rn) = 1 AS first_order
    FROM ({_classify_sql()})
    WHERE reason = '' AND kind = 'order'
)
WHERE first_order
ORDER BY rn
SETTINGS {_SETTINGS}"""
    with _log_source(log_path) as src:
        rows = query(sql, _params(rules, src))
    return [(int(ts), str(sid), str(v), str(p), str(c), str(st), int(q), int(a)) for ts, sid, v, p, c, st, q, a in rows]


# ---------------------------------------------------------------------------------------------------
# What the worker wrote
# ---------------------------------------------------------------------------------------------------


def actual_tallies(query: Query, database: str = Settings.clickhouse_database) -> dict[tuple[int, str], dict[str, int]]:
    """Per (window_start_ms, streamer_id): the tallies in ClickHouse.

    ``tallies_10s`` holds one row per (window, streamer, source topic, source partition), re-flushed
    with a growing ``version``: FINAL keeps the latest snapshot of each, and the sum over source
    partitions is the window's total (each metric is non-zero only in its own topic's rows). Unique
    viewers are merged from their exact states. A window present in either table is a window.
    """
    sums = ", ".join(f"toInt64(sum({c}))" for c in COLUMNS if c != "unique_viewers")
    rows = query(
        f"SELECT toInt64(toUnixTimestamp64Milli(window_start)) AS ws, streamer_id, {sums} "
        "FROM {db:Identifier}.tallies_10s FINAL GROUP BY ws, streamer_id",
        {"db": database},
    )
    out: dict[tuple[int, str], dict[str, int]] = {}
    for r in rows:
        values = dict(zip(COLUMNS, (int(x) for x in r[2:])))
        values["unique_viewers"] = 0
        out[(int(r[0]), str(r[1]))] = values
    rows = query(
        "SELECT toInt64(toUnixTimestamp64Milli(window_start)) AS ws, streamer_id, toInt64(uniqExactMerge(viewers)) "
        "FROM {db:Identifier}.audience_10s GROUP BY ws, streamer_id HAVING uniqExactMerge(viewers) > 0",
        {"db": database},
    )
    for ws, sid, n in rows:
        key = (int(ws), str(sid))
        out.setdefault(key, {c: 0 for c in COLUMNS})["unique_viewers"] = int(n)
    return out


# ---------------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------------


def compare(
    expected: Mapping[tuple[int, str], Mapping[str, int]],
    actual: Mapping[tuple[int, str], Mapping[str, int]],
) -> list[Mismatch]:
    """Every differing cell, sorted by window, streamer and column order.

    A window on one side only is reported in every column (the missing side as None), even if its
    values are all zero: a row the worker should not have written, or failed to write, is a bug either
    way, and treating "missing" as "zero" would hide it.
    """
    out: list[Mismatch] = []
    for key in sorted(set(expected) | set(actual)):
        exp, act = expected.get(key), actual.get(key)
        for col in COLUMNS:
            e = None if exp is None else int(exp.get(col, 0))
            a = None if act is None else int(act.get(col, 0))
            if exp is None or act is None or e != a:
                out.append(Mismatch(key[0], key[1], col, e, a))
    return out


def _fmt_ts(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, OSError, ValueError):
        return str(ms)


def format_mismatches(mismatches: list[Mismatch], limit: int = 20) -> str:
    """A human summary: counts, then the first ``limit`` mismatches one per line."""
    if not mismatches:
        return "tallies match: no mismatches"
    windows = {(m.window_start_ms, m.streamer_id) for m in mismatches}
    missing = {(m.window_start_ms, m.streamer_id) for m in mismatches if m.actual is None}
    extra = {(m.window_start_ms, m.streamer_id) for m in mismatches if m.expected is None}
    lines = [
        f"{len(mismatches)} mismatched values in {len(windows)} windows "
        f"({len(missing)} missing from ClickHouse, {len(extra)} only in ClickHouse):"
    ]
    for m in mismatches[: max(limit, 0)]:
        e = "(no window)" if m.expected is None else m.expected
        a = "(no window)" if m.actual is None else m.actual
        lines.append(f"  {_fmt_ts(m.window_start_ms)} ({m.window_start_ms}) {m.streamer_id} {m.column}: expected {e}, actual {a}")
    if len(mismatches) > limit:
        lines.append(f"  ... and {len(mismatches) - max(limit, 0)} more")
    return "\n".join(lines)


def reconcile(
    expected_query: Query,
    log_path: str,
    actual_query: Query | None = None,
    database: str = Settings.clickhouse_database,
    rules: RuleSet = RuleSet(),
) -> list[Mismatch]:
    """Expected tallies of ``log_path`` against the tallies in ``database``; empty means they agree.

    ``file()`` reads the log on the machine that runs ``expected_query`` (embedded chDB for a local
    log); ``actual_query`` may point at another server and defaults to the same one.
    """
    expected = expected_tallies(expected_query, log_path, rules)
    actual = actual_tallies(actual_query or expected_query, database)
    return compare(expected, actual)
