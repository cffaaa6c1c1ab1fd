"""One forged timestamp must not black out a streamer (issue 11, item 1).

A producer sets the Kafka record timestamp, so "future" judged against the record alone lets a record
stamped ten years ahead through; it would move its streamer's watermark and turn every honest event
after it ``late``. Two defences: the event topics ask the broker to stamp append time
(``message.timestamp.type=LogAppendTime``; Kafka honours it, the embedded Tansu 0.6 does not; tested in
tests/integration/test_forged_time_broker.py), and, tested here, the worker refuses a record stamped more
than ``max_future_ms`` ahead of its own clock -- the same verdict in ``events.decode`` and in the SQL oracle.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import orjson
import pytest
from support import helpers
from support.helpers import Rec

from streamproc.ingest.deadletter import original_value
from streamproc.ingest.events import Order, Rejection, decode
from streamproc.logs.logfile import LogRecord, write_log
from streamproc.runtime.processor import Processor
from streamproc.settings import Settings
from streamproc.store.chdb import ChdbSink
from streamproc.verify import oracle

TEN_YEARS_MS = 10 * 365 * 86_400_000
MAX_FUTURE = 300_000  # Settings.max_future_ms


def order(sid: str, ts: int, order_id: str, amount_fen: int, status: str = "paid") -> bytes:
    return orjson.dumps(helpers.order(event_id=f"e-{order_id}-{status}", ts=ts, streamer_id=sid,
                                      session_id=f"{sid}-live", order_id=order_id, quantity=1, amount_fen=amount_fen,
                                      status=status))


def judge(value: bytes, record_ts: int, now_ms: int | None) -> Order | Rejection:
    return decode(value, "live.orders", b"X", record_ts, max_bytes=65_536, max_future_ms=MAX_FUTURE, now_ms=now_ms)


def reasons(verdicts: list[Order | Rejection]) -> list[str | None]:
    return [v.reason if isinstance(v, Rejection) else None for v in verdicts]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChdbSink, Path]]:
    path = tmp_path_factory.mktemp("forged")
    sink = ChdbSink(path / "clickhouse")
    sink.apply_schema()
    yield sink, path
    sink.close()


def test_a_record_ten_years_ahead_of_the_reader_is_future_in_decode_and_in_the_oracle(store) -> None:
    sink, path = store
    now = int(time.time() * 1000)
    forged = now + TEN_YEARS_MS
    verdict = judge(order("X", forged, "o-forged", 100), forged, now)
    assert isinstance(verdict, Rejection) and verdict.reason == "future", verdict
    assert "reader's clock" in verdict.detail
    # without a reader's clock only the record itself is looked at, and the forged one is consistent
    assert isinstance(judge(order("X", forged, "o-forged", 100), forged, None), Order)

    log = [LogRecord("live.orders", b"X", forged, order("X", forged, "o-forged", 100)),
           LogRecord("live.orders", b"X", now, order("X", now, "o1", 100)),
           LogRecord("live.orders", b"X", now + MAX_FUTURE, order("X", now, "o2", 100)),  # clock skew: fine
           LogRecord("live.orders", b"X", now + MAX_FUTURE + 1, order("X", now, "o3", 100))]
    write_log(path / "forged.jsonl", log)
    want = reasons([judge(r.value, r.ts, now) for r in log])
    assert want == ["future", None, None, "future"]
    rules = oracle.RuleSet(max_future_ms=MAX_FUTURE, now_ms=now)
    assert oracle.expected_reasons(sink.rows, str(path / "forged.jsonl"), rules) == want
    # a reader eleven years on finds nothing ahead of it (the clock is a parameter of both), and then the
    # forged order blacks X out: its honest orders are late behind it. That is what the clock prevents.
    later = now + TEN_YEARS_MS + 86_400_000
    assert reasons([judge(r.value, r.ts, later) for r in log]) == [None] * 4
    assert oracle.expected_reasons(sink.rows, str(path / "forged.jsonl"),
                                   oracle.RuleSet(max_future_ms=MAX_FUTURE, now_ms=later)) == [None] + ["late"] * 3


def hostile_log(now: int) -> tuple[list[LogRecord], int]:
    """live.orders/0: X sells 85 orders, a forged order of X stamped ten years ahead, the 85 paid orders
    re-sent (a producer retrying, or replaying to double count), then X's honest trade goes on; Y sells
    on the same partition throughout. Returns the log and the index of the forged record."""
    t0 = now - 3_600_000  # an hour ago: honest times are all in the past
    genuine = [LogRecord("live.orders", b"X", t0 + i * 1_000 + 50, order("X", t0 + i * 1_000, f"x{i}", 1_000 + i))
               for i in range(85)]
    y = [LogRecord("live.orders", b"Y", t0 + i * 30_000, order("Y", t0 + i * 30_000, f"y{i}", 500)) for i in range(8)]
    forged = LogRecord("live.orders", b"X", now + TEN_YEARS_MS, order("X", now + TEN_YEARS_MS, "x-forged", 99_999_999))
    resent = [LogRecord(r.topic, r.key, t0 + 200_000 + i, r.value) for i, r in enumerate(genuine)]
    honest = [LogRecord("live.orders", b"X", t, order("X", t, f"x-new{i}", 700))
              for i, t in enumerate(range(t0 + 300_000, t0 + 310_000, 1_000))]
    refund = LogRecord("live.orders", b"X", t0 + 320_000, order("X", t0 + 320_000, "x3", 1_003, "refunded"))
    log = genuine[:40] + y[:4] + genuine[40:] + [forged] + resent + y[4:] + honest + [refund]
    return log, log.index(forged)


def test_a_forged_order_is_dead_lettered_and_the_streamers_honest_trade_still_counts(store) -> None:
    sink, path = store
    settings = Settings.from_env(env={}, data_dir=str(path), max_future_ms=MAX_FUTURE)
    now = int(time.time() * 1000)
    log, forged_at = hostile_log(now)
    write_log(path / "hostile.jsonl", log)

    proc = Processor(settings, sink)
    proc.assign([("live.orders", 0)])
    records = [Rec(offset, r.key, r.value, r.ts) for offset, r in enumerate(log)]
    for start in range(0, len(records), 60):  # several batches, a flush after each
        proc.handle_batch("live.orders", 0, records[start:start + 60])
        snaps = proc.snapshot()
        sink.write(snaps)
        proc.flush_done(snaps)

    dead = [orjson.loads(value) for _, value in proc.take_dead_letters()]
    assert [(d["reason"], d["offset"]) for d in dead] == [("future", forged_at)], dead
    assert original_value(dead[0]) == log[forged_at].value
    assert proc.counts["accepted"] == len(log) - 1  # the re-sent copies and X's new orders are accepted

    rules = oracle.RuleSet.from_settings(settings)
    expected = oracle.expected_tallies(sink.rows, str(path / "hostile.jsonl"), rules)
    assert oracle.compare(expected, oracle.actual_tallies(sink.rows, sink.database)) == []
    assert oracle.expected_deadletters(sink.rows, str(path / "hostile.jsonl"), rules) == Counter(
        {("live.orders", log[forged_at].value, "future"): 1})
    # each paid order counted once, the re-sent copies not again, the refund subtracted
    gmv_x = sum(t["gmv_fen"] for (_, sid), t in expected.items() if sid == "X")
    assert gmv_x == sum(1_000 + i for i in range(85)) + 10 * 700 - 1_003
