"""A fetched batch of one source partition in, window state and dead letters out: the hot path.

Two implementations of one function, with one signature:

* ``apply_batch_reference``: the per-event path, each unit through ``ingest.events.decode`` and
  ``PartitionState.apply``. It states the rules once, readably, and is kept as the oracle that
  ``tests/unit/test_batch_oracle.py`` holds the fast path to (``Processor.apply_batch`` can be set to it).
* ``apply_batch``: the same verdicts in one loop, which is what the worker runs. Profiling the
  reference (``benchmarks/inner_loop.py --profile reference``) showed no single expensive step but
  about a dozen Python calls per event (decode, the context checks, ``is_streamer_id``, ``apply``,
  ``applied``, ``_done``, ``is_late``, ``window_start``, ``time.monotonic``), three hash tables probed
  per event for one window, and, for a pack, an ``orjson.JSONDecodeError`` raised (its line and column
  computed) just to learn that it is a pack. So the fast path keeps typed decoding (``msgspec``,
  validation in C), inlines the rest, and never restates a rule that refuses: an event that does not
  pass every check on the quick road is judged by the reference ``decode``, so every rejection reason
  and detail is the reference's own by construction.

What the fast path does differently, and why each is the same verdict:

* It decodes with the topic's own typed decoder (``events.TOPIC_DECODERS``): it accepts a subset of
  what ``decode`` accepts, with the same fields, so an accepted event is one ``decode`` accepts and
  its type follows from the topic.
* A message with newlines is a pack when its first non-blank line alone decodes as an event and a
  second non-blank line follows (``pack_units``): a JSON text is one value with whitespace around it,
  and a complete value followed by a newline and more non-whitespace never parses as one document,
  so ``events.is_pack`` says "pack" too, without the failed parse it costs. A clean pack is decoded in
  one call (``pack_units`` says when that is the same as line by line).
* The key and ``is_streamer_id`` checks become one comparison: ``streamer_id == key.decode()`` for
  a key whose text is a valid streamer id (memoized per key), which holds exactly when the id is
  valid and the key is its UTF-8 bytes. So every event a message adds is its key's streamer's: that
  streamer's watermark and audience are read once per message and written back when it ends.
* A pack of views or likes whose events provably all pass (one window, none late: the oldest is within
  the lateness of the newest and of the watermark) is added to its window in one go.
* The last applied unit, the partition's ``max_ts`` and the late-correction count are kept in
  locals and written back when the batch ends or raises (only ``PartitionState._open``, reopening a
  window from the sink, may raise, and it does so before the unit changes anything), so a retry
  resumes at the same unit as the reference (docs/ARCHITECTURE.md, "Why snapshots, not deltas").
* The wall clock that closes idle windows (``TOUCHED``) is read once per batch, not per event: it is
  no part of any verdict (docs/ARCHITECTURE.md, "Lateness"), and a batch takes milliseconds against
  an idle close of seconds.

A state class that overrides ``apply`` (a benchmark's variant, say) gets the reference path, so its
rule is not bypassed.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from streamproc.core.state import (
    CLOSE, DIRTY, ENTERS, EVENTS, GMV, ITEMS, LAST_OFFSET, LEAVES, LIKES, MAX_TS, PAID, PEAK, REFUND, REFUNDED,
    TOUCHED, PartitionState, remember_order,
)
from streamproc.ingest.events import _FAST, TOPIC_DECODERS, Order, Rejection, decode
from streamproc.ingest.ids import is_streamer_id
from streamproc.ingest.pack import message_units

# dead_letter(topic, partition, offset, key, value, record_ts, rejection, index): the processor's
DeadLetter = Callable[[str, int, int, "bytes | None", "bytes | None", "int | None", Rejection, int], None]
# [accepted, rejected, late], added to in place: what a batch that raised half way did count stays counted
Tally = list[int]


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings a batch is judged by (``Settings`` fields of the same names).

    ``lateness_ms`` and ``order_dedupe_horizon_ms`` only word the ``late`` dead letter; the verdict
    itself uses the state's ``Rules`` (which the processor builds from the same settings).
    """

    max_bytes: int
    max_future_ms: int
    max_lines: int
    lateness_ms: int
    order_dedupe_horizon_ms: int


