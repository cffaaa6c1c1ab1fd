"""`streamproc demo`: the whole pipeline on embedded parts, live or as a self-checking run.

``--until-done`` feeds a fixed set of events (generated or a recorded log), waits until every one is
flushed, stops the worker, reconciles the sink against the SQL oracle and prints one JSON line.
Without it, the generator feeds the worker at a steady rate and a live top-10 refreshes each second.

A stop signal (``runtime/lifecycle.py``) raises ``StopSignal`` wherever the demo is; the ``finally``
clauses on the way up stop the parts in the order that loses nothing and waits for nothing: the feed
(no record after it), the workers (their last flush, while the broker still takes their commits),
then the broker, all within the stop budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import sys
import threading
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from streamproc.ingest.deadletter import distinct
from streamproc.logs.logfile import read_log, write_log
from streamproc.logs.produce import publish
from streamproc.runtime import lifecycle
from streamproc.runtime.broker import free_port
from streamproc.runtime.kafka import read_topic
from streamproc.runtime.topics import DEADLETTER
from streamproc.settings import Settings
from streamproc.verify.stack import Stack, event_partitions, wait_flushed


def run_until_done(settings: Settings, *, events: int = 100_000, seed: int = 1, log: str | None = None,
                   keep: bool = False, chaos: dict[str, float] | None = None) -> dict[str, Any]:
    """Feed, flush, reconcile; returns the summary (``oracle_match`` is the verdict).

    ``chaos`` (``chaos.parse_chaos``) hurts the pipeline meanwhile; the summary then carries the
    measured recovery figures under ``"chaos"``.
    """
    from streamproc.boards.dimension import streamers_to_jsonl
    from streamproc.sim.generate import build_streamers, generate, simulated_span_ms

    run_dir = Path(settings.data_dir) / "demo"
    if run_dir.exists() and not keep:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.replace(data_dir=str(run_dir))
    if log is None:
        log = str(run_dir / "events.jsonl.zst")
        # a recorded log: all of it in the past, however long (the pipeline refuses records from the future)
        start_ms = int(time.time() * 1000) - simulated_span_ms(events) - 60_000
        events = write_log(log, generate(events, seed=seed, start_ms=start_ms))
        streamers_to_jsonl(build_streamers(500, seed), run_dir / "streamers.jsonl")
        if not settings.streamers_file:  # the rooms' places and categories: region boards need them
            settings = settings.replace(streamers_file=str(run_dir / "streamers.jsonl"))
    else:
        events = sum(1 for _ in read_log(log))

    chaos = chaos or {}
    if chaos.get("kill-worker"):  # static membership: a restarted worker takes its partitions back at once
        settings = settings.replace(group_instance_id=settings.group_instance_id or "demo-worker")
    shared_sink = free_port() if chaos.get("sink-outage") else None  # a sink process that can fail
    figures: dict[str, Any] = {}
    with Stack(settings, run_dir / "logs", shared_sink_port=shared_sink) as stack:
        worker = stack.worker().start()
        try:
            worker.wait_assigned(event_partitions())
            started = time.monotonic()
            if chaos:
                from streamproc.verify.chaos import run_chaos

                worker, sent, figures = run_chaos(stack, worker, log, events, chaos, seed)
            else:
                sent = asyncio.run(publish(read_log(log), stack.settings))
            done_at = wait_flushed([worker], sent.last_offsets, timeout_s=max(120, events / 500))
            elapsed = done_at - started
            dead = distinct(asyncio.run(read_topic(stack.settings, DEADLETTER)))  # a crash may repeat some
        finally:
            stack.stop_workers()  # every live one: after a crash under chaos, `worker` may be an earlier one
    summary = reconcile(settings, log, dead_letters=dead)
    summary.update(events=events, events_per_s=round(events / elapsed, 1), seconds=round(elapsed, 2))
    if chaos:
        summary["chaos"] = figures
    return summary


def reconcile(settings: Settings, log: str, dead_letters: list[Any] | None = None) -> dict[str, Any]:
    """Compare what users read with the oracle computed from ``log``: the 10 s tallies, the rollups, the
    audiences and every board of the query layer (``board_oracle``), and the dead letters if given.
    ``oracle_match`` is true only when all of them agree. The sink must not be open elsewhere."""
    from streamproc.store import open_sink
    from streamproc.verify.board_oracle import Truth
    from streamproc.verify.exact import check_store
    from streamproc.verify.oracle import (
        RuleSet,
        actual_tallies,
        compare,
        expected_audience,
        expected_deadletters,
        expected_orders,
        expected_tallies,
        format_mismatches,
    )
    from streamproc.verify.overview_oracle import OrderFact

    sink = open_sink(settings)
    try:
        sink.use_database()  # the boards are read the way the query layer reads them: unqualified
        rules = RuleSet.from_settings(settings)
        expected = expected_tallies(sink.rows, os.path.abspath(log), rules)
        actual = actual_tallies(sink.rows, settings.clickhouse_database)
        mismatches = compare(expected, actual)
        summary: dict[str, Any] = {"windows": len(expected), "tallies_match": not mismatches,
                                   "mismatches": len(mismatches)}
        if mismatches:
            print(format_mismatches(mismatches), file=sys.stderr)
        viewers, buyers = expected_audience(sink.rows, os.path.abspath(log), rules)
        orders = tuple(OrderFact(*o) for o in expected_orders(sink.rows, os.path.abspath(log), rules))
        truth = Truth(expected, viewers, buyers, _dimension(sink), orders=orders)
        boards = check_store(sink, truth, min_audience=settings.conversion_min_viewers)
        summary.update(boards_match=boards.ok, boards_mismatches=boards.mismatches[:5], boards_checked=boards.checked,
                       board_queries=boards.queries, board_check_seconds=boards.seconds)
        if not boards.ok:
            print("boards differ from the oracle:\n  " + "\n  ".join(boards.mismatches), file=sys.stderr)
        matched = not mismatches and boards.ok
        if dead_letters is not None:
            # by digest: a dead letter keeps a bounded prefix of a huge message, and its sha256
            want = Counter({(t, hashlib.sha256(v).hexdigest(), r): n
                            for (t, v, r), n in expected_deadletters(sink.rows, os.path.abspath(log), rules).items()})
            got: Counter = Counter()
            for m in dead_letters:
                rec = orjson.loads(m.value)
                got[(rec["topic"], rec["sha256"], rec["reason"])] += 1
            summary["dead_letter"] = sum(got.values())
            summary["dead_letter_expected"] = sum(want.values())
            summary["dead_letter_match"] = got == want
            summary["dead_letter_reasons"] = dict(Counter(r for (_, _, r), n in got.items() for _ in range(n)))
            matched = matched and got == want
        summary["oracle_match"] = matched
        return summary
    finally:
        sink.close()


def _dimension(sink: Any) -> dict[str, dict[str, str]]:
    """The streamers dimension as loaded: an input of the boards, like the log."""
    cols = ("name", "platform", "province", "county", "village", "category")
    return {r[0]: dict(zip(cols, r[1:])) for r in sink.rows(f"SELECT streamer_id, {', '.join(cols)} FROM streamers FINAL")}


def run_live(settings: Settings, *, rate: float = 2000, seed: int = 1) -> None:
    """Generator -> broker -> worker -> chDB, with a live top-10 in the terminal until a stop signal
    (Ctrl-C, SIGTERM, the terminal closing), which leaves here as ``lifecycle.StopSignal`` once every
    part is stopped."""
    from streamproc.boards.dimension import streamers_to_jsonl
    from streamproc.sim.generate import build_streamers, generate, streamers_for_rate

    run_dir = Path(settings.data_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rooms = streamers_for_rate(rate)  # a platform whose event time keeps pace with the wall clock
    if not settings.streamers_file:  # rooms with their names and places, as the generator sees them
        streamers_to_jsonl(build_streamers(rooms, seed), run_dir / "streamers.jsonl")
        settings = settings.replace(streamers_file=str(run_dir / "streamers.jsonl"))
    with Stack(settings, run_dir / "logs") as stack:
        worker = stack.worker().start()
        feeder = None
        try:
            worker.wait_assigned(event_partitions())
            feeder = _Feeder(stack.settings, generate(10**9, seed=seed, start_ms=int(time.time() * 1000),
                                                      n_streamers=rooms), rate)
            while True:
                _show(worker, rate)
                time.sleep(1)
        finally:  # then Stack.__exit__ stops the broker
            if feeder is not None:
                feeder.request_stop()  # no record after this; what was sent is acknowledged meanwhile
            for w in stack.workers:
                w.terminate()  # at once, not after the feed: their last flush runs alongside
            if feeder is not None:
                feeder.stop()  # before the broker goes
            stack.stop_workers()


class _Feeder:
    """Publishes paced events in a background thread; the event log grows with real time.

    The generator is endless, so a stop must end the iteration itself (``takewhile``), not filter the
    rest, and must wake a paced sleep: ``publish``'s ``stop`` event, set from this thread through the
    feed's own event loop.
    """

    def __init__(self, settings: Settings, records: Any, rate: float) -> None:
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        feed = itertools.takewhile(lambda _: not self._stopped.is_set(), records)
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run(feed, settings, rate)),
                                       name="streamproc-feed", daemon=True)
        self.thread.start()

    async def _run(self, feed: Any, settings: Settings, rate: float) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if not self._stopped.is_set():  # set before the two above: request_stop could not reach the event
            await publish(feed, settings, rate=rate, stop=self._stop)

    def request_stop(self) -> None:
        """No record is sent after this returns; does not wait."""
        self._stopped.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the feed's loop has ended already
                loop.call_soon_threadsafe(stop.set)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop and wait for the records sent to be acknowledged (within the stop budget, if stopping)."""
        self.request_stop()
        self.thread.join(timeout=lifecycle.stopper.bound(timeout_s, keep_s=1.5))


