"""A paced feed of records into the broker, for the runs that measure the worker while it is fed
(freshness, soak, readers, boards under load).

The feed shares the machine's two cores with the worker, the broker and the store, so whatever it
costs is taken from what it measures. At 56k events/s (measured here, feed alone, 12 s): aiokafka's
producer (Python) took 94 % of a core and could not hold the rate; librdkafka (confluent-kafka, C) holds
it for 47 %, and with 25 ms of linger instead of 5 for 39 %, while the broker, answering fewer and larger
produce requests, drops from 37 % to 14 %. A producer on a machine of its own, as in production, would
cost the worker's machine nothing. At 114k events/s the feed alone took 4.70 / 4.99 / 5.23 CPU µs an
event (0.54-0.60 of a core) while it decoded and encoded every payload to restamp it, and takes 3.55 /
4.42 / 3.57 (0.40-0.50) since it splices the new event time into the payload's bytes (``corpus.Stamps``;
three interleaved rounds of the 1M corpus, feed alone). The records keep their partitions (murmur2 on
the key, as aiokafka and the Java client) and are stamped as they are handed to the producer, so the
linger counts in the freshness measured. Batches are compressed as ``STREAMPROC_PRODUCE_COMPRESSION``
says (none by default; the soak's lz4, see ``endtoend.soak``).
"""

from __future__ import annotations

import os
import threading
import time
from itertools import chain, repeat
from typing import Any

from confluent_kafka import KafkaException, Producer

from streamproc.logs.logfile import LogRecord
from streamproc.logs.produce import MIN_SLEEP_S, PublishResult
from streamproc.runtime.kafka import client_kwargs, compression
from streamproc.settings import Settings

from .corpus import Stamps

POLL_EVERY = 1_000  # records between two serves of the delivery reports
FEED_NICE = 10  # how much lower than the bench's own the feed's CPU priority is (``Feed``)


def feed(stamps: Stamps, settings: Settings, rate: float, result: PublishResult | None = None,
         stop: threading.Event | None = None, cycle: bool = False) -> PublishResult:
    """Send the records of ``stamps`` in order at ``rate`` per second (0: as fast as the producer takes
    them), each stamped as it is sent, over again from the start if ``cycle``, and wait until the broker
    has acknowledged every one (``acks=all``); ``result`` counts acknowledgements and keeps the last
    offset of each partition as they come. No record is sent after ``stop`` is set."""
    kwargs = client_kwargs(settings)
    if kwargs["security_protocol"] != "PLAINTEXT":
        raise ValueError("the benchmark feed speaks PLAINTEXT only (the embedded broker)")
    result = result or PublishResult()
    records = stamps.records
    names = {t: settings.topic(t) for t in {r.topic for r in records}}
    logical = {name: t for t, name in names.items()}
    last = result.last_offsets
    failed: list[str] = []

    def delivered(err: object, msg: Any) -> None:
        if err is not None:
            failed.append(str(err))
            return
        key, offset = (logical[msg.topic()], msg.partition()), msg.offset()
        if offset > last.get(key, -1):
            last[key] = offset
        result.count += 1

    producer = Producer({"bootstrap.servers": kwargs["bootstrap_servers"], "linger.ms": 25, "acks": "all",
                         "partitioner": "murmur2_random", "batch.size": 256 * 1024, "message.max.bytes": 4 * 2**20,
                         "enable.idempotence": False, "compression.type": compression(settings) or "none"})
    stop = stop or threading.Event()
    produce, poll, stopped, wall, clock = producer.produce, producer.poll, stop.is_set, time.time, time.monotonic
    seconds_each = 1 / rate if rate else 0.0
    sends = range(len(records))
    order = chain.from_iterable(repeat(sends)) if cycle else sends
    started = clock()
    for index, i in enumerate(order):
        if stopped():
            break
        if seconds_each:
            ahead = index * seconds_each - (clock() - started)
            if ahead > MIN_SLEEP_S and stop.wait(ahead):
                break
        rec = records[i]
        now = int(wall() * 1000)
        value = stamps.value(i, now)
        while True:
            try:
                produce(names[rec.topic], value, key=rec.key, timestamp=now, on_delivery=delivered)
                break
            except BufferError:  # the producer's queue is full: let it drain
                poll(0.01)
        if index % POLL_EVERY == 0:
            poll(0)
    if producer.flush(60) or failed:
        raise KafkaException(f"the feed lost records: {len(failed)} refused ({failed[:3]}), "
                             f"{len(producer)} unacknowledged")
    result.seconds = clock() - started
    return result


def yield_cpu(nice: int = FEED_NICE) -> bool:
    """Lower the calling thread's CPU priority by ``nice`` (Linux: a thread id is a process id to
    ``setpriority``); the threads it starts afterwards, librdkafka's among them, inherit it. False where
    the system does not allow it (the feed then runs at the priority it has)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (OSError, AttributeError):
        return False
    return True


class Feed:
    """Publishes records at ``rate`` from a thread of its own until stopped (or out of records, unless
    ``cycle``), each stamped as it is sent (``corpus.Stamps``).

    The feed stands in for producers on other machines, but here it shares two cores with the worker,
    the broker and the store, and when the worker and the feed both want a core the worker should have
    it, as it would beside a remote producer. So the feed's thread, and librdkafka's threads, which it
    starts, run at a lower priority (``yield_cpu``). Nothing of the feed's own waiting can flatter the
    worker: a record is stamped when it is handed to the producer, so a wait after that counts in the
    latency measured, and a feed that could not hold its rate shows in the rate achieved. Six
    interleaved freshness pairs at 114k events/s, not niced then niced: the niced feed had the lower p99
    in five (medians 1.667 and 1.510 s; docs/SCALING.md, "The feed's share").
    """

    def __init__(self, settings: Settings, records: list[LogRecord], rate: float, cycle: bool = False) -> None:
        self.result = PublishResult()  # its last_offsets move as the broker acknowledges
        self.error: BaseException | None = None
        self._stop = threading.Event()
        stamps = Stamps(records)  # here, not in the thread: the feed starts sending when it is entered
        self._thread = threading.Thread(target=self._run, args=(settings, stamps, rate, cycle), daemon=True)

    def _run(self, settings: Settings, stamps: Stamps, rate: float, cycle: bool) -> None:
        try:
            yield_cpu()
            feed(stamps, settings, rate, self.result, self._stop, cycle)
        except BaseException as exc:  # reported by __exit__: a lost feed must fail the run, not hide
            self.error = exc

    def __enter__(self) -> "Feed":
        self._thread.start()
        return self

    def join(self) -> PublishResult:
        """Wait until every record is sent and acknowledged (a feed that does not ``cycle``)."""
        self._thread.join()
        self._raise()
        return self.result

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the feed failed: {self.error!r}") from self.error
