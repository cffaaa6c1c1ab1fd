"""Record and replay on real parts: Tansu broker, the `streamproc` command, a Faust worker, chDB, the oracle.

Replay is trusted to backfill and to reproduce incidents, so the tests hold it to: the bytes that go
out are the bytes that were recorded; a log gives the same tallies whatever the speed, equal to the
SQL oracle's; pacing follows the record timestamps; a bad line is reported by number, never dropped
silently; an interrupted recording is still a readable log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from support.helpers import CLI, ROOT, assert_exact, like, record, run_cli, send_zeros, summary_of

from streamproc.logs.logfile import LogRecord, encode_line, open_log, read_log, write_log
from streamproc.logs.produce import PublishResult, publish
from streamproc.logs.replay import Selection, write_selection
from streamproc.runtime.broker import EmbeddedBroker, free_port
from streamproc.runtime.kafka import read_topic
from streamproc.runtime.topics import DEADLETTER, create_topics
from streamproc.settings import Settings
from streamproc.sim.generate import LABEL_DUPLICATE, LABEL_LATE, LABEL_LATE_ORDER, LABEL_VALID, generate_labeled
from streamproc.store import open_sink
from streamproc.verify.demo import reconcile
from streamproc.verify.oracle import actual_tallies
from streamproc.verify.stack import Stack, event_partitions, wait_flushed


def troubled_log(path: Path, n: int = 2400, seed: int = 5) -> Counter[str]:
    """A small generated log full of trouble (late, duplicate, malformed); returns its labels."""
    labels: Counter[str] = Counter()

    def records():
        for rec, label in generate_labeled(n, seed=seed, n_streamers=50, malformed_share=0.02,
                                           duplicate_share=0.03, late_share=0.02):
            labels[label] += 1
            yield rec

    write_log(path, records())
    return labels


def per_key(records: list[LogRecord]) -> dict[tuple[str, bytes | None], list[tuple[int, bytes]]]:
    out: dict[tuple[str, bytes | None], list[tuple[int, bytes]]] = defaultdict(list)
    for r in records:
        out[(r.topic, r.key)].append((r.ts, r.value))
    return out


@pytest.fixture
def broker(settings: Settings, tmp_path: Path):
    """A bare broker with the topics: for tests that need Kafka but no worker."""
    with EmbeddedBroker(settings.embedded_broker_port, tmp_path / "broker.log") as b:
        s = settings.replace(kafka_bootstrap=b.bootstrap)
        asyncio.run(create_topics(s))
        yield s


def test_replay_then_record_round_trip_keeps_every_value_and_key_byte_for_byte(broker: Settings, tmp_path: Path) -> None:
    log = tmp_path / "day.jsonl.zst"
    labels = troubled_log(log, 3000, seed=4)
    assert labels["invalid_utf8"] > 0 and labels["oversized"] > 0, labels  # values JSON text cannot hold
    env = broker.to_env()
    sent = summary_of(run_cli("replay", str(log), "--max", env=env))
    assert sent["sent"] == 3000 and not sent["interrupted"], sent

    out = tmp_path / "recorded.jsonl.zst"
    rec = summary_of(run_cli("record", "--topics", "live.views,live.likes,live.orders", "--out", str(out), env=env))
    assert rec["records"] == 3000 and not rec["interrupted"], rec
    original, recorded = list(read_log(log)), list(read_log(out))
    assert len(recorded) == len(original)
    # every key keeps its records, in order, with the same record timestamp and the very same bytes
    assert per_key(recorded) == per_key(original)
    assert Counter(recorded) == Counter(original)
    assert any(b'"value_b64"' in line for line in _plain_lines(out))
    # partitions are interleaved by record time
    assert all(a.ts <= b.ts for a, b in zip(recorded, recorded[1:]))


def test_a_batch_past_the_bound_is_skipped_by_the_recorder_with_a_reason_and_the_rest_recorded(
        broker: Settings, tmp_path: Path) -> None:
    """The recorder reads with the worker's bound (STREAMPROC_MAX_BATCH_BYTES): a zstd batch of zeros that
    decompresses past it is not recorded, the summary counts it under ``batch_too_large``, and every
    other record is recorded byte for byte."""
    log = tmp_path / "day.jsonl.zst"
    troubled_log(log, 600, seed=8)
    env = {**broker.to_env(), "STREAMPROC_MAX_BATCH_BYTES": str(1 << 20)}
    assert summary_of(run_cli("replay", str(log), "--max", env=env))["sent"] == 600

    send_zeros(broker, "zstd", 64 << 20)
    out = tmp_path / "recorded.jsonl.zst"
    rec = summary_of(run_cli("record", "--topics", "live.views,live.likes,live.orders", "--out", str(out), env=env))
    assert rec["records"] == 600 and rec["skipped"] == {"batch_too_large": 1}, rec
    assert Counter(read_log(out)) == Counter(read_log(log))


def _plain_lines(path: Path) -> list[bytes]:
    with open_log(path) as f:
        return f.read().splitlines()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_recording_is_readable_to_its_last_complete_line(broker: Settings, tmp_path: Path, sig: int) -> None:
    log = tmp_path / "day.jsonl"
    troubled_log(log, 3000)
    out = tmp_path / "recorded.jsonl.gz"
    proc = subprocess.Popen([*CLI, "record", "--follow", "--out", str(out), "--progress", "none"], cwd=ROOT,
                            env={**os.environ, **broker.to_env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    result = PublishResult()
    feeder = threading.Thread(target=lambda: asyncio.run(publish(read_log(log), broker, rate=600, batch=100,
                                                                 result=result)))  # fmt: skip
    try:
        feeder.start()
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size > 0):  # some chunks are down
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.05)
        assert feeder.is_alive(), "the interruption must land mid-stream"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        feeder.join()
    recorded = list(read_log(out))  # strict: any torn line would raise here
    assert 0 < len(recorded) < 3000
    original = per_key(list(read_log(log)))
    for key, seq in per_key(recorded).items():
        assert seq == original[key][: len(seq)], key  # each key's records: a prefix, in order
    if sig == signal.SIGINT:
        assert proc.returncode == 0, stderr[-2000:]
        summary = json.loads(stdout.strip().splitlines()[-1])
        assert summary["interrupted"] and summary["records"] == len(recorded), summary


def test_replay_selects_shifts_and_resumes_exactly_what_it_says(tmp_path: Path) -> None:
    log = tmp_path / "day.jsonl.gz"
    troubled_log(log, 1200)
    original = list(read_log(log))

    def written(*args: str) -> list[LogRecord]:
        out = tmp_path / f"sel-{len(list(tmp_path.iterdir()))}.jsonl"
        res = run_cli("replay", str(log), "--out", str(out), *args)
        assert res.returncode == 0, res.stderr[-2000:]
        assert summary_of(res)["sent"] == sum(1 for _ in read_log(out))
        return list(read_log(out))

    # without a shift, what would be sent is the log's own records, byte for byte, in file order
    assert written() == original
    orders = written("--types", "order")
    assert orders == [r for r in original if r.topic == "live.orders"] and orders
    some = sorted({r.key for r in original})[:3]
    picked = written("--streamers", ",".join(k.decode() for k in some), "--types", "view,like")
    assert picked == [r for r in original if r.key in some and r.topic in ("live.views", "live.likes")] and picked
    t0, t1 = original[200].ts, original[700].ts
    assert written("--from", str(t0), "--to", str(t1)) == [r for r in original if t0 <= r.ts < t1]
    assert written("--start-at", "901") == original[900:]  # the log has no blank lines: line n is record n

    shifted = written("--shift-ms", "86400000")
    assert len(shifted) == len(original)
    moved = 0
    for old, new in zip(original, shifted):
        assert (new.topic, new.key, new.ts) == (old.topic, old.key, old.ts + 86_400_000)
        try:
            obj = orjson.loads(old.value)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is dict and type(obj.get("ts")) is int:
            assert orjson.loads(new.value) == {**obj, "ts": obj["ts"] + 86_400_000}
            moved += 1
        else:
            assert new.value == old.value  # malformed values go out untouched
    assert 0 < moved < len(original)
    now = written("--shift-to-now", "--types", "like")
    assert abs(now[0].ts - time.time() * 1000) < 60_000


def test_malformed_log_lines_are_reported_by_number_and_strict_stops_before_sending(tmp_path: Path) -> None:
    good = list(generate_labeled(10, seed=2))
    lines = [encode_line(r).rstrip(b"\n") for r, _ in good]
    lines.insert(3, b"this is not json")
    lines.insert(6, b'{"topic": "live.views", "key": "s1", "ts": 1}')  # no value
    lines.insert(9, b'{"topic": "live.views", "key": "s1", "ts": 1, "value_b64": "%%%"}')
    lines.append(b'{"topic": "live.likes", "key": "s1", "ts": 17000')  # a torn last line
    log = tmp_path / "dirty.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")

    out = tmp_path / "clean.jsonl"
    res = run_cli("replay", str(log), "--out", str(out))
    assert res.returncode == 0, res.stderr
    summary = summary_of(res)
    assert summary["malformed_line_numbers"] == [4, 7, 10, 14] and summary["malformed_lines"] == 4
    assert summary["sent"] == 10
    for n in (4, 7, 10, 14):
        assert f"line {n}:" in res.stderr
    assert [r.value for r in read_log(out)] == [r.value for r, _ in good]

    strict_out = tmp_path / "strict.jsonl"
    res = run_cli("replay", str(log), "--strict", "--out", str(strict_out))
    assert res.returncode == 2 and "line 4:" in res.stderr, res.stderr
    assert not strict_out.exists()
    with pytest.raises(Exception, match="line 4"):
        write_selection(log, tmp_path / "x.jsonl", Selection(strict=True))


def test_pacing_follows_record_time_divided_by_speed(broker: Settings, tmp_path: Path) -> None:
    start = 1_794_398_400_000
    records = [record(like(event_id=f"e{i}", ts=start + i * 100, streamer_id="s0001", session_id="x", viewer_id="u1"))
               for i in range(201)]
    log = tmp_path / "twenty-seconds.jsonl"
    write_log(log, records)  # 20 s of record time

    res = run_cli("replay", str(log), "--speed", "10", "--progress", "log", "--progress-interval", "0.5",
              env=broker.to_env())  # fmt: skip
    summary = summary_of(res)
    assert summary["sent"] == 201
    assert 1.5 <= summary["seconds"] <= 4.0, summary
    # not a terminal: plain periodic progress lines with count, rate, event-time position and ETA
    progress = [line for line in res.stderr.splitlines() if "streamproc.logs.progress" in line]
    assert progress and all("events/s" in line and "ETA" in line and "at 2026-" in line for line in progress), res.stderr

    summary = summary_of(run_cli("replay", str(log), "--rate", "100", "--progress", "none", env=broker.to_env()))
    assert summary["sent"] == 201 and 1.5 <= summary["seconds"] <= 4.0, summary


def _run(base: Settings, root: Path, log: Path, pace: list[str]) -> tuple[dict, dict, dict]:
    """One fresh stack (broker, worker, chDB): replay the log, flush, reconcile; the sink's tallies."""
    settings = base.replace(data_dir=str(root / "data"), embedded_broker_port=free_port(), web_port=free_port())
    with Stack(settings, root / "logs") as stack:
        worker = stack.worker().start()
        try:
            worker.wait_assigned(event_partitions())
            sent = summary_of(run_cli("replay", str(log), *pace, "--progress", "none", env=stack.settings.to_env()))
            offsets = {(tp.rsplit("/", 1)[0], int(tp.rsplit("/", 1)[1])): o for tp, o in sent["partitions"].items()}
            wait_flushed([worker], offsets, timeout_s=120)
            dead = asyncio.run(read_topic(stack.settings, DEADLETTER))
        finally:
            worker.stop()
    summary = reconcile(settings, str(log), dead_letters=dead)
    sink = open_sink(settings)
    try:
        tallies = actual_tallies(sink.rows, settings.clickhouse_database)
    finally:
        sink.close()
    return sent, summary, tallies


