"""What the tests repeat: events, child processes, the verdict of a run, and the steps on real parts.

* events: ``view``, ``like`` and ``order`` build a valid event dict (every field overridable, ``...``
  leaves one out); ``typed`` makes it the decoder's tuple, ``record`` a log record; ``decode_record``
  judges a record under the default limits; ``Rec`` is what the processor reads of a Kafka record;
* child processes: ``run_cli`` runs `streamproc ARGS` as a user does, ``run_python`` any interpreter
  command; ``assert_ok`` and ``summary_of`` read what they did;
* the verdict: ``assert_exact`` holds a demo or reconcile summary to the oracle;
* real parts: ``isolated_settings``, ``recent_log``, ``started`` (a worker owning every partition),
  ``feed_and_flush`` and ``report`` (figures for docs/RELIABILITY.md). They import the parts they drive when
  called: importing this module starts nothing and loads no broker, worker, store or chaos code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path
from typing import Any, Mapping

import orjson

from streamproc.ingest.events import Like, Order, Rejection, View, decode
from streamproc.logs.logfile import LogRecord
from streamproc.settings import Settings

ROOT = Path(__file__).resolve().parents[2]  # the checkout
TESTS = ROOT / "tests"
FIXTURES = TESTS / "support" / "fixtures"
TS = 1_763_900_000_000  # an event time on a 10 s window boundary
TOPIC = {"view": "live.views", "like": "live.likes", "order": "live.orders"}
Rec = namedtuple("Rec", "offset key value timestamp")  # the fields of an aiokafka ConsumerRecord the processor reads

# -- events ---------------------------------------------------------------------------------------------


def _event(kind: str, own: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The fields every event has, then its own, in the contract's order; ``fields`` replace them in place
    or come last, and a field given as ``...`` is left out."""
    ev = {"type": kind, "schema_version": 1, "event_id": "e1", "ts": TS, "streamer_id": "s1", "session_id": "live1",
          "viewer_id": "v1", **own}
    ev.update(fields)
    return {k: v for k, v in ev.items() if v is not ...}


def view(**fields: Any) -> dict[str, Any]:
    """A viewer entering a room (``action="leave"``: leaving it)."""
    return _event("view", {"action": "enter"}, fields)


def like(**fields: Any) -> dict[str, Any]:
    return _event("like", {"count": 1}, fields)


def order(**fields: Any) -> dict[str, Any]:
    """A paid order of two items for 79.80 yuan (in fen)."""
    return _event("order", {"order_id": "o1", "product_id": "kiwi-5kg", "category": "fruit", "quantity": 2,
                            "amount_fen": 7980, "status": "paid"}, fields)


def typed(event: dict[str, Any]) -> View | Like | Order:
    """The event as the decoder hands it on (built directly, not decoded)."""
    kind = {"view": View, "like": Like, "order": Order}[event["type"]]
    return kind(**{k: v for k, v in event.items() if k != "type"})


def decode_record(rec: LogRecord, now_ms: int | None = None) -> View | Like | Order | Rejection:
    """``events.decode`` of a log record under the default limits: 64 KiB a message, 5 minutes ahead."""
    return decode(rec.value, rec.topic, rec.key, rec.ts, max_bytes=65_536, max_future_ms=300_000, now_ms=now_ms)


def record(event: dict[str, Any], ts: int | None = None) -> LogRecord:
    """A log record of ``event``: on its type's topic, keyed by its streamer, stamped ``ts`` (default: its time)."""
    return LogRecord(TOPIC[event["type"]], event["streamer_id"].encode(), event["ts"] if ts is None else ts,
                     orjson.dumps(event))


# -- child processes ------------------------------------------------------------------------------------

CLI = [sys.executable, "-m", "streamproc"]  # the command, for a child that must outlive one call (Popen)


