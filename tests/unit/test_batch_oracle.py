"""The worker's batch loop (``core.batch.apply_batch``) against the per-event reference path, its oracle.

``apply_batch`` restates decode + ``PartitionState.apply`` in one loop for speed (core/batch.py says
how). These tests run the same logs through a ``Processor`` with each path and require everything a
flush, a checkpoint, a restore or an operator can see to be identical: the state of every partition
(offsets and the last applied unit, windows, watermarks, running audiences, order dedupe, unique
viewers, pending rows, late corrections), the snapshots taken, the dead letters (reason, detail and
order) and the counts. The logs are random: valid events, every kind of malformed message, duplicated
and late orders, leaves before enters, forged record times, bad keys, and packs of all shapes (blank
lines, CRLF, two events on a line, an event over two lines, too many lines), cut into batches at random,
redelivered, flushed (evicting windows that are then reopened from the fake sink) and, with the sink
away, failed half way and retried.
"""

from __future__ import annotations

import copy
import json
import time
from types import SimpleNamespace
from typing import Any, NamedTuple
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import event as note
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streamproc.core.batch import apply_batch, apply_batch_reference, pack_units
from streamproc.core.state import KEY, N_SLOTS, TOUCHED, PartitionState, Snapshot
from streamproc.ingest.events import _FAST, TOPIC_DECODERS
from streamproc.ingest.pack import message_units
from streamproc.logs.packs import pack_records
from streamproc.runtime.processor import Processor
from streamproc.settings import Settings
from streamproc.sim.generate import generate

T0 = 1_763_900_000_000  # on a 10 s window boundary
TOPICS = ("live.views", "live.likes", "live.orders")
STREAMERS = ("s1", "s2", "主播-1", "shop@taobao")
SETTINGS = Settings.from_env(env={}).replace(max_message_bytes=900, max_pack_lines=5, lateness_ms=30_000,
                                             order_dedupe_horizon_ms=120_000)


class Rec(NamedTuple):
    """What the processor reads of an aiokafka ConsumerRecord."""

    offset: int
    key: Any
    value: Any
    timestamp: int | None


class FakeSink:
    """Keeps the last snapshot row of every window, as the sink's ReplacingMergeTree would, to reopen
    evicted windows; ``fail`` makes the next ``load_window`` raise (the sink away)."""

    def __init__(self) -> None:
        self.rows: dict[tuple, list[int]] = {}
        self.fail = False

    def store(self, snaps: list[Snapshot]) -> None:
        for snap in snaps:
            for row in snap.tallies:
                (ws, sid, topic, part, _version, last_offset, max_ts, *tallies) = row
                self.rows[(topic, part, ws, sid)] = [*tallies, max_ts, last_offset]

    def load_window(self, topic: str, partition: int, key: tuple[int, str]) -> list | None:
        if self.fail:
            self.fail = False
            raise ConnectionError("sink away")
        acc = self.rows.get((topic, partition, *key))
        assert acc is None or len(acc) == N_SLOTS
        return None if acc is None else list(acc)


# -- random logs -------------------------------------------------------------------------------------------


def event(draw: st.DrawFn, kind: str, streamer: str) -> dict[str, Any]:
    obj: dict[str, Any] = {"schema_version": 1, "type": kind, "event_id": f"e{draw(st.integers(0, 99))}",
                           "ts": T0 + draw(st.integers(-90_000, 90_000)), "streamer_id": streamer,
                           "session_id": "live-1", "viewer_id": f"v{draw(st.integers(0, 5))}"}
    if kind == "view":
        obj["action"] = draw(st.sampled_from(["enter", "enter", "leave"]))
    elif kind == "like":
        obj["count"] = draw(st.sampled_from([1, 3, 10_000]))
    else:  # few order ids, so that copies (callback retries) and refunds of them come up
        obj.update(order_id=f"o{draw(st.integers(0, 6))}", product_id="kiwi", category="fruit",
                   quantity=draw(st.integers(1, 3)), amount_fen=draw(st.sampled_from([0, 990, 7980])),
                   status=draw(st.sampled_from(["paid", "paid", "refunded"])))
    return obj