def test_the_same_log_gives_the_same_tallies_at_speed_1_speed_50_and_max(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "troubled.jsonl.zst"
    labels = troubled_log(log)
    assert labels[LABEL_LATE] > 0 and labels[LABEL_DUPLICATE] > 0 and labels[LABEL_VALID] > 0
    assert sum(n for label, n in labels.items()
               if label not in (LABEL_VALID, LABEL_DUPLICATE, LABEL_LATE, LABEL_LATE_ORDER)) > 0
    records = list(read_log(log))
    span_s = (records[-1].ts - records[0].ts) / 1000
    assert 8 <= span_s <= 20, span_s

    runs = {}
    for name, pace in (("speed 1", ["--speed", "1"]), ("speed 50", ["--speed", "50"]), ("max", ["--max"])):
        runs[name] = _run(settings, tmp_path / name.replace(" ", "-"), log, pace)

    for name, (sent, summary, tallies) in runs.items():
        assert sent["sent"] == len(records), (name, sent)
        assert_exact(summary, "dead_letter_match", case=name)
        assert summary["dead_letter_reasons"].get("late", 0) > 0, (name, summary)
        assert len(tallies) == summary["windows"] > 0
    assert runs["speed 1"][0]["seconds"] >= 0.8 * span_s  # it was paced, not dumped
    reference = runs["max"][2]
    for name in ("speed 1", "speed 50"):
        assert runs[name][2] == reference, f"{name} tallies differ from --max"
        assert runs[name][1]["dead_letter_reasons"] == runs["max"][1]["dead_letter_reasons"]