def run_python(*args: str, env: Mapping[str, str] | None = None, clean_env: bool = False, timeout: float = 180,
               cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` (this interpreter) in a child process started in ``cwd``, its output captured as text.
    ``env`` is laid over this process's environment or, with ``clean_env``, is all the child gets."""
    child_env = dict(env or {}) if clean_env else {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=child_env, capture_output=True, text=True,
                          timeout=timeout)


def run_cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """`streamproc ARGS` as a user runs it, in a child process from the checkout (options: ``run_python``)."""
    return run_python("-m", "streamproc", *args, **kw)


def assert_ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The child exited 0; if not, the failure shows the end of its stderr."""
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def summary_of(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON summary a command prints as the last line of its stdout."""
    assert res.stdout.strip(), f"no summary; exit {res.returncode}; stderr:\n{res.stderr[-3000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- the verdict ----------------------------------------------------------------------------------------


def assert_exact(summary: dict[str, Any], *flags: str, case: object = None) -> dict[str, Any]:
    """A `streamproc demo` or ``reconcile`` summary agrees with the oracle: ``oracle_match`` (the tallies, the
    rollups, every board and, when they were compared, the dead letters), no mismatched value, and each of
    ``flags`` (e.g. "dead_letter_match") true. The failure names what failed, then the whole summary (the
    first board mismatches included), after ``case`` where one test checks several runs."""
    failed = [flag for flag in ("oracle_match", *flags) if summary.get(flag) is not True]
    if summary.get("mismatches") != 0:
        failed.append(f"mismatches={summary.get('mismatches')}")
    assert not failed, (failed, summary) if case is None else (case, failed, summary)
    return summary


# -- steps on real parts --------------------------------------------------------------------------------


def isolated_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings of one isolated run: its own data dir under ``tmp``, broker and web ports nobody else uses,
    a flush every half second."""
    from streamproc.runtime.broker import free_port

    fields: dict[str, Any] = {"data_dir": str(tmp / "data"), "embedded_broker_port": free_port(),
                              "web_port": free_port(), "flush_interval_s": 0.5}
    return Settings.from_env(env={}, **{**fields, **overrides})


def recent_log(path: Path, n: int, seed: int) -> Path:
    """``n`` generated events (``seed``) written to ``path``, their time starting a minute ago, as a live feed's."""
    from streamproc.logs.logfile import write_log
    from streamproc.sim.generate import generate

    write_log(path, generate(n, seed=seed, start_ms=int(time.time() * 1000) - 60_000))
    return path


def started(worker: Any) -> Any:
    """``worker`` (a ``verify.stack.WorkerProcess``) started, once it owns every event partition."""
    from streamproc.verify.stack import event_partitions

    worker.start()
    worker.wait_assigned(event_partitions())
    return worker


def feed_and_flush(settings: Settings, worker: Any, log: Path) -> Any:
    """The whole log published as fast as it goes, then waited for until ``worker`` flushed all of it."""
    from streamproc.verify.chaos import Feeder
    from streamproc.verify.stack import wait_flushed

    with Feeder(settings, log, rate=None) as feed:
        pass
    wait_flushed([worker], feed.result.last_offsets)
    return feed.result


def report(name: str, **figures: object) -> None:
    """Figures of a run, printed (``pytest -s``) for docs/RELIABILITY.md."""
    print(f"\nFIGURES {name} " + json.dumps(figures, default=str))


class Clock:
    """A monotonic clock that moves only when a test moves it (``now``, or ``advance``): for code that takes
    its clock as a parameter, so an age or an interval is decided by the test, not by a loaded machine."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def send_zeros(settings: Settings, codec: str, size: int, topic: str = "live.views",
               key: bytes = b"s-bomb") -> tuple[int, int]:
    """One record of ``size`` zero bytes compressed with ``codec``, the batch of a decompression bomb:
    where it landed, (partition, offset)."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from streamproc.runtime.kafka import client_kwargs

    async def send() -> tuple[int, int]:
        producer = AIOKafkaProducer(**client_kwargs(settings), compression_type=codec, max_request_size=2**31 - 1)
        await producer.start()
        try:
            md = await producer.send_and_wait(settings.topic(topic), bytes(size), key=key)
            return md.partition, md.offset
        finally:
            await producer.stop()

    return asyncio.run(send())