BROKEN_FIELDS: list[tuple[str, Any]] = [
    ("schema_version", 2), ("ts", 12), ("ts", "1763900000000"), ("ts", 1.5e12), ("count", 0), ("count", 10_001),
    ("amount_fen", -1), ("amount_fen", 10**11), ("quantity", 0), ("action", "jump"), ("status", "PAID"),
    ("streamer_id", "a b"), ("streamer_id", ""), ("streamer_id", "x" * 65), ("streamer_id", ".."),
    ("viewer_id", ""), ("event_id", None), ("type", "gift"), ("type", 7), ("extra", 1),
]


@st.composite
def unit_value(draw: st.DrawFn, topic: str, streamer: str) -> bytes:
    """One message body (or one line of a pack): mostly valid events, else any way it can be wrong."""
    kind = {"live.views": "view", "live.likes": "like", "live.orders": "order"}[topic]
    if draw(st.integers(0, 9)) == 0:
        kind = draw(st.sampled_from(["view", "like", "order"]))  # on the wrong topic
    obj = event(draw, kind, streamer)
    how = draw(st.integers(0, 18))
    if how <= 12:
        return orjson.dumps(obj)
    how -= 6
    if how == 7:
        field, v = draw(st.sampled_from(BROKEN_FIELDS))
        obj[field] = v
        return orjson.dumps(obj)
    if how == 8:
        del obj[draw(st.sampled_from(sorted(obj)))]
        return orjson.dumps(obj)
    if how == 9:  # the event's own time far past its record's (a forged ts), or a big event (oversized)
        if draw(st.booleans()):
            obj["ts"] = T0 + 10**9
        else:
            obj["session_id"] = "s" * 60
            obj["event_id"] = "e" * 64
        return orjson.dumps(obj)
    if how == 10:
        return draw(st.sampled_from([b"", b"{", b"[1,2]", b"null", b"\xff\xfe", b'{"type":"view"}', b"1", b" "]))
    if how == 11:  # bytes cut or flipped
        raw = bytearray(orjson.dumps(obj))
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] = draw(st.sampled_from([0x22, 0x7B, 0x7D, 0xFF, 0x20, 0x0A]))
        return bytes(raw)
    return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()  # spaces after ':' and ','


SEPARATORS = [b"\n", b"\n", b"\n", b"\n\n", b"\r\n", b" \n", b"\n ", b"\n\x0c\n", b" ", b"\t"]


@st.composite
def message(draw: st.DrawFn, topic: str) -> tuple[Any, Any, int | None]:
    """(key, value, record timestamp) of one message: an event, a pack or something else."""
    streamer = draw(st.sampled_from(STREAMERS))
    key: Any = streamer.encode()
    k = draw(st.integers(0, 19))
    if k == 0:
        key = None
    elif k == 1:
        key = b"s9" if streamer != "s9" else b"s1"  # another streamer's key
    elif k == 2:
        key = b"\xff"
    elif k == 3:
        key = b"a b"  # not a streamer id
    record_ts = draw(st.sampled_from([T0 + 200_000] * 6 + [None, 0, T0 - 400_000, 4_000_000_000_000]))
    shape = draw(st.integers(0, 11))
    if shape <= 5:
        value: Any = draw(unit_value(topic, streamer))
    elif shape <= 7:  # a pack as producers send it: events of a few seconds joined by newlines
        base = T0 + draw(st.integers(-60_000, 60_000))
        lines = []
        for _ in range(draw(st.integers(2, 6))):
            obj = event(draw, {"live.views": "view", "live.likes": "like", "live.orders": "order"}[topic], streamer)
            obj["ts"] = base + draw(st.integers(-2_000, 2_000))
            lines.append(orjson.dumps(obj))
        value = b"\n".join(lines)
    elif shape <= 10:  # a pack, maybe with odd separators, blank lines, an event over two lines
        lines = [draw(unit_value(topic, streamer)) for _ in range(draw(st.integers(2, 7)))]
        value = lines[0]
        for line in lines[1:]:
            value += draw(st.sampled_from(SEPARATORS)) + line
        value = (draw(st.sampled_from([b"", b"", b"\n", b" "])) + value
                 + draw(st.sampled_from([b"", b"", b"\n", b"\r\n"])))
    else:  # a pretty-printed event: newlines, but one document; or no value; or a buffer type no client gives
        obj = event(draw, {"live.views": "view", "live.likes": "like", "live.orders": "order"}[topic], streamer)
        value = draw(st.sampled_from([json.dumps(obj, indent=1).encode(), None, bytearray(orjson.dumps(obj))]))
    return key, value, record_ts


