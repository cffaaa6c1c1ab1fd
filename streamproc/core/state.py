"""Per source partition state: open window accumulators plus the offset of the last applied event.

State is kept per (topic, partition) rather than per streamer so that one checkpoint (an offset) says
exactly which prefix of an immutable log the state aggregates. Faust's changelogged tables are not used
for tallies: under at-least-once delivery their changelog can run ahead of committed offsets and a crash
would double count (docs/ARCHITECTURE.md, invariant 2).

A message may carry a pack of events. ``offset`` only moves once every unit of a message is applied;
``unit`` is the last applied (offset, index). While a message is half applied (an exception between two
units, e.g. the sink away while a window is reopened) the partition is not snapshotted: its windows
hold part of a message its checkpoint could not name. The retry resumes after ``unit``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from operator import itemgetter
from typing import Callable, Iterable, Optional, Sequence

from streamproc.core.windows import WINDOW_MS, is_late, window_start
from streamproc.ingest.events import TOPIC_OF_TYPE, Like, Order, View
from streamproc.settings import Settings

# Slots of a window accumulator (a plain list: cheaper than an object per window on the hot path).
(EVENTS, ENTERS, LEAVES, PEAK, CLOSE, LIKES, PAID, REFUNDED, ITEMS, GMV, REFUND, MAX_TS, LAST_OFFSET) = range(13)
N_SLOTS = 13
# Three more slots the state keeps for itself (never written to the sink), so that the hot path changes one
# list per event instead of probing two more tables: the monotonic time (ns) an event last changed the
# window (idle close); the snapshot generation in which it last changed: ``PartitionState.generation``
# if it changed since the last snapshot (then the accumulator is in ``dirty``), anything lower if not;
# and the window's key, so that a snapshot is one ``zip`` over ``dirty`` with no lookup of the windows.
TOUCHED, DIRTY, KEY = N_SLOTS, N_SLOTS + 1, N_SLOTS + 2
ACC_SLOTS = N_SLOTS + 3

# Column order of a tallies_10s row as the sink writes it.
TALLY_COLUMNS = (
    "window_start", "streamer_id", "src_topic", "src_partition", "version", "last_offset", "max_ts",
    "events", "enters", "leaves", "concurrent_peak", "concurrent_close", "likes",
    "orders_paid", "orders_refunded", "items", "gmv_fen", "refund_fen",
)
# A window's viewers new since the last flush travel as one row with an array (viewer_sets_in, migration 004)
VIEWER_COLUMNS = ("window_start", "streamer_id", "viewer_ids")
ORDER_COLUMNS = (
    "src_topic", "src_partition", "src_offset", "src_index", "order_id", "status", "ts", "window_start", "streamer_id",
    "session_id", "viewer_id", "product_id", "category", "quantity", "amount_fen",
)

# The accumulator slots of TALLY_COLUMNS after max_ts, in that order
_TALLY_SLOTS = (EVENTS, ENTERS, LEAVES, PEAK, CLOSE, LIKES, PAID, REFUNDED, ITEMS, GMV, REFUND)

WindowKey = tuple[int, str]  # (window_start_ms, streamer_id)
_touched = itemgetter(TOUCHED)
ORDERS_TOPIC = TOPIC_OF_TYPE["order"]
# Loads one window's latest snapshot from the sink: (topic, partition, key) -> accumulator or None.
WindowLoader = Callable[[str, int, WindowKey], Optional[list]]


@dataclass(frozen=True)
class Rules:
    """The event-time rules of one worker; the defaults are the settings' (one place to change them)."""

    window_ms: int = WINDOW_MS
    lateness_ms: int = Settings.lateness_ms
    order_dedupe_horizon_ms: int = Settings.order_dedupe_horizon_ms
    idle_close_ms: int = Settings.idle_close_ms
    closed_windows_kept: int = Settings.closed_windows_kept


