"""The simulated feed: deterministic, exactly as long as asked, and every record is what it claims to be.

Everything here runs the real generator and the real ``events.decode``; the labels from
``generate_labeled`` are the intent the records are checked against.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import fields

import orjson
import pytest
from support.helpers import ROOT, decode_record

from streamproc.boards.dimension import Streamer, streamers_to_jsonl
from streamproc.ingest.events import Like, Order, Rejection, View
from streamproc.logs.logfile import read_log, write_log
from streamproc.sim.generate import (
    DEFAULT_START_MS,
    DUP_WINDOW_MS,
    LABEL_DUPLICATE,
    LABEL_LATE,
    LABEL_LATE_ORDER,
    LABEL_VALID,
    MALFORMED_REASONS,
    build_streamers,
    generate,
    generate_labeled,
)

LATENESS = 30_000
N = 100_000


def _digest(records) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.topic}|{r.key!r}|{r.ts}|{len(r.value)}|".encode())
        h.update(r.value)
    return h.hexdigest()


@pytest.fixture(scope="module")
def feed():
    """100k labeled records of seed 1 with their decoded form."""
    return [(rec, label, decode_record(rec)) for rec, label in generate_labeled(N, seed=1)]


@pytest.fixture(scope="module")
def long_feed():
    """A small platform over a long stretch of simulated time: broadcasts end, refunds arrive."""
    return [(rec, label, decode_record(rec)) for rec, label in generate_labeled(60_000, seed=5, n_streamers=8)]


# --- determinism and shape --------------------------------------------------------------------------


def test_exact_count_and_determinism():
    a = list(generate(30_000, seed=7))
    b = list(generate(30_000, seed=7))
    assert len(a) == 30_000
    assert a == b
    assert _digest(a) == _digest(b)
    c = list(generate(30_000, seed=8))
    assert _digest(a) != _digest(c)
    assert list(generate(0)) == []
    assert len(list(generate(1))) == 1
    # A shorter run is a prefix of a longer one with the same arguments.
    assert list(generate(5_000, seed=7)) == a[:5_000]


def test_start_ms_default_and_shift():
    first = next(iter(generate(1)))
    assert DEFAULT_START_MS == 1_794_398_400_000  # 2026-11-11 20:00 Asia/Shanghai
    assert DEFAULT_START_MS <= first.ts < DEFAULT_START_MS + 1_000
    now = 1_700_000_000_000
    recs = list(generate(2_000, start_ms=now))
    assert now <= recs[0].ts and recs[-1].ts < now + 60_000
    assert now - 60_000 < _field(recs[0].value, "ts") <= now + 1_000
    # Ids carry a per-run tag, so two "now" runs into the same topics do not collide.
    ids_a = {_field(r.value, "event_id") for r in recs} - {None, ""}
    ids_b = {_field(r.value, "event_id") for r in generate(2_000, start_ms=now + 1)} - {None, ""}
    assert ids_a and ids_b and not ids_a & ids_b


def test_record_shape(feed):
    last = 0
    ids = {s.streamer_id for s in build_streamers(500, 1)}
    for rec, label, _ in feed:
        assert rec.topic in ("live.views", "live.likes", "live.orders")
        assert rec.ts >= last  # the send time never goes back
        last = rec.ts
        assert isinstance(rec.value, bytes) and isinstance(rec.key, bytes)
        if label != "key_mismatch":
            assert rec.key.decode() in ids
    span_s = (feed[-1][0].ts - feed[0][0].ts) / 1000
    assert 30 < span_s < 80  # ~2,000 events per simulated second for 500 streamers


def test_generate_yields_the_labeled_records():
    assert list(generate(3_000, seed=2)) == [r for r, _ in generate_labeled(3_000, seed=2)]


def test_bad_arguments():
    for kwargs in ({"n_streamers": 0}, {"lateness_ms": -1}, {"malformed_share": 1.5}, {"duplicate_share": -0.1},
                   {"malformed_share": 0.6, "duplicate_share": 0.6}):  # fmt: skip
        with pytest.raises(ValueError):
            list(generate(10, **kwargs))
    with pytest.raises(ValueError):
        list(generate(-1))


# --- every record is what it was meant to be --------------------------------------------------------


def test_every_record_decodes_as_intended(feed):
    for rec, label, ev in feed:
        if label in (LABEL_VALID, LABEL_DUPLICATE, LABEL_LATE, LABEL_LATE_ORDER):
            assert not isinstance(ev, Rejection), (label, ev, rec)
        else:
            assert isinstance(ev, Rejection) and ev.reason == label, (label, ev, rec)


def test_mix_contains_every_imperfection(feed):
    labels = Counter(label for _, label, _ in feed)
    assert set(MALFORMED_REASONS) <= set(labels), set(MALFORMED_REASONS) - set(labels)
    malformed = sum(labels[r] for r in MALFORMED_REASONS)
    assert 0.003 * N < malformed < 0.007 * N
    assert 0.007 * N < labels[LABEL_DUPLICATE] < 0.013 * N
    assert 0.002 * N < labels[LABEL_LATE] + labels[LABEL_LATE_ORDER] < 0.004 * N
    assert labels[LABEL_LATE] > labels[LABEL_LATE_ORDER] > 0  # mostly likes; late payments too
    assert sum(labels.values()) == N
    # Duplicates are mostly orders (payment-callback retries), some views and likes.
    dup_topics = Counter(rec.topic for rec, label, _ in feed if label == LABEL_DUPLICATE)
    assert dup_topics["live.orders"] > dup_topics["live.views"] > 0 and dup_topics["live.likes"] > 0
    # Malformed values stay within what every JSON parser agrees on.
    for rec, label, _ in feed:
        if label in ("wrong_type", "bad_value", "absurd_amount", "negative_amount", "future"):
            for v in orjson.loads(rec.value).values():
                assert not (isinstance(v, int) and not -(2**63) <= v < 2**63)
        if label == "oversized":
            assert len(rec.value) > 65_536
    wrong_types = [orjson.loads(r.value) for r, label, _ in feed if label == "wrong_type"]
    assert any(isinstance(o.get("amount_fen"), float) for o in wrong_types)  # 39.9 yuan, not fen


def test_duplicates_are_identical_redeliveries(feed):
    seen: dict[tuple, int] = {}
    n = 0
    for rec, label, _ in feed:
        ident = (rec.topic, rec.key, rec.value)
        if label == LABEL_DUPLICATE:
            assert ident in seen, "a duplicate repeats an earlier record"
            assert 0 <= rec.ts - seen[ident] <= DUP_WINDOW_MS
            n += 1
        elif label == LABEL_VALID:
            assert ident not in seen
            seen[ident] = rec.ts
    assert n > 0
    # Event ids are unique across everything that is not a re-delivery.
    ids = [ev_id for rec, label, _ in feed if label != LABEL_DUPLICATE
           for ev_id in [_field(rec.value, "event_id")] if ev_id]  # fmt: skip
    assert len(ids) == len(set(ids))


def _field(value: bytes, name: str):
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return obj.get(name) if isinstance(obj, dict) else None


def test_late_and_out_of_order(feed):
    """Replay the pipeline's watermark rule: late exactly when labeled late, by either watermark."""
    wm_streamer: dict[str, int] = defaultdict(int)
    wm_topic: dict[tuple[str, str], int] = defaultdict(int)
    ooo = late = 0
    for rec, label, ev in feed:
        if isinstance(ev, Rejection):
            continue
        w = wm_streamer[ev.streamer_id]
        if label in (LABEL_LATE, LABEL_LATE_ORDER):
            late += 1
            # older than the streamer's newest event (any topic, or its own topic) by more than lateness
            assert ev.ts < wm_topic[rec.topic, ev.streamer_id] - LATENESS <= w - LATENESS
            assert ev.ts >= w - LATENESS - 130_000  # but not absurdly old: a phone that lost signal
            assert (label == LABEL_LATE_ORDER) == isinstance(ev, Order)  # a late payment still counts
            continue
        assert ev.ts >= w - LATENESS, "on-time events stay within the lateness"
        assert ev.ts <= rec.ts, "valid events are never ahead of their send time"
        if ev.ts < w - 1_000:
            ooo += 1
        wm_streamer[ev.streamer_id] = max(w, ev.ts)
        wm_topic[rec.topic, ev.streamer_id] = max(wm_topic[rec.topic, ev.streamer_id], ev.ts)
    assert late > 0
    assert ooo > 0.01 * N  # a few per cent arrive seconds out of order


