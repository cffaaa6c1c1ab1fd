"""The benchmark feed's restamping (benchmarks/corpus.py, ``Stamps``): splicing the new event time into a
payload's bytes must send what decoding, moving ``ts`` and encoding would, for the corpus and for the
hostile payloads the corpus carries, or the freshness and soak runs measure the worker on other input."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.corpus import Stamps, corpus_log, load, ts_span
from streamproc.logs.logfile import LogRecord


def reference(rec: LogRecord, now_ms: int) -> bytes:
    """What a live producer sends: the payload decoded, its integer ``ts`` moved with the send time, encoded."""
    try:
        obj = orjson.loads(rec.value)
    except orjson.JSONDecodeError:
        return rec.value
    if type(obj) is not dict or type(obj.get("ts")) is not int:
        return rec.value
    obj["ts"] += now_ms - rec.ts
    return orjson.dumps(obj)


def same(sent: bytes, expected: bytes) -> bool:
    """Byte for byte where the reference leaves bytes alone; as the same JSON where it encodes again."""
    try:
        return orjson.loads(sent) == orjson.loads(expected)
    except orjson.JSONDecodeError:
        return sent == expected


def test_every_corpus_record_is_sent_as_the_reference_would_send_it(tmp_path) -> None:
    records = load(corpus_log(20_000, 500, 3, cache_dir=tmp_path), 20_000)
    stamps = Stamps(records)
    spliced = sum(1 for span in stamps.spans if span is not None and span[0] >= 0)
    assert spliced > 0.9 * len(records)  # the fast path is the common one, or the feed measures itself
    for now in (records[0].ts, records[0].ts + 86_400_000, 1_800_000_000_123):
        for i, rec in enumerate(records):
            sent = stamps.value(i, now)
            assert same(sent, reference(rec, now)), (rec.value, sent)


PAYLOADS = [
    b'{"ts":1700000000000,"type":"view"}',
    b'{"type":"like","ts":-5}',
    b'{"ts": 1700000000000, "type":"view"}',  # spaces: not spliced, encoded again
    b'{"ts":1,"nested":{"ts":2}}',  # two "ts": the nested one must not move
    b'{"nested":{"ts":2},"ts":1}',
    b'{"ts":1,"ts":2}',  # duplicate keys: the last counts
    b'{"note":"\\"ts\\":5","ts":7}',  # the key's bytes inside a string
    b'{"\\"ts":5,"ts":7}',
    b'{"ts":1.5}', b'{"ts":true}', b'{"ts":"12"}', b'[1,2]', b'not json', b'\xff\xfe', b'',
    b'{"ts":12}', b'{"ts":12,"x":"\\u00e9"}',
]


@given(st.sampled_from(PAYLOADS), st.integers(-10**6, 10**6), st.integers(0, 2 * 10**12))
@settings(max_examples=400, deadline=None)
def test_hostile_payloads_go_as_the_reference_sends_them(value: bytes, moved: int, now: int) -> None:
    rec = LogRecord("live.views", None, now - moved, value)
    assert same(Stamps([rec]).value(0, now), reference(rec, now))


def test_a_span_is_only_kept_where_the_splice_reads_back() -> None:
    assert ts_span(b'{"ts":1700000000000,"type":"view"}') == (6, 19, 1700000000000)
    assert ts_span(b'{"ts":1,"nested":{"ts":2}}') == (-1, -1, 1)  # not spliced: two keys of that name
    assert ts_span(b'{"ts": 1}') == (-1, -1, 1)
    assert ts_span(b'{"ts":1.0}') is None and ts_span(b"junk") is None
