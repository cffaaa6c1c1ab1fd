"""Faults on purpose, on real parts: kill workers, take the sink away, freeze the broker; measure recovery.

Each fault is the real thing an on-call engineer meets, not a mock: a worker gets SIGKILL at a random
moment; the ClickHouse server refuses writes (a detached table answers every insert with an error),
hangs (SIGSTOP: connections open but nothing answers, so requests time out) or is gone (connection
refused); the broker hangs the same way. The demo's ``--chaos`` and the fault tests share this module,
so what the tests prove is what a user can watch with one command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from streamproc.logs.logfile import read_log
from streamproc.logs.produce import PublishResult, publish
from streamproc.runtime import lifecycle
from streamproc.settings import Settings
from streamproc.store import open_sink
from streamproc.verify.faulty_worker import CRASH_EXIT_CODE
from streamproc.verify.stack import event_partitions, flushed_past

log = logging.getLogger(__name__)

CHAOS_KINDS = ("kill-worker", "sink-outage")


# -- parsing the demo's --chaos ---------------------------------------------------------------------


def parse_chaos(specs: Iterable[str]) -> dict[str, float]:
    """``["kill-worker=3", "sink-outage=10"]`` -> ``{"kill-worker": 3, "sink-outage": 10.0}``.

    Raises ValueError naming the bad part, so the CLI can answer with a clear message.
    """
    out: dict[str, float] = {}
    for spec in specs:
        kind, sep, value = spec.partition("=")
        if kind not in CHAOS_KINDS or not sep:
            raise ValueError(f"--chaos {spec!r}: expected one of {', '.join(k + '=N' for k in CHAOS_KINDS)}")
        try:
            number = int(value) if kind == "kill-worker" else float(value)
        except ValueError:
            raise ValueError(f"--chaos {spec!r}: {value!r} is not a number") from None
        if not 0 < number <= (100 if kind == "kill-worker" else 3600):
            raise ValueError(f"--chaos {spec!r}: out of range")
        out[kind] = number
    return out


# -- feeding and watching ---------------------------------------------------------------------------


class Feeder:
    """Publishes a log at a steady rate in a background thread, so that parts can be hurt mid-stream.

    A block that ends by an exception (a failed check, a stop signal) stops the feed instead of waiting
    for the rest of the log, which at a slow pace could take minutes: ``stop``.
    """

    def __init__(self, settings: Settings, log_path: str | Path, rate: float | None, batch: int = 500) -> None:
        records = read_log(log_path)
        self.result = PublishResult()
        self.error: BaseException | None = None
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

        async def feed() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            if not self._stopped.is_set():  # set before the two above: stop() could not reach the event
                await publish(records, settings, rate=rate, batch=batch, result=self.result, stop=self._stop)

        def run() -> None:
            try:
                asyncio.run(feed())
            except BaseException as exc:  # surfaced by __exit__: a lost feed must fail the run, not hide
                self.error = exc

        self.thread = threading.Thread(target=run, name="streamproc-feed", daemon=True)

    def __enter__(self) -> "Feeder":
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:  # that exception is the news; the feed only has to end
            self.stop()
            return
        self.join()

    def join(self) -> PublishResult:
        self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"feeding the log failed: {self.error!r}") from self.error
        return self.result

    def stop(self, timeout_s: float = 5.0) -> PublishResult:
        """Send nothing more; wait (within the stop budget, if stopping) for what was sent to be
        acknowledged. What was published so far is in ``result``."""
        self._stopped.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the feed's loop has ended already
                loop.call_soon_threadsafe(stop.set)
        if self.thread.is_alive():
            self.thread.join(timeout=lifecycle.stopper.bound(timeout_s, keep_s=1.5))
        return self.result


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60, what: str = "condition") -> float:
    """Poll until ``predicate()`` holds; returns the monotonic time it did. TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout_s}s")
        time.sleep(0.05)
    return time.monotonic()


def consumed(workers: Iterable[Any]) -> int:
    """Messages the live workers consumed since they started (from their /status)."""
    return sum((w.status() or {}).get("counts", {}).get("consumed", 0) for w in workers if w.alive())


def in_flight(status: dict[str, Any] | None) -> int:
    """Messages applied in memory but not yet in the sink: what a crash at this moment would replay."""
    parts = (status or {}).get("partitions", {})
    return sum(max(0, p["offset"] - p["flushed_offset"]) for p in parts.values())


_SAMPLE = re.compile(r"^([a-z_]+) ([0-9.e+-]+)$", re.MULTILINE)


def metric_values(worker: Any) -> dict[str, float]:
    """The unlabelled samples of a worker's /metrics, by name."""
    return {name: float(v) for name, v in _SAMPLE.findall(worker.get("/metrics", 5).decode())}


