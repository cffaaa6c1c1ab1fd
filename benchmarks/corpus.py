"""The benchmark's input: seeded generator logs, cached on disk, and filling topics with them fast.

Generating a million simulated events takes longer than consuming them, so each (events, streamers,
seed) corpus is written once under ``benchmarks/.work/corpus`` and read back on later runs. The log is
the project's recorded-log format, so ``demo.reconcile`` can check a run against the SQL oracle.

Filling goes around ``produce.publish``: that path awaits every send, which caps it at a few ten
thousand records/s, while here whole per-partition record batches are built and sent, so filling a
topic costs seconds, not the run's budget. Packed messages are built by ``streamproc.ingest.pack``, the format
producers use. Keys are partitioned with murmur2, as every Kafka client does, so a streamer's events
land where a live producer would put them.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from streamproc.logs.logfile import LogRecord, read_log, write_log
from streamproc.logs.packs import pack_records
from streamproc.logs.replay import shift_event
from streamproc.runtime.topics import EVENT_TOPICS, partitions_of
from streamproc.settings import Settings
from streamproc.sim.generate import generate

WORK_DIR = Path(__file__).resolve().parent / ".work"
BATCH_BYTES = 1 << 20


def corpus_log(n_events: int, n_streamers: int, seed: int = 1, cache_dir: Path | None = None) -> Path:
    """Path of the generated log of ``n_events`` for ``n_streamers`` (generated now if not cached)."""
    cache_dir = cache_dir or WORK_DIR / "corpus"
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"events-{n_events}-s{n_streamers}-seed{seed}.jsonl.zst"
    if not path.exists():
        tmp = path.with_name(f".{os.getpid()}-{path.name}")  # same suffix: same compression
        write_log(tmp, generate(n_events, seed=seed, n_streamers=n_streamers))
        tmp.rename(path)
    return path


def load(path: Path, limit: int | None = None) -> list[LogRecord]:
    out = []
    for rec in read_log(path):
        if limit is not None and len(out) >= limit:
            break
        out.append(rec)
    return out


@dataclass
class Filled:
    """What one fill put on the broker: the caught-up mark for every consumer measured on it."""

    prefix: str
    events: int
    messages: int
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (logical topic, partition)
    seconds: float = 0.0
    value_bytes: int = 0

    def offsets_arg(self) -> dict[str, int]:
        """``{"topic/partition": last offset}`` with full topic names, for a child process."""
        return {f"{self.prefix}{t}/{p}": o for (t, p), o in self.last_offsets.items()}


async def fill(settings: Settings, records: Iterable[LogRecord]) -> Filled:
    """Send every record as one message, in log order per partition, acknowledged by the broker."""
    parts = {t: partitions_of(t) for t in EVENT_TOPICS}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
                                max_batch_size=BATCH_BYTES, max_request_size=4 * BATCH_BYTES)
    await producer.start()
    started = time.monotonic()
    result = Filled(settings.topic_prefix, 0, 0)
    partition_of: dict[bytes | None, int] = {}
    builders: dict[tuple[str, int], object] = {}
    pending: list[asyncio.Future] = []

    async def send(tp: tuple[str, int], batch: object) -> None:
        pending.append(await producer.send_batch(batch, settings.topic(tp[0]), partition=tp[1]))

    try:
        for rec in records:
            p = partition_of.get(rec.key)
            if p is None:
                p = partition_of[rec.key] = (murmur2(rec.key or b"") & 0x7FFFFFFF) % parts[rec.topic]
            tp = (rec.topic, p)
            batch = builders.get(tp)
            if batch is None:
                batch = builders[tp] = producer.create_batch()
            if batch.append(key=rec.key, value=rec.value, timestamp=rec.ts) is None:  # full: send it
                await send(tp, batch)
                batch = builders[tp] = producer.create_batch()
                batch.append(key=rec.key, value=rec.value, timestamp=rec.ts)
            result.last_offsets[tp] = result.last_offsets.get(tp, -1) + 1  # fresh topics: offsets from 0
            result.events += 1
            result.value_bytes += len(rec.value)
        for tp, batch in builders.items():
            await send(tp, batch)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    result.messages = result.events
    result.seconds = time.monotonic() - started
    return result


async def fill_packed(settings: Settings, records: list[LogRecord], pack: int) -> Filled:
    """Up to ``pack`` events of one streamer per message, in the producers' pack format (JSON lines)."""
    packs = list(pack_records(records, pack))
    result = await fill(settings, packs)
    result.messages, result.events = len(packs), len(records)
    result.value_bytes = sum(len(r.value) for r in records)
    return result