def late_rejection(orders: bool, limits: Limits) -> Rejection:
    """The dead-letter reason of a valid event refused as late (the wording both paths use); ``orders``:
    the event is an order, which is late only past the dedupe horizon."""
    allowed = limits.order_dedupe_horizon_ms if orders else limits.lateness_ms
    return Rejection("late", f"more than {allowed} ms behind the streamer's watermark")


def apply_batch_reference(st: PartitionState, topic: str, partition: int, records: Sequence[Any], limits: Limits,
                          now_ms: int | None, dead_letter: DeadLetter, tally: Tally) -> None:
    """The per-event path and the oracle: ``decode`` then ``PartitionState.apply``, unit by unit.

    ``records`` are consecutive records of one partition (``offset``, ``key``, ``value``,
    ``timestamp``); already applied units (a redelivery, or a retry after a raise) are passed over.
    May raise when a window must be reopened from an absent sink; nothing of that unit is applied.
    """
    max_bytes, max_future, max_lines = limits.max_bytes, limits.max_future_ms, limits.max_lines
    apply, skip, applied = st.apply, st.skip, st.applied
    for rec in records:
        offset = rec.offset
        if offset <= st.offset:  # already applied (redelivery after a seek)
            continue
        key, value, record_ts = rec.key, rec.value, rec.timestamp
        # the message, or the lines of a pack; size comes first (see pack.message_units)
        units = message_units(value, max_bytes, max_lines) if value and b"\n" in value else [value]
        if type(units) is Rejection:  # a pack of too many lines: refused whole, one dead letter
            skip(offset, 0, True)
            dead_letter(topic, partition, offset, key, value, record_ts, units, 0)
            tally[1] += 1
            continue
        final = len(units) - 1
        for index, v in enumerate(units):
            if applied(offset, index):  # a retry after this unit went in
                continue
            event = decode(v, topic, key, record_ts, max_bytes=max_bytes, max_future_ms=max_future, now_ms=now_ms)
            if type(event) is Rejection:
                skip(offset, index, index == final)
                dead_letter(topic, partition, offset, key, v, record_ts, event, index)
                tally[1] += 1
            elif apply(offset, event, index, index == final):
                tally[0] += 1
            else:
                tally[1] += 1
                tally[2] += 1
                dead_letter(topic, partition, offset, key, v, record_ts, late_rejection(type(event) is Order, limits),
                            index)


_KEY_IDS: dict[bytes, str] = {}  # message key -> its text, for keys that are valid streamer ids
_KEY_IDS_MAX = 200_000  # a memo, not state: cleared when it reaches this, so no stream of keys grows it unbounded


def key_streamer(key: bytes | None) -> str | None:
    """The streamer id a message key names, if it is a valid one; None otherwise.

    ``event.streamer_id == key_streamer(key)`` holds exactly when the id passes ``is_streamer_id`` and
    the key is its UTF-8 bytes: the two checks of ``decode`` an event of a keyed message must pass.
    """
    if type(key) is not bytes:  # None (no key), or a type no client gives: decode judges it
        return None
    sid = _KEY_IDS.get(key)
    if sid is None:
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not is_streamer_id(text):
            return None
        if len(_KEY_IDS) >= _KEY_IDS_MAX:
            _KEY_IDS.clear()
        sid = _KEY_IDS[key] = text
    return sid