def _fit(text: str, width: int) -> str:
    """Cut and pad to a terminal width: Chinese characters take two columns."""
    out, used = [], 0
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if used + w > width:
            break
        out.append(ch)
        used += w
    return "".join(out) + " " * (width - used)


def _show(worker: Any, rate: float) -> None:
    boards = {}
    for metric in ("gmv", "views", "likes"):
        try:
            boards[metric] = json.loads(worker.get(f"/api/leaderboard?metric={metric}&window=5m&limit=10"))["rows"]
        except OSError:
            boards[metric] = []
    out = ["\x1b[2J\x1b[H", f"streamproc live — last 5 min of event time — feeding {rate:.0f} events/s — Ctrl-C to stop",
           f"dashboard: {worker.url}/   API: {worker.url}/api/openapi.json   metrics: {worker.url}/metrics\n"]
    out.append(f"{'#':>2}  {_fit('GMV (yuan)', 34)} {_fit('views', 30)} {'likes'}")
    for i in range(10):
        cells = []
        for metric in ("gmv", "views", "likes"):
            rows = boards[metric]
            if i < len(rows):
                r = rows[i]
                value = f"{r['score'] / 100:,.2f}" if metric == "gmv" else f"{r['score']:,}"
                cells.append(f"{_fit(r['name'] or r['streamer_id'], 20)} {value:>12}")
            else:
                cells.append(_fit("", 33))
        out.append(f"{i + 1:>2}  {cells[0]}  {cells[1]}  {cells[2]}")
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
