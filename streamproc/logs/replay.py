"""Replay a recorded event log to the topics: backfills, incident reproductions, sales-day load tests.

Replay must be trustworthy: the same log gives the same tallies whatever the speed. That holds because
every verdict of the pipeline is a function of the log alone -- lateness per (topic, streamer) in log
order, "future" against the record timestamp -- and replay keeps both: records go out in file order
through one producer (so per-key order holds), with their original key (so the default partitioner puts
them where a live run did) and their original record timestamp. Pacing only changes wall time.

``--shift-to-now`` (or ``--shift-ms``) moves the record timestamp *and* the event ``ts`` inside the value
by one delta, so both verdicts are unchanged while yesterday's sales day plays as if live. The value is
then re-serialised: byte identity with the log holds only without a shift. Values that are not JSON
objects with an integer ``ts`` (the malformed ones a real feed carries) are sent untouched.

A log line that cannot be read is reported with its line number and skipped, or with ``strict`` stops
the replay before anything is sent (the log is scanned first, which also gives the progress its total).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson

from streamproc.ingest.events import TOPIC_OF_TYPE
from streamproc.logs.logfile import LogLineError, LogRecord, encode_line, open_log
from streamproc.logs.logfile import read_numbered as read_log_numbered  # this module's read_numbered adds the selection
from streamproc.logs.produce import Pacer, RatePacer, SpeedPacer, publish
from streamproc.logs.progress import Progress, stop_on_signals
from streamproc.settings import Settings

log = logging.getLogger(__name__)

MAX_REPORTED_LINES = 1000  # malformed lines warned one by one; the count is always complete


class ReplayError(Exception):
    """A replay that cannot start or go on (bad options, or a malformed line under ``strict``)."""


@dataclass(frozen=True)
class Selection:
    """Which records of a log to send, and how to re-time them."""

    topics: frozenset[str] | None = None  # logical topics; None = all
    streamers: frozenset[str] | None = None  # record keys; None = all
    from_ms: int | None = None  # record timestamp >= from_ms
    to_ms: int | None = None  # record timestamp < to_ms
    start_at: int = 1  # first line number of the file to consider (resume)
    strict: bool = False

    def accepts(self, rec: LogRecord) -> bool:
        if self.topics is not None and rec.topic not in self.topics:
            return False
        if self.streamers is not None and (rec.key is None or rec.key.decode("utf-8", "replace") not in self.streamers):
            return False
        if self.from_ms is not None and rec.ts < self.from_ms:
            return False
        return self.to_ms is None or rec.ts < self.to_ms


@dataclass
class Scan:
    """What a first pass over the log found: how much will be sent, over what span, and bad lines."""

    selected: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    malformed: list[LogLineError] = field(default_factory=list)


@dataclass
class ReplaySummary:
    file: str
    sent: int = 0
    selected: int = 0
    malformed_lines: int = 0
    malformed_line_numbers: list[int] = field(default_factory=list)
    first_ts: int | None = None
    last_ts: int | None = None
    shift_ms: int = 0
    last_line: int | None = None  # the last line sent
    interrupted: bool = False
    resume_with: str | None = None
    seconds: float = 0.0
    events_per_s: float = 0.0
    pacing: str = ""
    partitions: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> last offset

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reading -----------------------------------------------------------------------------------------


def parse_time(text: str) -> int:
    """Epoch milliseconds from an integer (ms) or an ISO-8601 time; a time without offset is UTC."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use epoch ms or ISO-8601, e.g. 2026-11-11T20:00:00+08:00)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def topics_of(types: str) -> frozenset[str]:
    """``view,order`` (event types) or topic names (``live.views``) to the logical topics."""
    out = set()
    for item in filter(None, (t.strip() for t in types.split(","))):
        if item in TOPIC_OF_TYPE:
            out.add(TOPIC_OF_TYPE[item])
        elif item in TOPIC_OF_TYPE.values():
            out.add(item)
        else:
            raise ValueError(f"unknown event type {item!r}: use {', '.join(TOPIC_OF_TYPE)} or a topic name")
    return frozenset(out)


