"""What every importer shares: reading dirty input, sorting by time, viewer visits, valid events out.

A format module turns one input row into an :class:`Action` (a viewer did something in a room at a
time) or a rejection reason. Everything after that is common:

* **Time order.** Public clickstream dumps are not in time order (the Taobao file is grouped by user),
  and the pipeline judges lateness per streamer in log order, so actions are sorted by (time, input
  line) -- in memory, or through sorted runs on disk for files larger than a chunk.
* **Visits.** A live room counts viewers entering and leaving; a clickstream only has page views. A
  viewer's views of one room (in one session) form a visit: the first view is the ``enter``; the
  visit ends with a ``leave`` when the viewer views another room or another session starts (at that
  moment), or after ``visit_idle_ms`` without a view of it (at the last view + the idle time). Views
  inside a visit add no event; they are counted as ``folded_views``. Likes and orders do not touch
  visits.
* **Valid events.** Every event is checked with ``events.decode`` before it is written, and every
  record's timestamp is the event's own time (a dataset has no send time), so no imported event is
  ever ``future`` or ``late``.
* **Nothing silently dropped.** A row that cannot become an event is rejected with its line number
  and a reason; rejected rows never become log records (they would reach the live topics on replay),
  they are reported -- warned, summarised, optionally written to a rejects file, or fatal with
  ``strict``.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import logging
import os
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, NamedTuple

import orjson

from streamproc.ingest.events import ID_MAX_LEN, SCHEMA_VERSION, TOPIC_OF_TYPE, TS_MAX, TS_MIN, Rejection, decode
from streamproc.logs.logfile import LogRecord, encode_line, open_log
from streamproc.settings import Settings

log = logging.getLogger(__name__)

SORT_CHUNK = 250_000  # actions held in memory before a sorted run goes to disk
MAX_WARNED = 1000  # rejected lines warned one by one; counts are always complete
MAX_LISTED = 20  # line numbers listed per reason in the summary
VIEW, LIKE, PAID, REFUNDED = "view", "like", "paid", "refunded"

_DEFAULTS = Settings()


class ImportFailed(Exception):
    """The import cannot go on: bad options, an unreadable input, or a rejected row under ``strict``."""


class Action(NamedTuple):
    """One row of input, normalised: what a viewer did in a room, when."""

    ts: int
    line: int
    kind: str  # VIEW, LIKE, PAID or REFUNDED
    viewer: str
    room: str
    session: str
    product: str = ""
    category: str = ""  # the room's category (for the dimension) and the order's category
    amount_fen: int = 0
    quantity: int = 1
    order_id: str = ""


class Reject(NamedTuple):
    """A row that cannot become an event, and why."""

    reason: str
    detail: str = ""


class Skip(NamedTuple):
    """A row that is not an event by design: the header, or a behaviour with no pipeline event."""

    what: str  # HEADER, or the behaviour (counted in ``unmapped``)


HEADER = "header"
Parsed = Action | Reject | Skip


@dataclass
class Report:
    """The import's account of every input line."""

    format: str
    input: str
    out: str
    lines: int = 0
    header: bool = False
    blank: int = 0
    events: int = 0
    by_event: Counter[str] = field(default_factory=Counter)
    folded_views: int = 0
    unmapped: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    rejected_lines: dict[str, list[int]] = field(default_factory=dict)
    rooms: int = 0
    first_ts: int | None = None
    last_ts: int | None = None

    def to_dict(self) -> dict:
        return {
            "format": self.format, "input": self.input, "out": self.out, "lines": self.lines,
            "header": self.header, "blank": self.blank, "events": self.events, "by_event": dict(self.by_event),
            "folded_views": self.folded_views, "unmapped": dict(self.unmapped), "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason), "rejected_lines": self.rejected_lines,
            "rooms": self.rooms, "first_ts": self.first_ts, "last_ts": self.last_ts,
        }  # fmt: skip


# --- input -------------------------------------------------------------------------------------------


def open_input(path: str | Path) -> IO[bytes]:
    """The input's bytes: ``.gz``/``.zst`` decompressed, ``.zip`` its one data member (as datasets ship)."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"no such input file: {path}")
    if path.suffix == ".zip":
        zf = zipfile.ZipFile(path)
        members = [m for m in zf.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
        if len(members) != 1:
            raise ImportFailed(f"{path}: expected one file inside the zip, found {len(members)}")
        return zf.open(members[0])
    return open_log(path, "rb")


def lines_of(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line break) of every physical line."""
    with open_input(path) as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield n, raw.rstrip(b"\r\n")