@dataclass
class Snapshot:
    """What one flush of one partition writes, held as columns: copies, so the state may move on meanwhile.

    At 100k streamers nearly every event changes a window of its own, so a flush carries about a row per
    event. Held as a tuple per row, those rows cost the event loop a tuple each to build, the flush
    thread a transposition to encode, and the garbage collector a visit each; as columns (one ``zip``
    over the windows' accumulators) none of that happens (docs/SCALING.md, "Snapshots as columns, inserts as Arrow").
    """

    topic: str
    partition: int
    offset: int
    slots: list[tuple[int, ...]]  # slots[EVENTS][i]: the events of the i-th window changed (every slot, in order)
    viewers: dict[WindowKey, dict[str, None]]  # each window's viewers new since the last flush, handed over
    orders: list[tuple]
    viewer_ids: int = 0  # how many ids ``viewers`` holds

    @property
    def keys(self) -> Sequence[WindowKey]:
        """The windows changed since the last flush: one tallies_10s row each."""
        return self.slots[KEY]

    @property
    def rows(self) -> int:
        """What the snapshot holds for the sink, counted as the bound on buffered rows counts."""
        return len(self.keys) + self.viewer_ids + len(self.orders)

    def tally_columns(self) -> list[Sequence]:
        """The window rows as columns in ``TALLY_COLUMNS`` order (times in ms)."""
        n, slots = len(self.keys), self.slots
        return [[k[0] for k in self.keys], [k[1] for k in self.keys], [self.topic] * n, [self.partition] * n,
                [self.offset] * n, slots[LAST_OFFSET], slots[MAX_TS], *(slots[i] for i in _TALLY_SLOTS)]

    @property
    def tallies(self) -> list[tuple]:
        """The window rows, one tuple each in ``TALLY_COLUMNS`` order (for readers of single rows)."""
        return list(zip(*self.tally_columns()))


