"""Record events from Kafka into the recorded log format, for replays, incident reproductions and tests.

The recorder is a plain consumer without a consumer group (assign and seek): it must not move any
group's offsets, nor join a rebalance of the workers. By default it takes a snapshot: every partition
up to the high watermark its first fetch reports (``consumer.highwater``, not ``end_offsets``, which
some Kafka-protocol brokers answer wrongly), so a busy topic cannot keep it running forever. With
``follow`` (implied by a ``to`` time in the future) it keeps consuming until then, or until stopped.

Partitions are interleaved by a k-way merge on (record timestamp, topic, partition, offset): the
output is in time order as far as the partitions' own orders allow, every partition's order -- and so
every key's order, which is all the pipeline's verdicts depend on -- is kept, and the same topic
contents give the same file. A partition with nothing buffered yet but more to read holds the merge
back until its next records are fetched.

Crash safety: lines are written in self-contained chunks -- a whole gzip member or zstd frame, or
whole lines for plain files -- each with one ``write``, after every fetch round. A recorder stopped by
SIGINT/SIGTERM drains what it fetched and closes the file; one killed outright leaves a file that
every reader (``logfile.read_log``, ClickHouse's ``file()``) reads to its last complete chunk.
"""

from __future__ import annotations

import asyncio
import gzip
import heapq
import logging
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamproc.ingest.events import RefusedBatch
from streamproc.logs.logfile import LogRecord, encode_line
from streamproc.logs.progress import Progress, stop_on_signals
from streamproc.runtime.faust_compat import bound_batches
from streamproc.runtime.kafka import client_kwargs, topic_partitions
from streamproc.runtime.topics import EVENT_TOPICS
from streamproc.settings import Settings

log = logging.getLogger(__name__)

QUEUE_PAUSE = 20_000  # buffered records per partition before it is paused
UNKNOWN_HIGHWATER_S = 10.0  # a partition that reports no high watermark for this long is taken as empty


class RecordError(Exception):
    """The recording cannot start (unknown topic, bad options)."""


class ChunkWriter:
    """A log file written in independently readable chunks, each in one ``write``.

    A chunk is a complete gzip member or zstd frame (concatenations of which are valid ``.gz`` and
    ``.zst`` files) or, for plain JSON lines, whole lines; so the file never ends inside a chunk, even
    if the process dies between two writes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        suffix = self.path.suffix
        if suffix == ".zst":
            import zstandard

            self._compress = zstandard.ZstdCompressor(level=3).compress
        elif suffix == ".gz":
            self._compress = lambda data: gzip.compress(data, compresslevel=6, mtime=0)
        else:
            self._compress = lambda data: data
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb", buffering=0)

    def write_lines(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = self._compress(b"".join(lines))
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            view = view[n:]

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class RecordOptions:
    topics: tuple[str, ...] = EVENT_TOPICS  # logical topic names
    from_ms: int | None = None  # record timestamp >= from_ms
    to_ms: int | None = None  # record timestamp < to_ms
    count: int | None = None  # stop after this many records
    follow: bool = False  # keep consuming past the snapshot


@dataclass
class RecordSummary:
    out: str
    records: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    first_ts: int | None = None
    last_ts: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (records the log cannot hold)
    interrupted: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Partition:
    __slots__ = ("tp", "logical", "queue", "limit", "position", "paused", "since")

    def __init__(self, tp: TopicPartition, logical: str) -> None:
        self.tp, self.logical = tp, logical
        self.queue: deque[Any] = deque()
        self.limit: int | None = None  # snapshot end: the first high watermark seen
        self.position = 0  # next offset the consumer will hand out
        self.paused = False
        self.since = time.monotonic()


class _Merge:
    """The partitions of a recording and the rule that says when one of them holds the merge back."""

    def __init__(self, consumer: AIOKafkaConsumer, parts: list[_Partition], follow: bool) -> None:
        self.consumer, self.parts, self.follow = consumer, parts, follow

    def end(self, p: _Partition) -> int | None:
        hw = self.consumer.highwater(p.tp)
        if self.follow or p.limit is None:
            return hw
        return p.limit

    def exhausted(self, p: _Partition) -> bool:
        """Nothing buffered and nothing more to read (for now, when following)."""
        if p.queue:
            return False
        end = self.end(p)
        if end is None:
            return time.monotonic() - p.since > UNKNOWN_HIGHWATER_S
        return p.position >= end

    def left(self) -> int | None:
        """Records not yet handed out, or None while a partition's end is unknown."""
        total = 0
        for p in self.parts:
            end = self.end(p)
            if end is None:
                return None
            total += max(end - p.position, 0) + len(p.queue)
        return total

    def emit(self, draining: bool) -> Iterator[tuple[_Partition, Any]]:
        """Messages in merge order, until a partition that may hold an earlier one must be fetched."""
        if not draining and any(not p.queue and not self.exhausted(p) for p in self.parts):
            return
        heap = [(p.queue[0].timestamp, p.tp.topic, p.tp.partition, p.queue[0].offset, i)
                for i, p in enumerate(self.parts) if p.queue]
        heapq.heapify(heap)
        while heap:
            i = heapq.heappop(heap)[4]
            p = self.parts[i]
            yield p, p.queue.popleft()
            if p.queue:
                head = p.queue[0]
                heapq.heappush(heap, (head.timestamp, p.tp.topic, p.tp.partition, head.offset, i))
            elif not draining and not self.exhausted(p):
                return