def streamers_of(spec: str) -> frozenset[str]:
    """``s0001,s0002``, or ``@file`` with one streamer id per line."""
    if spec.startswith("@"):
        items = Path(spec[1:]).read_text(encoding="utf-8").split()
    else:
        items = spec.split(",")
    return frozenset(i.strip() for i in items if i.strip())


def read_numbered(path: str | Path, sel: Selection, malformed: list[LogLineError] | None = None) -> Iterator[tuple[int, LogRecord]]:
    """(line number, record) of every selected record in file order.

    A malformed line raises under ``sel.strict``, else it is appended to ``malformed`` and skipped.
    """
    records = read_log_numbered(path, strict=sel.strict, errors=malformed, start_at=sel.start_at)
    try:
        for line_no, rec in records:
            if sel.accepts(rec):
                yield line_no, rec
    except LogLineError as exc:  # only under --strict
        raise ReplayError(f"{path}: {exc} (--strict)") from None


def scan(path: str | Path, sel: Selection) -> Scan:
    out = Scan()
    for _, rec in read_numbered(path, sel, out.malformed):
        out.selected += 1
        if out.first_ts is None:
            out.first_ts = rec.ts
        out.last_ts = rec.ts if out.last_ts is None else max(out.last_ts, rec.ts)
    return out


def shift_record(rec: LogRecord, delta_ms: int) -> LogRecord:
    """Move the record timestamp and the event ``ts`` in the value by ``delta_ms``.

    A value that is one JSON document is one event; one that is not but has several lines is a pack
    of events, one per line, each shifted on its own. A value or line that is not a JSON object with
    an integer ``ts`` is left as it is: it is rejected by the pipeline either way, for the same reason
    as in the log.
    """
    if not delta_ms:
        return rec
    value = rec.value
    shifted = shift_event(value, delta_ms)
    if shifted is not None:
        value = shifted
    elif b"\n" in value.strip():
        value = b"\n".join(shift_event(line, delta_ms) or line for line in value.split(b"\n"))
    return replace(rec, ts=rec.ts + delta_ms, value=value)


def shift_event(value: bytes, delta_ms: int) -> bytes | None:
    """The value re-serialised with ``ts`` moved; None if it is not valid JSON; unchanged if no int ``ts``.
    (Also the benchmark feed's way for a payload whose ``ts`` it cannot splice: ``benchmarks/corpus.py``.)"""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is dict and type(obj.get("ts")) is int:
        obj["ts"] += delta_ms
        return orjson.dumps(obj)
    return value


# --- sending -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pacing:
    """Exactly one of: ``speed`` (original pacing / speed), ``rate`` (events/s), or ``as_fast``."""

    speed: float | None = 1.0
    rate: float | None = None
    as_fast: bool = False

    def pacer(self) -> Pacer | None:
        if self.as_fast:
            return None
        if self.rate is not None:
            if not self.rate > 0:
                raise ReplayError(f"--rate must be positive, got {self.rate}")
            return RatePacer(self.rate)
        if self.speed is None or not self.speed > 0:
            raise ReplayError(f"--speed must be positive, got {self.speed}")
        return SpeedPacer(self.speed)

    def describe(self) -> str:
        if self.as_fast:
            return "max"
        return f"rate {self.rate:g}/s" if self.rate is not None else f"speed {self.speed:g}x"

    def eta(self, total: int, last_ts: int | None) -> Any:
        """Seconds left: by record time still to play when paced by speed, else by count."""

        def eta_s(count: int, position: int | None, rate: float) -> float | None:
            left = total - count
            if self.as_fast:
                return left / rate if rate > 0 else None
            if self.rate is not None:
                return left / self.rate
            if position is None or last_ts is None:
                return None
            return max(last_ts - position, 0) / 1000.0 / float(self.speed or 1.0)

        return eta_s


def _report(path: str | Path, malformed: list[LogLineError], summary: ReplaySummary) -> None:
    for exc in malformed[:MAX_REPORTED_LINES]:
        log.warning("%s: skipping malformed %s", path, exc)
    if len(malformed) > MAX_REPORTED_LINES:
        log.warning("%s: ... and %d more malformed lines", path, len(malformed) - MAX_REPORTED_LINES)
    summary.malformed_lines = len(malformed)
    summary.malformed_line_numbers = [e.line_no for e in malformed[:MAX_REPORTED_LINES]]