# -- memory -----------------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """Resident memory of a process in kB (VmRSS in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise OSError(f"no VmRSS for pid {pid}")


class MemoryWatch:
    """Samples one process's resident memory in the background; ``peak_mb`` is the highest seen."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []  # (monotonic, rss kB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), rss_kb(self.pid)))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mb(self, since: float = 0.0) -> float:
        kb = [rss for t, rss in self.samples if t >= since]
        return round(max(kb) / 1024, 1) if kb else 0.0


# -- freezing and restarting processes --------------------------------------------------------------


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP a process for the block: its sockets stay open but nothing answers, as a hung server."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def writes_refused(settings: Settings) -> Iterator[None]:
    """The sink is up and answers, but every flush fails: its main table is detached meanwhile."""
    with contextlib.closing(open_sink(settings)) as sink:  # the sink checks the database name
        table = f"{sink.database}.tallies_10s"
        sink.command(f"DETACH TABLE {table}")
        try:
            yield
        finally:
            sink.command(f"ATTACH TABLE {table}")


# -- the two chaos modes of the demo ----------------------------------------------------------------


@dataclass
class KillFigures:
    """What one kill cost: work lost from memory and how long until the pipeline was back."""

    how: str  # "sigkill" at a random moment, or "in-flush": exit after a flush's rows, before its checkpoint
    at_s: float  # seconds after the run started
    in_flight: int  # messages applied but not yet flushed at the last look before the kill
    restart_s: float  # kill -> the new worker owns its partitions again (process start + restore)
    catch_up_s: float  # kill -> the new worker has flushed past what the killed one had applied


def kill_and_restart(stack: Any, worker: Any, kills: int, *, rng: random.Random, n_partitions: int,
                     max_delay_s: float = 3.0, in_flush_share: float = 0.0, started: float | None = None,
                     on_crash: Callable[[str], None] | None = None) -> tuple[Any, list[KillFigures]]:
    """Crash the worker ``kills`` times, each time once it has its partitions again, and restart it.

    Most crashes are SIGKILL after a random delay. A share ``in_flush_share`` of them are armed with
    the fault hook instead: the worker exits by itself on a random early flush, right after the window
    rows and before the checkpoint. ``on_crash(how)`` runs after each crash, before the restart (to
    look at what the crash left in the sink). Returns the last (live) worker and the figures.
    """
    started = time.monotonic() if started is None else started
    figures: list[KillFigures] = []
    plan = ["in-flush" if i and rng.random() < in_flush_share else "sigkill" for i in range(kills)]
    for i in range(kills):  # a restart that fails half-way leaves its worker to the Stack, which kills it
        worker, crash = _crash_and_restart(stack, worker, i, plan, rng, n_partitions, max_delay_s, started, on_crash)
        figures.append(crash)
    return worker, figures


def _crash_and_restart(stack: Any, worker: Any, i: int, plan: list[str], rng: random.Random,
                       n_partitions: int, max_delay_s: float, started: float,
                       on_crash: Callable[[str], None] | None) -> tuple[Any, KillFigures]:
    how = plan[i]
    worker.wait_assigned(n_partitions)
    st: dict[str, Any] = {}
    if how == "in-flush":  # armed at start: wait for it to exit inside a flush
        deadline = time.monotonic() + 15
        while worker.alive() and time.monotonic() < deadline:
            st = worker.status() or st
            time.sleep(0.05)
        if worker.alive():  # nothing to flush came along: fall back to a plain kill
            how = "sigkill"
        elif worker.proc.returncode != CRASH_EXIT_CODE:
            raise RuntimeError(f"an armed worker died otherwise (exit {worker.proc.returncode}): see its log")
    else:  # a random moment once it is consuming again (if there is anything left to consume)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: consumed([worker]) > 0, 10, "consumption resumed")
        time.sleep(rng.uniform(0.05, max_delay_s))
        st = worker.status() or {}
    applied = {tp: p["offset"] for tp, p in st.get("partitions", {}).items()}
    at = time.monotonic()
    worker.kill()
    log.info("chaos: worker crash %d of %d (%s) with %d messages in flight", i + 1, len(plan), how, in_flight(st))
    if on_crash is not None:
        on_crash(how)
    armed = i + 1 < len(plan) and plan[i + 1] == "in-flush"
    worker = stack.worker(i + 1, group_instance_id=worker.settings.group_instance_id,
                          crash_before_checkpoint=rng.randint(3, 8) if armed else 0).start()
    worker.wait_assigned(n_partitions)
    restart = time.monotonic() - at

    # an armed worker may crash again before it caught up
    catch_up = wait_for(lambda: not worker.alive() or flushed_past([worker], applied), 120,
                        "catch-up after a crash") - at
    return worker, KillFigures(how, round(at - started, 2), in_flight(st), round(restart, 2), round(catch_up, 2))


@dataclass
class OutageFigures:
    """What a sink outage cost: how far the buffer grew, the memory it took, how long recovery took."""

    outage_s: float
    phases: list[str] = field(default_factory=list)
    flush_failures: int = 0
    paused: bool = False
    max_buffered_rows: int = 0
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    recover_s: float = 0.0  # sink back -> every row buffered during the outage is in the sink


def sink_outage(stack: Any, worker: Any, seconds: float, *, phases: tuple[str, ...] = ("refuse", "hang", "down"),
                ) -> OutageFigures:
    """Make the shared ClickHouse server fail for ``seconds``, split evenly over ``phases``.

    ``refuse``: the server answers but inserts fail; ``hang``: SIGSTOP, requests time out; ``down``:
    the process is stopped, connections are refused. Then the server comes back and the worker must
    drain its buffer on its own. Worker memory is sampled throughout.
    """
    ch = stack.clickhouse
    if ch is None:
        raise ValueError("a sink outage needs the shared ClickHouse server (Stack(shared_sink_port=...))")
    figures = OutageFigures(outage_s=seconds, phases=list(phases))
    failures_before = metric_values(worker)["streamproc_flush_failures_total"]
    step = seconds / len(phases)
    with MemoryWatch(worker.proc.pid) as mem:
        time.sleep(0.3)
        figures.rss_before_mb = mem.peak_mb()
        began = time.monotonic()

        def watch(until: float) -> None:
            while time.monotonic() < until:
                with contextlib.suppress(OSError):  # the worker's web server answers while the sink is gone
                    m = metric_values(worker)
                    figures.max_buffered_rows = max(figures.max_buffered_rows, int(m["streamproc_sink_buffered_rows"]))
                    figures.paused = figures.paused or m["streamproc_consumption_paused"] > 0
                time.sleep(0.2)

        for phase in phases:
            log.info("chaos: sink outage, phase %s for %.1fs", phase, step)
            until = time.monotonic() + step
            if phase == "refuse":
                with writes_refused(stack.settings):
                    watch(until)
            elif phase == "hang":
                with frozen(ch.proc.pid):
                    watch(until)
            elif phase == "down":
                ch.stop()
                watch(until)
                ch.start()
            else:
                raise ValueError(f"unknown outage phase {phase!r}")
        back = time.monotonic()
        st = worker.status() or {}
        applied = {tp: p["offset"] for tp, p in st.get("partitions", {}).items()}
        figures.recover_s = round(wait_for(lambda: flushed_past([worker], applied), 120,
                                           "drain after the sink came back") - back, 2)
        figures.rss_peak_mb = mem.peak_mb(began)
    figures.flush_failures = int(metric_values(worker)["streamproc_flush_failures_total"] - failures_before)
    return figures


# -- the demo's chaos run ---------------------------------------------------------------------------


def run_chaos(stack: Any, worker: Any, log_path: str, events: int, chaos: dict[str, float],
              seed: int) -> tuple[Any, PublishResult, dict[str, Any]]:
    """Feed ``log_path`` at a pace that spans the chaos, and hurt the pipeline meanwhile.

    ``sink-outage=S``: once a quarter of the events is consumed, the shared ClickHouse server refuses
    writes, hangs, then is gone, S seconds in all. ``kill-worker=K``: then K crashes at random moments
    (SIGKILL, and now and then an exit inside a flush), each followed by a restart. Returns the live
    worker, what was published and the measured figures.
    """
    kills = int(chaos.get("kill-worker", 0))
    outage = float(chaos.get("sink-outage", 0))
    feed_s = 20.0 + 3.0 * outage + 14.0 * kills  # the feed outlasts the chaos: a crash cycle takes ~13 s here
    figures: dict[str, Any] = {}
    with Feeder(stack.settings, log_path, rate=events / feed_s) as feed:
        if outage:
            wait_for(lambda: consumed([worker]) > events // 4, 120, "a quarter of the events consumed")
            figures["sink_outage"] = asdict(sink_outage(stack, worker, outage))
        if kills:
            worker, crashes = kill_and_restart(stack, worker, kills, rng=random.Random(seed),
                                               n_partitions=event_partitions(), in_flush_share=0.3)
            figures["kill_worker"] = {
                "crashes": [asdict(c) for c in crashes],
                "in_flight_total": sum(c.in_flight for c in crashes),
                "restart_s_max": max(c.restart_s for c in crashes),
                "catch_up_s_max": max(c.catch_up_s for c in crashes),
            }
    return worker, feed.result, figures
