"""The processing core, free of any Kafka client: messages in, window state and dead letters out.

The Faust worker (``runtime/worker.py``) feeds it; tests and benchmarks can drive it directly. Keeping it apart
from the transport is what lets the same rules run at the Python limit in a benchmark and inside Faust.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

from streamproc import metrics
from streamproc.core.state import PartitionState, Rules, Snapshot
from streamproc.ingest.deadletter import make_record
from streamproc.ingest.events import Order, Rejection, decode
from streamproc.ingest.pack import message_units
from streamproc.settings import Settings
from streamproc.store import Sink

log = logging.getLogger(__name__)

TP = tuple[str, int]  # (logical topic, partition)


class Processor:
    """Owns the per-partition states of one worker and the pending dead letters."""

    def __init__(self, settings: Settings, sink: Sink) -> None:
        self.settings = settings
        self.sink = sink
        self.rules = Rules(lateness_ms=settings.lateness_ms, order_dedupe_horizon_ms=settings.order_dedupe_horizon_ms,
                           idle_close_ms=settings.idle_close_ms)
        self.states: dict[TP, PartitionState] = {}
        self.dead: list[tuple[bytes, bytes]] = []
        self.counts = {"consumed": 0, "accepted": 0, "rejected": 0, "stale": 0, "late_corrections": 0}

    # -- ownership ------------------------------------------------------------------------------

    def assign(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Restore each partition from the sink; returns the offset to resume from (checkpoint + 1)."""
        resume = {}
        for topic, part in tps:
            r = self.sink.restore(topic, part, self.rules.window_ms, self.rules.lateness_ms,
                                  self.rules.order_dedupe_horizon_ms)
            st = PartitionState(topic, part, self.rules, self._load_window)
            st.restore(r.offset, r.windows, r.streamers, r.orders)
            self.states[(topic, part)] = st
            resume[(topic, part)] = r.offset + 1
            log.info("restored %s/%d at offset %d: %d open windows, %d streamers, %d order ids",
                     topic, part, r.offset, len(r.windows), len(r.streamers), len(r.orders))
        return resume

    def _load_window(self, topic: str, partition: int, key: tuple[int, str]) -> list | None:
        """Reopen an evicted window from its last snapshot. A sink error propagates: the state is left
        as it was before the unit, and the worker retries the batch (asynchronously, with backoff)
        from the next unapplied unit."""
        return self.sink.load_window(topic, partition, key)

    def revoke(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.states.pop(tp, None)

    # -- messages -------------------------------------------------------------------------------

    def handle_batch(self, topic: str, partition: int, records: Sequence[Any]) -> None:
        """Apply consecutive records of one partition (aiokafka records: offset, key, value, timestamp ms).

        Never raises on bad input: bad input becomes a dead letter. It may raise when the sink is needed
        and away (reopening a window); called again with the same records, it resumes at the first unit
        not yet applied. The loop is the hot path, so names are bound locally and metrics are counted
        once per batch.
        """
        st = self.states.get((topic, partition))
        if st is None:  # not ours (revoked meanwhile): the new owner reads it again
            self.counts["stale"] += len(records)
            return
        s = self.settings
        max_bytes, max_future, max_lines = s.max_message_bytes, s.max_future_ms, s.max_pack_lines
        now_ms = int(time.time() * 1000)  # the reader's clock: no record may claim to be from its future
        apply, skip, applied = st.apply, st.skip, st.applied
        tally = [0, 0, 0]  # accepted, rejected, late
        corrections = st.late_corrections
        try:
            for rec in records:
                offset = rec.offset
                if offset <= st.offset:  # already applied (redelivery after a seek)
                    continue
                key, value, record_ts = rec.key, rec.value, rec.timestamp
                # the message, or the lines of a pack; size comes first (see pack.message_units)
                units = message_units(value, max_bytes, max_lines) if value and b"\n" in value else [value]
                if type(units) is Rejection:  # a pack of too many lines: refused whole, one dead letter
                    skip(offset, 0, True)
                    self._dead_letter(topic, partition, offset, key, value, record_ts, units, 0)
                    tally[1] += 1
                    continue
                final = len(units) - 1
                for index, v in enumerate(units):
                    if applied(offset, index):  # a retry after this unit went in
                        continue
                    event = decode(v, topic, key, record_ts, max_bytes=max_bytes, max_future_ms=max_future, now_ms=now_ms)
                    if type(event) is Rejection:
                        skip(offset, index, index == final)
                        self._dead_letter(topic, partition, offset, key, v, record_ts, event, index)
                        tally[1] += 1
                    elif apply(offset, event, index, index == final):
                        tally[0] += 1
                    else:
                        tally[1] += 1
                        tally[2] += 1
                        allowed = s.order_dedupe_horizon_ms if type(event) is Order else s.lateness_ms
                        self._dead_letter(topic, partition, offset, key, v, record_ts,
                                          Rejection("late", f"more than {allowed} ms behind the streamer's watermark"),
                                          index)
        finally:
            accepted, rejected, late = tally
            self.counts["consumed"] += accepted + rejected
            self.counts["accepted"] += accepted
            metrics.count_batch(topic, accepted, rejected, late)
            if st.late_corrections > corrections:
                self.counts["late_corrections"] += st.late_corrections - corrections
                metrics.LATE_CORRECTIONS.inc(st.late_corrections - corrections)

    def _dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     record_ts: int | None, rejection: Rejection, index: int = 0) -> None:
        self.counts["rejected"] += 1
        metrics.count_rejection(rejection.reason)
        self.dead.append(make_record(topic, partition, offset, key, value, record_ts, rejection, index))

    def take_dead_letters(self) -> list[tuple[bytes, bytes]]:
        dead, self.dead = self.dead, []
        return dead

    # -- flushing -------------------------------------------------------------------------------

    def snapshot(self) -> list[Snapshot]:
        return [snap for st in self.states.values() if (snap := st.snapshot()) is not None]

    def flush_failed(self, snaps: list[Snapshot]) -> None:
        for snap in snaps:
            st = self.states.get((snap.topic, snap.partition))
            if st is not None:
                st.flush_failed(snap)

    def flush_done(self, snaps: list[Snapshot]) -> None:
        """After a successful flush, or a tick with nothing to flush: evict closed and idle windows.

        Partitions that had nothing in this flush get the same eviction, so a partition that went quiet
        does not keep its windows in memory for good.
        """
        flushed = {(snap.topic, snap.partition): snap for snap in snaps}
        for tp, st in self.states.items():
            snap = flushed.get(tp)
            if snap is not None or st.windows:
                st.flush_done(snap)

    @property
    def buffered_rows(self) -> int:
        return sum(st.buffered_rows for st in self.states.values())

    def status(self) -> dict:
        return {
            "partitions": {
                f"{t}/{p}": {"offset": st.offset, "flushed_offset": st.flushed_offset, "open_windows": len(st.windows)}
                for (t, p), st in sorted(self.states.items())
            },
            "counts": dict(self.counts),
            "buffered_rows": self.buffered_rows,
        }