class PartitionState:
    """Windows, per-streamer watermarks and order dedupe for one source partition."""

    def __init__(self, topic: str, partition: int, rules: Rules, loader: WindowLoader | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.rules = rules
        self.loader = loader
        self.offset = -1  # last offset whose every unit is applied; -1: nothing applied yet
        self.unit = (-1, 0)  # last applied (offset, index within a pack); ahead of offset mid-message
        self.flushed_offset = -1
        self.windows: dict[WindowKey, list[int]] = {}
        # the streamers with an open window at each window start: eviction's index. A window can close
        # (start + window + lateness <= its streamer's watermark) only if its start is that far behind the
        # partition's newest event, and most open windows are not: the index spares them the pass
        self.by_start: dict[int, dict[str, None]] = {}
        # no open window was last changed before this (monotonic ns): until ``idle_close_ms`` has passed
        # it, no window can be idle, and eviction needs no pass over every window (see ``flush_done``)
        self.idle_floor = 0
        self.dirty: list[list] = []  # the accumulators whose DIRTY slot is ``generation``, in the order they changed
        self.generation = 1  # of snapshots: each takes the windows of this one and starts the next
        self.watermark: dict[str, int] = {}  # streamer -> highest accepted event time
        self.concurrent: dict[str, int] = {}  # streamer -> running enters - leaves, in log order
        # streamer -> latest window start the store may hold that is neither in memory nor in ``closed``:
        # set by a restore, and by a window that left memory while an event could still reach it and was
        # not kept; a window after it and not in memory was never written, and opens from zero unread
        self.stored_upto: dict[str, int] = {}
        # windows that left memory but an event could still reach, as the store holds them, oldest first:
        # a late payment reopens its window from here, not with a read of the store (see ``flush_done``)
        self.closed: dict[WindowKey, list[int]] = {}
        self.reopens = [0, 0]  # windows reopened from ``closed``, from the store
        self.orders_seen: dict[tuple[str, str], tuple[int, str]] = {}  # (order_id, status) -> (event time, streamer)
        # the same orders per streamer, oldest first (heaps of (event time, order key)): forgetting the ones
        # past the horizon then costs what is forgotten, not a pass over every order at every flush
        self.order_expiry: dict[str, list[tuple[int, tuple[str, str]]]] = {}
        self._indexed = self.orders_seen  # the dict order_expiry indexes
        self.wm_moved: set[str] = set()  # streamers whose watermark may have risen since orders were last forgotten
        # viewers seen per window since the last snapshot, a dict used as a set (str keys and None values,
        # which the garbage collector does not track): a window's viewer goes to the store once per flush,
        # not once per enter. The store's audience is a set (uniqExact), so a viewer sent again by a later
        # flush changes nothing there; holding every viewer of every open window instead cost half the
        # state's memory to save 0.5 % of the rows (docs/SCALING.md, "Memory"). A snapshot hands each set
        # over as one row with an array: no tuple per viewer, here or in the flush's encoding
        self.viewer_sets: dict[WindowKey, dict[str, None]] = {}
        self.new_viewers = 0  # how many ids viewer_sets holds (the rows the bound on buffered rows counts)
        self.pending_orders: list[tuple] = []
        self.max_ts = 0  # highest event time in the partition
        self.late_corrections = 0  # orders accepted later than the lateness (they correct a past window)

    # -- the hot path ---------------------------------------------------------------------------

    def apply(self, offset: int, event: View | Like | Order, index: int = 0, last: bool = True) -> bool:
        """Apply one valid event at ``offset`` (``index`` within a pack, ``last``: the message's last
        unit); False if it is late.

        Orders are late only past the dedupe horizon: a payment callback minutes behind is still money,
        and its window is reopened from its snapshot. Views and likes keep the lateness rule.
        """
        streamer = event.streamer_id
        ts = event.ts
        rules = self.rules
        wm = self.watermark.get(streamer)
        kind = type(event)
        if is_late(ts, wm, rules.order_dedupe_horizon_ms if kind is Order else rules.lateness_ms):
            self._done(offset, index, last)
            return False
        key = (window_start(ts, rules.window_ms), streamer)
        acc = self.windows.get(key)
        if acc is None:
            acc = self._open(key)  # may raise (sink away): nothing has changed yet
        if wm is None or ts > wm:
            self.watermark[streamer] = ts
        if ts > self.max_ts:
            self.max_ts = ts
        acc[EVENTS] += 1
        if ts > acc[MAX_TS]:
            acc[MAX_TS] = ts
        acc[LAST_OFFSET] = offset
        if kind is View:
            c = self.concurrent.get(streamer, 0)
            if event.action == "enter":
                c += 1
                acc[ENTERS] += 1
                seen = self.viewer_sets.get(key)
                if seen is None:
                    seen = self.viewer_sets[key] = {}
                if event.viewer_id not in seen:
                    seen[event.viewer_id] = None
                    self.new_viewers += 1
            else:
                if c > 0:  # a leave whose enter was never counted takes nobody away
                    c -= 1
                acc[LEAVES] += 1
            self.concurrent[streamer] = c
            if acc[ENTERS] + acc[LEAVES] == 1 or c > acc[PEAK]:
                acc[PEAK] = c
            acc[CLOSE] = c
        elif kind is Like:
            acc[LIKES] += event.count
        else:
            okey = (event.order_id, event.status)
            if okey not in self.orders_seen:
                self.orders_seen[okey] = (ts, streamer)
                remember_order(self.order_expiry, streamer, ts, okey)
                if wm is not None and ts < wm - rules.lateness_ms:
                    self.late_corrections += 1
                if event.status == "paid":
                    acc[PAID] += 1
                    acc[ITEMS] += event.quantity
                    acc[GMV] += event.amount_fen
                else:
                    acc[REFUNDED] += 1
                    acc[ITEMS] -= event.quantity
                    acc[GMV] -= event.amount_fen
                    acc[REFUND] += event.amount_fen
                self.pending_orders.append(
                    (self.topic, self.partition, offset, index, event.order_id, event.status, ts, key[0], streamer,
                     event.session_id, event.viewer_id, event.product_id, event.category, event.quantity,
                     event.amount_fen)
                )
        if acc[DIRTY] != self.generation:
            acc[DIRTY] = self.generation
            self.dirty.append(acc)
        acc[TOUCHED] = time.monotonic_ns()
        self._done(offset, index, last)
        return True

    def skip(self, offset: int, index: int = 0, last: bool = True) -> None:
        """Record that a rejected unit at ``offset`` was handled (it still moves the checkpoint)."""
        self._done(offset, index, last)

    def _done(self, offset: int, index: int, last: bool) -> None:
        self.unit = (offset, index)
        if last:
            self.offset = offset

    def applied(self, offset: int, index: int) -> bool:
        """Whether the unit (offset, index) is already in the state (a redelivery or a retry)."""
        return offset <= self.offset or (offset, index) <= self.unit

    @property
    def half_applied(self) -> bool:
        return self.unit[0] > self.offset

    def may_be_stored(self, key: WindowKey) -> bool:
        """Whether the store may hold ``key``, a window neither open nor kept closed: one the state let go
        of, or one written before the restore (see ``stored_upto``)."""
        return key[0] <= self.stored_upto.get(key[1], key[0] - 1)

    def _left_in_store(self, key: WindowKey) -> None:
        if key[0] > self.stored_upto.get(key[1], key[0] - 1):
            self.stored_upto[key[1]] = key[0]

    def _open(self, key: WindowKey) -> list[int]:
        # A window that already left memory may still accept events (within lateness; a payment, within the
        # horizon): reopen it from its last snapshot, kept or in the store, instead of starting from zero,
        # which would overwrite it.
        acc = self.closed.pop(key, None)
        if acc is not None:
            self.reopens[0] += 1
        elif self.loader is not None and self.may_be_stored(key):
            acc = self.loader(self.topic, self.partition, key)
            self.reopens[1] += 1
        if acc is None:
            acc = [0] * N_SLOTS
        acc[N_SLOTS:] = (0, 0, key)  # the state's own slots after the sink's
        self.windows[key] = acc
        streamers = self.by_start.get(key[0])
        if streamers is None:
            self.by_start[key[0]] = {key[1]: None}
        else:
            streamers[key[1]] = None
        return acc

    # -- flushing --------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot | None:
        """Take the rows for every window changed since the last flush; None if nothing moved, or while
        a message is half applied (its checkpoint could not say which part is in)."""
        if (self.offset == self.flushed_offset and not self.dirty) or self.half_applied:
            return None
        gen = self.generation
        slots = list(zip(*self.dirty)) if self.dirty else [()] * ACC_SLOTS
        snap = Snapshot(self.topic, self.partition, self.offset, slots, self.viewer_sets, self.pending_orders,
                        self.new_viewers)
        self.dirty, self.pending_orders = [], []
        self.viewer_sets, self.new_viewers = {}, 0
        self.generation = gen + 1  # every window is clean at once
        return snap

    def flush_failed(self, snap: Snapshot) -> None:
        """Put a snapshot's work back so the next flush carries it again (nothing is dropped)."""
        for key in snap.keys:
            acc = self.windows.get(key)
            if acc is not None and acc[DIRTY] != self.generation:
                acc[DIRTY] = self.generation
                self.dirty.append(acc)
        sets = self.viewer_sets
        for key, ids in snap.viewers.items():
            seen = sets.get(key)
            if seen is None:
                sets[key] = dict(ids)  # a copy: the snapshot's sets stay as they were taken
                self.new_viewers += len(ids)
            else:
                held = len(seen)
                seen.update(ids)
                self.new_viewers += len(seen) - held
        self.pending_orders = snap.orders + self.pending_orders

    def flush_done(self, snap: Snapshot | None, now: float | None = None) -> int:
        """After the sink holds ``snap`` (None: a flush with nothing of this partition), evict windows
        that can no longer change or sat idle."""
        if snap is not None:
            self.flushed_offset = max(self.flushed_offset, snap.offset)
        now = time.monotonic() if now is None else now
        rules = self.rules
        idle_before = int((now - rules.idle_close_ms / 1000) * 1e9)  # as TOUCHED: monotonic ns
        wm, gen, windows = self.watermark, self.generation, self.windows
        # windows.window_closed: start + window <= watermark - lateness. No watermark is above the
        # partition's highest event time, so no window starting after ``first`` is closed by one
        span = rules.window_ms + rules.lateness_ms
        first = self.max_ts - span
        every = idle_before > self.idle_floor  # a window may have sat idle: test every one, by both rules
        if every:
            gone = [k for k, acc in windows.items() if acc[DIRTY] != gen
                    and (acc[TOUCHED] < idle_before or (k[0] <= first and k[0] + span <= wm[k[1]]))]
        else:  # none can be idle: only the starts at or before ``first``, from the index
            gone = [(start, sid) for start in [s for s in self.by_start if s <= first] for sid in self.by_start[start]
                    if windows[(start, sid)][DIRTY] != gen and start + span <= wm[sid]]
        # A window leaves memory only once the store holds its last change, so the accumulator is that
        # snapshot: kept (up to ``closed_windows_kept``) while an event could still reach it, it reopens
        # the window as a read of the store would. Orders reach back the dedupe horizon, the rest the lateness.
        closed, keep = self.closed, rules.closed_windows_kept
        reach = rules.window_ms + (rules.order_dedupe_horizon_ms if self.topic == ORDERS_TOPIC else rules.lateness_ms)
        by_start = self.by_start
        for key in gone:
            start, streamer = key
            acc = windows.pop(key)
            streamers = by_start[start]
            del streamers[streamer]
            if not streamers:
                del by_start[start]
            if start + reach <= wm[streamer]:
                continue  # every event it could take is late, now and later (watermarks only rise)
            if keep:
                closed[key] = acc
            else:
                self._left_in_store(key)
        if every:  # the oldest change among the windows left bounds when the next can be idle
            self.idle_floor = min(map(_touched, windows.values()), default=time.monotonic_ns())
        if len(closed) > keep:  # the oldest closed first; the store still has them
            for key in list(itertools.islice(closed, len(closed) - keep)):
                del closed[key]
                self._left_in_store(key)
        if self.orders_seen:  # whose watermark may have risen: the streamers of the windows changed since
            if snap is not None:
                self.wm_moved.update(k[1] for k in snap.keys)
            self.wm_moved.update(acc[KEY][1] for acc in self.dirty)
        if len(self.orders_seen) > 1024:  # forget an order once no copy of it could be accepted any more
            self._forget_orders(rules.order_dedupe_horizon_ms)
        return len(gone)

    def _forget_orders(self, horizon_ms: int) -> None:
        """Drop every remembered order older than its streamer's watermark minus ``horizon_ms``: exactly
        ``{k: v for k, v in orders_seen.items() if v[0] >= watermark[v[1]] - horizon_ms}``, without the pass.

        Only a streamer whose watermark rose since the last call can have an order to forget: an order is
        remembered only when it is not late, at or after its streamer's bound, and the bound moves with
        the watermark alone. So the streamers visited are those of the windows changed since (``wm_moved``),
        not every streamer with an order (100k streamers: a pass as long as the eviction's was).
        """
        seen, wm, expiry = self.orders_seen, self.watermark, self.order_expiry
        if self._indexed is not seen:
            self.order_expiry = expiry = index_orders(seen)  # orders_seen was set from outside: index it again
            self._indexed = seen
            moved: Iterable[str] = list(expiry)
        else:
            moved = self.wm_moved
        for streamer in moved:
            heap = expiry.get(streamer)
            if heap is None:
                continue
            bound = wm[streamer] - horizon_ms
            while heap and heap[0][0] < bound:
                del seen[heappop(heap)[1]]
            if not heap:
                del expiry[streamer]
        self.wm_moved = set()

    @property
    def buffered_rows(self) -> int:
        return len(self.dirty) + self.new_viewers + len(self.pending_orders)

    # -- restore ---------------------------------------------------------------------------------

    def restore(
        self,
        offset: int,
        windows: dict[WindowKey, list[int]],
        streamers: dict[str, tuple[int, int]],
        orders: dict[tuple[str, str], tuple[int, str]],
    ) -> None:
        """Load what the sink holds for this partition as of ``offset`` (see sink.restore)."""
        self.offset = self.flushed_offset = offset
        self.unit = (offset, 0)
        self.windows = windows
        now = time.monotonic_ns()
        self.by_start = {}
        for start, streamer in windows:
            self.by_start.setdefault(start, {})[streamer] = None
        self.idle_floor = now
        for key, acc in windows.items():
            acc[N_SLOTS:] = (now, 0, key)  # the state's own slots after the sink's
        for streamer, (wm, conc) in streamers.items():
            self.watermark[streamer] = wm
            self.concurrent[streamer] = conc
            # windows of this streamer that were not loaded may still sit in the sink: look them up
            self.stored_upto[streamer] = window_start(wm, self.rules.window_ms)
            self.max_ts = max(self.max_ts, wm)
        self.orders_seen = dict(orders)
        self.order_expiry = index_orders(self.orders_seen)
        self._indexed = self.orders_seen


def remember_order(expiry: dict[str, list[tuple[int, tuple[str, str]]]], streamer: str, ts: int,
                   okey: tuple[str, str]) -> None:
    """Index a newly remembered order for ``PartitionState._forget_orders`` (every insert into
    ``orders_seen`` goes with one)."""
    heap = expiry.get(streamer)
    if heap is None:
        expiry[streamer] = [(ts, okey)]
    else:
        heappush(heap, (ts, okey))


def index_orders(orders: dict[tuple[str, str], tuple[int, str]]) -> dict[str, list[tuple[int, tuple[str, str]]]]:
    """``PartitionState.order_expiry`` built from scratch for ``orders`` (a restore)."""
    expiry: dict[str, list[tuple[int, tuple[str, str]]]] = {}
    for okey, (ts, streamer) in orders.items():
        expiry.setdefault(streamer, []).append((ts, okey))
    for heap in expiry.values():
        heapify(heap)
    return expiry