@st.composite
def log(draw: st.DrawFn) -> tuple[str, list[Rec], list[tuple[str, int]], int]:
    """A topic, its records (offsets from 10, some messages repeated byte for byte), what to do in
    between batches: ("batch", n records), ("redeliver", n), ("flush", 0), ("evict", 0), ("fail", n),
    and how many closed windows the state keeps."""
    topic = draw(st.sampled_from(TOPICS))
    msgs = draw(st.lists(message(topic), min_size=1, max_size=40))
    for _ in range(draw(st.integers(0, 4))):  # duplicates: a producer's retry of an earlier message
        msgs.insert(draw(st.integers(0, len(msgs))), msgs[draw(st.integers(0, len(msgs) - 1))])
    records = [Rec(10 + i, key, value, ts) for i, (key, value, ts) in enumerate(msgs)]
    steps = draw(st.lists(st.tuples(st.sampled_from(["batch"] * 4 + ["redeliver", "flush", "evict", "fail"]),
                                    st.integers(1, 12)), max_size=12))
    return topic, records, steps, draw(st.sampled_from([0, 2, 4096]))  # closed windows kept per partition


# -- running both paths ------------------------------------------------------------------------------------


def processor(reference: bool, topic: str, settings: Settings = SETTINGS) -> tuple[Processor, FakeSink]:
    sink = FakeSink()
    proc = Processor(settings, sink)  # type: ignore[arg-type]
    if reference:
        proc.apply_batch = apply_batch_reference
    else:
        assert proc.apply_batch is apply_batch  # the worker's processor runs the fast path
    proc.states[(topic, 0)] = PartitionState(topic, 0, proc.rules, proc._load_window)
    return proc, sink


def view_of(proc: Processor) -> dict[str, Any]:
    """Everything observable of a processor, wall-clock values (touched, rejected_at) left out."""
    out: dict[str, Any] = {"counts": dict(proc.counts)}
    for tp, s in proc.states.items():
        out[tp] = {
            "offset": s.offset, "unit": s.unit, "flushed_offset": s.flushed_offset,
            # every slot but TOUCHED, the wall clock of the last change (it closes idle windows, no verdict)
            "windows": {k: acc[:TOUCHED] + acc[TOUCHED + 1:] for k, acc in s.windows.items()},
            "window_order": list(s.windows), "dirty": [acc[KEY] for acc in s.dirty],
            "watermark": s.watermark, "concurrent": s.concurrent, "stored_upto": s.stored_upto,
            "orders_seen": s.orders_seen, "order_order": list(s.orders_seen), "viewer_sets": s.viewer_sets,
            "new_viewers": s.new_viewers, "pending_orders": s.pending_orders, "max_ts": s.max_ts,
            "late_corrections": s.late_corrections, "half_applied": s.half_applied,
            "closed": {k: acc[:TOUCHED] + acc[TOUCHED + 1:] for k, acc in s.closed.items()}, "reopens": s.reopens,
        }
    return copy.deepcopy(out)  # a picture of this moment: the state moves on


def dead_of(proc: Processor) -> list[tuple[bytes, dict]]:
    return [(k, {f: v for f, v in orjson.loads(v).items() if f != "rejected_at"}) for k, v in proc.take_dead_letters()]