# --- the simulated world ----------------------------------------------------------------------------


def test_viewers_leave_only_rooms_they_entered(feed, long_feed):
    for records in (feed, long_feed):
        inside: dict[tuple[str, str], int] = {}
        concurrent: Counter = Counter()
        enters = leaves = 0
        for _, label, ev in records:
            if label != LABEL_VALID or not isinstance(ev, View):
                continue
            k = (ev.streamer_id, ev.viewer_id)
            if ev.action == "enter":
                assert k not in inside, "entered twice without leaving"
                inside[k] = ev.ts
                concurrent[ev.streamer_id] += 1
                enters += 1
            else:
                assert k in inside, "left a room never entered"
                assert ev.ts > inside.pop(k), "leaves after entering, in event time too"
                concurrent[ev.streamer_id] -= 1
                assert concurrent[ev.streamer_id] >= 0
                leaves += 1
        assert enters > leaves > 0.2 * enters


def test_broadcasts_start_and_end(long_feed):
    start, end = long_feed[0][0].ts, long_feed[-1][0].ts
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    inside: Counter = Counter()
    peak: Counter = Counter()
    for rec, label, ev in long_feed:
        if label != LABEL_VALID:
            continue
        sid = orjson.loads(rec.value)["session_id"]
        first.setdefault(sid, rec.ts)
        last[sid] = rec.ts
        if isinstance(ev, View):
            inside[sid] += 1 if ev.action == "enter" else -1
            peak[sid] = max(peak[sid], inside[sid])
    ended = [s for s in last if last[s] < end - 120_000]
    assert ended, "some broadcast ended"
    assert all(inside[s] == 0 and peak[s] > 0 for s in ended), "its audience rose, then everyone left"
    assert any(first[s] > start + 120_000 for s in first), "some broadcast began during the feed"


