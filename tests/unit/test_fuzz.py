"""Hostile and broken input: every message is either a valid event or a dead letter with a reason.

Property-based (hypothesis) over the decoder and the processor, with an independent judge of the
contract (``event_judge``: Python's json + the published JSON Schemas). A time-bounded coverage-guided
fuzz run (atheris) of the same property, in a child process: tests/integration/test_fuzz_atheris.py.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from support.event_judge import MAX_BYTES, MAX_FUTURE, TOPICS, TS, conforms
from support.helpers import Rec, like, order, view

from streamproc.core.state import EVENTS, PartitionState
from streamproc.ingest.deadletter import original_key, original_value
from streamproc.ingest.events import REASONS, Rejection, decode
from streamproc.runtime.processor import Processor
from streamproc.settings import Settings

BASE = {
    "view": view(event_id="e-1", session_id="live-1"),
    "like": like(event_id="e-2", session_id="live-1", count=3),
    "order": order(event_id="e-3", session_id="live-1", order_id="o-1"),
}

# JSON texts a careless or hostile producer sends where a field's value belongs.
HOSTILE_LITERALS = [
    "NaN", "Infinity", "-Infinity", "1.5", "12.0", "1e3", "-1", "-0", "0", "true", "false", "null", "[]", "{}",
    "18446744073709551616", "-9223372036854775809", "1" + "0" * 400, '""', '"12"', '"\\ud800"', '"\\u0000"',
    '"' + "x" * 65 + '"', '"' + "界" * 64 + '"', '"' + "界" * 65 + '"', "[" * 50 + "]" * 50, '{"a":' * 30 + "1" + "}" * 30,
    '"paid "', '"PAID"', '"enter\\n"', "1" * 20, "4102444800001", "946684799999",
]


def literal_text(obj: dict[str, Any], field: str, literal: str) -> bytes:
    """``obj`` as JSON with ``field`` set to the raw JSON text ``literal`` (which may not be JSON at all)."""
    parts = [orjson.dumps(k).decode() + ":" + (literal if k == field else orjson.dumps(v).decode())
             for k, v in obj.items()]
    if field not in obj:
        parts.append(orjson.dumps(field).decode() + ":" + literal)
    return ("{" + ",".join(parts) + "}").encode()


@st.composite
def hostile_messages(draw: st.DrawFn) -> tuple[str, bytes | None, bytes, int | None]:
    """(topic, key, value, record_ts): a valid event with one field made hostile, or plain noise."""
    kind = draw(st.sampled_from(sorted(BASE)))
    obj = dict(BASE[kind])
    topic = draw(st.sampled_from(TOPICS + ("live.orders",) * 2))
    key = draw(st.sampled_from([b"s1", None, b"s2", b"\xff\xfe"]))
    record_ts = draw(st.sampled_from([TS, None, 0, TS - 400_000, TS + 10**9]))
    how = draw(st.integers(0, 5))
    if how == 0:  # one field replaced by a hostile literal (or a new field added)
        field = draw(st.sampled_from(sorted(obj) + ["extra"]))
        value = literal_text(obj, field, draw(st.sampled_from(HOSTILE_LITERALS)))
    elif how == 1:  # one field replaced by an arbitrary JSON value
        field = draw(st.sampled_from(sorted(obj)))
        obj[field] = draw(st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=80),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=8))
        value = json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()  # ints past 64 bits too
    elif how == 2:  # a field dropped, or duplicated with a second value
        field = draw(st.sampled_from(sorted(obj)))
        text = orjson.dumps(obj)
        value = (text.replace(orjson.dumps(field) + b":", b'"_' + field.encode() + b'":', 1) if draw(st.booleans())
                 else text[:-1] + b"," + orjson.dumps(field) + b":" + draw(st.sampled_from(HOSTILE_LITERALS)).encode() + b"}")
    elif how == 3:  # bytes flipped, cut or inserted somewhere in a valid event
        raw = bytearray(orjson.dumps(obj))
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(raw)))
            op = draw(st.integers(0, 2))
            if op == 0 and i < len(raw):
                raw[i] = draw(st.integers(0, 255))
            elif op == 1:
                del raw[i:i + draw(st.integers(1, 8))]
            else:
                raw[i:i] = draw(st.binary(min_size=1, max_size=4))
        value = bytes(raw)
    elif how == 4:  # noise
        value = draw(st.binary(max_size=200))
    else:  # a valid event, possibly with a changed id or time
        obj["ts"] = draw(st.integers(TS - 10**6, TS + 10**6))
        obj["streamer_id"] = draw(st.sampled_from(["s1", "s2", "主播-1"]))
        value = orjson.dumps(obj)
    return topic, key, value, record_ts


@hsettings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_messages())
@example(("live.orders", b"s1", literal_text(BASE["order"], "amount_fen", "79.8"), TS))  # float money
@example(("live.orders", b"s1", literal_text(BASE["order"], "quantity", "-2"), TS))  # negative quantity
@example(("live.likes", b"s1", literal_text(BASE["like"], "count", "NaN"), TS))
@example(("live.views", b"s1", b"\xef\xbb\xbf" + orjson.dumps(BASE["view"]), TS))  # BOM
@example(("live.views", b"s1", orjson.dumps(BASE["view"]).replace(b"v1", b"v\xc3"), TS))  # invalid UTF-8
def test_every_message_is_a_valid_event_or_a_rejection_with_a_reason(msg: tuple) -> None:
    topic, key, value, record_ts = msg
    verdict = decode(value, topic, key, record_ts, max_bytes=MAX_BYTES, max_future_ms=MAX_FUTURE)
    want = conforms(value, topic, key, record_ts, max_bytes=MAX_BYTES, max_future_ms=MAX_FUTURE)
    if isinstance(verdict, Rejection):
        assert verdict.reason in REASONS, verdict
        assert not want, f"a valid event was rejected ({verdict}): {value!r}"
    else:
        assert want, f"accepted input that breaks the contract: {value!r} -> {verdict!r}"
        obj = orjson.loads(value)
        assert verdict.ts == obj["ts"] and verdict.streamer_id == obj["streamer_id"]


@given(st.binary(max_size=2048), st.sampled_from(TOPICS), st.one_of(st.none(), st.binary(max_size=16)),
       st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)))
@hsettings(max_examples=1000, deadline=None)
def test_arbitrary_bytes_never_raise_and_are_never_accepted_unless_valid(value: bytes, topic: str, key: bytes | None,
                                                                          record_ts: int | None) -> None:
    verdict = decode(value, topic, key, record_ts, max_bytes=MAX_BYTES, max_future_ms=MAX_FUTURE)
    assert (not isinstance(verdict, Rejection)) == conforms(value, topic, key, record_ts, max_bytes=MAX_BYTES,
                                                            max_future_ms=MAX_FUTURE)


@pytest.mark.parametrize("make, reason", [
    (lambda: b'{"type":"view","x":"' + b"x" * 10 * 1024 * 1024 + b'"}', "oversized"),  # 10 MB
    (lambda: b"[" * 100_000 + b"]" * 100_000, "oversized"),  # deeply nested and big
    (lambda: b"[" * 5_000 + b"]" * 5_000, "malformed_json"),  # deeper than any parser's limit
    (lambda: literal_text(BASE["view"], "extra", "[" * 2_000 + "]" * 2_000), "malformed_json"),
])
def test_huge_and_deep_input_is_rejected_cheaply(make: Any, reason: str) -> None:
    value = make()
    started = time.perf_counter()
    verdict = decode(value, "live.views", b"s1", TS, max_bytes=MAX_BYTES, max_future_ms=MAX_FUTURE)
    assert isinstance(verdict, Rejection) and verdict.reason == reason, verdict
    assert time.perf_counter() - started < 5  # behavioural band: no quadratic blow-up


def test_a_10mb_id_is_refused_even_when_the_size_limit_is_raised() -> None:
    value = literal_text(BASE["view"], "viewer_id", '"' + "v" * 10 * 1024 * 1024 + '"')
    verdict = decode(value, "live.views", b"s1", TS, max_bytes=64 * 1024 * 1024, max_future_ms=MAX_FUTURE)
    assert isinstance(verdict, Rejection) and verdict.reason == "bad_value", verdict


# -- the processor: what an agent does with a batch of such messages ---------------------------------


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_messages(), min_size=1, max_size=40), st.sampled_from(TOPICS))
def test_the_processor_never_raises_and_dead_letters_carry_what_an_operator_needs(msgs: list, topic: str) -> None:
    proc = Processor(Settings.from_env(env={}), sink=None)  # a fresh partition needs nothing from a sink
    proc.states[(topic, 3)] = state = PartitionState(topic, 3, proc.rules)
    records = [Rec(100 + i, key, value, record_ts or TS) for i, (_, key, value, record_ts) in enumerate(msgs)]
    before = int(time.time() * 1000)
    proc.handle_batch(topic, 3, records)  # must not raise, whatever the bytes
    dead = [(k, orjson.loads(v)) for k, v in proc.take_dead_letters()]
    accepted = sum(acc[EVENTS] for acc in state.windows.values())
    assert proc.counts["accepted"] == accepted
    assert proc.counts["consumed"] == accepted + len(dead) >= len(records)
    assert state.offset == records[-1].offset  # every message moved the checkpoint, accepted or not
    by_offset = {r.offset: r for r in records}
    for key, rec in dead:
        src = by_offset[rec["offset"]]
        assert rec["reason"] in REASONS and rec["detail"] is not None
        assert (rec["topic"], rec["partition"], rec["timestamp"]) == (topic, 3, src.timestamp)
        assert key == f"{topic}/3/{rec['offset']}/{rec['index']}".encode()
        assert before <= rec["rejected_at"] <= int(time.time() * 1000)
        assert original_key(rec) == src.key
        value = original_value(rec)
        # the exact bytes that were refused: the message, or one line of a pack
        assert value == (src.value or b"") or value in (src.value or b"").split(b"\n"), (value, src.value)
        if "value_b64" in rec:
            assert base64.b64decode(rec["value_b64"]) == value and not _utf8(value)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@pytest.mark.parametrize("kind", sorted(BASE))
def test_the_judge_and_the_decoder_both_accept_a_plain_valid_event(kind: str) -> None:
    value, topic = orjson.dumps(BASE[kind]), f"live.{kind}s"
    assert conforms(value, topic, b"s1", TS, max_bytes=MAX_BYTES, max_future_ms=MAX_FUTURE)
    assert not isinstance(decode(value, topic, b"s1", TS, max_bytes=MAX_BYTES, max_future_ms=MAX_FUTURE), Rejection)
