"""Validation: every kind of bad input gets its reason code; good input becomes a typed event."""

from __future__ import annotations

import orjson
import pytest
from support.helpers import TS, like, order, view

from streamproc.ingest.events import Like, Order, Rejection, View, decode


def run(obj: object, topic: str = "live.orders", key: bytes | None = b"s1", record_ts: int | None = TS,
        raw: bytes | None = None, now_ms: int | None = None):
    value = raw if raw is not None else orjson.dumps(obj)
    return decode(value, topic, key, record_ts, max_bytes=65536, max_future_ms=300_000, now_ms=now_ms)


def reason(*args, **kw) -> str:
    r = run(*args, **kw)
    assert isinstance(r, Rejection), r
    return r.reason


def test_valid_events_decode_to_typed_tuples() -> None:
    assert run(order()) == Order(schema_version=1, event_id="e1", ts=TS, streamer_id="s1", session_id="live1",
                                 viewer_id="v1", order_id="o1", product_id="kiwi-5kg", category="fruit", quantity=2,
                                 amount_fen=7980, status="paid")
    leave = view(event_id="e", session_id="l", viewer_id="v9", action="leave")
    assert run(leave, "live.views") == View(schema_version=1, event_id="e", ts=TS, streamer_id="s1", session_id="l",
                                            viewer_id="v9", action="leave")
    twelve = like(event_id="e", session_id="l", viewer_id="v9", count=12)
    assert run(twelve, "live.likes") == Like(schema_version=1, event_id="e", ts=TS, streamer_id="s1", session_id="l",
                                             viewer_id="v9", count=12)
    # extra fields are tolerated (forward compatible producers)
    assert isinstance(run(order(coupon="双十一")), Order)


@pytest.mark.parametrize(
    "obj, kw, expected",
    [
        (None, {"raw": b"x" * 70_000}, "oversized"),
        (None, {"raw": b'{"type": "order", "name": "\xff\xfe"}'}, "invalid_utf8"),
        (None, {"raw": b'{"type": "order", '}, "malformed_json"),
        (None, {"raw": b"NaN"}, "malformed_json"),
        (None, {"raw": b""}, "malformed_json"),
        ([1, 2], {}, "not_object"),
        (order(type=...), {}, "missing_field"),
        (order(type=7), {}, "wrong_type"),
        (order(type="gift"), {}, "unknown_type"),
        (order(), {"topic": "live.views"}, "wrong_topic"),
        (order(schema_version=2), {}, "unsupported_version"),
        (order(schema_version="1"), {}, "wrong_type"),
        (order(order_id=...), {}, "missing_field"),
        (order(order_id=""), {}, "bad_value"),
        (order(order_id="x" * 65), {}, "bad_value"),
        (order(quantity=0), {}, "bad_value"),
        (order(quantity=True), {}, "wrong_type"),
        (order(amount_fen=39.9), {}, "wrong_type"),
        (order(amount_fen="3990"), {}, "wrong_type"),
        (order(amount_fen=-1), {}, "negative_amount"),
        (order(amount_fen=10_000_000_001), {}, "absurd_amount"),
        (order(status="pending"), {}, "bad_value"),
        (order(ts=TS + 300_001), {}, "future"),
        (order(ts=123), {}, "bad_value"),
        (order(), {"key": b"s2"}, "key_mismatch"),
        (order(), {"key": None}, "key_mismatch"),
        (order(streamer_id="s\u0000"), {"key": b"s\x00"}, "bad_value"),
        (order(), {"record_ts": TS + 300_001, "now_ms": TS}, "future"),
    ],
)
def test_rejection_reasons(obj: object, kw: dict, expected: str) -> None:
    assert reason(obj, **kw) == expected


def test_future_is_judged_against_the_record_time_and_the_readers_clock() -> None:
    # a log from 2017 replayed today: nothing is "in the future" relative to its own record times
    old = 1_510_000_000_000
    assert isinstance(run(order(ts=old), record_ts=old, now_ms=TS), Order)
    assert reason(order(ts=old + 400_000), record_ts=old, now_ms=TS) == "future"
    # a record stamped ahead of the reader's clock: up to max_future_ms is clock skew, beyond is forged
    assert isinstance(run(order(), record_ts=TS + 300_000, now_ms=TS), Order)
    assert reason(order(), record_ts=TS + 300_001, now_ms=TS) == "future"
    # no record timestamp, or no reader's clock: those checks do not apply
    assert isinstance(run(order(), record_ts=None, now_ms=TS - 10**9), Order)
    assert isinstance(run(order(), record_ts=TS + 10**9), Order)


def test_an_event_must_be_keyed_by_a_streamer_id_the_api_can_look_up() -> None:
    for sid in ("s1", "陕西武功猕猴桃", "douyin:12345", "shop@taobao", "wugong_kiwi.official-1", "ｓ１",
                "ร้านผลไม้", "हिन्दी", "e\u0301", "1"):
        assert isinstance(run(order(streamer_id=sid), key=sid.encode()), Order), sid
    for sid in ("", "x" * 65, "s 1", "s\t1", "s\n", "s\u0000", "s\u007f", "s\u200b1", "s\u202e1", '"s1"', "s'1",
                "a/b", "a\\b", "a?b", "a#b", "a%20b", "a+b", "主播🍑", "🍑", ".", "..", "_", "-", "@:"):
        assert reason(order(streamer_id=sid), key=sid.encode()) == "bad_value", sid
    # the same verdicts on the reference path (a message the typed fast path refuses for another reason)
    assert reason(order(streamer_id="a/b", amount_fen=7980.0), key=b"a/b") == "bad_value"  # before wrong_type
    assert reason(order(streamer_id="ok", session_id=...), key=b"ok") == "missing_field"
    assert reason(order(streamer_id="a b", session_id=...), key=b"a b") == "bad_value"  # checked first
    no_key = run(order(), key=None)
    assert isinstance(no_key, Rejection) and no_key.reason == "key_mismatch" and "no key" in no_key.detail


def test_first_failing_check_names_the_reason() -> None:
    # wrong topic is checked before field values, missing fields in declaration order
    assert reason(order(amount_fen=-5), topic="live.likes") == "wrong_topic"
    assert reason(order(event_id=..., amount_fen=-5)) == "missing_field"