def _prepare(path: str | Path, sel: Selection, shift_ms: int | None, shift_to_now: bool) -> tuple[Scan, int, ReplaySummary]:
    if not Path(path).is_file():
        raise ReplayError(f"no such log: {path}")
    found = scan(path, sel)
    summary = ReplaySummary(file=str(path), selected=found.selected)
    _report(path, found.malformed, summary)
    delta = shift_ms or 0
    if shift_to_now and found.first_ts is not None:
        delta = int(time.time() * 1000) - found.first_ts
    summary.shift_ms = delta
    if found.first_ts is not None:
        summary.first_ts, summary.last_ts = found.first_ts + delta, (found.last_ts or 0) + delta
    return found, delta, summary


async def replay_async(
    path: str | Path,
    settings: Settings,
    sel: Selection = Selection(),
    pacing: Pacing = Pacing(),
    *,
    shift_ms: int | None = None,
    shift_to_now: bool = False,
    progress: str = "auto",
    progress_interval_s: float = 10.0,
    stop: asyncio.Event | None = None,
) -> ReplaySummary:
    """Publish the selected records of ``path``; SIGINT/SIGTERM stop it cleanly with a resume line."""
    pacer = pacing.pacer()
    found, delta, summary = _prepare(path, sel, shift_ms, shift_to_now)
    summary.pacing = pacing.describe()
    bar = Progress("replay", found.selected, mode=progress, interval_s=progress_interval_s,
                   eta=pacing.eta(found.selected, summary.last_ts))
    stop = stop or asyncio.Event()
    # publish hands each record to the client (and calls on_sent) before it pulls the next one, so the
    # line of the record just sent is the line the generator stands on
    state: dict[str, Any] = {"line": None, "sent_line": None, "sent": 0}

    def records() -> Iterator[LogRecord]:
        for line_no, rec in read_numbered(path, sel):
            state["line"] = line_no
            yield shift_record(rec, delta)

    def on_sent(rec: LogRecord) -> None:
        state["sent_line"] = state["line"]
        state["sent"] += 1
        bar.update(state["sent"], rec.ts)

    try:
        with stop_on_signals(stop):
            result = await publish(records(), settings, pacer=pacer, stop=stop, on_sent=on_sent)
    finally:
        bar.finish()
    summary.sent = result.count
    summary.last_line = state["sent_line"]
    summary.seconds = round(result.seconds, 3)
    summary.events_per_s = round(result.count / result.seconds, 1) if result.seconds > 0 else 0.0
    summary.partitions = {f"{t}/{p}": o for (t, p), o in sorted(result.last_offsets.items())}
    if stop.is_set() and summary.sent < found.selected:
        summary.interrupted = True
        nxt = (summary.last_line or sel.start_at - 1) + 1
        summary.resume_with = f"--start-at {nxt}" + (f" --shift-ms {delta}" if delta else "")
        log.warning("replay stopped after %d of %d events; resume with %s", summary.sent, found.selected,
                    summary.resume_with)
    return summary


def replay(path: str | Path, settings: Settings, sel: Selection = Selection(), pacing: Pacing = Pacing(),
           **kwargs: Any) -> ReplaySummary:
    return asyncio.run(replay_async(path, settings, sel, pacing, **kwargs))


def write_selection(path: str | Path, out: str | Path, sel: Selection = Selection(), *, shift_ms: int | None = None,
                    shift_to_now: bool = False) -> ReplaySummary:
    """Write the records a replay would send (filters and shift applied) to a new log, unpaced.

    This is the log to reconcile a filtered or shifted replay against.
    """
    started = time.monotonic()
    found, delta, summary = _prepare(path, sel, shift_ms, shift_to_now)
    summary.pacing = "file"
    with open_log(out, "wb") as f:
        for line_no, rec in read_numbered(path, sel):
            f.write(encode_line(shift_record(rec, delta)))
            summary.sent += 1
            summary.last_line = line_no
    summary.seconds = round(time.monotonic() - started, 3)
    return summary