def snapshots_of(snaps: list[Snapshot]) -> list[tuple]:
    return [(s.topic, s.partition, s.offset, sorted(s.tallies), s.viewers, s.viewer_ids, s.orders, sorted(s.keys))
            for s in snaps]


def step(proc: Processor, sink: FakeSink, topic: str, action: str, batch: list[Rec], now: float) -> Any:
    """One step of a run; what it returns must be the same for both paths."""
    if action == "flush":
        snaps = proc.snapshot()
        sink.store(snaps)
        proc.flush_done(snaps)  # evicts closed windows (idle ones need seconds of wall time)
        return snapshots_of(snaps)
    if action == "evict":  # a flush long after: every window not dirty is idle and leaves memory
        snaps = proc.snapshot()
        sink.store(snaps)
        st_ = proc.states[(topic, 0)]
        return snapshots_of(snaps), st_.flush_done(snaps[0] if snaps else None, now=now + 3600)
    if action == "fail":  # windows evicted, then the sink is away when one must be reopened; then the retry
        snaps = proc.snapshot()
        sink.store(snaps)
        proc.states[(topic, 0)].flush_done(snaps[0] if snaps else None, now=now + 3600)
        sink.fail = True
        try:
            proc.handle_batch(topic, 0, batch)
            raised = False
        except ConnectionError:
            raised = True
        sink.fail = False
        note(f"sink away while applying: raised={raised}")
        during = view_of(proc), dead_of(proc)
        proc.handle_batch(topic, 0, batch)
        return raised, during
    proc.handle_batch(topic, 0, batch)
    return None


def run_both(topic: str, records: list[Rec], steps: list[tuple[str, int]], kept: int = 4096) -> None:
    # one reader's clock for both runs: a "future" dead letter says how far ahead of it a record is
    with mock.patch("streamproc.runtime.processor.time", SimpleNamespace(time=lambda: 1_800_000_000.0)):
        _run_both(topic, records, steps, kept)


def seen_by_readers(view: dict[str, Any]) -> dict[str, Any]:
    """What a processor's flushes and dead letters follow from, without where a reopened window came
    from (``closed``, ``stored_upto``, ``reopens``): closed windows kept or read back must not differ."""
    return {tp: {k: v for k, v in part.items() if k not in ("closed", "stored_upto", "reopens")} if tp != "counts"
            else part for tp, part in view.items()}


def _run_both(topic: str, records: list[Rec], steps: list[tuple[str, int]], kept: int) -> None:
    """The reference and the fast path, keeping ``kept`` closed windows; and the fast path keeping none,
    which must leave the same state, dead letters and flushes whatever it reads back from the sink."""
    settings = SETTINGS.replace(closed_windows_kept=kept)
    runs = [processor(ref, topic, settings) for ref in (True, False)]
    unkept = processor(False, topic, SETTINGS.replace(closed_windows_kept=0))
    now = time.monotonic()
    pos = 0
    plan = steps + [("batch", len(records))]
    for action, n in plan:
        if action in ("batch", "fail"):
            batch, pos = records[pos:pos + n], min(len(records), pos + n)
        elif action == "redeliver":
            batch = records[max(0, pos - n):pos]
        else:
            batch = []
        during: list[list] = [[], []]  # dead letters a "fail" step took while the sink was away
        if action != "fail" or batch:
            ref, fast = (step(proc, sink, topic, action, batch, now) for proc, sink in runs)
            assert ref == fast, action
            other = step(*unkept, topic, action, batch, now)
            if action == "fail":
                during = [fast[1][1], other[1][1]]
        assert view_of(runs[0][0]) == view_of(runs[1][0]), action
        assert seen_by_readers(view_of(runs[1][0])) == seen_by_readers(view_of(unkept[0])), action
        dead = dead_of(runs[0][0])
        assert dead == dead_of(runs[1][0]), action
        assert during[0] + dead == during[1] + dead_of(unkept[0]), action
    ref_snaps, fast_snaps, unkept_snaps = (snapshots_of(proc.snapshot()) for proc, _ in (*runs, unkept))
    assert ref_snaps == fast_snaps == unkept_snaps
    counts = runs[1][0].counts
    note(f"accepted: {min(counts['accepted'], 10) // 5 * 5}+, rejected: {min(counts['rejected'], 10) // 5 * 5}+")
    note(f"late corrections: {counts['late_corrections'] > 0}")
    whole = [pack_units(r.value, 900, 5)[1] for r in records if type(r.value) is bytes and b"\n" in r.value]
    note(f"a pack decoded in one call: {any(events and len(events) > 1 for events in whole)}")