def csv_fields(text: str, delimiter: str = ",") -> list[str]:
    """One line as CSV fields; each line on its own, so a stray quote cannot swallow the rest of a file."""
    return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])


def norm_name(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


class CsvTable:
    """Rows of a CSV file as {column: text}, by its header if it has one, else by the documented order.

    ``header`` True/False says whether the first non-blank line is a header; None decides by looking:
    it is one if it names every column of ``names`` (in any order, any case).
    """

    def __init__(self, names: tuple[str, ...], *, header: bool | None = None, delimiter: str = ",") -> None:
        self.names, self.header, self.delimiter = names, header, delimiter
        self.index = {n: i for i, n in enumerate(names)}
        self.width = len(names)
        self.first = True

    def row(self, raw: bytes) -> dict[str, str] | Reject | Skip:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Reject("invalid_utf8")
        try:
            fields = csv_fields(text, self.delimiter)
        except csv.Error as exc:
            return Reject("bad_csv", str(exc))
        if self.first:
            self.first = False
            normed = [norm_name(f) for f in fields]
            looks = set(self.names) <= set(normed)
            if self.header or (self.header is None and looks):
                if not looks:
                    missing = sorted(set(self.names) - set(normed))
                    raise ImportFailed(f"the header lacks the column(s) {', '.join(missing)}")
                self.index = {n: normed.index(n) for n in self.names}
                self.width = len(fields)
                return Skip(HEADER)
        if len(fields) < self.width:
            return Reject("truncated", f"{len(fields)} of {self.width} fields")
        if len(fields) > self.width:
            return Reject("too_many_fields", f"{len(fields)} fields, expected {self.width}")
        return {n: fields[i].strip() for n, i in self.index.items()}


def check_id(value: str, name: str) -> Reject | None:
    if not value:
        return Reject("missing_value", name)
    if len(value) > ID_MAX_LEN:
        return Reject("bad_value", f"{name} longer than {ID_MAX_LEN} characters")
    return None


def check_ids(*pairs: tuple[str, str]) -> Reject | None:
    """``check_id`` over ``(value, name)`` pairs in order: the first refusal, or None."""
    for value, name in pairs:
        bad = check_id(value, name)
        if bad is not None:
            return bad
    return None


def plain_decimal(text: str) -> Decimal | None:
    """A finite, non-negative decimal number written in ``text``; None for anything else."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None


def yuan_to_fen(yuan: Decimal) -> int:
    """Yuan to fen, half a fen rounded up (as a price tag would read)."""
    return int((yuan * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def stable_hash(*parts: str) -> int:
    """A hash that is the same on every machine and run (unlike ``hash``), for derived ids and prices."""
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


def derived_id(prefix: str, *parts: str) -> str:
    return f"{prefix}-{stable_hash(*parts):016x}"


# --- sorting -----------------------------------------------------------------------------------------


def sort_actions(actions: Iterable[Action], tmp_dir: str | Path) -> Iterator[Action]:
    """``actions`` by (ts, line), with at most ``SORT_CHUNK`` of them in memory at once."""
    runs: list[str] = []
    chunk: list[Action] = []
    try:
        for a in actions:
            chunk.append(a)
            if len(chunk) >= SORT_CHUNK:
                runs.append(_spill(sorted(chunk), tmp_dir))
                chunk = []
        chunk.sort()
        if not runs:
            yield from chunk
            return
        runs.append(_spill(chunk, tmp_dir))
        chunk = []
        yield from heapq.merge(*(_read_run(r) for r in runs))
    finally:
        for r in runs:
            os.unlink(r)


def _spill(chunk: list[Action], tmp_dir: str | Path) -> str:
    fd, path = tempfile.mkstemp(prefix="streamproc-import-", suffix=".run", dir=tmp_dir)
    with os.fdopen(fd, "wb") as f:
        for a in chunk:
            f.write(orjson.dumps(list(a)) + b"\n")
    return path


def _read_run(path: str) -> Iterator[Action]:
    with open(path, "rb") as f:
        for raw in f:
            yield Action(*orjson.loads(raw))


# --- visits and events -------------------------------------------------------------------------------


class _Visit:
    __slots__ = ("room", "session", "category", "line", "gen")

    def __init__(self, a: Action, gen: int) -> None:
        self.room, self.session, self.category, self.line, self.gen = a.room, a.session, a.category, a.line, gen


class Visits:
    """Turns view actions in time order into enter/leave events (see the module docstring)."""

    def __init__(self, idle_ms: int) -> None:
        if idle_ms <= 0:
            raise ImportFailed("the visit idle time must be positive")
        self.idle_ms = idle_ms
        self.open: dict[str, _Visit] = {}
        self.expiries: list[tuple[int, int, str]] = []  # (ts, gen, viewer); stale entries are skipped
        self.gen = 0
        self.folded = 0

    def expire(self, upto_ts: int) -> Iterator[tuple[int, str, _Visit]]:
        """(leave ts, viewer, visit) of every visit idle since before ``upto_ts``, in time order."""
        heap = self.expiries
        while heap and heap[0][0] <= upto_ts:
            ts, gen, viewer = heapq.heappop(heap)
            v = self.open.get(viewer)
            if v is not None and v.gen == gen:
                del self.open[viewer]
                yield ts, viewer, v

    def view(self, a: Action) -> tuple[tuple[str, _Visit] | None, bool]:
        """(the visit this view ends, if any; whether it starts a new one)."""
        self.gen += 1
        v = self.open.get(a.viewer)
        heapq.heappush(self.expiries, (a.ts + self.idle_ms, self.gen, a.viewer))
        if v is not None and v.room == a.room and v.session == a.session:
            v.gen = self.gen
            self.folded += 1
            return None, False
        ended = (a.viewer, v) if v is not None else None
        self.open[a.viewer] = _Visit(a, self.gen)
        return ended, True

    def close_all(self) -> Iterator[tuple[int, str, _Visit]]:
        yield from self.expire(TS_MAX * 2)


class EventWriter:
    """Builds event values, checks each with ``events.decode`` and writes the log records."""

    def __init__(self, out: IO[bytes], prefix: str, report: Report) -> None:
        self.out, self.prefix, self.report = out, prefix, report
        self.rooms: dict[str, str] = {}  # room -> its category, for the dimension

    def view(self, ts: int, viewer: str, visit: _Visit, enter: bool) -> Reject | None:
        eid = f"{self.prefix}-{visit.line}" + ("" if enter else "-leave")
        obj = {"schema_version": SCHEMA_VERSION, "type": "view", "event_id": eid, "ts": ts,
               "streamer_id": visit.room, "session_id": visit.session, "viewer_id": viewer,
               "action": "enter" if enter else "leave"}  # fmt: skip
        return self._emit(obj, "view_enter" if enter else "view_leave", visit.category)

    def action(self, a: Action) -> Reject | None:
        obj = {"schema_version": SCHEMA_VERSION, "type": "like" if a.kind == LIKE else "order",
               "event_id": f"{self.prefix}-{a.line}", "ts": a.ts, "streamer_id": a.room, "session_id": a.session,
               "viewer_id": a.viewer}  # fmt: skip
        if a.kind == LIKE:
            obj["count"] = 1
            return self._emit(obj, "like", a.category)
        obj.update(order_id=a.order_id or derived_id(f"{self.prefix}-o", a.viewer, a.room, a.product, str(a.ts)),
                   product_id=a.product, category=a.category or a.room, quantity=a.quantity,
                   amount_fen=a.amount_fen, status="paid" if a.kind == PAID else "refunded")  # fmt: skip
        return self._emit(obj, "order_" + obj["status"], a.category)

    def _emit(self, obj: dict, label: str, category: str) -> Reject | None:
        value = orjson.dumps(obj)
        topic = TOPIC_OF_TYPE[obj["type"]]
        key = obj["streamer_id"].encode()
        verdict = decode(value, topic, key, obj["ts"], max_bytes=_DEFAULTS.max_message_bytes,
                         max_future_ms=_DEFAULTS.max_future_ms)
        if isinstance(verdict, Rejection):
            return Reject(verdict.reason, verdict.detail)
        self.out.write(encode_line(LogRecord(topic, key, obj["ts"], value)))
        r = self.report
        r.events += 1
        r.by_event[label] += 1
        r.first_ts = obj["ts"] if r.first_ts is None else r.first_ts
        r.last_ts = obj["ts"]
        self.rooms.setdefault(obj["streamer_id"], category)
        return None


# --- the run -----------------------------------------------------------------------------------------


class Rejections:
    """Counts, warns about, lists and optionally writes out every rejected line."""

    def __init__(self, report: Report, rejects_path: str | None, strict: bool) -> None:
        self.report, self.strict = report, strict
        self.file = open(rejects_path, "wb") if rejects_path else None

    def add(self, line: int, reject: Reject, raw: bytes = b"") -> None:
        r = self.report
        if self.strict:
            raise ImportFailed(f"line {line}: {reject.reason}" + (f" ({reject.detail})" if reject.detail else ""))
        r.rejected += 1
        r.rejected_by_reason[reject.reason] += 1
        listed = r.rejected_lines.setdefault(reject.reason, [])
        if len(listed) < MAX_LISTED:
            listed.append(line)
        if r.rejected <= MAX_WARNED:
            log.warning("%s line %d rejected: %s%s", r.input, line, reject.reason,
                        f" ({reject.detail})" if reject.detail else "")
        if self.file is not None:
            self.file.write(orjson.dumps({"line": line, "reason": reject.reason, "detail": reject.detail,
                                          "text": raw.decode("utf-8", "replace")}) + b"\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.report.rejected > MAX_WARNED:
            log.warning("%s: %d more rejected lines not warned one by one", self.report.input,
                        self.report.rejected - MAX_WARNED)


RowParser = Callable[[int, bytes], Parsed]


def csv_parser(columns: tuple[str, ...], parse_row: Callable[[int, dict[str, str]], Parsed]) -> RowParser:
    """A row parser for a CSV format with these documented columns: the row's text is split (header
    or not) by one ``CsvTable``, a line that is no row is passed on as it is (a Reject or a Skip), and
    ``parse_row(line, row)`` judges the rest."""
    table = CsvTable(columns)

    def parse(line: int, raw: bytes) -> Parsed:
        row = table.row(raw)
        return parse_row(line, row) if isinstance(row, dict) else row

    return parse


def run_import(
    report: Report,
    rows: RowParser,
    *,
    prefix: str,
    from_ms: int | None,
    to_ms: int | None,
    visit_idle_ms: int,
    rejects: str | None,
    strict: bool,
) -> dict[str, str]:
    """Read, parse, sort, expand visits and write; returns room -> category for the dimension.

    The log is written to a temporary file beside ``report.out`` and renamed at the end, so a failed
    import never leaves a half-written log under the real name.
    """
    out_path = Path(report.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".tmp-{os.getpid()}-{out_path.name}")
    rejections = Rejections(report, rejects, strict)

    def actions() -> Iterator[Action]:
        for n, raw in lines_of(report.input):
            report.lines = n
            if not raw.strip():
                report.blank += 1
                continue
            parsed = rows(n, raw)
            if isinstance(parsed, Skip):
                if parsed.what == HEADER:
                    report.header = True
                else:
                    report.unmapped[parsed.what] += 1
                continue
            if isinstance(parsed, Reject):
                rejections.add(n, parsed, raw)
                continue
            if not TS_MIN <= parsed.ts <= TS_MAX:
                rejections.add(n, Reject("ts_out_of_range", f"{parsed.ts} ms is outside 2000..2100"), raw)
            elif (from_ms is not None and parsed.ts < from_ms) or (to_ms is not None and parsed.ts >= to_ms):
                rejections.add(n, Reject("outside_time_window", f"{parsed.ts} ms"), raw)
            else:
                yield parsed

    try:
        with tempfile.TemporaryDirectory(prefix=".streamproc-import-", dir=out_path.parent) as sort_dir, \
                open_log(tmp, "wb") as out:  # fmt: skip
            writer = EventWriter(out, prefix, report)
            visits = Visits(visit_idle_ms)

            def leave(ts: int, viewer: str, v: _Visit) -> None:
                bad = writer.view(ts, viewer, v, enter=False)
                if bad is not None:
                    rejections.add(v.line, bad)

            for a in sort_actions(actions(), sort_dir):
                for expired in visits.expire(a.ts):
                    leave(*expired)
                if a.kind == VIEW:
                    ended, starts = visits.view(a)
                    if ended is not None:
                        leave(a.ts, *ended)
                    if starts:
                        bad = writer.view(a.ts, a.viewer, visits.open[a.viewer], enter=True)
                        if bad is not None:  # then the visit never was
                            del visits.open[a.viewer]
                            rejections.add(a.line, bad)
                else:
                    bad = writer.action(a)
                    if bad is not None:
                        rejections.add(a.line, bad)
            for expired in visits.close_all():
                leave(*expired)
            report.folded_views = visits.folded
        os.replace(tmp, out_path)
    finally:
        rejections.close()
        if tmp.exists():
            tmp.unlink()
    report.rooms = len(writer.rooms)
    return writer.rooms