def spread(records: list[LogRecord], n_streamers: int) -> list[LogRecord]:
    """The same events dealt round-robin to ``n_streamers`` streamers (event i to streamer i mod n).

    Why not generate a corpus per count: the simulator's rooms follow a Zipf audience and many are dark,
    so "100,000 streamers" yields far fewer active ones. Dealing the same events out makes every one of
    the n streamers active with the same event mix and time span, so only the number of keys (open
    windows, rows per flush) changes between runs. Key and ``streamer_id`` move together; a message
    whose ``streamer_id`` differed from its key (a deliberate key_mismatch) keeps differing.

    Each new value is copied out of what ``orjson.dumps`` returns: that object stays in the buffer orjson
    grew it in, and a million of them held ~4 KB of heap each (4 GB per spread, measured), which the
    benchmark process then kept through the soak while the in-memory broker grew beside it.
    """
    import orjson

    out = []
    for i, rec in enumerate(records):
        new = f"r{i % n_streamers:06d}"
        value = rec.value
        try:
            obj = orjson.loads(value)
            if type(obj) is dict and rec.key is not None and obj.get("streamer_id") == rec.key.decode():
                obj["streamer_id"] = new
                value = bytes(memoryview(orjson.dumps(obj)))  # a copy sized to its length (docstring)
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            pass
        out.append(LogRecord(rec.topic, new.encode(), rec.ts, value))
    return out


def ts_span(value: bytes) -> tuple[int, int, int] | None:
    """Where a record's event time sits in its bytes, so that a live send can splice a new number in
    (``Stamps``) instead of decoding and encoding the whole payload: (start, end) of the digits of the
    top-level integer ``ts`` and its value; (-1, -1, ts) when the bytes do not show it as exactly one
    plain ``"ts":<digits>`` (the send then decodes and encodes: ``replay.shift_event``); None when the
    payload has no integer ``ts`` (a hostile or foreign record, sent as it is). A span is kept only if
    splicing another number there decodes to the same object with that number as its ``ts``."""
    import orjson

    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or type(obj.get("ts")) is not int:
        return None
    ts = obj["ts"]
    digits = str(ts).encode()
    at = value.find(b'"ts":' + digits)
    if at < 0 or value.count(b'"ts":') != 1:
        return (-1, -1, ts)
    i, j = at + 5, at + 5 + len(digits)
    try:
        back = orjson.loads(value[:i] + str(ts + 1).encode() + value[j:])
    except orjson.JSONDecodeError:
        return (-1, -1, ts)
    return (i, j, ts) if back == {**obj, "ts": ts + 1} else (-1, -1, ts)


class Stamps:
    """The records as a live producer would send them now: each is stamped with the wall clock as it is
    taken for sending (its record timestamp: what the broker's append time would be), and its event
    time moved along to keep the record's own simulated delay between event and send (``ts`` earlier
    by the generator's client delay; out-of-order and late events keep theirs). Stamping both at send
    time, not ahead on a plan, is what makes "event time -> visible" mean the producer's delay plus
    the pipeline's and nothing of the benchmark's own: a publisher that starts or runs behind its plan
    would otherwise age every event by its lateness.

    The feed shares the two cores with what it measures, so the per-send work is a splice of the new
    number into the payload's bytes, found once here (``ts_span``): ~0.15 µs a record where decoding and
    encoding each payload cost ~1.5 (benchmarks/feed.py). Every other byte goes as the corpus holds it.
    """

    def __init__(self, records: Sequence[LogRecord]) -> None:
        self.records = records
        self.spans = [ts_span(r.value) for r in records]

    def value(self, index: int, now_ms: int) -> bytes:
        """Record ``index``'s payload as sent at ``now_ms``."""
        rec, span = self.records[index], self.spans[index]
        if span is None:
            return rec.value
        i, j, ts = span
        if i < 0:
            return shift_event(rec.value, now_ms - rec.ts) or rec.value  # JSON (ts_span read it): never None
        return b"%s%d%s" % (rec.value[:i], ts + now_ms - rec.ts, rec.value[j:])