def _view(ts: int) -> bytes:
    return orjson.dumps({"schema_version": 1, "type": "view", "event_id": "e0", "ts": ts, "streamer_id": "s1",
                         "session_id": "live-1", "viewer_id": "v0", "action": "enter"})


@hsettings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log())
@example(("live.views",  # a pack over two windows, the second evicted, with the sink away: raises half way
          [Rec(10, None, _view(T0), T0 + 200_000), Rec(11, None, _view(T0), T0 + 200_000),
           Rec(12, b"s1", _view(T0 - 1) + b"\n" + _view(T0 - 1), T0 + 200_000), Rec(13, None, _view(T0), T0 + 200_000),
           Rec(14, b"s1", _view(T0) + b"\n" + _view(T0 - 1), T0 + 200_000)],
          [("batch", 3), ("fail", 2)]))
def test_the_batch_loop_matches_the_reference_path_on_random_logs(case: tuple) -> None:
    run_both(*case)


@pytest.mark.parametrize("pack", [1, 10])
def test_the_batch_loop_matches_the_reference_path_on_a_simulated_log(pack: int) -> None:
    """The simulator's imperfections (late events and orders, duplicates, every malformed reason),
    unpacked and in packs, in batches of 500 with flushes in between: identical state and dead letters."""
    records = list(generate(6_000, seed=7, n_streamers=40))
    if pack > 1:
        records = list(pack_records(records, pack))
    settings = Settings.from_env(env={})
    parts: dict[str, list[Rec]] = {}
    for rec in records:
        lst = parts.setdefault(rec.topic, [])
        lst.append(Rec(len(lst), rec.key, rec.value, rec.ts))
    for topic, recs in parts.items():
        runs = [processor(ref, topic, settings) for ref in (True, False)]
        for i in range(0, len(recs), 500):
            for proc, sink in runs:
                proc.handle_batch(topic, 0, recs[i:i + 500])
            assert view_of(runs[0][0]) == view_of(runs[1][0])
            assert dead_of(runs[0][0]) == dead_of(runs[1][0])
            ref, fast = (step(proc, sink, topic, "flush", [], 0.0) for proc, sink in runs)
            assert ref == fast
        assert runs[1][0].counts["rejected"] > 0 and runs[1][0].counts["accepted"] > 0


@hsettings(max_examples=600, deadline=None)
@given(st.sampled_from(["live.views", "live.likes", None]), st.lists(st.sampled_from([
    b'{"schema_version":1,"type":"like","event_id":"e","ts":1763900000000,"streamer_id":"s1","session_id":"l",'
    b'"viewer_id":"v","count":1}',
    b'{"type":"view","schema_version":1,"event_id":"e","ts":1763900000000,"streamer_id":"s1","session_id":"l",'
    b'"viewer_id":"v","action":"leave"}',
    b'{"a":1}', b"{", b"}", b"[1]", b"", b" ", b"\r", b"\x0c", b'{"schema_version":1,', b'"type":"like"}',
    b"\xff", b"1", b"{}{}", b"{} {}",
]), min_size=1, max_size=6), st.lists(st.sampled_from(SEPARATORS), min_size=6, max_size=6))
def test_pack_units_says_what_message_units_says(topic: str | None, lines: list[bytes], seps: list[bytes]) -> None:
    """The quick pack test and the one-call decode of a pack give ``message_units``' units, and the
    events they hand on are what decoding each unit alone gives (with a topic's decoder, or the union's)."""
    value = lines[0] + b"".join(sep + line for sep, line in zip(seps, lines[1:]))
    if b"\n" not in value:
        return
    decoder = TOPIC_DECODERS[topic] if topic else _FAST
    units, events = pack_units(value, 900, 5, decoder)
    assert units == message_units(value, 900, 5)
    if events is not None:
        assert len(events) <= len(units)
        assert events == [decoder.decode(u) for u in units[:len(events)]]


