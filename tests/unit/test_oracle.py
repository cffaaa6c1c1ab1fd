"""The reconciliation oracle, on real chDB.

Hand-made logs are checked against tallies worked out by hand in the comments; the SQL validation is
cross-checked against ``events.decode`` record by record on random and adversarial messages (the two
independent statements of one contract); the sink side runs on the real DDL of 001_core.sql.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from support import helpers
from support.helpers import ROOT, TOPIC, decode_record

from streamproc.ingest import events
from streamproc.logs.logfile import LogRecord, write_log
from streamproc.verify import oracle

SCHEMA = ROOT / "schemas" / "clickhouse" / "001_core.sql"

T0 = 1_700_000_000_000  # a window start (divisible by 10 000)
W0, W1, W2, W3, W6 = T0, T0 + 10_000, T0 + 20_000, T0 + 30_000, T0 + 60_000
ZERO = dict.fromkeys(oracle.COLUMNS, 0)


@pytest.fixture(scope="module")
def conn(chdb_conn: object) -> object:
    return chdb_conn


@pytest.fixture(scope="module")
def query(conn):
    return oracle.chdb_query(conn)


def dumps(obj) -> bytes:
    # stdlib json, not orjson: it also writes 65-bit integers and keeps 1.0 a float
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def view(sid, ts, viewer, action):
    return helpers.view(event_id=f"ev{ts}{viewer}{action}", ts=ts, streamer_id=sid, session_id=f"{sid}-live",
                        viewer_id=viewer, action=action)


def like(sid, ts, count):
    return helpers.like(event_id=f"el{ts}", ts=ts, streamer_id=sid, session_id=f"{sid}-live", count=count)


def order(sid, ts, order_id, status, quantity, amount_fen):
    return helpers.order(event_id=f"eo{ts}", ts=ts, streamer_id=sid, session_id=f"{sid}-live", order_id=order_id,
                         product_id="p-tea", category="tea", quantity=quantity, amount_fen=amount_fen, status=status)


def rec(event: dict, *, topic=None, key: bytes | None | str = "auto", rts=None) -> LogRecord:
    """A log record for an event dict: topic from its type, key = streamer, record ts = event ts."""
    if key == "auto":
        key = event["streamer_id"].encode()
    return LogRecord(topic or TOPIC[event["type"]], key, event["ts"] if rts is None else rts, dumps(event))


def raw(value: bytes, topic="live.views", key: bytes | None = b"s1", rts=T0) -> LogRecord:
    return LogRecord(topic, key, rts, value)


def keyed(event: dict) -> LogRecord:
    """A views record of ``event`` keyed by its streamer id, whatever that id is."""
    return raw(dumps(event), key=event["streamer_id"].encode())


def tallies(**cols) -> dict[str, int]:
    return {**ZERO, **cols}


# ---------------------------------------------------------------------------------------------------
# A hand-made log and its tallies worked out by hand
# ---------------------------------------------------------------------------------------------------

HAND_LOG = [
    # s1 views, running count c in file order (per streamer, over accepted views)
    rec(view("s1", T0 + 1_000, "v1", "enter")),  # c=1  W0
    rec(view("s1", T0 + 2_000, "v2", "enter")),  # c=2  W0
    rec(view("s1", T0 + 3_000, "v1", "enter")),  # c=3  W0 (v1 again: one unique viewer)
    rec(view("s1", T0 + 4_000, "v2", "leave")),  # c=2  W0
    rec(view("s1", T0 + 12_000, "v3", "enter")),  # c=3  W1
    rec(view("s1", T0 + 15_000, "v1", "leave")),  # c=2  W1
    rec(view("s1", T0 + 5_000, "v3", "leave")),  # c=1  W0: 10 s behind the max, within lateness
    rec(view("s1", T0 + 60_000, "v9", "enter")),  # c=2  W6
    rec(view("s1", T0 + 29_999, "v8", "enter")),  # late: 29 999 < 60 000 - 30 000
    rec(view("s1", T0 + 30_000, "v7", "enter")),  # c=3  W3: exactly at the lateness bound, accepted
    rec(view("s1", T0 + 61_000, "v9", "leave")),  # c=2  W6
    rec(view("s1", T0 + 6_000, "v6", "enter"), key=b"s2"),  # key_mismatch: not counted
    # s1 likes: their own lateness group (live.likes, s1), so the views' max of T0+61 000 does not apply
    rec(like("s1", T0 + 500, 3)),  # W0
    rec(like("s1", T0 + 9_999, 4)),  # W0
    rec(like("s1", T0 + 100, 5)),  # W0 (max of the likes group is T0+9 999)
    rec(like("s1", T0 + 200, 0)),  # bad_value: count 0
    # s1 orders: the first accepted (order_id, status) counts; later ones are retries
    rec(order("s1", T0 + 1_500, "o1", "paid", 2, 1_000)),  # W0 paid
    rec(order("s1", T0 + 1_600, "o1", "paid", 2, 1_000)),  # W0 retry: counts in events only
    rec(order("s1", T0 + 2_500, "o2", "paid", 1, 500)),  # W0 paid
    rec(order("s1", T0 + 11_000, "o1", "refunded", 2, 1_000)),  # W1 refund
    rec(order("s1", T0 + 11_500, "o1", "refunded", 2, 1_000)),  # W1 retry
    rec(order("s1", T0 - 3_600_000, "o3", "paid", 9, 9_999)),  # late: more than the 1 h order horizon behind
    rec(order("s1", T0 + 12_000, "o3", "paid", 1, 700)),  # W1: first *accepted* o3 paid
    rec(order("s1", T0 + 13_000, "o4", "paid", 1, -5)),  # negative_amount
    rec(order("s1", T0 + 14_000, "o4", "paid", 3, 300)),  # W1: first accepted o4 paid
    rec(order("s1", T0 + 21_000, "o5", "refunded", 1, 250)),  # W2: a refund with no paid seen
    # s2: a leave with nobody counted takes nobody away (never below zero); a null key is a key mismatch
    rec(view("s2", T0 + 100, "w1", "leave")),  # c=0 W0
    rec(like("s2", T0 + 200, 10), key=None),  # key_mismatch: a keyless event lands in any partition
    rec(view("s2", T0 + 300, "w1", "enter")),  # c=1 W0
    rec(view("s2", T0 + 400, "w2", "leave")),  # c=0 W0
]

HAND_TALLIES = {
    # events: views 0,1,2,3,6 + likes 3 + orders o1, o1 retry, o2
    (W0, "s1"): tallies(events=11, enters=3, leaves=2, concurrent_peak=3, concurrent_close=1, likes=12,
                        orders_paid=2, items=3, gmv_fen=1_500, unique_viewers=2),
    # views 4,5 + orders o1 refund, retry, o3, o4
    (W1, "s1"): tallies(events=6, enters=1, leaves=1, concurrent_peak=3, concurrent_close=2,
                        orders_paid=2, orders_refunded=1, items=-2 + 1 + 3, gmv_fen=-1_000 + 700 + 300,
                        refund_fen=1_000, unique_viewers=1),
    (W2, "s1"): tallies(events=1, orders_refunded=1, items=-1, gmv_fen=-250, refund_fen=250),
    (W3, "s1"): tallies(events=1, enters=1, concurrent_peak=3, concurrent_close=3, unique_viewers=1),
    (W6, "s1"): tallies(events=2, enters=1, leaves=1, concurrent_peak=2, concurrent_close=2, unique_viewers=1),
    (W0, "s2"): tallies(events=3, enters=1, leaves=2, concurrent_peak=1, concurrent_close=0, unique_viewers=1),
}

HAND_REASONS = [None] * 8 + ["late"] + [None] * 2 + ["key_mismatch"] + [None] * 3 + ["bad_value"] + [None] * 5 + [
    "late", None, "negative_amount", None, None] + [None, "key_mismatch", None, None]


@pytest.fixture(scope="module")
def hand_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "hand.jsonl"
    write_log(path, HAND_LOG)
    return path


def test_hand_log_reasons(query, hand_log):
    assert oracle.expected_reasons(query, str(hand_log)) == HAND_REASONS


def test_hand_log_tallies(query, hand_log):
    assert oracle.expected_tallies(query, str(hand_log)) == HAND_TALLIES


def test_hand_log_deadletters(query, hand_log):
    want = Counter({
        ("live.views", HAND_LOG[8].value, "late"): 1,
        ("live.views", HAND_LOG[11].value, "key_mismatch"): 1,
        ("live.likes", HAND_LOG[15].value, "bad_value"): 1,
        ("live.orders", HAND_LOG[21].value, "late"): 1,
        ("live.orders", HAND_LOG[23].value, "negative_amount"): 1,
        ("live.likes", HAND_LOG[27].value, "key_mismatch"): 1,
    })
    assert oracle.expected_deadletters(query, str(hand_log)) == want


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_compressed_logs(query, tmp_path, suffix):
    path = tmp_path / f"hand{suffix}"
    write_log(path, HAND_LOG)
    assert path.read_bytes()[:4] != b'{"to'  # really compressed
    assert oracle.expected_tallies(query, str(path)) == HAND_TALLIES
    assert oracle.expected_reasons(query, str(path)) == HAND_REASONS


def test_rules_are_parameters(query, hand_log):
    # a 1 s window keeps W0 of s2 in T0 (views at +100, +300, +400)
    tight = oracle.RuleSet(window_ms=1_000, lateness_ms=5_000, max_bytes=200, max_future_ms=10)
    reasons = oracle.expected_reasons(query, str(hand_log), tight)
    assert reasons[6] == "late"  # 5 000 < 15 000 - 5 000 under the tighter lateness
    assert reasons[8] == "late" and reasons[9] == "late"  # 29 999 and 30 000 < 60 000 - 5 000
    assert set(reasons) - {None} <= {"late", "oversized", "key_mismatch", "bad_value", "negative_amount"}
    assert reasons.count("oversized") == sum(len(r.value) > 200 for r in HAND_LOG)
    t = oracle.expected_tallies(query, str(hand_log), oracle.RuleSet(window_ms=1_000))
    assert t[(T0, "s2")] == tallies(events=3, enters=1, leaves=2, concurrent_peak=1, concurrent_close=0,
                                    unique_viewers=1)
    # [T0+1 000, T0+2 000) of s1: the view at +1 000, order o1 at +1 500 and its retry at +1 600
    assert t[(T0 + 1_000, "s1")] == tallies(events=3, enters=1, concurrent_peak=1, concurrent_close=1,
                                            orders_paid=1, items=2, gmv_fen=1_000, unique_viewers=1)
    # future is judged against the record timestamp, and only when it is positive; and the record
    # timestamp against the reader's clock
    log = [rec(view("s1", T0 + 11, "v", "enter"), rts=T0), rec(view("s1", T0 + 10, "v", "enter"), rts=T0),
           rec(view("s1", T0 + 99_999, "v", "enter"), rts=0), rec(view("s3", T0 + 20, "v", "enter"), rts=T0 + 20)]
    path = hand_log.parent / "future.jsonl"
    write_log(path, log)
    assert oracle.expected_reasons(query, str(path), tight) == ["future", None, None, None]
    at_t0 = oracle.RuleSet(max_future_ms=10, now_ms=T0)
    assert oracle.expected_reasons(query, str(path), at_t0) == ["future", None, None, "future"]


# ---------------------------------------------------------------------------------------------------
# Every reason code, with its raw bytes
# ---------------------------------------------------------------------------------------------------

GOOD = view("s1", T0, "v1", "enter")


def test_every_reason_code(query, tmp_path):
    cases: list[tuple[LogRecord, str | None]] = [
        (raw(dumps({**GOOD, "pad": "x" * 65_536})), "oversized"),
        (raw(b'{"type":"view","x":"\xff"}'), "invalid_utf8"),  # stored as value_b64
        (raw(b"\xc0\x80"), "invalid_utf8"),  # overlong
        (raw(b'{"a":"\xed\xa0\x80"}'), "invalid_utf8"),  # an encoded surrogate
        (raw(b'{"type":'), "malformed_json"),
        (raw(b""), "malformed_json"),
        (raw(b'{"a":"\\ud800"}'), "malformed_json"),  # lone surrogate escape
        (raw(b"\xef\xbb\xbf" + dumps(GOOD)), "malformed_json"),  # BOM
        (raw(b'{"a":NaN}'), "malformed_json"),
        (raw(b"[1,2]"), "not_object"),
        (raw(b'"view"'), "not_object"),
        (raw(b"null"), "not_object"),
        (raw(dumps({k: v for k, v in GOOD.items() if k != "type"})), "missing_field"),
        (raw(dumps({**GOOD, "type": None})), "missing_field"),
        (raw(dumps({k: v for k, v in GOOD.items() if k != "viewer_id"})), "missing_field"),
        (raw(dumps({**GOOD, "type": 1})), "wrong_type"),
        (raw(dumps({**GOOD, "ts": str(T0)})), "wrong_type"),
        (raw(dumps({**GOOD, "ts": float(T0)})), "wrong_type"),  # floats are not integers
        (raw(dumps(like("s1", T0, True)), topic="live.likes"), "wrong_type"),  # nor are booleans
        (raw(dumps({**GOOD, "viewer_id": 7})), "wrong_type"),
        (raw(dumps({**GOOD, "type": "click"})), "unknown_type"),
        (raw(dumps({**GOOD, "type": "click", "ts": "x"}), topic="live.likes"), "unknown_type"),  # before wrong_topic
        (raw(dumps(GOOD), topic="live.likes"), "wrong_topic"),
        (raw(dumps({**GOOD, "schema_version": 2})), "unsupported_version"),
        (raw(dumps({**GOOD, "schema_version": 0})), "unsupported_version"),
        (raw(dumps({**GOOD, "schema_version": True})), "wrong_type"),
        (raw(dumps({**GOOD, "event_id": ""})), "bad_value"),
        (raw(dumps({**GOOD, "event_id": "x" * 65})), "bad_value"),
        (raw(dumps({**GOOD, "event_id": "\u00e9" * 64})), None),  # 64 characters, 128 bytes
        (raw(dumps({**GOOD, "event_id": "\U0001F600" * 65})), "bad_value"),
        (raw(dumps({**GOOD, "action": "stay"})), "bad_value"),
        (raw(dumps({**GOOD, "ts": 946_684_800_000 - 1}), rts=0), "bad_value"),
        (raw(dumps(like("s1", T0, 10_001)), topic="live.likes"), "bad_value"),
        (raw(dumps(order("s1", T0, "o1", "paid", 1, -1)), topic="live.orders"), "negative_amount"),
        (raw(dumps(order("s1", T0, "o1", "paid", 1, 10_000_000_001)), topic="live.orders"), "absurd_amount"),
        (raw(dumps(order("s1", T0, "o1", "paid", 1, 10_000_000_000)), topic="live.orders"), None),
        (keyed({**GOOD, "streamer_id": "s\u0000"}), "bad_value"),  # NUL
        (keyed({**GOOD, "streamer_id": "s 1"}), "bad_value"),
        (keyed({**GOOD, "streamer_id": "\u4e3b\u64ad\U0001F351"}), "bad_value"),  # an emoji
        (keyed({**GOOD, "streamer_id": ".."}), "bad_value"),
        (keyed({**GOOD, "streamer_id": "a/b", "session_id": 7}), "bad_value"),  # before wrong_type
        (keyed({**GOOD, "streamer_id": "\u0e23\u0e49\u0e32\u0e19"}), None),  # Thai, with combining marks
        (keyed({**GOOD, "streamer_id": "douyin:1@x_y.z-\u4e3b"}), None),
        (raw(dumps(GOOD), key=b"s2"), "key_mismatch"),
        (raw(dumps(GOOD), key=None), "key_mismatch"),
        (raw(dumps(GOOD), rts=4_000_000_000_000), "future"),  # a record stamped in 2096: ahead of the reader
        (raw(dumps({**GOOD, "ts": "x"}), key=b"s2"), "wrong_type"),  # the first failing check wins
        (raw(dumps(GOOD), rts=T0 - 300_001), "future"),
        (raw(dumps(GOOD), rts=T0 - 300_000), None),
        (raw(dumps({**GOOD, "ts": T0 - 40_000})), "late"),  # behind T0 of the accepted records above
    ]
    path = tmp_path / "reasons.jsonl"
    write_log(path, [r for r, _ in cases])
    assert b'"value_b64"' in path.read_bytes()
    got = oracle.expected_reasons(query, str(path))
    assert got == [want for _, want in cases]
    assert set(events.REASONS) == {want for _, want in cases} - {None}
    dead = oracle.expected_deadletters(query, str(path))
    assert dead == Counter((r.topic, r.value, want) for r, want in cases if want is not None)
    assert ("live.views", b'{"type":"view","x":"\xff"}', "invalid_utf8") in dead


# ---------------------------------------------------------------------------------------------------
# The cross-check: SQL reasons == events.decode reasons, record by record
# ---------------------------------------------------------------------------------------------------

STREAMERS = ["s1", "s2", "s3", "\u4e3b\u64ad"]
ODD_VALUES = [None, True, False, 1.0, 1.5, -0.0, 1e2, "1", "", "x" * 64, "x" * 65, "\u00e9" * 64, "\u00e9" * 65,
              [], [1], {}, {"a": 1}, 0, -1, 1, 2, 10_000, 10_001, 10**10, 10**10 + 1, 946_684_800_000 - 1,
              4_102_444_800_000, 4_102_444_800_001, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1,
              10**30, "enter", "leave", "paid", "refunded", "view", "like", "order", "x\u0000y",
              # streamer ids on either side of the rule
              "a b", "..", "_", "a/b", "\u4e3b\U0001F351", "\u202es1", "e\u0301", "\u0e23\u0e49\u0e32\u0e19",
              "\uff53\uff11"]


def random_record(rnd: random.Random) -> LogRecord:
    kind = rnd.choice(["view", "like", "order"])
    sid = rnd.choice(STREAMERS)
    ts = T0 + rnd.randint(0, 120_000)
    if kind == "view":
        e = view(sid, ts, f"v{rnd.randint(0, 9)}", rnd.choice(["enter", "leave"]))
    elif kind == "like":
        e = like(sid, ts, rnd.randint(1, 50))
    else:
        e = order(sid, ts, f"o{rnd.randint(0, 9)}", rnd.choice(["paid", "refunded"]), rnd.randint(1, 5),
                  rnd.randint(0, 99_999))
    topic, key, rts = TOPIC[kind], sid.encode(), ts + rnd.randint(-2_000, 2_000)
    m = rnd.random()
    if m < 0.30:
        e[rnd.choice(list(e))] = rnd.choice(ODD_VALUES)
    elif m < 0.35:
        del e[rnd.choice(list(e))]
    elif m < 0.40:
        topic = rnd.choice(list(TOPIC.values()))
    elif m < 0.45:
        key = rnd.choice([None, b"s9", b""])
    elif m < 0.50:
        rts = rnd.choice([ts - 300_000, ts - 300_001, 0, -5])
    elif m < 0.55:
        e["type"] = rnd.choice(["click", "", "VIEW", 1, None, ["view"]])
    value = dumps(e)
    m = rnd.random()
    if m < 0.05 and e:  # a duplicate key: orjson keeps the last one
        value = value[:-1] + b"," + dumps(rnd.choice(list(e))) + b":" + dumps(rnd.choice(ODD_VALUES)) + b"}"
    elif m < 0.08 and e:
        value = b"{" + dumps(rnd.choice(list(e))) + b":" + dumps(rnd.choice(ODD_VALUES)) + b"," + value[1:]
    elif m < 0.11:  # escaped keys
        value = value.replace(b'"type"', b'"t\\u0079pe"').replace(b'"ts"', b'"\\u0074s"')
    elif m < 0.14:
        value = b" \n" + value.replace(b",", b" ,\t") + b"\r\n"
    elif m < 0.20:  # byte-level damage
        b = bytearray(value)
        for _ in range(rnd.randint(1, 3)):
            pos = rnd.randrange(len(b))
            op = rnd.randrange(3)
            if op == 0:
                b[pos:pos] = bytes([rnd.choice(b'{}[]:,"\\ 0123456789.eE-\xff\xc3\x80')])
            elif op == 1:
                del b[pos]
            else:
                b[pos] = rnd.choice(b'{}[]:,"\\ 09.e-\x00\xff')
        value = bytes(b)
    return LogRecord(topic, key, rts, value)


def _ok(value: bytes) -> bytes:
    return value[:-1]  # an event without its closing brace


EDGE = dumps(GOOD)
EDGE_VALUES = [
    # depth: orjson allows 1024 nested containers; simdjson counts the innermost scalar as a level too
    *(_ok(EDGE) + b',"x":' + o * n + inner + c * n + b"}"
      for n in (1023, 1024, 1025)
      for o, c in ((b"[", b"]"), (b'{"a":', b"}"))
      for inner in (b"1", b"[]", b"{}", b'"]}[{\\""', b"01", b"1,", b'"\\x"')),
    b"[" * 1023 + EDGE + b"]" * 1023,
    _ok(EDGE) + b',"x":' + b"[" * 1023 + b"1[2]" + b"]" * 1023 + b"}",
    _ok(EDGE) + b',"x":' + b"[" * 1023 + b"{[1]:2}" + b"]" * 1023 + b"}",
    b'{"viewer_id":' + b"[" * 1023 + b"1" + b"]" * 1023 + b"," + EDGE[1:],
    b'{"viewer_id":"a","viewer_id":' + b"[" * 1023 + b"1" + b"]" * 1023 + b"," + EDGE[1:].replace(b'"viewer_id":"v1",', b""),
    # integers beyond 64 bits are floats to orjson, beyond a double an error
    *(EDGE.replace(field, field.split(b":")[0] + b":" + number)
      for field in (b'"event_id":"evT0v1enter"'.replace(b"T0", str(T0).encode()), b'"ts":' + str(T0).encode(),
                    b'"action":"enter"', b'"type":"view"', b'"schema_version":1')
      for number in (b"100000000000000000000", b"18446744073709551615", b"18446744073709551616",
                     b"-9223372036854775808", b"-9223372036854775809", b"9" * 308, b"9" * 309,
                     b"17976931348623158" + b"0" * 292, b"17976931348623159" + b"0" * 292,
                     b"1" + b"0" * 400 + b".0e-400", b"1e400", b'"' + b"9" * 400 + b'"')),
    b"\xef\xbb\xbf" + EDGE, b" \xef\xbb\xbf" + EDGE, EDGE + b"\xef\xbb\xbf",
    _ok(EDGE) + b',"x":"\\ud83d\\ude00"}', _ok(EDGE) + b',"x":"\\ud83d"}', _ok(EDGE) + b',"x":"\t"}',
    _ok(EDGE) + b"}}", _ok(EDGE) + b",}", EDGE.replace(b'"v1"', b'"\\u0076\\u0031"'),
]


def _decode_reason(r: LogRecord, now_ms: int | None = None) -> str | None:
    d = decode_record(r, now_ms)
    return d.reason if isinstance(d, events.Rejection) else None


def test_sql_reasons_equal_decode_on_random_records(query, tmp_path):
    rnd = random.Random(20240611)
    records = [random_record(rnd) for _ in range(600)]
    path = tmp_path / "random.jsonl"
    write_log(path, records)
    now = T0 - 200_000  # a reader whose clock is behind: records stamped after T0 + 100 000 are "future"
    rules = oracle.RuleSet(lateness_ms=10**15, order_horizon_ms=10**15, now_ms=now)  # nothing is late
    got = oracle.expected_reasons(query, str(path), rules)
    want = [_decode_reason(r, now) for r in records]
    diffs = [(i, w, g, records[i]) for i, (w, g) in enumerate(zip(want, got)) if w != g]
    assert not diffs, diffs[:5]
    assert len(set(want)) >= 12  # the mix really exercises most of the reason codes
    assert want.count("future") > want.count(None) // 10  # the reader's clock is in play


def test_sql_reasons_equal_decode_on_parser_edge_cases(query, tmp_path):
    records = [raw(v) for v in EDGE_VALUES]
    path = tmp_path / "edge.jsonl"
    write_log(path, records)
    got = oracle.expected_reasons(query, str(path), oracle.RuleSet(lateness_ms=10**15, order_horizon_ms=10**15))
    want = [_decode_reason(r) for r in records]
    diffs = [(i, w, g, records[i].value[:60]) for i, (w, g) in enumerate(zip(want, got)) if w != g]
    assert not diffs, diffs[:5]
    assert {None, "malformed_json", "wrong_type"} <= set(want)


def test_an_order_is_late_only_past_the_horizon(query, tmp_path):
    """A payment callback minutes behind is still money: it counts in its own window."""
    log = [rec(order("s1", T0 + 600_000, "o1", "paid", 1, 100)),
           rec(order("s1", T0, "o2", "paid", 2, 250)),  # 10 min behind: past the lateness, inside the horizon
           rec(order("s1", T0 + 600_000 - 3_600_001, "o3", "paid", 1, 50)),  # past the horizon: late
           rec(view("s1", T0, "v1", "enter")),
           rec(view("s1", T0 + 600_000, "v1", "enter")),
           rec(view("s1", T0, "v2", "enter"))]  # a view keeps the lateness rule
    path = tmp_path / "late_orders.jsonl"
    write_log(path, log)
    assert oracle.expected_reasons(query, str(path)) == [None, None, "late", None, None, "late"]
    t = oracle.expected_tallies(query, str(path))
    assert t[(T0, "s1")] == tallies(events=2, enters=1, concurrent_peak=1, concurrent_close=1, orders_paid=1, items=2,
                                    gmv_fen=250, unique_viewers=1)
    viewers, buyers = oracle.expected_audience(query, str(path))
    assert viewers[(T0, "s1")] == {"v1"} and buyers[(T0, "s1")] == {"v1"}


def test_late_is_against_valid_events_only_and_per_topic(query, tmp_path):
    log = [
        rec(view("s1", T0 + 100_000, "v1", "enter"), key=b"zz"),  # rejected: does not raise the max
        rec(view("s1", T0, "v1", "enter")),  # first valid view of s1: never late
        rec(like("s1", T0 + 100_000, 1)),  # the likes group's max does not bind views
        rec(view("s1", T0 - 30_000, "v1", "enter")),  # exactly the bound: accepted
        rec(view("s1", T0 - 30_001, "v1", "enter")),  # late
        rec(view("s2", T0 - 50_000, "v1", "enter")),  # another streamer: its first event
    ]
    path = tmp_path / "late.jsonl"
    write_log(path, log)
    assert oracle.expected_reasons(query, str(path)) == ["key_mismatch", None, None, None, "late", None]


def test_log_line_without_value_fails(query, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"topic":"live.views","key":"s1","ts":1}\n')
    with pytest.raises(Exception, match="neither value nor value_b64"):
        oracle.expected_tallies(query, str(path))
    # and the failed query leaves nothing behind for the next one on the connection
    assert query("SELECT 42 AS x", None) == [(42,)]


def test_odd_paths(query, tmp_path):
    # glob characters and a backslash in the path are read literally
    d = tmp_path / "we{ir}d*dir?"
    d.mkdir()
    path = d / "a\\b.jsonl"
    write_log(path, HAND_LOG[:2])
    decoy = tmp_path / "weirdxdirx"
    decoy.mkdir()
    write_log(decoy / "a\\b.jsonl", HAND_LOG)
    assert oracle.expected_tallies(query, str(path)) == {
        (W0, "s1"): tallies(events=2, enters=2, concurrent_peak=2, concurrent_close=2, unique_viewers=2)}


def test_works_through_a_query_that_passes_parameters_verbatim(conn, tmp_path):
    """A Query that hands parameter text to chDB unescaped (as a sink's own ``rows`` may) still works:
    the oracle never binds a value whose meaning would depend on escaping."""

    def plain(sql, params=None):
        raw = conn.query(sql, "JSONCompact", params=params or {}).bytes()
        return [tuple(r) for r in json.loads(raw)["data"]] if raw else []

    d = tmp_path / "back\\slash"
    d.mkdir()
    path = d / "hand.jsonl.zst"
    write_log(path, HAND_LOG)
    assert oracle.expected_tallies(plain, str(path)) == HAND_TALLIES
    assert oracle.expected_reasons(plain, str(path)) == HAND_REASONS


# ---------------------------------------------------------------------------------------------------
# The sink side: real DDL, worker-shaped rows, planted differences
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def sink(query):
    db = "oracle_test_" + uuid.uuid4().hex[:12]
    query(f"CREATE DATABASE {db}", None)
    query(f"USE {db}", None)
    try:
        for path in sorted(SCHEMA.parent.glob("*.sql")):  # every migration, in order, as the worker applies them
            sql = re.sub(r"--[^\n]*", "", path.read_text())
            for stmt in (s.strip() for s in sql.split(";")):
                if stmt:
                    query(stmt, None)
    finally:
        query("USE default", None)
    # no background merge may collapse versions behind the test's back: FINAL has to do it
    query(f"SYSTEM STOP MERGES {db}.tallies_10s", None)
    yield db
    query(f"DROP DATABASE {db} SYNC", None)


TALLY_COLS = ("events", "enters", "leaves", "concurrent_peak", "concurrent_close", "likes", "orders_paid",
              "orders_refunded", "items", "gmv_fen", "refund_fen")


def put_tally(query, db, ws, sid, topic, partition, version, **metrics):
    cols = ", ".join(TALLY_COLS)
    vals = ", ".join(f"{{{c}:Int64}}" for c in TALLY_COLS)
    query(
        f"INSERT INTO {{db:Identifier}}.tallies_10s (window_start, streamer_id, src_topic, src_partition, version, "
        f"last_offset, max_ts, {cols}) SELECT fromUnixTimestamp64Milli({{ws:Int64}}, 'UTC'), {{sid:String}}, "
        f"{{topic:String}}, {{part:UInt16}}, {{ver:UInt64}}, {{ver:UInt64}}, fromUnixTimestamp64Milli({{ws:Int64}}, 'UTC'), "
        f"{vals}",
        {"db": db, "ws": ws, "sid": sid, "topic": topic, "part": partition, "ver": version,
         **{c: metrics.get(c, 0) for c in TALLY_COLS}},
    )


def put_viewers(query, db, ws, sid, viewers):
    for v in viewers:
        query("INSERT INTO {db:Identifier}.viewers_in SELECT fromUnixTimestamp64Milli({ws:Int64}, 'UTC'), "
              "{sid:String}, {v:String}", {"db": db, "ws": ws, "sid": sid, "v": v})


def write_worker_rows(query, db, expected, *, skip=()):
    """Rows as the worker writes them: one per source topic (s1 on partition 0, s2 on 1), each metric in
    its own topic's row, and an older, larger snapshot (lower version) of each that only FINAL hides."""
    for (ws, sid), t in expected.items():
        if (ws, sid) in skip:
            continue
        per_topic = {
            "live.views": ("enters", "leaves", "concurrent_peak", "concurrent_close"),
            "live.likes": ("likes",),
            "live.orders": ("orders_paid", "orders_refunded", "items", "gmv_fen", "refund_fen"),
        }
        for topic, cols in per_topic.items():
            metrics = {c: t[c] for c in cols} | {"events": _events_of(topic, ws, sid)}
            if any(metrics.values()):
                part = 0 if sid == "s1" else 1
                put_tally(query, db, ws, sid, topic, part, 10, **{k: v + 1 for k, v in metrics.items()})  # stale
                put_tally(query, db, ws, sid, topic, part, 20, **metrics)


def _events_of(topic: str, ws: int, sid: str) -> int:
    """Accepted events of one topic in a window of the hand log (used to split events by topic)."""
    n = 0
    for r, reason in zip(HAND_LOG, HAND_REASONS):
        e = json.loads(r.value)
        if reason is None and r.topic == topic and e["streamer_id"] == sid and e["ts"] - e["ts"] % 10_000 == ws:
            n += 1
    return n


VIEWERS = {(W0, "s1"): ["v1", "v2", "v1"], (W1, "s1"): ["v3"], (W3, "s1"): ["v7"], (W6, "s1"): ["v9"],
           (W0, "s2"): ["w1"]}


def test_reconcile_clean_run(query, sink, hand_log):
    write_worker_rows(query, sink, HAND_TALLIES)
    for (ws, sid), vs in VIEWERS.items():
        put_viewers(query, sink, ws, sid, vs)
    # the stale versions are really there: without FINAL the sums would be off
    unfinal = query(f"SELECT sum(events) FROM {sink}.tallies_10s", None)[0][0]
    assert int(unfinal) > sum(t["events"] for t in HAND_TALLIES.values())
    assert oracle.actual_tallies(query, sink) == HAND_TALLIES
    assert oracle.reconcile(query, str(hand_log), database=sink) == []
    assert oracle.format_mismatches([]) == "tallies match: no mismatches"


def test_compare_reports_exactly_the_planted_differences(query, sink, hand_log):
    write_worker_rows(query, sink, HAND_TALLIES, skip={(W2, "s1")})  # W2 never written
    for (ws, sid), vs in VIEWERS.items():
        put_viewers(query, sink, ws, sid, vs + (["v-extra"] if (ws, sid) == (W1, "s1") else []))
    # a newer snapshot of the W0 orders with a wrong gmv, on a second partition of the same topic
    put_tally(query, sink, W0, "s1", "live.orders", 1, 30, gmv_fen=7)
    # a window the log does not have, with nothing in it
    put_tally(query, sink, W6 + 10_000, "s3", "live.likes", 2, 1)
    actual = oracle.actual_tallies(query, sink)
    expected = oracle.expected_tallies(query, str(hand_log))
    got = oracle.compare(expected, actual)
    planted = [
        oracle.Mismatch(W0, "s1", "gmv_fen", 1_500, 1_507),
        oracle.Mismatch(W1, "s1", "unique_viewers", 1, 2),
        *(oracle.Mismatch(W2, "s1", c, HAND_TALLIES[(W2, "s1")][c], None) for c in oracle.COLUMNS),
        *(oracle.Mismatch(W6 + 10_000, "s3", c, None, 0) for c in oracle.COLUMNS),
    ]
    assert got == planted
    text = oracle.format_mismatches(got, limit=3)
    assert text.splitlines()[0] == "26 mismatched values in 4 windows (1 missing from ClickHouse, 1 only in ClickHouse):"
    assert "s1 gmv_fen: expected 1500, actual 1507" in text
    assert text.splitlines()[-1] == "  ... and 23 more"
    assert len(text.splitlines()) == 5


def test_actual_counts_a_window_with_viewers_only(query, sink):
    put_viewers(query, sink, W0, "s9", ["a", "b", "a"])
    assert oracle.actual_tallies(query, sink) == {(W0, "s9"): tallies(unique_viewers=2)}


def test_compare_in_memory():
    e = {(W0, "s1"): tallies(events=1), (W1, "s1"): tallies(events=2)}
    a = {(W0, "s1"): tallies(events=1), (W1, "s1"): tallies(events=2, likes=-1)}
    assert oracle.compare(e, a) == [oracle.Mismatch(W1, "s1", "likes", 0, -1)]
    assert oracle.compare(e, e) == []
    assert [m.column for m in oracle.compare({}, {(W0, "s1"): ZERO})] == list(oracle.COLUMNS)


def test_ruleset_from_settings():
    from streamproc.settings import Settings

    s = Settings(lateness_ms=1, max_future_ms=2, max_message_bytes=3)
    assert oracle.RuleSet.from_settings(s) == oracle.RuleSet(window_ms=10_000, lateness_ms=1, max_future_ms=2, max_bytes=3)
    with pytest.raises(ValueError):
        oracle.RuleSet(window_ms=0).params()
    # the reader's clock: given, or the time the oracle runs
    assert oracle.RuleSet(now_ms=T0).params()["now_ms"] == T0
    before = int(time.time() * 1000)
    assert before <= oracle.RuleSet().params()["now_ms"] <= int(time.time() * 1000)
    with pytest.raises(ValueError):
        oracle.RuleSet(now_ms=-1).params()
