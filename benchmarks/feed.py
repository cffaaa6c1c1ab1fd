"""A paced feed of records into the broker, for the runs that measure the worker while it is fed
(freshness, soak, readers, boards under load).

The feed shares the machine's two cores with the worker, the broker and the store, so whatever it
costs is taken from what it measures. At 56k events/s (measured here, feed alone, 12 s): aiokafka's
producer (Python) took 94 % of a core and could not hold the rate; librdkafka (confluent-kafka, C) holds
it for 47 %, and with 25 ms of linger instead of 5 for 39 %, while the broker, answering fewer and larger
produce requests, drops from 37 % to 14 %. A producer on a machine of its own, as in production, would
cost the worker's machine nothing. The records keep their partitions (murmur2 on the key, as aiokafka
and the Java client) and are stamped as they are handed to the producer (``corpus.live``), so the
linger counts in the freshness measured. Batches are compressed as ``STREAMPROC_PRODUCE_COMPRESSION``
says (none by default; the soak's lz4, see ``endtoend.soak``).
"""

from __future__ import annotations

import threading
import time
from typing import Iterable

from confluent_kafka import KafkaException, Producer

from streamproc.logs.logfile import LogRecord
from streamproc.logs.produce import MIN_SLEEP_S, PublishResult, RatePacer
from streamproc.runtime.kafka import client_kwargs, compression
from streamproc.settings import Settings

from .corpus import live

POLL_EVERY = 1_000  # records between two serves of the delivery reports


def feed(records: Iterable[LogRecord], settings: Settings, rate: float, result: PublishResult | None = None,
         stop: threading.Event | None = None) -> PublishResult:
    """Send ``records`` in order at ``rate`` per second (0: as fast as the producer takes them) and wait
    until the broker has acknowledged every one (``acks=all``); ``result`` counts acknowledgements and
    keeps the last offset of each partition as they come. No record is sent after ``stop`` is set."""
    kwargs = client_kwargs(settings)
    if kwargs["security_protocol"] != "PLAINTEXT":
        raise ValueError("the benchmark feed speaks PLAINTEXT only (the embedded broker)")
    result = result or PublishResult()
    logical: dict[str, str] = {}
    failed: list[str] = []

    def delivered(err: object, msg: object) -> None:
        if err is not None:
            failed.append(str(err))
            return
        key = (logical[msg.topic()], msg.partition())  # type: ignore[attr-defined]
        if msg.offset() > result.last_offsets.get(key, -1):  # type: ignore[attr-defined]
            result.last_offsets[key] = msg.offset()  # type: ignore[attr-defined]
        result.count += 1

    producer = Producer({"bootstrap.servers": kwargs["bootstrap_servers"], "linger.ms": 25, "acks": "all",
                         "partitioner": "murmur2_random", "batch.size": 256 * 1024, "message.max.bytes": 4 * 2**20,
                         "enable.idempotence": False, "compression.type": compression(settings) or "none"})
    stop = stop or threading.Event()
    pacer = RatePacer(rate) if rate else None
    started = time.monotonic()
    for index, rec in enumerate(records):
        if stop.is_set():
            break
        if pacer is not None:
            delay = pacer.due_s(index, rec) - (time.monotonic() - started)
            if delay > MIN_SLEEP_S and stop.wait(delay):
                break
        topic = settings.topic(rec.topic)
        logical.setdefault(topic, rec.topic)
        while True:
            try:
                producer.produce(topic, rec.value, key=rec.key, timestamp=rec.ts, on_delivery=delivered)
                break
            except BufferError:  # the producer's queue is full: let it drain
                producer.poll(0.01)
        if index % POLL_EVERY == 0:
            producer.poll(0)
    if producer.flush(60) or failed:
        raise KafkaException(f"the feed lost records: {len(failed)} refused ({failed[:3]}), "
                             f"{len(producer)} unacknowledged")
    result.seconds = time.monotonic() - started
    return result


class Feed:
    """Publishes records at ``rate`` from a thread of its own until stopped (or out of records, unless
    ``cycle``), each stamped as it is sent (``corpus.live``)."""

    def __init__(self, settings: Settings, records: list[LogRecord], rate: float, cycle: bool = False) -> None:
        self.result = PublishResult()  # its last_offsets move as the broker acknowledges
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(settings, records, rate, cycle), daemon=True)

    def _run(self, settings: Settings, records: list[LogRecord], rate: float, cycle: bool) -> None:
        try:
            feed(live(records, cycle), settings, rate, self.result, self._stop)
        except BaseException as exc:  # reported by __exit__: a lost feed must fail the run, not hide
            self.error = exc

    def __enter__(self) -> "Feed":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"the feed failed: {self.error!r}") from self.error
