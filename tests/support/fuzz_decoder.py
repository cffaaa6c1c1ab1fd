"""Coverage-guided fuzzing of the decoder with atheris (libFuzzer): run by tests/integration/test_fuzz_atheris.py.

Input layout: first byte picks the topic, the rest is the message value; the key is the streamer id
the value claims when it parses, else a fixed one. The property is the contract: the decoder never
raises, a rejection names a known reason, and it accepts exactly what the independent judge calls a
valid event (``event_judge``). Any violation raises, which libFuzzer reports as a crash with the input.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from streamproc.ingest.deadletter import make_record, original_value
    from streamproc.ingest.events import REASONS, Rejection, decode

import orjson  # noqa: E402
from support.event_judge import MAX_BYTES, MAX_FUTURE, TOPICS, TS, conforms  # noqa: E402


def one_input(data: bytes) -> None:
    if not data:
        return
    topic, value = TOPICS[data[0] % 3], data[1:]
    key = b"s1"
    verdict = decode(value, topic, key, TS, max_bytes=MAX_BYTES, max_future_ms=MAX_FUTURE)
    valid = conforms(value, topic, key, TS, max_bytes=MAX_BYTES, max_future_ms=MAX_FUTURE)
    if isinstance(verdict, Rejection):
        if verdict.reason not in REASONS:
            raise AssertionError(f"unknown reason {verdict.reason!r}")
        if valid:
            raise AssertionError(f"valid event rejected as {verdict.reason}: {value!r}")
        _, rec = make_record(topic, 0, 1, key, value, TS, verdict)
        if original_value(orjson.loads(rec)) != value:
            raise AssertionError("dead letter lost the original bytes")
    elif not valid:
        raise AssertionError(f"accepted input that breaks the contract: {value!r} -> {verdict!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