def test_orders_amounts_and_refunds(feed, long_feed):
    for records in (feed, long_feed):
        paid: dict[str, Order] = {}
        refunds = 0
        for _, label, ev in records:
            if label != LABEL_VALID or not isinstance(ev, Order):
                continue
            assert type(ev.amount_fen) is int and 0 < ev.amount_fen <= 200_000 * ev.quantity
            if ev.status == "paid":
                assert ev.order_id not in paid
                paid[ev.order_id] = ev
            else:
                p = paid[ev.order_id]  # a refund follows its payment
                assert (p.amount_fen, p.quantity, p.product_id, p.streamer_id) == (
                    ev.amount_fen, ev.quantity, ev.product_id, ev.streamer_id)  # fmt: skip
                assert ev.ts > p.ts
                refunds += 1
        assert refunds > 0
    assert 0.015 < refunds / len(paid) < 0.05  # ~3 % over a long stretch
    prices = {ev.product_id: ev.amount_fen for _, label, ev in feed
              if label == LABEL_VALID and isinstance(ev, Order) and ev.quantity == 1}  # fmt: skip
    assert prices["p-wugong-kiwi-5kg"] == 3990  # 39.9 yuan for a 5 kg box
    assert {ev.category for _, _, ev in feed if isinstance(ev, Order)} >= {"fruit", "tea", "grain", "flowers"}


def test_likes_come_in_storms(feed):
    counts = [ev.count for _, label, ev in feed if label == LABEL_VALID and isinstance(ev, Like)]
    assert min(counts) >= 1 and max(counts) > 100
    assert Counter(counts)[1] > 0.3 * len(counts)  # most taps are single likes


def test_zipf_skew(feed):
    views = Counter(ev.streamer_id for _, label, ev in feed if label == LABEL_VALID and isinstance(ev, View))
    top = sorted(views.values(), reverse=True)[: 500 // 10]
    assert sum(top) > 0.6 * sum(views.values())


# --- the streamers dimension ------------------------------------------------------------------------


def test_streamers_match_the_table_and_the_reports(tmp_path):
    sql = (ROOT / "schemas/clickhouse/001_core.sql").read_text()
    body = re.search(r"CREATE TABLE IF NOT EXISTS streamers\s*\((.*?)\)\s*ENGINE", sql, re.S).group(1)
    columns = [line.split()[0] for line in body.strip().splitlines() if line.strip()]
    assert [f.name for f in fields(Streamer)] == [c for c in columns if c != "updated_at"]

    st = build_streamers(500, 1)
    assert st == build_streamers(500, 1) and st != build_streamers(500, 2)
    assert len({s.streamer_id for s in st}) == 500 and st[42].streamer_id == "s0042"
    assert {s.platform for s in st} == {"taobao", "douyin", "kuaishou"}
    assert {"陕西省", "安徽省", "江苏省", "山东省", "吉林省", "甘肃省", "黑龙江省", "辽宁省", "浙江省"} <= {s.province for s in st}
    assert {"武功县", "阜南县", "沭阳县", "广饶县", "莘县", "舒兰市", "武都区", "义乌市"} <= {s.county for s in st}
    assert "堰下村" in {s.village for s in st}
    assert {"fruit", "vegetables", "tea", "grain", "meat_eggs", "aquatic", "flowers", "specialties"} <= {s.category for s in st}

    path = tmp_path / "streamers.jsonl"
    streamers_to_jsonl(st, path)
    raw = path.read_bytes()
    assert "武功县".encode() in raw  # readable, not \u-escaped
    rows = [orjson.loads(line) for line in raw.splitlines()]
    assert [Streamer(**row) for row in rows] == st


def test_log_roundtrip(tmp_path, feed):
    records = [rec for rec, _, _ in feed[:20_000]] + [rec for rec, label, _ in feed if label == "invalid_utf8"]
    path = tmp_path / "events.jsonl.gz"
    assert write_log(path, records) == len(records)
    assert list(read_log(path)) == records

