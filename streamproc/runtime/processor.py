"""The processing core, free of any Kafka client: messages in, window state and dead letters out.

The Faust worker (``runtime/worker.py``) feeds it; tests and benchmarks can drive it directly. Keeping it apart
from the transport is what lets the same rules run at the Python limit in a benchmark and inside Faust.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_right
from operator import attrgetter
from typing import Any, Iterable, Sequence

from streamproc import metrics
from streamproc.core.batch import Limits, apply_batch
from streamproc.core.state import PartitionState, Rules, Snapshot, WindowKey
from streamproc.core.windows import window_start
from streamproc.ingest.deadletter import make_record
from streamproc.ingest.events import Rejection, decode
from streamproc.ingest.pack import message_units
from streamproc.settings import Settings
from streamproc.store import Sink

log = logging.getLogger(__name__)

TP = tuple[str, int]  # (logical topic, partition)
_offset = attrgetter("offset")
REOPEN_READ_MAX = 256  # windows read back from the store in one query


class WindowNotLoaded(Exception):
    """An evicted window must be read back from the store before its batch can go on.

    Raised from the hot path instead of querying the store there when the processor defers reopens: the
    worker's event loop then never waits on the store (an embedded store runs one statement at a time, so
    a reopen could wait behind a board's query). The worker reads the window in a thread
    (``Processor.reopen``) and applies the batch again, which resumes at the unit that needed it.
    """

    def __init__(self, topic: str, partition: int, key: WindowKey) -> None:
        super().__init__(f"window {key} of {topic}/{partition} is to be read from the store")
        self.topic, self.partition, self.key = topic, partition, key


class Processor:
    """Owns the per-partition states of one worker and the pending dead letters."""

    def __init__(self, settings: Settings, sink: Sink, *, defer_reopen: bool = False) -> None:
        """``defer_reopen``: a window to reopen raises ``WindowNotLoaded`` instead of being read from the
        store on the spot (the worker's way, see ``reopen``); without it the read happens inline."""
        self.settings = settings
        self.sink = sink
        self.defer_reopen = defer_reopen
        self.reopened: dict[tuple[str, int, WindowKey], list | None] = {}  # read by ``reopen``, not yet taken
        self.rules = Rules(lateness_ms=settings.lateness_ms, order_dedupe_horizon_ms=settings.order_dedupe_horizon_ms,
                           idle_close_ms=settings.idle_close_ms, closed_windows_kept=settings.closed_windows_kept)
        self.states: dict[TP, PartitionState] = {}
        self.dead: list[tuple[bytes, bytes]] = []
        self.counts = {"consumed": 0, "accepted": 0, "rejected": 0, "stale": 0, "late_corrections": 0}
        self.appended: dict[TP, list[tuple[int, int, int, int]]] = {}  # batches applied, not yet flushed
        # the per-batch loop (core/batch.py); tests and benchmarks put apply_batch_reference here to compare
        self.apply_batch = apply_batch

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

    def _load_window(self, topic: str, partition: int, key: WindowKey) -> list | None:
        """Reopen an evicted window from its last snapshot. A sink error (or ``WindowNotLoaded``)
        propagates: the state is left as it was before the unit, and the batch applied again resumes at it."""
        if not self.defer_reopen:
            return self.sink.load_window(topic, partition, key)
        try:
            return self.reopened.pop((topic, partition, key))
        except KeyError:
            raise WindowNotLoaded(topic, partition, key) from None

    def windows_to_reopen(self, need: WindowNotLoaded, records: Sequence[Any]) -> list[WindowKey]:
        """``need``'s window, then every other evicted window the rest of the batch touches (at most
        ``REOPEN_READ_MAX``), to be read in one query. Called on the event loop, where the state is not
        changing under it. A window read and not taken (its event late after all) is dropped when the
        batch ends (``drop_reopened``): kept, it could outlive a later change of the window it copies."""
        st = self.states.get((need.topic, need.partition))
        keys = [need.key]
        if st is None:
            return keys
        s, window_ms, seen = self.settings, self.rules.window_ms, {need.key}
        for rec in records[bisect_right(records, st.offset, key=_offset):]:
            units = message_units(rec.value, s.max_message_bytes, s.max_pack_lines)
            for unit in units if type(units) is list else ():
                event = decode(unit, need.topic, rec.key, rec.timestamp, max_bytes=s.max_message_bytes,
                               max_future_ms=s.max_future_ms)
                if type(event) is Rejection:
                    continue
                key = (window_start(event.ts, window_ms), event.streamer_id)
                if key not in seen and key not in st.windows and key not in st.closed and st.may_be_stored(key):
                    seen.add(key)
                    keys.append(key)
                    if len(keys) == REOPEN_READ_MAX:
                        return keys
        return keys

    def reopen(self, need: WindowNotLoaded, keys: Sequence[WindowKey] = ()) -> None:
        """Read ``keys`` (default: the window ``need`` names) from the store in one query, for the hot path
        to take. Thread safe against the event loop's processing: one dict update, and only the hot path
        takes its items."""
        keys = keys or [need.key]
        found = self.sink.load_windows(need.topic, need.partition, keys)
        self.reopened.update({(need.topic, need.partition, k): found.get(k) for k in keys})

    def drop_reopened(self, topic: str, partition: int) -> None:
        for k in [k for k in self.reopened if k[0] == topic and k[1] == partition]:
            del self.reopened[k]

    def revoke(self, tps: Iterable[TP]) -> None:
        gone = set(tps)
        for tp in gone:
            self.states.pop(tp, None)
            self.appended.pop(tp, None)
            self.drop_reopened(*tp)  # a new owner reads them from its own restore

    # -- messages -------------------------------------------------------------------------------

    def handle_batch(self, topic: str, partition: int, records: Sequence[Any]) -> None:
        """Apply consecutive records of one partition (aiokafka records: offset, key, value, timestamp ms).

        Never raises on bad input: bad input becomes a dead letter. It may raise when a window is to be
        reopened: ``WindowNotLoaded`` if reopens are deferred, or the store's error if it is away; called
        again with the same records, it resumes at the first unit not yet applied. The loop is the hot
        path (``core/batch.py``: one loop, the reference rules as its oracle); metrics are counted once
        per batch.
        """
        st = self.states.get((topic, partition))
        if st is None:  # not ours (revoked meanwhile): the new owner reads it again
            self.counts["stale"] += len(records)
            return
        before = st.offset
        if records and records[0].offset <= before:  # a batch applied again after a reopen, or a redelivery
            records = records[bisect_right(records, before, key=_offset):]
        s = self.settings
        limits = Limits(s.max_message_bytes, s.max_future_ms, s.max_pack_lines, s.lateness_ms, s.order_dedupe_horizon_ms)
        now_ms = int(time.time() * 1000)  # the reader's clock: no record may claim to be from its future
        tally = [0, 0, 0]  # accepted, rejected, late
        corrections, reopens = st.late_corrections, st.reopens[:]
        try:
            self.apply_batch(st, topic, partition, records, limits, now_ms, self._dead_letter, tally)
        finally:
            accepted, rejected, late = tally
            self.counts["consumed"] += accepted + rejected
            self.counts["accepted"] += accepted
            metrics.count_batch(topic, accepted, rejected, late)
            if st.late_corrections > corrections:
                self.counts["late_corrections"] += st.late_corrections - corrections
                metrics.LATE_CORRECTIONS.inc(st.late_corrections - corrections)
            if st.reopens != reopens:
                metrics.count_reopens(st.reopens[0] - reopens[0], st.reopens[1] - reopens[1])
            if st.offset > before:  # also when it stopped half way: what it applied becomes visible
                self._note_appended((topic, partition), records, st.offset)

    def _note_appended(self, tp: TP, records: Sequence[Any], upto: int) -> None:
        """Remember the messages of ``records`` applied up to ``upto`` (count, first and last record
        timestamp) until the flush that makes them visible: the append clock of freshness
        (``take_appended``). Once per batch."""
        n = len(records) if records[-1].offset <= upto else bisect_right(records, upto, key=_offset)
        if n:
            self.appended.setdefault(tp, []).append(
                (records[n - 1].offset, n, records[0].timestamp, records[n - 1].timestamp))

    def take_appended(self, snaps: Sequence[Snapshot]) -> list[tuple[int, int, int]]:
        """``(messages, first_ms, last_ms)`` of every batch these written snapshots made visible."""
        out: list[tuple[int, int, int]] = []
        for snap in snaps:
            pending = self.appended.get((snap.topic, snap.partition))
            if pending:
                i = 0
                while i < len(pending) and pending[i][0] <= snap.offset:
                    i += 1
                out += [(n, first, last) for _, n, first, last in pending[:i]]
                del pending[:i]
        return out

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
                f"{t}/{p}": {"offset": st.offset, "flushed_offset": st.flushed_offset, "open_windows": len(st.windows),
                             "closed_windows_kept": len(st.closed),
                             "order_ids": len(st.orders_seen)}
                for (t, p), st in sorted(self.states.items())
            },
            "counts": dict(self.counts),
            "buffered_rows": self.buffered_rows,
        }