def pack_units(value: bytes, max_bytes: int, max_lines: int,
               decoder: Any = _FAST) -> tuple[list[bytes | None] | Rejection, list | None]:
    """``message_units`` of a value that holds a newline, and the events of its units when a pack could be
    decoded whole (None: each unit is still to be decoded on its own).

    The common pack (every line an event, no blank lines) is decoded in one call, ``decode_lines``, and
    taken only if its values provably are the lines one by one: no blank line, every line starts with
    ``{`` and there are as many values as lines. An event holds no nested object and a string no raw
    newline, so a ``{`` opening a line opens a value of its own; as many values as lines then leaves
    each value alone on its line, and decoding the line alone gives the same event. Such a value is a
    pack by ``is_pack``'s rule (module docstring). Anything else is split and judged as
    ``message_units`` does.
    """
    if len(value) > max_bytes:
        return [value], None
    parts = value.split(b"\n")
    if len(parts) <= max_lines:
        try:
            events = decoder.decode_lines(value)
        except Exception:
            events = None
        if events is not None and len(events) == len(parts) and all(map(bytes.startswith, parts, _BRACES)):
            return parts, events
    lines = [line for line in parts if line.strip()]  # events.split_pack
    if len(lines) >= 2:
        try:
            first = decoder.decode(lines[0])
        except Exception:
            first = None
        if first is not None and len(lines) <= max_lines:
            return lines, [first]  # a pack (module docstring); its first event is decoded already
    return message_units(value, max_bytes, max_lines), None


_BRACES = itertools.repeat(b"{")