async def record_async(
    settings: Settings,
    out: str | Path,
    opts: RecordOptions = RecordOptions(),
    *,
    progress: str = "auto",
    progress_interval_s: float = 10.0,
    stop: asyncio.Event | None = None,
) -> RecordSummary:
    """Consume ``opts.topics`` into ``out`` and return what was written; ``stop`` (or a signal) ends it."""
    if opts.count is not None and opts.count < 1:
        raise RecordError("--count must be at least 1")
    if opts.from_ms is not None and opts.to_ms is not None and opts.to_ms <= opts.from_ms:
        raise RecordError("--to must be after --from")
    follow = opts.follow or (opts.to_ms is not None and opts.to_ms > time.time() * 1000)
    stop = stop or asyncio.Event()
    started = time.monotonic()
    summary = RecordSummary(out=str(out))
    bound_batches(settings.max_batch_bytes)  # a batch past it is skipped (warned, counted), as the worker refuses it
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=200)
    await consumer.start()
    try:
        parts = await _assign(consumer, settings, opts.topics)
        writer = ChunkWriter(out)
        try:
            with stop_on_signals(stop):
                await _consume(consumer, _Merge(consumer, parts, follow), writer, opts, follow, stop, summary,
                               Progress("record", mode=progress, interval_s=progress_interval_s))
        finally:
            writer.close()
    finally:
        await consumer.stop()
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


async def _consume(consumer: AIOKafkaConsumer, merge: _Merge, writer: ChunkWriter, opts: RecordOptions, follow: bool,
                   stop: asyncio.Event, summary: RecordSummary, bar: Progress) -> None:
    """Fetch rounds: write what the merge allows, stop when done, else fetch more."""
    by_topic: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    def eta_s(count: int, position: int | None, rate: float) -> float | None:
        left = merge.left()
        return left / rate if left is not None and rate > 0 else None

    if not follow:  # a snapshot knows how much is left; following has no end to estimate
        bar.eta = eta_s

    def in_range(ts: int) -> bool:
        return (opts.from_ms is None or ts >= opts.from_ms) and (opts.to_ms is None or ts < opts.to_ms)

    done = False
    while not done:
        draining = stop.is_set()
        lines: list[bytes] = []
        for p, msg in merge.emit(draining):
            line = _line(p.logical, msg, skipped)
            if line is None:
                continue
            lines.append(line)
            by_topic[p.logical] += 1
            summary.records += 1
            if summary.first_ts is None:
                summary.first_ts = msg.timestamp
            summary.last_ts = msg.timestamp
            bar.update(summary.records, msg.timestamp)
            if opts.count is not None and summary.records >= opts.count:
                done = True
                break
        writer.write_lines(lines)
        bar.update(summary.records)  # progress shows while following a quiet topic, too
        summary.by_topic, summary.skipped = dict(sorted(by_topic.items())), dict(skipped)
        if done:
            break
        if draining:
            summary.interrupted = True
            break
        if all(merge.exhausted(p) for p in merge.parts):
            if not follow or (opts.to_ms is not None and time.time() * 1000 >= opts.to_ms):
                break
        batch = await consumer.getmany(timeout_ms=200, max_records=5000)
        for p in merge.parts:
            for msg in batch.get(p.tp, ()):
                if not follow and p.limit is not None and msg.offset >= p.limit:
                    continue
                if in_range(msg.timestamp):
                    p.queue.append(msg)
            p.position = await consumer.position(p.tp)
            if p.limit is None:
                p.limit = consumer.highwater(p.tp)
            full = len(p.queue) >= QUEUE_PAUSE or (not follow and p.limit is not None and p.position >= p.limit)
            if full != p.paused:
                (consumer.pause if full else consumer.resume)(p.tp)
                p.paused = full
    bar.finish()


def record(settings: Settings, out: str | Path, opts: RecordOptions = RecordOptions(), **kwargs: Any) -> RecordSummary:
    return asyncio.run(record_async(settings, out, opts, **kwargs))


async def _assign(consumer: AIOKafkaConsumer, settings: Settings, topics: tuple[str, ...]) -> list[_Partition]:
    parts: list[_Partition] = []
    for logical in topics:
        name = settings.topic(logical)
        tps = await topic_partitions(consumer, name)
        if not tps:
            raise RecordError(f"topic {name!r} does not exist")
        parts += [_Partition(tp, logical) for tp in tps]
    consumer.assign([p.tp for p in parts])
    await consumer.seek_to_beginning(*(p.tp for p in parts))
    for p in parts:
        p.position = await consumer.position(p.tp)
    return parts


def _line(logical: str, msg: Any, skipped: Counter[str]) -> bytes | None:
    """The log line of one consumed message; None (counted, warned) if the format cannot hold it."""
    if type(msg.value) is RefusedBatch:
        skipped["batch_too_large"] += 1
        log.warning("not recorded: %s/%s: %s", msg.topic, msg.partition, msg.value.detail)
        return None
    if msg.key is not None:
        try:
            msg.key.decode("utf-8")
        except UnicodeDecodeError:
            skipped["key_not_utf8"] += 1
            log.warning("not recorded: %s/%s@%s has a key that is not UTF-8", msg.topic, msg.partition, msg.offset)
            return None
    if msg.value is None:
        skipped["null_value_recorded_as_empty"] += 1
    return encode_line(LogRecord(logical, msg.key, msg.timestamp, msg.value or b""))