def test_forgetting_orders_is_the_old_rule_exactly() -> None:
    """Orders are forgotten through per-streamer heaps; the set kept is the one the old pass kept:
    ``{k: v for k, v in orders_seen.items() if v[0] >= watermark[v[1]] - horizon}``."""
    from support.helpers import order as order_event
    from support.helpers import typed

    from streamproc.core.state import Rules

    rules = Rules(order_dedupe_horizon_ms=60_000)
    st_ = PartitionState("live.orders", 0, rules)
    offset = 0
    for round_ in range(6):
        for i in range(700):
            streamer = f"s{i % 7}"
            ts = T0 + round_ * 40_000 + (i * 7919) % 50_000 - (30_000 if i % 11 == 0 else 0)
            ev = typed(order_event(streamer_id=streamer, ts=ts, order_id=f"o{round_}-{i}", status="paid"))
            st_.apply(offset, ev)
            offset += 1
        expected = dict(st_.orders_seen)
        if len(expected) > 1024:
            expected = {k: v for k, v in expected.items() if v[0] >= st_.watermark[v[1]] - 60_000}
        st_.flush_done(st_.snapshot())
        assert st_.orders_seen == expected and list(st_.orders_seen) == list(expected)
    assert len(st_.orders_seen) < 6 * 700  # some were forgotten


FIELD_TEXTS = ['"view"', '"like"', '"order"', '"vi\\u0065w"', "null", "1", "1.0", '""', '"x"', '"enter"', '"leave"',
               '"paid"', "0", "1763900000000", "-1", "10000", "10001", '"s1"', '"' + "x" * 65 + '"', "[]", "{}"]


@hsettings(max_examples=1500, deadline=None)
@given(st.sampled_from(TOPICS), st.data())
def test_a_topic_decoder_accepts_only_what_decode_accepts_with_the_same_fields(topic: str, data: st.DataObject) -> None:
    """``TOPIC_DECODERS`` (untagged, one type) against the union decoder ``decode`` starts with: whatever
    the first accepts, the second accepts as that topic's type with the same field values -- through
    duplicated keys (the tag among them), escapes, missing, extra and mistyped fields."""
    kind = {"live.views": "view", "live.likes": "like", "live.orders": "order"}[topic]
    obj = event(data.draw, kind, "s1")
    pairs = [(orjson.dumps(k).decode(), orjson.dumps(v).decode()) for k, v in obj.items()]
    for _ in range(data.draw(st.integers(0, 3))):
        how = data.draw(st.integers(0, 3))
        field = data.draw(st.sampled_from(sorted(obj) + ["extra"]))
        text = data.draw(st.sampled_from(FIELD_TEXTS))
        if how == 0:  # a duplicate key, anywhere
            pairs.insert(data.draw(st.integers(0, len(pairs))), (orjson.dumps(field).decode(), text))
        elif how == 1 and pairs:  # a value replaced
            i = data.draw(st.integers(0, len(pairs) - 1))
            pairs[i] = (pairs[i][0], text)
        elif how == 2 and pairs:  # a field dropped
            del pairs[data.draw(st.integers(0, len(pairs) - 1))]
        else:  # the keys reordered
            pairs = data.draw(st.permutations(pairs))
    value = ("{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}").encode()
    try:
        quick = TOPIC_DECODERS[topic].decode(value)
    except Exception:
        note("refused by the topic decoder")
        return
    note(f"accepted, {len(pairs) - len(obj)} keys more than fields")
    full = _FAST.decode(value)
    assert {"view": "View", "like": "Like", "order": "Order"}[kind] == type(full).__name__
    assert all(getattr(quick, f) == getattr(full, f) for f in type(full).__struct_fields__), (quick, full)