def apply_batch(st: PartitionState, topic: str, partition: int, records: Sequence[Any], limits: Limits,
                now_ms: int | None, dead_letter: DeadLetter, tally: Tally) -> None:
    """``apply_batch_reference`` in one loop: same state, dead letters (reasons, order) and counts.

    The body restates ``PartitionState.apply`` (keep the two together; the module docstring says what
    differs and why it is the same); everything that refuses is left to ``events.decode``.
    """
    decoder = TOPIC_DECODERS.get(topic)
    if decoder is None or type(st).apply is not PartitionState.apply:  # no event belongs there; or a rule added
        apply_batch_reference(st, topic, partition, records, limits, now_ms, dead_letter, tally)
        return
    max_bytes, max_future, max_lines = limits.max_bytes, limits.max_future_ms, limits.max_lines
    rules = st.rules
    window_ms, lateness, horizon = rules.window_ms, rules.lateness_ms, rules.order_dedupe_horizon_ms
    fast = decoder.decode  # this topic's events only; everything else goes to decode
    # what an accepted event is follows from the topic (decode refuses any other type as wrong_topic)
    views, likes = decoder is TOPIC_DECODERS["live.views"], decoder is TOPIC_DECODERS["live.likes"]
    orders = not (views or likes)
    allowed = horizon if orders else lateness
    too_late = late_rejection(orders, limits)
    windows_get, viewer_sets, orders_seen = st.windows.get, st.viewer_sets, st.orders_seen
    watermark, concurrent = st.watermark, st.concurrent
    dirty, gen = st.dirty.append, st.generation
    add_order = st.pending_orders.append
    new_viewers = 0  # ids added to viewer_sets; st.new_viewers moves by them when the batch ends
    key_ids_get = _KEY_IDS.get
    open_window = st._open
    now = time.monotonic_ns()
    done_offset = st.offset
    unit_offset, unit_index = st.unit
    max_ts, corrections = st.max_ts, st.late_corrections
    accepted = rejected = late = 0
    # the streamer of the message being applied, and whether its watermark / audience moved
    sid = None
    wm = c = 0
    wm_moved = c_moved = False
    try:
        for rec in records:
            offset = rec.offset
            if offset <= done_offset:  # already applied (redelivery after a seek)
                continue
            value = rec.value
            if type(value) is not bytes and value is not None:  # a type no client gives: the reference judges it
                st.offset, st.unit, st.max_ts, st.late_corrections = (done_offset, (unit_offset, unit_index), max_ts,
                                                                      corrections)
                sub = [0, 0, 0]
                try:
                    apply_batch_reference(st, topic, partition, (rec,), limits, now_ms, dead_letter, sub)
                finally:
                    done_offset, (unit_offset, unit_index), max_ts, corrections = (st.offset, st.unit, st.max_ts,
                                                                                   st.late_corrections)
                    accepted, rejected, late = accepted + sub[0], rejected + sub[1], late + sub[2]
                continue
            decoded = None  # events of a pack decoded with it: all of them, or just the first
            if value and b"\n" in value:
                units, decoded = pack_units(value, max_bytes, max_lines, decoder)
                if type(units) is Rejection:  # a pack of too many lines: refused whole, one dead letter
                    unit_offset, unit_index, done_offset = offset, 0, offset
                    dead_letter(topic, partition, offset, rec.key, value, rec.timestamp, units, 0)
                    rejected += 1
                    continue
            else:
                units = (value,)
            key, record_ts = rec.key, rec.timestamp
            sid = key_ids_get(key) if type(key) is bytes else None
            if sid is None:
                sid = key_streamer(key)
            wm = watermark.get(sid)  # None: the streamer has no event here yet (or there is no valid key)
            c = None
            wm_moved = c_moved = False
            ws = None  # start of the window ``acc`` holds; ``seen``: its viewers, once an enter needs them
            # the record's own time bounds its events; a record from the reader's future refuses them all
            cap = honest = None
            if record_ts is not None and record_ts > 0:
                cap = record_ts + max_future
                honest = now_ms is None or record_ts <= now_ms + max_future
            final = len(units) - 1
            if (final and decoded is not None and len(decoded) > final and offset > unit_offset and not orders
                    and sid is not None and (cap is None or honest)):
                # A pack of views or likes, every line decoded: taken whole when its events provably all pass
                # (the key's streamer, not past the record's time, none late, one window); else unit by unit
                tss = [e.ts for e in decoded]
                hi, lo = max(tss), min(tss)
                start = lo - lo % window_ms
                if (hi < start + window_ms and lo >= (hi if wm is None or hi > wm else wm) - allowed
                        and (cap is None or hi <= cap) and [e.streamer_id for e in decoded].count(sid) == final + 1):
                    acc = windows_get((start, sid))  # ws is None: a message starts with no window
                    if acc is None:
                        acc = open_window((start, sid))  # may raise (sink away): nothing has changed yet
                    k = (start, sid)
                    if acc[DIRTY] != gen:
                        acc[DIRTY] = gen
                        dirty(acc)
                    acc[TOUCHED] = now
                    ws, seen = start, None
                    if wm is None or hi > wm:
                        wm, wm_moved = hi, True
                    if hi > max_ts:
                        max_ts = hi
                    acc[EVENTS] += final + 1
                    if hi > acc[MAX_TS]:
                        acc[MAX_TS] = hi
                    acc[LAST_OFFSET] = offset
                    if likes:
                        acc[LIKES] += sum([e.count for e in decoded])
                    else:  # PartitionState.apply's audience, event by event; its peak rule over the pack
                        if c is None:
                            c = concurrent.get(sid, 0)
                        peak = -1
                        enters = 0
                        for e in decoded:
                            if e.action == "enter":
                                c += 1
                                enters += 1
                                if seen is None:
                                    seen = viewer_sets.get(k)
                                    if seen is None:
                                        seen = viewer_sets[k] = {}
                                viewer = e.viewer_id
                                if viewer not in seen:
                                    seen[viewer] = None
                                    new_viewers += 1
                            elif c > 0:
                                c -= 1
                            if c > peak:
                                peak = c
                        c_moved = True
                        if acc[ENTERS] + acc[LEAVES] == 0 or peak > acc[PEAK]:
                            acc[PEAK] = peak
                        acc[ENTERS] += enters
                        acc[LEAVES] += final + 1 - enters
                        acc[CLOSE] = c
                    unit_offset, unit_index, done_offset = offset, final, offset
                    accepted += final + 1
                    units = ()
            index = -1
            for v in units:
                index += 1
                if offset <= unit_offset and (offset < unit_offset or index <= unit_index):
                    continue  # a retry after this unit went in
                if decoded is not None and index < len(decoded):
                    event = decoded[index]
                elif v is None or len(v) > max_bytes:
                    event = None
                else:
                    try:
                        event = fast(v)
                    except Exception:
                        event = None
                if (event is None or event.streamer_id != sid
                        or (cap is not None and (event.ts > cap or not honest))):
                    event = decode(v, topic, key, record_ts, max_bytes=max_bytes, max_future_ms=max_future,
                                   now_ms=now_ms)
                    if type(event) is Rejection:
                        unit_offset, unit_index = offset, index
                        if index == final:
                            done_offset = offset
                        dead_letter(topic, partition, offset, key, v, record_ts, event, index)
                        rejected += 1
                        continue
                    if event.streamer_id != sid:  # a key ``key_streamer`` does not read (not bytes): follow the event
                        if wm_moved:
                            watermark[sid] = wm
                        if c_moved:
                            concurrent[sid] = c
                        sid = event.streamer_id
                        wm, c, ws = watermark.get(sid), None, None
                        wm_moved = c_moved = False
                # -- PartitionState.apply, inlined; event.streamer_id == sid --
                ts = event.ts
                if wm is not None and ts < wm - allowed:
                    unit_offset, unit_index = offset, index
                    if index == final:
                        done_offset = offset
                    rejected += 1
                    late += 1
                    dead_letter(topic, partition, offset, key, v, record_ts, too_late, index)
                    continue
                start = ts - ts % window_ms
                if start != ws:
                    k = (start, sid)
                    acc = windows_get(k)
                    if acc is None:
                        acc = open_window(k)  # may raise (sink away): nothing has changed yet
                    ws, seen = start, None
                    if acc[DIRTY] != gen:  # from here on the unit cannot fail
                        acc[DIRTY] = gen
                        dirty(acc)
                    acc[TOUCHED] = now
                lag = wm  # the watermark before this event: an order behind it by more than the lateness corrects
                if wm is None or ts > wm:
                    wm, wm_moved = ts, True
                if ts > max_ts:
                    max_ts = ts
                acc[EVENTS] += 1
                if ts > acc[MAX_TS]:
                    acc[MAX_TS] = ts
                acc[LAST_OFFSET] = offset
                if views:
                    if c is None:
                        c = concurrent.get(sid, 0)
                    if event.action == "enter":
                        c += 1
                        acc[ENTERS] += 1
                        if seen is None:
                            seen = viewer_sets.get(k)
                            if seen is None:
                                seen = viewer_sets[k] = {}
                        viewer = event.viewer_id
                        if viewer not in seen:
                            seen[viewer] = None
                            new_viewers += 1
                    else:
                        if c > 0:  # a leave whose enter was never counted takes nobody away
                            c -= 1
                        acc[LEAVES] += 1
                    c_moved = True
                    if acc[ENTERS] + acc[LEAVES] == 1 or c > acc[PEAK]:
                        acc[PEAK] = c
                    acc[CLOSE] = c
                elif likes:
                    acc[LIKES] += event.count
                else:
                    okey = (event.order_id, event.status)
                    if okey not in orders_seen:
                        orders_seen[okey] = (ts, sid)
                        remember_order(st.order_expiry, sid, ts, okey)
                        if lag is not None and ts < lag - lateness:
                            corrections += 1
                        if event.status == "paid":
                            acc[PAID] += 1
                            acc[ITEMS] += event.quantity
                            acc[GMV] += event.amount_fen
                        else:
                            acc[REFUNDED] += 1
                            acc[ITEMS] -= event.quantity
                            acc[GMV] -= event.amount_fen
                            acc[REFUND] += event.amount_fen
                        add_order((st.topic, st.partition, offset, index, event.order_id, event.status, ts, start,
                                   sid, event.session_id, event.viewer_id, event.product_id, event.category,
                                   event.quantity, event.amount_fen))
                unit_offset, unit_index = offset, index
                if index == final:
                    done_offset = offset
                accepted += 1
            if wm_moved:
                watermark[sid] = wm
            if c_moved:
                concurrent[sid] = c
            wm_moved = c_moved = False
    finally:
        if wm_moved:  # a message stopped half way: what it applied stays applied
            watermark[sid] = wm
        if c_moved:
            concurrent[sid] = c
        st.offset, st.unit = done_offset, (unit_offset, unit_index)
        st.max_ts, st.late_corrections = max_ts, corrections
        st.new_viewers += new_viewers
        tally[0] += accepted
        tally[1] += rejected
        tally[2] += late
